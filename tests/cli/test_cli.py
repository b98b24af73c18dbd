"""The headless twin: `protolens segment`, `backends`, `weights`, `gui` without a display."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from tests.cli.conftest import run_cli


def test_segment_quadrats_writes_mask_heatmap_and_sidecar(monkeypatch, capsys, samples, tmp_path):
    code, out, _ = run_cli(monkeypatch, capsys, "segment", samples / "quadrats", "--backend", "vegetation-index",
                           "--out", tmp_path)
    assert code == 0 and "processed 4, failed 0" in out
    for photo in sorted((samples / "quadrats").glob("*.jpg")):
        stem = photo.stem
        width, height = Image.open(photo).size
        mask = np.asarray(Image.open(tmp_path / f"{stem}.mask.png"))
        heat = np.load(tmp_path / f"{stem}.heatmap.npy")
        meta = json.loads((tmp_path / f"{stem}.json").read_text())
        assert mask.shape == heat.shape == (height, width) and heat.dtype == np.float32
        assert set(np.unique(mask)) <= {0, 255}
        np.testing.assert_array_equal(mask == 255, heat >= meta["threshold"]["value"])
        assert meta["image"]["sha256"] and meta["params"] == {"index": "exg-exr", "smoothing": 0.0}


def test_backend_options_threshold_and_store(monkeypatch, capsys, photo_folder):
    code, out, err = run_cli(monkeypatch, capsys, "segment", photo_folder / "a_meadow.jpg", "-b",
                             "vegetation-index", "--index", "exg", "--smoothing=1.5", "--threshold", "0.4")
    assert code == 0 and "processed 1, failed 0" in out
    sidecar = json.loads((photo_folder / ".protolens" / "a_meadow.jpg.json").read_text())
    entry = sidecar["results"][sidecar["current"]]
    assert entry["backend"]["id"] == "vegetation-index"
    assert entry["params"] == {"index": "exg", "smoothing": 1.5} and entry["threshold"]["value"] == 0.4


def test_bad_files_give_one_line_each_and_the_rest_is_processed(monkeypatch, capsys, photo_folder, tmp_path):
    (photo_folder / "d_empty.png").write_bytes(b"")
    good = (photo_folder / "a_meadow.jpg").read_bytes()
    (photo_folder / "e_truncated.jpg").write_bytes(good[: len(good) // 3])
    code, out, err = run_cli(monkeypatch, capsys, "segment", photo_folder, "-b", "vegetation-index", "-o", tmp_path)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 0 and "processed 2, failed 3" in out
    assert len(lines) == 3
    assert any("c_broken.jpg: not a recognised image" in line for line in lines)
    assert any("d_empty.png: file is empty" in line for line in lines)
    assert any("e_truncated.jpg: truncated or corrupt" in line for line in lines)


def test_exit_status_is_non_zero_only_when_nothing_was_processed(monkeypatch, capsys, photo_folder, tmp_path):
    code, out, _ = run_cli(monkeypatch, capsys, "segment", photo_folder / "c_broken.jpg", "-b", "vegetation-index",
                           "-o", tmp_path)
    assert code == 1 and "processed 0, failed 1" in out
    monkeypatch.setenv("PROTOLENS_MAX_PIXELS", "1000")
    code, _, err = run_cli(monkeypatch, capsys, "segment", photo_folder / "a_meadow.jpg", "-b", "vegetation-index",
                           "-o", tmp_path)
    assert code == 1 and "limit" in err


def test_usage_errors_are_one_line(monkeypatch, capsys, photo_folder):
    code, _, err = run_cli(monkeypatch, capsys, "segment", photo_folder, "-b", "vegetation-index", "--idx", "exg")
    assert code == 1 and err.strip().splitlines() == [
        "error: unknown option --idx; this backend takes: --index, --smoothing"]
    code, _, err = run_cli(monkeypatch, capsys, "segment", photo_folder, "-b", "nope")
    assert code == 1 and "unknown backend 'nope'" in err


def test_vit_without_weights_names_both_ways(monkeypatch, capsys, photo_folder, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "segment", photo_folder, "-b", "vit-attention", "-o", tmp_path)
    assert code == 1 and "protolens weights pull vit_small_patch14_dinov2.lvd142m" in err and "--weights" in err


def test_vit_with_random_weights_on_a_photo(monkeypatch, capsys, photo_folder, tmp_path):
    code, out, _ = run_cli(monkeypatch, capsys, "segment", photo_folder / "b_dahlia.jpg", "-b", "vit-attention",
                           "--model", "vit_small_patch16_224.dino", "--long-side", "128", "--random-weights",
                           "-o", tmp_path)
    assert code == 0
    meta = json.loads((tmp_path / "b_dahlia.json").read_text())
    assert meta["weights"]["id"] == "vit_small_patch16_224.dino:random-init"
    assert np.load(tmp_path / "b_dahlia.heatmap.npy").shape == (427, 640)


def test_backends_and_weights_list(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "backends")
    assert code == 0 and "vegetation-index" in out and "vit-attention" in out and "--long-side" in out
    code, out, _ = run_cli(monkeypatch, capsys, "weights", "list")
    assert code == 0 and "vit_base_patch14_reg4_dinov2.lvd142m" in out and "Apache-2.0" in out
    code, _, err = run_cli(monkeypatch, capsys, "weights", "pull", "no-such-weights")
    assert code == 1 and "known:" in err


def test_gui_without_display_explains_the_headless_twin(samples):
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY",
                                                                            "QT_QPA_PLATFORM")}
    done = subprocess.run([sys.executable, "-m", "protolens", "gui", str(samples / "quadrats")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "protolens segment" in done.stderr and "--backend vegetation-index" in done.stderr


def test_attention_command_writes_mass_thresholded_masks(monkeypatch, capsys, photo_folder, tmp_path):
    code, out, _ = run_cli(monkeypatch, capsys, "attention", photo_folder / "a_meadow.jpg", "--model",
                           "vit_small_patch16_224.dino", "--mode", "rollout", "--long-side", "256", "--tile-size",
                           "128", "--overlap", "0.25", "--threshold-semantics", "mass", "--threshold", "0.6",
                           "--random-weights", "--out", tmp_path)
    assert code == 0 and "processed 1, failed 0" in out
    meta = json.loads((tmp_path / "a_meadow.json").read_text())
    assert meta["params"]["mode"] == "rollout" and meta["params"]["tile_size"] == 128
    assert meta["threshold"]["semantics"] == "mass" and meta["threshold"]["value"] == 0.6
    assert len(meta["info"]["windows"]) == 6  # 256x208 px working image: 3 x 2 windows of 128 px
    heat = np.load(tmp_path / "a_meadow.heatmap.npy")
    mask = np.asarray(Image.open(tmp_path / "a_meadow.mask.png")) == 255
    np.testing.assert_array_equal(mask, heat >= meta["threshold"]["heatmap_threshold"])
    assert 0.0 < mask.mean() < 1.0


def test_attention_command_rejects_bad_options(monkeypatch, capsys, photo_folder):
    code, _, err = run_cli(monkeypatch, capsys, "attention", photo_folder, "--mode", "gradcam", "--random-weights")
    assert code == 1 and "--mode" in err and "cls, received, rollout" in err


def test_tokens_command_writes_a_cached_token_grid(monkeypatch, capsys, photo_folder, tmp_path):
    args = ("tokens", photo_folder / "b_dahlia.jpg", "--model", "vit_small_patch16_224.dino", "--rows", "2",
            "--cols", "3", "--crop", "32", "--input-size", "64", "--batch-size", "4", "--random-weights",
            "--out", tmp_path)
    code, out, _ = run_cli(monkeypatch, capsys, *args)
    assert code == 0 and "processed 1, failed 0" in out
    tokens = np.load(tmp_path / "b_dahlia.tokens.npy")
    meta = json.loads((tmp_path / "b_dahlia.tokens.json").read_text())
    assert tokens.shape == (2, 3, 384) and tokens.dtype == np.float32
    assert meta["grid"] == {"rows": 2, "cols": 3, "crop": 32, "input_size": 64}
    assert meta["weights"]["id"] == "vit_small_patch16_224.dino:random-init"
    import protolens.models.vit.engine as engine

    def no_model(*args, **kwargs):
        raise AssertionError("the model ran although the tokens are cached")

    monkeypatch.setattr(engine, "crop_token_grid", no_model)
    code, _, _ = run_cli(monkeypatch, capsys, *args[:-1], tmp_path / "again")
    assert code == 0
    np.testing.assert_array_equal(np.load(tmp_path / "again" / "b_dahlia.tokens.npy"), tokens)


def test_export_folder_in_every_format_after_segment(monkeypatch, capsys, photo_folder, tmp_path):
    code, _, _ = run_cli(monkeypatch, capsys, "segment", photo_folder, "-b", "vegetation-index")
    assert code == 0
    out = tmp_path / "export"
    code, text, err = run_cli(monkeypatch, capsys, "export", photo_folder, "--out", out)
    assert code == 0 and "exported 2, skipped 0 (no mask), failed 1" in text
    assert "c_broken.jpg" in err
    from pycocotools.coco import COCO

    coco = COCO(str(out / "annotations.coco.json"))
    assert sorted(img["file_name"] for img in coco.dataset["images"]) == ["a_meadow.jpg", "b_dahlia.jpg"]
    sidecar = json.loads((photo_folder / ".protolens" / "a_meadow.jpg.json").read_text())
    mask_file = sidecar["results"][sidecar["current"]]["mask"]["file"]
    mask = np.asarray(Image.open(photo_folder / ".protolens" / mask_file)) == 255
    image_id = next(i["id"] for i in coco.dataset["images"] if i["file_name"] == "a_meadow.jpg")
    union = np.zeros_like(mask)
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
        union |= coco.annToMask(ann).astype(bool)
    np.testing.assert_array_equal(union, mask)
    labels_png = np.asarray(Image.open(out / "a_meadow.labels.png"))
    np.testing.assert_array_equal(labels_png == 1, mask)
    assert (out / "labels.txt").read_text().splitlines()[:2] == ["0 background", "1 plant"]
    import csv

    rows = list(csv.DictReader((out / "cover.csv").open()))
    for photo in ("a_meadow.jpg", "b_dahlia.jpg"):
        assert abs(sum(float(r["cover_percent"]) for r in rows if r["image"] == photo) - 100.0) < 1e-3
    code, _, _ = run_cli(monkeypatch, capsys, "export", photo_folder, "--out", out, "-f", "gif")
    assert code == 1
