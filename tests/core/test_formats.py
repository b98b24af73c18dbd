"""Label-map formats: PNG, COCO, GeoJSON, labelme, cover CSV; round trips and malformed input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw
from pycocotools.coco import COCO

from protolens.core.atomic import encode_png
from protolens.core.formats import FormatError
from protolens.core.formats.coco import CocoImage, coco_document, labelmap_from_coco
from protolens.core.formats.cover import cover_rows, write_cover_csv
from protolens.core.formats.geojson import geojson_document, labelmap_from_geojson
from protolens.core.formats.labelme import labelmap_from_labelme, labelme_document
from protolens.core.formats.png import (
    encode_label_png,
    labels_txt,
    read_label_png,
    write_label_png,
    write_labels_txt,
)
from protolens.core.formats.polygons import label_polygons, outline_rings, rasterise, ring_area
from protolens.core.labels import LabelClass, LabelSet

SAMPLES = Path(__file__).resolve().parents[2] / "resources" / "samples"
# pycocotools' decode passes copy=False to NumPy 2 (a third-party deprecation, not ours).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def make_labels() -> LabelSet:
    """Three classes with non-contiguous ids, so ids and list positions differ."""
    return LabelSet([LabelClass(1, "Festuca rubra", (44, 160, 44)), LabelClass(2, "pot", (214, 39, 40)),
                     LabelClass(5, "stone", (148, 103, 189))])


@pytest.fixture
def labels() -> LabelSet:
    return make_labels()


@pytest.fixture(scope="module")
def photo_map() -> np.ndarray:
    """A 66x100 map from a real photo: excess-green plant (1), a pot ring with a hole holding a plant
    island and ignore pixels (2), a single pixel and 1-px lines (5), and ignore (255) blocks."""
    image = Image.open(SAMPLES / "plants" / "potted_plant.jpg").convert("RGB").resize((100, 66))
    rgb = np.asarray(image).astype(int)
    labelmap = np.where(2 * rgb[..., 1] - rgb[..., 0] - rgb[..., 2] > 20, 1, 0).astype(np.uint8)
    labelmap[48:62, 30:70] = 2
    labelmap[52:58, 40:60] = 0
    labelmap[54:56, 48:52] = 1
    labelmap[53, 42:44] = 255
    labelmap[60, 5] = 5
    labelmap[64, 10:40] = 5
    cv2.line(labelmap, (80, 45), (95, 60), 5, 1)
    labelmap[0:5, 0:10] = 255
    labelmap[20:23, 60:63] = 255
    return labelmap


@st.composite
def random_maps(draw) -> np.ndarray:
    """A small canvas with filled and outlined rectangles and ellipses of classes 1, 2, 5 and ignore."""
    height, width = draw(st.integers(4, 32)), draw(st.integers(4, 32))
    labelmap = np.zeros((height, width), np.uint8)
    for _ in range(draw(st.integers(1, 6))):
        value = draw(st.sampled_from([1, 1, 2, 2, 5, 255]))
        x0, x1 = draw(st.integers(0, width - 1)), draw(st.integers(0, width - 1))
        y0, y1 = draw(st.integers(0, height - 1)), draw(st.integers(0, height - 1))
        thickness = draw(st.sampled_from([-1, -1, 1, 2]))
        if draw(st.booleans()):
            cv2.rectangle(labelmap, (x0, y0), (x1, y1), value, thickness)
        else:
            axes = (abs(x1 - x0) // 2, abs(y1 - y0) // 2)
            centre = ((x0 + x1) // 2, (y0 + y1) // 2)
            cv2.ellipse(labelmap, centre, axes, draw(st.integers(0, 90)), 0, 360, value, thickness)
    return labelmap


def without_ignore(labelmap: np.ndarray) -> np.ndarray:
    """What polygon and RLE formats give back: ignore pixels are not exported and return as background."""
    return np.where(labelmap == 255, 0, labelmap).astype(np.uint8)


def ids(labelmap: np.ndarray) -> set[int]:
    return set(np.unique(labelmap).tolist())


# -- polygons ---------------------------------------------------------------------------------------------


def assert_polygons_exact(labelmap: np.ndarray) -> None:
    for class_id in ids(labelmap):
        polygons = label_polygons(labelmap, class_id)
        assert all(p.exterior.dtype == np.float64 and p.exterior.shape[1] == 2 for p in polygons)
        np.testing.assert_array_equal(rasterise(polygons, *labelmap.shape), labelmap == class_id)


def test_polygons_of_photo_map_rasterise_exactly(photo_map):
    assert_polygons_exact(photo_map)
    pot = label_polygons(photo_map, 2)
    assert len(pot) == 1 and len(pot[0].holes) == 1
    hole = pot[0].holes[0]
    # Rings run along pixel edges: the hole (rows 52-57, columns 40-59) is the rectangle of their corners.
    assert len(hole) == 4 and hole.min(axis=0).tolist() == [40, 52] and hole.max(axis=0).tolist() == [60, 58]
    assert ring_area(pot[0].exterior) == 40 * 14 and ring_area(hole) == -20 * 6


@FUZZ
@given(random_maps())
def test_polygons_of_random_maps_rasterise_exactly(labelmap):
    assert_polygons_exact(labelmap)


def test_degenerate_components_survive():
    labelmap = np.zeros((9, 12), np.uint8)
    labelmap[1, 1] = 1
    labelmap[4, 2:7] = 1
    cv2.line(labelmap, (9, 2), (11, 8), 1)  # 8-connected steps: 4-connected regions touching at corners
    polygons = label_polygons(labelmap, 1)
    squares = sorted(map(tuple, polygons[0].exterior.tolist()))
    assert squares == [(1, 1), (1, 2), (2, 1), (2, 2)]  # a single pixel: its four corners
    assert all(len(p.exterior) >= 4 and not p.holes for p in polygons)
    assert sum(ring_area(p.exterior) for p in polygons) == np.count_nonzero(labelmap)
    np.testing.assert_array_equal(rasterise(polygons, 9, 12), labelmap == 1)


def test_hole_closed_only_diagonally_keeps_its_enclosed_pixel():
    labelmap = np.ones((7, 7), np.uint8)
    labelmap[2, 3:6] = labelmap[3:6, 2] = labelmap[5, 3:6] = labelmap[3:5, 5] = 0
    labelmap[2, 2] = 1  # the hole ring around (3..4, 3..4) closes only diagonally at (2, 2)
    np.testing.assert_array_equal(rasterise(label_polygons(labelmap, 1), 7, 7), labelmap == 1)


# -- PNG ----------------------------------------------------------------------------------------------------


def test_png_is_indexed_with_the_label_palette(tmp_path, photo_map, labels):
    path = tmp_path / "sub" / "map.png"
    write_label_png(path, photo_map, labels)
    with Image.open(path) as image:
        assert image.mode == "P"
        palette = np.array(image.getpalette(), np.uint8).reshape(-1, 3)
        np.testing.assert_array_equal(np.asarray(image), photo_map)
    np.testing.assert_array_equal(palette, labels.palette())
    np.testing.assert_array_equal(read_label_png(path), photo_map)


@FUZZ
@given(random_maps())
def test_png_round_trip_is_exact(tmp_path, labelmap):
    path = tmp_path / "random.png"
    path.write_bytes(encode_label_png(labelmap, make_labels()))
    np.testing.assert_array_equal(read_label_png(path), labelmap)


def test_rgb_and_grey_pngs_map_to_ids(tmp_path, photo_map, labels):
    (tmp_path / "rgb.png").write_bytes(encode_png(labels.palette()[photo_map]))
    np.testing.assert_array_equal(read_label_png(tmp_path / "rgb.png", labels), photo_map)
    rgba = np.dstack([labels.palette()[photo_map], np.full(photo_map.shape, 200, np.uint8)])
    (tmp_path / "rgba.png").write_bytes(encode_png(rgba))
    np.testing.assert_array_equal(read_label_png(tmp_path / "rgba.png", labels), photo_map)
    (tmp_path / "grey.png").write_bytes(encode_png(photo_map))
    np.testing.assert_array_equal(read_label_png(tmp_path / "grey.png"), photo_map)


def test_rgb_png_with_unknown_colour_names_colour_and_pixel(tmp_path, photo_map, labels):
    rgb = labels.palette()[photo_map]
    rgb[30, 70] = (1, 2, 3)
    rgb[40, 10] = (9, 9, 9)
    (tmp_path / "rgb.png").write_bytes(encode_png(rgb))
    with pytest.raises(FormatError, match=r"\(1, 2, 3\) at pixel \(x=70, y=30\)"):
        read_label_png(tmp_path / "rgb.png", labels)
    with pytest.raises(FormatError, match="label set"):
        read_label_png(tmp_path / "rgb.png")


def test_rgb_png_shared_colours_go_to_the_lowest_id(tmp_path):
    labels = LabelSet([LabelClass(3, "soot", (0, 0, 0)), LabelClass(6, "b", (9, 9, 9)),
                       LabelClass(4, "a", (9, 9, 9))])
    rgb = np.array([[[0, 0, 0], [9, 9, 9], [255, 255, 255]]], np.uint8)
    (tmp_path / "rgb.png").write_bytes(encode_png(rgb))
    np.testing.assert_array_equal(read_label_png(tmp_path / "rgb.png", labels), [[0, 4, 255]])


def test_broken_png_raises_format_error(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(FormatError, match="broken.png"):
        read_label_png(tmp_path / "broken.png")
    (tmp_path / "deep.png").write_bytes(encode_png(np.full((3, 3), 1000, np.uint16)))
    with pytest.raises(FormatError, match="outside 0..255"):
        read_label_png(tmp_path / "deep.png")


def test_labels_txt(tmp_path):
    labels = LabelSet([LabelClass(7, "Trifolium repens", (1, 2, 3)), LabelClass(2, "moss", (4, 5, 6))])
    expected = "0 background\n2 moss\n7 Trifolium repens\n255 ignore\n"
    assert labels_txt(labels) == expected
    write_labels_txt(tmp_path / "labels.txt", labels)
    assert (tmp_path / "labels.txt").read_text(encoding="utf-8") == expected


# -- COCO ---------------------------------------------------------------------------------------------------


def coco_round_trip(labelmap: np.ndarray, encoding: str) -> np.ndarray:
    height, width = labelmap.shape
    document = coco_document([CocoImage(3, "a.jpg", height, width, labelmap)], make_labels(), encoding)
    return labelmap_from_coco(json.loads(json.dumps(document)), 3, make_labels())


@pytest.mark.parametrize("encoding", ["rle", "polygon"])
def test_coco_round_trip_of_photo_map_is_exact(photo_map, encoding):
    back = coco_round_trip(photo_map, encoding)
    np.testing.assert_array_equal(back, without_ignore(photo_map))
    assert back[0, 0] == 0 and back[53, 42] == 0  # ignore pixels come back as background


@FUZZ
@given(random_maps(), st.sampled_from(["rle", "polygon"]))
def test_coco_round_trip_of_random_maps_is_exact(labelmap, encoding):
    np.testing.assert_array_equal(coco_round_trip(labelmap, encoding), without_ignore(labelmap))


def test_coco_document_fields(photo_map, labels):
    document = coco_document([CocoImage(3, "a.jpg", 66, 100, photo_map),
                              CocoImage(4, "b.jpg", 66, 100, photo_map[::-1].copy())], labels, "polygon")
    assert document["images"][1] == {"id": 4, "file_name": "b.jpg", "height": 66, "width": 100}
    assert document["categories"] == [{"id": c.id, "name": c.name, "supercategory": "label"}
                                      for c in labels.classes]
    annotations = document["annotations"]
    assert [a["id"] for a in annotations] == list(range(1, 7))
    first = {a["category_id"]: a for a in annotations if a["image_id"] == 3}
    assert set(first) == {1, 2, 5}
    assert isinstance(first[2]["segmentation"], dict)  # the pot has a hole: RLE
    assert isinstance(first[5]["segmentation"], list)  # pixel and lines: polygons
    ys, xs = np.nonzero(photo_map == 5)
    assert first[5]["area"] == len(xs) and first[5]["iscrowd"] == 0
    assert first[5]["bbox"] == [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)]


@pytest.mark.parametrize("encoding", ["rle", "polygon"])
def test_coco_loads_in_pycocotools(tmp_path, photo_map, labels, encoding):
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco_document([CocoImage(3, "a.jpg", 66, 100, photo_map)], labels, encoding)))
    coco = COCO(str(path))
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[3]))
    assert sorted(a["category_id"] for a in annotations) == [1, 2, 5]
    for annotation in annotations:
        np.testing.assert_array_equal(coco.annToMask(annotation), photo_map == annotation["category_id"])


def test_coco_import_matches_categories_by_name_and_adds_unknown(photo_map):
    document = coco_document([CocoImage(3, "a.jpg", 66, 100, photo_map)], make_labels())
    for category in document["categories"]:
        category["id"] += 10
    for annotation in document["annotations"]:
        annotation["category_id"] += 10
    labels = LabelSet([LabelClass(9, "pot", (0, 0, 255))])
    back = labelmap_from_coco(document, "a.jpg", labels)
    assert [c.name for c in labels.classes] == ["pot", "Festuca rubra", "stone"]
    expected = without_ignore(photo_map)
    for name, old_id in [("pot", 2), ("Festuca rubra", 1), ("stone", 5)]:
        np.testing.assert_array_equal(back == labels.by_name(name).id, expected == old_id)


def test_coco_import_of_uncompressed_rle():
    mask = np.zeros((5, 4), bool)
    mask[1:4, 2] = True
    column_major = mask.T.ravel()
    edges = np.flatnonzero(np.diff(column_major.astype(int))) + 1
    counts = np.diff(np.concatenate([[0], edges, [column_major.size]])).tolist()
    document = {"images": [{"id": 1, "file_name": "x", "height": 5, "width": 4}],
                "categories": [{"id": 1, "name": "moss"}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                                 "segmentation": {"size": [5, 4], "counts": counts}}]}
    labels = LabelSet()
    np.testing.assert_array_equal(labelmap_from_coco(document, 1, labels), mask * labels.by_name("moss").id)


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("images"), "no 'images'"),
    (lambda d: d.pop("categories"), "no 'categories'"),
    (lambda d: d["images"][0].update(id=99), "no image with id 3"),
    (lambda d: d["annotations"][0].update(category_id=77), "unknown category_id 77"),
    (lambda d: d["annotations"][0]["segmentation"].update(size=[10, 10]), "differs from the image"),
    (lambda d: d["annotations"][0]["segmentation"].update(counts="0"), "does not cover"),
    (lambda d: d["annotations"][0]["segmentation"].update(counts="a b"), "invalid character"),
    (lambda d: d["annotations"][0]["segmentation"].update(counts=[1, 2]), "summing to"),
    (lambda d: d["annotations"][0].update(segmentation=[[1, 2, 3, 4]]), "at least 3"),
    (lambda d: d["annotations"][0].update(segmentation="polygon"), "segmentation must be"),
])
def test_malformed_coco_raises_format_error(photo_map, labels, change, message):
    document = coco_document([CocoImage(3, "a.jpg", 66, 100, photo_map)], labels)
    change(document)
    with pytest.raises(FormatError, match=message):
        labelmap_from_coco(document, 3, labels)


# -- GeoJSON ------------------------------------------------------------------------------------------------


def test_geojson_round_trip_of_photo_map_is_exact(photo_map, labels):
    document = json.loads(json.dumps(geojson_document(photo_map, labels, "a.jpg", 66, 100)))
    assert document["type"] == "FeatureCollection" and "crs" not in document
    assert document["protolens"] == {"image": "a.jpg", "height": 66, "width": 100,
                                     "coordinates": "pixel (x, y), origin top-left, y down",
                                     "vertices": "pixel corners"}
    back = labelmap_from_geojson(document, 66, 100, make_labels())
    np.testing.assert_array_equal(back, without_ignore(photo_map))
    assert back[0, 0] == 0 and back[53, 42] == 0
    for class_id in (1, 2, 5):
        features = [f for f in document["features"] if f["properties"]["class_id"] == class_id]
        assert {f["properties"]["class_name"] for f in features} == {labels.name_of(class_id)}
        assert sum(f["properties"]["area_px"] for f in features) == np.count_nonzero(photo_map == class_id)


def test_geojson_rings_are_closed_and_wound(photo_map, labels):
    document = geojson_document(photo_map, labels, "a.jpg", 66, 100)
    holes = 0
    for feature in document["features"]:
        assert feature["geometry"]["type"] == "Polygon"
        exterior, *inner = feature["geometry"]["coordinates"]
        for ring in (exterior, *inner):
            assert len(ring) >= 4 and ring[0] == ring[-1]
        assert ring_area(np.array(exterior)) >= 0
        assert all(ring_area(np.array(ring)) <= 0 for ring in inner)
        holes += len(inner)
    assert holes >= 2


@FUZZ
@given(random_maps())
def test_geojson_round_trip_of_random_maps_is_exact(labelmap):
    height, width = labelmap.shape
    document = geojson_document(labelmap, make_labels(), "r.png", height, width)
    np.testing.assert_array_equal(labelmap_from_geojson(document, height, width, make_labels()),
                                  without_ignore(labelmap))


def test_geojson_import_by_id_multipolygon_and_new_names():
    # Positions are pixel corners: a pixel is painted when its centre lies inside the polygon.
    square = [[1, 1], [3, 1], [3, 3], [1, 3], [1, 1]]
    document = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"class_id": 7},
         "geometry": {"type": "MultiPolygon", "coordinates": [[square], [[[6, 0], [7, 0], [7, 1], [6, 1], [6, 0]]],
                                                              [[[4, 4], [4, 4], [4, 4], [4, 4]]]]}},
        {"type": "Feature", "properties": {"class_name": "lichen"},  # an open ring: closed on import
         "geometry": {"type": "Polygon", "coordinates": [[[2, 2], [3, 2], [3, 3], [2, 3]]]}},
    ]}
    labels = LabelSet()
    labelmap = labelmap_from_geojson(document, 5, 8, labels)
    lichen = labels.by_name("lichen").id
    expected = np.zeros((5, 8), np.uint8)
    expected[1:3, 1:3] = 7
    expected[0, 6] = 7  # the degenerate part at (4, 4) covers no pixel centre
    expected[2, 2] = lichen
    np.testing.assert_array_equal(labelmap, expected)


@pytest.mark.parametrize(("document", "message"), [
    ({"type": "Feature"}, "FeatureCollection"),
    ({"type": "FeatureCollection", "features": [{"properties": {"class_id": 1},
                                                 "geometry": {"type": "Point", "coordinates": [1, 1]}}]}, "'Point'"),
    ({"type": "FeatureCollection", "features": [{"properties": {},
                                                 "geometry": {"type": "Polygon", "coordinates": [[[1, 1]]]}}]},
     "class_name"),
    ({"type": "FeatureCollection", "features": [{"properties": {"class_id": 1},
                                                 "geometry": {"type": "Polygon", "coordinates": [["x"]]}}]},
     "ring must be"),
])
def test_malformed_geojson_raises_format_error(document, message):
    with pytest.raises(FormatError, match=message):
        labelmap_from_geojson(document, 5, 5, LabelSet())


# -- labelme ------------------------------------------------------------------------------------------------


def paint_like_labelme(document: dict, name_to_id: dict[str, int]) -> np.ndarray:
    """labelme's own ``shape_to_mask`` for polygons (PIL, outline included), painted in order."""
    labelmap = np.zeros((document["imageHeight"], document["imageWidth"]), np.uint8)
    for shape in document["shapes"]:
        mask = Image.new("1", (document["imageWidth"], document["imageHeight"]), 0)
        ImageDraw.Draw(mask).polygon([tuple(p) for p in shape["points"]], outline=1, fill=1)
        labelmap[np.asarray(mask)] = name_to_id.get(shape["label"], 0)
    return labelmap


