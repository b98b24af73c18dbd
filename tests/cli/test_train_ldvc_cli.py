"""``protolens train ldvc``: a tiny run on a synthetic VOC folder, its lines, then the same command resumes it."""

from __future__ import annotations

import json

from protolens.core.runs import RunFolder
from tests.cli.conftest import run_cli
from tests.services.test_ldvc_training import make_voc, tiny_clip_file  # noqa: F401 - fixture


def command(data, out, weights, epochs, *extra):
    return ["train", "ldvc", "--data", data, "--seen", "red,green", "--unseen", "blue", "--epochs", epochs,
            "--out", out, "--input", "32", "--weights", weights, "--decoder-dim", "16", "--layers", "1",
            "--heads", "2", "--windows", "2", "--top-k", "2", "--accumulation", "2", "--lr", "1e-3",
            "--device", "cpu", *extra]


def test_train_prints_epochs_skips_and_resumes(monkeypatch, capsys, tmp_path, tiny_clip_file):  # noqa: F811
    data, out = make_voc(tmp_path / "voc"), tmp_path / "run"
    code, stdout, stderr = run_cli(monkeypatch, capsys, *command(data, out, tiny_clip_file, 2))
    assert code == 0, stderr
    assert "protolens train ldvc: trained epochs 1-2; epoch 2/2, 4 optimizer updates, loss " in stdout
    assert ", mIoU " in stdout and ", hIoU " in stdout and str(out / "epoch_002.safetensors") in stdout
    assert "epoch 1: loss " in stderr and "pixel acc " in stderr and "epoch 2: loss " in stderr
    assert "skipped: bad_size: mask is 16x16 pixels" in stderr and "skipped: no_mask: mask missing" in stderr
    assert json.loads((out / "config.json").read_text())["model"] == "ldvc"

    code, stdout, stderr = run_cli(monkeypatch, capsys, *command(data, out, tiny_clip_file, 3))
    assert code == 0, stderr
    assert f"resuming {out} after epoch 2 (4 optimizer updates)" in stderr
    assert "epoch 3: loss " in stderr and "epoch 2: loss" not in stderr
    assert "trained epoch 3; epoch 3/3, 6 optimizer updates" in stdout
    assert [r.epoch for r in RunFolder(out).epochs()] == [1, 2, 3]


def test_errors_are_one_line(monkeypatch, capsys, tmp_path, tiny_clip_file):  # noqa: F811
    data = make_voc(tmp_path / "voc", bad=False)
    args = command(data, tmp_path / "run", tiny_clip_file, 1)
    code, _, stderr = run_cli(monkeypatch, capsys, *[a if a != "red,green" else "red,violet" for a in args])
    assert code == 1 and "error: unknown classes 'violet'" in stderr
    code, _, stderr = run_cli(monkeypatch, capsys, *command(data, tmp_path / "run", tiny_clip_file, 1),
                              "--precision", "float16")
    assert code == 1 and "error: precision must be one of auto, float32, bfloat16" in stderr
    assert not (tmp_path / "run").exists()
