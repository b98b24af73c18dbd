"""Mass thresholds (DINO, arXiv 2104.14294: keep the smallest set of cells holding a fraction of the mass).

The mask ``values >= MassThresholder(values, scores).value_threshold(f)`` is compared with a brute-force
re-derivation: sort the cells by score, descending, and keep the shortest prefix whose cumulative score
reaches ``f`` of the total.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protolens.core.attention import min_max
from protolens.core.thresholds import (
    MassThresholder,
    ThresholdSemantics,
    heatmap_threshold,
    mass_to_value_threshold,
)

FAST = settings(max_examples=60, deadline=None)


def brute_force_mask(scores: np.ndarray, fraction: float) -> np.ndarray:
    """The smallest set of cells (by decreasing score) whose cumulative score reaches ``fraction`` of the total."""
    flat = np.clip(np.asarray(scores, np.float64).ravel(), 0.0, None)
    keep = np.zeros(flat.size, dtype=bool)
    total = flat.sum()
    if fraction <= 0 or total <= 0:
        return keep.reshape(np.shape(scores))
    order = np.argsort(-flat, kind="stable")
    goal = min(fraction, 1.0) * total
    running = 0.0
    for index in order:  # plain loop: the reference is deliberately naive
        keep[index] = True
        running += flat[index]
        if running >= goal * (1 - 1e-12):
            break
    return keep.reshape(np.shape(scores))


def exact_min_max(scores: np.ndarray) -> np.ndarray:
    """values = min-max(scores) in float64 (no float32 ties between distinct scores)."""
    scores = np.asarray(scores, np.float64)
    return (scores - scores.min()) / (scores.max() - scores.min())


@st.composite
def score_maps(draw):
    """Continuous random non-negative scores, optionally peaky and with some exact zeros."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (draw(st.integers(1, 24)), draw(st.integers(2, 24)))
    power = draw(st.sampled_from([1.0, 3.0, 8.0]))  # 8: a few cells hold most of the mass, like attention
    # base >= 0.1 keeps every positive cell's share (>= 1e-8 / 576) far above the 1e-12 float guard;
    # the negligible-mass edge case has its own test
    scores = rng.uniform(0.1, 1.0, shape) ** power
    if draw(st.booleans()):
        scores[rng.random(shape) < 0.2] = 0.0
    if scores.max() <= 0 or np.ptp(scores) <= 0:
        scores.flat[0] = 1.0
        scores.flat[-1] = 0.0
    return scores


@FAST
@given(score_maps(), st.floats(0.0, 1.0, allow_nan=False))
def test_mass_mask_is_the_smallest_set_reaching_the_fraction(scores, fraction):
    values = exact_min_max(scores)
    threshold = MassThresholder(values, scores).value_threshold(fraction)
    mask = values >= threshold
    expected = brute_force_mask(scores, fraction)
    np.testing.assert_array_equal(mask, expected)
    if fraction > 0:
        kept = scores[mask].sum()
        assert kept >= fraction * scores.sum() * (1 - 1e-9), "the kept set holds the fraction"
        # ... and it is the smallest such set: dropping its weakest cell falls short
        assert (kept - scores[mask].min()) / scores.sum() < fraction
        assert 0.0 <= threshold <= 1.0


@FAST
@given(score_maps(), st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=8))
def test_one_thresholder_answers_many_fractions(scores, fractions):
    values = exact_min_max(scores)
    thresholder = MassThresholder(values, scores)
    for fraction in sorted(fractions):
        np.testing.assert_array_equal(values >= thresholder.value_threshold(fraction),
                                      brute_force_mask(scores, fraction))
    # a larger fraction never keeps less: the threshold is non-increasing in the fraction
    thresholds = [thresholder.value_threshold(f) for f in sorted(fractions)]
    assert all(a >= b for a, b in zip(thresholds, thresholds[1:], strict=False))


@pytest.mark.parametrize("seed", range(4))
def test_mass_mask_with_the_apps_float32_heatmap(seed):
    # as the app computes it: values = min_max(raw attention) in float32
    rng = np.random.default_rng(seed)
    scores = rng.dirichlet(np.full(14 * 20, 0.3)).reshape(14, 20)
    values = min_max(scores)
    thresholder = MassThresholder(values, scores)
    for fraction in (0.05, 0.3, 0.6, 0.9, 0.99):
        np.testing.assert_array_equal(values >= thresholder.value_threshold(fraction),
                                      brute_force_mask(scores, fraction))


def test_hand_made_example():
    scores = np.array([[0.1, 0.4], [0.2, 0.3]])
    values = exact_min_max(scores)  # [[0, 1], [1/3, 2/3]]
    thresholder = MassThresholder(values, scores)
    expected = {0.4: [[False, True], [False, False]],   # 0.4 alone holds 40 %
                0.5: [[False, True], [False, True]],    # 0.4 + 0.3
                0.7: [[False, True], [False, True]],    # exactly reached
                0.75: [[False, True], [True, True]],
                0.95: [[True, True], [True, True]]}
    for fraction, mask in expected.items():
        np.testing.assert_array_equal(values >= thresholder.value_threshold(fraction), mask, err_msg=str(fraction))
    assert thresholder.value_threshold(0.6) == pytest.approx(2 / 3)


