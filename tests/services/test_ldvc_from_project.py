"""Issue 13's workflow: a folder of masks corrected in protolens -> `train ldvc` -> a checkpoint whose label maps
open in the mask editor with the project's class ids (the "Use as mask" mapping, by class name)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from protolens.core.annotation import Annotation, save_annotation
from protolens.core.labels import LabelClass, LabelSet, Project, save_project
from protolens.core.runs import RunFolder
from protolens.core.store import ResultStore
from protolens.models.registry import Registry
from protolens.services.annotations import photo_meta
from protolens.services.segment import Segmenter, drain, load_image

ROOT = Path(__file__).resolve().parents[2]
COLOURS = {3: (40, 170, 60), 7: (150, 100, 60)}  # project ids 3 "moss", 7 "bare soil" (not consecutive)


@pytest.fixture
def corrected_folder(tmp_path, monkeypatch):
    """Five 32x32 photos whose masks were corrected in protolens (edited annotations in the result store)."""
    monkeypatch.setenv("PROTOLENS_STORE", str(tmp_path / "store"))
    folder = tmp_path / "photos"
    folder.mkdir()
    store = ResultStore.from_environment()
    project = Project(LabelSet([LabelClass(3, "moss", (0, 200, 0)), LabelClass(7, "bare soil", (120, 80, 40))]))
    save_project(store.project_folder(folder), project)
    for i in range(5):
        image = np.full((32, 32, 3), 110, np.uint8)
        labels = np.zeros((32, 32), np.uint8)
        for k, cls in enumerate((3, 7)):
            rows = slice(0, 16) if (i + k) % 2 == 0 else slice(16, 32)
            image[rows, :] = COLOURS[cls]
            labels[rows, :] = cls
        path = folder / f"quadrat{i}.png"
        Image.fromarray(image).save(path)
        save_annotation(store, photo_meta(path), Annotation(labels, {"kind": "empty"}, strokes=2))
    return folder, store, project


def test_corrected_masks_train_a_checkpoint_whose_label_maps_open_in_the_editor(corrected_folder, tmp_path,
                                                                                 monkeypatch):
    from protolens.models.clip import loading
    from protolens.models.ldvc.model import save_tiny_clip, tiny_clip
    from protolens.services.ldvc_training import train_ldvc

    folder, store, project = corrected_folder
    weights = save_tiny_clip(tmp_path / "clip", 7)
    monkeypatch.setattr(loading, "create_clip", lambda name="ViT-B-16", **_: tiny_clip(7))
    out = tmp_path / "run"
    summary = drain(train_ldvc(Segmenter(disk_cache=None, device="cpu"), folder, seen="moss,bare soil", epochs=1,
                               out=out, input_size=32, weights_path=weights, val_fraction=0.2, store=store,
                               arch={"dim": 16, "layers": 1, "heads": 2, "windows": 2, "top_k": 2},
                               accumulation=2))
    run = RunFolder(out)
    config = run.config()
    assert config["model"] == "ldvc" and {"moss", "bare soil"} <= set(config["classes"])
    record = run.epoch(1)
    assert {"miou", "hiou", "pixel_accuracy"} <= set(record.indicators)
    assert summary is not None

    segmenter = Segmenter(Registry.discover([ROOT / "plugins"], entry_points=False), disk_cache=None, device="cpu")
    outcome = drain(segmenter.run(load_image(folder / "quadrat0.png"), "ldvc", {"max_side": 32},
                                  weights_path=out))
    label_map = outcome.result.label_map
    assert label_map.classes[0] == "background" and {"moss", "bare soil"} <= set(label_map.classes)
    # "Use as mask": the label map's classes are matched to the project's by name (EditSession.start)
    labels = LabelSet.from_json(project.labels.to_json())
    ids = labels.ids_from(label_map)
    assert ids.shape == (32, 32) and ids.dtype == np.uint8
    names = {c.id: c.name for c in labels.classes}
    for index, name in enumerate(label_map.classes):
        cells = label_map.full_resolution() == index
        if cells.any() and index:
            assert set(np.unique(ids[cells])) == {next(i for i, n in names.items() if n == name)}
    assert set(np.unique(ids)) <= {0, 3, 7, *[c.id for c in labels.classes]}
    assert names[3] == "moss" and names[7] == "bare soil"  # the project's own ids are kept
