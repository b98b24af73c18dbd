"""Project classes and the stored, recoverable annotation of a photo."""

from __future__ import annotations

import json

import numpy as np
import pytest

from protolens.core.annotation import Annotation, discard_annotation, load_annotation, save_annotation
from protolens.core.errors import ImageReadError, SidecarError
from protolens.core.labels import LabelError, LabelSet, Project, load_project, save_project
from protolens.core.store import ImageMeta, ResultRecord, ResultStore


def test_label_set_rules():
    labels = LabelSet.default()
    poa = labels.add("Poa annua")
    assert poa.id == 2 and labels.by_name("Poa annua") is poa and labels.ensure("Poa annua") is poa
    with pytest.raises(LabelError):
        labels.add("Poa annua")
    with pytest.raises(LabelError):
        labels.add("x", class_id=255)
    labels.replace(2, name="Poa pratensis", color=(1, 2, 3))
    assert labels.by_id(2).name == "Poa pratensis" and tuple(labels.palette()[2]) == (1, 2, 3)
    assert tuple(labels.palette()[0]) == (0, 0, 0) and tuple(labels.palette()[255]) == (255, 255, 255)
    assert [labels.name_of(i) for i in (0, 255, 99)] == ["background", "ignore", "class 99"]
    assert LabelSet.from_json(labels.to_json()) == labels


def test_project_round_trip_and_corrupt_file(tmp_path):
    project = Project(LabelSet.default(), px_per_cm=12.5)
    project.labels.add("moss")
    path = save_project(tmp_path, project)
    assert load_project(tmp_path) == project
    assert load_project(tmp_path / "elsewhere").labels.classes[0].name == "plant"
    path.write_text("{not json")
    with pytest.raises(LabelError, match="corrupt"):
        load_project(tmp_path)
    assert path.read_text() == "{not json"  # left for the user to fix


@pytest.fixture
def meta(tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"x")
    return ImageMeta(photo, "a" * 64, 30, 40)


def test_annotation_save_load_with_provenance(meta):
    store = ResultStore()
    record = ResultRecord("vegetation-index", "1.0.0", {"index": "exg"}, 0.4)
    mask = np.zeros((30, 40), bool)
    mask[5:10, 5:20] = True
    annotation = Annotation.from_mask(mask, 3, record)
    annotation.labels[0, 0] = 255
    annotation.touched()
    save_annotation(store, meta, annotation, state="autosave")
    loaded = load_annotation(store, meta)
    np.testing.assert_array_equal(loaded.labels, annotation.labels)
    assert loaded.state == "autosave" and loaded.strokes == 1 and loaded.edited
    assert loaded.source["kind"] == "threshold" and loaded.source["result"]["backend"]["id"] == "vegetation-index"
    sidecar = json.loads(store.sidecar_path(meta.path).read_text())
    assert sidecar["annotation"]["edited"]["strokes"] == 1 and sidecar["annotation"]["file"] == "photo.jpg.labels.png"
    save_annotation(store, meta, loaded, state="saved")
    assert load_annotation(store, meta).state == "saved"
    other = ImageMeta(meta.path, "b" * 64, 30, 40)
    assert load_annotation(store, other) is None  # the photo changed since: stale
    discard_annotation(store, meta)
    assert load_annotation(store, meta) is None


def test_results_and_annotation_share_the_sidecar(meta):
    from protolens.core.types import Heatmap

    store = ResultStore()
    save_annotation(store, meta, Annotation.empty(30, 40))
    store.save_result(meta, ResultRecord("b", "1", {}, 0.5), Heatmap(np.zeros((3, 4)), (30, 40)))
    assert load_annotation(store, meta) is not None and store.load_result(meta.path) is not None


def test_corrupt_sidecar_and_wrong_sized_label_map(meta):
    store = ResultStore()
    save_annotation(store, meta, Annotation.empty(30, 40))
    path = store.sidecar_path(meta.path)
    labels_png = path.parent / "photo.jpg.labels.png"
    import cv2

    cv2.imwrite(str(labels_png), np.zeros((5, 5), np.uint8))
    with pytest.raises(ImageReadError, match="label map"):
        load_annotation(store, meta)
    path.write_text("garbage")
    with pytest.raises(SidecarError, match="kept as"):
        load_annotation(store, meta)
    assert not path.exists() and list(path.parent.glob("photo.jpg.json.corrupt-*"))
