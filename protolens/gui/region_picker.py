"""Region proposals drawn over the mask editor for click-to-accept: outlines of all regions and one prebuilt
highlight per region, shown while the cursor is over it.

Regions are an id map: (rows, cols) int32, -1 where no region, 0..n-1 elsewhere, on a grid stretched over the
photo (the object-regions backend's refined map, at most ~1024 cells on the longer side). Photo pixel (x, y)
lies in cell (row, col) = (floor(y * rows / height), floor(x * cols / width)), the mapping of OpenCV's nearest
resize (``cv2.INTER_NEAREST``), so the pixels a click accepts are exactly ``Regions.mask(i)`` of the layer.

Speed: every region's highlight (its bounding-box crop, a uint8 image coloured through a lookup table, cached
by the scene at screen resolution) is built once when the regions arrive, with the id map enlarged once to the
photo's size (uint8); a hover reads one pixel of it (O(1)) and toggles the visibility of at most two items, and
an accept compares one bounding box of it, so neither depends on the number of regions.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF
from PySide6.QtWidgets import QGraphicsItem

from protolens.core.editing import Region

Z_OUTLINES = 6.0
Z_HIGHLIGHT = 6.5
OUTLINE_RGBA = (255, 255, 255, 150)
BORDER_RGBA = (255, 225, 0, 255)
BORDER_CELLS = 2
FILL_ALPHA = 150


MAX_REGIONS = 254
"""Most regions a picker shows (its photo-size map is uint8: 0 = none, i + 1 = region i)."""


def regions_id_map(masks: np.ndarray) -> np.ndarray:
    """An id map from region masks (n, rows, cols) bool (a ``Regions`` layer's masks; they may overlap).

    Returns (rows, cols) int32: the index of the region covering each cell, -1 where none does. Where regions
    overlap the smallest one wins, so a region lying inside a larger one can still be picked.
    """
    masks = np.asarray(masks, bool)
    ids = np.full(masks.shape[1:], -1, np.int32)
    for index in np.argsort(-masks.reshape(len(masks), -1).sum(axis=1), kind="stable"):
        ids[masks[index]] = int(index)
    return ids


def _cell_starts(cells: int, pixels: int) -> np.ndarray:
    """(cells + 1,) first photo pixel of each cell under OpenCV's nearest mapping, then ``pixels``."""
    source = cv2.resize(np.arange(cells, dtype=np.float32).reshape(1, cells), (pixels, 1),
                        interpolation=cv2.INTER_NEAREST).reshape(-1).astype(np.int64)
    return np.searchsorted(source, np.arange(cells + 1), side="left")


def _lut(rgb: tuple[int, int, int]) -> np.ndarray:
    lut = np.zeros((256, 4), np.uint8)
    lut[1] = (*rgb, FILL_ALPHA)
    lut[2] = BORDER_RGBA
    return lut


class RegionPicker:
    """The regions of the Regions tool on one canvas view (a pyqtgraph ViewBox), photo pixel coordinates.

    Attributes
    ----------
    ids : numpy.ndarray or None
        (rows, cols) int32 id map (-1 = no region), see the module docstring.
    image_size : tuple of int or None
        (height, width) of the photo the map covers, in pixels.
    hovered : int
        Index of the highlighted region, -1 for none.
    source : str
        Where the regions came from (for the panel), e.g. "6 object regions".
    active : bool
        The Regions tool is on: outlines shown, hovers highlight.
    color : tuple of int
        (r, g, b) fill of the highlight (the current class's colour).
    cursor : tuple of float
        The last hovered photo pixel (x, y); new regions are highlighted there at once.
    """

    def __init__(self, view: Any) -> None:
        self.view = view
        self.ids: np.ndarray | None = None
        self.image_size: tuple[int, int] | None = None
        self.hovered = -1
        self.source = ""
        self.active = False
        self.color = (255, 255, 0)
        self.cursor = (-1.0, -1.0)
        self._items: list[pg.ImageItem] = []
        self._crops: list[np.ndarray] = []
        self._boxes: list[tuple[int, int, int, int]] = []
        self._full: np.ndarray | None = None  # (height, width) uint8: 0 none, i + 1 region i
        self._row_start = self._col_start = np.zeros(1, np.int64)
        self.outlines = pg.ImageItem()
        self.outlines.setZValue(Z_OUTLINES)
        self.outlines.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.outlines.setVisible(False)
        view.addItem(self.outlines)

    @property
    def count(self) -> int:
        """Number of regions (0 without regions)."""
        return len(self._items)

    # --- content ---------------------------------------------------------------------------------
    def set_regions(self, ids: np.ndarray | None, image_size: tuple[int, int] | None, source: str = "") -> None:
        """Show the regions of id map ``ids`` ((rows, cols) int, -1 = none) over a photo of ``image_size``
        (height, width); None clears. Builds the outline image and one highlight item per region.

        Raises ValueError for a map that is not 2-D or has more than ``MAX_REGIONS`` regions.
        """
        self._clear_items()
        if ids is None or image_size is None:
            self.ids, self.image_size, self.source, self._full = None, None, "", None
            self.outlines.clear()
            return
        ids = np.ascontiguousarray(ids, np.int32)
        if ids.ndim != 2 or (ids.size and ids.max() >= MAX_REGIONS):
            raise ValueError(f"a region id map is (rows, cols) with ids < {MAX_REGIONS}, got shape {ids.shape}")
        self.ids, self.source = ids, source
        self.image_size = (int(image_size[0]), int(image_size[1]))
        (rows, cols), (height, width) = ids.shape, self.image_size
        self._row_start, self._col_start = _cell_starts(rows, height), _cell_starts(cols, width)
        self._full = cv2.resize((ids + 1).astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
        self._build_outlines()
        self._build_highlights()
        self._apply_visibility()
        self.hover(*self.cursor)

    def _clear_items(self) -> None:
        for item in self._items:
            self.view.removeItem(item)
        self._items, self._crops, self._boxes = [], [], []
        self.hovered = -1

    def _build_outlines(self) -> None:
        assert self.ids is not None and self.image_size is not None
        ids = self.ids
        edge = np.zeros(ids.shape, np.uint8)
        edge[:, 1:] |= ids[:, 1:] != ids[:, :-1]
        edge[1:, :] |= ids[1:, :] != ids[:-1, :]
        lut = np.zeros((256, 4), np.uint8)
        lut[1] = OUTLINE_RGBA
        self.outlines.setImage(edge, autoLevels=False, levels=(0, 255), lut=lut)
        self.outlines.setRect(QRectF(0, 0, self.image_size[1], self.image_size[0]))

    def _build_highlights(self) -> None:
        """One item per region: its bounding-box crop, 1 inside, 2 on its border (``BORDER_CELLS`` cells wide,
        drawn yellow), 0 outside."""
        assert self.ids is not None
        ids = self.ids
        n = int(ids.max()) + 1 if ids.size else 0
        rows, cols = ids.shape
        shifted = ids + 1  # 0 = no region
        rows_hit = np.bincount((shifted * rows + np.arange(rows)[:, None]).ravel(),
                               minlength=(n + 1) * rows).reshape(n + 1, rows)[1:] > 0
        cols_hit = np.bincount((shifted * cols + np.arange(cols)[None, :]).ravel(),
                               minlength=(n + 1) * cols).reshape(n + 1, cols)[1:] > 0
        kernel = np.ones((2 * BORDER_CELLS + 1,) * 2, np.uint8)
        lut = _lut(self.color)
        for index in range(n):
            r = np.flatnonzero(rows_hit[index])
            c = np.flatnonzero(cols_hit[index])
            if not len(r):  # an id without cells: keep indices aligned with an empty item
                box, crop = (0, 0, 0, 0), np.zeros((0, 0), np.uint8)
            else:
                box = (int(r[0]), int(r[-1]) + 1, int(c[0]), int(c[-1]) + 1)
                inside = (ids[box[0]:box[1], box[2]:box[3]] == index).astype(np.uint8)
                b = BORDER_CELLS
                padded = cv2.copyMakeBorder(inside, b, b, b, b, cv2.BORDER_CONSTANT, value=0)
                crop = inside + (inside - cv2.erode(padded, kernel)[b:-b, b:-b])
            item = pg.ImageItem()
            item.setZValue(Z_HIGHLIGHT)
            item.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
            item.setVisible(False)
            if crop.size:
                item.setImage(crop, autoLevels=False, levels=(0, 255), lut=lut)
                item.setRect(self._photo_rect(box))
            self.view.addItem(item)
            self._items.append(item)
            self._crops.append(crop)
            self._boxes.append(box)

    def _photo_rect(self, box: tuple[int, int, int, int]) -> QRectF:
        r0, r1, c0, c1 = box
        x0, x1 = float(self._col_start[c0]), float(self._col_start[c1])
        y0, y1 = float(self._row_start[r0]), float(self._row_start[r1])
        return QRectF(x0, y0, x1 - x0, y1 - y0)

    def set_color(self, rgb: tuple[int, int, int]) -> None:
        """Fill colour (r, g, b) of the highlight (the current class's colour); only lookup tables change."""
        self.color = tuple(int(v) for v in rgb)  # type: ignore[assignment]
        lut = _lut(self.color)
        for item, crop in zip(self._items, self._crops, strict=True):
            if crop.size:
                item.setLookupTable(lut)

    def set_active(self, active: bool) -> None:
        """Show the outlines and take hovers (the Regions tool is on) or hide everything."""
        self.active = bool(active)
        if not self.active:
            self.hover(-1.0, -1.0)
        self._apply_visibility()

    def _apply_visibility(self) -> None:
        self.outlines.setVisible(self.active and self.ids is not None)

    # --- look-ups --------------------------------------------------------------------------------
    def region_at(self, x: float, y: float) -> int:
        """Index of the region under photo pixel (x, y) (x right, y down), or -1 (none, outside, no regions)."""
        if self._full is None or self.image_size is None:
            return -1
        height, width = self.image_size
        if not (0 <= x < width and 0 <= y < height):
            return -1
        return int(self._full[int(y), int(x)]) - 1

    def hover(self, x: float, y: float) -> int:
        """Highlight the region under (x, y) (O(1): at most two visibility toggles); returns its index or -1."""
        self.cursor = (float(x), float(y))
        index = self.region_at(x, y) if self.active else -1
        if index != self.hovered:
            if 0 <= self.hovered < len(self._items):
                self._items[self.hovered].setVisible(False)
            if 0 <= index < len(self._items):
                self._items[index].setVisible(True)
            self.hovered = index
        return index

    def pixels(self, index: int) -> tuple[Region, np.ndarray] | None:
        """The photo pixels of region ``index``: its bounding box (a ``Region``: rows [top, bottom), columns
        [left, right) of the photo) and a bool mask of that box's shape, True on the region; None if empty."""
        if self._full is None or not 0 <= index < len(self._crops) or not self._crops[index].size:
            return None
        r0, r1, c0, c1 = self._boxes[index]
        region = Region(int(self._row_start[r0]), int(self._col_start[c0]), int(self._row_start[r1]),
                        int(self._col_start[c1]))
        return region, self._full[region.slices] == index + 1