def test_labelme_document_fields_and_round_trip(photo_map, labels):
    document = json.loads(json.dumps(labelme_document(photo_map, labels, "../photos/a.jpg", 66, 100)))
    assert document["version"] == "5.4.1" and document["flags"] == {}
    assert document["imagePath"] == "../photos/a.jpg" and document["imageData"] is None
    assert (document["imageHeight"], document["imageWidth"]) == (66, 100)
    shape = document["shapes"][0]
    assert set(shape) == {"label", "points", "group_id", "description", "shape_type", "flags", "mask"}
    assert all(s["shape_type"] == "polygon" and len(s["points"]) >= 3 for s in document["shapes"])
    labels_in_order = [s["label"] for s in document["shapes"]]
    pot = labels_in_order.index("pot")
    assert labels_in_order[pot + 1] == "_background_"
    back = labelmap_from_labelme(document, make_labels())
    np.testing.assert_array_equal(back, without_ignore(photo_map))
    assert back[0, 0] == 0 and back[53, 42] == 0
    names = {c.name: c.id for c in labels.classes}
    np.testing.assert_array_equal(paint_like_labelme(document, names), without_ignore(photo_map))


def test_labelme_regions_touching_diagonally_need_no_repainting(labels):
    # 4-connected regions: the pot's two halves and its centre pixel, and the four class-1 pixels, are
    # separate regions without holes, so painting them in any order gives the map.
    labelmap = np.array([[0, 2, 2, 2], [0, 2, 1, 2], [0, 1, 2, 1], [0, 2, 1, 2], [0, 2, 2, 2]], np.uint8)
    document = labelme_document(labelmap, labels, "x.png", 5, 4)
    assert sorted(s["label"] for s in document["shapes"]) == ["Festuca rubra"] * 4 + ["pot"] * 3
    assert all(len({tuple(p) for p in s["points"]}) == len(s["points"]) >= 4 for s in document["shapes"])
    np.testing.assert_array_equal(labelmap_from_labelme(document, labels), labelmap)
    np.testing.assert_array_equal(paint_like_labelme(document, {"pot": 2, "Festuca rubra": 1}), labelmap)


