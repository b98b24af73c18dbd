"""Exported polygons read back exactly, in other tools' own terms.

GeoJSON: valid in shapely, each class unions, and rasterio's ``rasterize`` (identity transform) gives
the label map back. labelme: a file opened and saved unedited by labelme 5.4.1 keeps every shape usable
and labelme's ``shapes_to_label`` paints the label map back. COCO: pycocotools' ``annToMask`` fills
exactly the traced pixels. On every sample quadrat (label maps from an excess-green threshold), the
potted plant and a synthetic map with 1-px lines and holes, diagonal pinches, ignore pixels and regions
on the border.

labelme itself is not installed in the test environment: ``pip install labelme==5.4.1`` pulls PyQt5,
onnxruntime, scikit-image and matplotlib into an environment whose GUI runs on PySide6. Its rasteriser
and its point de-duplication on load are re-implemented below from labelme 5.4.1's source
(``labelme/utils/shape.py`` and ``Shape.addPoint`` in ``labelme/shape.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio.features
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from protolens.core.formats import present_classes
from protolens.core.formats.coco import CocoImage, coco_document, labelmap_from_coco
from protolens.core.formats.geojson import geojson_document, labelmap_from_geojson
from protolens.core.formats.labelme import labelmap_from_labelme, labelme_document
from protolens.core.formats.polygons import (
    has_holes,
    label_polygons,
    labelmap_polygons,
    polygon_area,
    polygon_patch,
    rasterise,
)
from protolens.core.labels import LabelClass, LabelSet
from protolens.core.thresholds import otsu_threshold

SAMPLES = Path(__file__).resolve().parents[2] / "resources" / "samples"
QUADRATS = sorted((SAMPLES / "quadrats").glob("*.jpg"))
# pycocotools' decode passes copy=False to NumPy 2 (a third-party deprecation, not ours).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")

#: '.' background, digits classes, 'x' ignore (255). Column/row 0 and the last ones are the border.
SYNTHETIC = """
111111.33333...2
1.1211.3.x.3..2.
111111..33333..2
......x.........
2222222222222222
.3.3...222..xx11
..3...2212..x1.1
.3.3...222..xxx1
"""
# - a 1-px hole (row 1) and a class-2 pixel in another hole of class 1; a class-1 pixel in a
#   class-2 ring (rows 5-7): islands that must be painted after the hole around them;
# - a class-3 ring whose hole touches the outside at one corner (rows 0-2): a hole touching its
#   exterior at a vertex, with an ignore pixel in it; an X of class 3 (rows 5-7) and a class-2 zigzag (col 14-15): pixels touching
#   only at corners;
# - a 1-px line across the whole map (row 4); ignore pixels inside a region and on the border.


def parse_map(text: str) -> np.ndarray:
    rows = text.strip().splitlines()
    values = {".": 0, "x": 255} | {str(d): d for d in range(1, 10)}
    return np.array([[values[c] for c in row] for row in rows], np.uint8)


def make_labels() -> LabelSet:
    return LabelSet([LabelClass(1, "plant", (44, 160, 44)), LabelClass(2, "litter", (140, 86, 75)),
                     LabelClass(3, "stone", (148, 103, 189))])


def without_ignore(labelmap: np.ndarray) -> np.ndarray:
    """What the polygon formats give back: ignore (255) is not exported and comes back as background."""
    return np.where(labelmap == 255, 0, labelmap).astype(np.uint8)


def excess_green(rgb: np.ndarray) -> np.ndarray:
    """ExG = 2g - r - b on chromatic coordinates (Woebbecke et al. 1995), float32 (rows, cols)."""
    data = rgb.astype(np.float32)
    total = data.sum(axis=2, keepdims=True)
    r, g, b = np.moveaxis(np.divide(data, total, out=np.full_like(data, 1 / 3), where=total > 0), 2, 0)
    return 2 * g - r - b


def quadrat_map(path: Path, width: int | None = None) -> np.ndarray:
    """A label map of a sample quadrat from an excess-green threshold (Otsu): plant (1) at or above it,
    and with ``width`` (the photo resized to it), dense plant (2) from 0.05 above it, so that regions of
    one class lie in holes of the other; the top-left corner (1/8 x 1/5, on the border) is ignore (255)."""
    image = Image.open(path).convert("RGB")
    if width is not None:
        image = image.resize((width, round(image.height * width / image.width)), Image.Resampling.BOX)
    exg = (excess_green(np.asarray(image)) + 1) / 3  # ExG in [-1, 2] to [0, 1]
    threshold = otsu_threshold(exg)
    labelmap = (exg >= threshold).astype(np.uint8)
    if width is not None:
        labelmap[exg >= threshold + 0.05] = 2
    labelmap[:labelmap.shape[0] // 8, :labelmap.shape[1] // 5] = 255
    return labelmap


def potted_plant_map(source: str) -> np.ndarray:
    if source == "matte":
        return (np.asarray(Image.open(SAMPLES / "plants" / "potted_plant_matte.png").convert("L")) > 127).astype(np.uint8)
    exg = (excess_green(np.asarray(Image.open(SAMPLES / "plants" / "potted_plant.jpg").convert("RGB"))) + 1) / 3
    return (exg >= otsu_threshold(exg)).astype(np.uint8)


@pytest.fixture(scope="module", params=[p.stem for p in QUADRATS])
def quadrat(request) -> np.ndarray:
    """Full resolution (up to 2560 x 1600, up to 80,000 regions), one class and ignore."""
    return quadrat_map(SAMPLES / "quadrats" / f"{request.param}.jpg")


@pytest.fixture(scope="module", params=[p.stem for p in QUADRATS])
def small_quadrat(request) -> np.ndarray:
    """640 px wide, two nested classes and ignore: for the slower checks (union, pycocotools, labelme's
    full-size masks)."""
    return quadrat_map(SAMPLES / "quadrats" / f"{request.param}.jpg", width=640)


@st.composite
def noise_maps(draw) -> np.ndarray:
    """Random per-pixel classes: many diagonal pinches, 1-px regions, nested holes and ignore."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (draw(st.integers(1, 24)), draw(st.integers(1, 24)))
    return rng.choice(np.array([0, 1, 2, 3, 255], np.uint8), size=shape, p=[0.3, 0.3, 0.2, 0.1, 0.1])


