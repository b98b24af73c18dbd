"""Attention aggregations (CLS, received, rollout) checked against plain-numpy re-derivations.

The reference code here is written directly from the formulas in the module docstring (DINO CLS attention,
arXiv 2104.14294; received attention, arXiv 2512.19957 step 6; rollout as SVIP / jacobgil code it) and never
calls the module's helpers, so a wrong axis, a wrong multiplication order or a prefix mix-up shows up.
"""

from __future__ import annotations

import numpy as np
import pytest

from protolens.core.attention import (
    AttentionSummary,
    aggregate,
    attention_rollout_map,
    cls_attention_map,
    discard_lowest,
    fuse_heads,
    min_max,
    patch_grid,
    received_attention_map,
)

ROWS, COLS = 3, 5  # non-square on purpose: a transposed reshape would not fit
BLOCKS, HEADS = 4, 3
FUSERS = {"mean": np.mean, "max": np.max, "min": np.min}


def random_attention(rng: np.random.Generator, num_prefix: int, blocks: int = BLOCKS, heads: int = HEADS,
                     rows: int = ROWS, cols: int = COLS, sharpness: float = 3.0) -> np.ndarray:
    """(blocks, heads, T, T) float64, each (T, T) row-stochastic: softmax of random logits."""
    tokens = num_prefix + rows * cols
    logits = rng.normal(scale=sharpness, size=(blocks, heads, tokens, tokens))
    logits -= logits.max(axis=-1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=-1, keepdims=True)


def summarise(attention: np.ndarray, num_prefix: int, grid=(ROWS, COLS), fused_dtype=np.float16,
              full: bool = True) -> AttentionSummary:
    """What the capture code keeps of one forward pass."""
    fused = {name: fn(attention, axis=1).astype(fused_dtype) for name, fn in FUSERS.items()} if full else {}
    return AttentionSummary(
        cls_rows=attention[:, :, 0, :].astype(np.float32),
        grid=grid,
        num_prefix=num_prefix,
        received=attention.sum(axis=2).astype(np.float32) if full else None,
        fused=fused,
    )


def ref_discard(matrix: np.ndarray, ratio: float) -> np.ndarray:
    """A float64 copy of (T, T) ``matrix`` with its int(T*T*ratio) smallest entries zeroed, except CLS -> CLS."""
    matrix = np.array(matrix, dtype=np.float64)
    flat = matrix.reshape(-1)
    lowest = np.argsort(flat, kind="stable")[:int(flat.size * ratio)]
    flat[lowest[lowest != 0]] = 0.0
    return matrix


def ref_rollout(fused: np.ndarray, num_prefix: int, discard_ratio: float = 0.0) -> np.ndarray:
    """Full-matrix rollout: R_0 = I, R_l = A~_l R_(l-1); CLS row of R_L without the prefix columns."""
    fused = np.asarray(fused, dtype=np.float64)
    tokens = fused.shape[-1]
    eye = np.eye(tokens)
    result = np.eye(tokens)
    for layer in range(fused.shape[0]):
        matrix = ref_discard(fused[layer], discard_ratio)
        smoothed = (matrix + eye) / 2.0
        smoothed = smoothed / smoothed.sum(axis=-1, keepdims=True)
        result = smoothed @ result
    return result[0, num_prefix:].reshape(ROWS, COLS)


@pytest.fixture(params=[1, 5], ids=["cls-only", "4-registers"])
def num_prefix(request) -> int:
    return request.param


@pytest.fixture
def attention(num_prefix) -> np.ndarray:
    return random_attention(np.random.default_rng(1234 + num_prefix), num_prefix)


# --------------------------------------------------------------------------- CLS attention


def test_summary_properties(attention, num_prefix):
    summary = summarise(attention, num_prefix)
    assert summary.blocks == BLOCKS and summary.heads == HEADS and summary.full
    assert not summarise(attention, num_prefix, full=False).full


@pytest.mark.parametrize("block", [0, 2, -1, -BLOCKS])
@pytest.mark.parametrize("head", [0, HEADS - 1])
def test_cls_attention_single_head(attention, num_prefix, block, head):
    summary = summarise(attention, num_prefix)
    expected = attention[block, head, 0, num_prefix:].reshape(ROWS, COLS)
    got = cls_attention_map(summary, block=block, head=head)
    assert got.shape == (ROWS, COLS) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("block", [1, -1, -2])
