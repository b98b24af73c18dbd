"""Sliding windows over a large image and seamless blending of per-window patch maps.

Windows live on the working image (the photo resized so both sides are multiples of the patch size)
and are aligned to the patch grid, so each window's (rows, cols) map lands exactly on the global patch
grid. Overlapping windows are blended with raised-cosine ramps across each overlap (weight 1 inside,
falling towards an edge shared with another window, never at the image border) and the weighted sum is
divided by the summed weights: a partition of unity, so equal maps blend to the same map and there are
no steps at window borders.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """A window in working-image pixels: top-left (top, left) and size (height, width), all patch multiples."""

    top: int
    left: int
    height: int
    width: int

    def grid_slice(self, patch: int) -> tuple[slice, slice]:
        """Where this window's patch map sits in the global (rows, cols) patch grid."""
        return (slice(self.top // patch, (self.top + self.height) // patch),
                slice(self.left // patch, (self.left + self.width) // patch))

    def to_photo(self, scale_y: float, scale_x: float) -> list[float]:
        """[x, y, width, height] in photo pixels (x right, y down) given working -> photo scales."""
        return [self.left * scale_x, self.top * scale_y, self.width * scale_x, self.height * scale_y]


def _starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return sorted(set(starts))


def plan_windows(height: int, width: int, tile: int, overlap: float, patch: int) -> list[Window]:
    """Windows covering a (height, width) working image; row-major order.

    Parameters
    ----------
    height, width : int
        Working-image size in pixels (multiples of ``patch``).
    tile : int
        Window side in pixels (a multiple of ``patch``); 0 or a tile larger than the image gives one window.
    overlap : float
        Fraction in [0, 0.9] of a window shared with its neighbour; the stride is rounded to whole patches.
    patch : int
        Patch size in pixels.

    Raises ``ValueError`` for sizes that are not patch multiples or an overlap outside [0, 0.9].
    """
    if height % patch or width % patch or (tile and tile % patch):
        raise ValueError(f"image {height}x{width} and tile {tile} must be multiples of the patch size {patch}")
    if not 0.0 <= overlap <= 0.9:
        raise ValueError(f"overlap must be in [0, 0.9], not {overlap}")
    if tile <= 0 or (height <= tile and width <= tile):
        return [Window(0, 0, height, width)]
    stride = max(patch, int(round(tile * (1.0 - overlap) / patch)) * patch)
    tile_h, tile_w = min(tile, height), min(tile, width)
    return [Window(top, left, tile_h, tile_w)
            for top in _starts(height, tile_h, stride) for left in _starts(width, tile_w, stride)]


def _ramp(length: int, start_ramp: int, end_ramp: int) -> np.ndarray:
    weights = np.ones(length, dtype=np.float64)
    if start_ramp > 0:
        x = np.arange(start_ramp)
        weights[:start_ramp] = np.minimum(weights[:start_ramp], 0.5 - 0.5 * np.cos(np.pi * (x + 0.5) / start_ramp))
    if end_ramp > 0:
        x = np.arange(end_ramp)[::-1]
        weights[-end_ramp:] = np.minimum(weights[-end_ramp:], 0.5 - 0.5 * np.cos(np.pi * (x + 0.5) / end_ramp))
    return weights


def blend_weights(window: Window, windows: list[Window], patch: int) -> np.ndarray:
    """(rows, cols) blending weights of ``window`` at patch resolution, all > 0.

    Along each side shared with an overlapping neighbour the weight ramps up (raised cosine) across the
    overlap; sides on the image border keep weight 1.
    """
    rows, cols = window.height // patch, window.width // patch

    def overlaps(axis: str) -> tuple[int, int]:
        start, length = (window.top, window.height) if axis == "y" else (window.left, window.width)
        before = after = 0
        for other in windows:
            o_start, o_len = (other.top, other.height) if axis == "y" else (other.left, other.width)
            if o_start < start < o_start + o_len:
                before = max(before, o_start + o_len - start)
            if start < o_start < start + length:
                after = max(after, start + length - o_start)
        return before // patch, after // patch

    top, bottom = overlaps("y")
    left, right = overlaps("x")
    return np.outer(_ramp(rows, top, bottom), _ramp(cols, left, right))


class Blender:
    """Accumulates per-window (rows, cols) maps into the global patch grid with blending weights."""

    def __init__(self, rows: int, cols: int, windows: list[Window], patch: int) -> None:
        self.patch = patch
        self.windows = windows
        self._sum = np.zeros((rows, cols), dtype=np.float64)
        self._weight = np.zeros((rows, cols), dtype=np.float64)

    def add(self, window: Window, values: np.ndarray) -> None:
        """Add one window's (rows, cols) map. Raises ``ValueError`` on a shape mismatch."""
        rows, cols = self.window_grid(window)
        if values.shape != (rows, cols):
            raise ValueError(f"window map is {values.shape}, expected {(rows, cols)}")
        weights = blend_weights(window, self.windows, self.patch)
        target = window.grid_slice(self.patch)
        self._sum[target] += weights * values
        self._weight[target] += weights

    def window_grid(self, window: Window) -> tuple[int, int]:
        return window.height // self.patch, window.width // self.patch

    def result(self) -> np.ndarray:
        """The blended (rows, cols) float32 map. Raises ``ValueError`` if some cell got no window."""
        if np.any(self._weight <= 0):
            raise ValueError("some patches are covered by no window")
        return (self._sum / self._weight).astype(np.float32)


def blend(windows: list[Window], maps: list[np.ndarray], rows: int, cols: int, patch: int) -> np.ndarray:
    """Blend per-window maps (same order as ``windows``) into one (rows, cols) float32 map."""
    blender = Blender(rows, cols, windows, patch)
    for window, values in zip(windows, maps, strict=True):
        blender.add(window, values)
    return blender.result()
