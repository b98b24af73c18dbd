"""The mask editor's state and tools: brush, eraser, polygon, lasso, flood fill and region picking on a label
map, with undo.

Every tool edits the label map in place through ``protolens.core.editing`` (only the touched region),
records one undo step per stroke/fill/accepted region, and asks the label layer to redraw. Autosave is driven
by the ``edited`` signal (the window saves a few seconds after the last edit). The Regions tool paints whole
object regions (``RegionPicker``) with a click: the current class, or background with Shift.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QObject, QPointF, Signal
from PySide6.QtGui import QColor, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsEllipseItem, QGraphicsPathItem

from protolens.core.annotation import Annotation
from protolens.core.editing import Region, fill_polygon, flood_fill, paint_segment
from protolens.core.labels import LabelSet
from protolens.gui.deferred_history import DeferredHistory
from protolens.gui.label_layer import LabelLayerItem
from protolens.gui.region_picker import RegionPicker

TOOLS = ("brush", "eraser", "fill", "polygon", "lasso", "regions")
TOOL_KEYS = {"brush": "B", "eraser": "E", "fill": "F", "polygon": "P", "lasso": "L", "regions": "R"}


class Editor(QObject):
    """Edits ``annotation.labels`` with the current tool and class.

    Signals: ``edited()`` after each recorded edit, undo or redo; ``history_changed()``.
    """

    edited = Signal()
    history_changed = Signal()

    def __init__(self, layer: LabelLayerItem, history_bytes: int = 256 * 1024**2) -> None:
        super().__init__()
        self.layer = layer
        self.history = DeferredHistory(history_bytes)
        self.annotation: Annotation | None = None
        self.labels = LabelSet.default()
        self.tool = "brush"
        self.class_id = 1
        self.radius = 8.0
        self.opacity = 0.5
        self.hidden: set[int] = set()
        self._last: tuple[float, float] | None = None
        self._region: Region | None = None
        self._path: list[tuple[float, float]] = []
        self.picker: RegionPicker | None = None  # the Regions tool's regions (set by the edit session)
        self.remove_held = False  # Shift held at the last click: the Regions tool removes instead of adding
        self.preview = QGraphicsPathItem()
        self.cursor = QGraphicsEllipseItem()
        for item, color in ((self.preview, QColor(255, 255, 0)), (self.cursor, QColor(255, 255, 255))):
            pen = QPen(color)
            pen.setCosmetic(True)
            item.setPen(pen)
            item.setZValue(20)
        layer.on_press, layer.on_drag, layer.on_release = self._press, self._drag, self._release
        layer.on_click, layer.on_hover = self._click, self._hover

    # --- state -----------------------------------------------------------------------------------
    def set_annotation(self, annotation: Annotation | None) -> None:
        """Edit ``annotation`` (None stops editing); the undo history starts empty."""
        self.annotation = annotation
        self.history.clear()
        self._path.clear()
        self.preview.setPath(QPainterPath())
        self.layer.set_labels(None if annotation is None else annotation.labels)
        self.refresh_colors()
        if self.picker is not None:
            self.picker.set_active(annotation is not None and self.tool == "regions")
        self.history_changed.emit()

    def set_labels(self, labels: LabelSet) -> None:
        self.labels = labels
        if self.labels.by_id(self.class_id) is None and labels.classes:
            self.class_id = labels.classes[0].id
        self.refresh_colors()

    def refresh_colors(self) -> None:
        self.layer.set_colors({c.id: c.color for c in self.labels.classes}, self.opacity, self.hidden)

    def set_tool(self, tool: str) -> None:
        if tool not in TOOLS:
            raise ValueError(f"tool must be one of {TOOLS}")
        self.tool = tool
        self._path.clear()
        self.preview.setPath(QPainterPath())
        if self.picker is not None:
            self.picker.set_active(tool == "regions" and self.annotation is not None)

    def set_radius(self, radius: float) -> None:
        self.radius = float(np.clip(radius, 0.5, 500.0))

    @property
    def active(self) -> bool:
        return self.annotation is not None

    # --- edits -----------------------------------------------------------------------------------
    def _value(self) -> int:
        return 0 if self.tool == "eraser" else int(self.class_id)

    def _finish(self, label: str) -> None:
        assert self.annotation is not None
        if self.history.commit(self.annotation.labels, self._region, label) is not None:
            self.annotation.touched()
            self.edited.emit()
            self.history_changed.emit()
        self._region = None

    def _paint_to(self, x: float, y: float) -> None:
        assert self.annotation is not None
        start = self._last if self._last is not None else (x, y)
        region = paint_segment(self.annotation.labels, start, (x, y), self.radius, self._value())
        if region is not None:
            self._region = region.union(self._region)
            self.layer.changed(region)
        self._last = (x, y)

    def _press(self, x: float, y: float) -> None:
        if self.annotation is None:
            return
        if self.tool in ("brush", "eraser"):
            self.history.begin(self.annotation.labels)
            self._last, self._region = None, None
            self._paint_to(x, y)
        elif self.tool == "lasso":
            self._path = [(x, y)]

    def _drag(self, x: float, y: float) -> None:
        if self.annotation is None:
            return
        if self.tool in ("brush", "eraser"):
            self._paint_to(x, y)
        elif self.tool == "lasso":
            self._path.append((x, y))
            self._show_path(closed=False)
        self._hover(x, y)

    def _release(self, x: float, y: float) -> None:
        if self.annotation is None:
            return
        if self.tool in ("brush", "eraser"):
            self._last = None
            self._finish(f"{self.tool} {self.labels.name_of(self._value())}")
        elif self.tool == "lasso":
            self._fill_path("lasso")

    def _click(self, x: float, y: float, double: bool) -> None:
        if self.annotation is None:
            return
        if self.tool in ("brush", "eraser"):
            self._press(x, y)
            self._release(x, y)
        elif self.tool == "fill":
            self.history.begin(self.annotation.labels)
            self._region = flood_fill(self.annotation.labels, (x, y), self._value())
            if self._region is not None:
                self.layer.changed(self._region)
            self._finish(f"fill {self.labels.name_of(self._value())}")
        elif self.tool == "regions":
            self.accept_region(x, y, remove=self.remove_held)
        elif self.tool == "polygon":
            if double:
                self.close_polygon()
            else:
                self._path.append((x, y))
                self._show_path(closed=False)

    def accept_region(self, x: float, y: float, remove: bool = False) -> bool:
        """Paint the picker's region under photo pixel (x, y) with the current class (``remove``: background).

        One undo step; returns False when nothing is edited, no region lies there or the regions belong to
        another photo size.
        """
        if self.annotation is None or self.picker is None:
            return False
        index = self.picker.region_at(x, y)
        hit = self.picker.pixels(index)
        labels = self.annotation.labels
        if hit is None or self.picker.image_size != labels.shape:
            return False
        region, mask = hit
        value = 0 if remove else int(self.class_id)
        name = f"remove region {index + 1}" if remove else f"add region {index + 1} {self.labels.name_of(value)}"
        if self.history.push_region(labels, region, mask, value, name) is None:
            return False
        self.layer.changed(region)
        self.annotation.touched()
        self.edited.emit()
        self.history_changed.emit()
        return True

    def close_polygon(self) -> None:
        """Fill the polygon clicked so far (needs three points); Enter or a double-click does this."""
        if self.tool == "polygon":
            self._fill_path("polygon")

    def cancel_path(self) -> None:
        """Drop an unfinished polygon or lasso."""
        self._path.clear()
        self.preview.setPath(QPainterPath())

    def _fill_path(self, label: str) -> None:
        assert self.annotation is not None
        points, self._path = self._path, []
        self.preview.setPath(QPainterPath())
        if len(points) < 3:
            return
        self.history.begin(self.annotation.labels)
        self._region = fill_polygon(self.annotation.labels, points, self._value())
        if self._region is not None:
            self.layer.changed(self._region)
        self._finish(f"{label} {self.labels.name_of(self._value())}")

    def _show_path(self, closed: bool) -> None:
        path = QPainterPath()
        if self._path:
            path.moveTo(QPointF(*self._path[0]))
            for point in self._path[1:]:
                path.lineTo(QPointF(*point))
            if closed:
                path.closeSubpath()
        self.preview.setPath(path)

    def _hover(self, x: float, y: float) -> None:
        r = self.radius if self.tool in ("brush", "eraser") else 0.0
        self.cursor.setRect(x - r, y - r, 2 * r, 2 * r)
        self.cursor.setVisible(r > 0)
        if self.tool == "regions" and self.picker is not None:
            label = self.labels.by_id(self.class_id)
            if label is not None and label.color != self.picker.color:
                self.picker.set_color(label.color)
            self.picker.hover(x, y)

    # --- history ---------------------------------------------------------------------------------
    def undo(self) -> bool:
        return self._step(self.history.undo)

    def redo(self) -> bool:
        return self._step(self.history.redo)

    def _step(self, action: object) -> bool:
        if self.annotation is None:
            return False
        edit = action(self.annotation.labels)  # type: ignore[operator]
        if edit is None:
            return False
        self.annotation.touched()
        self.layer.changed(edit.region)
        self.edited.emit()
        self.history_changed.emit()
        return True

    def undo_to(self, count: int) -> None:
        """Undo until ``count`` steps remain (clicking an entry of the history list)."""
        while len(self.history.labels) > count and self.undo():
            pass
        while len(self.history.labels) < count and self.redo():
            pass
