"""Super-patches of SVIP (arXiv 2503.10252, Sec. 3.2): 2x2 blocks of ViT patches, their scores and top-M.

A ViT-B/16 at 224 px has a 14 x 14 patch grid; SVIP groups it into 7 x 7 = 49 super-patches of 2 x 2
patches, each described by the concatenation of its four raw patch embeddings (4 x 768 = 3072 dims), and
keeps the M super-patches with the highest attention-rollout score (M = 40 of 49 for CUB, METHODS.md §2).

Grouping. Patches are in row-major order: patch (r, c) is token ``r * cols + c``. Super-patch (i, j) is the
2 x 2 block of patches (2i, 2j), (2i, 2j+1), (2i+1, 2j), (2i+1, 2j+1), for its features *and* its score.

The reference's bug (uqzhichen/SVIP, METHODS.md §2). It groups the features as 2 x 2 spatial blocks but the
rollout scores with ``scores.view(7, 7, 4)``: a view of the 196 row-major scores as (7, 7, 4) puts 4
*consecutive* tokens of one row in each group (tokens 4k .. 4k+3: a 1 x 4 strip, and strips that wrap from
one patch row to the next), so the score that decides whether a super-patch is kept belongs to other patches
than the features that are kept or dropped. :func:`reference_super_patch_scores` reproduces that grouping
(for the test that shows the mismatch); :func:`super_patch_scores` groups the scores exactly like
:func:`super_patch_features`.

numpy only.
"""

from __future__ import annotations

import numpy as np


def _check_grid(rows: int, cols: int, what: str) -> None:
    if rows < 2 or cols < 2 or rows % 2 or cols % 2:
        raise ValueError(f"{what}: the patch grid {rows}x{cols} must have an even number (>= 2) of rows and "
                         "columns to be grouped into 2x2 super-patches")


