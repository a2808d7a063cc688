"""Method discovery: the ``fscil_bench.methods`` entry-point group and ``--plugin FILE.py``.

Built-in methods register through the same entry-point group a third-party package uses, so a
method installed with ``pip`` appears in ``fscil-bench list`` like any other. A plugin file is
imported from its path; every class defined in it that implements the :class:`Method`
protocol is registered under its ``name``.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import traceback
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

from .protocol import Method

ENTRY_POINT_GROUP = "fscil_bench.methods"


class PluginError(RuntimeError):
    """A method or plugin that cannot be loaded."""


@dataclass
class MethodRegistry:
    """Method classes by name, plus the load errors met while discovering them."""

    methods: dict[str, type] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def names(self) -> list[str]:
        return sorted(self.methods)

    def get(self, name: str) -> type:
        if name not in self.methods:
            hint = f" (it failed to load: {self.errors[name]})" if name in self.errors else ""
            raise PluginError(f"unknown method {name!r}{hint}; available: {', '.join(self.names()) or 'none'}")
        return self.methods[name]

    def add(self, cls: type, source: str) -> None:
        name = getattr(cls, "name", "")
        if not name:
            raise PluginError(f"{source}: method class {cls.__name__} has no 'name'")
        if name in self.methods and self.methods[name] is not cls:
            raise PluginError(f"{source}: method name {name!r} is already taken by {self.sources[name]}")
        self.methods[name] = cls
        self.sources[name] = source


def is_method_class(obj: object) -> bool:
    return (
        inspect.isclass(obj)
        and bool(getattr(obj, "name", ""))
        and all(callable(getattr(obj, attr, None)) for attr in ("fit_base", "fit_session", "predict"))
    )


def load_entry_points(registry: MethodRegistry) -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # a broken third-party method must not stop the others
            registry.errors[ep.name] = f"{type(exc).__name__}: {exc}"
            continue
        if not is_method_class(cls):
            registry.errors[ep.name] = f"entry point {ep.value} is not a Method class"
            continue
        registry.add(cls, f"entry point {ep.value}")


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
    found = [obj for obj in vars(module).values() if is_method_class(obj) and obj.__module__ == module_name]
    if not found:
        raise PluginError(f"plugin file {path} defines no method class (a class with name, fit_base, fit_session, predict)")
    for cls in found:
        registry.add(cls, f"plugin {path}")
    return [cls.name for cls in found]


def discover(plugin_files: list[str | Path] = ()) -> MethodRegistry:
    """All installed methods plus those of ``plugin_files``; plugin failures land in ``errors``."""
    registry = MethodRegistry()
    load_entry_points(registry)
    for path in plugin_files:
        try:
            load_plugin_file(path, registry)
        except PluginError as exc:
            registry.errors[str(path)] = str(exc)
    return registry


def check_method(obj: object) -> None:
    """Raise ``TypeError`` unless ``obj`` implements the :class:`Method` protocol."""
    if not isinstance(obj, Method):
        raise TypeError(f"{type(obj).__name__} does not implement fit_base, fit_session and predict")
