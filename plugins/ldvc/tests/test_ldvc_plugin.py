"""The ldvc backend on a checkpoint of a tiny LDVC run: a label map with the run's classes, per-class maps.

The run is trained here (1 epoch, tiny random open_clip CLIP saved as a weights file, ``create_clip`` patched to
build it) on a synthetic VOC folder of 32 x 32 photos, then the backend runs through the Segmenter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from protolens.core.errors import CheckpointError, WeightsNotFoundError
from protolens.models.registry import Registry
from protolens.services.segment import Segmenter, drain, load_image

ROOT = Path(__file__).resolve().parents[3]
CLASSES = ["background", "red", "green", "blue"]


def _voc(root: Path) -> Path:
    """4 photos 32x32: a red, green or blue 16x16 square on grey; grey label PNGs; class_names.txt."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "class_names.txt").write_text("\n".join(CLASSES) + "\n")
    colours = [(220, 30, 30), (30, 200, 40), (40, 50, 230)]
    for i in range(4):
        image = np.full((32, 32, 3), 120, np.uint8)
        mask = np.zeros((32, 32), np.uint8)
        image[8:24, 8:24] = colours[i % 3]
        mask[8:24, 8:24] = i % 3 + 1
        Image.fromarray(image).save(root / "JPEGImages" / f"p{i}.png")
        Image.fromarray(mask).save(root / "SegmentationClass" / f"p{i}.png")
    return root


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    from protolens.models.clip import loading
    from protolens.models.ldvc.model import save_tiny_clip, tiny_clip
    from protolens.services.ldvc_training import train_ldvc

    weights = save_tiny_clip(tmp_path / "clip", 5)
    monkeypatch.setattr(loading, "create_clip", lambda name="ViT-B-16", **_: tiny_clip(5))
    out = tmp_path / "run"
    drain(train_ldvc(Segmenter(disk_cache=None, device="cpu"), _voc(tmp_path / "voc"), seen="red,green",
                     unseen="blue", epochs=1, out=out, input_size=32, weights_path=weights, val_fraction=0.25,
                     arch={"dim": 16, "layers": 1, "heads": 2, "windows": 2, "top_k": 2}, accumulation=2))
    return out


def _segmenter():
    return Segmenter(Registry.discover([ROOT / "plugins"], entry_points=False), disk_cache=None, device="cpu")


def test_checkpoint_gives_label_map_with_the_runs_classes(run_dir, tmp_path):
    photo = tmp_path / "photo.png"
    image = np.full((40, 64, 3), 120, np.uint8)
    image[5:30, 10:40] = (220, 30, 30)
    Image.fromarray(image).save(photo)
    segmenter = _segmenter()
    outcome = drain(segmenter.run(load_image(photo), "ldvc", {"max_side": 32},
                                  weights_path=run_dir / "epoch_001.safetensors"))
    result = outcome.result
    assert result.label_map.classes == CLASSES
    assert result.label_map.ids.shape == (20, 32) and result.label_map.image_size == (40, 64)
    assert set(np.unique(result.label_map.ids)) <= {0, 1, 2, 3}
    assert list(result.heatmaps) == ["red", "green", "blue"]
    probs = np.stack([result.heatmaps[c].values for c in CLASSES[1:]])
    assert probs.min() >= 0 and probs.max() <= 1
    np.testing.assert_allclose(result.heatmap.values, probs.max(axis=0), atol=1e-6)
    assert result.info["epoch"] == 1 and result.info["classes"] == CLASSES and result.info["unseen"] == ["blue"]
    # the run folder resolves to its last epoch and gives the same maps
    folder = drain(segmenter.run(load_image(photo), "ldvc", {"max_side": 32}, weights_path=run_dir)).result
    np.testing.assert_array_equal(folder.label_map.ids, result.label_map.ids)


def test_class_maps_argmax_and_sigmoid():
    import sys

    backend = sys.modules[type(_segmenter().registry.create("ldvc")).__module__]
    logits = np.zeros((3, 2, 2), np.float32)
    logits[1, 0, 0] = 4.0
    logits[2, 1, 1] = 2.0
    probs, labels = backend.class_maps(logits, (2, 2))
    assert labels.tolist() == [[1, 0], [0, 2]]
    np.testing.assert_allclose(probs[1, 0, 0], 1 / (1 + np.exp(-4.0)), rtol=1e-6)
    assert backend.map_size((1000, 2000), 512) == (256, 512) and backend.map_size((10, 20), 512) == (10, 20)


def test_missing_or_foreign_weights_are_typed_errors(run_dir, tmp_path):
    segmenter = _segmenter()
    photo = tmp_path / "p.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(photo)
    with pytest.raises(WeightsNotFoundError, match="protolens train ldvc"):
        drain(segmenter.run(load_image(photo), "ldvc", {}))
    with pytest.raises(CheckpointError, match="run config file is missing"):
        drain(segmenter.run(load_image(photo), "ldvc", {}, weights_path=tmp_path))
