"""Thresholds (value, mass, Otsu) and the segmentation/set metrics, checked against numpy re-derivations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from protolens.core.metrics import iou, set_f1
from protolens.core.thresholds import (
    ThresholdSemantics,
    mask_to_png_array,
    mass_to_value_threshold,
    otsu_threshold,
    threshold_mask,
)

# --------------------------------------------------------------------------- value threshold


def test_threshold_mask_keeps_values_at_or_above():
    values = np.array([[0.0, 0.25, 0.5], [0.75, 1.0, 0.4999]], np.float32)
    mask = threshold_mask(values, 0.5)
    assert mask.dtype == bool and mask.shape == values.shape
    np.testing.assert_array_equal(mask, [[False, False, True], [True, True, False]])
    assert threshold_mask(values, 0.0).all()
    assert threshold_mask(values, 1.0).sum() == 1
    assert not threshold_mask(values, 1.01).any()


def test_threshold_mask_random_matches_numpy():
    rng = np.random.default_rng(0)
    values = rng.random((23, 37)).astype(np.float32)
    for t in (0.1, 0.33, 0.9):
        np.testing.assert_array_equal(threshold_mask(values, t), values >= np.float32(t))


def test_mask_to_png_array():
    mask = np.array([[True, False], [False, True]])
    out = mask_to_png_array(mask)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[255, 0], [0, 255]])
    np.testing.assert_array_equal(mask_to_png_array(np.array([[0, 3]])), [[0, 255]])


def test_threshold_semantics_values():
    assert ThresholdSemantics("value") is ThresholdSemantics.VALUE
    assert ThresholdSemantics.MASS == "mass"


# --------------------------------------------------------------------------- mass threshold


def _brute_force_mass_set(values: np.ndarray, fraction: float) -> np.ndarray:
    """The smallest set of cells, taken in decreasing score order, whose sum reaches ``fraction`` of the total."""
    flat = np.clip(values.astype(np.float64).ravel(), 0.0, None)
    order = np.argsort(-flat, kind="stable")
    target = fraction * flat.sum()
    kept = np.zeros(flat.size, bool)
    running = 0.0
    for index in order:
        if running >= target:
            break
        kept[index] = True
        running += flat[index]
    return kept.reshape(values.shape)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.6, 0.9, 0.999])
def test_mass_threshold_matches_brute_force(seed, fraction):
    rng = np.random.default_rng(seed)
    shape = [(23, 37), (14, 14), (1, 50), (40, 30), (7, 9), (32, 32)][seed]
    values = rng.random(shape) ** rng.uniform(1.0, 6.0)  # skewed, like attention
    t = mass_to_value_threshold(values, fraction)
    expected = _brute_force_mass_set(values, fraction)
    np.testing.assert_array_equal(values >= t, expected)
    kept = values[values >= t]
    # The kept set holds at least the fraction, and dropping its weakest cell would not.
    assert kept.sum() >= fraction * values.sum() - 1e-9
    assert kept.sum() - kept.min() < fraction * values.sum()


def test_mass_threshold_on_attention_like_probabilities():
    rng = np.random.default_rng(42)
    logits = rng.normal(size=(16, 16)) * 3
    probs = np.exp(logits) / np.exp(logits).sum()  # a softmax over patches, DINO's setting
    t = mass_to_value_threshold(probs, 0.6)
    mask = probs >= t
    assert probs[mask].sum() >= 0.6 - 1e-9
    np.testing.assert_array_equal(mask, _brute_force_mass_set(probs, 0.6))
    assert mask.sum() < probs.size / 2  # peaked attention: a minority of cells holds 60% of the mass


def test_mass_threshold_small_exact_case():
    values = np.array([0.1, 0.4, 0.2, 0.3])  # total 1.0
    assert mass_to_value_threshold(values, 0.4) == pytest.approx(0.4)  # {0.4} already holds 40%
    assert mass_to_value_threshold(values, 0.5) == pytest.approx(0.3)  # {0.4, 0.3}
    assert mass_to_value_threshold(values, 0.7) == pytest.approx(0.3)  # exactly reached by {0.4, 0.3}
    assert mass_to_value_threshold(values, 0.71) == pytest.approx(0.2)
    assert mass_to_value_threshold(values, 1.0) == pytest.approx(0.1)


def test_mass_threshold_zero_keeps_nothing():
    values = np.random.default_rng(1).random((10, 10))
    t = mass_to_value_threshold(values, 0.0)
    assert math.isinf(t) and t > 0
    assert not threshold_mask(values, t).any()
    assert math.isinf(mass_to_value_threshold(values, -0.5))


def test_mass_threshold_one_keeps_every_positive_cell():
    values = np.random.default_rng(2).random((12, 12))
    values[values < 0.3] = 0.0
    t = mass_to_value_threshold(values, 1.0)
    np.testing.assert_array_equal(values >= t, values > 0)
    assert t == pytest.approx(values[values > 0].min())
    assert mass_to_value_threshold(values, 1.5) == t  # fractions above 1 are clamped


def test_mass_threshold_all_zero_or_negative_keeps_nothing():
    assert math.isinf(mass_to_value_threshold(np.zeros((4, 4)), 0.5))
    assert math.isinf(mass_to_value_threshold(-np.ones((4, 4)), 0.5))


def test_mass_threshold_ignores_negative_scores():
    values = np.array([-5.0, 0.5, 0.3, 0.2])
    assert mass_to_value_threshold(values, 0.5) == pytest.approx(0.5)
    assert mass_to_value_threshold(values, 0.9) == pytest.approx(0.2)


def test_mass_threshold_ties_are_kept_together():
    values = np.array([0.5, 0.25, 0.25])
    t = mass_to_value_threshold(values, 0.6)
    assert t == pytest.approx(0.25)
    assert (values >= t).sum() == 3


# --------------------------------------------------------------------------- Otsu


def _between_class_variance(levels: np.ndarray, split: int) -> float:
    """Otsu's criterion for the split ``levels < split`` / ``levels >= split`` (levels are 0..255 ints)."""
    low, high = levels[levels < split], levels[levels >= split]
    if low.size == 0 or high.size == 0:
        return 0.0
    w0, w1 = low.size / levels.size, high.size / levels.size
    return w0 * w1 * (low.mean() - high.mean()) ** 2


