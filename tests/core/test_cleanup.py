"""clean_regions: specks dropped and holes filled with 4-connectivity, ignore left alone, counts reported."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio.features
from scipy import ndimage

from protolens.core.formats.cleanup import CleanupReport, clean_regions

CROSS = ndimage.generate_binary_structure(2, 1)  # 4-connectivity


def test_specks_are_dropped_per_class_and_counted():
    labelmap = np.zeros((10, 12), np.uint8)
    labelmap[1:6, 1:6] = 1  # 25 px, kept
    labelmap[8, 8] = 1  # 1-px speck
    labelmap[8, 10:12] = 2  # 2-px speck
    labelmap[1:4, 8:11] = 2  # 9 px, kept
    cleaned, report = clean_regions(labelmap, min_area=3)
    expected = labelmap.copy()
    expected[8, 8] = 0
    expected[8, 10:12] = 0
    np.testing.assert_array_equal(cleaned, expected)
    assert report.removed_pixels == {1: 1, 2: 2} and report.removed_regions == {1: 1, 2: 1}
    assert report.filled_pixels == {} and report.changed
    assert labelmap[8, 8] == 1  # the input is not modified


def test_diagonal_neighbours_are_separate_regions_as_the_tracer_sees_them():
    labelmap = np.zeros((6, 6), np.uint8)
    labelmap[1, 1] = labelmap[2, 2] = labelmap[3, 3] = 1  # 8-connected, three 4-connected specks
    cleaned, report = clean_regions(labelmap, min_area=2)
    assert not cleaned.any() and report.removed_regions == {1: 3}
    shapes = list(rasterio.features.shapes(labelmap, mask=labelmap > 0, connectivity=4))
    assert len(shapes) == 3  # the tracer writes three polygons: all three were too small


def test_small_holes_are_filled_with_the_enclosing_class():
    labelmap = np.zeros((12, 12), np.uint8)
    labelmap[1:11, 1:11] = 3
    labelmap[3, 3:5] = 0  # 2-px hole: filled
    labelmap[6:8, 6:8] = 0  # 4-px hole: kept with fill_holes=3
    cleaned, report = clean_regions(labelmap, fill_holes=3)
    assert (cleaned[3, 3:5] == 3).all() and (cleaned[6:8, 6:8] == 0).all()
    assert report.filled_pixels == {3: 2} and report.filled_holes == {3: 1} and report.removed_pixels == {}
    cleaned, report = clean_regions(labelmap, fill_holes=5)
    assert (cleaned[1:11, 1:11] == 3).all() and report.filled_pixels == {3: 6} and report.filled_holes == {3: 2}


def test_background_touching_the_border_is_not_a_hole():
    labelmap = np.full((6, 6), 1, np.uint8)
    labelmap[0, 2] = 0  # a notch in the top edge, enclosed on three sides
    labelmap[2:4, 5] = 0  # a notch in the right edge
    cleaned, report = clean_regions(labelmap, fill_holes=100)
    np.testing.assert_array_equal(cleaned, labelmap)
    assert report == CleanupReport() and not report.changed


def test_holes_bordered_by_several_classes_or_ignore_are_left():
    labelmap = np.zeros((7, 9), np.uint8)
    labelmap[1:6, 1:4] = 1
    labelmap[1:6, 4:8] = 2
    labelmap[3, 3:5] = 0  # a gap between classes 1 and 2
    labelmap[2, 6] = 0
    labelmap[3, 6] = 255  # a hole in class 2 that touches ignore
    cleaned, report = clean_regions(labelmap, fill_holes=10)
    np.testing.assert_array_equal(cleaned, labelmap)
    assert report.filled_pixels == {}


def test_ignore_pixels_are_never_removed_or_filled():
    labelmap = np.zeros((8, 8), np.uint8)
    labelmap[1:7, 1:7] = 1
    labelmap[3:5, 3:5] = 255  # ignore inside the class
    labelmap[0, 7] = 255  # a 1-px ignore speck
    cleaned, report = clean_regions(labelmap, min_area=5, fill_holes=10)
    np.testing.assert_array_equal(cleaned == 255, labelmap == 255)
    assert 255 not in report.removed_pixels and 255 not in report.filled_pixels


def test_a_speck_of_another_class_inside_a_region_is_absorbed():
    labelmap = np.zeros((9, 9), np.uint8)
    labelmap[1:8, 1:8] = 1
    labelmap[4, 4] = 2
    cleaned, report = clean_regions(labelmap, min_area=2, fill_holes=2)
    assert (cleaned[1:8, 1:8] == 1).all()
    assert report.to_json() == {"removed_pixels": {"2": 1}, "removed_regions": {"2": 1},
                                "filled_pixels": {"1": 1}, "filled_holes": {"1": 1}}


def test_random_maps_match_a_scipy_rederivation():
    rng = np.random.default_rng(7)
    labelmap = rng.choice(np.array([0, 0, 0, 1, 1, 2, 255], np.uint8), size=(60, 80))
    cleaned, report = clean_regions(labelmap, min_area=4)
    expected = labelmap.copy()
    removed: dict[int, int] = {}
    for class_id in (1, 2):
        components, count = ndimage.label(labelmap == class_id, structure=CROSS)
        sizes = np.bincount(components.ravel(), minlength=count + 1)
        small = np.flatnonzero(sizes < 4)
        small = small[small > 0]
        expected[np.isin(components, small)] = 0
        removed[class_id] = int(sizes[small].sum())
    np.testing.assert_array_equal(cleaned, expected)
    assert report.removed_pixels == {k: v for k, v in removed.items() if v}
    for class_id in (1, 2):  # every traced polygon left has at least min_area pixels
        _, sizes = np.unique(ndimage.label(cleaned == class_id, structure=CROSS)[0], return_counts=True)
        assert (sizes[1:] >= 4).all()


def test_zero_options_copy_and_bad_options_raise():
    labelmap = np.eye(4, dtype=np.uint8)
    cleaned, report = clean_regions(labelmap)
    np.testing.assert_array_equal(cleaned, labelmap)
    assert cleaned is not labelmap and not report.changed
    with pytest.raises(ValueError, match="min_area"):
        clean_regions(labelmap, min_area=-1)
    with pytest.raises(ValueError, match="fill_holes"):
        clean_regions(labelmap, fill_holes=2.5)
    with pytest.raises(ValueError, match="uint8"):
        clean_regions(labelmap.astype(np.int32), min_area=2)
