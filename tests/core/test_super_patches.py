"""Super-patches of SVIP (arXiv 2503.10252): score grouping = feature grouping (the reference's bug), top-M."""

from __future__ import annotations

import numpy as np
import pytest

from protolens.core.super_patches import (
    keep_threshold,
    kept_iou,
    rank_heatmap,
    reference_super_patch_scores,
    selection_targets,
    super_patch_features,
    super_patch_scores,
    top_m,
)


def test_features_are_2x2_blocks_in_row_major_order():
    tokens = np.arange(4 * 6 * 2).reshape(4, 6, 2)  # token (r, c) = [2*(6r + c), 2*(6r + c) + 1]
    grouped = super_patch_features(tokens)
    assert grouped.shape == (2, 3, 8)
    # super-patch (1, 2) = patches (2, 4), (2, 5), (3, 4), (3, 5)
    expected = np.concatenate([tokens[2, 4], tokens[2, 5], tokens[3, 4], tokens[3, 5]])
    np.testing.assert_array_equal(grouped[1, 2], expected)


def test_score_grouping_matches_feature_grouping_where_the_reference_fails():
    """ViT-B/16 at 224: 14 x 14 patches. Each patch's score is read from its own feature; the super-patch score
    must be the mean of the scores of the 4 patches whose features form the super-patch."""
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(14, 14, 3)).astype(np.float32)
    scores = tokens[..., 0]
    from_features = super_patch_features(tokens)[..., 0::3].mean(axis=-1)  # the 4 patches' channel 0
    np.testing.assert_allclose(super_patch_scores(scores), from_features, rtol=1e-6, atol=1e-6)
    # the reference's view(7, 7, 4) groups consecutive tokens of a row: other patches than the features
    assert not np.allclose(reference_super_patch_scores(scores), from_features, atol=1e-3)


def test_reference_grouping_keeps_the_wrong_super_patch():
    scores = np.zeros((4, 4), np.float32)
    scores[0:2, 2:4] = 1.0  # the 2x2 block of super-patch (0, 1) is the most attended
    scores[0, 0:2] = 0.9    # half of super-patch (0, 0)
    # hand computation: fixed (0,0) = (0.9+0.9+0+0)/4 = 0.45, (0,1) = 1; reference tokens 0..3 = .9,.9,1,1 -> .95
    np.testing.assert_allclose(super_patch_scores(scores), [[0.45, 1.0], [0.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(reference_super_patch_scores(scores), [[0.95, 0.5], [0.0, 0.0]], atol=1e-6)
    assert top_m(super_patch_scores(scores), 1)[0, 1]
    assert top_m(reference_super_patch_scores(scores), 1)[0, 0]  # the bug keeps the other block


def test_odd_grid_and_wrong_shapes_raise():
    with pytest.raises(ValueError, match="even"):
        super_patch_scores(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="even"):
        super_patch_features(np.zeros((4, 5, 2)))
    with pytest.raises(ValueError):
        super_patch_features(np.zeros((4, 4)))


def test_top_m_counts_ties_and_bounds():
    scores = np.array([[0.5, 0.9], [0.5, 0.1]])
    np.testing.assert_array_equal(top_m(scores, 2), [[True, True], [False, False]])  # tie: earlier first
    assert top_m(scores, 0).sum() == 0 and top_m(scores, 4).all()
    with pytest.raises(ValueError):
        top_m(scores, 5)
    np.testing.assert_array_equal(selection_targets(scores, 1), [[1, 0], [1, 1]])  # 1 = not kept


@pytest.mark.parametrize("tied", [False, True])
def test_rank_heatmap_threshold_keeps_exactly_top_m(tied):
    rng = np.random.default_rng(1)
    scores = rng.random((7, 7)).astype(np.float32)
    if tied:
        scores = np.round(scores * 4) / 4  # many ties
    heat = rank_heatmap(scores)
    assert heat.dtype == np.float32 and heat.max() == 1.0 and heat.min() == 0.0
    assert heat[np.unravel_index(np.argmax(scores), scores.shape)] == 1.0
    for m in range(1, 50):
        t = keep_threshold(49, m)
        assert 0.0 <= t <= 1.0
        np.testing.assert_array_equal(heat >= np.float32(t), top_m(scores, m))
    with pytest.raises(ValueError):
        keep_threshold(49, 0)
    assert keep_threshold(1, 1) == 0.0 and rank_heatmap(np.array([[3.0]]))[0, 0] == 1.0


def test_kept_iou():
    a = np.array([True, True, False, False])
    b = np.array([True, False, True, False])
    assert kept_iou(a, b) == pytest.approx(1 / 3)
    assert kept_iou(a, a) == 1.0 and kept_iou(~(a | True), ~(b | True)) == 1.0