def test_synthetic_map_has_what_it_claims():
    labelmap = parse_map(SYNTHETIC)
    assert labelmap.shape == (8, 16)
    regions = labelmap_polygons(labelmap)
    assert sum(len(p.holes) for _, p in regions) == 4
    stone = [p for c, p in regions if c == 3]
    assert len(stone) == 6  # the ring and the five pixels of the X
    assert {tuple(v) for v in stone[0].exterior} & {tuple(v) for v in stone[0].holes[0]} == {(8.0, 2.0)}


# -- GeoJSON ------------------------------------------------------------------------------------------------


def assert_geojson_reads_back(labelmap: np.ndarray, union: bool = True) -> None:
    """Valid geometry, no background or ignore features, (with ``union``) each class unions to its
    pixel count, and rasterio and our importer burn the label map back."""
    height, width = labelmap.shape
    document = json.loads(json.dumps(geojson_document(labelmap, make_labels(), "q.jpg", height, width)))
    features = document["features"]
    classes = np.array([f["properties"]["class_id"] for f in features], int)
    assert set(classes.tolist()) == set(present_classes(labelmap))  # no background, no ignore feature
    geometries = shapely.from_geojson([json.dumps(f["geometry"]) for f in features])
    assert shapely.is_valid(geometries).all()
    for class_id in present_classes(labelmap) if union else []:
        assert shapely.union_all(geometries[classes == class_id]).area == np.count_nonzero(labelmap == class_id)
    assert [f["properties"]["area_px"] for f in features] == shapely.area(geometries).tolist()
    for feature in features:
        rings = feature["geometry"]["coordinates"]
        assert all(len(ring) >= 5 and ring[0] == ring[-1] for ring in rings)
        assert all(isinstance(v, int) for ring in rings for position in ring for v in position)
    burnt = rasterio.features.rasterize([(f["geometry"], f["properties"]["class_id"]) for f in features],
                                        out_shape=(height, width), dtype=np.uint8)
    np.testing.assert_array_equal(burnt, without_ignore(labelmap))
    np.testing.assert_array_equal(labelmap_from_geojson(document, height, width, make_labels()),
                                  without_ignore(labelmap))


