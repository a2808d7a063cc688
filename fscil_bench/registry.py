"""One generic registry: names mapped to entries that are resolved on first use.

Every named thing a user picks on the command line (a benchmark, a method, a backbone, a
dataset family, a metric) lives in a :class:`Registry`. An entry is either the object itself or
a lazy reference ``"package.module:attribute"``, imported only when the name is looked up, so
listing names costs no import. An unknown name raises :class:`UnknownName` with the closest
known names ("did you mean ...?").

Registries import their providers: the module that owns a registry lists its entries, and no
provider registers itself as a side effect of being imported.

Example::

    >>> from fscil_bench.registry import Registry
    >>> colours = Registry("colour")
    >>> colours.add("red", (255, 0, 0))
    >>> colours.add("pi", "math:pi")          # imported on first lookup
    >>> colours.get("pi") > 3
    True
    >>> colours.get("rde")
    Traceback (most recent call last):
    ...
    fscil_bench.registry.UnknownName: unknown colour 'rde' (did you mean 'red'?); available: pi, red
    >>> colours.names()
    ['red', 'pi']
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownName(KeyError):
    """A name that is not in a registry; the message suggests the closest names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class RegistryError(RuntimeError):
    """A registry entry that cannot be added or resolved (a name clash, a broken reference)."""


@dataclass
class _Entry:
    value: Any
    source: str
    resolved: bool


def did_you_mean(name: str, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(name, choices, n=2, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


def resolve_reference(reference: str) -> Any:
    """The object named by ``"package.module:attribute"`` (imported now)."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise RegistryError(f"a lazy registry entry is 'module:attribute', not {reference!r}")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError as exc:
        raise RegistryError(f"{module_name} has no attribute {attribute!r} (registry entry {reference!r})") from exc


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` is used in messages: "unknown method 'x'")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, _Entry] = {}

    def add(self, name: str, entry: T | str, source: str = "", *, replace: bool = False) -> None:
        """Register ``entry`` (an object, or a lazy ``"module:attribute"`` string) under ``name``.

        A second entry under a taken name is an error unless ``replace``.
        """
        if not name:
            raise RegistryError(f"a {self.kind} needs a non-empty name ({source or entry!r})")
        old = self._entries.get(name)
        if old is not None and not replace and not (old.resolved and old.value is entry):
            raise RegistryError(f"{self.kind} name {name!r} is already taken by {old.source or old.value!r}")
        lazy = isinstance(entry, str) and ":" in entry
        self._entries[name] = _Entry(entry, source or (entry if lazy else ""), resolved=not lazy)

    def get(self, name: str) -> T:
        """The entry under ``name``, imported now if it was lazy."""
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownName(f"unknown {self.kind} {name!r}{did_you_mean(name, self.names())}; "
                              f"available: {', '.join(sorted(self._entries)) or 'none'}")
        if not entry.resolved:
            entry.value, entry.resolved = resolve_reference(entry.value), True
        return entry.value

    def source(self, name: str) -> str:
        """Where the entry of ``name`` comes from (a module reference, a file, an entry point)."""
        return self._entries[name].source

    def names(self) -> list[str]:
        """The registered names, in the order they were added."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