def super_patch_features(tokens: np.ndarray) -> np.ndarray:
    """Concatenate the raw embeddings of each 2x2 block of patches (SVIP arXiv 2503.10252, Sec. 3.2).

    Parameters
    ----------
    tokens : numpy.ndarray
        (rows, cols, d) patch embeddings on the patch grid (row = y, col = x), any dtype; rows and cols even.

    Returns
    -------
    numpy.ndarray
        (rows/2, cols/2, 4d), same dtype: super-patch (i, j) = [p(2i, 2j), p(2i, 2j+1), p(2i+1, 2j),
        p(2i+1, 2j+1)] concatenated (``tokens.reshape(r/2, 2, c/2, 2, d)`` with the two block axes moved last).

    Raises
    ------
    ValueError
        Not 3-D, or an odd (or < 2) number of rows or columns.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 3:
        raise ValueError(f"super_patch_features needs (rows, cols, d) tokens, got shape {tokens.shape}")
    rows, cols, dim = tokens.shape
    _check_grid(rows, cols, "super_patch_features")
    blocks = tokens.reshape(rows // 2, 2, cols // 2, 2, dim).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(blocks.reshape(rows // 2, cols // 2, 4 * dim))


def super_patch_scores(scores: np.ndarray) -> np.ndarray:
    """Mean score of each 2x2 block of patches, grouped exactly like :func:`super_patch_features`.

    The reference reduces each group of 4 scores to one (sum or mean give the same ranking); the mean keeps
    the scale of the patch scores. This is the *fixed* grouping (see the module docstring for the bug).

    Parameters
    ----------
    scores : numpy.ndarray
        (rows, cols) patch scores (e.g. the attention rollout, :func:`protolens.core.attention.
        attention_rollout_map`), rows and cols even.

    Returns
    -------
    numpy.ndarray
        (rows/2, cols/2) float32: mean of scores[2i:2i+2, 2j:2j+2].

    Raises
    ------
    ValueError
        Not 2-D, or an odd (or < 2) number of rows or columns.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"super_patch_scores needs (rows, cols) scores, got shape {scores.shape}")
    rows, cols = scores.shape
    _check_grid(rows, cols, "super_patch_scores")
    return scores.reshape(rows // 2, 2, cols // 2, 2).mean(axis=(1, 3)).astype(np.float32)


def reference_super_patch_scores(scores: np.ndarray) -> np.ndarray:
    """The reference's (buggy) grouping: row-major scores viewed as (rows/2, cols/2, 4), mean of the last axis.

    Group k holds tokens 4k .. 4k+3 (consecutive tokens of one patch row), not a 2x2 block. Kept only to
    document and test the mismatch with :func:`super_patch_features`; do not use it to select patches.
    Returns (rows/2, cols/2) float32. Raises ValueError as :func:`super_patch_scores`.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"reference_super_patch_scores needs (rows, cols) scores, got shape {scores.shape}")
    rows, cols = scores.shape
    _check_grid(rows, cols, "reference_super_patch_scores")
    return scores.reshape(rows // 2, cols // 2, 4).mean(axis=-1).astype(np.float32)


def rank_order(scores: np.ndarray) -> np.ndarray:
    """Flat indices of ``scores`` from the highest to the lowest; ties broken by the lower flat index first.

    Returns (n,) int64 (a stable sort of -scores). NaN scores rank last.
    """
    flat = np.asarray(scores, dtype=np.float64).reshape(-1)
    flat = np.where(np.isnan(flat), -np.inf, flat)
    return np.argsort(-flat, kind="stable")


def top_m(scores: np.ndarray, m: int) -> np.ndarray:
    """The ``m`` highest-scoring super-patches (SVIP arXiv 2503.10252, Sec. 3.2: keep top-M).

    Parameters
    ----------
    scores : numpy.ndarray
        (rows, cols) super-patch scores (higher = more relevant).
    m : int
        How many to keep, 0 <= m <= rows * cols. Ties are broken by row-major position (earlier first).

    Returns
    -------
    numpy.ndarray
        (rows, cols) bool, exactly ``m`` True.

    Raises
    ------
    ValueError
        ``m`` outside [0, rows * cols].
    """
    scores = np.asarray(scores)
    if not 0 <= int(m) <= scores.size:
        raise ValueError(f"keep M = {m} super-patches: M must be in 0..{scores.size}")
    kept = np.zeros(scores.size, dtype=bool)
    kept[rank_order(scores)[:int(m)]] = True
    return kept.reshape(scores.shape)


def rank_heatmap(scores: np.ndarray) -> np.ndarray:
    """Rank score per super-patch in [0, 1]: 1 = the highest score, 0 = the lowest (evenly spaced).

    With n super-patches and rank k (0 = best, ties as :func:`rank_order`) the value is (n - 1 - k) / (n - 1)
    (1.0 when n = 1). ``rank_heatmap(s) >= keep_threshold(n, m)`` is exactly ``top_m(s, m)``.
    Returns (rows, cols) float32.
    """
    scores = np.asarray(scores)
    n = scores.size
    ranks = np.empty(n, dtype=np.int64)
    ranks[rank_order(scores)] = np.arange(n)
    values = np.ones(n) if n <= 1 else (n - 1 - ranks) / (n - 1)
    return values.astype(np.float32).reshape(scores.shape)


def keep_threshold(n: int, m: int) -> float:
    """The threshold t in [0, 1] with ``rank_heatmap >= t`` keeping exactly the top ``m`` of ``n`` (1 <= m <= n).

    t = (n - m - 0.5) / (n - 1), halfway between the m-th and the (m+1)-th rank score, so float32 rounding of
    the rank scores never moves one across it; clipped to [0, 1] (m = n gives 0: all kept). Conversely a
    threshold t keeps the m = number of rank scores >= t, which is how a display threshold slider over the
    rank heatmap becomes a live M slider. Raises ValueError for m outside 1..n.
    """
    if not 1 <= m <= n:
        raise ValueError(f"keep M = {m} of {n} super-patches: M must be in 1..{n}")
    if n == 1:
        return 0.0
    return float(min(1.0, max(0.0, (n - m - 0.5) / (n - 1))))


def selection_targets(super_scores: np.ndarray, m: int) -> np.ndarray:
    """Patch-classifier targets (SVIP arXiv 2503.10252, Sec. 3.2): 1 = NOT kept, 0 = kept among the top ``m``.

    Returns (rows, cols) float32 for (rows, cols) super-patch scores. Raises ValueError as :func:`top_m`.
    """
    return (~top_m(super_scores, m)).astype(np.float32)


def kept_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU |a & b| / |a | b| of two kept sets (bool arrays of one shape); 1.0 when both are empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"kept sets of different shapes {a.shape} and {b.shape}")
    union = int(np.logical_or(a, b).sum())
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum()) / union
