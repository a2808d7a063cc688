"""The method's side of a run: the method object, its context, and what it answers.

A :class:`MethodHost` holds exactly what the protocol gives a method: the benchmark's facts
(:class:`~fscil_bench.protocol.BenchmarkInfo` and the
:class:`~fscil_bench.data.views.ViewInputs` its own views are built from), the preset and its
overrides, the seed, each session's training samples, and unlabelled test images. It never holds a test label or the benchmark itself. The
runner drives it either in its own process (isolation ``none``) or inside a worker process
(:mod:`fscil_bench.run.worker`) through the same calls, so both give the same answers.

A method that exposes ``embed`` and ``classify`` is evaluated as ``classify(embed(x))``; the
features are returned for the neural-collapse diagnostics, which the runner computes (it alone
has the labels). A method with ``embed`` alone is evaluated with ``predict`` and embedded in a
second pass. Logits or features of the wrong shape raise :class:`ProtocolError`.

The host resolves the preset with its overrides (:func:`fscil_bench.run.overrides.resolve`) and
the method's own views (:func:`views_of`) from the method class itself: it attaches the train
and test views to every session and shows the test images through the test view, so the
runner never needs the method's code for them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fscil_bench.data.arrays import BatchTransform, iterate_images
from fscil_bench.data.transforms import Normalization
from fscil_bench.data.views import MethodViews, ViewInputs
from fscil_bench.protocol import (
    BenchmarkInfo,
    Context,
    MemoryDeclaration,
    Progress,
    Session,
    hparams_to_dict,
    uses_test_checkpoint,
)
from fscil_bench.run.overrides import resolve
from fscil_bench.run.peak_memory import PeakMemory


#: What the record of a run whose base checkpoint was chosen on the test set says (``extra``).
NOT_PROTOCOL_CLEAN = "base checkpoint chosen by base-class test accuracy (best-on-test): not protocol-clean"


class ProtocolError(RuntimeError):
    """A method that answered outside the protocol (e.g. logits of the wrong shape)."""


@dataclass
class HostEvaluation:
    """One session's answers, in the order the images were shown: the predicted class of every
    image, the ``embed`` features ``(N, d)`` (None without ``embed``, or ``feature_error`` says
    why not), and the ``classifier_weights()`` ``(num_seen, d)`` (None, or ``weights_error``)."""

    preds: np.ndarray
    features: np.ndarray | None = None
    feature_error: str | None = None
    weights: np.ndarray | None = None
    weights_error: str | None = None


def _optional(method: object, name: str) -> Callable | None:
    fn = getattr(method, name, None)
    return fn if callable(fn) else None


def _check_logits(logits: Any, n: int, num_seen: int, what: str) -> None:
    if not isinstance(logits, torch.Tensor) or logits.shape != (n, num_seen):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ProtocolError(f"{what} returned {shape}, expected logits of shape ({n}, {num_seen})")


def _check_features(features: Any, n: int) -> None:
    if not isinstance(features, torch.Tensor) or features.dim() != 2 or len(features) != n:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ProtocolError(f"embed returned {shape}, expected features of shape ({n}, d)")


def views_of(method_cls: type, hparams: Any, inputs: ViewInputs) -> MethodViews:
    """The method's own train and test views (:meth:`MethodBase.views`; none for a method
    without that hook) on a benchmark described by ``inputs``."""
    declare = getattr(method_cls, "views", None)
    views = declare(hparams, inputs) if callable(declare) else None
    return views if isinstance(views, MethodViews) else MethodViews()


def view_inputs_to_json(inputs: ViewInputs) -> dict[str, Any]:
    return {"family": inputs.family, "mean": list(inputs.norm.mean), "std": list(inputs.norm.std), "flip": inputs.flip}


def view_inputs_from_json(data: Mapping[str, Any]) -> ViewInputs:
    norm = Normalization(tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"]))
    return ViewInputs(str(data["family"]), norm, bool(data["flip"]))


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class MethodHost:
    """One method object through one run.

    Construction resolves the preset with ``overrides`` (canonical: dotted path -> value; an
    unknown preset or override raises :class:`~fscil_bench.run.overrides.PresetError`) and the
    method's views on ``view_inputs``, builds the context (seeding torch's and numpy's global
    random state with ``seed``) and instantiates the method. Peak memory is measured from then on
    (:meth:`peak_memory`).
    """

    def __init__(self, method_cls: type, preset: str, info: BenchmarkInfo, seed: int, *, device: torch.device,
                 cache_dir: Path, progress: Progress, log: Callable[[str], None], bf16: bool = False,
                 sync_batchnorm: bool = False, overrides: Mapping[str, Any] | None = None,
                 view_inputs: ViewInputs | None = None, weights_dir: Path | None = None,
                 test_scorer: Callable[[Any], Callable] | None = None):
        self.peak = PeakMemory(device).start()
        hparams = resolve(method_cls, preset, info.family, overrides or {}).hparams
        if uses_test_checkpoint(hparams) and test_scorer is None:
            raise ProtocolError(f"preset {preset!r} keeps its base checkpoint by test accuracy (best-on-test), which "
                                "only the runner can score, and scoring the test set for a method in a worker would "
                                "answer questions about the test labels: run it with --isolation none")
        self.views = views_of(method_cls, hparams, view_inputs) if view_inputs is not None else MethodViews()
        self.config: dict[str, Any] = {"preset": preset, "overrides": dict(overrides or {}),
                                       "hparams": hparams_to_dict(hparams) if hparams is not None else {}}
        if self.views.identity is not None:
            self.config["views"] = self.views.identity
        self.ctx = Context.create(info, hparams, seed, device=device, cache_dir=cache_dir, progress=progress, log=log,
                                  weights_dir=weights_dir, bf16=bf16, sync_batchnorm=sync_batchnorm,
                                  views=self.views.identity)
        if uses_test_checkpoint(hparams):
            self.ctx.base_test_accuracy = test_scorer(self.views.test)
            self.ctx.extra["not_protocol_clean"] = NOT_PROTOCOL_CLEAN
        self.method: Any = None
        self.method = method_cls()
        self.num_seen = 0

    @property
    def has_embed(self) -> bool:
        return _optional(self.method, "embed") is not None

    def fit(self, session: Session) -> None:
        """``fit_base`` for session 0, ``fit_session`` after, with the method's views attached."""
        session.train.train_transform = self.views.train or session.train.train_transform
        session.train.eval_transform = self.views.test or session.train.eval_transform
        (self.method.fit_base if session.is_base else self.method.fit_session)(session, self.ctx)
        self.num_seen = session.num_seen

    @torch.no_grad()
    def evaluate(self, images: np.ndarray, rows: np.ndarray | None, transform: BatchTransform, batch_size: int,
                 desc: str) -> HostEvaluation:
        """The answers for ``images`` (or its ``rows``), in that order, ``batch_size`` at a time,
        shown through the method's test view (``transform``, the benchmark's, where it has none)."""
        n = len(images) if rows is None else len(rows)
        batches = iterate_images(images, self.views.test or transform, batch_size, self.ctx.device, rows)
        embed, classify = _optional(self.method, "embed"), _optional(self.method, "classify")
        preds: list[torch.Tensor] = []
        features: list[torch.Tensor] | None = [] if embed is not None else None
        feature_error = None
        for x in self.ctx.progress(batches, desc=desc, total=-(-n // batch_size)):
            if embed is not None and classify is not None:
                f = embed(x)
                _check_features(f, len(x))
                logits = classify(f)
                _check_logits(logits, len(x), self.num_seen, "classify")
            else:
                logits = self.method.predict(x)
                _check_logits(logits, len(x), self.num_seen, "predict")
                f = None
                if features is not None:
                    try:
                        f = embed(x)
                        _check_features(f, len(x))
                    except Exception as exc:  # features only feed the diagnostics: never fail the run
                        feature_error, features = _error_text(exc), None
            preds.append(logits.argmax(1).to("cpu", torch.int16))
            if features is not None:
                features.append(f.detach().to("cpu", torch.float32))
        out = HostEvaluation(torch.cat(preds).numpy() if preds else np.zeros(0, np.int16))
        if features is not None and features:
            out.features = torch.cat(features).numpy()
        elif embed is not None:
            out.feature_error = feature_error or "nothing evaluated"
        if embed is not None:
            out.weights, out.weights_error = self._weights()
        return out

    def _weights(self) -> tuple[np.ndarray | None, str | None]:
        fn = _optional(self.method, "classifier_weights")
        if fn is None:
            return None, None
        try:
            weights = fn()
            if weights is None:
                return None, None
            return torch.as_tensor(weights).detach().to("cpu", torch.float32).numpy(), None
        except Exception as exc:  # the diagnostics never fail a run
            return None, _error_text(exc)

    def memory(self) -> dict[str, Any]:
        """What the method declares it keeps (``memory()``), as the record stores it."""
        return declared_memory(self.method)

    @property
    def extra(self) -> dict[str, Any]:
        return self.ctx.extra

    def peak_memory(self) -> dict[str, Any]:
        """The run's peak memory so far (:mod:`fscil_bench.run.peak_memory`), as the record stores it."""
        return self.peak.read()


def declared_memory(method: object) -> dict[str, Any]:
    declare = getattr(method, "memory", None)
    if declare is None:
        return {"declared": False}
    try:
        decl = declare()
    except Exception as exc:
        return {"declared": False, "error": _error_text(exc)}
    if isinstance(decl, MemoryDeclaration):
        return {"declared": True, **decl.__dict__}
    return {"declared": True, **dict(decl)}
