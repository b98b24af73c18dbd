"""Segmentation and set metrics."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def iou(prediction: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union of two boolean masks of the same shape (1.0 if both are empty).

    Raises ``ValueError`` if the shapes differ.
    """
    a, b = np.asarray(prediction, dtype=bool), np.asarray(target, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def set_f1(predicted: Iterable[object], truth: Iterable[object]) -> float:
    """Set F1 = 2|P ∩ G| / (|P| + |G|) (PlantCLEF 2025 per-quadrat metric, arXiv 2509.17602); 1.0 if both empty."""
    p, g = set(predicted), set(truth)
    if not p and not g:
        return 1.0
    return 2.0 * len(p & g) / (len(p) + len(g))
