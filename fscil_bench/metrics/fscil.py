"""Accuracy metrics of few-shot class-incremental learning, computed from saved predictions.

Pure functions over numpy arrays (no torch), one per metric, each with its definition.

Notation
--------
A schedule has sessions ``t = 0..T``. Session ``g`` introduces the contiguous class-id range
``groups[g] = (start_g, stop_g)`` (half-open, ascending, ``groups[0]`` starts at 0 and holds
the base classes). ``num_seen(t) = stop_t`` is the number of classes seen once session ``t`` is
done; after session ``t`` the model is tested on every test sample whose label is below
``num_seen(t)``. The saved results of session ``t`` are two int arrays of equal length:
``labels_t`` (true labels) and ``preds_t`` (predicted labels).

* ``A[t][g]``: top-1 accuracy after session ``t`` on the test samples whose label lies in
  ``groups[g]`` (``g <= t``); NaN for ``g > t``.
* ``A_t``: sample-weighted top-1 accuracy after session ``t`` over all seen classes, i.e.
  ``A_t = (1/|D_t|) * sum_{(x, y) in D_t} [pred(x) == y]`` with ``D_t`` the test samples
  used after session ``t``. It is *not* the unweighted mean of ``A[t][0..t]``.

All accuracies are fractions in ``[0, 1]``. A value with nothing to average over (novel
accuracy at session 0, forgetting when ``T == 0``, a group with no test samples) is
``float('nan')``; :func:`summarize` turns NaN into ``None`` so that its result is JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fscil_bench.metrics.inputs import NAN, as_int_array, check_groups, nanmean

__all__ = [
    "top1_accuracy",
    "accuracy_matrix",
    "session_accuracies",
    "average_accuracy",
    "performance_drop",
    "last_accuracy",
    "base_novel_accuracy",
    "harmonic_mean",
    "forgetting_max",
    "forgetting_initial",
    "backward_transfer",
    "forgetting_max_per_session",
    "forgetting_initial_per_session",
    "class_wise_base_novel",
    "average_harmonic_mean",
    "gacc_alphas",
    "generalised_accuracy",
    "gacc_auc",
]


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------


def _pair(labels: Any, preds: Any, where: str = "") -> tuple[np.ndarray, np.ndarray]:
    suffix = f" {where}" if where else ""
    y = as_int_array(labels, f"labels{suffix}")
    p = as_int_array(preds, f"preds{suffix}")
    if len(y) != len(p):
        raise ValueError(f"labels and preds{suffix} differ in length: {len(y)} labels vs {len(p)} preds")
    return y, p


def _check_sessions(
    labels_per_session: Sequence[Any], preds_per_session: Sequence[Any]
) -> list[tuple[np.ndarray, np.ndarray]]:
    if len(labels_per_session) != len(preds_per_session):
        raise ValueError(
            f"got labels for {len(labels_per_session)} sessions but preds for {len(preds_per_session)} sessions"
        )
    return [_pair(y, p, f"of session {t}") for t, (y, p) in enumerate(zip(labels_per_session, preds_per_session))]


def _check_labels_in_range(labels: np.ndarray, num_seen: int, t: int) -> None:
    if labels.size == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0:
        raise ValueError(f"session {t}: negative label {lo} in the test labels")
    if hi >= num_seen:
        raise ValueError(
            f"session {t}: test label {hi} is >= num_seen({t}) = {num_seen}; after session {t} only "
            f"classes 0..{num_seen - 1} may be tested"
        )


def _check_matrix(A: Any, T: int | None) -> tuple[np.ndarray, int]:
    M = np.asarray(A, dtype=np.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[0] == 0:
        raise ValueError(f"accuracy matrix must be square with shape (T+1, T+1), got shape {M.shape}")
    last = M.shape[0] - 1
    if T is None:
        T = last
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)):
        raise ValueError(f"T must be an int, got {T!r}")
    T = int(T)
    if not 0 <= T <= last:
        raise ValueError(f"T = {T} is out of range for an accuracy matrix of {last + 1} sessions (0..{last})")
    return M, T


# --------------------------------------------------------------------------------------------
# accuracies
# --------------------------------------------------------------------------------------------


def top1_accuracy(labels: Any, preds: Any) -> float:
    """Top-1 accuracy of ``preds`` against ``labels``.

    ``acc = (1/n) * sum_i [preds_i == labels_i]`` over the ``n`` samples; NaN when ``n == 0``.
    """
    y, p = _pair(labels, preds)
    if y.size == 0:
        return NAN
    return float(np.count_nonzero(y == p) / y.size)


def accuracy_matrix(
    labels_per_session: Sequence[np.ndarray],
    preds_per_session: Sequence[np.ndarray],
    groups: Sequence[tuple[int, int]],
) -> np.ndarray:
    """Accuracy matrix ``A`` of shape ``(T+1, T+1)``.

    ``A[t][g]`` = top-1 accuracy after session ``t`` on the test samples of the classes
    introduced in session ``g``, i.e. on ``{i : start_g <= labels_t[i] < stop_g}``, for
    ``g <= t``; NaN for ``g > t``, and NaN when session ``t``'s test set holds no sample of
    group ``g``.

    Raises ``ValueError`` if the number of sessions differs from ``len(groups)``, if labels
    and preds of a session differ in length, or if a label of session ``t`` is negative or
    ``>= num_seen(t) = groups[t][1]``.
    """
    grp = check_groups(groups)
    sessions = _check_sessions(labels_per_session, preds_per_session)
    if len(sessions) != len(grp):
        raise ValueError(
            f"got predictions for {len(sessions)} sessions but groups describes {len(grp)} sessions"
        )
    n = len(grp)
    A = np.full((n, n), NAN, dtype=np.float64)
    for t, (y, p) in enumerate(sessions):
        _check_labels_in_range(y, grp[t][1], t)
        correct = y == p
        for g in range(t + 1):
            start, stop = grp[g]
            mask = (y >= start) & (y < stop)
            count = int(np.count_nonzero(mask))
            if count:
                A[t, g] = np.count_nonzero(correct & mask) / count
    return A


def session_accuracies(
    labels_per_session: Sequence[np.ndarray], preds_per_session: Sequence[np.ndarray]
) -> list[float]:
    """Per-session accuracy ``[A_0, ..., A_T]``.

    ``A_t = (1/|D_t|) * sum_{i in D_t} [preds_t[i] == labels_t[i]]``: sample-weighted top-1
    accuracy over all test samples used after session ``t`` (all seen classes); NaN for a
    session with no test samples.
    """
    return [top1_accuracy(y, p) for y, p in _check_sessions(labels_per_session, preds_per_session)]


def average_accuracy(accs: Sequence[float]) -> float:
    """Average accuracy ``(1/(T+1)) * sum_{t=0..T} A_t`` over all sessions, base included.

    NaN if ``accs`` is empty or any ``A_t`` is NaN (an average over sessions with a missing
    session is not the same metric, so it is not silently computed over fewer sessions).
    """
    vals = [float(a) for a in accs]
    if not vals:
        return NAN
    return float(sum(vals) / len(vals))


def performance_drop(accs: Sequence[float]) -> float:
    """Performance drop ``PD = A_0 - A_T``.

    Exactly 0.0 when there is a single session (``T == 0``); NaN for an empty sequence.
    """
    vals = [float(a) for a in accs]
    if not vals:
        return NAN
    return vals[0] - vals[-1]


def last_accuracy(accs: Sequence[float]) -> float:
    """Last-session accuracy ``A_T``; NaN for an empty sequence."""
    vals = [float(a) for a in accs]
    return vals[-1] if vals else NAN


def harmonic_mean(a: float, b: float) -> float:
    """Harmonic mean of two accuracies: ``HM = 2ab / (a + b)``.

    ``HM = 0`` when ``a = b = 0``; NaN when either ``a`` or ``b`` is NaN.
    """
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return NAN
    if a + b == 0:
        return 0.0
    return 2.0 * a * b / (a + b)


def base_novel_accuracy(labels: Any, preds: Any, num_base_classes: int) -> tuple[float, float, float]:
    """Base accuracy, novel accuracy and their harmonic mean for one session's predictions.

    * base  = top-1 accuracy on ``{i : labels[i] < num_base_classes}`` (session-0 classes);
    * novel = top-1 accuracy on ``{i : labels[i] >= num_base_classes}`` (all classes introduced
      after session 0, pooled and sample-weighted, not averaged per session);
    * hm    = ``harmonic_mean(base, novel)`` = ``2 * base * novel / (base + novel)``.

    Returns ``(base, novel, hm)``; an empty subset gives NaN (e.g. novel at session 0), and
    then hm is NaN too.
    """
    y, p = _pair(labels, preds)
    if isinstance(num_base_classes, bool) or int(num_base_classes) != num_base_classes or num_base_classes < 1:
        raise ValueError(f"num_base_classes must be a positive int, got {num_base_classes!r}")
    if y.size and int(y.min()) < 0:
        raise ValueError(f"negative label {int(y.min())} in the test labels")
    is_base = y < int(num_base_classes)
    base = top1_accuracy(y[is_base], p[is_base])
    novel = top1_accuracy(y[~is_base], p[~is_base])
    return base, novel, harmonic_mean(base, novel)


# --------------------------------------------------------------------------------------------
# forgetting
# --------------------------------------------------------------------------------------------


def _forgetting(M: np.ndarray, T: int, kind: str) -> float:
    terms: list[float] = []
    for g in range(T):
        final = M[T, g]
        if kind == "max":
            window = M[g:T, g]
            window = window[~np.isnan(window)]
            ref = float(window.max()) if window.size else NAN
        else:
            ref = float(M[g, g])
        terms.append(ref - float(final))  # NaN if either side is undefined
    return nanmean(terms)


def forgetting_max(A: np.ndarray, T: int | None = None) -> float:
    """Max-based forgetting after session ``T`` (default: the last row of ``A``).

    ``F_T = (1/T) * sum_{g=0}^{T-1} ( max_{t in [g, T-1]} A[t][g] - A[T][g] )``

    i.e. for every group learnt before ``T``, the drop from its best accuracy before session
    ``T`` to its accuracy after session ``T``, averaged over groups. NaN when ``T == 0`` (no
    earlier group). A group whose term is undefined (no test samples) is left out of the
    mean; NaN if no group has a defined term. NaN entries inside the max window are skipped.
    """
    M, T = _check_matrix(A, T)
    return _forgetting(M, T, "max")


def forgetting_initial(A: np.ndarray, T: int | None = None) -> float:
    """Initial-based forgetting after session ``T`` (default: the last row of ``A``).

    ``F^init_T = (1/T) * sum_{g=0}^{T-1} ( A[g][g] - A[T][g] )``

    i.e. the drop from each group's accuracy right after it was learnt to its accuracy after
    session ``T``. NaN when ``T == 0``; groups with an undefined term are left out of the mean.
    """
    M, T = _check_matrix(A, T)
    return _forgetting(M, T, "initial")


def backward_transfer(A: np.ndarray, T: int | None = None) -> float:
    """Backward transfer after session ``T`` (default: the last row of ``A``).

    ``BWT_T = (1/T) * sum_{g=0}^{T-1} ( A[T][g] - A[g][g] ) = -F^init_T``

    (negative when old groups are forgotten). NaN when ``T == 0``.
    """
    # 0.0 - f rather than -f, so that no forgetting reads 0.0 and not -0.0.
    return 0.0 - forgetting_initial(A, T)


def forgetting_max_per_session(A: np.ndarray) -> list[float]:
    """``[F_0, F_1, ..., F_T]`` with ``F_t`` = :func:`forgetting_max` evaluated at ``t``.

    ``F_t = (1/t) * sum_{g=0}^{t-1} ( max_{t' in [g, t-1]} A[t'][g] - A[t][g] )``; ``F_0`` is NaN.
    """
    M, last = _check_matrix(A, None)
    return [_forgetting(M, t, "max") for t in range(last + 1)]


def forgetting_initial_per_session(A: np.ndarray) -> list[float]:
    """``[F^init_0, ..., F^init_T]`` with ``F^init_t`` = :func:`forgetting_initial` at ``t``.

    ``F^init_t = (1/t) * sum_{g=0}^{t-1} ( A[g][g] - A[t][g] )``; ``F^init_0`` is NaN.
    """
    M, last = _check_matrix(A, None)
    return [_forgetting(M, t, "initial") for t in range(last + 1)]


# --------------------------------------------------------------------------------------------
# balanced summaries: class-wise harmonic mean (OrCo) and generalised average accuracy (gAcc)
# --------------------------------------------------------------------------------------------


def _class_mean_accuracy(y: np.ndarray, p: np.ndarray) -> float:
    """Mean over the classes present in ``y`` of each class's top-1 accuracy; NaN if ``y`` is empty."""
    classes = np.unique(y)
    if classes.size == 0:
        return NAN
    return float(np.mean([np.count_nonzero(p[y == c] == c) / np.count_nonzero(y == c) for c in classes]))