@FAST
@given(score_maps())
def test_fraction_zero_keeps_nothing_and_one_keeps_every_positive_cell(scores):
    values = exact_min_max(scores)
    thresholder = MassThresholder(values, scores)
    for nothing in (0.0, -0.5):
        threshold = thresholder.value_threshold(nothing)
        assert threshold > 1.0
        assert not (values >= threshold).any()
    for everything in (1.0, 1.5):
        np.testing.assert_array_equal(values >= thresholder.value_threshold(everything), scores > 0)


def test_fraction_one_keeps_cells_with_negligible_mass():
    # softmax attention can be ~1e-13 of the total in a few cells: 100 % of the mass still keeps them
    scores = np.array([[2.7e-2, 2.8e-5], [7.9e-12, 5.6e-15]])
    values = exact_min_max(scores)
    for fraction in (1.0, 1.5):
        threshold = MassThresholder(values, scores).value_threshold(fraction)
        assert (values >= threshold).all()
        assert heatmap_threshold(values, fraction, "mass", scores) == threshold
        assert mass_to_value_threshold(scores, fraction) == scores.min()
    # just below 1, the float guard may drop the negligible cell but never a cell with real mass
    assert (values >= MassThresholder(values, scores).value_threshold(0.999999)).sum() == 2


def test_fraction_one_keeps_all_cells_when_all_scores_are_positive():
    scores = np.random.default_rng(9).random((6, 7)) + 0.01
    values = min_max(scores)
    assert (values >= MassThresholder(values, scores).value_threshold(1.0)).all()


@pytest.mark.parametrize("scores", [np.zeros((4, 5)), -np.ones((4, 5)), np.zeros((0,))])
def test_map_without_mass_keeps_nothing(scores):
    values = np.zeros(scores.shape)
    thresholder = MassThresholder(values, scores)
    for fraction in (0.0, 0.3, 1.0):
        threshold = thresholder.value_threshold(fraction)
        assert threshold > 1.0
        assert not (values >= threshold).any()
        assert heatmap_threshold(values, fraction, "mass", scores) > 1.0


def test_negative_scores_carry_no_mass():
    scores = np.array([0.5, -10.0, 0.5, 0.0])
    values = np.array([1.0, 0.0, 1.0, 0.2])
    thresholder = MassThresholder(values, scores)
    np.testing.assert_array_equal(values >= thresholder.value_threshold(1.0), [True, False, True, False])


@FAST
@given(score_maps(), st.floats(0.0, 1.0, allow_nan=False))
def test_without_scores_the_values_are_the_mass(scores, fraction):
    values = exact_min_max(scores)
    alone = MassThresholder(values).value_threshold(fraction)
    assert alone == MassThresholder(values, values).value_threshold(fraction)
    np.testing.assert_array_equal(values >= alone, brute_force_mask(values, fraction))


def test_scores_change_the_answer():
    # the same heatmap, different masses: the mass lives in the raw scores, not the min-max values
    values = np.array([1.0, 0.3, 0.2, 0.0])
    flat_scores = np.array([1.0, 0.99, 0.98, 0.97])  # nearly uniform mass, same ranking as values
    assert values.argsort().tolist() == flat_scores.argsort().tolist()
    assert (values >= MassThresholder(values).value_threshold(0.5)).sum() == 1      # 1.0 of 1.5
    assert (values >= MassThresholder(values, flat_scores).value_threshold(0.5)).sum() == 2


def test_any_shape_is_accepted():
    scores = np.random.default_rng(2).random((3, 4, 5))
    values = exact_min_max(scores)
    mask = values >= MassThresholder(values, scores).value_threshold(0.6)
    np.testing.assert_array_equal(mask, brute_force_mask(scores, 0.6))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="differ"):
        MassThresholder(np.zeros((4, 5)), np.zeros((4, 6)))
    with pytest.raises(ValueError):
        heatmap_threshold(np.zeros((4, 5)), 0.5, "mass", np.zeros((5, 5)))


# --------------------------------------------------------------------------- heatmap_threshold


@pytest.mark.parametrize("threshold", [0.0, 0.37, 1.0])
def test_heatmap_threshold_value_is_unchanged(threshold):
    values = np.random.default_rng(1).random((5, 5))
    assert heatmap_threshold(values, threshold) == threshold
    assert heatmap_threshold(values, threshold, "value", scores=values * 3) == threshold
    assert heatmap_threshold(values, threshold, ThresholdSemantics.VALUE) == threshold
    assert isinstance(heatmap_threshold(values, np.float32(threshold), "value"), float)


@FAST
@given(score_maps(), st.floats(0.0, 1.0, allow_nan=False))
def test_heatmap_threshold_mass_matches_mass_thresholder(scores, fraction):
    values = exact_min_max(scores)
    expected = MassThresholder(values, scores).value_threshold(fraction)
    assert heatmap_threshold(values, fraction, "mass", scores) == expected
    assert heatmap_threshold(values, fraction, ThresholdSemantics.MASS, scores) == expected
    assert heatmap_threshold(values, fraction, "mass") == MassThresholder(values).value_threshold(fraction)


@pytest.mark.parametrize("semantics", ["Mass", "area", "", "values"])
def test_heatmap_threshold_rejects_unknown_semantics(semantics):
    with pytest.raises(ValueError):
        heatmap_threshold(np.zeros((2, 2)), 0.5, semantics)
