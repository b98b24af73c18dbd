"""The keypoint-labeling backend through the Segmenter, on a bank of the bundled bird samples (random ViT-S/14
weights at a 56 px input: 4 x 4 tokens, so every run takes well under a second)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from protolens.core.bank_files import read_bank_cache
from protolens.core.errors import ParamError, WeightsNotFoundError
from protolens.core.hashing import sha256_json
from protolens.core.params import make_params
from protolens.models import api
from protolens.models.api import RunContext
from protolens.models.registry import Registry
from protolens.services.bank import build_bank
from protolens.services.segment import Segmenter, drain, load_image

SAMPLES = Path(__file__).resolve().parents[3] / "resources" / "samples"
BACKEND = "keypoint-labeling"


@pytest.fixture(scope="module")
def registry():
    return Registry.discover()


@pytest.fixture(scope="module")
def bank_dir(tmp_path_factory, registry):
    root = tmp_path_factory.mktemp("bank") / "birds"
    shutil.copytree(SAMPLES / "birds", root)
    drain(build_bank(Segmenter(registry, disk_cache=None), root, input_size=56, allow_random_weights=True))
    return root


def _explain(registry, bank_dir, name="lark.png", **values):
    """(the Segmenter's outcome, the engine's explanation of the same photo with the same model)."""
    image = load_image(bank_dir / name)
    params = {"bank": str(bank_dir), "k": 3, **values}
    outcome = drain(Segmenter(registry, disk_cache=None).run(image, BACKEND, params, allow_random_weights=True))
    bank = read_bank_cache(bank_dir)
    model = api.load_vit(bank.model, None, "cpu")
    expected = drain(api.explain_image(model, image.rgb, bank, k=3, segments=values.get("segments", "cosegment"),
                                       query_sha256=image.meta.sha256))
    return image, outcome, expected


def test_keypoints_are_the_kept_matches(registry, bank_dir):
    image, outcome, expected = _explain(registry, bank_dir)
    result = outcome.result
    assert outcome.kind == "explanation"
    kept = expected.kept(False)
    assert len(kept) > 0
    points = result.keypoints
    assert len(points.pairs) == len(kept)
    # every pair joins a query centroid and the matched prototype's centroid, in match order
    for (i, j), score, match in zip(points.pairs, points.pair_scores, kept, strict=True):
        assert points.groups[i] == "query"
        assert points.groups[j] == expected.prototypes[match.prototype].name
        np.testing.assert_allclose(points.xy[i], match.query_xy, atol=1e-3)
        np.testing.assert_allclose(points.xy[j], match.prototype_xy, atol=1e-3)
        assert points.labels[i] == match.query_label and points.labels[j] == match.prototype_label
        assert score == pytest.approx(match.similarity, abs=1e-5)
    # the photo itself (same bytes in the bank) is never its own prototype
    assert "lark.png" not in [p.name for p in expected.prototypes]


def test_scores_table_is_the_vote(registry, bank_dir):
    _, outcome, expected = _explain(registry, bank_dir)
    table = outcome.result.scores_table
    vote = expected.vote(False)
    assert table.column == "votes"
    assert dict(table.rows()) == pytest.approx(dict(zip(vote.classes, vote.scores.tolist(), strict=True)))
    assert len(table.names) == len(vote.classes) == 3  # each bird sample is its own class
    info = outcome.result.info
    assert info["schema"] == "protolens.explanation/1" and info["vote"] == json.loads(json.dumps(vote.to_json()))
    json.dumps(info)  # provenance must be JSON


def test_regions_are_the_query_segments(registry, bank_dir):
    image, outcome, expected = _explain(registry, bank_dir)
    regions = outcome.result.regions
    segments = expected.query.segments
    assert regions.labels == list(segments.names)
    assert regions.image_size == image.rgb.shape[:2]
    for i in range(segments.count):
        np.testing.assert_array_equal(regions.mask(i), segments.ids == i)
    matched = {m.query_segment: m.similarity for m in expected.kept(False)}
    for i in range(segments.count):
        assert regions.scores[i] == pytest.approx(matched.get(i, 0.0), abs=1e-5)
    heat = outcome.result.heatmap
    assert heat.image_size == image.rgb.shape[:2]
    assert heat.values.dtype == np.float32 and 0.0 <= heat.values.min() and heat.values.max() <= 1.0


def test_label_consistent_filter(registry, bank_dir):
    _, outcome, expected = _explain(registry, bank_dir, label_consistent=True)
    kept = expected.kept(True)
    assert all(m.query_label == m.prototype_label for m in kept)
    assert len(outcome.result.keypoints.pairs) == len(kept)
    assert outcome.result.info["label_consistent"] is True


def test_identity_folds_in_the_bank(registry, bank_dir):
    backend = registry.create(BACKEND)
    params = make_params(registry.manifest(BACKEND).params, {"bank": str(bank_dir)})
    weights_id, sha = backend.weights_identity(params, RunContext(allow_random_weights=True))
    bank = read_bank_cache(bank_dir)
    assert weights_id == f"{bank.weights_id}+bank:birds"
    assert sha == sha256_json({"weights": "none", "bank": bank.digest})


def test_errors_are_typed(registry, bank_dir, tmp_path):
    backend = registry.create(BACKEND)
    manifest = registry.manifest(BACKEND)
    ctx = RunContext(allow_random_weights=True)
    with pytest.raises(ParamError, match="bank"):
        backend.weights_identity(make_params(manifest.params, {}), ctx)
    with pytest.raises(ParamError, match="not a built bank"):
        backend.weights_identity(make_params(manifest.params, {"bank": str(tmp_path)}), ctx)
    with pytest.raises(WeightsNotFoundError, match="random weights"):
        backend.weights_identity(make_params(manifest.params, {"bank": str(bank_dir)}), RunContext())