def test_geojson_of_synthetic_map_reads_back():
    assert_geojson_reads_back(parse_map(SYNTHETIC))


def test_geojson_of_quadrat_reads_back(quadrat):
    assert_geojson_reads_back(quadrat, union=False)  # GEOS takes 30 s to union 80,000 speckles


def test_geojson_of_small_quadrat_reads_back(small_quadrat):
    assert_geojson_reads_back(small_quadrat)


@settings(max_examples=60, deadline=None)
@given(noise_maps())
def test_geojson_of_noise_reads_back(labelmap):
    assert_geojson_reads_back(labelmap)


def test_polygons_run_along_pixel_edges():
    labelmap = np.zeros((3, 4), np.uint8)
    labelmap[1, 2] = 1
    ((class_id, polygon),) = labelmap_polygons(labelmap)
    assert class_id == 1 and polygon.holes == []
    assert sorted(map(tuple, polygon.exterior.tolist())) == [(2, 1), (2, 2), (3, 1), (3, 2)]
    assert polygon_area(polygon) == 1


# -- labelme ------------------------------------------------------------------------------------------------


def saved_by_labelme_541(document: dict) -> dict:
    """``document`` after labelme 5.4.1 opens it and saves it unedited.

    On load, ``Shape.addPoint`` drops every point equal to the shape's first point (it closes the
    shape instead); consecutive duplicates are dropped here too, to be stricter than labelme.
    """
    shapes = []
    for shape in document["shapes"]:
        points = [p for i, p in enumerate(shape["points"]) if i == 0 or p != shape["points"][0]]
        points = [p for i, p in enumerate(points) if i == 0 or p != points[i - 1]]
        shapes.append({**shape, "points": points})
    return {**document, "shapes": shapes}


def labelme_shapes_to_label(document: dict, name_to_value: dict[str, int]) -> np.ndarray:
    """labelme's ``utils.shapes_to_label`` (5.4.1, unchanged in 6.3.1) for polygon shapes.

    ``shape_to_mask``: a full-size PIL "L" mask, ``ImageDraw.polygon(xy, outline=1, fill=1)``, after
    ``assert len(xy) > 2, "Polygon must have points more than 2"``; the masks are painted in order.
    """
    size = (document["imageWidth"], document["imageHeight"])
    labelmap = np.zeros(size[::-1], np.int32)
    for shape in document["shapes"]:
        xy = [tuple(point) for point in shape["points"]]
        assert len(xy) > 2, "Polygon must have points more than 2"
        mask = Image.fromarray(np.zeros(size[::-1], np.uint8))
        ImageDraw.Draw(mask).polygon(xy=xy, outline=1, fill=1)
        labelmap[np.array(mask, dtype=bool)] = name_to_value[shape["label"]]
    return labelmap


NAME_TO_VALUE = {"_background_": 0} | {c.name: c.id for c in make_labels().classes}
#: labelme 6.3.1's loader requires these shape fields with these types.
SHAPE_FIELDS = {"label": str, "points": list, "group_id": type(None), "description": str,
                "shape_type": str, "flags": dict, "mask": type(None)}


