"""Turning score maps into masks: threshold by value, by attention mass, and Otsu's suggestion."""

from __future__ import annotations

from enum import StrEnum

import cv2
import numpy as np


class ThresholdSemantics(StrEnum):
    """How a threshold in [0, 1] is read.

    ``value``: keep cells whose score is >= t.
    ``mass``: keep the smallest set of cells holding a fraction t of the total score mass
    (DINO, Caron et al. arXiv 2104.14294, Sec. 4.2 / Fig. 3 "keep 60% of the mass").
    """

    VALUE = "value"
    MASS = "mass"


def threshold_mask(values: np.ndarray, threshold: float) -> np.ndarray:
    """Mask of cells with ``values >= threshold``.

    Parameters
    ----------
    values : numpy.ndarray
        (rows, cols) float scores in [0, 1].
    threshold : float
        Threshold in [0, 1].

    Returns
    -------
    numpy.ndarray
        (rows, cols) bool.
    """
    return np.asarray(values) >= threshold


def mask_to_png_array(mask: np.ndarray) -> np.ndarray:
    """A boolean mask as a (rows, cols) uint8 image, 0 = background, 255 = foreground."""
    return np.where(np.asarray(mask, dtype=bool), np.uint8(255), np.uint8(0))


def mass_to_value_threshold(values: np.ndarray, fraction: float) -> float:
    """The value threshold equivalent to keeping a fraction of the total mass.

    Cells are sorted by decreasing score; the smallest prefix whose sum reaches ``fraction`` of the
    total is kept, and the score of its last cell is returned, so ``values >= result`` is that set
    (plus cells tied with it). Source: DINO (arXiv 2104.14294), attention-mass thresholding.

    Parameters
    ----------
    values : numpy.ndarray
        Non-negative scores, any shape (raw attention probabilities give DINO's semantics).
    fraction : float
        Mass fraction in [0, 1]; 0 keeps nothing (returns +inf), 1 keeps every cell with a positive score.

    Returns
    -------
    float
        Value threshold.
    """
    flat = np.sort(np.clip(np.asarray(values, dtype=np.float64).ravel(), 0.0, None))[::-1]
    total = flat.sum()
    if fraction <= 0.0 or total <= 0.0:
        return float("inf")
    if fraction >= 1.0:  # every positive cell, even one below the 1e-12 rounding guard
        return float(flat[np.count_nonzero(flat) - 1])
    cumulative = np.cumsum(flat) / total
    index = int(np.searchsorted(cumulative, fraction - 1e-12, side="left"))
    return float(flat[min(index, flat.size - 1)])


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of scores in [0, 1] (256-bin histogram, OpenCV).

    Returns a threshold in [0, 1]; 0.5 for a constant map.
    """
    data = np.asarray(values, dtype=np.float32)
    if data.size == 0 or float(data.max() - data.min()) < 1e-6:
        return 0.5
    quantised = np.clip(data * 255.0 + 0.5, 0, 255).astype(np.uint8)
    level, _ = cv2.threshold(quantised.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # OpenCV keeps values > level; our masks keep values >= t, so t is the next bin.
    return float(min(level + 1.0, 255.0) / 255.0)


class MassThresholder:
    """Fast repeated mass thresholds on one map: sorts once, then answers each fraction in O(log n).

    Parameters
    ----------
    values : numpy.ndarray
        The heatmap the mask is drawn from, any shape, in [0, 1].
    scores : numpy.ndarray, optional
        Non-negative masses of the same shape (e.g. raw attention probabilities); default ``values``.
        ``values`` must rank cells like ``scores`` (true when values = min_max(scores)).
    """

    def __init__(self, values: np.ndarray, scores: np.ndarray | None = None) -> None:
        values = np.asarray(values, dtype=np.float64)
        scores = values if scores is None else np.asarray(scores, dtype=np.float64)
        if scores.shape != values.shape:
            raise ValueError(f"scores {scores.shape} and values {values.shape} differ in shape")
        values, scores = values.ravel(), np.clip(scores.ravel(), 0.0, None)
        order = np.argsort(-scores, kind="stable")
        total = scores.sum()
        self._cumulative = np.cumsum(scores[order]) / total if total > 0 else np.zeros(len(order))
        self._prefix_min = np.minimum.accumulate(values[order]) if len(order) else values
        self._empty = total <= 0
        self._positive = int(np.count_nonzero(scores > 0))

    def value_threshold(self, fraction: float) -> float:
        """The heatmap threshold whose mask (values >= it) is the smallest set holding ``fraction`` of the mass.

        Returns a value above 1 (nothing kept) for fraction <= 0 or a map without mass.
        """
        if fraction <= 0.0 or self._empty:
            return float(np.nextafter(1.0, 2.0))
        if fraction >= 1.0:  # every positive cell, even one below the 1e-12 rounding guard
            index = self._positive - 1
        else:
            index = int(np.searchsorted(self._cumulative, fraction - 1e-12, side="left"))
        return float(self._prefix_min[min(index, len(self._prefix_min) - 1)])


def heatmap_threshold(values: np.ndarray, threshold: float, semantics: str = "value",
                      scores: np.ndarray | None = None) -> float:
    """The threshold on heatmap ``values`` that realises ``threshold`` read with ``semantics``.

    "value": ``threshold`` itself. "mass": see :class:`MassThresholder` (DINO, arXiv 2104.14294).
    """
    if ThresholdSemantics(semantics) is ThresholdSemantics.VALUE:
        return float(threshold)
    return MassThresholder(values, scores).value_threshold(threshold)
