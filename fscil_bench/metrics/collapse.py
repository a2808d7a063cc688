"""Neural-collapse diagnostics of a session's test features and classifier.

Pure functions over numpy arrays (no torch), each with its definition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fscil_bench.metrics.inputs import (
    NAN,
    as_int_array,
    check_groups,
    json_float,
    nanmean,
)

__all__ = [
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
    y = as_int_array(labels, "labels")
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
    # and projected before subtracting the means (no N x d temporary).
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
        out.append(nanmean(values.tolist()) if len(values) else NAN)
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
    groups = check_groups(groups)
    C = groups[-1][1]
    H, y, _ = _features_and_labels(features, labels, C)
    means = _class_means(H, y, C)
    out: dict[str, Any] = {
        "nc1": json_float(_within_class_variability(H, y, means)),
        "equinorm": json_float(equinorm(means)),
        "equiangularity": json_float(equiangularity(means)),
        "self_duality": None,
        "alignment": None,
    }
    if classifier is not None:
        W = np.asarray(classifier, dtype=np.float64)
        out["self_duality"] = json_float(self_duality(means, W))
        out["alignment"] = [json_float(v) for v in group_alignment(means, W, groups)]
    return out
