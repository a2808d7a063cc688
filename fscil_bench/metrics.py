"""Metrics for few-shot class-incremental learning, computed from saved predictions.

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

__all__ = [
    "METRIC_DEFINITIONS",
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
    "summarize",
    "DIAGNOSTIC_DEFINITIONS",
    "class_means",
    "within_class_variability",
    "equinorm",
    "equiangularity",
    "self_duality",
    "classifier_alignment",
    "group_alignment",
    "collapse_diagnostics",
]

NAN = float("nan")

METRIC_DEFINITIONS: dict[str, str] = {
    "session_acc": "A_t: sample-weighted top-1 accuracy on the test samples of all classes seen after session t.",
    "avg_acc": "Average accuracy: mean of A_t over all sessions t = 0..T (base session included).",
    "last_acc": "Last-session accuracy: A_T, accuracy on all classes after the final session.",
    "pd": "Performance drop: PD = A_0 - A_T (base-session accuracy minus last-session accuracy).",
    "base_acc": "Base accuracy per session: top-1 accuracy on the test samples of the session-0 (base) classes.",
    "novel_acc": "Novel accuracy per session: pooled, sample-weighted top-1 accuracy on the test samples "
    "of all classes introduced after session 0 (undefined at session 0).",
    "hm": "Harmonic mean per session of base (a) and novel (b) accuracy: 2ab/(a+b); 0 if both are 0.",
    "acc_matrix": "A[t][g]: top-1 accuracy after session t on the test samples of the classes introduced "
    "in session g (g <= t; empty above the diagonal).",
    "forgetting_max": "Max-based forgetting after the last session: mean over g < T of "
    "(max_{t in [g, T-1]} A[t][g] - A[T][g]).",
    "forgetting_initial": "Initial-based forgetting after the last session: mean over g < T of (A[g][g] - A[T][g]).",
    "bwt": "Backward transfer after the last session: BWT = mean over g < T of (A[T][g] - A[g][g]) "
    "= -(initial-based forgetting).",
    "forgetting_max_per_session": "Max-based forgetting evaluated after each session t: mean over g < t of "
    "(max_{t' in [g, t-1]} A[t'][g] - A[t][g]); undefined at t = 0.",
    "forgetting_initial_per_session": "Initial-based forgetting evaluated after each session t: mean over g < t "
    "of (A[g][g] - A[t][g]); undefined at t = 0.",
    "num_test_samples": "Number of test samples evaluated after each session t (labels below num_seen(t)).",
}


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------


def _as_int_array(values: Any, what: str) -> np.ndarray:
    """``values`` as a 1-D int64 array; integral floats are accepted, anything else is an error."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "b":
        raise ValueError(f"{what} must hold integer class ids, got a boolean array")
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        return arr.astype(np.int64)
    raise ValueError(f"{what} must hold integer class ids, got dtype {arr.dtype}")


def _pair(labels: Any, preds: Any, where: str = "") -> tuple[np.ndarray, np.ndarray]:
    suffix = f" {where}" if where else ""
    y = _as_int_array(labels, f"labels{suffix}")
    p = _as_int_array(preds, f"preds{suffix}")
    if len(y) != len(p):
        raise ValueError(f"labels and preds{suffix} differ in length: {len(y)} labels vs {len(p)} preds")
    return y, p


