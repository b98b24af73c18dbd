"""`protolens segment --executor ray`: the local executor's summary line, resumable, bad photos named, and a
one-line message when Ray is missing or the options do not go together."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from protolens.cli import _register, app
from protolens.core.job_manifest import FILE_NAME
from protolens.services.ray_executor import INSTALL_HINT
from tests.cli.conftest import run_cli
from tests.ray_support import private_ray, without_stamps

QUADRATS = Path(__file__).resolve().parents[2] / "resources" / "samples" / "quadrats"

try:
    import ray as _ray  # noqa: F401

    HAVE_RAY = True
except ImportError:
    HAVE_RAY = False
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed (pip install protolens[cluster])")


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One private Ray instance for the module (the CLI reuses a running one), its workers with their own cache."""
    with private_ray(tmp_path_factory.mktemp("cli-ray-worker-cache")) as ray:
        yield ray


@pytest.fixture
def local_cache(tmp_path, monkeypatch):
    """Local runs of this process use a cache of their own, never the Ray workers'."""
    monkeypatch.setenv("PROTOLENS_CACHE_DIR", str(tmp_path / "local-cache"))


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


@needs_ray
def test_summary_line_identical_outputs_and_rerun(local_ray, local_cache, tmp_path):
    _register()
    runner = CliRunner()
    out, local = tmp_path / "ray", tmp_path / "local"
    args = ["segment", str(QUADRATS), "--backend", "vegetation-index"]
    result = runner.invoke(app, [*args, "--executor", "ray", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert last_line(result.stdout) == f"protolens segment: processed 4, failed 0 -> {out}"
    assert "error" not in result.output
    manifest = json.loads((out / FILE_NAME).read_text())
    assert manifest["counts"]["done"] == 4 and manifest["executor"] == "ray" and manifest["address"] == "local"

    result = runner.invoke(app, [*args, "--out", str(local)])  # the local executor, the default
    assert result.exit_code == 0, result.output
    assert last_line(result.stdout) == f"protolens segment: processed 4, failed 0 -> {local}"
    names = sorted(p.name for p in local.iterdir())
    assert len(names) == 12 and sorted(p.name for p in out.iterdir() if p.name != FILE_NAME) == names
    for name in names:
        if name.endswith(".json"):
            assert without_stamps(json.loads((local / name).read_text())) == without_stamps(
                json.loads((out / name).read_text())), name
        else:
            assert (local / name).read_bytes() == (out / name).read_bytes(), name

    result = runner.invoke(app, [*args, "--executor", "ray", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert last_line(result.stdout) == f"protolens segment: processed 0, failed 0, already done 4 -> {out}"
    assert json.loads((out / FILE_NAME).read_text())["counts"]["skipped"] == 4


@needs_ray
def test_a_bad_photo_is_named_and_the_job_succeeds(local_ray, local_cache, monkeypatch, capsys, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(QUADRATS / "green_meadow.jpg", folder / "a_meadow.jpg")
    shutil.copy(QUADRATS / "forget_me_not.jpg", folder / "b_forget.jpg")
    (folder / "c_broken.jpg").write_bytes((QUADRATS / "moss_carpet.jpg").read_bytes()[:3000])  # truncated
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(monkeypatch, capsys, "segment", folder, "--backend", "vegetation-index",
                                   "--executor", "ray", "--out", out)
    assert code == 0
    assert last_line(stdout) == f"protolens segment: processed 2, failed 1 -> {out}"
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "c_broken.jpg" in errors[0]
    manifest = json.loads((out / FILE_NAME).read_text())
    assert manifest["units"][str(folder / "c_broken.jpg")]["state"] == "failed"
    assert "c_broken.jpg" in manifest["units"][str(folder / "c_broken.jpg")]["error"]
    assert {manifest["units"][str(folder / name)]["state"] for name in ("a_meadow.jpg", "b_forget.jpg")} == {"done"}


def test_without_ray_one_line_says_what_to_install(monkeypatch, capsys, local_cache, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    args = ("segment", QUADRATS, "--backend", "vegetation-index")
    code, stdout, stderr = run_cli(monkeypatch, capsys, *args, "--executor", "ray", "--out", tmp_path / "x")
    assert code == 1
    # one line (Rich's transient progress bar leaves a blank line when stderr is not a terminal, as locally)
    assert [line for line in stderr.splitlines() if line.strip()] == [f"error: {INSTALL_HINT}"]
    assert INSTALL_HINT.startswith('the Ray executor needs Ray: pip install "protolens[cluster]"')
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").glob("*.png"))
    code, stdout, _ = run_cli(monkeypatch, capsys, *args, "--out", tmp_path / "y")  # local still works
    assert code == 0 and last_line(stdout) == f"protolens segment: processed 4, failed 0 -> {tmp_path / 'y'}"


@pytest.mark.parametrize("option", [("--address", "auto"), ("--workers", "2"), ("--max-in-flight", "3")])
def test_ray_options_without_the_ray_executor_are_one_line_errors(monkeypatch, capsys, tmp_path, option):
    code, stdout, stderr = run_cli(monkeypatch, capsys, "segment", QUADRATS, "--backend", "vegetation-index",
                                   *option, "--out", tmp_path / "x")
    assert code == 1 and stdout == ""
    assert stderr.splitlines() == ["error: --address, --workers and --max-in-flight need --executor ray"]
    assert not (tmp_path / "x").exists()
