"""`protolens results list|rm|current` and `protolens compare` over the per-photo result store."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from protolens.core.store import ResultStore
from protolens.services.compare import agreement, compare_grid, pane_data
from protolens.services.results import load_found
from protolens.services.segment import load_image
from tests.cli.conftest import run_cli


@pytest.fixture
def two_results(monkeypatch, capsys, photo_folder):
    """a_meadow.jpg with two stored vegetation-index results (exg, then exg-exr: current): (photo, keys)."""
    photo = photo_folder / "a_meadow.jpg"
    for index in ("exg", "exg-exr"):
        code, out, _ = run_cli(monkeypatch, capsys, "segment", photo, "-b", "vegetation-index", "--index", index)
        assert code == 0 and "processed 1, failed 0" in out
    entries = ResultStore().list_results(photo)
    assert [e.record.params["index"] for e in entries] == ["exg", "exg-exr"]
    return photo, [e.key for e in entries]


def test_list_shows_every_result_with_the_current_one(monkeypatch, capsys, photo_folder, two_results):
    photo, keys = two_results
    code, out, err = run_cli(monkeypatch, capsys, "results", "list", photo_folder)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert [line.split("\t")[:2] for line in lines] == [["a_meadow.jpg", keys[0]], ["a_meadow.jpg", keys[1]]]
    assert [line.endswith("\tcurrent") for line in lines] == [False, True]
    assert "vegetation-index@1.0.0" in lines[0] and '"index":"exg"' in lines[0]
    assert "2 results of 1 photo" in err and "1 failed" in err
    assert "c_broken.jpg" in err and err.count("error:") == 1  # the broken photo: one line, the rest listed


def test_current_and_rm_by_prefix(monkeypatch, capsys, two_results):
    photo, keys = two_results
    code, out, _ = run_cli(monkeypatch, capsys, "results", "current", photo, "--key", keys[0][:6])
    assert code == 0 and keys[0] in out
    assert ResultStore().load_result(photo).key == keys[0]

    code, _, err = run_cli(monkeypatch, capsys, "results", "rm", photo, "--key", "abc")
    assert code == 1 and "at least 6 hex digits" in err
    code, _, err = run_cli(monkeypatch, capsys, "results", "rm", photo, "--key", "ffffff0000")
    assert code == 1 and "no result ffffff0000" in err
    assert len(ResultStore().list_results(photo)) == 2

    code, out, err = run_cli(monkeypatch, capsys, "results", "rm", photo, "--key", keys[1][:7])
    assert code == 0 and f"deleted {keys[1]}" in out and "1 result left" in err
    assert [e.key for e in ResultStore().list_results(photo)] == [keys[0]]
    code, out, _ = run_cli(monkeypatch, capsys, "results", "list", photo)
    assert len(out.splitlines()) == 1 and out.rstrip().endswith("current")


def test_rm_all_but_current(monkeypatch, capsys, two_results):
    photo, keys = two_results
    code, out, _ = run_cli(monkeypatch, capsys, "results", "rm", photo, "--all-but-current")
    assert code == 0 and f"deleted {keys[0]}" in out
    assert [e.key for e in ResultStore().list_results(photo)] == [keys[1]]


def test_compare_writes_png_and_json_matching_agreement(monkeypatch, capsys, tmp_path, two_results):
    photo, keys = two_results
    out_dir = tmp_path / "cmp"
    code, out, err = run_cli(monkeypatch, capsys, "compare", photo, "--result", keys[0][:8], "--result", keys[1],
                             "--difference", "1,2", "--difference-mode", "xor", "--colormap", "magma",
                             "--out", out_dir)
    assert code == 0, err
    png, js = out_dir / "a_meadow.compare.png", out_dir / "a_meadow.compare.json"
    assert f"wrote {png}" in out and f"wrote {js}" in out
    doc = json.loads(js.read_text())
    assert [p["key"] for p in doc["panes"]] == keys and doc["difference"] == {"a": 1, "b": 2, "mode": "xor"}

    image = load_image(photo)
    grid = compare_grid((image.meta.height, image.meta.width))
    store = ResultStore()
    panes = [pane_data(load_found(store, image, key), grid) for key in keys]
    expected = agreement(panes[0], panes[1])
    [entry] = doc["agreement"]
    assert (entry["a"], entry["b"]) == (1, 2)
    assert entry["iou"] == pytest.approx(expected.iou) and entry["pearson"] == pytest.approx(expected.pearson)
    assert entry["spearman"] == pytest.approx(expected.spearman)
    assert f"1-2\tiou {expected.iou:.3f}" in out
    assert [p["value_threshold"] for p in doc["panes"]] == pytest.approx([p.threshold for p in panes])
    with Image.open(png) as picture:
        assert picture.size[0] == 2 * grid[1] + 4  # two panes, then the XOR pane on a second row
        assert np.asarray(picture).shape[2] == 3


def test_compare_threshold_override_and_usage_errors(monkeypatch, capsys, tmp_path, two_results):
    photo, keys = two_results
    code, _, err = run_cli(monkeypatch, capsys, "compare", photo, "--result", keys[0], "--out", tmp_path)
    assert code == 1 and "2 to 9 results" in err
    code, _, err = run_cli(monkeypatch, capsys, "compare", photo, "-r", keys[0], "-r", keys[1], "--difference",
                           "1,3", "--out", tmp_path)
    assert code == 1 and "--difference" in err
    code, _, _ = run_cli(monkeypatch, capsys, "compare", photo, "-r", keys[0], "-r", keys[1], "--threshold", "0.5",
                         "--threshold-semantics", "mass", "--out", tmp_path)
    assert code == 0
    doc = json.loads((tmp_path / "a_meadow.compare.json").read_text())
    assert [(p["semantics"], p["threshold"]) for p in doc["panes"]] == [("mass", 0.5), ("mass", 0.5)]
    assert doc["difference"] is None