@FUZZ
@given(random_maps())
def test_labelme_round_trip_of_random_maps_is_exact(labelmap):
    height, width = labelmap.shape
    document = labelme_document(labelmap, make_labels(), "r.png", height, width)
    np.testing.assert_array_equal(labelmap_from_labelme(document, make_labels()), without_ignore(labelmap))


def test_labelme_import_of_other_shape_types_and_new_labels():
    shapes = [
        {"label": "moss", "shape_type": "rectangle", "points": [[5, 4], [2, 1]]},
        {"label": "lichen", "shape_type": "circle", "points": [[8, 8], [8, 10]]},
        {"label": "moss", "shape_type": "point", "points": [[0, 0]]},
        {"label": "moss", "shape_type": "linestrip", "points": [[0, 9], [3, 9]]},
        {"label": "_background_", "shape_type": None, "points": [[3, 2], [4, 2], [4, 3]]},
    ]
    labels = LabelSet()
    labelmap = labelmap_from_labelme({"shapes": shapes}, labels, height=12, width=12)
    moss, lichen = labels.by_name("moss").id, labels.by_name("lichen").id
    expected = np.zeros((12, 12), np.uint8)
    expected[1:5, 2:6] = moss
    circle = Image.new("1", (12, 12), 0)  # labelme's shape_to_mask: the bounding box of the circle
    ImageDraw.Draw(circle).ellipse([6, 6, 10, 10], outline=1, fill=1)
    expected[np.asarray(circle)] = lichen
    expected[2, 3:5] = expected[3, 4] = 0
    np.testing.assert_array_equal(labelmap, expected)


