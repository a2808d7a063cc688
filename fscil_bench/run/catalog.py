"""What the runner knows about a method without importing it: a reference and a description.

Under isolation the runner never imports method code (a built-in module, an entry point or a
plugin file): a worker process imports it and describes each class in plain data
(:class:`MethodInfo`), and the worker of a run imports just the class its
:class:`MethodRef` names. With isolation ``none`` the same catalog is built in this process.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fscil_bench.registry import did_you_mean
from fscil_bench.run.methods import MethodRegistry, PluginError, load_plugin_file

PLUGIN_MODULE_PREFIX = "fscil_bench_plugin_"


@dataclass(frozen=True)
class MethodRef:
    """How a fresh process finds a method class: ``attr`` (a qualified name) in the importable
    ``module``, or the class named ``name`` in the plugin ``file``."""

    name: str
    module: str = ""
    attr: str = ""
    file: str = ""

    def load(self) -> type:
        """Import the class (and nothing else of the other methods)."""
        if self.file:
            registry = MethodRegistry()
            load_plugin_file(self.file, registry)
            return registry.get(self.name)
        obj: Any = importlib.import_module(self.module)
        for part in self.attr.split("."):
            obj = getattr(obj, part)
        return obj

    @classmethod
    def of_class(cls, method_cls: type) -> MethodRef:
        """The reference of a class this process has imported. Raises :class:`PluginError` for
        one a fresh process cannot import by name (defined in ``__main__`` or in a function)."""
        name, module, qualname = getattr(method_cls, "name", ""), method_cls.__module__, method_cls.__qualname__
        if module.startswith(PLUGIN_MODULE_PREFIX):
            file = getattr(sys.modules.get(module), "__file__", None)
            if file:
                return cls(name, file=str(Path(file).resolve()))
        obj: Any = sys.modules.get(module)
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
        if module == "__main__" or obj is not method_cls:
            raise PluginError(f"method class {qualname} of {module} cannot be imported by name in a worker process; "
                              "define it in a module or a plugin file, or run it in this process (isolation 'none')")
        return cls(name, module=module, attr=qualname)

    def to_json(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> MethodRef:
        if not isinstance(data, dict):
            raise ValueError(f"a method reference is an object, not {type(data).__name__}")
        return cls(**{k: str(data.get(k) or "") for k in ("name", "module", "attr", "file")})


@dataclass(frozen=True)
class MethodInfo:
    """A method as a report and a record describe it (its class attributes), and its reference.

    It has the attributes of a method class that the grid reads (``name``, ``paper``,
    ``extra_data``, ``oracle``), so records are built from either."""

    name: str
    ref: MethodRef
    source: str
    paper: str = ""
    extra_data: str | None = None
    oracle: bool = False
    presets: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def of_class(cls, method_cls: type, source: str) -> MethodInfo:
        extra = getattr(method_cls, "extra_data", None)
        return cls(name=str(getattr(method_cls, "name", "")), ref=MethodRef.of_class(method_cls), source=source,
                   paper=str(getattr(method_cls, "paper", "") or ""), extra_data=None if extra is None else str(extra),
                   oracle=bool(getattr(method_cls, "oracle", False)),
                   presets=tuple(str(p) for p in (getattr(method_cls, "presets", None) or {})))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ref": self.ref.to_json(), "source": self.source, "paper": self.paper,
                "extra_data": self.extra_data, "oracle": self.oracle, "presets": list(self.presets)}

    @classmethod
    def from_json(cls, data: Any) -> MethodInfo:
        """Read what a worker sent, checking every field's type (``ValueError`` otherwise)."""
        if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
            raise ValueError("a method description needs a non-empty 'name'")
        presets = data.get("presets") or []
        extra = data.get("extra_data")
        if not isinstance(presets, list) or not all(isinstance(p, str) for p in presets):
            raise ValueError(f"method {data['name']!r}: 'presets' should be a list of names")
        return cls(name=data["name"], ref=MethodRef.from_json(data.get("ref")), source=str(data.get("source") or ""),
                   paper=str(data.get("paper") or ""), extra_data=None if extra is None else str(extra),
                   oracle=bool(data.get("oracle")), presets=tuple(presets))


class MethodCatalog:
    """Methods by name (:class:`MethodInfo`), plus the load errors met (source -> message); read
    like a :class:`~fscil_bench.run.methods.MethodRegistry`."""

    def __init__(self) -> None:
        self.infos: dict[str, MethodInfo] = {}
        self.errors: dict[str, str] = {}

    @classmethod
    def of_registry(cls, registry: MethodRegistry) -> MethodCatalog:
        catalog = cls()
        for name in registry.names():
            catalog.infos[name] = MethodInfo.of_class(registry.get(name), registry.source(name))
        catalog.errors.update(registry.errors)
        return catalog

    def names(self) -> list[str]:
        return sorted(self.infos)

    @property
    def methods(self) -> dict[str, MethodInfo]:
        return {name: self.infos[name] for name in self.names()}

    @property
    def sources(self) -> dict[str, str]:
        return {name: info.source for name, info in self.infos.items()}

    def get(self, name: str) -> MethodInfo:
        if name not in self.infos:
            hint = f" (it failed to load: {self.errors[name]})" if name in self.errors else did_you_mean(name, self.names())
            raise PluginError(f"unknown method {name!r}{hint}; available: {', '.join(self.names()) or 'none'}")
        return self.infos[name]

    def add(self, info: MethodInfo) -> None:
        """Add a method; a name already taken by another source is an error of the newcomer."""
        known = self.infos.get(info.name)
        if known is not None and known.ref != info.ref:
            self.errors[info.name] = f"{info.source}: method {info.name!r} is already registered from {known.source}"
            return
        self.infos[info.name] = info