def _check_groups(groups: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Validated ``groups`` as a list of ``(start, stop)`` int pairs."""
    out: list[tuple[int, int]] = []
    expected_start = 0
    if len(groups) == 0:
        raise ValueError("groups is empty: a schedule needs at least the base session")
    for g, grp in enumerate(groups):
        try:
            start, stop = (int(v) for v in grp)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"groups[{g}] must be a (start, stop) pair of ints, got {grp!r}") from exc
        if start != expected_start:
            raise ValueError(
                f"groups must be contiguous and ascending from 0: groups[{g}] starts at {start}, "
                f"expected {expected_start}"
            )
        if stop <= start:
            raise ValueError(f"groups[{g}] = ({start}, {stop}) introduces no classes (need stop > start)")
        out.append((start, stop))
        expected_start = stop
    return out


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


def _nanmean(values: Sequence[float]) -> float:
    """Mean of the non-NaN values; NaN if there are none."""
    finite = [v for v in values if not math.isnan(v)]
    return float(sum(finite) / len(finite)) if finite else NAN


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
    grp = _check_groups(groups)
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
    return _nanmean(terms)


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
# summary
# --------------------------------------------------------------------------------------------


def _json_float(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def summarize(
    labels_per_session: Sequence[np.ndarray],
    preds_per_session: Sequence[np.ndarray],
    groups: Sequence[tuple[int, int]],
) -> dict:
    """All metrics of one run, as a JSON-serialisable dict (see :data:`METRIC_DEFINITIONS`).

    Values are plain Python floats, ints and lists; NaN is written as ``None`` (so the
    ``acc_matrix`` holds ``None`` above the diagonal). Raises ``ValueError`` on the same
    inputs as :func:`accuracy_matrix`.
    """
    A = accuracy_matrix(labels_per_session, preds_per_session, groups)  # validates everything
    sessions = _check_sessions(labels_per_session, preds_per_session)
    num_base = int(groups[0][1]) - int(groups[0][0])

    accs = [top1_accuracy(y, p) for y, p in sessions]
    bases, novels, hms = [], [], []
    for y, p in sessions:
        b, n, h = base_novel_accuracy(y, p, num_base)
        bases.append(b)
        novels.append(n)
        hms.append(h)
    f_max = forgetting_max_per_session(A)
    f_init = forgetting_initial_per_session(A)

    def js(values: Sequence[float]) -> list[float | None]:
        return [_json_float(v) for v in values]

    return {
        "session_acc": js(accs),
        "avg_acc": _json_float(average_accuracy(accs)),
        "last_acc": _json_float(last_accuracy(accs)),
        "pd": _json_float(performance_drop(accs)),
        "base_acc": js(bases),
        "novel_acc": js(novels),
        "hm": js(hms),
        "acc_matrix": [js(row) for row in A],
        "forgetting_max": _json_float(f_max[-1]),
        "forgetting_initial": _json_float(f_init[-1]),
        "bwt": _json_float(0.0 - f_init[-1]),
        "forgetting_max_per_session": js(f_max),
        "forgetting_initial_per_session": js(f_init),
        "num_test_samples": [int(len(y)) for y, _ in sessions],
    }


# --------------------------------------------------------------------------------------------
# neural-collapse diagnostics
# --------------------------------------------------------------------------------------------
#
# Notation (Papyan, Han and Donoho, "Prevalence of neural collapse during the terminal phase of
# deep learning training", PNAS 2020). ``H`` is an ``(N, d)`` array of features, ``y`` their
# labels in ``0..C-1`` (every one of the ``C`` classes has at least one sample), ``n_c`` the
# samples of class ``c``. Every class weighs the same, however many samples it has:
#
# * class means ``mu_c = (1/n_c) sum_{i: y_i = c} h_i``; global mean ``mu_G = (1/C) sum_c mu_c``;
# * centred means ``M`` = the ``(C, d)`` matrix with rows ``mu_c - mu_G``;
# * between-class covariance ``Sigma_B = (1/C) sum_c (mu_c - mu_G)(mu_c - mu_G)^T = M^T M / C``;
# * within-class covariance ``Sigma_W = (1/C) sum_c (1/n_c) sum_{i: y_i = c} (h_i - mu_c)(h_i - mu_c)^T``
#   (a class with one sample contributes a zero covariance).
#
# Everything is computed in float64 from the ``C x d`` class means, ``C x C`` Gram matrices and
# an ``(N, r)`` projection (``r = rank M <= min(C - 1, d)``); no ``N x N`` or ``d x d`` matrix
# is formed, so a session of 10,000 x 512 features costs a fraction of a second. A value that
# is undefined (fewer than two classes, all class means equal) is ``float('nan')``.

#: Singular values of ``M`` below this fraction of the largest are treated as zero when
#: pseudo-inverting ``Sigma_B`` (float32 features carry about 7 significant digits).
PINV_RTOL = 1e-6

DIAGNOSTIC_DEFINITIONS: dict[str, str] = {
    "nc1": "NC1, within-class variability collapse: tr(Sigma_W Sigma_B^+) / C on the test features of the C "
    "seen classes (0 when every feature equals its class mean).",
    "equinorm": "NC2, equinorm: coefficient of variation (std / mean) of the norms ||mu_c - mu_G|| of the "
    "centred class means (0 when all are equally long).",
    "equiangularity": "NC2, equiangularity: ||G - E||_F / ||E||_F, with G the cosine Gram matrix of the centred "
    "class means and E = C/(C-1) (I - 11^T/C) the simplex-ETF Gram (0 for a simplex ETF).",
    "self_duality": "NC3, self-duality: ||W / ||W||_F - M / ||M||_F||_F between the classifier matrix W (one row per "
    "seen class) and the centred class means M (0 when they coincide up to scale; at most 2).",
    "alignment": "Feature-classifier alignment per class group: mean over the group's classes of cos(mu_c, w_c), the "
    "cosine between class c's (uncentred) test-feature mean and its classifier vector or prototype.",
}


def _features_and_labels(features: Any, labels: Any, num_classes: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Validated features (float32 stays float32: the ``N x d`` work runs in the input's precision),
    int labels and the number of classes."""
    H = np.asarray(features)
    if H.dtype not in (np.float32, np.float64):
        H = H.astype(np.float64)
    if H.ndim != 2:
        raise ValueError(f"features must be a 2-D (N, d) array, got shape {H.shape}")
    y = _as_int_array(labels, "labels")
    if len(y) != len(H):
        raise ValueError(f"features and labels differ in length: {len(H)} features vs {len(y)} labels")
    if len(y) == 0:
        raise ValueError("no features: the diagnostics need at least one sample per class")
    C = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if y.min() < 0 or y.max() >= C:
        raise ValueError(f"labels must lie in 0..{C - 1}, got {int(y.min())}..{int(y.max())}")
    return H, y, C


def _class_means(H: np.ndarray, y: np.ndarray, C: int) -> np.ndarray:
    counts = np.bincount(y, minlength=C)
    if np.any(counts == 0):
        raise ValueError(f"classes without samples: {np.flatnonzero(counts == 0)[:10].tolist()}")
    # Test sets usually come sorted by class: then the slices need no reordering copy.
    sorted_h = H if np.all(y[1:] >= y[:-1]) else H[np.argsort(y, kind="stable")]
    means = np.empty((C, H.shape[1]), dtype=np.float64)
    start = 0
    # One contiguous slice per class (C is small): faster than np.add.at or a one-hot product.
    for c, n in enumerate(counts.tolist()):
        means[c] = sorted_h[start : start + n].sum(0, dtype=np.float64) / n
        start += n
    return means


def class_means(features: Any, labels: Any, num_classes: int | None = None) -> np.ndarray:
    """The ``(C, d)`` float64 matrix of class means ``mu_c`` of ``features`` (rows of an
    ``(N, d)`` array) grouped by ``labels`` in ``0..C-1`` (``C = max label + 1`` unless
    ``num_classes`` is given). Raises ``ValueError`` when a class has no sample."""
    return _class_means(*_features_and_labels(features, labels, num_classes))


def _centred(means: np.ndarray) -> np.ndarray:
    return means - means.mean(0, keepdims=True)


def within_class_variability(features: Any, labels: Any, num_classes: int | None = None) -> float:
    """NC1 = ``tr(Sigma_W Sigma_B^+) / C`` (see the notation above).

    Within-class spread measured in the units of the between-class spread: 0 when every feature
    equals its class mean, about ``(n - 1)(C - 1) / (d - C)`` for isotropic Gaussian features with
    ``n`` samples per class and no class structure (``C < d``).

    Conventions: ``Sigma_B^+`` is the Moore-Penrose pseudo-inverse, from the SVD ``M = U S V^T``
    (its singular values and right singular vectors): ``Sigma_B^+ = C sum_k v_k v_k^T / s_k^2``
    over the singular values ``s_k > PINV_RTOL * max(s)``, so ``NC1 = sum_k (v_k^T Sigma_W v_k) / s_k^2`` and only the
    within-class spread along between-class directions counts. ``M`` has rank at most
    ``min(C - 1, d)``; with ``C > d`` (more classes than dimensions) the pseudo-inverse covers
    at most ``d`` directions and NC1 stays finite. A class with one sample has zero within-class
    covariance. NaN when ``C < 2`` or all class means coincide (``Sigma_B = 0``). The ``N x d``
    work runs in the features' precision (float32 or float64).
    """
    H, y, C = _features_and_labels(features, labels, num_classes)
    return _within_class_variability(H, y, _class_means(H, y, C))


def _between_class_directions(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The singular values ``s_k > PINV_RTOL * max(s)`` of ``M`` (descending) and their right
    singular vectors (rows), from the eigen-decomposition of the smaller of ``M M^T`` and ``M^T M``
    (a ``C x C`` or ``d x d`` matrix: several times faster than an SVD of ``M``)."""
    C, d = M.shape
    gram = M @ M.T if C <= d else M.T @ M
    evals, evecs = np.linalg.eigh(gram)
    evals, evecs = evals[::-1], evecs[:, ::-1]
    s = np.sqrt(np.clip(evals, 0.0, None))
    if s[0] <= 0:
        return s[:0], np.empty((0, d))
    keep = s > PINV_RTOL * s[0]
    s = s[keep]
    vt = (evecs[:, keep].T @ M) / s[:, None] if C <= d else evecs[:, keep].T
    return s, vt


def _within_class_variability(H: np.ndarray, y: np.ndarray, means: np.ndarray) -> float:
    C = len(means)
    if C < 2:
        return NAN
    s, vt = _between_class_directions(_centred(means))
    if s.size == 0:
        return NAN
    # Within-class deviations along the between-class directions, (N, r): never N x N or d x d,
    # and projected before subtracting the means (no N x d temporary: twice as fast).
    directions = vt.T.astype(H.dtype)
    proj = H @ directions
    proj -= (means.astype(H.dtype) @ directions)[y]
    counts = np.bincount(y, minlength=C).astype(np.float64)
    weights = 1.0 / (C * counts[y])  # Sigma_W's weight of sample i: 1 / (C n_{y_i})
    directional = weights @ np.square(proj, dtype=np.float64)  # v_k^T Sigma_W v_k per direction
    return float(np.sum(directional / s**2))


def equinorm(means: Any) -> float:
    """NC2, equinorm: ``std_c ||mu_c - mu_G|| / mean_c ||mu_c - mu_G||`` (population std) of the
    ``(C, d)`` class ``means``. 0 when every centred mean has the same length; NaN when
    ``C < 2`` or all means coincide."""
    mu = np.asarray(means, dtype=np.float64)
    if mu.ndim != 2 or len(mu) < 2:
        return NAN
    norms = np.linalg.norm(_centred(mu), axis=1)
    mean = norms.mean()
    return float(norms.std() / mean) if mean > 0 else NAN


def equiangularity(means: Any) -> float:
    """NC2, equiangularity: ``||G - E||_F / ||E||_F`` for the ``(C, d)`` class ``means``.

    ``G`` is the ``C x C`` cosine Gram matrix of the centred means (``G_ab = cos(mu_a - mu_G,
    mu_b - mu_G)``) and ``E = C/(C-1) (I - 11^T/C)`` the Gram of a simplex ETF (ones on the
    diagonal, ``-1/(C-1)`` off it; ``||E||_F = C / sqrt(C - 1)``). 0 exactly for a simplex ETF;
    about ``(C - 1) / sqrt(C d)`` for isotropic Gaussian means (their cosines scatter around
    ``-1/(C-1)`` with variance ``1/d``). Only angles count: equinorm measures the lengths.

    Conventions: a centred mean of zero length (a class mean equal to ``mu_G``) gets a zero row
    and column in ``G``. With ``C > d + 1`` no simplex ETF fits in ``d`` dimensions (``G`` has
    rank at most ``d < C - 1``), so the distance is positive but finite. NaN when ``C < 2`` or
    when every class mean equals ``mu_G`` (collapsed features: no angle is defined).
    The distance is not bounded by 1: it grows to about ``sqrt(C)`` when most cosines are near
    +1 or -1 (e.g. class means spread along a few directions).
    """
    mu = np.asarray(means, dtype=np.float64)
    if mu.ndim != 2 or len(mu) < 2:
        return NAN
    C = len(mu)
    centred = _centred(mu)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    if not (norms > 0).any():
        return NAN
    unit = np.divide(centred, norms, out=np.zeros_like(centred), where=norms > 0)
    etf = (np.eye(C) - 1.0 / C) * (C / (C - 1))
    return float(np.linalg.norm(unit @ unit.T - etf) / (C / math.sqrt(C - 1)))


def self_duality(means: Any, classifier: Any) -> float:
    """NC3, self-duality: ``|| W / ||W||_F - M / ||M||_F ||_F``.

    ``M`` is the ``(C, d)`` matrix of centred class ``means`` and ``W`` the ``(C, d)``
    ``classifier`` matrix (row ``c``: class ``c``'s weight vector or prototype, in the feature
    space; biases are not part of it). 0 when the classifier equals the centred means up to a
    positive scale, at most 2. ``W`` is not centred: a classifier of uncentred prototypes sits
    away from ``M`` by their common offset. NaN when ``C < 2`` or either matrix is zero.
    """
    mu = np.asarray(means, dtype=np.float64)
    W = np.asarray(classifier, dtype=np.float64)
    if W.shape != mu.shape:
        raise ValueError(f"classifier has shape {W.shape}, the class means {mu.shape}")
    if len(mu) < 2:
        return NAN
    M = _centred(mu)
    m_norm, w_norm = np.linalg.norm(M), np.linalg.norm(W)
    if m_norm == 0 or w_norm == 0:
        return NAN
    return float(np.linalg.norm(W / w_norm - M / m_norm))


def classifier_alignment(means: Any, classifier: Any) -> np.ndarray:
    """Per class ``c``: ``cos(mu_c, w_c)``, the cosine between the (uncentred) class mean and its
    classifier row (shapes ``(C, d)``); NaN for a zero vector."""
    mu = np.asarray(means, dtype=np.float64)
    W = np.asarray(classifier, dtype=np.float64)
    if W.shape != mu.shape:
        raise ValueError(f"classifier has shape {W.shape}, the class means {mu.shape}")
    denom = np.linalg.norm(mu, axis=1) * np.linalg.norm(W, axis=1)
    dots = np.einsum("cd,cd->c", mu, W)
    return np.divide(dots, denom, out=np.full(len(mu), NAN), where=denom > 0)


def group_alignment(means: Any, classifier: Any, groups: Sequence[tuple[int, int]]) -> list[float]:
    """Feature-classifier alignment per class group: for each ``(start, stop)`` in ``groups``, the
    mean of :func:`classifier_alignment` over classes ``start..stop-1`` (NaN for an empty group
    or one beyond the classes given)."""
    per_class = classifier_alignment(means, classifier)
    out = []
    for start, stop in groups:
        values = per_class[int(start) : min(int(stop), len(per_class))]
        out.append(_nanmean(values.tolist()) if len(values) else NAN)
    return out


def collapse_diagnostics(
    features: Any,
    labels: Any,
    groups: Sequence[tuple[int, int]],
    classifier: Any | None = None,
) -> dict[str, Any]:
    """The neural-collapse diagnostics of one session, as a JSON-serialisable dict.

    ``features`` ``(N, d)`` and ``labels`` ``(N,)``: the test features of the seen classes
    ``0..C-1`` with ``C = groups[-1][1]``, where ``groups`` are the class groups of the sessions
    so far (group 0: the base classes); every seen class needs a sample. ``classifier``:
    ``(C, d)`` classifier vectors or prototypes in the same feature space, or None.

    Returns ``{"nc1", "equinorm", "equiangularity", "self_duality", "alignment"}`` (see
    :data:`DIAGNOSTIC_DEFINITIONS`); ``self_duality`` and ``alignment`` (one value per group) are
    None without a classifier, and NaN is written as None.
    """
    groups = _check_groups(groups)
    C = groups[-1][1]
    H, y, _ = _features_and_labels(features, labels, C)
    means = _class_means(H, y, C)
    out: dict[str, Any] = {
        "nc1": _json_float(_within_class_variability(H, y, means)),
        "equinorm": _json_float(equinorm(means)),
        "equiangularity": _json_float(equiangularity(means)),
        "self_duality": None,
        "alignment": None,
    }
    if classifier is not None:
        W = np.asarray(classifier, dtype=np.float64)
        out["self_duality"] = _json_float(self_duality(means, W))
        out["alignment"] = [_json_float(v) for v in group_alignment(means, W, groups)]
    return out
