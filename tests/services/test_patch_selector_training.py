"""``protolens train patch-selector``: 2 epochs end to end on real photos with a random ViT-S/16 at 64 px."""

from __future__ import annotations

import json

import numpy as np
import pytest

from protolens.core.runs import RunFolder
from protolens.services.patch_selector_training import split_holdout
from tests.cli.conftest import run_cli


@pytest.fixture
def photos(tmp_path, samples, monkeypatch):
    import cv2

    monkeypatch.setenv("PROTOLENS_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("forget_me_not.jpg", "moss_carpet.jpg", "forest_floor.jpg"):  # small copies: fast decoding
        image = cv2.imread(str(samples / "quadrats" / name))
        cv2.imwrite(str(folder / name), cv2.resize(image, (128, 96), interpolation=cv2.INTER_AREA))
    (folder / "broken.jpg").write_bytes(b"not a photo")
    return folder


def test_split_holdout():
    assert split_holdout(1, 0.2, 0) == ([0], [])
    train, held = split_holdout(10, 0.2, 3)
    assert len(held) == 2 and sorted(train + held) == list(range(10))
    assert split_holdout(10, 0.2, 3) == (train, held)


def test_train_cli_two_epochs_then_resume(monkeypatch, capsys, photos, tmp_path):
    out = tmp_path / "run"
    args = ["train", "patch-selector", "--images", photos, "--epochs", 2, "--out", out, "--input", 64,
            "--keep", 3, "--accumulation", 1, "--val-fraction", 0.34, "--allow-random-weights", "--device", "cpu"]
    code, stdout, stderr = run_cli(monkeypatch, capsys, *args)
    assert code == 0, stderr
    assert "epoch 1: loss " in stdout and "epoch 2: loss " in stdout and "agreement IoU" in stdout
    assert "broken.jpg" in stderr  # skipped by name, never fatal
    run = RunFolder(out)
    assert [r.epoch for r in run.epochs()] == [1, 2]
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "patch-selector" and config["keep"] == 3 and config["super_grid"] == [2, 2]
    assert config["selector"] == {"in_dim": 4 * 384, "hidden": 512} and len(config["validation"]) == 1
    iou = run.epoch(2).indicators["agreement_iou"]
    assert 0.0 <= iou <= 1.0 and np.isfinite(run.epoch(2).indicators["loss"])
    # 2 training photos, accumulation 1: 2 updates per epoch
    assert run.epoch(2).steps == 4
    code, stdout, stderr = run_cli(monkeypatch, capsys, *[a if a != 2 else 3 for a in args])
    assert code == 0, stderr
    assert "resuming" in stderr and "epoch 3: loss " in stdout and "epoch 1: loss" not in stdout
