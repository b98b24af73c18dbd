"""services.regions: cached patch tokens on the device pool (shared with the object-regions backend) and the
CPU path from tokens to a refined region map (the editor's live n_o slider)."""

from __future__ import annotations

import numpy as np
import pytest

from protolens.core.regions import partition, refine
from protolens.core.types import fit_grid
from protolens.services import regions as service
from protolens.services.segment import Segmenter, drain, load_image

SMALL = {"model": "vit_small_patch16_224.dino", "long_side": 224}


@pytest.fixture(scope="module")
def image(samples):
    return load_image(samples / "quadrats" / "forest_floor.jpg")


@pytest.fixture
def counted(monkeypatch):
    """Forward passes of api.patch_tokens (the one model call of the feature path)."""
    import protolens.models.region_features as region_features

    calls = []
    real = region_features.patch_tokens

    def patch_tokens(*args, **kwargs):
        calls.append(kwargs["long_side"])
        return real(*args, **kwargs)

    monkeypatch.setattr(region_features, "patch_tokens", patch_tokens)
    return calls


def _features(segmenter, image, folder, **extra):
    return drain(service.region_features(segmenter, image, allow_random_weights=True, cache_dir=folder,
                                         **{**SMALL, **extra}))


def test_features_are_computed_once_then_read_from_memory_and_disk(image, tmp_path, counted):
    segmenter = Segmenter(disk_cache=None)
    first = _features(segmenter, image, tmp_path)
    height, width = image.rgb.shape[:2]
    rows, cols = round(height * 224 / max(height, width) / 16), round(width * 224 / max(height, width) / 16)
    assert first.tokens.shape == (rows, cols, 384) and first.tokens.dtype == np.float32
    assert not first.from_cache and first.weights_sha256 == "none" and first.image_size == (height, width)
    again = _features(segmenter, image, tmp_path)  # same backend instance: memory
    assert again.from_cache and counted == [224]
    np.testing.assert_array_equal(again.tokens, first.tokens)
    fresh = _features(Segmenter(disk_cache=None), image, tmp_path)  # new registry, empty memory: disk
    assert fresh.from_cache and counted == [224]
    np.testing.assert_array_equal(fresh.tokens, first.tokens)
    other = _features(segmenter, image, tmp_path, long_side=160)  # another long side: another key
    assert not other.from_cache and counted == [224, 160]


def test_tokens_are_the_models_last_layer_patch_tokens(image, tmp_path):
    """numpy/timm re-derivation: forward_features of the resized, normalised photo minus the CLS token."""
    import cv2
    import torch

    from protolens.models.vit.loading import load_vit

    segmenter = Segmenter(disk_cache=None)
    grid = _features(segmenter, image, None).tokens
    rows, cols = grid.shape[:2]
    model = load_vit("vit_small_patch16_224.dino", None, "cpu")
    resized = cv2.resize(image.rgb, (cols * 16, rows * 16), interpolation=cv2.INTER_AREA).astype(np.float32)
    x = (resized / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    with torch.no_grad():
        tokens = model.forward_features(torch.from_numpy(x.transpose(2, 0, 1)[None].astype(np.float32)))
    expected = tokens[0, 1:].numpy().reshape(rows, cols, -1)
    np.testing.assert_allclose(grid, expected, atol=2e-4, rtol=1e-4)


def test_registers_are_dropped(image):
    grid = _features(Segmenter(disk_cache=None), image, None, model="vit_small_patch14_reg4_dinov2.lvd142m",
                     long_side=112).tokens
    height, width = image.rgb.shape[:2]
    rows, cols = round(height * 112 / max(height, width) / 14), round(width * 112 / max(height, width) / 14)
    assert grid.shape[:2] == (rows, cols)  # 1 CLS + 4 registers removed, the rest reshaped to the grid


def test_the_backend_and_the_service_share_their_features(image, counted, monkeypatch, tmp_path):
    monkeypatch.setenv("PROTOLENS_CACHE_DIR", str(tmp_path))  # the folder both use by default
    segmenter = Segmenter(disk_cache=None)
    outcome = drain(segmenter.run(image, "object-regions", {**SMALL, "regions": 4}, allow_random_weights=True))
    assert outcome.result.info["features"] == "computed" and len(counted) == 1
    features = drain(service.region_features(segmenter, image, allow_random_weights=True, **SMALL))
    assert features.from_cache and len(counted) == 1
    ids = service.regions_from_features(features, image.rgb, 4)
    np.testing.assert_array_equal(ids, outcome.result.extras["region_ids"])


def test_regions_from_features_refines_and_reuses_the_guide(image):
    tokens = np.random.default_rng(0).normal(size=(9, 14, 32)).astype(np.float32)
    for n in (6, 8, 3):
        ids = service.regions_from_features(tokens, image.rgb, n, seed=1, spatial=0.5)
        assert ids.shape == fit_grid(image.rgb.shape[:2], 1024) and ids.dtype == np.int32
        assert np.array_equal(np.unique(ids), np.arange(n))
        coarse = partition(tokens, n, seed=1, spatial=0.5)
        np.testing.assert_array_equal(ids, refine(coarse, image.rgb, n))
    assert sum(ref() is image.rgb for ref, _, _ in service._GUIDES) == 1  # prepared once for this photo
    grid = service.regions_from_features(tokens, image.rgb, 5, refined=False)
    np.testing.assert_array_equal(grid, partition(tokens, 5))
