"""Object regions (OC-ZSS step 1, protolens's procedure): partition, refinement, look-up, layers."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from scipy import ndimage

from protolens.core.errors import ParamError
from protolens.core.imageio import read_image
from protolens.core.regions import partition, refine, refine_guide, region_at, regions_layer, upsample_nearest
from protolens.core.types import Heatmap, fit_grid

RNG = np.random.default_rng(7)


@pytest.fixture(scope="module")
def photo(samples):
    return read_image(samples / "quadrats" / "moss_carpet.jpg")  # 2560 x 1600


def _colour_features(image: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Stand-in patch features of a real photo: mean colour (centred) per cell plus a little noise."""
    cells = cv2.resize(image, (cols, rows), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    cells -= cells.reshape(-1, 3).mean(0)
    return np.concatenate([cells, 0.01 * RNG.normal(size=(rows, cols, 5)).astype(np.float32)], axis=2)


def _border_changes(ids: np.ndarray) -> int:
    return int((ids[:, 1:] != ids[:, :-1]).sum() + (ids[1:] != ids[:-1]).sum())


# --- partition ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 6, 8, 40])
def test_partition_assigns_every_patch_to_one_of_exactly_n_regions(n):
    features = RNG.normal(size=(9, 14, 16)).astype(np.float32)
    ids = partition(features, n, seed=3)
    assert ids.shape == (9, 14) and ids.dtype == np.int32
    assert ids.min() >= 0 and ids.max() < n
    assert np.array_equal(np.unique(ids), np.arange(n))  # every region used, nothing else


def test_partition_is_deterministic_for_a_seed_and_seeds_matter():
    features = RNG.normal(size=(12, 12, 8)).astype(np.float32)
    first = partition(features, 6, seed=11, spatial=0.5, iterations=2)
    np.testing.assert_array_equal(first, partition(features.copy(), 6, seed=11, spatial=0.5, iterations=2))
    others = [partition(features, 6, seed=s) for s in range(1, 6)]
    assert any(not np.array_equal(others[0], o) for o in others[1:])


def test_partition_assigns_by_cosine_not_l2():
    """A faint patch pointing like the strong cluster A joins A (cosine), though it is nearest to B in L2."""
    a, b, faint = np.array([10.0, 0.0]), np.array([0.0, 0.1]), np.array([0.1, 0.03])
    features = np.stack([a] * 6 + [b] * 6 + [faint]).reshape(1, 13, 2).astype(np.float32)
    ids = partition(features, 2, seed=0)[0]
    assert len(set(ids[:6])) == 1 and len(set(ids[6:12])) == 1 and ids[0] != ids[6]
    assert ids[12] == ids[0]  # cosine: (0.1, 0.03) is 17 degrees from A, 73 from B
    l2_nearest = np.argmin([np.linalg.norm(faint - a), np.linalg.norm(faint - b)])
    assert l2_nearest == 1  # ... but in L2 it is nearest to B: the two rules differ here
    # only directions count: rescaling every patch leaves the partition unchanged
    scales = RNG.uniform(0.01, 100, size=(1, 13, 1)).astype(np.float32)
    np.testing.assert_array_equal(partition(features * scales, 2, seed=0)[0], ids)


def test_well_separated_clusters_are_recovered_for_every_seed():
    centres = np.eye(5, 32, dtype=np.float32)
    truth = RNG.integers(0, 5, size=(10, 10))
    features = centres[truth] + 0.05 * RNG.normal(size=(10, 10, 32)).astype(np.float32)
    for seed in range(5):
        ids = partition(features, 5, seed=seed)
        pairs = set(zip(truth.ravel().tolist(), ids.ravel().tolist(), strict=True))
        assert len(pairs) == 5  # a bijection between clusters and region ids


def test_lloyd_steps_reach_a_spherical_kmeans_fixed_point():
    """numpy re-derivation: with enough steps, each patch lies nearest (cosine) to its region's mean direction."""
    features = RNG.normal(size=(8, 10, 6)).astype(np.float32)
    ids = partition(features, 4, seed=2, iterations=50).ravel()
    x = features.reshape(-1, 6) / np.linalg.norm(features.reshape(-1, 6), axis=1, keepdims=True)
    centres = np.stack([x[ids == k].mean(0) for k in range(4)])
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    np.testing.assert_array_equal(np.argmax(x @ centres.T, axis=1), ids)


def test_spatial_weight_makes_regions_compact():
    features = RNG.normal(size=(20, 30, 16)).astype(np.float32)
    loose = partition(features, 6, seed=0)
    compact = partition(features, 6, seed=0, spatial=20.0)
    assert _border_changes(compact) < 0.3 * _border_changes(loose)
    assert np.array_equal(np.unique(compact), np.arange(6))


def test_duplicate_features_still_give_n_regions():
    ids = partition(np.ones((4, 5, 3), np.float32), 3, seed=1)
    assert np.array_equal(np.unique(ids), np.arange(3))
    ids = partition(np.ones((4, 5, 3), np.float32), 3, seed=1, iterations=3)
    assert np.array_equal(np.unique(ids), np.arange(3))


@pytest.mark.parametrize("shape, n, match", [((3, 4, 2), 13, "1..12 regions"), ((3, 4, 2), 0, "1..12"),
                                             ((12, 2), 2, "rows, cols, d")])
def test_partition_refuses_bad_input(shape, n, match):
    with pytest.raises(ParamError, match=match):
        partition(np.ones(shape, np.float32), n)


def test_partition_refuses_nan_and_negative_spatial():
    features = np.ones((3, 3, 2), np.float32)
    with pytest.raises(ParamError, match="spatial"):
        partition(features, 2, spatial=-1)
    features[1, 1, 0] = np.nan
    with pytest.raises(ParamError, match="NaN"):
        partition(features, 2)


# --- refinement ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coarse(photo):
    rows, cols = 35, 56  # the grid of a ViT/16 at long side 896
    return partition(_colour_features(photo, rows, cols), 6, seed=0)


@pytest.mark.parametrize("radius", [None, 40])  # the default (half a cell) and a filter reaching two cells
def test_refinement_stays_within_one_cell_of_the_coarse_borders(photo, coarse, radius):
    refined = refine(coarse, photo, 6, radius=radius)
    height, width = fit_grid(photo.shape[:2], 1024)
    assert refined.shape == (height, width) == (640, 1024) and refined.dtype == np.int32
    assert np.array_equal(np.unique(refined), np.arange(6))
    nearest = upsample_nearest(coarse, height, width)
    changed = refined != nearest
    assert changed.mean() > 0.005  # the refinement does something
    # numpy/scipy re-derivation of "near a border": another coarse id within one cell (Chebyshev distance)
    cell = math.ceil(max(height / coarse.shape[0], width / coarse.shape[1]))
    size = 2 * cell + 1
    near_border = ndimage.maximum_filter(nearest, size) != ndimage.minimum_filter(nearest, size)
    assert not np.any(changed & ~near_border)
    # and every changed pixel takes the id of a coarse region present within that cell
    rows, cols = np.nonzero(changed)
    for r, c in zip(rows[::97], cols[::97], strict=True):
        window = nearest[max(0, r - cell):r + cell + 1, max(0, c - cell):c + cell + 1]
        assert refined[r, c] in window


@pytest.mark.parametrize("name", ["moss_carpet.jpg", "forest_floor.jpg"])
def test_refined_regions_follow_the_photo_better_than_the_patch_grid(samples, name):
    """numpy re-derivation of a pixel-level answer: with colour features, each pixel (lightly blurred) belongs
    to the region whose mean colour direction it is closest to; the refined map agrees with it more often
    than the nearest-upsampled patch grid does."""
    photo = read_image(samples / "quadrats" / name)
    rows, cols = 35, 56
    cells = cv2.resize(photo, (cols, rows), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    mean = cells.reshape(-1, 3).mean(0)
    features = cells - mean
    coarse = partition(features, 6, seed=0)
    refined = refine(coarse, photo, 6)
    height, width = refined.shape
    pixels = cv2.GaussianBlur(cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32),
                              (0, 0), 3).reshape(-1, 3) / 255.0 - mean
    pixels /= np.maximum(np.linalg.norm(pixels, axis=1, keepdims=True), 1e-6)
    centres = np.stack([features[coarse == k].mean(0) for k in range(6)])
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = np.argmax(pixels @ centres.T, axis=1).reshape(height, width)
    nearest = upsample_nearest(coarse, height, width)
    assert (refined == truth).mean() > (nearest == truth).mean() + 0.005


def test_refine_with_a_prepared_guide_is_the_same(photo, coarse):
    guide = refine_guide(photo, 512)
    assert guide.size == (320, 512)
    np.testing.assert_array_equal(refine(coarse, photo, 6, max_side=512), refine(coarse, None, 6, guide=guide))
    np.testing.assert_array_equal(refine(coarse, photo, 6, max_side=512, radius=8),
                                  refine(coarse, None, 6, guide=guide, radius=8))


def test_refine_edge_cases(photo):
    one = np.zeros((4, 6), np.int32)
    np.testing.assert_array_equal(refine(one, photo, 1, max_side=64), np.zeros((40, 64), np.int32))
    tiny = np.full((5, 7, 3), 128, np.uint8)
    ids = np.array([[0, 1], [1, 0]], np.int32)
    assert refine(ids, tiny, 2).shape == (5, 7)  # a small photo is never upscaled
    with pytest.raises(ParamError, match="0..1"):
        refine(ids + 1, tiny, 2)
    with pytest.raises(ParamError, match="positive"):
        refine(ids, tiny, 2, eps=0)
    with pytest.raises(ParamError, match="photo"):
        refine(ids, tiny[..., 0], 2)


# --- look-up and layers -------------------------------------------------------------------------------------------


def test_region_at_matches_the_upsampled_layer(photo, coarse):
    layer = regions_layer(coarse, 6, photo.shape[:2])
    height, width = photo.shape[:2]
    for x, y in [(0, 0), (2559, 1599), (1000.7, 333.2), (45, 46), (46, 45), (1280, 800)]:
        region = region_at(coarse, (height, width), x, y)
        assert layer.mask(region)[int(y), int(x)]
    assert region_at(coarse, (height, width), -0.5, 10) == -1
    assert region_at(coarse, (height, width), 10, 1600) == -1
    assert region_at(coarse, (height, width), 2560, 0) == -1


def test_regions_layer_has_one_mask_per_region_covering_the_photo(coarse):
    layer = regions_layer(coarse, 6, (1600, 2560))
    assert layer.masks.shape == (6, 35, 56) and layer.labels == [f"region {i}" for i in range(1, 7)]
    np.testing.assert_array_equal(layer.masks.sum(0), 1)
    np.testing.assert_array_equal(layer.scores, 1.0)
    np.testing.assert_array_equal(np.argmax(layer.masks, axis=0), coarse)
    assert Heatmap(coarse / 5.0, (1600, 2560), interpolation="nearest").values.max() == 1.0