def test_cls_attention_fused_heads(attention, num_prefix, fusion, block):
    summary = summarise(attention, num_prefix)
    cls = attention[block, :, 0, num_prefix:]  # (heads, patches)
    expected = {"mean": cls.mean(0), "max": cls.max(0), "min": cls.min(0)}[fusion].reshape(ROWS, COLS)
    got = cls_attention_map(summary, block=block, head=-1, fusion=fusion)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_cls_attention_negative_block_is_counted_from_the_end(attention, num_prefix):
    summary = summarise(attention, num_prefix)
    for block in range(BLOCKS):
        np.testing.assert_array_equal(cls_attention_map(summary, block=block - BLOCKS, head=1),
                                      cls_attention_map(summary, block=block, head=1))
    # default block is the last one (DINO uses the last block)
    np.testing.assert_array_equal(cls_attention_map(summary), cls_attention_map(summary, block=BLOCKS - 1))


def test_cls_attention_patch_order_is_row_major(num_prefix):
    # CLS attends to a single patch at (row 1, col 3): it must land exactly there.
    tokens = num_prefix + ROWS * COLS
    attention = np.zeros((1, 1, tokens, tokens))
    attention[..., np.arange(tokens), np.arange(tokens)] = 1.0
    target = num_prefix + 1 * COLS + 3
    attention[0, 0, 0, :] = 0.0
    attention[0, 0, 0, target] = 1.0
    got = cls_attention_map(summarise(attention, num_prefix), head=0)
    expected = np.zeros((ROWS, COLS))
    expected[1, 3] = 1.0
    np.testing.assert_array_equal(got, expected)


# --------------------------------------------------------------------------- received attention


def test_received_attention_all_blocks_and_heads(attention, num_prefix):
    summary = summarise(attention, num_prefix)
    mean_matrix = attention.mean(axis=(0, 1))  # (T, T): mean over blocks and heads
    expected = mean_matrix.sum(axis=0)[num_prefix:].reshape(ROWS, COLS)  # sum over the query axis
    got = received_attention_map(summary)
    assert got.shape == (ROWS, COLS) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # the rows are stochastic, so over all tokens the received mass adds up to T
    tokens = num_prefix + ROWS * COLS
    assert summary.received.mean(axis=(0, 1)).sum() == pytest.approx(tokens, rel=1e-5)


@pytest.mark.parametrize("blocks, heads", [([0], [1]), ([1, 3], None), (None, [0, 2]), ([-1, 0], [2, -3])])
def test_received_attention_subset(attention, num_prefix, blocks, heads):
    summary = summarise(attention, num_prefix)
    b = list(range(BLOCKS)) if blocks is None else [x % BLOCKS for x in blocks]
    h = list(range(HEADS)) if heads is None else [x % HEADS for x in heads]
    mean_matrix = attention[np.ix_(b, h)].mean(axis=(0, 1))
    expected = mean_matrix.sum(axis=0)[num_prefix:].reshape(ROWS, COLS)
    np.testing.assert_allclose(received_attention_map(summary, blocks, heads), expected, rtol=1e-5)


def test_aggregate_received_uses_all_blocks_and_the_chosen_head(attention, num_prefix):
    summary = summarise(attention, num_prefix)
    expected = attention[:, 2].mean(axis=0).sum(axis=0)[num_prefix:].reshape(ROWS, COLS)
    np.testing.assert_allclose(aggregate(summary, "received", head=2, block=0), expected, rtol=1e-5)
    expected_all = attention.mean(axis=(0, 1)).sum(axis=0)[num_prefix:].reshape(ROWS, COLS)
    np.testing.assert_allclose(aggregate(summary, "received", head=-1), expected_all, rtol=1e-5)


# --------------------------------------------------------------------------- rollout


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_rollout_matches_full_matrix_product_float16(attention, num_prefix, fusion):
    summary = summarise(attention, num_prefix, fused_dtype=np.float16)
    fused = FUSERS[fusion](attention, axis=1)  # the exact (float64) fused matrices
    got = attention_rollout_map(summary, fusion=fusion)
    assert got.shape == (ROWS, COLS) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref_rollout(fused, num_prefix), atol=1e-4)


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_rollout_matches_full_matrix_product_float32(attention, num_prefix, fusion):
    summary = summarise(attention, num_prefix, fused_dtype=np.float32)
    expected = ref_rollout(summary.fused[fusion], num_prefix)
    np.testing.assert_allclose(attention_rollout_map(summary, fusion=fusion), expected, rtol=1e-5, atol=1e-7)


