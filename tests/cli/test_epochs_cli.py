"""``protolens compare-epochs`` on a tiny 3-epoch run: the table, the files, and option errors."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from protolens.cli.epochs import parse_epochs, parse_pair
from protolens.core.errors import ParamError
from tests.cli.conftest import run_cli
from tests.services.test_epochs import make_run


@pytest.fixture
def photo(tmp_path, samples):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(samples / "quadrats" / "green_meadow.jpg", folder / "meadow.jpg")
    return folder / "meadow.jpg"


def test_compare_epochs_prints_the_table_and_writes_the_files(monkeypatch, capsys, tmp_path, photo):
    run = make_run(tmp_path / "run", chosen=3)
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(monkeypatch, capsys, "compare-epochs", photo, "--run", run.path, "--out", out,
                                   "--epochs", "1,3", "--threshold", "0.5", "--pair", "3,1",
                                   "--allow-random-weights")
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0].split("\t") == ["epoch", "loss", "entropy", "border_share", "iou_previous", "photo_iou_prev",
                                    "photo_pearson_prev", "key"]
    first, third = lines[1].split("\t"), lines[2].split("\t")
    assert first[0] == "1" and first[1] == "1" and first[5] == "-" and "chosen" not in first
    assert third[0] == "3" and float(third[1]) == pytest.approx(1 / 3, abs=1e-3) and third[-1] == "chosen"
    assert 0.0 <= float(third[5]) <= 1.0
    names = {p.name for p in out.iterdir()}
    assert names == {"meadow.epoch_001.png", "meadow.epoch_003.png", "meadow.diff_003-001.png", "meadow.epochs.png",
                     "meadow.epochs.csv", "meadow.epochs.json"}
    assert all(f"wrote {out / name}" in stdout for name in names)
    with open(out / "meadow.epochs.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["1", "3"] and [r["chosen"] for r in rows] == ["0", "1"]
    document = json.loads((out / "meadow.epochs.json").read_text(encoding="utf-8"))
    assert document["params"]["threshold"] == 0.5 and document["params"]["classifier"] == ""
    assert [e["key"] for e in document["epochs"]] == [first[7], third[7]]
    # a second run finds every epoch in the store or cache and writes the same keys
    code, again, _ = run_cli(monkeypatch, capsys, "compare-epochs", photo, "--run", run.path, "--out", out,
                             "--epochs", "1,3", "--threshold", "0.5", "--allow-random-weights")
    assert code == 0 and again.splitlines()[1:3] == lines[1:3]


def test_option_errors_exit_with_one_line(monkeypatch, capsys, tmp_path, photo):
    run = make_run(tmp_path / "run", epochs=2)
    code, _, stderr = run_cli(monkeypatch, capsys, "compare-epochs", photo, "--run", run.path, "--out",
                              tmp_path / "out", "--epochs", "5", "--allow-random-weights")
    assert code == 1 and "no checkpoint of epoch 5" in stderr
    code, _, stderr = run_cli(monkeypatch, capsys, "compare-epochs", photo, "--run", tmp_path, "--out",
                              tmp_path / "out")
    assert code == 1 and "config.json" in stderr
    assert not (tmp_path / "out").exists()


def test_parsers():
    assert parse_epochs("1,3,5") == [1, 3, 5] and parse_epochs("2-4,7") == [2, 3, 4, 7] and parse_epochs(None) is None
    assert parse_pair("3,12") == (3, 12)
    for bad in ("a", "0", ""):
        with pytest.raises(ParamError):
            parse_epochs(bad)
    with pytest.raises(ParamError):
        parse_pair("1")
