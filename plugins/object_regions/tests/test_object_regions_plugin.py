"""The object-regions backend through the Segmenter on a sample quadrat, random weights (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from protolens.core.errors import ParamError, WeightsNotFoundError
from protolens.core.regions import partition
from protolens.services.segment import Segmenter, drain, load_image

SAMPLES = Path(__file__).resolve().parents[3] / "resources" / "samples"
SMALL = {"model": "vit_small_patch16_224.dino", "long_side": 224, "max_side": 512}


@pytest.fixture(scope="module")
def photo():
    return load_image(SAMPLES / "quadrats" / "moss_carpet.jpg")  # 2560 x 1600


@pytest.fixture(autouse=True)
def own_cache(monkeypatch, tmp_path):
    """Each test its own cache folder (the backend's disk cache lives under it)."""
    monkeypatch.setenv("PROTOLENS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def forwards(monkeypatch):
    import protolens.models.region_features as region_features

    calls = []
    real = region_features.patch_tokens

    def patch_tokens(*args, **kwargs):
        calls.append(kwargs["long_side"])
        return real(*args, **kwargs)

    monkeypatch.setattr(region_features, "patch_tokens", patch_tokens)
    return calls


def _run(segmenter, photo, **values):
    return drain(segmenter.run(photo, "object-regions", {**SMALL, **values}, allow_random_weights=True))


def test_regions_layer_of_n_masks_covering_the_photo(photo, forwards):
    segmenter = Segmenter(disk_cache=None)
    outcome = _run(segmenter, photo, regions=6, seed=4)
    result = outcome.result
    assert outcome.kind == "segmentation" and result.label_map is None
    regions = result.regions
    assert regions.masks.shape == (6, 320, 512) and regions.image_size == (1600, 2560)
    assert regions.labels == [f"region {i}" for i in range(1, 7)]
    np.testing.assert_array_equal(regions.masks.sum(axis=0), 1)  # a partition: every pixel in exactly one
    assert all(regions.masks[i].any() for i in range(6))
    assert regions.mask(0).shape == (1600, 2560)
    coarse = result.extras["coarse_ids"]
    assert coarse.shape == (9, 14)  # 224 px long side / 16: 14 columns, 1600/2560 * 14 = 8.75 -> 9 rows
    heat = result.heatmap.values
    assert heat.shape == (320, 512) and heat.min() == 0.0 and heat.max() == 1.0
    np.testing.assert_allclose(heat * 5, np.argmax(regions.masks, axis=0))
    info = result.info
    assert (info["regions"], info["seed"], info["features"], info["grid"]) == (6, 4, "computed", [9, 14])
    assert "guided filter" in info["refinement"] and "Voronoi" in info["partition"]
    assert forwards == [224]


def test_another_n_o_seed_or_spatial_weight_reuses_the_features(photo, forwards):
    segmenter = Segmenter(disk_cache=None)
    first = _run(segmenter, photo, regions=3, seed=9)
    assert forwards == [224] and first.result.info["features"] == "computed"
    for values in ({"regions": 8, "seed": 9}, {"regions": 3, "seed": 10}, {"regions": 3, "spatial": 2.0},
                   {"regions": 5, "refine": False}):
        outcome = _run(segmenter, photo, **values)
        assert outcome.result.info["features"] == "cache" and not outcome.from_cache
    assert forwards == [224]  # one forward pass for all five runs
    grid = _run(segmenter, photo, regions=5, refine=False).result
    assert grid.regions.masks.shape == (5, 9, 14) and grid.info["refinement"].startswith("none")
    # a new process (empty memory) finds the tokens on disk: the Segmenter's cache folder
    fresh = Segmenter(disk_cache=None)
    fresh.registry.create("object-regions")._memory.clear()
    assert _run(fresh, photo, regions=7, seed=9).result.info["features"] == "cache" and forwards == [224]


def test_partition_is_the_core_partition_of_the_cached_tokens(photo):
    segmenter = Segmenter(disk_cache=None)
    result = _run(segmenter, photo, regions=4, seed=2, spatial=0.5, iterations=2, refine=False).result
    from protolens.services.regions import region_features

    features = drain(region_features(segmenter, photo, model=SMALL["model"], long_side=SMALL["long_side"],
                                     allow_random_weights=True))
    assert features.from_cache
    tokens = features.tokens
    np.testing.assert_array_equal(result.extras["coarse_ids"], partition(tokens, 4, seed=2, spatial=0.5,
                                                                         iterations=2))


def test_too_many_regions_and_missing_weights_are_clear_errors(photo):
    segmenter = Segmenter(disk_cache=None)
    with pytest.raises(ParamError, match="give 1..28 regions for a 4x7 patch grid"):
        _run(segmenter, photo, regions=64, long_side=112)  # 112 / 16 = 7 columns, 4.375 -> 4 rows
    with pytest.raises(WeightsNotFoundError):
        drain(segmenter.run(photo, "object-regions", SMALL))
