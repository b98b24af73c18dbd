"""Attention aggregations on captured attention, in numpy (no torch): re-aggregating never runs a model.

Token layout everywhere: [CLS, registers (0 or more), patches in row-major (rows, cols) order];
``num_prefix`` = 1 + registers. Every function returns raw, non-negative patch scores of shape
(rows, cols); :func:`min_max` turns them into a heatmap in [0, 1].

Sources
-------
- CLS attention: DINO, Caron et al., arXiv 2104.14294, Sec. 4.2 / Fig. 1 (last-block CLS query, per head).
- Received attention: prototype-guided zero-shot segmentation, arXiv 2512.19957, step 6 (mean over blocks
  and heads, then the attention each token receives, i.e. the sum over queries; min-max normalised).
- Attention rollout: Abnar & Zuidema, arXiv 2005.00928; here as SVIP codes it (arXiv 2503.10252):
  A~_l = (fuse_heads(A_l) + I) / 2, rows renormalised, R_l = A~_l R_(l-1), score = CLS row of R_L without
  the prefix columns. The optional discard ratio (as in SVIP's and jacobgil's code) zeroes the lowest
  fraction of each fused matrix, never the CLS-to-CLS entry. Rows, not columns, are renormalised: see
  :func:`attention_rollout_map` for how this differs from jacobgil/vit-explain's published code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

HEAD_FUSIONS = ("mean", "max", "min")
MODES = ("cls", "received", "rollout")


@dataclass
class AttentionSummary:
    """What is kept of one forward pass (one window) to re-aggregate without the model.

    Attributes
    ----------
    cls_rows : numpy.ndarray
        (blocks, heads, tokens) float32: softmax attention of the CLS query to every token.
    grid : tuple of int
        Patch grid (rows, cols) of this window.
    num_prefix : int
        CLS + register tokens before the patches.
    received : numpy.ndarray or None
        (blocks, heads, tokens) float32: attention each token receives, summed over all queries.
        None when only the CLS rows were captured (the cheap "cls" capture).
    fused : dict of str to numpy.ndarray
        Head-fused attention matrices for rollout, by fusion ("mean", "max", "min"):
        (blocks, tokens, tokens) float16 (half the memory), or float32 when captured for a rollout with a
        discard ratio (see :func:`attention_rollout_map`). Kept in memory only (not written to disk caches).
    """

    cls_rows: np.ndarray
    grid: tuple[int, int]
    num_prefix: int
    received: np.ndarray | None = None
    fused: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def full(self) -> bool:
        """Whether the full attention was captured (received attention available)."""
        return self.received is not None

    @property
    def blocks(self) -> int:
        return int(self.cls_rows.shape[0])

    @property
    def heads(self) -> int:
        return int(self.cls_rows.shape[1])


def fuse_heads(values: np.ndarray, head: int = -1, fusion: str = "mean", axis: int = 0) -> np.ndarray:
    """Pick head ``head`` along ``axis``, or fuse all heads with ``fusion`` (mean, max or min) if head < 0.

    Raises ``ValueError`` for an unknown fusion and ``IndexError`` for a head the model does not have.
    """
    if head < -1:
        raise IndexError(f"head {head} does not exist: give 0..{values.shape[axis] - 1}, or -1 to fuse all heads")
    if head >= 0:
        if head >= values.shape[axis]:
            raise IndexError(f"head {head} does not exist: this model has {values.shape[axis]} heads")
        return np.take(values, head, axis=axis)
    if fusion not in HEAD_FUSIONS:
        raise ValueError(f"head fusion must be one of {HEAD_FUSIONS}, not {fusion!r}")
    return getattr(np, fusion)(values, axis=axis)


def patch_grid(token_scores: np.ndarray, num_prefix: int, grid: tuple[int, int]) -> np.ndarray:
    """Drop the prefix tokens of (tokens,) scores and reshape the patches to (rows, cols).

    Raises ``ValueError`` if the token count does not match ``num_prefix + rows * cols``.
    """
    rows, cols = grid
    if token_scores.shape[-1] != num_prefix + rows * cols:
        raise ValueError(f"{token_scores.shape[-1]} tokens do not match {num_prefix} prefix + {rows}x{cols} patches")
    return np.ascontiguousarray(token_scores[..., num_prefix:].reshape(*token_scores.shape[:-1], rows, cols))


def _block_index(block: int, blocks: int) -> int:
    if not -blocks <= block < blocks:
        raise IndexError(f"block {block} does not exist: this model has {blocks} blocks (0..{blocks - 1})")
    return block % blocks


def cls_attention_map(summary: AttentionSummary, block: int = -1, head: int = -1, fusion: str = "mean") -> np.ndarray:
    """CLS -> patch attention of one block (DINO, arXiv 2104.14294, Sec. 4.2).

    score[p] = A[block, head, CLS, p] for one head, or mean/max/min over heads of it.
    Returns (rows, cols) float32 raw attention probabilities.
    """
    rows = summary.cls_rows[_block_index(block, summary.blocks)]
    return patch_grid(fuse_heads(rows, head, fusion).astype(np.float32), summary.num_prefix, summary.grid)


def _selection(count: int, chosen: Sequence[int] | None, what: str) -> list[int]:
    if chosen is None:
        return list(range(count))
    chosen = list(chosen)
    if not chosen:
        raise ValueError(f"select at least one {what}")
    picked = [c % count for c in chosen if -count <= c < count]
    if len(picked) != len(chosen):
        raise IndexError(f"{what} {chosen} out of range: this model has {count} {what}s")
    return picked


def received_attention_map(summary: AttentionSummary, blocks: Sequence[int] | None = None,
                           heads: Sequence[int] | None = None) -> np.ndarray:
    """Attention each patch receives (prototype guidance, arXiv 2512.19957, step 6).

    score[k] = sum over queries q of mean over the chosen blocks l and heads h of A[l, h, q, k]
    (= the mean of the column sums). All blocks and heads by default. Returns (rows, cols) float32.

    Raises ``ValueError`` if the summary holds CLS rows only (capture with ``full=True``).
    """
    if summary.received is None:
        raise ValueError("received attention needs the full attention (this summary holds CLS rows only)")
    chosen = summary.received[_selection(summary.blocks, blocks, "block")][:, _selection(summary.heads, heads, "head")]
    return patch_grid(chosen.mean(axis=(0, 1)).astype(np.float32), summary.num_prefix, summary.grid)


def fuse_attention_matrices(attention: np.ndarray, fusion: str = "mean") -> np.ndarray:
    """(heads, tokens, tokens) -> (tokens, tokens) by mean, max or min over heads (rollout's head fusion)."""
    return fuse_heads(attention, -1, fusion, axis=0)


def discard_lowest(matrix: np.ndarray, ratio: float) -> np.ndarray:
    """Zero the lowest ``ratio`` fraction of a fused (tokens, tokens) matrix, keeping the CLS->CLS entry.

    As in SVIP's rollout code (jacobgil/vit-explain): the ``int(T*T * ratio)`` smallest entries become 0.
    Among entries equal to the cut-off value an arbitrary subset is zeroed, so rank float32 values, whose
    ties are rare (float16 ones tie by the hundreds). Returns a float32 copy.
    """
    out = np.array(matrix, dtype=np.float32)
    count = int(out.size * ratio)
    if count <= 0:
        return out
    flat = out.reshape(-1)
    lowest = np.argpartition(flat, count - 1)[:count]
    flat[lowest[lowest != 0]] = 0.0
    return out


def attention_rollout_map(summary: AttentionSummary, fusion: str = "mean", discard_ratio: float = 0.0) -> np.ndarray:
    """Attention rollout, CLS row (Abnar & Zuidema arXiv 2005.00928, as coded in SVIP arXiv 2503.10252).

    For each block l: A~_l = (D_r(fuse(A_l)) + I) / 2, each row renormalised to sum 1 (D_r discards the lowest
    ``discard_ratio`` fraction); R_l = A~_l R_(l-1) with R_0 = I. The score is row CLS of R_L, patches only.
    Only that row is needed, so it is propagated as a vector: v = e_CLS; v <- v A~_l for l = L..1
    (O(L T^2) instead of O(L T^3)). Returns (rows, cols) float32.

    Rows, not columns, are renormalised: row i of A~_l is divided by its own sum, so it stays a distribution
    over the tokens that token i draws from, as in Abnar & Zuidema (Sec. 3: attention plus the identity of the
    residual connection, re-normalised, each row the mixing weights of one token's output), and the CLS row of
    R_L sums to 1. jacobgil/vit-explain's ``vit_rollout.py``, where the discard ratio comes from, divides by
    ``a.sum(dim=-1)`` without ``keepdim=True``; on its (1, T, T) tensor the row sums broadcast along the last
    axis, so column j is divided by the sum of row j and the rows no longer sum to 1 (vit-explain issue #16,
    open). Both agree only when the rows already sum to 1 (mean fusion, no discard); after a discard or with
    max/min fusion protolens follows the paper, not that code.

    The fused matrices may be float16 (how the capture keeps them to halve memory); products run in float32.
    A discard ranks entries, and float16 rounding makes many nearly equal small weights tie at the cut-off, so
    another set would be zeroed (up to 0.21 apart in the min-max heatmap of a random-weight ViT-S/14 at
    discard 0.9, against float32). A discard therefore needs float32 or float64 matrices.

    Raises
    ------
    ValueError
        The summary holds no fused matrices for ``fusion``, or ``discard_ratio > 0`` with float16 matrices
        (capture them with ``fused_dtype="float32"``).
    """
    matrices = summary.fused.get(fusion)
    if matrices is None:
        raise ValueError(f"rollout with {fusion!r} head fusion needs the fused attention matrices of this image")
    if discard_ratio > 0 and np.finfo(matrices.dtype).bits < 32:
        raise ValueError(f"a rollout discard ratio needs float32 fused matrices, not {matrices.dtype}: rounding "
                         "ties change which entries are discarded")
    # With w_i = v_i / (2 r_i) and r_i the row sums of (A + I) / 2:  (v A~)_j = sum_i w_i A_ij + w_j,
    # so neither the identity nor the smoothed matrix is ever built. float32 vector-matrix products (BLAS)
    # into one reused buffer: an upcast to float64 or a fresh float32 copy per block costs more than the rest.
    tokens = matrices.shape[-1]
    vector = np.zeros(tokens, dtype=np.float32)
    vector[0] = 1.0
    ones = np.ones(tokens, dtype=np.float32)
    buffer = np.empty((tokens, tokens), dtype=np.float32)
    for layer in range(matrices.shape[0] - 1, -1, -1):
        if discard_ratio > 0:
            fused = discard_lowest(matrices[layer], discard_ratio)
        else:
            np.copyto(buffer, matrices[layer])
            fused = buffer
        weights = vector / (fused @ ones + 1.0)
        vector = weights @ fused + weights
    return patch_grid(vector.astype(np.float32), summary.num_prefix, summary.grid)


def aggregate(summary: AttentionSummary, mode: str, *, block: int = -1, head: int = -1, fusion: str = "mean",
              discard_ratio: float = 0.0) -> np.ndarray:
    """The raw (rows, cols) score map of one window for ``mode`` ("cls", "received" or "rollout").

    ``block`` and ``head``/``fusion`` select for "cls"; "received" averages all blocks and the chosen head
    (or all heads when head < 0); "rollout" uses ``fusion`` and ``discard_ratio``.
    """
    if mode == "cls":
        return cls_attention_map(summary, block, head, fusion)
    if mode == "received":
        return received_attention_map(summary, None, None if head < 0 else [head])
    if mode == "rollout":
        return attention_rollout_map(summary, fusion, discard_ratio)
    raise ValueError(f"mode must be one of {MODES}, not {mode!r}")


FLAT_RTOL = 1e-5
"""A map whose range is at most this fraction of its largest magnitude is flat (float32 rounding noise)."""


def min_max(values: np.ndarray, rtol: float = FLAT_RTOL) -> np.ndarray:
    """Min-max normalise raw scores to a heatmap in [0, 1] (arXiv 2512.19957, step 6).

    heat = (values - min) / (max - min), computed in float64: the smallest value maps to exactly 0.0 and the
    largest to exactly 1.0 whatever the range. The paper adds eps = 1e-6 to the denominator against a division
    by zero; that absolute eps squeezes maps whose whole range is small (the CLS attention of a register model
    spans ~1e-5 or less, and range / (range + 1e-6) put its peak at 0.76 .. 0.91), so only the flat case is
    guarded here: when max - min <= ``rtol`` * max(|min|, |max|) (zero range included) the map is all zeros,
    never NaN. ``rtol`` (1e-5, ~80 float32 ulps) keeps a constant map that float32 rounding left a few ulps
    uneven flat instead of stretching the noise to [0, 1].

    Parameters
    ----------
    values : numpy.ndarray
        Raw scores of any shape and real dtype, finite, not empty.
    rtol : float
        Relative range below which the map counts as flat.

    Returns
    -------
    numpy.ndarray
        float32, same shape, in [0, 1]; order of the values kept.
    """
    values = np.asarray(values, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    span = high - low
    if span <= rtol * max(abs(low), abs(high)):
        return np.zeros(values.shape, dtype=np.float32)
    return ((values - low) / span).astype(np.float32)
