"""`protolens bank build`: one summary line, reuse on a rebuild, errors as one line."""

from __future__ import annotations

import pytest

from protolens.core.bank_files import read_bank_cache
from tests.cli.conftest import run_cli

MODEL = "vit_small_patch14_dinov2.lvd142m"


@pytest.fixture
def birds(birds):
    """The bird bank plus a file that is not an image."""
    (birds / "broken.png").write_bytes(b"not a png")
    return birds


def _build(monkeypatch, capsys, folder, *extra):
    return run_cli(monkeypatch, capsys, "bank", "build", folder, "--model", MODEL, "--input", 56, "--parts", 3,
                   "--kmeans", "sklearn", "--allow-random-weights", *extra)


def test_build_prints_one_summary_line(monkeypatch, capsys, birds):
    code, stdout, stderr = _build(monkeypatch, capsys, birds)
    assert code == 0, stderr
    lines = stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("protolens bank: 11 images (11 embedded, 0 reused), 1 skipped, "
                                                   "11 classes, 3 parts, " + MODEL)
    assert str(birds.resolve() / ".protolens-bank") in lines[0]
    assert "skipped: broken.png:" in stderr
    assert read_bank_cache(birds).input_size == 56
    code, stdout, _ = _build(monkeypatch, capsys, birds)
    assert code == 0 and "(0 embedded, 11 reused)" in stdout


@pytest.mark.parametrize(("args", "message"), [
    (("--model", "resnet50"), "--model: 'resnet50' is not one of"),
    (("--input", 60), "not a multiple of the patch size"),
])
def test_bad_options_are_one_error_line(monkeypatch, capsys, birds, args, message):
    code, _, stderr = _build(monkeypatch, capsys, birds, *args)
    assert code == 1 and stderr.strip().startswith("error: ") and message in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_bad_folder_is_one_error_line(monkeypatch, capsys, tmp_path):
    code, stdout, stderr = _build(monkeypatch, capsys, tmp_path / "nowhere")
    assert code == 1 and stdout == "" and stderr.strip().startswith("error: ") and "not a folder" in stderr
    assert len(stderr.strip().splitlines()) == 1
