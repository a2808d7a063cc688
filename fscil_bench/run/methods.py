"""Method discovery: the built-in methods, installed packages' entry points, and ``--plugin FILE.py``.

Three sources, one registry:

* built-in methods: every module of the :mod:`fscil_bench.baselines` package (the repository's
  ``baselines/`` folder). A new file there is a new method; nothing else is edited.
* third-party packages: classes registered under the ``fscil_bench.methods`` entry-point group
  of an installed distribution, so ``pip install my-method`` makes ``my-method`` runnable.
* plugin files: ``fscil-bench run --plugin FILE.py`` imports the file from its path.

In every source, each class that implements the :class:`~fscil_bench.protocol.Method`
protocol (a ``name`` plus ``fit_base``, ``fit_session`` and ``predict``) is registered under its
``name``. A module or entry point that fails to import is recorded in ``errors`` (and reported by
the command line), never allowed to stop the other methods.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import sys
import traceback
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from fscil_bench.registry import Registry, RegistryError, did_you_mean

ENTRY_POINT_GROUP = "fscil_bench.methods"
BUILTIN_PACKAGE = "fscil_bench.baselines"


class PluginError(RuntimeError):
    """A method or plugin that cannot be loaded."""


class MethodRegistry(Registry[type]):
    """Method classes by name, plus the load errors met while discovering them (source -> message)."""

    def __init__(self) -> None:
        super().__init__("method")
        self.errors: dict[str, str] = {}

    @property
    def methods(self) -> dict[str, type]:
        return {name: self.get(name) for name in self.names()}

    @property
    def sources(self) -> dict[str, str]:
        return {name: self.source(name) for name in self.names()}

    def names(self) -> list[str]:
        return sorted(super().names())

    def get(self, name: str) -> type:
        if name not in self:
            hint = f" (it failed to load: {self.errors[name]})" if name in self.errors else did_you_mean(name, self.names())
            raise PluginError(f"unknown method {name!r}{hint}; available: {', '.join(self.names()) or 'none'}")
        return super().get(name)

    def add_class(self, cls: type, source: str) -> None:
        name = getattr(cls, "name", "")
        if not name:
            raise PluginError(f"{source}: method class {cls.__name__} has no 'name'")
        try:
            self.add(name, cls, source)
        except RegistryError as exc:
            raise PluginError(f"{source}: {exc}") from None


def is_method_class(obj: object) -> bool:
    return (
        inspect.isclass(obj)
        and bool(getattr(obj, "name", ""))
        and all(callable(getattr(obj, attr, None)) for attr in ("fit_base", "fit_session", "predict"))
    )


def methods_of(module: ModuleType) -> list[type]:
    """The method classes a module defines itself (not those it imports)."""
    return [obj for obj in vars(module).values() if is_method_class(obj) and obj.__module__ == module.__name__]


def _error_text(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" (line {last.lineno} of {Path(last.filename).name})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


def builtin_modules() -> list[str]:
    """The modules of :data:`BUILTIN_PACKAGE` that may define methods (listed, not imported)."""
    package = importlib.import_module(BUILTIN_PACKAGE)
    return [f"{BUILTIN_PACKAGE}.{info.name}" for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name)
            if not info.name.startswith("_")]


def load_builtin_module(module_name: str, registry: MethodRegistry) -> None:
    """Register the method classes of one built-in module; a failure lands in ``errors``."""
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a broken built-in must not hide the others
        registry.errors[module_name] = _error_text(exc)
        return
    for cls in methods_of(module):
        registry.add_class(cls, module_name)


def load_builtin(registry: MethodRegistry) -> None:
    """Register the method classes of every module in :data:`BUILTIN_PACKAGE`."""
    for module_name in builtin_modules():
        load_builtin_module(module_name, registry)


def method_entry_points() -> list[Any]:
    """The installed ``fscil_bench.methods`` entry points (read from metadata, nothing imported)."""
    return list(entry_points(group=ENTRY_POINT_GROUP))


def load_entry_point(ep: Any, registry: MethodRegistry) -> None:
    """Register the class of one entry point; a failure lands in ``errors`` under its name."""
    try:
        cls = ep.load()
    except Exception as exc:  # a broken third-party method must not stop the others
        registry.errors[ep.name] = f"{type(exc).__name__}: {exc}"
        return
    if not is_method_class(cls):
        registry.errors[ep.name] = f"entry point {ep.value} is not a Method class"
        return
    if ep.name in registry and registry.get(ep.name) is cls:
        return  # the same class reached through two sources
    try:
        registry.add_class(cls, f"entry point {ep.value}")
    except PluginError as exc:
        registry.errors[ep.name] = str(exc)


def load_entry_points(registry: MethodRegistry) -> None:
    """Register the classes of the ``fscil_bench.methods`` entry points of installed packages."""
    for ep in method_entry_points():
        load_entry_point(ep, registry)


def load_plugin_file(path: str | Path, registry: MethodRegistry) -> list[str]:
    """Import ``path`` and register the method classes it defines; return their names.

    Raises :class:`PluginError` with the file's own error when it fails to import.
    """
    path = Path(path)
    if not path.is_file():
        raise PluginError(f"plugin file {path} does not exist")
    module_name = f"fscil_bench_plugin_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin file {path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        last = traceback.extract_tb(exc.__traceback__)[-1]
        raise PluginError(
            f"plugin file {path} failed to import: {type(exc).__name__}: {exc} (line {last.lineno})"
        ) from exc
    found = methods_of(module)
    if not found:
        raise PluginError(f"plugin file {path} defines no method class (a class with name, fit_base, fit_session, predict)")
    for cls in found:
        registry.add_class(cls, f"plugin {path}")
    return [cls.name for cls in found]


def discovery_steps(plugin_files: list[str | Path] = ()) -> list[str]:
    """What :func:`discover` loads, one step each, in order: ``builtin:<module>``,
    ``entry-point:<name>``, ``plugin:<path>``."""
    return ([f"builtin:{m}" for m in builtin_modules()] + [f"entry-point:{ep.name}" for ep in method_entry_points()]
            + [f"plugin:{p}" for p in plugin_files])


def run_discovery_step(step: str, registry: MethodRegistry) -> None:
    """Load one step of :func:`discovery_steps` into ``registry`` (failures land in ``errors``)."""
    kind, _, what = step.partition(":")
    if kind == "builtin":
        load_builtin_module(what, registry)
    elif kind == "entry-point":
        for ep in method_entry_points():
            if ep.name == what:
                load_entry_point(ep, registry)
    elif kind == "plugin":
        try:
            load_plugin_file(what, registry)
        except PluginError as exc:
            registry.errors[what] = str(exc)
    else:
        raise ValueError(f"unknown discovery step {step!r}")


def discover(plugin_files: list[str | Path] = ()) -> MethodRegistry:
    """The built-in methods, installed entry points and ``plugin_files``; failures land in ``errors``."""
    registry = MethodRegistry()
    for step in discovery_steps(plugin_files):
        run_discovery_step(step, registry)
    return registry
