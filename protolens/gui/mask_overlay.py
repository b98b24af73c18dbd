"""The threshold mask drawn at screen resolution, so a slider move costs about a millisecond of pixel work.

Drawing a scaled, translucent image costs Qt's raster engine ~10 ns per screen pixel (about 6 ms for a
1000 x 600 view, whatever the image's own size); blitting an unscaled, premultiplied image costs ~0.3 ms.
This item therefore resamples its score map to the visible screen pixels once per view change (nearest
neighbour, cached), and on a threshold change only rebuilds the screen-sized premultiplied ARGB image
with four OpenCV thresholds and a merge, then blits it without any transform. The outline mode keeps the
boundary pixels of the same screen mask (mask minus its 3x3 erosion): one pixel wide at every zoom.
"""

from __future__ import annotations

import cv2
import numpy as np
from PySide6.QtCore import QPointF, QRectF
from PySide6.QtGui import QColor, QImage, QPainter
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem, QWidget


def threshold_index(threshold: float) -> int:
    """Smallest uint8 level (value * 255, rounded) counted as foreground for ``threshold`` in [0, 1]."""
    return int(np.ceil(np.clip(threshold, 0.0, 1.0) * 255.0 - 1e-6))


class MaskOverlayItem(QGraphicsItem):
    """Translucent fill of the cells whose score is >= the threshold.

    ``set_map(levels, rect)`` takes (rows, cols) uint8 levels (score * 255) stretched over ``rect``
    (photo pixel coordinates); ``set_threshold``, ``set_color`` and ``set_outline`` only rebuild the
    screen image.
    """

    def __init__(self) -> None:
        super().__init__()
        self._levels: np.ndarray | None = None
        self._probability: np.ndarray | None = None
        self._probability_index = 0
        self._screen_probability: np.ndarray | None = None
        self._rect = QRectF()
        self._index = 128
        self._color = QColor(0, 255, 255, 90)
        self._outline = False
        self._screen_key: tuple | None = None
        self._screen_levels: np.ndarray | None = None
        self._origin = QPointF()
        self._image: QImage | None = None
        self._buffer: np.ndarray | None = None

    def set_map(self, levels: np.ndarray | None, rect: QRectF | None = None,
                probability: np.ndarray | None = None) -> None:
        """Show ``levels`` ((rows, cols) uint8) over ``rect``, or nothing with None.

        ``probability`` (same shape, uint8 probability * 255) additionally requires probability >= the
        probability threshold (see :meth:`set_probability_threshold`).
        """
        self.prepareGeometryChange()
        self._levels = None if levels is None else np.ascontiguousarray(levels, dtype=np.uint8)
        self._probability = None if probability is None else np.ascontiguousarray(probability, dtype=np.uint8)
        self._rect = QRectF(rect) if rect is not None else QRectF()
        self._screen_key, self._image = None, None
        self.update()

    def set_threshold(self, threshold: float) -> None:
        index = threshold_index(threshold)
        if index != self._index:
            self._index, self._image = index, None
            self.update()

    def set_probability_threshold(self, threshold: float) -> None:
        index = threshold_index(threshold)
        if index != self._probability_index:
            self._probability_index, self._image = index, None
            self.update()

    def set_color(self, color: QColor) -> None:
        self._color, self._image = QColor(color), None
        self.update()

    def set_outline(self, outline: bool) -> None:
        """Draw only the mask's boundary (opaque, one screen pixel wide) instead of a translucent fill."""
        self._outline, self._image = bool(outline), None
        self.update()

    @property
    def outline(self) -> bool:
        """Whether only the boundary is drawn."""
        return self._outline

    @property
    def threshold_level(self) -> int:
        """The uint8 level from which cells are filled."""
        return self._index

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt override
        return self._rect

    def _resample(self, painter: QPainter) -> bool:
        """Cache the map resampled to the visible screen pixels; False if nothing is visible."""
        assert self._levels is not None
        screen = painter.transform().mapRect(self._rect)
        device = painter.device()
        visible = screen.intersected(QRectF(0, 0, device.width(), device.height()))
        if visible.isEmpty():
            return False
        x0, y0 = int(np.floor(visible.left())), int(np.floor(visible.top()))
        x1, y1 = int(np.ceil(visible.right())), int(np.ceil(visible.bottom()))
        key = (round(screen.left(), 2), round(screen.top(), 2), round(screen.width(), 2),
               round(screen.height(), 2), x0, y0, x1, y1)
        if key != self._screen_key:
            rows, cols = self._levels.shape
            xs = ((np.arange(x0, x1) + 0.5 - screen.left()) * (cols / screen.width())).astype(np.int32)
            ys = ((np.arange(y0, y1) + 0.5 - screen.top()) * (rows / screen.height())).astype(np.int32)
            map_x = np.broadcast_to(np.clip(xs, 0, cols - 1).astype(np.float32), (y1 - y0, x1 - x0))
            map_y = np.broadcast_to(np.clip(ys, 0, rows - 1).astype(np.float32)[:, None], (y1 - y0, x1 - x0))
            map_x, map_y = np.ascontiguousarray(map_x), np.ascontiguousarray(map_y)
            self._screen_levels = cv2.remap(self._levels, map_x, map_y, cv2.INTER_NEAREST)
            self._screen_probability = None if self._probability is None else cv2.remap(
                self._probability, map_x, map_y, cv2.INTER_NEAREST)
            self._screen_key, self._origin, self._image = key, QPointF(x0, y0), None
        return True

    def _build_image(self) -> None:
        assert self._screen_levels is not None
        alpha = 255 if self._outline else self._color.alpha()
        channels = [self._color.blue() * alpha // 255, self._color.green() * alpha // 255,
                    self._color.red() * alpha // 255, alpha]  # premultiplied BGRA (little-endian ARGB32)
        levels = self._screen_levels
        if self._index <= 0:
            mask = np.full_like(levels, 255)
        else:
            mask = cv2.threshold(levels, self._index - 1, 255, cv2.THRESH_BINARY)[1]
        if self._screen_probability is not None and self._probability_index > 0:
            mask = cv2.bitwise_and(mask, cv2.threshold(self._screen_probability, self._probability_index - 1, 255,
                                                       cv2.THRESH_BINARY)[1])
        if self._outline:
            mask = cv2.subtract(mask, cv2.erode(mask, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE))
        self._buffer = cv2.merge([cv2.threshold(mask, 127, value, cv2.THRESH_BINARY)[1] for value in channels])
        rows, cols = self._screen_levels.shape
        self._image = QImage(self._buffer.data, cols, rows, 4 * cols, QImage.Format.Format_ARGB32_Premultiplied)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        if self._levels is None or self._index > 255 or not self._resample(painter):
            return
        if self._image is None:
            self._build_image()
        painter.save()
        painter.resetTransform()
        painter.drawImage(self._origin, self._image)
        painter.restore()