def test_otsu_separates_the_modes_of_a_bimodal_map():
    rng = np.random.default_rng(3)
    labels = rng.random((40, 60)) < 0.3
    values = np.where(labels, rng.normal(0.8, 0.05, labels.shape), rng.normal(0.2, 0.05, labels.shape))
    values = np.clip(values, 0.0, 1.0).astype(np.float32)
    t = otsu_threshold(values)
    assert 0.3 < t < 0.7
    np.testing.assert_array_equal(threshold_mask(values, t), labels)


@pytest.mark.parametrize("seed", range(4))
def test_otsu_maximises_between_class_variance(seed):
    rng = np.random.default_rng(seed)
    # Scores on the 256-level grid, so the mask `values >= t` is exactly a split of the levels.
    levels = np.concatenate([rng.normal(60 + 10 * seed, 20, 900), rng.normal(170, 25, 600)])
    levels = np.clip(np.rint(levels), 0, 255).astype(np.int64)
    values = (levels / 255.0).astype(np.float32).reshape(30, 50)
    t = otsu_threshold(values)
    assert 0.0 <= t <= 1.0
    split = int(round(t * 255))
    assert np.array_equal(threshold_mask(values, t).ravel(), levels >= split)
    best = max(_between_class_variance(levels, s) for s in range(1, 256))
    assert _between_class_variance(levels, split) >= best * (1 - 1e-6)


@pytest.mark.parametrize("value", [0.0, 0.37, 1.0])
def test_otsu_constant_map(value):
    assert otsu_threshold(np.full((8, 8), value, np.float32)) == 0.5


def test_otsu_empty_map():
    assert otsu_threshold(np.zeros((0, 0), np.float32)) == 0.5


def test_otsu_two_values():
    values = np.array([[0.1, 0.1, 0.9, 0.9]], np.float32)
    t = otsu_threshold(values)
    np.testing.assert_array_equal(threshold_mask(values, t), [[False, False, True, True]])


# --------------------------------------------------------------------------- metrics


def test_iou_small_cases():
    a = np.array([[1, 1, 0], [0, 0, 0]], bool)
    b = np.array([[0, 1, 1], [0, 0, 0]], bool)
    assert iou(a, b) == pytest.approx(1 / 3)
    assert iou(a, a) == 1.0
    assert iou(a, ~a) == 0.0
    assert iou(np.zeros((2, 3), bool), np.zeros((2, 3), bool)) == 1.0
    assert iou(np.zeros((2, 3), bool), b) == 0.0
    assert iou(a.astype(np.uint8) * 255, b.astype(np.uint8)) == pytest.approx(1 / 3)


def test_iou_matches_numpy_on_random_masks():
    rng = np.random.default_rng(5)
    a, b = rng.random((50, 40)) < 0.4, rng.random((50, 40)) < 0.5
    assert iou(a, b) == pytest.approx((a & b).sum() / (a | b).sum())
    assert iou(a, b) == iou(b, a)


def test_iou_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        iou(np.zeros((2, 3), bool), np.zeros((3, 2), bool))


def test_set_f1_small_cases():
    assert set_f1({"a", "b"}, {"b", "c"}) == pytest.approx(0.5)
    assert set_f1(["a", "b", "c"], ["a", "b", "c"]) == 1.0
    assert set_f1([], []) == 1.0
    assert set_f1(["a"], []) == 0.0
    assert set_f1([], ["a"]) == 0.0
    assert set_f1(["a", "a", "b"], ["a"]) == pytest.approx(2 * 1 / 3)  # duplicates count once
    assert set_f1(range(4), range(2, 8)) == pytest.approx(2 * 2 / (4 + 6))