def assert_labelme_reads_back(labelmap: np.ndarray, faithful: bool = True) -> None:
    """labelme 6.3.1's fields, 4 or more distinct points per shape, nothing for labelme 5.4.1 to drop, and
    the map painted back by our importer and (with ``faithful``) by labelme's ``shapes_to_label``."""
    height, width = labelmap.shape
    document = json.loads(json.dumps(labelme_document(labelmap, make_labels(), "q.jpg", height, width)))
    assert set(document) == {"version", "flags", "shapes", "imagePath", "imageData", "imageHeight", "imageWidth"}
    for shape in document["shapes"]:
        assert {k: type(v) for k, v in shape.items()} == SHAPE_FIELDS
        assert len({tuple(p) for p in shape["points"]}) == len(shape["points"]) >= 4
    saved = saved_by_labelme_541(document)
    assert saved == document  # labelme 5.4.1 drops no point
    if faithful:
        np.testing.assert_array_equal(labelme_shapes_to_label(saved, NAME_TO_VALUE), without_ignore(labelmap))
    np.testing.assert_array_equal(labelmap_from_labelme(saved, make_labels()), without_ignore(labelmap))


def test_labelme_of_synthetic_map_survives_labelme_541():
    assert_labelme_reads_back(parse_map(SYNTHETIC))


@pytest.mark.parametrize("source", ["vegetation_index", "matte"])
def test_labelme_of_potted_plant_survives_labelme_541(source):
    labelmap = potted_plant_map(source)
    polygons = [polygon for _, polygon in labelmap_polygons(labelmap)]
    # Single pixels and pairs, the shapes labelme 5.4.1 cut below 3 points in the old export.
    assert sum(polygon_area(polygon) <= 2 for polygon in polygons) >= 20
    assert sum(len(polygon.holes) for polygon in polygons) >= 100
    assert_labelme_reads_back(labelmap)


@settings(max_examples=60, deadline=None)
@given(noise_maps())
def test_labelme_of_noise_survives_labelme_541(labelmap):
    assert_labelme_reads_back(labelmap)


def test_labelme_of_quadrat_reads_back(quadrat):
    assert_labelme_reads_back(quadrat, faithful=False)  # a full-size PIL mask per shape: 80,000 of them


def test_labelme_of_small_quadrat_survives_labelme_541(small_quadrat):
    assert_labelme_reads_back(small_quadrat)


@pytest.mark.parametrize("to_integer", [np.trunc, np.floor, lambda v: np.floor(v + 0.5)],
                         ids=["truncate", "floor", "round"])
def test_labelme_points_survive_any_integer_conversion(to_integer):
    # Pillow versions differ in how they turn float vertices into integers; every way gives the map.
    labelmap = parse_map(SYNTHETIC)
    document = labelme_document(labelmap, make_labels(), "q.jpg", *labelmap.shape)
    for shape in document["shapes"]:
        shape["points"] = to_integer(np.array(shape["points"])).tolist()
    np.testing.assert_array_equal(labelme_shapes_to_label(document, NAME_TO_VALUE), without_ignore(labelmap))


def test_labelme_points_hold_exactly_the_pixel_centres():
    # Read as exact geometry too, each ring holds the centres (integer points) of its pixels only.
    labelmap = parse_map(SYNTHETIC)
    document = labelme_document(labelmap, make_labels(), "q.jpg", *labelmap.shape)
    ys, xs = np.mgrid[0:labelmap.shape[0], 0:labelmap.shape[1]]
    painted = np.zeros(labelmap.shape, np.uint8)
    for shape in document["shapes"]:
        inside = shapely.covers(shapely.Polygon(shape["points"]), shapely.points(xs, ys))
        painted[inside] = NAME_TO_VALUE[shape["label"]]
    np.testing.assert_array_equal(painted, without_ignore(labelmap))


# -- COCO ---------------------------------------------------------------------------------------------------


