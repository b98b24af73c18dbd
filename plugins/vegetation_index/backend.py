"""Vegetation-index backend: Excess Green and Excess Green minus Excess Red on chromatic coordinates.

References
----------
Woebbecke, D. M. et al. (1995), "Color indices for weed identification under various soil, residue, and
lighting conditions", Trans. ASAE 38(1): ExG = 2g - r - b.
Meyer, G. E. & Neto, J. C. (2008), "Verification of color vegetation indices for automated crop imaging
applications", Comput. Electron. Agric. 63(2): ExR = 1.4r - g, ExG - ExR.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import cv2
import numpy as np

from protolens.core.jobs import Progress
from protolens.core.thresholds import otsu_threshold
from protolens.core.types import BackendResult, Heatmap
from protolens.models.api import Backend, RunContext

#: Theoretical ranges on chromatic coordinates (r + g + b = 1), used to rescale to [0, 1].
INDEX_RANGES = {"exg": (-1.0, 2.0), "exg-exr": (-2.4, 3.0)}
_ROWS_PER_BAND = 512


def chromatic_coordinates(rgb: np.ndarray) -> np.ndarray:
    """r, g, b = R/(R+G+B), G/(R+G+B), B/(R+G+B); black pixels get (1/3, 1/3, 1/3).

    ``rgb``: (rows, cols, 3) uint8. Returns (rows, cols, 3) float32 summing to 1 per pixel.
    """
    data = rgb.astype(np.float32)
    total = data.sum(axis=2, keepdims=True)
    out = np.divide(data, total, out=np.full_like(data, 1.0 / 3.0), where=total > 0)
    return out


def vegetation_index(rgb: np.ndarray, index: str = "exg") -> np.ndarray:
    """The chosen index rescaled from its theoretical range to [0, 1].

    Parameters
    ----------
    rgb : numpy.ndarray
        (rows, cols, 3) uint8 RGB.
    index : {"exg", "exg-exr"}
        ExG = 2g - r - b in [-1, 2]; ExG - ExR = 3g - 2.4r - b in [-2.4, 3].

    Returns
    -------
    numpy.ndarray
        (rows, cols) float32 in [0, 1]; higher = greener.
    """
    c = chromatic_coordinates(rgb)
    r, g, b = c[..., 0], c[..., 1], c[..., 2]
    raw = 2.0 * g - r - b if index == "exg" else 3.0 * g - 2.4 * r - b
    lo, hi = INDEX_RANGES[index]
    return np.clip((raw - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


class VegetationIndex(Backend):
    """Per-pixel vegetation heatmap at full resolution; Otsu's threshold suggested."""

    def run(self, image: np.ndarray, params: Any, ctx: RunContext) -> Generator[Progress, None, BackendResult]:
        height = image.shape[0]
        values = np.empty(image.shape[:2], np.float32)
        for start in range(0, height, _ROWS_PER_BAND):
            ctx.cancel.raise_if_set()
            stop = min(start + _ROWS_PER_BAND, height)
            values[start:stop] = vegetation_index(image[start:stop], params.index)
            yield Progress(0.9 * stop / height, f"{params.index}: rows {stop}/{height}")
        if params.smoothing > 0:
            cv2.GaussianBlur(values, (0, 0), params.smoothing, dst=values)
        heatmap = Heatmap(values, image.shape[:2])
        yield Progress(1.0, "done")
        return BackendResult(heatmap, suggested_threshold=otsu_threshold(values),
                             info={"index": params.index, "range": list(INDEX_RANGES[params.index])})
