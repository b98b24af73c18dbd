"""``protolens species``: submission CSV, masks, sidecars and species JSONs from a tiny random run."""

from __future__ import annotations

import json
import shutil

import pytest

from protolens.core.species import read_species_csv
from tests.cli.conftest import run_cli
from tests.services.test_species_service import make_options, make_run


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("species-cli")
    return make_run(root / "run", epochs=1), make_options(root)


def _args(run, options, *more):
    return ["species", *more, "--run", run.path, "--classifier", options.classifier,
            "--classifier-weights", options.classifier_weights, "--class-mapping", options.class_mapping,
            "--grid", "3", "--classifier-input", "32", "--allow-random-weights"]


def test_species_writes_submission_masks_sidecars_and_json(monkeypatch, capsys, setup, samples, tmp_path):
    run, options = setup
    quadrats = tmp_path / "q"
    quadrats.mkdir()
    shutil.copy(samples / "quadrats" / "green_meadow.jpg", quadrats / "Q-1.jpg")
    (quadrats / "Q-2.jpg").write_bytes(b"broken")
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(monkeypatch, capsys, *_args(run, options, quadrats, "--out", out, "--epoch", "1",
                                                               "--prob", "0.2", "--photo-size", "256x128"))
    assert code == 0, stderr
    assert "processed 1, failed 1" in stdout and "Q-2.jpg" in stderr
    table = read_species_csv(out / "submission.csv")
    assert list(table) == ["Q-1"] and len(table["Q-1"]) >= 1
    for name in ("Q-1.mask.png", "Q-1.heatmap.npy", "Q-1.json", "Q-1.species.json"):
        assert (out / name).is_file(), name
    document = json.loads((out / "Q-1.species.json").read_text())
    assert [s["species_id"] for s in document["species"]] == list(table["Q-1"])
    assert document["species_threshold"] == 0.2 and document["crop_grid"] == [4, 8]
    sidecar = json.loads((out / "Q-1.json").read_text())
    assert sidecar["backend"]["id"] == "prototype-guided" and sidecar["params"]["prob"] == 0.2


def test_species_refuses_a_tiling_other_than_the_runs(monkeypatch, capsys, setup, samples, tmp_path):
    run, options = setup
    code, _, stderr = run_cli(monkeypatch, capsys, *_args(run, options, samples / "quadrats" / "green_meadow.jpg",
                                                          "--out", tmp_path, "--crop", "64"))
    assert code == 1 and "--crop must match the run's tiling (32)" in stderr
    assert not (tmp_path / "submission.csv").exists()


def test_species_needs_a_classifier_and_fails_when_nothing_is_read(monkeypatch, capsys, setup, tmp_path):
    run, options = setup
    code, _, stderr = run_cli(monkeypatch, capsys, "species", tmp_path, "--run", run.path, "--out", tmp_path)
    assert code == 1 and "--classifier NAME" in stderr
    (tmp_path / "bad.jpg").write_bytes(b"x")
    code, stdout, _ = run_cli(monkeypatch, capsys, *_args(run, options, tmp_path / "bad.jpg", "--out", tmp_path / "o"))
    assert code == 1 and "processed 0, failed 1" in stdout
