"""`protolens segment --backend clip-dense --classes FILE` and `protolens export`: the whole chain, and the CLI side
of ``text`` parameters (a FILE whose UTF-8 text is the value; metavar FILE; a missing file is one error line).

The chain runs a tiny random open_clip CLIP (width 32, 2 layers, patch 8) saved as a weights file and given with
``--weights FILE``, as a user gives the real ViT-B/16 file: ``create_clip`` is patched to build the tiny
architecture for the name ViT-B-16 (the loader's cache key is the file's sha256, so no other test sees it).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from protolens.cli.common import spec_option, with_backend_options
from protolens.core.params import parse_param_specs
from protolens.core.store import ResultStore
from tests.cli.conftest import run_cli

CLASSES = "moss; green moss\nbare soil; soil\n# litter is left out\nleaf litter\n"
TEXT_SPECS = parse_param_specs({
    "classes": {"type": "text", "default": "grass", "help": "One class per line."},
    "mode": {"type": "choice", "default": "sclip", "choices": ["sclip", "maskclip", "clearclip"]},
})
SMALL = ["--short-side", "64", "--window", "32", "--stride", "16"]


def flat(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


def tiny_clip():
    """A tiny random open_clip CLIP: 32-wide towers, 2 vision layers of patch 8 on 32 px, 1 text layer."""
    import open_clip
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        model = open_clip.model.CLIP(
            embed_dim=32, vision_cfg=open_clip.model.CLIPVisionCfg(width=32, layers=2, head_width=16,
                                                                   patch_size=8, image_size=32),
            text_cfg=open_clip.model.CLIPTextCfg(width=32, layers=1, heads=2, context_length=77))
    return model.eval()


@pytest.fixture
def tiny_weights(tmp_path, monkeypatch):
    """A weights file of :func:`tiny_clip`, and the loader patched to build that architecture for any name."""
    from safetensors.torch import save_file

    from protolens.models.clip import loading

    path = tmp_path / "tiny_clip" / "open_clip_model.safetensors"
    path.parent.mkdir()
    save_file({k: v.contiguous() for k, v in tiny_clip().state_dict().items()}, str(path))
    monkeypatch.setattr(loading, "create_clip", lambda name="ViT-B-16", **_: tiny_clip())
    return path


@pytest.fixture
def small_quadrats(tmp_path, samples):
    """Two sample quadrats shrunk to 256x160 px (a folder the per-photo store writes beside)."""
    folder = tmp_path / "quadrats"
    folder.mkdir()
    for name in ("moss_carpet.jpg", "forest_floor.jpg"):
        Image.open(samples / "quadrats" / name).convert("RGB").resize((256, 160)).save(folder / name, quality=92)
    return folder


def test_segment_help_lists_classes_as_a_file(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("TERMINAL_WIDTH", "250")
    code, out, _ = run_cli(monkeypatch, capsys, "segment", "--help")
    text = flat(out)
    assert code == 0
    assert "clip-dense:" in text
    assert "--classes FILE (a UTF-8 text file whose text is the value; default empty)" in text
    assert "--mode CHOICE one of sclip, maskclip, clearclip (default sclip)" in text


def test_a_missing_classes_file_is_one_error_line(monkeypatch, capsys, small_quadrats, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "segment", small_quadrats, "--backend", "clip-dense",
                           "--classes", tmp_path / "nope.txt", "--random-weights")
    assert code == 1
    assert err.strip().splitlines() == [f"error: --classes: {tmp_path / 'nope.txt'}: no such file"]


def test_spec_option_reads_a_text_file_and_keeps_the_default(tmp_path):
    recorded = []

    def command(photo: str = typer.Argument(...), **params) -> None:
        recorded.append((photo, params))

    app = typer.Typer()
    app.command("run")(with_backend_options(command, TEXT_SPECS))
    classes = tmp_path / "classes.txt"
    classes.write_text(CLASSES, encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(app, ["a.jpg", "--classes", str(classes), "--mode", "maskclip"])
    assert result.exit_code == 0, result.output
    assert recorded[-1] == ("a.jpg", {"classes": CLASSES, "mode": "maskclip"})
    result = runner.invoke(app, ["a.jpg"])
    assert result.exit_code == 0, result.output
    assert recorded[-1][1]["classes"] == "grass"  # not given: the manifest default (text, not a file name)
    result = runner.invoke(app, ["a.jpg", "--classes", str(tmp_path / "nope.txt")])
    assert result.exit_code == 1 and "no such file" in str(result.exception)
    assert len(recorded) == 2
    help_text = flat(runner.invoke(app, ["--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"}).output)
    assert "--classes FILE" in help_text and "its text is the value" in help_text
    assert spec_option(TEXT_SPECS[0]).default.metavar == "FILE"


def test_segment_with_a_weights_file_then_export_every_format(monkeypatch, capsys, small_quadrats, tiny_weights,
                                                               tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text(CLASSES, encoding="utf-8")
    code, out, err = run_cli(monkeypatch, capsys, "segment", small_quadrats, "--backend", "clip-dense", "--classes",
                             classes, "--mode", "clearclip", "--weights", tiny_weights, "--prob-threshold", "0.2",
                             *SMALL)
    assert code == 0, err
    assert "2 processed" in out or "processed 2" in out, out
    store = ResultStore.from_environment()
    names = ["moss", "bare soil", "leaf litter"]
    photo = small_quadrats / "moss_carpet.jpg"
    stored = store.load_result(photo)
    assert stored is not None and stored.record.backend_id == "clip-dense"
    assert stored.record.params["classes"] == CLASSES  # the class list itself, not the file name
    assert stored.record.params["mode"] == "clearclip" and stored.record.weights_id == "ViT-B-16"
    layers = stored.layers
    assert list(layers.heatmaps) == names and layers.label_map.classes == ["background", *names]
    probs = np.stack([layers.heatmaps[n].values for n in names])
    np.testing.assert_array_equal(layers.label_map.ids,
                                  np.where(probs.max(axis=0) >= 0.2, probs.argmax(axis=0) + 1, 0))
    sidecar = json.loads(store.sidecar_path(photo).read_text())
    assert sidecar["schema"] == "protolens.sidecar/2" and sidecar["current"]

    out_dir = tmp_path / "export"
    code, out, err = run_cli(monkeypatch, capsys, "export", small_quadrats, "--out", out_dir)
    assert code == 0, err
    written = sorted(p.name for p in out_dir.iterdir())
    for name in ("moss_carpet.labels.png", "moss_carpet.color.png", "moss_carpet.geojson", "moss_carpet.json",
                 "forest_floor.labels.png", "annotations.coco.json", "cover.csv", "labels.txt", "provenance.json"):
        assert name in written, (name, written)
    ids_by_name = {line.split(" ", 1)[1]: int(line.split(" ", 1)[0])
                   for line in (out_dir / "labels.txt").read_text().splitlines() if line.strip()}
    assert set(names) <= set(ids_by_name)
    exported = np.asarray(Image.open(out_dir / "moss_carpet.labels.png"))
    lookup = np.array([0, *(ids_by_name[n] for n in names)])
    np.testing.assert_array_equal(exported, lookup[layers.label_map.full_resolution()])
    provenance = json.loads((out_dir / "provenance.json").read_text())
    assert provenance["photos"]["moss_carpet.jpg"]["mask"] == "label map of the result"
