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
    expected = (raw - raw.min()) / (raw.max() - raw.min() + 1e-6)
    np.testing.assert_allclose(head2.heatmap.values, expected, atol=1e-5)
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
