"""The Compare view's metrics, figures and export (shared by the GUI and ``protolens compare``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image
from scipy.stats import spearmanr

from protolens.core.errors import ParamError, StoreWriteError
from protolens.core.records import ResultRecord
from protolens.core.types import Heatmap
from protolens.services.compare import (
    COMPARE_SCHEMA,
    PaneData,
    agreement,
    columns_for,
    compare_grid,
    difference_map,
    difference_scale,
    diverging,
    export_compare,
    fit_title,
    iou,
    map_correlations,
    mask,
    pane_data,
    pane_with_threshold,
    render_difference,
    render_grid,
    render_pane,
    xor_mask,
)
from protolens.services.results import FoundResult
from protolens.services.segment import load_image


def found(values, image_size=(60, 80), *, threshold=0.5, semantics="value", score=None, index="exg"):
    record = ResultRecord("vegetation-index", "1.0.0", {"index": index}, threshold, semantics)
    return FoundResult(record, Heatmap(np.asarray(values, np.float32), image_size), None, "store", score)


def pane(values, threshold=0.5, key="k"):
    values = np.asarray(values, np.float32)
    return PaneData(key, key, values, threshold)


@pytest.fixture
def smooth():
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:30, 0:40]
    return (0.5 + 0.3 * np.sin(rows / 5.0) * np.cos(cols / 7.0) + 0.05 * rng.random((30, 40))).astype(np.float32)


def test_grid_keeps_aspect_and_never_enlarges():
    assert compare_grid((1024, 1280)) == (410, 512)
    assert compare_grid((3000, 1000), max_side=300) == (300, 100)
    assert compare_grid((100, 50)) == (100, 50)
    with pytest.raises(ValueError):
        compare_grid((0, 10))


def test_result_agrees_with_itself(smooth):
    p = pane_data(found(smooth), (30, 40))
    same = agreement(p, p)
    assert same.iou == 1.0 and same.pearson == pytest.approx(1.0) and same.spearman == pytest.approx(1.0)
    np.testing.assert_array_equal(difference_map(p, p), np.zeros((30, 40), np.float32))
    assert not xor_mask(p, p).any()


def test_negated_map_and_disjoint_masks(smooth):
    a, b = pane(smooth, 0.5), pane(1.0 - smooth, 0.5 + 1e-6)
    result = agreement(a, b)
    assert result.pearson == pytest.approx(-1.0) and result.spearman == pytest.approx(-1.0)
    assert mask(a).any() and mask(b).any()
    assert result.iou == 0.0  # a >= 0.5 and 1 - a > 0.5 never hold together
    diff = difference_map(a, b)
    np.testing.assert_allclose(diff, np.clip(2 * smooth - 1, -1, 1), atol=1e-6)
    assert diff.dtype == np.float32 and diff.shape == smooth.shape


def test_correlations_equal_plain_numpy_and_scipy(smooth):
    other = np.roll(smooth, 3, axis=1) ** 2
    pearson, spearman = map_correlations(smooth, other)
    assert pearson == pytest.approx(np.corrcoef(smooth.ravel(), other.ravel())[0, 1], abs=1e-9)
    assert spearman == pytest.approx(spearmanr(smooth.ravel(), other.ravel()).statistic, abs=1e-9)


def test_constant_map_has_nan_correlations_written_as_null(smooth):
    result = agreement(pane(smooth), pane(np.full_like(smooth, 0.2), 0.5))
    assert math.isnan(result.pearson) and math.isnan(result.spearman)
    assert result.as_json() == {"iou": 0.0, "pearson": None, "spearman": None}


def test_iou_of_empty_masks_is_one_and_of_partial_overlap_is_exact():
    empty = np.zeros((4, 4), bool)
    assert iou(empty, empty) == 1.0
    a, b = empty.copy(), empty.copy()
    a[:2] = True  # 8 cells
    b[1:3] = True  # 8 cells, 4 shared
    assert iou(a, b) == pytest.approx(4 / 12)
    with pytest.raises(ValueError):
        iou(a, np.zeros((3, 3), bool))


def test_mass_threshold_pane_holds_the_expected_fraction(smooth):
    p = pane_data(found(smooth, threshold=0.6, semantics="mass"), (30, 40))
    kept = mask(p)
    total, inside = float(smooth.sum()), float(smooth[kept].sum())
    assert p.semantics == "mass" and p.level == 0.6 and 0.0 < p.threshold < 1.0
    assert inside >= 0.6 * total - 1e-4
    # the smallest such set: without its weakest cell(s) it would hold less than 60 %
    assert inside - float(smooth[kept].min()) < 0.6 * total
    moved = pane_with_threshold(p, 0.3)
    assert moved.level == 0.3 and mask(moved).sum() < kept.sum()
    assert pane_with_threshold(p, 0.4, "value").threshold == pytest.approx(0.4)


def test_pane_data_resamples_to_the_grid_and_uses_record_threshold():
    values = np.tile(np.linspace(0, 1, 16, dtype=np.float32), (8, 1))  # a patch grid
    p = pane_data(found(values, threshold=0.25), (30, 40))
    assert p.values.shape == (30, 40) and p.values.dtype == np.float32 and p.threshold == 0.25
    assert p.key == p.record.key and "vegetation-index" in p.title
    assert np.all(np.diff(p.values[0]) >= 0) and p.values.min() >= 0 and p.values.max() <= 1
    assert pane_data(found(values), (30, 40), threshold=0.7).threshold == pytest.approx(0.7)


def test_rendering_shapes_colours_and_grid(smooth):
    photo = np.full((30, 40, 3), 100, np.uint8)
    a, b = pane(smooth, 0.5, "a"), pane(1.0 - smooth, 0.5, "b")
    tile = render_pane(photo, a, colormap="viridis", title="a long title " * 10)
    assert tile.dtype == np.uint8 and tile.shape[1:] == (40, 3) and tile.shape[0] > 30
    band = tile.shape[0] - 30
    assert not np.array_equal(tile[band:], photo)  # the map is blended in
    with pytest.raises(ParamError):
        render_pane(photo, a, colormap="no-such-map")
    diff = render_difference(photo, a, b, mode="xor", title="x")
    xor = xor_mask(a, b)
    body = diff[diff.shape[0] - 30:]
    assert xor.any() and (body[xor & mask(a)] == body[xor & mask(a)][0]).all()  # one colour: A only
    assert render_difference(photo, a, b, mode="map").shape == diff.shape
    with pytest.raises(ParamError):
        render_difference(photo, a, b, mode="nope")
    tiles = [np.full((10 + i, 20, 3), i, np.uint8) for i in range(9)]
    grid = render_grid(tiles, 3, gap=4)
    assert grid.shape == (3 * 18 + 2 * 4, 3 * 20 + 2 * 4, 3)
    assert grid[0, 0, 0] == 0 and grid[2 * 22, 2 * 24, 0] == 8
    assert [columns_for(n) for n in range(1, 10)] == [1, 2, 2, 2, 3, 3, 3, 3, 3]


def test_diverging_colormap_blue_white_red_scaled_to_the_difference():
    rgb = diverging(np.array([[-1.0, 0.0, 1.0]]))
    blue, white, red = rgb[0]
    assert blue[2] > blue[0] and red[0] > red[2] and white.min() > 240
    base = np.full((20, 20), 0.5, np.float32)
    a, b = pane(base + 0.05, 0.5), pane(base, 0.5)
    assert difference_scale(a, b) == pytest.approx(0.05)
    assert difference_scale(pane(base), pane(base)) == 0.01  # never zero
    photo = np.full((20, 20, 3), 128, np.uint8)
    tile = render_difference(photo, a, b, mode="map", opacity=1.0)
    assert tuple(tile[-1, -1]) == tuple(red)  # +0.05 at scale 0.05 saturates to red


def test_titles_fit_and_are_ascii():
    lines = fit_title("vegetation-index · w (index=exg) " + "x" * 200, 120)
    assert len(lines) <= 2 and lines[-1].endswith("...") and all(line.isascii() for line in lines)
    assert fit_title("first\nsecond\nthird", 300) == ["first", "second"]


def test_export_writes_grid_png_and_pairwise_json(photo_folder, tmp_path, smooth):
    image = load_image(photo_folder / "a_meadow.jpg")
    grid = compare_grid((image.meta.height, image.meta.width), max_side=128)
    maps = [smooth, 1.0 - smooth, np.roll(smooth, 5, axis=0)]
    panes = [pane_data(found(m, (image.meta.height, image.meta.width), index=str(i)), grid)
             for i, m in enumerate(maps)]
    paths = export_compare(tmp_path / "out", image, panes, columns=2, difference=(0, 1), difference_mode="map")
    png, js = paths
    assert [p.name for p in paths] == ["a_meadow.compare.png", "a_meadow.compare.json"]
    tile = render_pane(image.rgb, panes[0])
    with Image.open(png) as picture:
        assert picture.mode == "RGB"
        assert picture.size == (2 * grid[1] + 4, 2 * tile.shape[0] + 4)  # 4 tiles (3 + difference), 2 x 2
    doc = json.loads(js.read_text())
    assert doc["schema"] == COMPARE_SCHEMA and doc["grid"] == {"rows": grid[0], "cols": grid[1]}
    assert doc["image"]["sha256"] == image.meta.sha256 and [p["index"] for p in doc["panes"]] == [1, 2, 3]
    assert len(doc["agreement"]) == 3 * 2 // 2
    for entry in doc["agreement"]:
        expected = agreement(panes[entry["a"] - 1], panes[entry["b"] - 1]).as_json()
        assert {k: entry[k] for k in expected} == pytest.approx(expected)
    assert doc["difference"] == {"a": 1, "b": 2, "mode": "map", "scale": difference_scale(panes[0], panes[1])}
    assert doc["panes"][0]["backend"] == "vegetation-index@1.0.0" and doc["panes"][0]["params"] == {"index": "0"}
    with pytest.raises(ParamError):
        export_compare(tmp_path / "out", image, panes, difference=(1, 1))
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreWriteError):
        export_compare(tmp_path / "file", image, panes)
