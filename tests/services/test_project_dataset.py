"""A protolens photo folder's corrected masks as training data (project classes, bad files skipped)."""

from __future__ import annotations

import shutil

import numpy as np

from protolens.core.annotation import Annotation, save_annotation
from protolens.core.labels import Project, save_project
from protolens.core.store import ResultStore
from protolens.services.annotations import photo_meta
from protolens.services.segdata import load_dataset, project_classes, project_dataset


def _edit(store, path, value):
    meta = photo_meta(path)
    labels = np.zeros((meta.height, meta.width), np.uint8)
    labels[10:60, 20:90] = value
    labels[0:3, 0:3] = 255
    save_annotation(store, meta, Annotation(labels, {"kind": "empty"}, strokes=3))
    return labels


def test_edited_masks_become_samples_with_the_project_classes(photo_folder):
    store = ResultStore()
    shutil.copy(photo_folder / "a_meadow.jpg", photo_folder / "d_copy.jpg")
    project = Project()  # "plant" is id 1
    project.labels.add("Trifolium repens", class_id=3)
    save_project(store.project_folder(photo_folder), project)
    expected = _edit(store, photo_folder / "a_meadow.jpg", 3)
    _edit(store, photo_folder / "d_copy.jpg", 1)
    corrupt = store.sidecar_path(photo_folder / "d_copy.jpg").parent / "d_copy.jpg.labels.png"
    corrupt.write_bytes(b"not a png")

    data = project_dataset(photo_folder, store)

    assert data.classes == ["background", "plant", "unused-2", "Trifolium repens"]
    assert [s.name for s in data.samples] == ["a_meadow.jpg"]
    assert data.unlabelled == ["b_dahlia.jpg"]
    reasons = dict(data.skipped)
    assert set(reasons) == {"c_broken.jpg", "d_copy.jpg"}
    assert "d_copy.jpg.labels.png" in reasons["d_copy.jpg"]
    image, labels = data.load(0)
    assert image.shape[:2] == labels.shape
    np.testing.assert_array_equal(labels, expected)


def test_ids_beyond_the_project_are_named_and_load_dataset_picks_the_reader(photo_folder, tmp_path):
    store = ResultStore()
    _edit(store, photo_folder / "b_dahlia.jpg", 5)  # no project.json: the default project has "plant" only
    data = load_dataset(photo_folder, store)
    assert data.classes == ["background", "plant", "unused-2", "unused-3", "unused-4", "unused-5"]
    assert [s.name for s in data.samples] == ["b_dahlia.jpg"] and data.root == photo_folder
    assert project_classes({2: "moss"}) == ["background", "unused-1", "moss"]
    (tmp_path / "voc" / "JPEGImages").mkdir(parents=True)
    voc = load_dataset(tmp_path / "voc")
    assert voc.samples == [] and voc.classes[1] == "aeroplane"
