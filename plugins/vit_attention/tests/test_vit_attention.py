"""The vit-attention backend on real ViT architectures with random weights (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from protolens.core.errors import ParamError, WeightsNotFoundError
from protolens.core.imageio import read_image
from protolens.core.params import make_params
from protolens.models.api import RunContext
from protolens.models.registry import Registry
from protolens.services.segment import drain

SAMPLES = Path(__file__).resolve().parents[3] / "resources" / "samples"
SMALL = {"model": "vit_small_patch16_224.dino", "long_side": 160}


@pytest.fixture(scope="module")
def backend():
    registry = Registry.discover()
    return registry.create("vit-attention"), registry.manifest("vit-attention")


@pytest.fixture(scope="module")
def photo():
    return read_image(SAMPLES / "quadrats" / "moss_carpet.jpg")  # 2560 x 1600


def _run(backend, image, ctx=None, **values):
    instance, manifest = backend
    return drain(instance.run(image, make_params(manifest.params, {**SMALL, **values}),
                              ctx or RunContext(allow_random_weights=True)))


def test_non_square_grid_heads_and_range(backend, photo):
    result = _run(backend, photo)
    # long side 160 / patch 16 = 10 columns; 1600/2560 * 10 = 6.25 -> 6 rows.
    assert result.heatmap.values.shape == (6, 10)
    assert result.heatmap.image_size == (1600, 2560)
    assert result.extras["head_attention"].shape == (6, 6, 10)  # ViT-S: 6 heads
    values = result.heatmap.values
    assert values.min() == pytest.approx(0.0, abs=1e-6) and 0.99 < values.max() <= 1.0
    assert result.heatmap.full_resolution().shape == (1600, 2560)


def test_patch_attention_excludes_cls_and_registers(backend, photo):
    """With 4 registers, the patch attention is the CLS row minus CLS and register columns: it sums to < 1."""
    result = _run(backend, photo, model="vit_small_patch14_reg4_dinov2.lvd142m", long_side=140)
    heads = result.extras["head_attention"]
    assert heads.shape[1:] == (6, 10)
    assert np.all(heads.sum(axis=(1, 2)) < 1.0) and np.all(heads >= 0)
    assert result.info["registers"] == 4


def test_deterministic_and_head_selection(backend, photo):
    a, b = _run(backend, photo), _run(backend, photo)
    np.testing.assert_array_equal(a.heatmap.values, b.heatmap.values)
    head2 = _run(backend, photo, head=2)
    raw = a.extras["head_attention"][2]
    expected = (raw - raw.min()) / (raw.max() - raw.min())
    np.testing.assert_allclose(head2.heatmap.values, expected, atol=1e-6)
    assert head2.heatmap.values.max() == 1.0
    fused_max = _run(backend, photo, head_fusion="max").extras["score"]
    np.testing.assert_allclose(fused_max, a.extras["head_attention"].max(axis=0), atol=1e-7)


def test_head_out_of_range_is_a_clear_error(backend, photo):
    with pytest.raises(ParamError, match="6 heads"):
        _run(backend, photo, head=9)


def test_missing_weights_name_both_ways(backend, photo):
    with pytest.raises(WeightsNotFoundError) as info:
        _run(backend, photo, ctx=RunContext())
    assert "protolens weights pull" in str(info.value) and "--weights" in str(info.value)


def test_local_weights_file_is_used_and_identified(backend, photo, tmp_path):
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(3)
    model = timm.create_model("vit_small_patch16_224.dino", pretrained=False, num_classes=0)
    path = tmp_path / "dino_s16.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    instance, manifest = backend
    ctx = RunContext(weights_path=path)
    params = make_params(manifest.params, SMALL)
    weights_id, sha = instance.weights_identity(params, ctx)
    import hashlib

    assert weights_id == "vit_small_patch16_224.dino"
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    with_file = _run(backend, photo, ctx=ctx)
    random_init = _run(backend, photo)
    assert not np.allclose(with_file.extras["score"], random_init.extras["score"])


# --- aggregation modes, windows and the feature cache ----------------------------------------------------


def _counting(monkeypatch):
    import protolens.models.vit.engine as engine

    calls = []
    real = engine.window_summaries

    def counted(*args, **kwargs):
        calls.append(kwargs["full"])
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(engine, "window_summaries", counted)
    return calls


def _ctx(image_id="photo-sha", tmp_path=None):
    return RunContext(allow_random_weights=True, image_id=image_id, cache_dir=tmp_path)


def test_switching_mode_head_and_block_reaggregates_without_the_model(backend, photo, monkeypatch, tmp_path):
    calls = _counting(monkeypatch)
    ctx = _ctx(tmp_path=tmp_path)
    received = _run(backend, photo, ctx, mode="received")
    assert calls == [True]
    for values in ({"mode": "rollout"}, {"mode": "rollout", "head_fusion": "max"},
                   {"mode": "cls", "head": 1}, {"mode": "cls", "block": 3}, {"mode": "received", "head": 2}):
        result = _run(backend, photo, ctx, **values)
        assert result.info["features"] == "cache" and result.heatmap.values.shape == (6, 10)
    assert calls == [True]
    again = _run(backend, photo, ctx, mode="received")
    np.testing.assert_array_equal(again.heatmap.values, received.heatmap.values)
    cls_first = _run(backend, photo, _ctx("other-photo", tmp_path), mode="cls")
    assert calls == [True, False] and cls_first.info["features"] == "computed"


def test_a_rollout_discard_runs_the_model_once_in_float32_then_reaggregates(backend, photo, monkeypatch):
    calls = _counting(monkeypatch)
    ctx = _ctx("discard-photo")
    _run(backend, photo, ctx, mode="rollout")
    assert calls == [True]
    first = _run(backend, photo, ctx, mode="rollout", head_fusion="max", discard_ratio=0.5)
    assert first.info["features"] == "computed" and calls == [True, True]  # float16 matrices cannot rank
    for values in ({"discard_ratio": 0.9}, {"discard_ratio": 0.0}, {"mode": "cls"}, {"mode": "received"}):
        result = _run(backend, photo, ctx, **{"mode": "rollout", "head_fusion": "max", **values})
        assert result.info["features"] == "cache"
    assert calls == [True, True]
    _run(backend, photo, ctx, mode="rollout", head_fusion="mean", discard_ratio=0.5)  # only "max" was kept
    assert calls == [True, True, True]


def _numpy_rollout(attention: np.ndarray, discard_ratio: float) -> np.ndarray:
    """Rollout re-derived in plain numpy from (blocks, heads, T, T) float32 attention: CLS row, all tokens.

    Mean head fusion in float32, the int(T*T*ratio) lowest entries zeroed (never CLS -> CLS), identity
    added, halved, rows renormalised, R_l = A~_l R_(l-1).
    """
    tokens = attention.shape[-1]
    result = np.eye(tokens)
    for fused in attention.mean(axis=1, dtype=np.float32):
        flat = fused.reshape(-1).copy()
        lowest = np.argsort(flat, kind="stable")[:int(flat.size * discard_ratio)]
        flat[lowest[lowest != 0]] = 0.0
        smoothed = (flat.reshape(tokens, tokens).astype(np.float64) + np.eye(tokens)) / 2.0
        result = (smoothed / smoothed.sum(axis=-1, keepdims=True)) @ result
    return result[0]


def test_rollout_with_discard_matches_a_float32_numpy_rollout(backend, photo):
    from protolens.models import api

    name = "vit_small_patch14_dinov2.lvd142m"
    result = _run(backend, photo, _ctx("float32-rollout"), model=name, long_side=112, mode="rollout",
                  discard_ratio=0.9)
    rows, cols = result.info["grid"]
    model = api.load_vit(name, None, "cpu")  # the backend's random-init model (built once, reused)
    spec = api.vit_spec(model)
    working = api.normalise(api.resize_to_grid(photo, rows, cols, spec.patch_size), spec.mean, spec.std)
    import torch

    attention = api.capture_attentions(model, torch.from_numpy(working)[None])
    stacked = np.stack([attention[i][0].numpy() for i in sorted(attention)])
    row = _numpy_rollout(stacked, 0.9)[spec.num_prefix_tokens:].reshape(rows, cols)
    expected = (row - row.min()) / (row.max() - row.min())
    assert np.abs(result.heatmap.values - expected).max() < 1e-3
    np.testing.assert_allclose(result.extras["score"], row, rtol=1e-3, atol=1e-7)


def test_disk_feature_cache_serves_a_new_process_and_rollout_needs_the_model(backend, photo, monkeypatch, tmp_path):
    from protolens.models.registry import Registry

    calls = _counting(monkeypatch)
    _run(backend, photo, _ctx("disk-photo", tmp_path), mode="received")
    fresh = Registry.discover().create("vit-attention").__class__()  # a new instance: empty memory cache
    fresh.manifest = backend[0].manifest
    other = (fresh, backend[1])
    result = _run(other, photo, _ctx("disk-photo", tmp_path), mode="received", head=1)
    assert result.info["features"] == "cache" and calls == [True]
    _run(other, photo, _ctx("disk-photo", tmp_path), mode="rollout")  # rollout matrices live in memory only
    assert calls == [True, True]


def test_modes_give_different_maps_from_the_same_attention(backend, photo):
    ctx = _ctx()
    maps = {mode: _run(backend, photo, ctx, mode=mode).extras["score"] for mode in ("cls", "received", "rollout")}
    assert not np.allclose(maps["cls"], maps["received"]) and not np.allclose(maps["cls"], maps["rollout"])
    assert np.all(maps["received"] > 0) and abs(maps["rollout"].sum() - 1.0) < 0.5


def test_windows_cover_a_large_photo_in_bounded_batches(backend, monkeypatch):
    """A 5640 x 3172 photo, resized to long side 448 and cut into 128-px windows, batch 2."""
    import protolens.models.vit.engine as engine

    seen = []
    real = engine.capture_summaries

    def spy(model, x, **kwargs):
        seen.append(tuple(x.shape))
        return real(model, x, **kwargs)

    monkeypatch.setattr(engine, "capture_summaries", spy)
    rng = np.random.default_rng(0)
    big = rng.integers(0, 255, (3172, 5640, 3), dtype=np.uint8)
    result = _run(backend, big, _ctx("big"), long_side=448, tile_size=128, overlap=0.25, batch_size=2)
    rows, cols = result.info["grid"]
    assert (rows, cols) == (16, 28) and result.heatmap.image_size == (3172, 5640)
    windows = result.info["windows"]
    assert len(windows) > 6 and max(x + w for x, _, w, _ in windows) == pytest.approx(5640)
    assert max(y + h for _, y, _, h in windows) == pytest.approx(3172)
    assert all(shape[0] <= 2 and shape[2:] == (128, 128) for shape in seen)
    assert np.isfinite(result.heatmap.values).all()


def test_hugging_face_models_run_through_the_backend(backend, photo):
    for model, prefix in (("facebook/dinov2-with-registers-small", 5), ("openai/clip-vit-base-patch16", 1)):
        result = _run(backend, photo, _ctx(model), model=model, long_side=112)
        patch = result.info["patch_size"]
        assert result.heatmap.values.shape == tuple(result.info["grid"])
        assert result.info["registers"] == prefix - 1 and patch in (14, 16)


def test_block_out_of_range_is_a_clear_error(backend, photo):
    with pytest.raises(ParamError, match="12 blocks"):
        _run(backend, photo, block=12)
