"""`protolens prototypes build`: round trip through the service, summary line, errors as one line."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from protolens.services.prototypes import load_prototypes
from tests.cli.conftest import run_cli

MODEL = "vit_small_patch14_dinov2.lvd142m"


@pytest.fixture
def classes_dir(tmp_path, samples):
    """images/birds (11 photos and a broken file) and images/quadrats (1 photo)."""
    root = tmp_path / "images"
    shutil.copytree(samples / "birds", root / "birds")
    (root / "quadrats").mkdir()
    shutil.copy(samples / "quadrats" / "green_meadow.jpg", root / "quadrats")
    (root / "birds" / "broken.png").write_bytes(b"not a png")
    return root


def _build(monkeypatch, capsys, images, out, *extra):
    return run_cli(monkeypatch, capsys, "prototypes", "build", "--images", images, "--backbone", MODEL, "--k", 2,
                   "--out", out, "--input", 56, "--niter", 20, "--nredo", 2, "--batch-size", 8,
                   "--allow-random-weights", *extra)


def test_build_round_trip(monkeypatch, capsys, classes_dir, tmp_path):
    out = tmp_path / "protos" / "prototypes.safetensors"
    code, stdout, stderr = _build(monkeypatch, capsys, classes_dir, out, "--kmeans", "sklearn")
    assert code == 0, stderr
    assert "12 images (12 embedded, 0 reused), 1 skipped, K 2, D 384, sklearn k-means" in stdout
    assert "2 classes: purity" in stdout and "adjusted Rand index" in stdout
    assert "skipped:" in stderr and "broken.png" in stderr
    prototypes, provenance = load_prototypes(out)
    assert prototypes.shape == (2, 384) and provenance["library"] == "sklearn" and provenance["input"] == 56
    assert (out.parent / "prototypes.json").is_file() and (out.parent / "prototypes.shards" / "manifest.json").is_file()
    code, stdout, _ = _build(monkeypatch, capsys, classes_dir, out, "--kmeans", "sklearn")
    assert code == 0 and "(0 embedded, 12 reused)" in stdout
    np.testing.assert_array_equal(load_prototypes(out)[0], prototypes)


@pytest.mark.parametrize(("args", "message"), [
    (("--backbone", "resnet50"), "--backbone: 'resnet50' is not one of"),
    (("--k", 99), "99 clusters but only 13 photos"),
    (("--kmeans", "scipy"), "--kmeans: 'scipy' is not one of"),
])
def test_errors_are_one_line(monkeypatch, capsys, classes_dir, tmp_path, args, message):
    code, _, stderr = _build(monkeypatch, capsys, classes_dir, tmp_path / "p.safetensors", *args)
    assert code == 1 and stderr.strip().startswith("error: ") and message in stderr


def test_k_is_required(monkeypatch, capsys, classes_dir, tmp_path):
    code, _, stderr = run_cli(monkeypatch, capsys, "prototypes", "build", "--images", classes_dir, "--backbone", MODEL,
                              "--out", tmp_path / "p.safetensors")
    assert code == 2 and "--k" in stderr
