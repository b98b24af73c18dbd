"""LDVC training (services.ldvc_training): a tiny run end to end on a synthetic VOC folder, resume, metrics.

The CLIP is a tiny random open_clip model (models.ldvc.tiny_clip: 8-px patches, D = 16) saved as a weights file;
``create_clip`` is patched to build that architecture for the name ViT-B-16 (the loader's cache key is the
file's sha256, so no other test sees it). Photos are 32 x 32 with coloured squares: 4 x 4 logits per photo.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from protolens.core.errors import CheckpointError, ParamError
from protolens.core.runs import RunFolder
from protolens.services.segment import Segmenter, drain

CLASSES = ["background", "red", "green", "blue"]
COLOURS = {1: (220, 30, 30), 2: (30, 200, 40), 3: (40, 50, 230)}
ARCH = {"dim": 16, "layers": 1, "heads": 2, "windows": 2, "top_k": 2}


def make_voc(root, *, n=6, bad=True):
    """A VOC folder: n photos 32x32 (grey background, one or two coloured 16x16 squares), grey label PNGs,
    class_names.txt, train/val lists; with ``bad``, a mask of the wrong size ("bad_size") and a photo without
    a mask ("no_mask") in the train list."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "class_names.txt").write_text("\n".join(CLASSES) + "\n")
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        image = np.full((32, 32, 3), 120, np.uint8) + rng.integers(0, 8, (32, 32, 3), dtype=np.uint8)
        mask = np.zeros((32, 32), np.uint8)
        for k, cls in enumerate(((i % 3) + 1, ((i + 1) % 3) + 1)[: 1 + i % 2]):
            y, x = (0, 0) if k == 0 else (16, 16)
            image[y:y + 16, x:x + 16] = COLOURS[cls]
            mask[y:y + 16, x:x + 16] = cls
        mask[15:17, :] = 255
        name = f"img{i}"
        Image.fromarray(image).save(root / "JPEGImages" / f"{name}.png")
        Image.fromarray(mask).save(root / "SegmentationClass" / f"{name}.png")
        names.append(name)
    train, val = names[:-2], names[-2:]
    if bad:
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "JPEGImages" / "bad_size.png")
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "SegmentationClass" / "bad_size.png")
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "JPEGImages" / "no_mask.png")
        train += ["bad_size", "no_mask"]
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(train) + "\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(val) + "\n")
    return root


@pytest.fixture
def tiny_clip_file(tmp_path, monkeypatch):
    """A weights file of the tiny CLIP, and the loader patched to build that architecture for any name."""
    from protolens.models.clip import loading
    from protolens.models.ldvc.model import save_tiny_clip, tiny_clip

    path = save_tiny_clip(tmp_path / "tiny_clip", 3)
    monkeypatch.setattr(loading, "create_clip", lambda name="ViT-B-16", **_: tiny_clip(3))
    return path


def train(data, out, weights, epochs, **kwargs):
    from protolens.services.ldvc_training import train_ldvc

    settings = {"seen": "red,green", "unseen": "blue", "input_size": 32, "weights_path": weights, "arch": ARCH,
                "accumulation": 2, "lr": 1e-3, **kwargs}
    return drain(train_ldvc(Segmenter(disk_cache=None, device="cpu"), data, epochs=epochs, out=out, **settings))


def test_class_split_trains_seen_and_ignores_unseen():
    from protolens.services.ldvc_training import class_split

    split = class_split(CLASSES, "green, red", "blue")
    assert split.train_ids == [0, 1, 2] and split.run_ids == [0, 1, 2, 3]
    assert split.run_classes == CLASSES
    mask = np.array([[0, 1, 2, 3, 255]], np.uint8)
    assert split.lookup(split.train_ids)[mask].tolist() == [[0, 1, 2, 255, 255]]  # unseen -> ignore
    assert split.lookup(split.run_ids)[mask].tolist() == [[0, 1, 2, 3, 255]]
    assert class_split(CLASSES, "red", None).unseen == [2, 3]  # default: every other class
    with pytest.raises(ParamError, match="unknown classes 'violet'"):
        class_split(CLASSES, "red,violet", None)
    with pytest.raises(ParamError, match="both seen and unseen: red"):
        class_split(CLASSES, "red", "red")
    with pytest.raises(ParamError, match="at least one class"):
        class_split(CLASSES, "background", None)


class _FixedLogits:
    """A stand-in model whose logits are a given (n, 4, 4) array for every photo."""

    def __init__(self, logits):
        import torch

        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.logits = torch.from_numpy(logits)

    def parameters(self):
        return iter([self.weight])

    def __call__(self, images, texts):
        return self.logits.unsqueeze(0)