def class_wise_base_novel(labels: Any, preds: Any, num_base_classes: int) -> tuple[float, float, float]:
    """Class-wise (macro) base accuracy, novel accuracy and their harmonic mean for one session.

    * base  = mean over the base classes present in ``labels`` of each class's top-1 accuracy;
    * novel = the same mean over the novel classes present (every class ``>= num_base_classes``
      seen so far, one vote per class);
    * hm    = ``harmonic_mean(base, novel)``.

    Unlike :func:`base_novel_accuracy` (sample-weighted), every class weighs the same; the two
    agree when every class has the same number of test samples. NaN where a side has no class.
    """
    y, p = _pair(labels, preds)
    is_base = y < int(num_base_classes)
    base = _class_mean_accuracy(y[is_base], p[is_base])
    novel = _class_mean_accuracy(y[~is_base], p[~is_base])
    return base, novel, harmonic_mean(base, novel)


def average_harmonic_mean(hm_per_session: Sequence[float]) -> float:
    """Session-averaged harmonic mean ``(1/T) * sum_{t=1..T} HM_t`` (session 0 excluded: it
    has no novel class); NaN when ``T == 0`` or a session's HM is NaN."""
    vals = [float(h) for h in hm_per_session[1:]]
    return float(sum(vals) / len(vals)) if vals else NAN


