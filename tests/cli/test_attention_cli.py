"""`protolens attention`: its backend options come from the vit-attention manifest, declared nowhere else."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from protolens.cli import attention as attention_cli
from protolens.cli.common import with_backend_options
from protolens.core.params import ParamSpec
from protolens.models.registry import Registry
from tests.cli.conftest import run_cli

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "vit_attention"
FLAGS = ("--model", "--mode", "--block", "--head", "--head-fusion", "--discard-ratio", "--long-side", "--tile-size",
         "--overlap", "--batch-size", "--precision")
OWN_FLAGS = ("--weights", "--threshold", "--threshold-semantics", "--out", "--device")



def manifest_specs(plugin_dir: Path = PLUGIN) -> tuple[ParamSpec, ...]:
    return Registry.discover([plugin_dir.parent], entry_points=False).manifest("vit-attention").params


def flat(text: str) -> str:
    """Help text with the table borders and line wrapping removed."""
    return " ".join(text.replace("│", " ").split())


def test_help_lists_every_manifest_option_with_its_help_and_default(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("TERMINAL_WIDTH", "250")
    code, out, _ = run_cli(monkeypatch, capsys, "attention", "--help")
    text = flat(out)
    assert code == 0
    specs = manifest_specs()
    assert tuple(s.cli_flag for s in specs) == FLAGS  # every old flag still exists, in the manifest
    for spec in specs:
        assert spec.cli_flag in text and flat(spec.help) in text, spec.name
        assert f"[default: {spec.default}]" in text, spec.name
    for flag in (*OWN_FLAGS, "-m", "-t", "-o"):
        assert f" {flag} " in text
    assert "--random-weights" not in text  # hidden, testing only
    assert "[cls|received|rollout]" in text and "Range 56 to 8192." in text


def test_no_options_run_with_the_manifest_defaults(monkeypatch, capsys, photo_folder):
    recorded = []
    monkeypatch.setattr(attention_cli, "run_segment", lambda paths, backend, params, **kw: recorded.append(params))
    code, _, _ = run_cli(monkeypatch, capsys, "attention", photo_folder / "b_dahlia.jpg", "--random-weights")
    assert code == 0 and recorded == [{spec.name: spec.default for spec in manifest_specs()}]
    # the values keep the manifest's types (run_segment writes them into the sidecar's "params")
    assert [type(v) for v in recorded[0].values()] == [type(s.default) for s in manifest_specs()]


def _copied_plugin(tmp_path: Path, replacements: dict[str, str]) -> Path:
    folder = tmp_path / "plugins" / "vit_copy"
    shutil.copytree(PLUGIN, folder, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    manifest = folder / "plugin.toml"
    text = manifest.read_text(encoding="utf-8")
    for old, new in replacements.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    manifest.write_text(text, encoding="utf-8")
    return folder


def test_a_default_changed_in_the_manifest_changes_the_cli_default(monkeypatch, tmp_path):
    folder = _copied_plugin(tmp_path, {'default = "cls"': 'default = "received"', "default = 518": "default = 280",
                                       "default = 0.25": "default = 0.5"})
    specs = manifest_specs(folder)
    app = typer.Typer()
    app.command("attention")(with_backend_options(attention_cli.attention, specs, aliases=attention_cli.ALIASES))
    recorded = []

    def fake_run_segment(paths, backend, params, **options):
        recorded.append((paths, backend, params, options))

    monkeypatch.setattr(attention_cli, "run_segment", fake_run_segment)
    runner = CliRunner()
    result = runner.invoke(app, ["photo.jpg"])
    assert result.exit_code == 0, result.output
    paths, backend, params, options = recorded[-1]
    assert paths == ["photo.jpg"] and backend == "vit-attention" and options["semantics"] == "value"
    assert params == {spec.name: spec.default for spec in specs}
    assert (params["mode"], params["long_side"], params["overlap"]) == ("received", 280, 0.5)
    result = runner.invoke(app, ["photo.jpg", "-m", "vit_small_patch16_224.dino", "--long-side", "140",
                                 "--head-fusion", "max", "--discard-ratio=0.9"])
    assert result.exit_code == 0, result.output
    assert {k: recorded[-1][2][k] for k in ("model", "long_side", "head_fusion", "discard_ratio")} == {
        "model": "vit_small_patch16_224.dino", "long_side": 140, "head_fusion": "max", "discard_ratio": 0.9}
    help_text = flat(runner.invoke(app, ["--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"}).output)
    assert "[default: 280]" in help_text and "[default: received]" in help_text


@pytest.mark.parametrize(("args", "message"), [
    (("--block", "abc"), "error: --block: 'abc' is not a valid int"),
    (("--long-side", "10"), "error: --long-side: 10 is below the minimum 56"),
    (("--head-fusion", "median"), "error: --head-fusion: 'median' is not one of mean, max, min"),
])
def test_bad_backend_values_are_one_line_errors(monkeypatch, capsys, photo_folder, args, message):
    code, _, err = run_cli(monkeypatch, capsys, "attention", photo_folder, *args, "--random-weights")
    assert code == 1 and err.strip().splitlines() == [message]


def test_a_backend_option_named_like_a_command_option_is_refused():
    clash = ParamSpec("device", "str", "cpu")
    with pytest.raises(ValueError, match="device"):
        with_backend_options(attention_cli.attention, [clash])
