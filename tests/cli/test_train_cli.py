"""``protolens train prototype-vit``: a tiny run, then the same command resumes it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from protolens.core.runs import RunFolder
from tests.cli.conftest import run_cli

BACKBONE = "vit_small_patch14_dinov2.lvd142m"


@pytest.fixture
def inputs(tmp_path, samples, monkeypatch):
    from safetensors.numpy import save_file

    monkeypatch.setenv("PROTOLENS_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "quadrats"
    folder.mkdir()
    for name in ("forget_me_not.jpg", "moss_carpet.jpg"):
        shutil.copy(samples / "quadrats" / name, folder / name)
    prototypes = tmp_path / "prototypes.safetensors"
    save_file({"prototypes": np.random.default_rng(0).normal(size=(3, 384)).astype(np.float32)}, str(prototypes))
    return folder, prototypes


def command(folder, prototypes, out, epochs):
    return ["train", "prototype-vit", "--quadrats", folder, "--prototypes", prototypes, "--epochs", epochs,
            "--out", out, "--photo-size", "256x128", "--crop", "32", "--crop-input", "28", "--backbone", BACKBONE,
            "--depth", "1", "--heads", "2", "--accumulation", "2", "--lr", "1e-3", "--probe", "2",
            "--allow-random-weights", "--device", "cpu"]


def test_train_then_rerun_resumes(monkeypatch, capsys, inputs, tmp_path):
    folder, prototypes = inputs
    out = tmp_path / "run"
    code, stdout, stderr = run_cli(monkeypatch, capsys, *command(folder, prototypes, out, 2))
    assert code == 0, stderr
    assert "trained epochs 1-2; epoch 2/2, 2 optimizer updates" in stdout and str(out / "epoch_002.safetensors") in stdout
    assert "epoch 1: loss " in stderr and "IoU prev n/a" in stderr and "epoch 2: loss " in stderr
    assert "resuming" not in stderr
    run = RunFolder(out)
    assert [(r.epoch, r.steps) for r in run.epochs()] == [(1, 1), (2, 2)]
    assert json.loads((out / "config.json").read_text())["tiling"]["grid"] == [4, 8]

    code, stdout, stderr = run_cli(monkeypatch, capsys, *command(folder, prototypes, out, 3))
    assert code == 0, stderr
    assert f"resuming {out} after epoch 2 (2 optimizer updates)" in stderr
    assert "epoch 3: loss " in stderr and "epoch 1: loss" not in stderr and "epoch 2: loss" not in stderr
    assert "trained epoch 3; epoch 3/3, 3 optimizer updates" in stdout
    assert [(r.epoch, r.steps) for r in run.epochs()] == [(1, 1), (2, 2), (3, 3)]

    code, stdout, _ = run_cli(monkeypatch, capsys, *command(folder, prototypes, out, 3))
    assert code == 0 and "nothing to train; epoch 3/3" in stdout


def test_errors_are_one_line(monkeypatch, capsys, inputs, tmp_path):
    folder, prototypes = inputs
    args = command(folder, prototypes, tmp_path / "run", 1)
    bad_size = [*args[:args.index("256x128")], "256x100", *args[args.index("256x128") + 1:]]
    code, _, stderr = run_cli(monkeypatch, capsys, *bad_size)
    assert code == 1 and "error: photo size 256x100 is not a multiple of the crop size 32" in stderr
    code, _, stderr = run_cli(monkeypatch, capsys, *args, "--precision", "float16")
    assert code == 1 and "error: precision must be one of auto, float32, bfloat16" in stderr
    assert not (tmp_path / "run").exists()