@pytest.mark.parametrize(("document", "message"), [
    ({"shapes": []}, "imageHeight"),
    ({"imageHeight": 4, "imageWidth": 4}, "no 'shapes'"),
    ({"imageHeight": 4, "imageWidth": 4, "shapes": [{"label": "a", "points": [[1]]}]}, "ring must be"),
    ({"imageHeight": 4, "imageWidth": 4, "shapes": [{"label": "", "points": [[1, 1]]}]}, "non-empty string"),
    ({"imageHeight": 4, "imageWidth": 4, "shapes": [{"label": "a", "shape_type": "mask", "points": [[1, 1]]}]},
     "unsupported shape type 'mask'"),
    ({"imageHeight": 4, "imageWidth": 4, "shapes": [{"label": "a", "shape_type": "circle", "points": [[1, 1]]}]},
     "exactly two points"),
])
def test_malformed_labelme_raises_format_error(document, message):
    with pytest.raises(FormatError, match=message):
        labelmap_from_labelme(document, LabelSet())


# -- cover --------------------------------------------------------------------------------------------------


@FUZZ
@given(random_maps())
def test_cover_rows_sum_to_100_and_count_pixels(labelmap):
    rows = cover_rows("r.png", labelmap, make_labels())
    counts = np.bincount(labelmap.ravel(), minlength=256)
    assert [r["class_id"] for r in rows] == [0, 1, 2, 5]
    assert [r["pixels"] for r in rows] == [int(counts[i]) for i in (0, 1, 2, 5)]
    total = sum(r["cover_percent"] for r in rows)
    assert total == pytest.approx(100.0 if counts[255] < labelmap.size else 0.0, abs=1e-9)
    assert all(r["area_cm2"] is None and r["image"] == "r.png" for r in rows)