def test_rollout_order_of_blocks_matters(num_prefix):
    # R_L = A~_L ... A~_1: reversing the blocks must change the answer (guards a swapped product order).
    attention = random_attention(np.random.default_rng(7), num_prefix, heads=1, sharpness=4.0)
    summary = summarise(attention, num_prefix, fused_dtype=np.float32)
    reversed_summary = summarise(attention[::-1].copy(), num_prefix, fused_dtype=np.float32)
    got = attention_rollout_map(summary)
    np.testing.assert_allclose(got, ref_rollout(summary.fused["mean"], num_prefix), rtol=1e-5, atol=1e-7)
    assert not np.allclose(got, attention_rollout_map(reversed_summary), rtol=1e-3, atol=1e-5)


def test_rollout_discard_refuses_float16_matrices(attention, num_prefix):
    # float16 rounding makes small weights tie at the cut-off: another set would be discarded than in float32
    summary = summarise(attention, num_prefix, fused_dtype=np.float16)
    with pytest.raises(ValueError, match="float32"):
        attention_rollout_map(summary, discard_ratio=0.5)
    assert attention_rollout_map(summary, discard_ratio=0.0).shape == (ROWS, COLS)


def test_rollout_renormalises_rows_not_columns(attention, num_prefix):
    # after a discard the rows of (A + I) / 2 no longer sum to 1; protolens divides each row by its own sum
    # (Abnar & Zuidema), vit-explain's a / a.sum(dim=-1) without keepdim divides column j by row j's sum
    summary = summarise(attention, num_prefix, fused_dtype=np.float32)
    tokens = attention.shape[-1]
    eye = np.eye(tokens)
    rows_vector = columns_vector = np.eye(tokens)[0]
    for layer in range(BLOCKS - 1, -1, -1):
        matrix = (ref_discard(summary.fused["max"][layer], 0.5) + eye) / 2.0
        rows_vector = rows_vector @ (matrix / matrix.sum(axis=-1, keepdims=True))
        columns_vector = columns_vector @ (matrix / matrix.sum(axis=-1)[None, :])
    got = attention_rollout_map(summary, fusion="max", discard_ratio=0.5)
    np.testing.assert_allclose(got, rows_vector[num_prefix:].reshape(ROWS, COLS), rtol=1e-5, atol=1e-7)
    assert abs(rows_vector.sum() - 1.0) < 1e-9 and abs(columns_vector.sum() - 1.0) > 1e-3
    assert not np.allclose(got, columns_vector[num_prefix:].reshape(ROWS, COLS), rtol=1e-3)


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("fusion", ["mean", "max"])
def test_rollout_with_discard_ratio(attention, num_prefix, ratio, fusion):
    summary = summarise(attention, num_prefix, fused_dtype=np.float32)  # float32: no ties to break differently
    expected = ref_rollout(summary.fused[fusion], num_prefix, discard_ratio=ratio)
    got = attention_rollout_map(summary, fusion=fusion, discard_ratio=ratio)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert not np.allclose(got, attention_rollout_map(summary, fusion=fusion), rtol=1e-3, atol=1e-6)


def test_discard_lowest_zeroes_the_smallest_entries_but_never_cls_to_cls():
    rng = np.random.default_rng(3)
    matrix = rng.random((6, 6)).astype(np.float32)
    matrix[0, 0] = -1.0  # the very smallest entry, and it must survive
    out = discard_lowest(matrix, 0.25)
    count = int(36 * 0.25)
    order = np.argsort(matrix.reshape(-1))
    assert order[0] == 0
    expected = matrix.copy().reshape(-1)
    expected[order[1:count]] = 0.0  # index 0 is among the lowest, so one fewer is zeroed
    np.testing.assert_array_equal(out.reshape(-1), expected)
    assert out.dtype == np.float32 and out[0, 0] == -1.0
    # the input is not modified, and ratio 0 is a plain float32 copy
    assert matrix[0, 0] == -1.0 and np.count_nonzero(matrix) == 36
    np.testing.assert_array_equal(discard_lowest(matrix, 0.0), matrix)
    assert discard_lowest(matrix, 0.0) is not matrix


