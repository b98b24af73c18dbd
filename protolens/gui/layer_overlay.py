"""Drawing a result's typed layers over the canvas: the label map as a class overlay, region outlines and
keypoints (the photo's own points, labelled). Which layers appear follows the result's kind and the user's
toggles in the Results panel. Scene coordinates are photo pixels (x right, y down, origin top-left).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF
from PySide6.QtGui import QColor

from protolens.core.types import fit_grid

PALETTE = np.array([(0, 0, 0), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (174, 199, 232),
                    (255, 187, 120), (152, 223, 138), (255, 152, 150)], np.uint8)
"""Class colours by id (0 background, transparent); ids beyond wrap around."""

MAX_SIDE = 1024


def class_rgba(ids: np.ndarray, alpha: int = 140) -> np.ndarray:
    """(rows, cols) int class ids as (rows, cols, 4) uint8 RGBA; id <= 0 is transparent."""
    index = np.where(ids > 0, (ids - 1) % (len(PALETTE) - 1) + 1, 0)
    rgba = np.zeros((*ids.shape, 4), np.uint8)
    rgba[..., :3] = PALETTE[index]
    rgba[..., 3] = np.where(ids > 0, alpha, 0)
    return rgba


def display_grid(values: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(rows, cols[, ...]) ``values`` of a photo of ``image_size`` at the grid the overlay draws,
    ``fit_grid(image_size, MAX_SIDE)`` (nearest-neighbour resize; as is when already that size)."""
    rows, cols = fit_grid(image_size, MAX_SIDE)
    if values.shape[:2] == (rows, cols):
        return values
    return cv2.resize(values, (cols, rows), interpolation=cv2.INTER_NEAREST)


class LayerOverlay:
    """The label-map, region and keypoint items of one canvas (``canvas.view`` is a pyqtgraph ViewBox)."""

    def __init__(self, canvas: Any) -> None:
        self.canvas = canvas
        self.label_item = pg.ImageItem()
        self.label_item.setZValue(3)
        self.region_item = pg.ImageItem()
        self.region_item.setZValue(3.5)
        self.points = pg.ScatterPlotItem(size=11, pen=pg.mkPen("w", width=1.5), brush=pg.mkBrush(255, 60, 60, 220))
        self.points.setZValue(8)
        self._texts: list[pg.TextItem] = []
        self.visible = {"label_map": True, "regions": True, "keypoints": True}
        self.label_rgba: Callable[[Any], np.ndarray] | None = None
        """Paints a LabelMap as RGBA at the display grid instead of :func:`class_rgba`'s palette (the Class
        prompts panel sets it: the project's class colours)."""
        for item in (self.label_item, self.region_item, self.points):
            canvas.view.addItem(item)

    def clear(self) -> None:
        self.label_item.clear()
        self.region_item.clear()
        self.points.clear()
        for text in self._texts:
            self.canvas.view.removeItem(text)
        self._texts = []

    def show(self, found: Any) -> None:
        """Draw the layers of ``found`` (a FoundResult), or clear with None."""
        self.clear()
        if found is None or self.canvas.image_size is None:
            return
        layers = found.layers
        height, width = self.canvas.image_size
        rect = QRectF(0, 0, width, height)
        if layers.label_map is not None:
            label_map = layers.label_map
            self.label_item.setImage(self.label_rgba(label_map) if self.label_rgba is not None else
                                     class_rgba(display_grid(label_map.ids, (height, width))))
            self.label_item.setRect(rect)
        if layers.regions is not None and len(layers.regions.labels):
            self.region_item.setImage(self._outlines(layers.regions, (height, width)))
            self.region_item.setRect(rect)
        if layers.keypoints is not None:
            self._keypoints(layers.keypoints)
        self._apply_visibility()

    @staticmethod
    def _outlines(regions: Any, image_size: tuple[int, int]) -> np.ndarray:
        first = display_grid(regions.masks[0].astype(np.uint8), image_size)
        rgba = np.zeros((*first.shape, 4), np.uint8)
        for index in range(len(regions.labels)):
            mask = display_grid(regions.masks[index].astype(np.uint8), image_size)
            contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
            color = (*(int(c) for c in PALETTE[index % (len(PALETTE) - 1) + 1]), 255)
            cv2.drawContours(rgba, contours, -1, color, 1)
        return rgba

    def _keypoints(self, keypoints: Any) -> None:
        query = keypoints.in_group("query")
        xy = keypoints.xy[query]
        self.points.setData(pos=xy, data=query)
        for index, (x, y) in zip(query, xy, strict=True):
            label = keypoints.labels[index]
            if not label:
                continue
            text = pg.TextItem(label, color=QColor(255, 255, 255), fill=pg.mkBrush(0, 0, 0, 150), anchor=(0, 1))
            text.setPos(float(x) + 4, float(y) - 4)
            text.setZValue(9)
            self.canvas.view.addItem(text)
            self._texts.append(text)

    def set_visible(self, visible: dict[str, bool]) -> None:
        """Show or hide layers by name (``label_map``, ``regions``, ``keypoints``)."""
        self.visible.update(visible)
        self._apply_visibility()

    def _apply_visibility(self) -> None:
        self.label_item.setVisible(self.visible["label_map"])
        self.region_item.setVisible(self.visible["regions"])
        for item in (self.points, *self._texts):
            item.setVisible(self.visible["keypoints"])
