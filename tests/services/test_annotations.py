"""Exported masks come back unchanged through the editor's import, in every format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from protolens.core.annotation import Annotation, save_annotation
from protolens.core.formats import FormatError
from protolens.core.labels import Project
from protolens.core.store import ResultStore
from protolens.services.annotations import export_masks, import_labelmap, photo_meta


@pytest.fixture
def edited(photo_folder):
    """a_meadow.jpg with an edited two-class mask (a hole, an island, ignore pixels) in the store."""
    path = photo_folder / "a_meadow.jpg"
    meta = photo_meta(path)
    labels = np.zeros((meta.height, meta.width), np.uint8)
    labels[100:600, 100:700] = 1
    labels[250:400, 250:450] = 0
    labels[300:350, 300:350] = 2
    labels[800:900, 900:1200] = 2
    labels[0:5, 0:5] = 255
    project = Project()
    project.labels.add("Trifolium repens")
    save_annotation(ResultStore(), meta, Annotation(labels, {"kind": "empty"}))
    return meta, labels, project


@pytest.mark.parametrize(("fmt", "file"), [("png", "a_meadow.labels.png"), ("coco", "annotations.coco.json"),
                                           ("geojson", "a_meadow.geojson"), ("labelme", "a_meadow.json")])
def test_export_then_import_gives_the_same_label_map(edited, tmp_path, fmt, file):
    meta, labels, project = edited
    summary = export_masks([meta.path], [fmt], tmp_path, store=ResultStore(), project=project)
    assert summary.exported == 1
    imported, source = import_labelmap(tmp_path / file, meta, project.labels)
    expected = labels.copy()
    if fmt != "png":
        expected[expected == 255] = 0  # ignore is not a region in COCO, GeoJSON or labelme
    np.testing.assert_array_equal(imported, expected)
    assert source["kind"] == "import" and source["format"] == fmt
    provenance = json.loads((tmp_path / "provenance.json").read_text())
    assert provenance["photos"]["a_meadow.jpg"]["mask"] == "edited"


def test_import_rejects_a_mask_of_another_size_and_unknown_documents(edited, tmp_path):
    meta, _, project = edited
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"version": "5.4.1", "shapes": [], "imageHeight": 10, "imageWidth": 10}))
    with pytest.raises(FormatError):
        import_labelmap(other, meta, project.labels)
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(FormatError, match="not a COCO"):
        import_labelmap(tmp_path / "x.json", meta, project.labels)


def test_unknown_format_is_refused(edited, tmp_path):
    meta, _, project = edited
    with pytest.raises(FormatError, match="unknown format"):
        export_masks([meta.path], ["tiff"], tmp_path, store=ResultStore(), project=project)


def test_coco_polygon_export_says_which_annotations_had_to_be_rle(edited, tmp_path):
    meta, labels, project = edited
    summary = export_masks([meta.path], ["coco"], tmp_path, store=ResultStore(), project=project,
                           coco_encoding="polygon")
    document = json.loads((tmp_path / "annotations.coco.json").read_text())
    kinds = {a["category_id"]: type(a["segmentation"]).__name__ for a in document["annotations"]}
    assert kinds == {1: "dict", 2: "list"}  # class 1 encloses a hole, class 2 does not
    assert "1 of 2 COCO annotations written as RLE" in summary.line
    imported, _ = import_labelmap(tmp_path / "annotations.coco.json", meta, project.labels)
    expected = labels.copy()
    expected[expected == 255] = 0
    np.testing.assert_array_equal(imported, expected)
    rle_only = export_masks([meta.path], ["coco"], tmp_path / "rle", store=ResultStore(), project=project)
    assert rle_only.notes == []
