"""Image -> ViT input: resize to a patch-multiple grid (aspect kept), normalise, to a tensor."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def grid_size(height: int, width: int, long_side: int, patch: int) -> tuple[int, int]:
    """Patch grid (rows, cols) for an image resized so its longer side is about ``long_side`` pixels.

    Both sides are rounded to the nearest multiple of ``patch`` (at least one patch), so the grid is
    non-square when the photo is; the aspect ratio changes by at most half a patch per side.
    """
    scale = long_side / max(height, width)
    rows = max(1, round(height * scale / patch))
    cols = max(1, round(width * scale / patch))
    return rows, cols


def resize_to_grid(image: np.ndarray, rows: int, cols: int, patch: int) -> np.ndarray:
    """Resize (H, W, 3) uint8 RGB to (rows*patch, cols*patch, 3): area-averaging when shrinking, bicubic else."""
    out_h, out_w = rows * patch, cols * patch
    shrink = out_h < image.shape[0] and out_w < image.shape[1]
    return cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def normalise(image: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32, (x/255 - mean) / std per channel."""
    scale = (1.0 / (255.0 * np.asarray(std, np.float32))).reshape(3, 1, 1)
    offset = (np.asarray(mean, np.float32) / np.asarray(std, np.float32)).reshape(3, 1, 1)
    chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
    chw *= scale
    chw -= offset
    return chw


def preprocess(image: np.ndarray, long_side: int, patch: int, mean: Sequence[float] = IMAGENET_MEAN,
               std: Sequence[float] = IMAGENET_STD) -> tuple[np.ndarray, tuple[int, int]]:
    """Resize (aspect kept, both sides multiples of ``patch``) and normalise one image.

    Parameters
    ----------
    image : numpy.ndarray
        (height, width, 3) uint8 RGB.
    long_side : int
        Target length of the longer side in pixels (rounded to a patch multiple).
    patch : int
        Patch size in pixels.

    Returns
    -------
    (numpy.ndarray, (int, int))
        (1, 3, rows*patch, cols*patch) float32 input and the patch grid (rows, cols).
    """
    rows, cols = grid_size(image.shape[0], image.shape[1], long_side, patch)
    return normalise(resize_to_grid(image, rows, cols, patch), mean, std)[None], (rows, cols)
