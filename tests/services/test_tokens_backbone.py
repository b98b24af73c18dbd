"""Tile tokens load their backbone through the vit-attention backend: one weights and dtype rule, not two."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from protolens.core.errors import ParamError, WeightsNotFoundError
from protolens.models.registry import Registry
from protolens.services.segment import Segmenter, drain, load_image
from protolens.services.tokens import crop_tokens

MODEL = "vit_small_patch16_224.dino"
SMALL = {"grid": (2, 3), "crop": 32, "input_size": 64, "batch_size": 4, "cache": None}


@pytest.fixture
def spied(monkeypatch):
    """A segmenter on the CPU whose vit-attention backend records what it is asked."""
    segmenter = Segmenter(Registry.discover(), device="cpu", disk_cache=None)
    backend = segmenter.registry.create("vit-attention")
    calls: dict[str, list] = {"identity": [], "load": []}
    real_identity, real_load = backend.weights_identity, backend.load_model

    def identity(params, ctx):
        calls["identity"].append((params, ctx))
        return real_identity(params, ctx)

    def load(params, ctx):
        calls["load"].append((params, ctx))
        return real_load(params, ctx)

    monkeypatch.setattr(backend, "weights_identity", identity)
    monkeypatch.setattr(backend, "load_model", load)
    return segmenter, calls


def test_weights_and_dtype_come_from_the_backend(spied, photo_folder, tmp_path):
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(5)
    model = timm.create_model(MODEL, pretrained=False, num_classes=0)
    path = tmp_path / "dino.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    segmenter, calls = spied
    image = load_image(photo_folder / "b_dahlia.jpg")
    grid = drain(crop_tokens(segmenter, image, MODEL, weights_path=path, **SMALL))
    assert grid.weights_id == MODEL and grid.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    (params, ctx), = calls["identity"]
    (load_params, load_ctx), = calls["load"]
    assert params.model == load_params.model == MODEL and ctx.weights_path == load_ctx.weights_path == path
    assert load_ctx.device == "cpu" and load_ctx.resolved_dtype() == "float32"
    assert grid.tokens.shape == (2, 3, 384) and np.isfinite(grid.tokens).all()


def test_random_weights_only_when_allowed(spied, photo_folder):
    segmenter, _ = spied
    image = load_image(photo_folder / "b_dahlia.jpg")
    with pytest.raises(WeightsNotFoundError, match="protolens weights pull"):
        drain(crop_tokens(segmenter, image, MODEL, **SMALL))
    grid = drain(crop_tokens(segmenter, image, MODEL, allow_random_weights=True, **SMALL))
    assert (grid.weights_id, grid.weights_sha256) == (f"{MODEL}:random-init", "none")


@pytest.mark.parametrize(("values", "flag"), [({"model": "resnet50"}, "--model"),
                                              ({"model": MODEL, "precision": "int8"}, "--precision")])
def test_a_model_or_precision_the_backend_does_not_offer_is_a_param_error(spied, photo_folder, values, flag):
    segmenter, calls = spied
    image = load_image(photo_folder / "b_dahlia.jpg")
    with pytest.raises(ParamError, match=flag):
        drain(crop_tokens(segmenter, image, allow_random_weights=True, **values, **SMALL))
    assert calls == {"identity": [], "load": []}