def test_coco_rings_fill_exactly_their_regions_in_pycocotools(small_quadrat):
    # Every traced exterior, drawn by pycocotools, covers its region with the holes filled.
    height, width = small_quadrat.shape
    regions = labelmap_polygons(small_quadrat)
    for class_id in present_classes(small_quadrat):
        exteriors = [p.exterior for c, p in regions if c == class_id]
        rles = mask_utils.frPyObjects([ring.ravel().tolist() for ring in exteriors], height, width)
        filled = rasterio.features.rasterize(
            [({"type": "Polygon", "coordinates": [ring.tolist() + ring[:1].tolist()]}, 1) for ring in exteriors],
            out_shape=(height, width), dtype=np.uint8)
        np.testing.assert_array_equal(mask_utils.decode(mask_utils.merge(rles)), filled)


def test_coco_polygons_read_back_with_pycocotools(tmp_path):
    labelmap = parse_map(SYNTHETIC)
    height, width = labelmap.shape
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco_document([CocoImage(1, "q.jpg", height, width, labelmap)], make_labels(),
                                             "polygon")))
    coco = COCO(str(path))
    kinds = {}
    for annotation in coco.loadAnns(coco.getAnnIds(imgIds=[1])):
        class_id = annotation["category_id"]
        kinds[class_id] = type(annotation["segmentation"])
        expected = labelmap == class_id
        np.testing.assert_array_equal(coco.annToMask(annotation).astype(bool), expected)
    assert kinds == {1: dict, 2: dict, 3: dict}  # every class has a hole here: RLE
    hole_free = labelmap.copy()
    hole_free[:3, :] = 0  # no class-1 holes or class-3 ring left
    hole_free[5:8, 6:10] = 0  # nor the class-2 ring
    path.write_text(json.dumps(coco_document([CocoImage(1, "q.jpg", height, width, hole_free)], make_labels(),
                                             "polygon")))
    coco = COCO(str(path))
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert all(isinstance(a["segmentation"], list) for a in annotations) and len(annotations) == 3
    for annotation in annotations:
        expected = hole_free == annotation["category_id"]
        np.testing.assert_array_equal(coco.annToMask(annotation), expected)
        assert len(annotation["segmentation"]) == len(labelmap_polygons(expected.astype(np.uint8)))
        assert all(v == int(v) for ring in annotation["segmentation"] for v in ring)
    document = json.loads(path.read_text())
    np.testing.assert_array_equal(labelmap_from_coco(document, 1, make_labels()), without_ignore(hole_free))


def test_rasterise_matches_rasterio_for_traced_maps():
    labelmap = parse_map(SYNTHETIC)
    for class_id in present_classes(labelmap):
        polygons = [p for c, p in labelmap_polygons(labelmap) if c == class_id]
        np.testing.assert_array_equal(rasterise(polygons, *labelmap.shape), labelmap == class_id)


def test_patches_and_holes_agree_with_rasterise():
    labelmap = parse_map(SYNTHETIC)
    for _, polygon in labelmap_polygons(labelmap):
        window, patch = polygon_patch(polygon, *labelmap.shape)
        np.testing.assert_array_equal(rasterise([polygon], *labelmap.shape)[window], patch)
        assert patch.any() and np.count_nonzero(patch) == polygon_area(polygon)
    assert [has_holes(labelmap == c) for c in (1, 2, 3)] == [True, True, True]
    diamond = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], bool)  # encloses nothing 4-connected
    assert not has_holes(diamond) and len(label_polygons(diamond.astype(np.uint8), 1)) == 4


def test_geojson_of_an_earlier_protolens_still_reads_back_exactly():
    """Files written before pixel-edge tracing (vertices at pixel centres, no ``vertices`` member) read back in
    their own convention: the fixture was written by the previous release's exporter."""
    from protolens.core.formats.geojson import labelmap_from_geojson
    from protolens.core.labels import LabelSet

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "geojson_v1"
    document = json.loads((fixture / "synthetic.geojson").read_text())
    expected = np.load(fixture / "synthetic.npy")
    assert "vertices" not in document["protolens"]
    labels = LabelSet.default()
    labels.add("moss")
    got = labelmap_from_geojson(document, 12, 16, labels)
    np.testing.assert_array_equal(got, np.where(expected == 255, 0, expected))