def test_cover_areas_csv_and_all_ignore(tmp_path, photo_map, labels):
    rows = cover_rows("a.jpg", photo_map, labels, px_per_cm=4.0)
    stone = next(r for r in rows if r["class_name"] == "stone")
    assert stone["area_cm2"] == pytest.approx(np.count_nonzero(photo_map == 5) / 16.0)
    assert stone["cover_percent"] == pytest.approx(
        100 * np.count_nonzero(photo_map == 5) / np.count_nonzero(photo_map != 255))
    empty = cover_rows("b.jpg", np.full((3, 3), 255, np.uint8), labels)
    write_cover_csv(tmp_path / "cover.csv", rows + empty)
    text = (tmp_path / "cover.csv").read_text(encoding="utf-8")
    assert text.splitlines()[0] == "image,class_id,class_name,pixels,cover_percent,area_cm2"
    read = list(csv.DictReader(text.splitlines()))
    assert len(read) == 8 and read[3]["class_name"] == "stone"
    assert read[3]["cover_percent"] == f"{stone['cover_percent']:.4f}"
    assert float(read[3]["area_cm2"]) == pytest.approx(stone["area_cm2"], abs=1e-6)
    assert all(r["cover_percent"] == "0.0000" and r["area_cm2"] == "" for r in read[4:])


def test_outline_rings_are_in_the_corner_frame():
    mask = np.zeros((4, 5), bool)
    mask[1, 2] = True
    (ring,) = outline_rings(mask)
    assert ring.min(axis=0).tolist() == [2, 1] and ring.max(axis=0).tolist() == [3, 2]
