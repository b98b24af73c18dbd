"""``protolens evaluate segmentation`` on hand-made label PNGs."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from tests.cli.conftest import run_cli


def _png(path, rows):
    Image.fromarray(np.array(rows, np.uint8), mode="L").save(path)


def _folders(tmp_path):
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    pred.mkdir()
    truth.mkdir()
    # x: background 3/4, cat 2/4 (a 255 prediction is wrong), ignore pixel not scored
    _png(truth / "x.png", [[0, 0, 1, 1], [0, 0, 1, 255]])
    _png(pred / "x.labels.png", [[0, 1, 1, 1], [0, 0, 255, 2]])
    _png(truth / "y.png", [[2, 2]])
    _png(pred / "y.png", [[2, 2]])          # dog perfect
    _png(truth / "lost.png", [[1]])          # no prediction
    _png(truth / "bad.png", [[1]])
    (pred / "bad.png").write_bytes(b"garbage")
    _png(pred / "extra.png", [[1]])
    (truth / "labels.txt").write_text("0 background\n1 cat\n2 dog\n255 ignore\n")
    return pred, truth


def test_prints_the_papers_metrics_and_names_skipped_files(tmp_path, monkeypatch, capsys):
    pred, truth = _folders(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", "segmentation", "--pred", pred, "--truth", truth,
                             "--seen", "cat", "--unseen", "dog", "--json", tmp_path / "e.json")
    assert code == 0, err
    assert "skipped: lost: no prediction" in err and "skipped: bad: bad.png" in err
    assert "without a truth (ignored): 1: extra" in err
    assert "compared 2 label maps (2 skipped)" in out
    # IoU background 3/4, cat 2/4, dog 1 (x's dog prediction falls on an ignore pixel)
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["iou"] == [0.75, 0.5, 1.0]
    assert data["miou"] == 0.75 and data["miou_seen"] == 0.5 and data["miou_unseen"] == 1.0
    assert abs(data["hiou"] - 2 / 3) < 1e-12
    assert abs(data["pixel_accuracy"] - 7 / 9) < 1e-12
    assert "hIoU            0.6667" in out and "pixel accuracy  0.7778" in out
    assert "cat" in out and "dog" in out


def test_without_a_class_list_and_with_an_unknown_class(tmp_path, monkeypatch, capsys):
    pred, truth = _folders(tmp_path)
    (truth / "labels.txt").unlink()
    code, out, _ = run_cli(monkeypatch, capsys, "evaluate", "segmentation", "--pred", pred, "--truth", truth)
    assert code == 0 and "class 2" in out and "hIoU" not in out
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", "segmentation", "--pred", pred, "--truth", truth,
                           "--seen", "horse")
    assert code == 1 and "'horse'" in err
    (tmp_path / "two.txt").write_text("background\ncat\n")
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", "segmentation", "--pred", pred, "--truth", truth,
                           "--classes", tmp_path / "two.txt")
    assert code == 1 and "[2]" in err
