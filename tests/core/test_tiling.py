"""Sliding windows and seamless blending: coverage, alignment, partition of unity, no seams."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from protolens.core.tiling import Blender, Window, blend, blend_weights, plan_windows

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PATCHES = st.sampled_from([1, 2, 8, 14, 16])


@st.composite
def geometries(draw, max_cells: int = 40, max_tile: int = 48):
    """(height, width, tile, overlap, patch) in pixels, all patch multiples (tile may be 0)."""
    patch = draw(PATCHES)
    rows = draw(st.integers(1, max_cells))
    cols = draw(st.integers(1, max_cells))
    tile = draw(st.integers(0, max_tile) | st.integers(1, max_tile // 3))  # often several windows
    overlap = draw(st.floats(0.0, 0.9, allow_nan=False))
    return rows * patch, cols * patch, tile * patch, overlap, patch


def expected_stride(tile: int, overlap: float, patch: int) -> int:
    """tile * (1 - overlap) rounded to whole patches, at least one patch (checked loosely below)."""
    return max(patch, int(round(tile * (1.0 - overlap) / patch)) * patch)


def starts_along(windows: list[Window], axis: str) -> list[int]:
    return sorted({w.top if axis == "y" else w.left for w in windows})


# --------------------------------------------------------------------------- plan_windows


@FAST
@given(geometries())
def test_plan_windows_cover_align_and_stay_inside(geometry):
    height, width, tile, overlap, patch = geometry
    windows = plan_windows(height, width, tile, overlap, patch)
    assert windows, "at least one window"
    assert len(set(windows)) == len(windows), "no duplicate windows"
    sizes = {(w.height, w.width) for w in windows}
    assert len(sizes) == 1, "all windows have the same size"
    (win_h, win_w), = sizes
    if tile == 0 or (height <= tile and width <= tile):
        assert windows == [Window(0, 0, height, width)]
    else:
        assert (win_h, win_w) == (min(tile, height), min(tile, width))
    covered = np.zeros((height, width), dtype=bool)
    for w in windows:
        assert w.top % patch == 0 and w.left % patch == 0, "patch aligned"
        assert w.height % patch == 0 and w.width % patch == 0
        assert w.height > 0 and w.width > 0
        assert 0 <= w.top and w.top + w.height <= height, "inside the image"
        assert 0 <= w.left and w.left + w.width <= width
        covered[w.top:w.top + w.height, w.left:w.left + w.width] = True
    assert covered.all(), "every pixel of the working image is in some window"
    # flush with the right and bottom edges, starting at the top-left corner
    assert min(w.top for w in windows) == 0 and min(w.left for w in windows) == 0
    assert max(w.top + w.height for w in windows) == height
    assert max(w.left + w.width for w in windows) == width
    # a full row-major grid of starts
    tops, lefts = starts_along(windows, "y"), starts_along(windows, "x")
    assert windows == [Window(top, left, win_h, win_w) for top in tops for left in lefts]


@FAST
@given(geometries())
def test_plan_windows_stride_respects_overlap(geometry):
    height, width, tile, overlap, patch = geometry
    windows = plan_windows(height, width, tile, overlap, patch)
    assume(len(windows) > 1)
    stride = expected_stride(tile, overlap, patch)
    for starts, size, extent in ((starts_along(windows, "y"), windows[0].height, height),
                                 (starts_along(windows, "x"), windows[0].width, width)):
        if extent <= tile:
            assert starts == [0], "an axis shorter than the tile gets a single window"
            continue
        steps = np.diff(starts)
        if len(steps) > 1:
            # the stride actually used is tile * (1 - overlap) to the nearest patch (at least one patch)
            used = int(steps[0])
            assert used % patch == 0 and used >= patch
            assert abs(used - tile * (1.0 - overlap)) <= patch / 2 + 1e-9 or used == patch
        assert np.all(steps[:-1] == stride), "regular stride"
        assert 0 < steps[-1] <= stride, "the last window is moved back to be flush, never further"
        # neighbours share at least tile - stride pixels, i.e. the requested overlap up to patch rounding
        assert np.all(size - steps >= size - stride)
        assert size - stride >= tile * overlap - patch / 2 - 1e-9 or stride == patch


@pytest.mark.parametrize("height, width, tile, overlap, patch, tops, lefts", [
    (160, 160, 64, 0.5, 16, [0, 32, 64, 96], [0, 32, 64, 96]),
    (160, 96, 64, 0.0, 16, [0, 64, 96], [0, 32]),
    (224, 448, 224, 0.25, 14, [0], [0, 168, 224]),  # stride 168 = 12 patches; last flush at 224
    (48, 400, 64, 0.5, 16, [0], [0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 336]),  # short axis
    (64, 64, 16, 0.9, 16, [0, 16, 32, 48], [0, 16, 32, 48]),  # stride never below one patch
    (64, 256, 64, 0.3, 16, [0], [0, 48, 96, 144, 192]),  # 2.8 patches round to 3, not down to 2
    (64, 256, 64, 0.6, 16, [0], [0, 32, 64, 96, 128, 160, 192]),  # 1.6 patches round to 2
])
def test_plan_windows_examples(height, width, tile, overlap, patch, tops, lefts):
    windows = plan_windows(height, width, tile, overlap, patch)
    assert starts_along(windows, "y") == tops and starts_along(windows, "x") == lefts
    assert len(windows) == len(tops) * len(lefts)
    assert windows[0] == Window(0, 0, min(tile, height), min(tile, width))


@pytest.mark.parametrize("tile", [0, 64, 80, 1600])
def test_one_window_when_tile_is_zero_or_covers_the_image(tile):
    assert plan_windows(64, 48, tile, 0.5, 16) == [Window(0, 0, 64, 48)]


def test_image_smaller_than_tile_on_one_axis():
    windows = plan_windows(32, 256, 64, 0.5, 16)
    assert {(w.top, w.height, w.width) for w in windows} == {(0, 32, 64)}
    assert starts_along(windows, "x") == [0, 32, 64, 96, 128, 160, 192]
    windows = plan_windows(256, 32, 64, 0.0, 16)
    assert {(w.left, w.height, w.width) for w in windows} == {(0, 64, 32)}
    assert starts_along(windows, "y") == [0, 64, 128, 192]


@pytest.mark.parametrize("height, width, tile, patch", [
    (100, 64, 32, 16), (64, 100, 32, 16), (64, 64, 40, 16), (60, 64, 0, 16), (224, 224, 100, 14),
])
def test_plan_windows_rejects_non_multiples(height, width, tile, patch):
    with pytest.raises(ValueError, match="multiple"):
        plan_windows(height, width, tile, 0.25, patch)


@pytest.mark.parametrize("overlap", [-0.01, -1.0, 0.91, 1.0, 5.0])
def test_plan_windows_rejects_overlap_outside_range(overlap):
    with pytest.raises(ValueError, match="overlap"):
        plan_windows(64, 64, 32, overlap, 16)


@pytest.mark.parametrize("overlap", [0.0, 0.9])
def test_plan_windows_accepts_overlap_bounds(overlap):
    assert len(plan_windows(64, 64, 32, overlap, 16)) > 1


# --------------------------------------------------------------------------- Window


def test_window_to_photo_and_grid_slice():
    window = Window(top=32, left=48, height=64, width=80)
    assert window.to_photo(2.0, 0.5) == [24.0, 64.0, 40.0, 128.0]  # [x, y, w, h]
    assert window.to_photo(1.0, 1.0) == [48, 32, 80, 64]
    assert window.to_photo(1.5, 1.5) == pytest.approx([72.0, 48.0, 120.0, 96.0])
    assert window.grid_slice(16) == (slice(2, 6), slice(3, 8))
    grid = np.arange(10 * 10).reshape(10, 10)
    assert grid[window.grid_slice(16)].shape == (64 // 16, 80 // 16)


# --------------------------------------------------------------------------- blending


@st.composite
def blend_geometries(draw):
    """Small geometries (blend_weights is quadratic in the window count)."""
    patch = draw(st.sampled_from([1, 4, 14]))
    rows = draw(st.integers(1, 14))
    cols = draw(st.integers(1, 14))
    tile = draw(st.integers(0, 12))
    overlap = draw(st.floats(0.0, 0.9, allow_nan=False))
    return rows, cols, tile * patch, overlap, patch


def plan(geometry):
    rows, cols, tile, overlap, patch = geometry
    return plan_windows(rows * patch, cols * patch, tile, overlap, patch)


def cut(global_map: np.ndarray, windows: list[Window], patch: int) -> list[np.ndarray]:
    return [global_map[w.grid_slice(patch)].copy() for w in windows]


@FAST
@given(blend_geometries(), st.floats(-5.0, 5.0, allow_nan=False))
def test_constant_windows_blend_to_the_constant(geometry, constant):
    """Partition of unity: equal maps blend to the same map, so a constant image shows no seams."""
    rows, cols, _, _, patch = geometry
    windows = plan(geometry)
    maps = [np.full((w.height // patch, w.width // patch), constant, np.float32) for w in windows]
    out = blend(windows, maps, rows, cols, patch)
    assert out.shape == (rows, cols) and out.dtype == np.float32
    np.testing.assert_allclose(out, np.float32(constant), rtol=1e-6, atol=1e-7)


@FAST
@given(blend_geometries(), st.integers(0, 2**32 - 1))
def test_windows_cut_from_a_global_map_blend_back_to_it(geometry, seed):
    """Each window's map lands on its own cells of the global grid (alignment)."""
    rows, cols, _, _, patch = geometry
    windows = plan(geometry)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    global_map = (0.3 * yy + 0.7 * xx + rng.normal(scale=0.5, size=(rows, cols))).astype(np.float32)
    out = blend(windows, cut(global_map, windows, patch), rows, cols, patch)
    np.testing.assert_allclose(out, global_map, rtol=1e-5, atol=1e-5)


