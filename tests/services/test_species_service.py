"""``protolens species`` as a service: a tiny random run and classifier on real quadrat photos."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from protolens.core.errors import CheckpointError, ParamError
from protolens.core.imageio import read_mask
from protolens.core.indicators import crop_mask
from protolens.core.runs import RunFolder
from protolens.core.species import read_species_csv
from protolens.models.prototype.narrow_vit import NarrowViT, NarrowViTConfig
from protolens.services.segment import Segmenter, drain, load_image
from protolens.services.species import SpeciesOptions, run_checkpoint, run_tiling, species_paths

GRID = (4, 8)


def make_run(path: Path, epochs: int = 2) -> RunFolder:
    """A run with ``epochs`` random narrow-ViT checkpoints on a random ViT-S/14 (photo 256 x 128, crop 32, input 28)."""
    run = RunFolder(path)
    config = NarrowViTConfig(grid=GRID, prototypes=5, token_dim=384, width=64, depth=2, heads=4)
    run.write_config({"model": "prototype-vit", "narrow_vit": config.to_json(),
                      "tiling": {"photo_size": [256, 128], "crop": 32, "crop_input": 28, "grid": list(GRID)},
                      "backbone": {"model": "vit_small_patch14_dinov2.lvd142m", "weights": None,
                                   "weights_sha256": "none"}})
    for epoch in range(1, epochs + 1):
        torch.manual_seed(epoch)
        save_file(NarrowViT(config).state_dict(), str(run.checkpoint_path(epoch)))
        run.write_epoch(epoch, {"loss": 1.0 / epoch, "steps": epoch, "lr": 1e-4, "indicators": {}})
    return run


def make_options(folder: Path, classes: int = 3, **values) -> SpeciesOptions:
    """A random timm test classifier saved to a file plus a class mapping CSV."""
    torch.manual_seed(7)
    weights = folder / "classifier.safetensors"
    save_file(timm.create_model("test_resnet", pretrained=False, num_classes=classes).state_dict(), str(weights))
    mapping = folder / "mapping.csv"
    mapping.write_text("class_index,species_id,name\n" + "".join(f"{i},{1000 + i},Species {i}\n"
                                                                  for i in range(classes)))
    return SpeciesOptions("test_resnet", str(weights), str(mapping), **{"grid": 3, "classifier_input": 32, **values})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("species")
    return make_run(root / "run"), make_options(root)


@pytest.fixture
def quadrats(tmp_path, samples):
    folder = tmp_path / "quadrats"
    folder.mkdir()
    shutil.copy(samples / "quadrats" / "green_meadow.jpg", folder / "CBN-01.jpg")
    shutil.copy(samples / "quadrats" / "moss_carpet.jpg", folder / "CBN-02.jpg")
    (folder / "CBN-03.jpg").write_bytes(b"not a jpeg")
    return folder


def test_species_paths_write_every_file(setup, quadrats, tmp_path):
    run, options = setup
    out = tmp_path / "out"
    errors = []
    summary = species_paths([quadrats], options, run_dir=run.path, out_dir=out, segmenter=Segmenter(),
                            epoch=1, allow_random_weights=True, on_error=lambda p, m: errors.append(p.name))
    assert summary.processed == 2 and [p.name for p, _ in summary.failed] == ["CBN-03.jpg"] == errors
    table = read_species_csv(out / "submission.csv")
    assert list(table) == ["CBN-01", "CBN-02"]
    for quadrat in ("CBN-01", "CBN-02"):
        doc = json.loads((out / f"{quadrat}.species.json").read_text())
        assert doc["schema"] == "protolens.species/1" and doc["quadrat_id"] == quadrat and doc["epoch"] == 1
        assert [s["species_id"] for s in doc["species"]] == list(table[quadrat]) == summary.species[quadrat]
        assert len(doc["species"]) >= 1
        image = load_image(quadrats / f"{quadrat}.jpg")
        for entry in doc["species"]:
            assert entry["name"] == f"Species {int(entry['species_id']) - 1000}" and 0 < entry["probability"] <= 1
            for crop in entry["crops"]:
                x, y, w, h = crop["box"]
                assert w == pytest.approx(image.meta.width / GRID[1], abs=1)
                assert h == pytest.approx(image.meta.height / GRID[0], abs=1)
        # the exported mask is the crop mask of the run's received attention, upsampled by crops
        sidecar = json.loads((out / f"{quadrat}.json").read_text())
        assert sidecar["backend"]["id"] == "prototype-guided" and sidecar["info"]["epoch"] == 1
        assert sidecar["weights"]["id"] == "run:epoch_001+test_resnet" and sidecar["threshold"]["value"] == 0.6
        mask = read_mask(out / f"{quadrat}.mask.png") > 0
        heat = np.load(out / f"{quadrat}.heatmap.npy")
        assert mask.shape == heat.shape == (image.meta.height, image.meta.width)
        np.testing.assert_array_equal(mask, heat >= options.threshold)
        outcome = drain(Segmenter().run(image, "prototype-guided", options.params(),
                                        weights_path=run.checkpoint_path(1), allow_random_weights=True))
        kept = crop_mask(outcome.result.extras["score"], options.threshold)
        rows = (np.arange(image.meta.height) * GRID[0]) // image.meta.height
        cols = (np.arange(image.meta.width) * GRID[1]) // image.meta.width
        np.testing.assert_array_equal(mask, kept[rows][:, cols])
        boxes = [c for s in doc["species"] for c in s["crops"]]
        assert all(kept[c["row"], c["col"]] for c in boxes)


def test_run_checkpoint_and_tiling_checks(setup):
    run, _ = setup
    assert run_checkpoint(run.path).name == "epoch_002.safetensors"
    assert run_checkpoint(run.path, 1).name == "epoch_001.safetensors"
    with pytest.raises(CheckpointError, match="epochs: 1, 2"):
        run_checkpoint(run.path, 7)
    assert run_tiling(run.path, "256x128", 32, 28).grid == GRID
    with pytest.raises(ParamError, match="--crop must match"):
        run_tiling(run.path, crop=64)
    with pytest.raises(ParamError, match="--photo-size"):
        run_tiling(run.path, photo_size="3072x2048")


def test_duplicate_quadrat_ids_are_refused(setup, tmp_path, samples):
    run, options = setup
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        shutil.copy(samples / "quadrats" / "green_meadow.jpg", tmp_path / name / "Q1.jpg")
    with pytest.raises(ParamError, match="share the quadrat id"):
        species_paths([tmp_path / "a", tmp_path / "b"], options, run_dir=run.path, out_dir=tmp_path / "out",
                      segmenter=Segmenter(), allow_random_weights=True)


def test_probability_one_falls_back_to_the_best_top1(setup, quadrats, tmp_path):
    """No stitched image reaches probability 1: each quadrat lists exactly its single most confident species."""
    run, options = setup
    strict = SpeciesOptions(**{**options.__dict__, "prob": 1.0})
    summary = species_paths([quadrats / "CBN-01.jpg"], strict, run_dir=run.path, out_dir=tmp_path / "o",
                            segmenter=Segmenter(disk_cache=None), allow_random_weights=True)
    assert len(summary.species["CBN-01"]) == 1
    with open(tmp_path / "o" / "submission.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [["quadrat_id", "species_ids"], ["CBN-01", f"[{summary.species['CBN-01'][0]}]"]]
