"""Crop masks from received attention and the collapse indicators of a prototype-ViT training run.

Source: arXiv 2512.19957, step 6 (mask) and its observation that later epochs attend to quadrat frames
(METHODS.md §1 step 5). Every function takes the raw attention each crop *receives* on the crop grid,
(rows, cols) float, row = y, col = x, origin top-left.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from protolens.core.metrics import iou

EPS = 1e-6
"""Min-max epsilon of the reference (step 6)."""
INDICATORS = ("loss", "entropy", "border_share", "iou_previous")
"""Per-epoch indicator names, in display order."""


def normalise_received(received: np.ndarray) -> np.ndarray:
    """Min-max normalised received attention, ``(r - min) / (max - min + 1e-6)``, float32, same shape.

    Source: arXiv 2512.19957, step 6.
    """
    values = np.asarray(received, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    return ((values - low) / (high - low + EPS)).astype(np.float32)


def crop_mask(received: np.ndarray, threshold: float) -> np.ndarray:
    """Crops kept for classification: normalised received attention >= ``threshold``; (rows, cols) bool.

    Source: arXiv 2512.19957, step 6 (t = 0.6 by default; 0.5 and 0.7 tried). Raises ``ValueError`` for a
    threshold outside [0, 1].
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], not {threshold}")
    return normalise_received(received) >= threshold


def attention_entropy(received: np.ndarray) -> float:
    """Entropy of the received-attention distribution over crops, divided by log(crops): 1 = uniform, 0 = one crop.

    ``p = r / sum(r)`` (r >= 0); returns ``-sum(p log p) / log(n)``. A collapsing model concentrates its
    attention on few crops, so the entropy falls.
    """
    values = np.clip(np.asarray(received, dtype=np.float64).ravel(), 0.0, None)
    total = values.sum()
    if values.size < 2 or total <= 0:
        return 0.0
    p = values[values > 0] / total
    return float(-(p * np.log(p)).sum() / np.log(values.size))


def border_share(received: np.ndarray, width: int = 1) -> float:
    """Share of the received attention that falls on the outer ``width`` rings of crops, in [0, 1].

    Quadrat frames sit on the border; a model that attends to them drives this share up.
    Raises ``ValueError`` for a non-2-D grid or a width < 1.
    """
    values = np.clip(np.asarray(received, dtype=np.float64), 0.0, None)
    if values.ndim != 2 or width < 1:
        raise ValueError(f"need a (rows, cols) grid and width >= 1, got {values.shape} and {width}")
    inner = values[width:-width, width:-width] if min(values.shape) > 2 * width else values[:0, :0]
    total = values.sum()
    return float((total - inner.sum()) / total) if total > 0 else 0.0


def epoch_indicators(received_maps: Sequence[np.ndarray], previous_masks: Sequence[np.ndarray] | None,
                     threshold: float, loss: float | None = None) -> tuple[dict[str, float], list[np.ndarray]]:
    """Collapse indicators of one epoch on a fixed probe set, averaged over the probe photos.

    Parameters
    ----------
    received_maps : sequence of numpy.ndarray
        Raw received attention (rows, cols) of each probe photo under this epoch's model.
    previous_masks : sequence of numpy.ndarray or None
        The previous epoch's crop masks of the same photos (None for the first epoch).
    threshold : float
        Crop-mask threshold t in [0, 1].
    loss : float, optional
        The epoch's mean training loss, copied into the result.

    Returns
    -------
    (dict, list of numpy.ndarray)
        ``{"loss", "entropy", "border_share", "iou_previous"}`` (NaN where undefined: no loss given, first epoch)
        and this epoch's masks (pass them as ``previous_masks`` next epoch).
    """
    masks = [crop_mask(r, threshold) for r in received_maps]
    ious = ([iou(m, p) for m, p in zip(masks, previous_masks, strict=True)] if previous_masks is not None else [])
    return {
        "loss": float(loss) if loss is not None else float("nan"),
        "entropy": float(np.mean([attention_entropy(r) for r in received_maps])) if masks else float("nan"),
        "border_share": float(np.mean([border_share(r) for r in received_maps])) if masks else float("nan"),
        "iou_previous": float(np.mean(ious)) if ious else float("nan"),
    }, masks