def test_discard_lowest_when_cls_to_cls_is_not_among_the_lowest():
    matrix = np.arange(16, dtype=np.float32).reshape(4, 4)[::-1, ::-1].copy()  # flat index 0 holds the max
    out = discard_lowest(matrix, 0.5)
    assert np.count_nonzero(out.reshape(-1) == 0) == 8
    np.testing.assert_array_equal(np.sort(out.reshape(-1))[8:], np.arange(8, 16))


def test_rollout_identity_attention_gives_zero_patch_scores(num_prefix):
    tokens = num_prefix + ROWS * COLS
    attention = np.broadcast_to(np.eye(tokens), (BLOCKS, HEADS, tokens, tokens)).copy()
    summary = summarise(attention, num_prefix)
    for fusion in FUSERS:
        got = attention_rollout_map(summary, fusion=fusion)
        np.testing.assert_array_equal(got, np.zeros((ROWS, COLS)))


def test_rollout_uniform_attention_gives_uniform_patch_scores(num_prefix):
    tokens = num_prefix + ROWS * COLS
    attention = np.full((BLOCKS, HEADS, tokens, tokens), 1.0 / tokens)
    summary = summarise(attention, num_prefix, fused_dtype=np.float32)
    got = attention_rollout_map(summary)
    # hand computation: one step maps e_CLS to (e_CLS + u) / 2 with u uniform; any probability vector p
    # maps to (p + u) / 2, so after L steps the patch weight is (1 - 2^-L) / T.
    expected = (1.0 - 0.5 ** BLOCKS) / tokens
    np.testing.assert_allclose(got, np.full((ROWS, COLS), expected), rtol=1e-6)
    # float32 rounding leaves ulp-sized differences; eps keeps the heatmap flat (no spurious contrast)
    assert min_max(got).max() < 0.01


def test_rollout_row_is_a_probability_vector(attention, num_prefix):
    # A~ is row-stochastic, so the full CLS row sums to 1 and the patch part is strictly below 1.
    summary = summarise(attention, num_prefix, fused_dtype=np.float32)
    got = attention_rollout_map(summary)
    assert np.all(got > 0) and 0.0 < got.sum() < 1.0


# --------------------------------------------------------------------------- aggregate


