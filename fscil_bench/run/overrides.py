"""Preset overrides: ``--set base.epochs=20`` applied to a method's preset, checked against its definition.

An override is a dotted path into a method's hyperparameters (``base.epochs``: the field
``epochs`` of the dataclass in the field ``base``) and a value: text from the command line or a
value from a run file. Either way it is converted to the field's declared type
(:mod:`fscil_bench.run.typed_values`: ``20``, ``1e-3``, ``true``, ``null``, ``[12,16]``,
``{epochs: 4, lr: 0.05}`` for a nested dataclass) before the preset is rebuilt with
:func:`dataclasses.replace`, so the preset's own validation runs too; untouched fields keep their
exact objects (and so every cache key derived from them). A plain-dict preset (a plugin's) has
no declared types: a key takes the type of the value it replaces.

A preset changed by overrides is a different run: its id (:attr:`ResolvedPreset.id`) is the
preset's name, ``+``, and 8 hex digits of a digest of the overrides in canonical form (the
converted values, by sorted path), e.g. ``paper+3f9c01ab``. Every problem is a
:class:`PresetError` whose message is one line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from fscil_bench.cache import stable_hash
from fscil_bench.registry import did_you_mean
from fscil_bench.results.tracks import track_of
from fscil_bench.run.typed_values import (
    NO_TYPE,
    Mismatch,
    convert,
    field_types,
    plain,
    type_name,
)


class PresetError(ValueError):
    """A preset or an override that cannot be used: unknown preset or key, or a badly typed value."""


@dataclass(frozen=True)
class Override:
    """``key=value`` for every method of a run, or ``method:key=value`` for one method only.

    ``value`` is text (from the command line) or a value read from a run file."""

    key: str
    value: Any
    method: str | None = None

    @classmethod
    def parse(cls, text: str) -> Override:
        """Read ``[METHOD:]KEY=VALUE`` (the value may itself contain ``=`` and ``:``)."""
        target, sep, value = text.partition("=")
        method, colon, key = target.rpartition(":")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")) or (colon and not method.strip()):
            raise PresetError(f"--set expects [METHOD:]KEY=VALUE (e.g. base.epochs=20), not {text!r}")
        return cls(key, value.strip(), method.strip() or None)

    def __str__(self) -> str:
        return f"{self.method + ':' if self.method else ''}{self.key}={self.value}"


@dataclass(frozen=True)
class ResolvedPreset:
    """A method's preset for one benchmark family, with the overrides that apply to it.

    Attributes:
        name: the preset's name (``paper``).
        hparams: the hyperparameters after the overrides.
        overrides: the overrides in canonical form: dotted path -> converted value (JSON-friendly),
            sorted by path; applying them in that order to the preset gives ``hparams``.
    """

    name: str
    hparams: Any
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """The preset as runs are keyed and reported: ``name``, or ``name+<digest>`` with overrides."""
        return preset_id(self.name, self.overrides)

    @property
    def track(self) -> str:
        """The run's track, from the ``pretrained`` of the hyperparameters after the overrides
        (:func:`fscil_bench.results.tracks.track_of`): ``--set pretrained=...`` changes it."""
        return track_of(self.hparams)


def preset_id(name: str, overrides: Mapping[str, Any]) -> str:
    """``name`` alone, or ``name+<8 hex digits of a digest of the canonical overrides>``."""
    return f"{name}+{stable_hash(dict(overrides), length=8)}" if overrides else name


def resolve(method_cls: type, preset: str, family: str, overrides: Iterable[Override] | Mapping[str, Any] = ()) -> ResolvedPreset:
    """``method_cls``'s ``preset`` for ``family`` with ``overrides`` applied.

    ``overrides`` are :class:`Override` objects (those scoped to another method are ignored) or
    a canonical mapping (path -> value, as :attr:`ResolvedPreset.overrides` holds)."""
    name = getattr(method_cls, "name", "") or method_cls.__name__
    where = f"{name} [{preset}]"
    base = None
    if hasattr(method_cls, "resolve_preset"):
        try:
            base = method_cls.resolve_preset(preset, family)
        except KeyError as exc:
            raise PresetError(str(exc.args[0]) if exc.args else f"{where}: no settings for {family!r}") from exc
    if isinstance(overrides, Mapping):
        pairs = list(overrides.items())
    else:
        pairs = [(o.key, o.value) for o in overrides if o.method in (None, name)]
    if pairs and base is None:
        raise PresetError(f"{where} has no hyperparameters to override")
    hparams, canonical = apply_overrides(base, pairs, where)
    return ResolvedPreset(preset, hparams, canonical)


def resolve_grid(method_classes: Mapping[str, type], presets: Sequence[str], families: Iterable[str],
                 overrides: Sequence[Override] = ()) -> dict[tuple[str, str, str], ResolvedPreset]:
    """Resolve every (family, method, preset) of a grid before anything runs: ``(family, method,
    preset) -> ResolvedPreset``. A preset that a method lacks, an override scoped to a method the
    grid does not run, an unknown key or a badly typed value raises :class:`PresetError`."""
    for override in overrides:
        if override.method is not None and override.method not in method_classes:
            raise PresetError(f"--set {override} names method {override.method!r}, which this run does not include "
                              f"(methods: {', '.join(method_classes)})")
    for preset in presets:
        lacking = {m: _preset_names(cls) for m, cls in method_classes.items()
                   if hasattr(cls, "resolve_preset") and preset not in _preset_names(cls)}
        if lacking and len(lacking) == len(method_classes):
            known = list(dict.fromkeys(p for names in lacking.values() for p in names))
            raise PresetError(f"unknown preset {preset!r}{did_you_mean(preset, known)}; "
                              f"the methods' presets: {', '.join(known) or 'none'}")
        if lacking:
            method, names = next(iter(lacking.items()))
            others = f" (nor do {', '.join(map(repr, list(lacking)[1:]))})" if len(lacking) > 1 else ""
            raise PresetError(f"method {method!r} has no preset {preset!r}{others}; its presets: {', '.join(names)} "
                              "(choose the methods with --methods)")
    return {(family, m, p): resolve(cls, p, family, overrides)
            for family in dict.fromkeys(families) for m, cls in method_classes.items() for p in presets}


def _preset_names(method_cls: type) -> list[str]:
    return list(getattr(method_cls, "presets", None) or {})


def apply_overrides(hparams: Any, assignments: Sequence[tuple[str, Any]], where: str = "the preset") -> tuple[Any, dict[str, Any]]:
    """``hparams`` with each ``(dotted path, value)`` applied in turn, and the canonical overrides."""
    canonical: dict[str, Any] = {}
    for key, value in assignments:
        hparams, typed = _assign(hparams, key.split("."), value, key, where, hparams)
        # A later override of a whole value supersedes earlier ones inside it.
        canonical = {k: v for k, v in canonical.items() if k != key and not k.startswith(key + ".")}
        canonical[key] = plain(typed)
    return hparams, dict(sorted(canonical.items()))


# --- walking the hyperparameters -----------------------------------------------------------------


def _assign(node: Any, parts: list[str], value: Any, key: str, where: str, root: Any) -> tuple[Any, Any]:
    """``node`` with the field at ``parts`` set to ``value`` (converted), and the converted value."""
    name, rest = parts[0], parts[1:]
    done = key[: len(key) - len(".".join(parts))].rstrip(".")  # the path down to ``node``
    fields = _fields(node)
    if fields is None:
        raise PresetError(f"unknown key {key!r} for {where}: {done} is a {type(node).__name__}, not a group of settings")
    if name not in fields:
        level = f" under {done}" if done else ""
        listing = ", ".join(f"{_join(done, k)}.*" if _fields(v) else _join(done, k) for k, v in _level_items(node))
        raise PresetError(f"unknown key {key!r} for {where}{did_you_mean(key, _leaf_paths(root))}; "
                          f"valid keys{level}: {listing}")
    current, declared = fields[name]
    if rest:
        if current is None:
            raise PresetError(f"{_join(done, name)} is None in {where}: set it whole first "
                              f"({_join(done, name)}={{field: value, ...}}), then its fields")
        child, typed = _assign(current, rest, value, key, where, root)
    else:
        try:
            child = typed = convert(value, declared, current)
        except Mismatch:
            shown = value if isinstance(value, str) else yaml.safe_dump(plain(value), default_flow_style=True).strip()
            raise PresetError(f"{key} must be {type_name(declared, current)}, not {shown!r} ({where})") from None
    if isinstance(node, Mapping):
        return {**node, name: child}, typed
    try:
        return dataclasses.replace(node, **{name: child}), typed
    except (TypeError, ValueError) as exc:
        raise PresetError(f"{key}={value} rejected by {type(node).__name__} ({where}): {exc}") from exc


def _fields(node: Any) -> dict[str, tuple[Any, Any]] | None:
    """name -> (current value, declared type) of a dataclass instance or a mapping; None for a leaf."""
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        hints = field_types(type(node))
        return {f.name: (getattr(node, f.name), hints.get(f.name, NO_TYPE))
                for f in dataclasses.fields(node) if f.init}
    if isinstance(node, Mapping):
        return {str(k): (v, NO_TYPE) for k, v in node.items()}
    return None


def _level_items(node: Any) -> list[tuple[str, Any]]:
    return [(k, v) for k, (v, _) in (_fields(node) or {}).items()]


def _leaf_paths(node: Any, prefix: str = "") -> list[str]:
    paths = []
    for name, value in _level_items(node):
        path = _join(prefix, name)
        paths.extend(_leaf_paths(value, path) if _fields(value) else [path])
    return paths


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
