"""The editable label map drawn at screen resolution, and the mouse input of the editing tools.

Drawing: the visible part of the label map is resampled (nearest) to the screen pixels it covers and
coloured with a per-class table (four OpenCV lookups and a merge), then blitted untransformed: the cost
depends on the window size, not the photo's (a 5640 x 3172 map costs the same as a small one).

Input: while a tool is active the item takes left-button drags and clicks (in photo pixels) and hands
them to the callbacks; the middle button, the wheel and drags with Space held still pan and zoom.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QStyleOptionGraphicsItem, QWidget

PointCallback = Callable[[float, float], None]


class LabelLayerItem(pg.GraphicsObject):
    """Shows a (height, width) uint8 label map with class colours; forwards tool input.

    Callbacks (set by the editor): ``on_press(x, y)``, ``on_drag(x, y)``, ``on_release(x, y)``,
    ``on_click(x, y, double)``, ``on_hover(x, y)``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._labels: np.ndarray | None = None
        self._tables = [np.zeros(256, np.uint8) for _ in range(4)]
        self._version = 0
        self._cache_key: tuple | None = None
        self._image: QImage | None = None
        self._buffer: np.ndarray | None = None
        self._origin = QPointF()
        self.tool_active = False
        self.pan_held = False
        self.on_press: PointCallback | None = None
        self.on_drag: PointCallback | None = None
        self.on_release: PointCallback | None = None
        self.on_click: Callable[[float, float, bool], None] | None = None
        self.on_hover: PointCallback | None = None
        self.setAcceptHoverEvents(True)

    # --- content ---------------------------------------------------------------------------------
    def set_labels(self, labels: np.ndarray | None) -> None:
        """Show ``labels`` (kept by reference: edit it in place, then call :meth:`changed`)."""
        self.prepareGeometryChange()
        self._labels = labels
        self.changed()

    def set_colors(self, colors: dict[int, tuple[int, int, int]], opacity: float, hidden: set[int]) -> None:
        """Class colours (r, g, b) by id, drawn at ``opacity``; ids in ``hidden`` and background are not drawn."""
        tables = [np.zeros(256, np.uint8) for _ in range(4)]
        alpha = int(round(255 * float(np.clip(opacity, 0.0, 1.0))))
        for class_id, (r, g, b) in colors.items():
            if class_id == 0 or class_id in hidden:
                continue
            for channel, value in enumerate((b, g, r)):  # premultiplied BGRA = little-endian ARGB32
                tables[channel][class_id] = value * alpha // 255
            tables[3][class_id] = alpha
        self._tables = tables
        self.changed()

    def changed(self, region: object = None) -> None:
        """The map (or a region of it) changed: redraw."""
        self._version += 1
        self._image = None
        self.update()

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt override
        if self._labels is None:
            return QRectF()
        height, width = self._labels.shape
        return QRectF(0, 0, width, height)

    # --- drawing ---------------------------------------------------------------------------------
    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        if self._labels is None:
            return
        screen = painter.transform().mapRect(self.boundingRect())
        device = painter.device()
        visible = screen.intersected(QRectF(0, 0, device.width(), device.height()))
        if visible.isEmpty():
            return
        x0, y0 = int(np.floor(visible.left())), int(np.floor(visible.top()))
        x1, y1 = int(np.ceil(visible.right())), int(np.ceil(visible.bottom()))
        key = (round(screen.left(), 2), round(screen.top(), 2), round(screen.width(), 2), round(screen.height(), 2),
               x0, y0, x1, y1, self._version)
        if key != self._cache_key or self._image is None:
            self._render(screen, x0, y0, x1, y1)
            self._cache_key = key
        painter.save()
        painter.resetTransform()
        painter.drawImage(self._origin, self._image)
        painter.restore()

    def _render(self, screen: QRectF, x0: int, y0: int, x1: int, y1: int) -> None:
        assert self._labels is not None
        rows, cols = self._labels.shape
        sx, sy = cols / screen.width(), rows / screen.height()
        xs = np.clip(((np.arange(x0, x1) + 0.5 - screen.left()) * sx).astype(np.int32), 0, cols - 1)
        ys = np.clip(((np.arange(y0, y1) + 0.5 - screen.top()) * sy).astype(np.int32), 0, rows - 1)
        # Only the covered rectangle of the map is read, then resampled with a remap of screen size.
        c0, c1, r0, r1 = int(xs[0]), int(xs[-1]) + 1, int(ys[0]), int(ys[-1]) + 1
        crop = self._labels[r0:r1, c0:c1]
        map_x = np.broadcast_to((xs - c0).astype(np.float32), (len(ys), len(xs)))
        map_y = np.broadcast_to((ys - r0).astype(np.float32)[:, None], (len(ys), len(xs)))
        ids = cv2.remap(crop, np.ascontiguousarray(map_x), np.ascontiguousarray(map_y), cv2.INTER_NEAREST)
        self._buffer = cv2.merge([cv2.LUT(ids, table) for table in self._tables])
        height, width = ids.shape
        self._image = QImage(self._buffer.data, width, height, 4 * width, QImage.Format.Format_ARGB32_Premultiplied)
        self._origin = QPointF(x0, y0)

    # --- input -----------------------------------------------------------------------------------
    def _takes(self, button: Qt.MouseButton) -> bool:
        return self.tool_active and not self.pan_held and button == Qt.MouseButton.LeftButton

    def mouseDragEvent(self, ev: object) -> None:  # noqa: N802 - pyqtgraph override
        if not self._takes(ev.button()):
            ev.ignore()
            return
        ev.accept()
        pos = ev.pos()
        if ev.isStart():
            start = ev.buttonDownPos()
            if self.on_press:
                self.on_press(start.x(), start.y())
        if self.on_drag:
            self.on_drag(pos.x(), pos.y())
        if ev.isFinish() and self.on_release:
            self.on_release(pos.x(), pos.y())

    def mouseClickEvent(self, ev: object) -> None:  # noqa: N802 - pyqtgraph override
        if not self._takes(ev.button()):
            ev.ignore()
            return
        ev.accept()
        if self.on_click:
            self.on_click(ev.pos().x(), ev.pos().y(), bool(ev.double()))

    def hoverEvent(self, ev: object) -> None:  # noqa: N802 - pyqtgraph override
        if self.tool_active and not ev.isExit() and self.on_hover:
            self.on_hover(ev.pos().x(), ev.pos().y())
        if self.tool_active and not ev.isExit():
            ev.acceptDrags(Qt.MouseButton.LeftButton)
            ev.acceptClicks(Qt.MouseButton.LeftButton)