def test_aggregate_dispatches_to_each_mode(attention, num_prefix):
    summary = summarise(attention, num_prefix, fused_dtype=np.float32)
    np.testing.assert_array_equal(aggregate(summary, "cls", block=1, head=2),
                                  cls_attention_map(summary, block=1, head=2))
    np.testing.assert_array_equal(aggregate(summary, "cls", fusion="max"),
                                  cls_attention_map(summary, fusion="max"))
    np.testing.assert_allclose(aggregate(summary, "rollout", fusion="min", discard_ratio=0.3),
                               ref_rollout(summary.fused["min"], num_prefix, 0.3), rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- errors


def test_received_needs_full_capture(attention, num_prefix):
    summary = summarise(attention, num_prefix, full=False)
    with pytest.raises(ValueError, match="full attention"):
        received_attention_map(summary)
    with pytest.raises(ValueError):
        aggregate(summary, "received")
    # the CLS map still works on a cheap capture
    assert cls_attention_map(summary).shape == (ROWS, COLS)


def test_rollout_needs_fused_matrices(attention, num_prefix):
    with pytest.raises(ValueError, match="fused"):
        attention_rollout_map(summarise(attention, num_prefix, full=False))
    partial = summarise(attention, num_prefix)
    del partial.fused["max"]
    with pytest.raises(ValueError):
        attention_rollout_map(partial, fusion="max")
    with pytest.raises(ValueError):
        aggregate(partial, "rollout", fusion="max")


@pytest.mark.parametrize("block", [BLOCKS, BLOCKS + 3, -BLOCKS - 1])
def test_block_out_of_range(attention, num_prefix, block):
    summary = summarise(attention, num_prefix)
    with pytest.raises(IndexError):
        cls_attention_map(summary, block=block)
    with pytest.raises(IndexError):
        received_attention_map(summary, blocks=[0, block])


@pytest.mark.parametrize("head", [HEADS, HEADS + 5])
def test_head_out_of_range(attention, num_prefix, head):
    summary = summarise(attention, num_prefix)
    with pytest.raises(IndexError):
        cls_attention_map(summary, head=head)
    with pytest.raises(IndexError):
        received_attention_map(summary, heads=[head])
    with pytest.raises(IndexError):
        aggregate(summary, "received", head=head)
    with pytest.raises(IndexError):
        received_attention_map(summary, heads=[-HEADS - 1])


def test_unknown_fusion(attention, num_prefix):
    summary = summarise(attention, num_prefix)
    with pytest.raises(ValueError):
        cls_attention_map(summary, fusion="median")
    with pytest.raises(ValueError):
        fuse_heads(attention[0, :, 0], -1, "sum")
    with pytest.raises(ValueError):
        attention_rollout_map(summary, fusion="median")


def test_fuse_heads_picks_or_fuses_along_axis():
    values = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    np.testing.assert_array_equal(fuse_heads(values, 1), values[1])
    np.testing.assert_array_equal(fuse_heads(values, 2, axis=1), values[:, 2])
    np.testing.assert_array_equal(fuse_heads(values, -1, "max", axis=1), values.max(axis=1))
    np.testing.assert_array_equal(fuse_heads(values, -1, "min", axis=2), values.min(axis=2))
    with pytest.raises(IndexError):
        fuse_heads(values, 3, axis=1)


def test_unknown_mode(attention, num_prefix):
    with pytest.raises(ValueError, match="mode"):
        aggregate(summarise(attention, num_prefix), "gradcam")


def test_patch_grid_reshape_and_mismatch():
    scores = np.arange(2 + 12, dtype=np.float32)
    np.testing.assert_array_equal(patch_grid(scores, 2, (3, 4)), np.arange(2, 14).reshape(3, 4))
    np.testing.assert_array_equal(patch_grid(scores, 2, (4, 3)), np.arange(2, 14).reshape(4, 3))
    batched = np.stack([scores, scores + 100])
    assert patch_grid(batched, 2, (3, 4)).shape == (2, 3, 4)
    for prefix, grid in [(1, (3, 4)), (2, (3, 5)), (0, (4, 4))]:
        with pytest.raises(ValueError, match="tokens"):
            patch_grid(scores, prefix, grid)


def test_grid_that_does_not_match_the_tokens_raises(attention, num_prefix):
    summary = summarise(attention, num_prefix, grid=(COLS + 1, ROWS))
    with pytest.raises(ValueError):
        cls_attention_map(summary)
    with pytest.raises(ValueError):
        received_attention_map(summary)
    with pytest.raises(ValueError):
        attention_rollout_map(summary)


# --------------------------------------------------------------------------- min_max


def test_min_max_range_and_order():
    rng = np.random.default_rng(5)
    values = rng.normal(3.0, 2.0, size=(7, 9))
    out = min_max(values)
    assert out.dtype == np.float32 and out.shape == values.shape
    assert out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_array_equal(np.argsort(out, axis=None, kind="stable"),
                                  np.argsort(values, axis=None, kind="stable"))
    expected = (values - values.min()) / np.ptp(values)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)


def test_min_max_constant_map_is_zero():
    for constant in (0.0, 0.37, 1e6, -2.5):
        for dtype in (np.float32, np.float64):
            out = min_max(np.full((4, 6), constant, dtype))
            assert out.dtype == np.float32 and np.all(np.isfinite(out))
            np.testing.assert_array_equal(out, np.zeros((4, 6)))


@pytest.mark.parametrize("span", [1e-5, 3e-6, 1e-8])
def test_min_max_tiny_range_still_spans_zero_to_one(span):
    # the CLS attention of a register model can span ~1e-5: an absolute eps of 1e-6 in the denominator put the
    # peak at 0.91 (0.76 for a span of 3e-6); the heatmap must reach exactly 1 whatever the span
    rng = np.random.default_rng(11)
    values = (2e-6 + span * rng.random((5, 8))).astype(np.float32)
    out = min_max(values)
    assert out.min() == 0.0 and out.max() == 1.0
    exact = (values.astype(np.float64) - values.min()) / (float(values.max()) - float(values.min()))
    np.testing.assert_allclose(out, exact, rtol=1e-6, atol=1e-7)


def test_min_max_keeps_a_map_flat_that_rounding_made_uneven():
    # a constant map a few float32 ulps uneven (as rollout of uniform attention gives) is flat, not noise in [0, 1]
    base = np.float32(0.0586)
    noisy = np.array([base, np.nextafter(base, np.float32(1)), base], np.float32)
    np.testing.assert_array_equal(min_max(noisy), np.zeros(3))
    # a relative spread above rtol is stretched to [0, 1]; rtol=0 guards only the zero range
    np.testing.assert_array_equal(min_max(noisy, rtol=0.0), [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(min_max(np.array([1.0, 1.0 + 2e-5])), [0.0, 1.0])
