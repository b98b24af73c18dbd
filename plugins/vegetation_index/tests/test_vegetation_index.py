"""The vegetation-index backend on real photos and on colours whose index is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from protolens.core.imageio import read_image, read_mask
from protolens.core.metrics import iou
from protolens.core.params import make_params
from protolens.models.api import RunContext
from protolens.models.registry import Registry
from protolens.services.segment import drain

SAMPLES = Path(__file__).resolve().parents[3] / "resources" / "samples"


@pytest.fixture(scope="module")
def backend():
    registry = Registry.discover()
    return registry.create("vegetation-index"), registry.manifest("vegetation-index")


def _run(backend, image, **values):
    instance, manifest = backend
    return drain(instance.run(image, make_params(manifest.params, values), RunContext()))


def test_index_values_of_known_colours(backend):
    colours = np.array([[[0, 255, 0], [255, 0, 0], [0, 0, 255], [128, 128, 128], [0, 0, 0]]], np.uint8)
    exg = _run(backend, colours, index="exg").heatmap.values[0]
    # ExG = 2g - r - b in [-1, 2], rescaled: green 2 -> 1, red/blue -1 -> 0, grey/black 0 -> 1/3.
    np.testing.assert_allclose(exg, [1.0, 0.0, 0.0, 1 / 3, 1 / 3], atol=1e-6)
    exgr = _run(backend, colours, index="exg-exr").heatmap.values[0]
    # ExG - ExR = 3g - 2.4r - b in [-2.4, 3]: green 3 -> 1, red -2.4 -> 0, blue -1 -> 1.4/5.4.
    expected = (np.array([3.0, -2.4, -1.0, (3 - 2.4 - 1) / 3, (3 - 2.4 - 1) / 3]) + 2.4) / 5.4
    np.testing.assert_allclose(exgr, expected, atol=1e-6)


def test_heatmap_shape_range_and_determinism(backend):
    image = read_image(SAMPLES / "quadrats" / "green_meadow.jpg")
    first = _run(backend, image)
    second = _run(backend, image)
    values = first.heatmap.values
    assert values.shape == image.shape[:2] and values.dtype == np.float32
    assert 0.0 <= values.min() and values.max() <= 1.0
    np.testing.assert_array_equal(values, second.heatmap.values)
    assert 0.0 < first.suggested_threshold < 1.0


def test_smoothing_reduces_speckle(backend):
    image = read_image(SAMPLES / "quadrats" / "moss_carpet.jpg")[:400, :400]
    raw = _run(backend, image, smoothing=0.0).heatmap.values
    smooth = _run(backend, image, smoothing=3.0).heatmap.values
    assert np.abs(np.diff(smooth, axis=1)).mean() < 0.5 * np.abs(np.diff(raw, axis=1)).mean()


def test_otsu_mask_matches_the_potted_plant_matte(backend):
    """IoU against the ground-truth matte (> 0.5); the matte includes the pot, which is not green."""
    image = read_image(SAMPLES / "plants" / "potted_plant.jpg")
    truth = read_mask(SAMPLES / "plants" / "potted_plant_matte.png") > 127
    for index, floor in (("exg", 0.62), ("exg-exr", 0.66)):
        result = _run(backend, image, index=index)
        score = iou(result.heatmap.values >= result.suggested_threshold, truth)
        assert score >= floor, (index, score)


def test_cancel_stops_between_bands(backend):
    instance, manifest = backend
    ctx = RunContext()
    ctx.cancel.cancel()
    from protolens.core.errors import Cancelled

    with pytest.raises(Cancelled):
        drain(instance.run(np.zeros((1200, 10, 3), np.uint8), make_params(manifest.params), ctx))