def test_validation_metrics_against_numpy():
    """Logits upsampled to the mask's size, argmax, confusion over run classes, seen/unseen channels."""
    import torch

    from protolens.services.ldvc_training import ValidationMetrics, class_split

    split = class_split(CLASSES, "red,green", "blue")
    logits = np.zeros((4, 4, 4), np.float32)
    logits[0, :2] = 5  # top half background
    logits[3, 2:] = 5  # bottom half blue
    truth = np.zeros((8, 8), np.uint8)
    truth[4:, :4] = 3
    truth[4:, 4:] = 1
    truth[0, 0] = 255
    metric = ValidationMetrics([torch.zeros(3, 32, 32)], [truth], np.zeros((4, 16), np.float32), split)
    got = metric(_FixedLogits(logits), 1)
    # background: 31 right of 31 truth pixels, predicted 31 -> IoU 1; blue: TP 16, FP 16 -> 0.5; red: 0 of 16
    assert got["miou"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert got["miou_seen"] == pytest.approx(0.0)  # red only (green absent: NaN, left out)
    assert got["miou_unseen"] == pytest.approx(0.5)
    assert got["hiou"] == pytest.approx(0.0)
    assert got["pixel_accuracy"] == pytest.approx((31 + 16) / 63)


def test_tiny_run_end_to_end_and_resume(tmp_path, tiny_clip_file):
    data = make_voc(tmp_path / "voc")
    out = tmp_path / "run"
    summary = train(data, out, tiny_clip_file, 2)
    assert summary.trained == (1, 2) and summary.epoch == 2 and summary.steps == 4  # 4 photos, accumulation 2
    assert {name for name, _ in summary.skipped} == {"bad_size", "no_mask"}
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "ldvc" and config["classes"] == CLASSES
    assert config["seen"] == ["red", "green"] and config["unseen"] == ["blue"]
    assert config["input_size"] == 32 and config["clip"]["model"] == "ViT-B-16"
    assert config["clip"]["weights_sha256"] != "random" and config["ldvc"]["windows"] == 2
    assert config["data"]["split"] == "ImageSets" and config["data"]["val"] == ["img4", "img5"]
    assert config["data"]["train"] == ["img0", "img1", "img2", "img3"]
    for record in RunFolder(out).epochs():
        indicators = json.loads((out / f"epoch_{record.epoch:03d}.json").read_text())["indicators"]
        assert set(indicators) == {"loss", "miou", "miou_seen", "miou_unseen", "hiou", "pixel_accuracy"}
        assert 0.0 <= indicators["pixel_accuracy"] <= 1.0 and 0.0 <= indicators["miou"] <= 1.0

    resumed = train(data, out, tiny_clip_file, 3)
    assert resumed.resumed_from == 2 and resumed.trained == (3,) and resumed.steps == 6
    assert [r.epoch for r in RunFolder(out).epochs()] == [1, 2, 3]


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, tiny_clip_file):
    """A 2-epoch run grown to 3 stretches its cosine schedule; so the run is cut back to epoch 1 instead (as an
    interrupted 2-epoch run is) and resumed: the weights equal those of the uninterrupted run."""
    import shutil

    from safetensors.numpy import load_file

    data = make_voc(tmp_path / "voc", bad=False)
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    train(data, straight, tiny_clip_file, 2)
    shutil.copytree(straight, cut)
    for path in cut.glob("epoch_002*"):
        path.unlink()
    resumed = train(data, cut, tiny_clip_file, 2)
    assert resumed.resumed_from == 1 and resumed.trained == (2,)
    a, b = load_file(str(cut / "epoch_002.safetensors")), load_file(str(straight / "epoch_002.safetensors"))
    assert set(a) == set(b) and not any(k.startswith("clip.") for k in a)  # the frozen CLIP is not saved
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert RunFolder(cut).epoch(2).indicators == pytest.approx(RunFolder(straight).epoch(2).indicators, nan_ok=True)


def test_other_settings_are_refused(tmp_path, tiny_clip_file):
    data = make_voc(tmp_path / "voc", bad=False)
    out = tmp_path / "run"
    train(data, out, tiny_clip_file, 1)
    with pytest.raises(CheckpointError, match="seen"):
        train(data, out, tiny_clip_file, 2, seen="red", unseen="green,blue")
    with pytest.raises(ParamError, match="patch size"):
        train(data, tmp_path / "other", tiny_clip_file, 1, input_size=36)


def test_holdout_without_imagesets(tmp_path, tiny_clip_file):
    data = make_voc(tmp_path / "voc", bad=False)
    for name in ("train", "val"):
        (data / "ImageSets" / "Segmentation" / f"{name}.txt").unlink()
    summary = train(data, tmp_path / "run", tiny_clip_file, 1, val_fraction=0.34, seen="red,green,blue",
                    unseen="")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"]["split"] == "fraction" and len(config["data"]["val"]) == 2
    assert config["unseen"] == [] and summary.indicators["miou_unseen"] != summary.indicators["miou_unseen"]
