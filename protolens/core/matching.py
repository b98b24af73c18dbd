"""Best buddies (mutual nearest neighbours by cosine) and the keypoint-labeling soft vote.

Sources
-------
- Best buddies: Amir et al., "Deep ViT Features as Dense Visual Descriptors", arXiv 2112.05814, §3
  (mutual nearest neighbours of descriptors); used by the Key-point Labeling Classifier (KLC, seed 002) in
  its step 3 to match query segments with the pooled segments of the retrieved prototypes.
- Soft vote: KLC step 4, score(c) = matches on class-c prototypes / all matches, prediction = argmax.
  The reference code offset per-prototype match ranges by the query's segment count and divided by zero
  when nothing matched (METHODS.md §4 step 4); here each pooled segment carries its owner prototype index
  and zero matches give no prediction.

numpy only (``protolens.core`` has no torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from protolens.core.errors import ParamError

DEFAULT_MAX_BYTES = 256 * 1024**2
"""Default bound on one similarity block (rows of A x all of B, float32) in :func:`best_buddies`."""
_STRIP_BYTES = 1 << 20
"""Post-processing of a block runs over row strips of about this size so each strip stays in cache."""


@dataclass
class BestBuddies:
    """Mutual nearest-neighbour pairs between two descriptor sets.

    Attributes
    ----------
    a : numpy.ndarray
        (m,) int64 row indices into A, ascending.
    b : numpy.ndarray
        (m,) int64 row indices into B; ``(a[i], b[i])`` is a pair.
    similarity : numpy.ndarray
        (m,) float32 cosine similarity of each pair, in [-1, 1].
    """

    a: np.ndarray
    b: np.ndarray
    similarity: np.ndarray

    def __len__(self) -> int:
        return int(self.a.shape[0])


def l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 length.

    Parameters
    ----------
    x : numpy.ndarray
        (n, d) array of any real dtype (a 1-D array is treated as one row).
    eps : float
        Norms below ``eps`` are replaced by ``eps``, so an all-zero row stays all zero.

    Returns
    -------
    numpy.ndarray
        float32 array of the shape of ``x``; ``x[i] / max(|x[i]|, eps)``.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 0 or x.shape[-1] == 0:
        return x.copy()
    flat = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))
    return (flat * _inverse_norms(flat, eps)[:, None]).reshape(x.shape)


def _inverse_norms(x: np.ndarray, eps: float, check: bool = False) -> np.ndarray:
    """(n,) float32 ``1 / max(|x[i]|, eps)`` of the rows of a 2-D float32 array.

    Squares are summed in float64 over row chunks of about ``_STRIP_BYTES`` (the float64 copy stays small).
    ``check``: ParamError when a row holds NaN or infinity.
    """
    squares = np.empty(x.shape[0], dtype=np.float64)
    step = max(1, _STRIP_BYTES // (8 * max(1, x.shape[1])))
    for start in range(0, x.shape[0], step):
        chunk = x[start : start + step].astype(np.float64)
        squares[start : start + step] = np.einsum("ij,ij->i", chunk, chunk)
    if check and not np.isfinite(squares).all():
        raise ParamError(
            f"best_buddies: {int((~np.isfinite(squares)).sum())} descriptor(s) hold NaN or infinity"
        )
    return (1.0 / np.maximum(np.sqrt(squares), eps)).astype(np.float32)


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ParamError(f"best_buddies: {name} must be 2-D (n, d), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise ParamError(f"best_buddies: {name} must be real numbers, got dtype {x.dtype}")
    return np.asarray(x, dtype=np.float32)


def best_buddies(a: np.ndarray, b: np.ndarray, *, max_bytes: int = DEFAULT_MAX_BYTES) -> BestBuddies:
    """Mutual nearest neighbours of the rows of ``a`` and ``b`` by cosine similarity.

    Pair ``(i, j)`` is kept iff ``j`` is the nearest row of B to ``a[i]`` and ``i`` is the nearest row of A
    to ``b[j]`` (Amir et al., arXiv 2112.05814 §3 "best buddies"; KLC step 3). Ties: a row's nearest
    neighbour is the LOWEST index among equal maxima, in both directions (``numpy.argmax`` semantics).

    The similarity is computed in float32 as ``(a[i] . b[j]) * inv_a[i] * inv_b[j]`` with
    ``inv = 1 / max(norm, 1e-12)`` (so all-zero rows have similarity 0 to everything), i.e. the cosine of
    L2-normalised rows; the raw dot product comes first so that integer-valued descriptors (dot products
    below 2**24) tie exactly. Values must be finite and small enough for float32 dot products (< 3e38).

    Memory and time: A is processed in chunks of rows whose similarity block (rows x n_b float32) is at most
    ``max_bytes``, into one preallocated buffer filled by ``np.matmul(..., out=...)``; the column maxima and
    their arg-maxima are carried across chunks (strict ``>``, so an earlier row wins a tie). Peak memory is
    one block plus O(n_a + n_b) (plus a float32 copy of an input that is not float32). Time is dominated by
    the one matrix product (``benchmarks/bench_best_buddies.py``).

    Parameters
    ----------
    a : numpy.ndarray
        (n_a, d) descriptors, any real dtype.
    b : numpy.ndarray
        (n_b, d) descriptors, any real dtype.
    max_bytes : int
        Bound on one similarity block in bytes; at least one row of A is processed at a time.

    Returns
    -------
    BestBuddies
        Pairs with ``a`` ascending; empty when either input has no rows.

    Raises
    ------
    ParamError
        Non-2-D input, non-numeric dtype, NaN or infinite values, or different descriptor dimensions.
    """
    a = _as_matrix(a, "a")
    b = _as_matrix(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ParamError(
            f"best_buddies: descriptor dimensions differ: a has {a.shape[1]}, b has {b.shape[1]}"
        )
    n_a, n_b = a.shape[0], b.shape[0]
    if n_a == 0 or n_b == 0:
        return _empty()
    inv_a = _inverse_norms(a, 1e-12, check=True)
    inv_b = _inverse_norms(b, 1e-12, check=True)
    rows = int(max(1, min(n_a, max_bytes // (4 * n_b))))
    block = np.empty((rows, n_b), dtype=np.float32)
    row_arg = np.empty(n_a, dtype=np.int64)
    row_max = np.empty(n_a, dtype=np.float32)
    col_max = np.full(n_b, -np.inf, dtype=np.float32)
    col_arg = np.zeros(n_b, dtype=np.int64)
    b_t = b.T
    for start in range(0, n_a, rows):
        stop = min(start + rows, n_a)
        out = block[: stop - start]
        np.matmul(a[start:stop], b_t, out=out)
        _reduce_block(out, start, inv_a, inv_b, row_arg, row_max, col_max, col_arg)
    mutual = col_arg[row_arg] == np.arange(n_a)
    pairs_a = np.flatnonzero(mutual).astype(np.int64)
    return BestBuddies(a=pairs_a, b=row_arg[pairs_a], similarity=row_max[pairs_a])


def _reduce_block(block, start, inv_a, inv_b, row_arg, row_max, col_max, col_arg) -> None:
    """Scale one raw dot-product block to cosines in place and fold it into the row/column arg-maxima.

    Works on row strips of about ``_STRIP_BYTES`` so that scaling, the row arg-max and the column max of a
    strip reuse the cache; the column arg-max is computed only for the columns a strip improves.
    """
    n_rows, n_b = block.shape
    strip = max(1, _STRIP_BYTES // (4 * n_b))
    for lo in range(0, n_rows, strip):
        hi = min(lo + strip, n_rows)
        s = block[lo:hi]
        np.multiply(s, inv_b, out=s)
        np.multiply(s, inv_a[start + lo : start + hi, None], out=s)
        arg = s.argmax(axis=1)
        row_arg[start + lo : start + hi] = arg
        row_max[start + lo : start + hi] = s[np.arange(hi - lo), arg]
        strip_max = s.max(axis=0)
        better = np.flatnonzero(strip_max > col_max)
        if better.size:
            col_max[better] = strip_max[better]
            col_arg[better] = s[:, better].argmax(axis=0) + (start + lo)


def _empty() -> BestBuddies:
    return BestBuddies(
        a=np.zeros(0, dtype=np.int64), b=np.zeros(0, dtype=np.int64), similarity=np.zeros(0, dtype=np.float32)
    )


@dataclass
class Vote:
    """The keypoint-labeling soft vote (KLC step 4).

    Attributes
    ----------
    classes : list of str
        Class names in order of first appearance in the retrieval ranking.
    counts : numpy.ndarray
        (n_classes,) int64 matches on each class's prototypes.
    scores : numpy.ndarray
        (n_classes,) float64 ``counts / total``; all 0 when ``total == 0``.
    per_prototype : numpy.ndarray
        (n_prototypes,) int64 matches per retrieved prototype, in retrieval order.
    total : int
        All matches.
    prediction : str or None
        The class with the most matches; a tie goes to the class appearing first in retrieval order;
        None when there is no match.
    """

    classes: list[str]
    counts: np.ndarray
    scores: np.ndarray
    per_prototype: np.ndarray
    total: int
    prediction: str | None

    def message(self) -> str:
        """One line: ``"<class> (<n>/<total> matches)"``, or ``"no best buddies: no prediction"``."""
        if self.total == 0 or self.prediction is None:
            return "no best buddies: no prediction"
        n = int(self.counts[self.classes.index(self.prediction)])
        return f"{self.prediction} ({n}/{self.total} matches)"

    def to_json(self) -> dict:
        """JSON-ready dict: classes, counts, scores, per_prototype, total, prediction, message."""
        return {
            "classes": list(self.classes),
            "counts": [int(c) for c in self.counts],
            "scores": [float(s) for s in self.scores],
            "per_prototype": [int(c) for c in self.per_prototype],
            "total": int(self.total),
            "prediction": self.prediction,
            "message": self.message(),
        }


def soft_vote(match_prototype: np.ndarray, prototype_classes: Sequence[str]) -> Vote:
    """Count matches per retrieved prototype and per class, and predict the class with most matches.

    KLC step 4: score(c) = matches on class-c prototypes / all matches, prediction = argmax. Each match is
    attributed through the index of the prototype its prototype-side segment belongs to (carried by the
    pooled segments), so there is no range/offset arithmetic (the reference offset the ranges by the query's
    segment count and divided by zero on zero matches; METHODS.md §4 step 4).

    Parameters
    ----------
    match_prototype : numpy.ndarray
        (m,) int: for each match, the prototype index 0..n_prototypes-1 (retrieval order).
    prototype_classes : sequence of str
        Class of each retrieved prototype, in retrieval order (n_prototypes entries).

    Returns
    -------
    Vote
        ``total == 0`` gives all-zero scores and ``prediction=None``.

    Raises
    ------
    ParamError
        A prototype index outside 0..n_prototypes-1, or ``match_prototype`` not 1-D integers.
    """
    owners = np.asarray(match_prototype)
    if owners.ndim != 1 or (owners.size and not np.issubdtype(owners.dtype, np.integer)):
        raise ParamError(
            f"soft_vote: match_prototype must be 1-D integers, got {owners.dtype} {owners.shape}"
        )
    n_prototypes = len(prototype_classes)
    if owners.size and (owners.min() < 0 or owners.max() >= n_prototypes):
        raise ParamError(
            f"soft_vote: prototype index out of range 0..{n_prototypes - 1}: "
            f"{int(owners.min())}..{int(owners.max())}"
        )
    per_prototype = np.bincount(owners.astype(np.int64), minlength=n_prototypes).astype(np.int64)
    classes = list(dict.fromkeys(prototype_classes))
    counts = np.zeros(len(classes), dtype=np.int64)
    for index, name in enumerate(prototype_classes):
        counts[classes.index(name)] += per_prototype[index]
    total = int(per_prototype.sum())
    scores = counts / total if total else np.zeros(len(classes), dtype=np.float64)
    prediction = classes[int(np.argmax(counts))] if total else None
    return Vote(classes, counts, scores.astype(np.float64), per_prototype, total, prediction)


def label_consistent(
    labels_a: Sequence[str], labels_b: Sequence[str], pairs_a: np.ndarray, pairs_b: np.ndarray
) -> np.ndarray:
    """Which matched pairs carry the same, non-empty part label (KLC step 3 label-consistent filter).

    Parameters
    ----------
    labels_a, labels_b : sequence of str
        Part label of every segment on each side ("" = unlabelled).
    pairs_a, pairs_b : numpy.ndarray
        (m,) int segment indices of the pairs into ``labels_a`` and ``labels_b``.

    Returns
    -------
    numpy.ndarray
        (m,) bool: ``labels_a[pairs_a[i]] == labels_b[pairs_b[i]] != ""``. Paper only (not in the
        reference code).

    Raises
    ------
    ParamError
        Pair arrays of different lengths or indices out of range.
    """
    pairs_a = np.asarray(pairs_a, dtype=np.int64).ravel()
    pairs_b = np.asarray(pairs_b, dtype=np.int64).ravel()
    if pairs_a.shape != pairs_b.shape:
        raise ParamError(
            f"label_consistent: {pairs_a.size} pair indices on one side, {pairs_b.size} on the other"
        )
    for pairs, labels, side in ((pairs_a, labels_a, "a"), (pairs_b, labels_b, "b")):
        if pairs.size and (pairs.min() < 0 or pairs.max() >= len(labels)):
            raise ParamError(
                f"label_consistent: pair index out of range for the {len(labels)} labels of {side}"
            )
    keep = [bool(labels_a[i]) and labels_a[i] == labels_b[j] for i, j in zip(pairs_a, pairs_b, strict=True)]
    return np.asarray(keep, dtype=bool)
