"""The patch-selection backend: rollout selection with a live top-M threshold, and with a trained selector."""

from __future__ import annotations

import numpy as np
import pytest

from protolens.core.errors import CheckpointError
from protolens.core.params import make_params
from protolens.core.runs import RunFolder
from protolens.core.super_patches import super_patch_scores, top_m
from protolens.models.api import RunContext
from protolens.models.registry import Registry
from protolens.services.segment import drain

SMALL = {"model": "vit_small_patch16_224.dino", "input": 64}  # 4x4 patches -> 2x2 super-patches


@pytest.fixture(scope="module")
def backend():
    registry = Registry.discover()
    return registry.create("patch-selection"), registry.manifest("patch-selection")


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(0)
    return (rng.random((90, 120, 3)) * 255).astype(np.uint8)


def _run(backend, image, image_id="photo-1", **values):
    instance, manifest = backend
    ctx = RunContext(allow_random_weights=True, image_id=image_id)
    return drain(instance.run(image, make_params(manifest.params, {**SMALL, **values}), ctx))


def test_rollout_selection_threshold_is_the_m_slider(backend, photo):
    result = _run(backend, photo, keep=3)
    heat = result.heatmap.values
    assert heat.shape == (2, 2) and result.heatmap.interpolation == "nearest"
    assert result.heatmap.image_size == (90, 120)
    kept = top_m(super_patch_scores(result.extras["score"]), 3)  # the fixed 2x2 grouping of the rollout
    np.testing.assert_array_equal(heat >= result.suggested_threshold, kept)
    np.testing.assert_array_equal(result.extras["kept"], kept)
    assert sorted(result.heatmap.values.ravel().tolist()) == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert [(heat >= t).sum() for t in (0.0, 0.3, 0.6, 0.9)] == [4, 3, 2, 1]  # moving the threshold moves M
    regions = result.regions
    assert regions.labels == ["kept", "dropped"]
    np.testing.assert_array_equal(regions.masks[0], kept)
    np.testing.assert_array_equal(regions.masks[1], ~kept)
    assert regions.mask(0).shape == (90, 120)
    assert result.info["selection"] == "rollout" and result.info["keep"] == 3 and len(result.info["kept_indices"]) == 3
    # a new M re-ranks the cached scores: no second model run
    again = _run(backend, photo, keep=1)
    assert again.info["features"] == "memory" and again.regions.masks[0].sum() == 1
    assert _run(backend, photo, keep=40).info["keep"] == 4  # clipped to the super-patch count


def _selector_run(tmp_path, in_dim: int):
    from protolens.models.patch_selector import PatchSelector
    from protolens.models.training import save_checkpoint

    run = RunFolder(tmp_path / "run")
    run.write_config({"model": "patch-selector", "selector": {"in_dim": in_dim, "hidden": 512}, "input": 64,
                      "keep": 2, "backbone": {"model": "vit_small_patch16_224.dino", "weights": "",
                                              "weights_sha256": "none"}})
    save_checkpoint(run.checkpoint_path(1), PatchSelector(in_dim), {"epoch": 1, "steps": 1})
    run.write_epoch(1, {"loss": 0.5, "steps": 1, "lr": 1e-3, "indicators": {"agreement_iou": 0.5}})
    return run


def test_with_a_selector_no_rollout_runs(backend, photo, tmp_path, monkeypatch):
    import protolens.models.patch_selector as selector_module

    def no_rollout(*args, **kwargs):
        raise AssertionError("the rollout pass ran")

    monkeypatch.setattr(selector_module, "rollout_and_embeddings", no_rollout)
    run = _selector_run(tmp_path, 4 * 384)
    result = _run(backend, photo, "photo-2", keep=2, selector=str(run.path), input=224)  # the run's input wins
    assert result.info["selection"] == "selector" and result.info["epoch"] == 1
    assert "score" not in result.extras and result.heatmap.values.shape == (2, 2)
    assert (result.heatmap.values >= result.suggested_threshold).sum() == 2
    from protolens.models.patch_selector import load_selector, predict_not_kept

    instance = backend[0]
    params = make_params(backend[1].params, {**SMALL, "selector": str(run.checkpoint_path(1))})
    _, embeddings, _ = instance.features(photo, params, RunContext(allow_random_weights=True), rollout=False)
    selector = load_selector(run.checkpoint_path(1), {"in_dim": 4 * 384})
    np.testing.assert_allclose(result.extras["super_scores"], 1 - predict_not_kept(selector, embeddings), atol=1e-6)
    ident = instance.weights_identity(params, RunContext(allow_random_weights=True))
    assert ident[0] == "run:epoch_001"


def test_bad_selector_and_odd_grid(backend, photo, tmp_path):
    run = _selector_run(tmp_path, 12)
    with pytest.raises(CheckpointError):
        _run(backend, photo, selector=str(run.path))
    with pytest.raises(CheckpointError):
        _run(backend, photo, selector=str(tmp_path))
    from protolens.core.errors import ParamError

    with pytest.raises(ParamError, match="even"):
        _run(backend, photo, input=80)  # 80 / 16 = 5 patches a side: odd
