"""The prototype-guided backend on a tiny random run (ViT-S/14 backbone at crop input 28, a 4 x 8 crop grid)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from protolens.core.errors import CheckpointError, ParamError, WeightsNotFoundError
from protolens.core.imageio import read_image
from protolens.core.indicators import crop_mask, normalise_received
from protolens.core.params import make_params
from protolens.core.runs import RunFolder
from protolens.models.api import RunContext
from protolens.models.prototype.narrow_vit import NarrowViT, NarrowViTConfig
from protolens.models.registry import Registry
from protolens.services.segment import drain

SAMPLES = Path(__file__).resolve().parents[3] / "resources" / "samples"
BACKBONE = "vit_small_patch14_dinov2.lvd142m"
GRID = (4, 8)  # photo 256 x 128, crop 32


def make_run(path: Path, epochs: int = 2) -> RunFolder:
    """A run folder with ``epochs`` random narrow-ViT checkpoints on a random ViT-S/14 backbone."""
    run = RunFolder(path)
    config = NarrowViTConfig(grid=GRID, prototypes=5, token_dim=384, width=64, depth=2, heads=4)
    run.write_config({"model": "prototype-vit", "narrow_vit": config.to_json(),
                      "tiling": {"photo_size": [256, 128], "crop": 32, "crop_input": 28, "grid": list(GRID)},
                      "backbone": {"model": BACKBONE, "weights": None, "weights_sha256": "none"}})
    for epoch in range(1, epochs + 1):
        torch.manual_seed(epoch)
        save_file(NarrowViT(config).state_dict(), str(run.checkpoint_path(epoch)))
        run.write_epoch(epoch, {"loss": 1.0 / epoch, "steps": epoch, "lr": 1e-4, "indicators": {}})
    return run


def make_classifier(folder: Path, classes: int = 3) -> dict[str, str]:
    """A random timm test classifier saved to a file, and a class mapping CSV with names."""
    torch.manual_seed(7)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=classes)
    weights = folder / "classifier.safetensors"
    save_file(model.state_dict(), str(weights))
    mapping = folder / "mapping.csv"
    with open(mapping, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class_index", "species_id", "name"])
        writer.writerows([i, 1000 + i, f"Species {i}"] for i in range(classes))
    return {"classifier": "test_resnet", "classifier_weights": str(weights), "class_mapping": str(mapping),
            "classifier_input": 32, "grid": 3}


@pytest.fixture(scope="module")
def backend():
    registry = Registry.discover()
    return registry.create("prototype-guided"), registry.manifest("prototype-guided")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def photo():
    return read_image(SAMPLES / "quadrats" / "green_meadow.jpg")  # 1280 x 1024


def _ctx(weights, **kwargs):
    return RunContext(weights_path=Path(weights), allow_random_weights=True, **kwargs)


def _run(backend, image, weights, ctx=None, **values):
    instance, manifest = backend
    return drain(instance.run(image, make_params(manifest.params, values), ctx or _ctx(weights)))


def test_manifest_declares_a_weights_file(backend):
    assert "epoch_###.safetensors" in backend[1].weights_file


def test_attention_only_heatmap_mask_and_score(backend, run, photo):
    result = _run(backend, photo, run.checkpoint_path(1), threshold=0.6)
    score = result.extras["score"]
    assert score.shape == GRID and score.dtype == np.float32
    assert result.heatmap.values.shape == GRID and result.heatmap.interpolation == "nearest"
    heat = result.heatmap.full_resolution()
    assert heat.shape == photo.shape[:2] and result.heatmap.image_size == photo.shape[:2]
    assert heat.min() >= 0.0 and heat.max() <= 1.0 and heat.max() > 0.99
    assert result.suggested_threshold == 0.6
    # the mask a user gets (heatmap >= threshold) is the crop mask upsampled: one flat block per crop
    expected = crop_mask(score, 0.6)
    assert 0 < expected.sum() < expected.size
    height, width = photo.shape[:2]
    rows = (np.arange(height) * GRID[0]) // height
    cols = (np.arange(width) * GRID[1]) // width
    np.testing.assert_array_equal(heat >= 0.6, expected[rows][:, cols])
    np.testing.assert_allclose(heat[rows == 0][:, cols == 0], normalise_received(score)[0, 0])
    assert result.scores_table is None and result.regions is None
    assert result.info["epoch"] == 1 and result.info["kept_crops"] == int(expected.sum())


def test_epochs_differ_in_map_and_key(backend, run, photo):
    instance, manifest = backend
    params = make_params(manifest.params, {})
    one = instance.weights_identity(params, _ctx(run.checkpoint_path(1)))
    two = instance.weights_identity(params, _ctx(run.checkpoint_path(2)))
    assert one[0].endswith("epoch_001") and two[0].endswith("epoch_002") and one[1] != two[1]
    assert one[1] == run.epoch(1).sha256  # attention only: the checkpoint's own sha256
    # a run folder resolves to its chosen epoch, else the last
    assert instance.weights_identity(params, _ctx(run.path)) == two
    run.choose(1)
    try:
        assert instance.weights_identity(params, _ctx(run.path)) == one
    finally:
        (run.path / "chosen.json").unlink()
    a = _run(backend, photo, run.checkpoint_path(1))
    b = _run(backend, photo, run.checkpoint_path(2))
    assert not np.array_equal(a.extras["score"], b.extras["score"])


def test_tokens_are_shared_across_epochs(backend, run, photo, tmp_path):
    ctx = _ctx(run.checkpoint_path(1), cache_dir=tmp_path, image_id="a" * 64)
    first = _run(backend, photo, None, ctx)
    ctx2 = _ctx(run.checkpoint_path(2), cache_dir=tmp_path, image_id="a" * 64)
    second = _run(backend, photo, None, ctx2)
    assert first.info["tokens"] == "computed" and second.info["tokens"] == "memory"
    fresh = type(backend[0])()  # a new process: tokens come from the disk cache
    fresh.manifest = backend[0].manifest
    again = drain(fresh.run(photo, make_params(backend[1].params, {}), ctx))
    assert again.info["tokens"] == "disk"
    np.testing.assert_array_equal(again.extras["score"], first.extras["score"])


def test_missing_or_bad_weights_are_typed_errors(backend, run, photo, tmp_path):
    instance, manifest = backend
    params = make_params(manifest.params, {})
    with pytest.raises(WeightsNotFoundError):
        instance.weights_identity(params, RunContext())
    with pytest.raises(CheckpointError):
        instance.weights_identity(params, _ctx(tmp_path))
    with pytest.raises(WeightsNotFoundError):  # a random backbone needs allow_random_weights
        drain(instance.run(photo, params, RunContext(weights_path=run.checkpoint_path(1))))
    with pytest.raises(ParamError):
        _run(backend, photo, run.checkpoint_path(1), grid=4)


def test_classifier_species_table_and_regions(backend, run, photo, tmp_path):
    values = make_classifier(tmp_path)
    result = _run(backend, photo, run.checkpoint_path(1), threshold=0.5, prob=0.0, **values)
    kept = crop_mask(result.extras["score"], 0.5)
    np.testing.assert_array_equal(result.extras["kept"], np.argwhere(kept))
    table, regions = result.scores_table, result.regions
    assert table is not None and regions is not None and len(table.names) == len(regions.labels) >= 1
    assert all(name.split()[0] in {"1000", "1001", "1002"} for name in table.names)
    assert table.column == "probability" and np.all((table.values > 0) & (table.values <= 1))
    # prob 0: every kept crop's top-1 is listed; each species' region is exactly the crops whose top-1 it is
    top = result.extras["top1"]
    for label, mask in zip(regions.labels, regions.masks, strict=True):
        index = int(label) - 1000
        expected = np.zeros(GRID, bool)
        expected[tuple(result.extras["kept"][top == index].T)] = True
        np.testing.assert_array_equal(mask, expected)
    assert np.array_equal(np.logical_or.reduce(regions.masks), kept)
    species = result.info["species"]
    assert {s["species_id"] for s in species} == set(regions.labels)
    x, y, w, h = species[0]["crops"][0]["box"]
    row, col = species[0]["crops"][0]["row"], species[0]["crops"][0]["col"]
    region = regions.mask(regions.labels.index(species[0]["species_id"]))
    full = result.heatmap.full_resolution()
    assert region[y:y + h, x:x + w].all() and full[y, x] == full[y + h - 1, x + w - 1]
    assert (x, y) == (col * photo.shape[1] // GRID[1], row * photo.shape[0] // GRID[0])


def test_classifier_changes_the_key(backend, run, tmp_path):
    instance, manifest = backend
    values = make_classifier(tmp_path)
    plain = instance.weights_identity(make_params(manifest.params, {}), _ctx(run.checkpoint_path(1)))
    with_classifier = instance.weights_identity(make_params(manifest.params, values), _ctx(run.checkpoint_path(1)))
    assert plain[1] != with_classifier[1]
    Path(values["class_mapping"]).write_text("class_index,species_id\n0,1\n1,2\n2,3\n")
    changed = instance.weights_identity(make_params(manifest.params, values), _ctx(run.checkpoint_path(1)))
    assert changed[1] != with_classifier[1]


def test_segmenter_keys_one_result_per_epoch(run):
    """The epoch comparison's call: attention only, one checkpoint per call; results cached per epoch."""
    from protolens.services.segment import Segmenter, load_image

    segmenter = Segmenter(disk_cache=None)
    image = load_image(SAMPLES / "quadrats" / "green_meadow.jpg")
    outcomes = [drain(segmenter.run(image, "prototype-guided", {"classifier": ""}, weights_path=run.checkpoint_path(e),
                                    allow_random_weights=True)) for e in (1, 2, 1)]
    assert outcomes[0].key != outcomes[1].key and outcomes[2].key == outcomes[0].key
    assert not outcomes[0].from_cache and outcomes[2].from_cache
    assert outcomes[0].weights_sha256 == run.epoch(1).sha256 and outcomes[1].weights_id.endswith("epoch_002")
    assert not np.array_equal(outcomes[0].result.extras["score"], outcomes[1].result.extras["score"])


def test_classifier_head_must_match_the_mapping(backend, run, photo, tmp_path):
    values = make_classifier(tmp_path, classes=3)
    Path(values["class_mapping"]).write_text("".join(f"{i},{i + 1}\n" for i in range(4)))  # 4 classes, head of 3
    with pytest.raises(CheckpointError, match="4 classes"):
        _run(backend, photo, run.checkpoint_path(1), **values)
    instance, manifest = backend
    params = make_params(manifest.params, {**values, "classifier_weights": ""})
    with pytest.raises(WeightsNotFoundError, match="classifier"):  # no weights file, random weights not allowed
        instance.weights_identity(params, RunContext(weights_path=run.checkpoint_path(1)))
