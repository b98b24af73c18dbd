"""`protolens explain` and `protolens evaluate keypoints`: files written, one summary line, errors as one line."""

from __future__ import annotations

import json
import shutil

import cv2
import pytest

from protolens.models.registry import Registry
from protolens.services.bank import build_bank
from protolens.services.segment import Segmenter, drain
from tests.cli.conftest import run_cli


@pytest.fixture(scope="module")
def bank_dir(tmp_path_factory):
    """A built bank of the bird samples (flat: each bird its own class), input 56, random weights."""
    from tests.conftest import SAMPLES

    root = tmp_path_factory.mktemp("cli-bank") / "birds"
    shutil.copytree(SAMPLES / "birds", root)
    segmenter = Segmenter(Registry.discover(), device="cpu", disk_cache=None)
    drain(build_bank(segmenter, root, input_size=56, parts=3, allow_random_weights=True))
    return root


def test_explain_writes_png_and_json_and_prints_one_line(monkeypatch, capsys, bank_dir, samples, tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(monkeypatch, capsys, "explain", samples / "birds" / "robin.jpg", "--bank", bank_dir,
                                   "--k", 3, "--out", out, "--allow-random-weights")
    assert code == 0, stderr
    lines = stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("protolens explain: robin.jpg: ")
    assert "with 3 prototypes (cosegment segments)" in lines[0]
    png, js = out / "robin.explanation.png", out / "robin.explanation.json"
    assert f"-> {png}, {js}" in lines[0]
    assert cv2.imread(str(png)).ndim == 3
    data = json.loads(js.read_text())
    assert len(data["retrieval"]) == 3 and "robin.jpg" not in [r["name"] for r in data["retrieval"]]
    vote = data["vote"]
    assert (vote["message"] in lines[0]) and vote["total"] == len(data["matches"])


def test_explain_label_consistent_flag(monkeypatch, capsys, bank_dir, samples, tmp_path):
    code, stdout, stderr = run_cli(monkeypatch, capsys, "explain", samples / "birds" / "magpie.png", "--bank", bank_dir,
                                   "--k", 2, "--out", tmp_path, "--label-consistent", "--allow-random-weights")
    assert code == 0, stderr
    assert "(label-consistent)" in stdout
    assert json.loads((tmp_path / "magpie.explanation.json").read_text())["label_consistent"] is True


def test_evaluate_keypoints_prints_accuracy(monkeypatch, capsys, bank_dir, samples, tmp_path):
    test = tmp_path / "test"
    for label, name in (("crow", "crow.png"), ("lark", "lark.png")):
        (test / label).mkdir(parents=True)
        shutil.copy(samples / "birds" / name, test / label / name)
    (test / "lark" / "broken.jpg").write_bytes(b"not a jpeg")
    table = tmp_path / "rows.csv"
    code, stdout, stderr = run_cli(monkeypatch, capsys, "evaluate", "keypoints", "--bank", bank_dir, "--test", test,
                                   "--k", 2, "--csv", table, "--allow-random-weights")
    assert code == 0, stderr
    lines = stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keypoints: top-1 accuracy ")
    assert "/2 queries)" in lines[0] and "matches per query" in lines[0] and "1 skipped" in lines[0]
    assert "skipped: lark/broken.jpg" in stderr and "warning:" not in stderr  # crow, lark: bank classes
    assert table.read_text().splitlines()[0].startswith("path,class,prediction,correct,matches")


@pytest.mark.parametrize("command", ["explain", "evaluate"])
@pytest.mark.parametrize(("folder", "message"), [("nowhere", "not a folder"), ("unbuilt", "protolens bank build")])
def test_missing_bank_is_one_error_line(monkeypatch, capsys, samples, tmp_path, command, folder, message):
    (tmp_path / "unbuilt").mkdir()
    shutil.copy(samples / "birds" / "crow.png", tmp_path / "unbuilt")
    args = (["explain", samples / "birds" / "robin.jpg"] if command == "explain"
            else ["evaluate", "keypoints", "--test", samples / "birds"])
    code, _, stderr = run_cli(monkeypatch, capsys, *args, "--bank", tmp_path / folder, "--allow-random-weights")
    assert code == 1 and stderr.strip().startswith("error: ") and len(stderr.strip().splitlines()) == 1
    assert message in stderr


@pytest.mark.parametrize(("args", "message"), [
    (("--model", "vit_base_patch14_dinov2.lvd142m"), "was built with vit_small_patch14_dinov2.lvd142m"),
    (("--segments", "watershed"), "--segments: 'watershed' is not one of"),
])
def test_option_errors_are_one_line(monkeypatch, capsys, bank_dir, samples, tmp_path, args, message):
    code, _, stderr = run_cli(monkeypatch, capsys, "explain", samples / "birds" / "robin.jpg", "--bank", bank_dir,
                              "--out", tmp_path, "--allow-random-weights", *args)
    assert code == 1 and stderr.strip().startswith("error: ") and message in stderr
    assert not list(tmp_path.iterdir())


def test_explain_pixels_with_a_chosen_block_and_facet(monkeypatch, capsys, bank_dir, samples, tmp_path):
    """--pixels with --layer/--facet/--no-bin/--stride: at most --n-pairs correspondences per prototype, each
    point inside its photo; a facet that does not exist is one error line."""
    code, stdout, stderr = run_cli(monkeypatch, capsys, "explain", samples / "birds" / "crow.png", "--bank", bank_dir,
                                   "--k", 2, "--out", tmp_path, "--pixels", "--n-pairs", 4, "--layer", 3, "--facet",
                                   "value", "--no-bin", "--stride", 7, "--allow-random-weights")
    assert code == 0, stderr
    data = json.loads((tmp_path / "crow.explanation.json").read_text())
    sizes = {r["rank"]: cv2.imread(r["path"]).shape[:2] for r in data["retrieval"]}
    crow = cv2.imread(str(samples / "birds" / "crow.png")).shape[:2]
    assert len(data["correspondences"]) == 2
    assert sum(len(c["pairs"]) for c in data["correspondences"]) > 0
    for entry in data["correspondences"]:
        height, width = sizes[entry["rank"]]
        assert len(entry["pairs"]) <= 4
        for pair in entry["pairs"]:
            assert 0 <= pair["query_xy"][0] < crow[1] and 0 <= pair["query_xy"][1] < crow[0]
            assert 0 <= pair["prototype_xy"][0] < width and 0 <= pair["prototype_xy"][1] < height
    assert "pixel correspondences" in stdout
    code, _, stderr = run_cli(monkeypatch, capsys, "explain", samples / "birds" / "crow.png", "--bank", bank_dir,
                              "--out", tmp_path / "bad", "--pixels", "--facet", "attention", "--allow-random-weights")
    assert code == 1 and stderr.strip().startswith("error: ") and "attention" in stderr
