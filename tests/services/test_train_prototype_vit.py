"""Prototype-ViT training end to end on sample quadrats, tiny random backbone (arXiv 2512.19957, steps 3-5)."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from protolens.core.errors import CheckpointError
from protolens.core.indicators import crop_mask
from protolens.core.jobs import CancelToken
from protolens.core.metrics import iou
from protolens.core.runs import RunFolder
from protolens.models import api
from protolens.models.registry import Registry
from protolens.services.pipeline import Tiling
from protolens.services.segment import Segmenter, drain
from protolens.services.training import (
    MODEL_ID,
    PHASE_TOKENS,
    ProbeIndicators,
    quadrat_paths,
    quadrat_tokens,
    train_prototype_vit,
)

BACKBONE = "vit_small_patch14_dinov2.lvd142m"
TILING = Tiling((256, 128), 32, 28)  # 4 rows x 8 cols of 32-px crops, each fed at 28 px (2 x 2 patches)
TINY = {"tiling": TILING, "backbone": BACKBONE, "allow_random_weights": True, "depth": 1, "heads": 2,
        "lr": 1e-3, "accumulation": 2, "probe": 2}


@pytest.fixture
def quadrats(tmp_path, samples):
    folder = tmp_path / "quadrats"
    folder.mkdir()
    for name in ("forest_floor.jpg", "green_meadow.jpg", "moss_carpet.jpg"):
        shutil.copy(samples / "quadrats" / name, folder / name)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def write_prototypes(path, k=3, dim=384, seed=0):
    from safetensors.numpy import save_file

    save_file({"prototypes": np.random.default_rng(seed).normal(size=(k, dim)).astype(np.float32)}, str(path))
    return path


@pytest.fixture
def setup(tmp_path, monkeypatch, quadrats):
    """An isolated token cache, a CPU segmenter, K = 3 prototypes, and a counter of backbone runs."""
    monkeypatch.setenv("PROTOLENS_CACHE_DIR", str(tmp_path / "cache"))
    runs = []
    real = api.crop_token_grid

    def counting(*args, **kwargs):
        runs.append(kwargs["grid"])
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(api, "crop_token_grid", counting)
    segmenter = Segmenter(Registry.discover(), device="cpu", disk_cache=None)
    return segmenter, quadrats, write_prototypes(tmp_path / "prototypes.safetensors"), runs


def received_maps(run, epoch, arch, tokens):
    """Received attention of ``tokens`` under the run's checkpoint of ``epoch``, (rows, cols) each."""
    from protolens.models.prototype.narrow_vit import NarrowViT
    from protolens.models.training import load_checkpoint

    model = load_checkpoint(run.checkpoint_path(epoch), NarrowViT(arch)).eval()
    return ProbeIndicators(tokens, run, arch, 0.6).received(model)


def test_training_end_to_end_writes_config_checkpoints_and_indicators_then_resumes_from_cached_tokens(
        setup, tmp_path):
    segmenter, quadrats, prototypes, runs = setup
    texts = []
    summary = drain(train_prototype_vit(segmenter, quadrats, prototypes, tmp_path / "run", epochs=2, **TINY),
                    lambda p: texts.append(p.text))
    assert runs == [(4, 8)] * 3  # one backbone run per readable quadrat, not one per epoch
    assert summary.epoch == 2 and summary.trained == (1, 2) and summary.steps == 4  # ceil(3 / 2) x 2
    assert [name for name, _ in summary.skipped] == [str((quadrats / "broken.jpg").resolve())]
    assert any(t.startswith(PHASE_TOKENS) and "skipped" in t for t in texts)
    assert any(t.startswith("epoch 2/2 step 4/4 loss ") for t in texts)

    run = RunFolder(tmp_path / "run")
    config = run.config()
    assert config["model"] == MODEL_ID and config["narrow_vit"]["grid"] == [4, 8]
    assert config["narrow_vit"]["prototypes"] == 3 and config["narrow_vit"]["token_dim"] == 384
    assert config["tiling"] == {"photo_size": [256, 128], "crop": 32, "crop_input": 28, "grid": [4, 8]}
    assert config["backbone"] == {"model": BACKBONE, "weights": f"{BACKBONE}:random-init", "weights_sha256": "none"}
    assert config["prototypes"]["k"] == 3 and config["prototypes"]["dim"] == 384
    assert len(config["prototypes"]["sha256"]) == 64
    assert [p.rsplit("/", 1)[1] for p in config["quadrats"]] == ["forest_floor.jpg", "green_meadow.jpg",
                                                                  "moss_carpet.jpg"]
    assert config["probe"] == config["quadrats"][:2] and config["threshold"] == 0.6
    assert config["train"]["epochs"] == 2 and config["train"]["accumulation"] == 2
    records = run.epochs()
    assert [(r.epoch, r.steps) for r in records] == [(1, 2), (2, 4)]
    for record in records:
        assert set(record.indicators) == {"loss", "entropy", "border_share", "iou_previous"}
        assert 0 < record.indicators["entropy"] <= 1 and 0 <= record.indicators["border_share"] <= 1
        assert record.indicators["loss"] == record.loss and math.isfinite(record.loss)
    assert math.isnan(records[0].indicators["iou_previous"]) and 0 <= records[1].indicators["iou_previous"] <= 1

    again = drain(train_prototype_vit(segmenter, quadrats, prototypes, tmp_path / "run", epochs=3, **TINY))
    assert runs == [(4, 8)] * 3  # the rerun reads every quadrat's tokens from the disk cache
    assert again.resumed_from == 2 and again.trained == (3,) and again.steps == 6
    # epoch 3's IoU is against epoch 2's masks, recomputed from its checkpoint after the resume
    from protolens.models.prototype.narrow_vit import NarrowViTConfig

    arch = NarrowViTConfig.from_json(run.config()["narrow_vit"])
    tokens = drain(quadrat_tokens(segmenter, quadrat_paths(quadrats)[:2], TILING, backbone=BACKBONE,
                                  weights_path=None, precision="auto", allow_random_weights=True,
                                  cancel=CancelToken()))
    assert runs == [(4, 8)] * 3
    maps = {e: received_maps(run, e, arch, tokens.tokens) for e in (2, 3)}
    expected = np.mean([iou(crop_mask(a, 0.6), crop_mask(b, 0.6)) for a, b in zip(maps[3], maps[2], strict=True)])
    assert run.epoch(3).indicators["iou_previous"] == pytest.approx(expected)


def test_prototypes_of_another_backbone_or_file_are_refused(setup, tmp_path):
    segmenter, quadrats, _, runs = setup
    wide = write_prototypes(tmp_path / "wide.safetensors", dim=768)
    with pytest.raises(CheckpointError, match="prototypes are 768 wide but .* tokens are 384"):
        drain(train_prototype_vit(segmenter, quadrats, wide, tmp_path / "run", epochs=1, **TINY))
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        drain(train_prototype_vit(segmenter, quadrats, tmp_path / "junk.safetensors", tmp_path / "run", epochs=1,
                                  **TINY))
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_run_of_another_architecture_is_not_resumed(setup, tmp_path):
    segmenter, quadrats, prototypes, _ = setup
    drain(train_prototype_vit(segmenter, quadrats, prototypes, tmp_path / "run", epochs=1, **TINY))
    with pytest.raises(CheckpointError, match="another narrow_vit"):
        drain(train_prototype_vit(segmenter, quadrats, prototypes, tmp_path / "run", epochs=2,
                                  **{**TINY, "depth": 2}))
    assert [r.epoch for r in RunFolder(tmp_path / "run").epochs()] == [1]
