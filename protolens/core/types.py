"""Result types shared by every layer: heatmaps and backend results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from protolens.core.layers import Keypoints, LabelMap, Regions, ResultLayers, ScoresTable


def fit_grid(image_size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """The (rows, cols) grid with the aspect of an image of ``image_size`` = (height, width) pixels and the
    longer side at most ``max_side`` cells, never larger than the image; each side at least 1.

    Raises ``ValueError`` for a non-positive size.
    """
    height, width = int(image_size[0]), int(image_size[1])
    if height <= 0 or width <= 0 or max_side <= 0:
        raise ValueError(f"image size {image_size} and max_side {max_side} must be positive")
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


@dataclass(frozen=True)
class Heatmap:
    """A per-image score map in [0, 1], stored at its native resolution.

    The map covers the whole photo: cell (0, 0) is the top-left of the photo and the last cell
    the bottom-right, whatever its own resolution (a ViT's patch grid, or every pixel).

    Attributes
    ----------
    values : numpy.ndarray
        (rows, cols) float32 in [0, 1] at native resolution (patch grid or full resolution).
    image_size : tuple of int
        (height, width) of the photo in pixels.
    interpolation : str
        How the map is enlarged: ``"linear"`` (bilinear; attention over patches) or ``"nearest"`` (one
        constant block per cell, e.g. crop scores of prototype guidance, whose mask is whole crops).
    """

    values: np.ndarray
    image_size: tuple[int, int]
    interpolation: str = "linear"

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float32)
        if values.ndim != 2:
            raise ValueError(f"heatmap values must be 2-D (rows, cols), got shape {values.shape}")
        if self.interpolation not in ("linear", "nearest"):
            raise ValueError(f"heatmap interpolation must be linear or nearest, not {self.interpolation!r}")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "image_size", (int(self.image_size[0]), int(self.image_size[1])))

    def resized(self, height: int, width: int) -> np.ndarray:
        """The map resampled to (height, width): bilinear (or nearest) when enlarging, area-averaging when shrinking.

        Returns (height, width) float32 in [0, 1].
        """
        rows, cols = self.values.shape
        if (rows, cols) == (height, width):
            return self.values
        shrink = height < rows and width < cols
        enlarge = cv2.INTER_NEAREST if self.interpolation == "nearest" else cv2.INTER_LINEAR
        out = cv2.resize(self.values, (width, height), interpolation=cv2.INTER_AREA if shrink else enlarge)
        return np.clip(out, 0.0, 1.0, out=out)

    def full_resolution(self) -> np.ndarray:
        """The map at the photo's resolution: (height, width) float32 in [0, 1]."""
        return self.resized(*self.image_size)

    def display(self, max_side: int = 1280) -> np.ndarray:
        """The map for drawing: native resolution if small, else shrunk so its longer side is ``max_side``.

        Returns (rows, cols) float32 in [0, 1]; it is drawn stretched over the photo.
        """
        rows, cols = self.values.shape
        scale = max_side / max(rows, cols)
        if scale >= 1.0:
            return self.values
        return self.resized(max(1, round(rows * scale)), max(1, round(cols * scale)))


@dataclass
class BackendResult:
    """What a backend returns for one image: a main heatmap plus optional typed layers.

    The backend manifest's ``kind`` says how a view shows the result: ``heatmap`` (the main map over the
    photo), ``segmentation`` (the label map as a class overlay, named heatmaps per class) or ``explanation``
    (keypoints and their match pairs, the scores table).

    Attributes
    ----------
    heatmap : Heatmap
        The score map in [0, 1] (higher = more likely foreground / more attended).
    suggested_threshold : float or None
        A threshold in [0, 1] the backend proposes (e.g. Otsu's), used as the slider's start value.
    extras : dict of str to numpy.ndarray
        Further arrays (per-head maps, token grids...), documented by each backend; cached, not stored.
    info : dict
        JSON-serialisable facts about the run (grid size, device, model...), saved in provenance.
    heatmaps : dict of str to Heatmap
        Named heatmaps, one per class, head, block or epoch; each (rows, cols) float32 in [0, 1].
    label_map : LabelMap or None
        (rows, cols) int32 class ids with class names (see :class:`protolens.core.layers.LabelMap`).
    regions : Regions or None
        Labelled proposals, (n, rows, cols) bool masks with labels and scores.
    keypoints : Keypoints or None
        (n, 2) float32 (x, y) photo-pixel points with labels, scores and (m, 2) match pairs.
    scores_table : ScoresTable or None
        Named scores (species with probabilities), best first.
    """

    heatmap: Heatmap
    suggested_threshold: float | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    heatmaps: dict[str, Heatmap] = field(default_factory=dict)
    label_map: LabelMap | None = None
    regions: Regions | None = None
    keypoints: Keypoints | None = None
    scores_table: ScoresTable | None = None

    def layers(self) -> ResultLayers:
        """The typed layers alone (what the store saves beside the heatmap)."""
        return ResultLayers(dict(self.heatmaps), self.label_map, self.regions, self.keypoints, self.scores_table)