def gacc_alphas(groups: Sequence[tuple[int, int]]) -> list[int]:
    """The alpha grid of gAcc: the integers ``0 .. floor(B / W)`` with ``B`` the base classes and
    ``W`` the classes of session 1 (the way); ``[0]`` alone when there is no incremental session."""
    grp = check_groups(groups)
    if len(grp) < 2:
        return [0]
    base, way = grp[0][1] - grp[0][0], grp[1][1] - grp[1][0]
    return list(range(base // way + 1))


def generalised_accuracy(A: np.ndarray, alphas: Sequence[float]) -> list[float]:
    """Generalised average accuracy ``gAcc(alpha)`` for every ``alpha`` (Tang et al., ECCV 2024).

    With ``A[i][j]`` the accuracy after session ``i`` on the classes of session ``j``::

        g_i(alpha)    = (alpha * A[i][0] + sum_{j=1..i} A[i][j]) / (alpha + i)     for i >= 1
        g_0(alpha)    = A[0][0]
        gAcc(alpha)   = (1/(T+1)) * sum_{i=0..T} g_i(alpha)

    Each session's value is a weighted mean of its per-task accuracies in which the base task
    weighs ``alpha`` and every incremental task 1: ``alpha = 1`` is the plain mean over tasks,
    ``alpha = B/W`` weighs every class alike when all tasks are equally sized, large ``alpha``
    tends to the base accuracy. NaN where an entry it needs is NaN.
    """
    M, last = _check_matrix(A, None)
    out = []
    for alpha in alphas:
        a = float(alpha)
        if a < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha!r}")
        rows = [M[0, 0]] + [(a * M[i, 0] + M[i, 1 : i + 1].sum()) / (a + i) for i in range(1, last + 1)]
        out.append(float(np.mean(rows)))
    return out


def gacc_auc(curve: Sequence[float], alphas: Sequence[float]) -> float:
    """Area under the gAcc curve over ``alphas``, normalised by their span: the trapezoid rule,
    divided by ``alphas[-1] - alphas[0]``, so a fraction in [0, 1] (the curve's mean height).
    NaN with a single alpha (a span of 0)."""
    x = np.asarray(alphas, dtype=np.float64)
    y = np.asarray(curve, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"curve and alphas differ in shape: {y.shape} vs {x.shape}")
    if x.size < 2 or x[-1] == x[0]:
        return NAN
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))