def test_shifted_window_maps_do_not_blend_back():
    # The alignment check can fail: maps cut one cell off their place give a different result.
    patch, rows, cols = 4, 12, 12
    windows = plan_windows(rows * patch, cols * patch, 6 * patch, 0.5, patch)
    global_map = np.arange(rows * cols, dtype=np.float32).reshape(rows, cols)
    maps = [np.roll(m, 1, axis=1) for m in cut(global_map, windows, patch)]
    assert not np.allclose(blend(windows, maps, rows, cols, patch), global_map)


def max_step(values: np.ndarray) -> float:
    steps = [np.abs(np.diff(values.astype(np.float64), axis=a)).max(initial=0.0) for a in (0, 1)]
    return float(max(steps))


@FAST
@given(blend_geometries().filter(lambda g: len(plan(g)) > 1), st.integers(0, 2**32 - 1))
def test_different_constants_blend_without_jumps(geometry, seed):
    rows, cols, tile, overlap, patch = geometry
    windows = plan(geometry)
    # the overlap in patches between neighbours (the smallest one; the flush last window overlaps more)
    stride = expected_stride(tile, overlap, patch) // patch
    overlaps = [min(tile // patch, extent) - stride for extent in (rows, cols) if extent > tile // patch]
    overlap_cells = min(overlaps)
    assume(overlap_cells >= 2)  # with no or a one-cell overlap there is no room to ramp
    constants = np.random.default_rng(seed).random(len(windows))
    spread = float(constants.max() - constants.min())
    maps = [np.full((w.height // patch, w.width // patch), c) for w, c in zip(windows, constants, strict=True)]
    out = blend(windows, maps, rows, cols, patch)
    assert out.min() >= constants.min() - 1e-6 and out.max() <= constants.max() + 1e-6, "a convex combination"
    assert max_step(out) <= 4.0 * spread / overlap_cells + 1e-6


@pytest.mark.parametrize("overlap_cells", [2, 4, 8])
def test_two_windows_ramp_smoothly_where_a_paste_would_jump(overlap_cells):
    patch, tile_cells = 4, 12
    cols = 2 * tile_cells - overlap_cells
    windows = plan_windows(tile_cells * patch, cols * patch, tile_cells * patch,
                           overlap_cells / tile_cells, patch)
    assert [w.left // patch for w in windows] == [0, tile_cells - overlap_cells]
    low, high = 0.2, 0.9
    maps = [np.full((tile_cells, tile_cells), value) for value in (low, high)]
    out = blend(windows, maps, tile_cells, cols, patch)
    # naive paste (last window wins) has the full jump at the border of the second window
    pasted = np.zeros((tile_cells, cols))
    for w, m in zip(windows, maps, strict=True):
        pasted[w.grid_slice(patch)] = m
    assert max_step(pasted) == pytest.approx(high - low)
    # the blend ramps across the overlap: raised cosine, steepest slope pi / (2 n) of the spread
    assert max_step(out) <= (high - low) * np.pi / (2 * overlap_cells) + 1e-6
    assert max_step(out) < 0.75 * (high - low)
    # outside the overlap each window keeps its own value; the profile is monotone across it
    np.testing.assert_allclose(out[:, :tile_cells - overlap_cells], low, rtol=1e-6)
    np.testing.assert_allclose(out[:, tile_cells:], high, rtol=1e-6)
    assert np.all(np.diff(out[0]) >= -1e-7)


@FAST
@given(blend_geometries())
def test_blend_weights_positive_and_full_at_image_border(geometry):
    rows, cols, _, _, patch = geometry
    windows = plan(geometry)
    coverage = np.zeros((rows, cols), dtype=int)
    for w in windows:
        coverage[w.grid_slice(patch)] += 1
    for w in windows:
        weights = blend_weights(w, windows, patch)
        assert weights.shape == (w.height // patch, w.width // patch)
        assert np.all(weights > 0) and np.all(weights <= 1.0)
        # a side on the image border is not ramped: it carries the window's full profile
        if w.top == 0:
            np.testing.assert_array_equal(weights[0], weights.max(axis=0))
        if w.top + w.height == rows * patch:
            np.testing.assert_array_equal(weights[-1], weights.max(axis=0))
        if w.left == 0:
            np.testing.assert_array_equal(weights[:, 0], weights.max(axis=1))
        if w.left + w.width == cols * patch:
            np.testing.assert_array_equal(weights[:, -1], weights.max(axis=1))
        # cells no other window covers keep full weight (blending never touches them)
        alone = coverage[w.grid_slice(patch)] == 1
        np.testing.assert_array_equal(weights[alone], 1.0)


def test_blend_weights_ramp_on_shared_sides_only():
    patch = 4
    windows = plan_windows(8 * patch, 8 * patch, 6 * patch, 0.5, patch)  # 2x2 windows, 4-cell overlap
    assert len(windows) == 4
    top_left = blend_weights(windows[0], windows, patch)
    assert top_left[0, 0] == 1.0
    assert top_left[-1, -1] < top_left[-1, 0] < 1.0 and top_left[-1, -1] < top_left[0, -1] < 1.0
    single = Window(0, 0, 8 * patch, 8 * patch)
    np.testing.assert_array_equal(blend_weights(single, [single], patch), np.ones((8, 8)))


def test_blender_result_raises_when_a_cell_is_not_covered():
    patch = 4
    windows = plan_windows(8 * patch, 16 * patch, 8 * patch, 0.0, patch)
    assert len(windows) == 2
    blender = Blender(8, 16, windows, patch)
    blender.add(windows[0], np.ones((8, 8)))
    with pytest.raises(ValueError, match="no window"):
        blender.result()
    blender.add(windows[1], np.zeros((8, 8)))
    out = blender.result()
    np.testing.assert_array_equal(out[:, :8], 1.0)
    np.testing.assert_array_equal(out[:, 8:], 0.0)


def test_blender_rejects_wrong_shapes():
    patch = 4
    windows = plan_windows(8 * patch, 16 * patch, 8 * patch, 0.25, patch)
    blender = Blender(8, 16, windows, patch)
    assert blender.window_grid(windows[0]) == (8, 8)
    for shape in [(8, 7), (7, 8), (8, 8, 1), (64,)]:
        with pytest.raises(ValueError, match="expected"):
            blender.add(windows[0], np.ones(shape))
    with pytest.raises(ValueError):  # transposed map of a non-square window
        Blender(8, 16, [Window(0, 0, 8 * patch, 16 * patch)], patch).add(
            Window(0, 0, 8 * patch, 16 * patch), np.ones((16, 8)))
    with pytest.raises(ValueError):  # one map missing
        blend(windows, [np.ones((8, 8))] * (len(windows) - 1), 8, 16, patch)
