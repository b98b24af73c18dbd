"""The drawing of a keypoint-labeling explanation: the query photo on the left, its top-k prototypes stacked on the
right, segments tinted by part label, and a line for every kept match between the two keypoints it joins.

Method: KLC (seed 002) on dense ViT features (Amir et al., arXiv 2112.05814): keypoints are segment centroids
(step 2), lines are best buddies (step 3). In pixel mode the lines are Amir et al.'s pixel correspondences
(§4.1), one colour per pair. Hovering a line or keypoint shows its similarity and both labels (tooltip);
clicking one highlights both segments. The scene is scrollable (scroll bars, Ctrl+wheel zooms) and is redrawn
from the cached :class:`~protolens.core.explanation.Explanation` alone: the label filter and the mode never run
a model.

Coordinates: keypoints are (x, y) photo pixels of their own image (pixel index coordinates: the centre of pixel
(row 0, col 0) is (0, 0)); an image of (height, width) pixels is drawn scaled by ``s`` at ``origin``, so a
point lands at ``origin + ((x + 0.5) s, (y + 0.5) s)`` in scene units.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PySide6.QtCore import QLineF, QPointF, Qt, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QImage,
    QPainter,
    QPainterPath,
    QPainterPathStroker,
    QPen,
    QPixmap,
)
from PySide6.QtWidgets import (
    QGraphicsEllipseItem,
    QGraphicsItem,
    QGraphicsLineItem,
    QGraphicsScene,
    QGraphicsSimpleTextItem,
    QGraphicsView,
    QWidget,
)

from protolens.services.explain_render import NEUTRAL, label_colour

QUERY_HEIGHT = 440.0
PROTOTYPE_HEIGHT = 190.0
COLUMN_GAP = 150.0
ROW_GAP = 34.0
CAPTION = 24.0
UNLABELLED = NEUTRAL
HIGHLIGHT = (255, 230, 0)
MODES = ("segments", "pixels")


def label_colors(labels: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """The colour of every part label in ``labels`` (and "" = unlabelled): the export's fixed palette
    (:func:`protolens.services.explain_render.label_colour`), so a part looks the same here and in the PNG."""
    return {str(label): label_colour(str(label)) for label in {*labels, ""}}


def pair_color(index: int) -> tuple[int, int, int]:
    """A distinct colour per pixel correspondence (golden-angle hues)."""
    color = QColor.fromHsvF((index * 0.618034) % 1.0, 0.85, 1.0)
    return color.red(), color.green(), color.blue()


def _pixmap(rgba: np.ndarray) -> QPixmap:
    """(rows, cols, 3 or 4) uint8 as a QPixmap (copied, so the array may go)."""
    rgba = np.ascontiguousarray(rgba)
    rows, cols, channels = rgba.shape
    fmt = QImage.Format.Format_RGBA8888 if channels == 4 else QImage.Format.Format_RGB888
    return QPixmap.fromImage(QImage(rgba.data, cols, rows, cols * channels, fmt).copy())


def segment_tint(ids: np.ndarray, names: Sequence[str], colors: dict[str, tuple[int, int, int]],
                 size: tuple[int, int], alpha: int = 80) -> np.ndarray:
    """Segments tinted by label with light boundaries: ids (h, w) int (-1 = none) -> (rows, cols, 4) uint8
    RGBA at ``size`` = (rows, cols) (ids resized nearest)."""
    rows, cols = size
    small = cv2.resize(ids.astype(np.int32), (cols, rows), interpolation=cv2.INTER_NEAREST)
    table = np.array([colors.get(name, UNLABELLED) for name in names] or [UNLABELLED], np.uint8)
    rgba = np.zeros((rows, cols, 4), np.uint8)
    inside = small >= 0
    rgba[inside, :3] = table[small[inside]]
    rgba[inside, 3] = alpha
    edge = np.zeros_like(inside)
    edge[:, 1:] |= small[:, 1:] != small[:, :-1]
    edge[1:, :] |= small[1:, :] != small[:-1, :]
    rgba[edge] = (255, 255, 255, 200)
    return rgba


@dataclass
class Panel:
    """One drawn image: its photo size (height, width), where it is (scene units) and its scale."""

    name: str
    image_size: tuple[int, int]
    origin: QPointF
    scale: float
    segments: Any
    pixmap_size: tuple[int, int]

    def to_scene(self, xy: Sequence[float]) -> QPointF:
        """Photo pixel (x, y) of this image -> scene point."""
        return QPointF(self.origin.x() + (float(xy[0]) + 0.5) * self.scale,
                       self.origin.y() + (float(xy[1]) + 0.5) * self.scale)

    def segment_at(self, xy: Sequence[float]) -> int:
        """The segment under photo pixel (x, y), -1 when none."""
        ids = self.segments.ids
        row = int(np.clip(round(float(xy[1])), 0, ids.shape[0] - 1))
        col = int(np.clip(round(float(xy[0])), 0, ids.shape[1] - 1))
        return int(ids[row, col])


@dataclass
class DrawnMatch:
    """A line as drawn: its two ends (panel index, segment, (x, y)), similarity, labels and tooltip."""

    query_segment: int
    panel: int
    prototype_segment: int
    similarity: float
    tooltip: str


class _Clickable:
    """Mix-in: hover thickens, a click calls ``on_click(index)``."""

    index = -1
    on_click: Callable[[int], None] | None = None

    def _setup(self, index: int, on_click: Callable[[int], None], tooltip: str) -> None:
        self.index, self.on_click = index, on_click
        self.setToolTip(tooltip)  # type: ignore[attr-defined]
        self.setAcceptHoverEvents(True)  # type: ignore[attr-defined]
        self.setCursor(Qt.CursorShape.PointingHandCursor)  # type: ignore[attr-defined]

    def mousePressEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        if self.on_click is not None:
            self.on_click(self.index)
        event.accept()


class MatchLine(_Clickable, QGraphicsLineItem):
    """A match line; its hit area is wider than the pen so thin lines are easy to hover."""

    def __init__(self, line: QLineF, pen: QPen, index: int, on_click: Callable[[int], None], tooltip: str) -> None:
        QGraphicsLineItem.__init__(self, line)
        self.setPen(pen)
        self._pen = QPen(pen)
        self._setup(index, on_click, tooltip)

    def shape(self) -> QPainterPath:
        path = QPainterPath(self.line().p1())
        path.lineTo(self.line().p2())
        stroker = QPainterPathStroker()
        stroker.setWidth(8.0)
        return stroker.createStroke(path)

    def hoverEnterEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        pen = QPen(self._pen)
        pen.setWidthF(self._pen.widthF() * 2.2)
        self.setPen(pen)
        super().hoverEnterEvent(event)

    def hoverLeaveEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        self.setPen(self._pen)
        super().hoverLeaveEvent(event)


class KeypointDot(_Clickable, QGraphicsEllipseItem):
    """A matched keypoint: a filled dot with a white rim."""

    def __init__(self, centre: QPointF, radius: float, color: QColor, index: int,
                 on_click: Callable[[int], None], tooltip: str) -> None:
        QGraphicsEllipseItem.__init__(self, centre.x() - radius, centre.y() - radius, 2 * radius, 2 * radius)
        self.setBrush(QBrush(color))
        pen = QPen(QColor(255, 255, 255))
        pen.setWidthF(1.5)
        self.setPen(pen)
        self._setup(index, on_click, tooltip)


class ExplainScene(QGraphicsView):
    """The explanation's drawing (see the module docstring).

    Signals
    -------
    match_clicked(int)
        The index (into :attr:`drawn`) of the match whose line or keypoint was clicked.
    """

    match_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setBackgroundBrush(QBrush(QColor(30, 30, 30)))
        self.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.explanation: Any = None
        self.panels: list[Panel] = []
        self.drawn: list[DrawnMatch] = []
        self.colors: dict[str, tuple[int, int, int]] = {}
        self.label_consistent = False
        self.mode = "segments"
        self.highlighted: int | None = None
        self._overlay_items: list[QGraphicsItem] = []
        self._highlight_items: list[QGraphicsItem] = []
        self._zoomed = False

    # --- public state ------------------------------------------------------------------------------
    @property
    def line_count(self) -> int:
        """Match lines drawn now."""
        return len(self.drawn)

    def lines(self) -> list[MatchLine]:
        """The drawn line items (in match order)."""
        return [item for item in self._overlay_items if isinstance(item, MatchLine)]

    def show_message(self, text: str) -> None:
        """Clear the drawing and say ``text`` (no photo, no bank, computing…)."""
        self.explanation, self.panels, self.drawn = None, [], []
        self._overlay_items, self._highlight_items, self.highlighted = [], [], None
        scene = self.scene()
        scene.clear()
        item = scene.addSimpleText(text)
        item.setBrush(QBrush(QColor(220, 220, 220)))
        item.setFont(QFont(item.font().family(), 12))
        scene.setSceneRect(item.boundingRect().adjusted(-20, -20, 20, 20))
        self.resetTransform()

    def set_explanation(self, explanation: Any, query_rgb: np.ndarray, prototype_rgbs: Sequence[np.ndarray], *,
                        label_consistent: bool = False, mode: str = "segments") -> None:
        """Draw ``explanation`` over the photos (query (h, w, 3) uint8; one RGB per prototype, any size with the
        prototype's aspect) with the label filter and mode given."""
        scene = self.scene()
        scene.clear()
        self.explanation, self.panels, self._overlay_items, self._highlight_items = explanation, [], [], []
        self.highlighted = None
        self.label_consistent, self.mode = bool(label_consistent), mode if mode in MODES else "segments"
        labels = list(explanation.query.segments.names)
        for parts in explanation.prototypes:
            labels += list(parts.segments.names)
        self.colors = label_colors(labels)
        self._layout(explanation, query_rgb, prototype_rgbs)
        self._draw_matches()
        self._zoomed = False
        self.fit()

    def set_filter(self, label_consistent: bool) -> None:
        """Redraw the lines with or without the label-consistent filter (the explanation is reused)."""
        self.label_consistent = bool(label_consistent)
        self._draw_matches()

    def set_mode(self, mode: str) -> None:
        """``"segments"`` (segment matches) or ``"pixels"`` (pixel correspondences, when the explanation has them)."""
        self.mode = mode if mode in MODES else "segments"
        self._draw_matches()

    # --- layout ------------------------------------------------------------------------------------
    def _caption(self, text: str, x: float, y: float) -> None:
        item = QGraphicsSimpleTextItem(text)
        item.setBrush(QBrush(QColor(235, 235, 235)))
        font = item.font()
        font.setPointSizeF(10.5)
        item.setFont(font)
        item.setPos(x, y)
        self.scene().addItem(item)

    def _add_panel(self, name: str, parts: Any, rgb: np.ndarray, origin: QPointF, height: float) -> Panel:
        image_size = (int(parts.image_size[0]), int(parts.image_size[1]))
        scale = height / image_size[0]
        pixmap = self.scene().addPixmap(_pixmap(rgb))
        pixmap.setPos(origin)
        pixmap.setScale(image_size[0] * scale / rgb.shape[0])
        pixmap.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        tint = segment_tint(parts.segments.ids, parts.segments.names, self.colors, rgb.shape[:2])
        overlay = self.scene().addPixmap(_pixmap(tint))
        overlay.setPos(origin)
        overlay.setScale(pixmap.scale())
        overlay.setZValue(1)
        panel = Panel(name, image_size, origin, scale, parts.segments, rgb.shape[:2])
        self.panels.append(panel)
        return panel

    def _layout(self, explanation: Any, query_rgb: np.ndarray, prototype_rgbs: Sequence[np.ndarray]) -> None:
        query = explanation.query
        q_height, q_width = query.image_size
        path = str(getattr(query, "path", "") or "")
        self._caption(f"query: {path.rsplit('/', 1)[-1] or 'photo'}  ({q_width}×{q_height})", 0, 0)
        self._add_panel("query", query, query_rgb, QPointF(0, CAPTION), QUERY_HEIGHT)
        x = QUERY_HEIGHT * q_width / q_height + COLUMN_GAP
        y = 0.0
        for rank, (parts, rgb) in enumerate(zip(explanation.prototypes, prototype_rgbs, strict=False)):
            cosine = explanation.retrieval[rank] if rank < len(explanation.retrieval) else float("nan")
            self._caption(f"{rank + 1}. {parts.label}  ·  cos {cosine:.3f}  ·  {parts.name}", x, y)
            self._add_panel(parts.name, parts, rgb, QPointF(x, y + CAPTION), PROTOTYPE_HEIGHT)
            y += CAPTION + PROTOTYPE_HEIGHT + ROW_GAP
        if not explanation.prototypes:
            self._caption("no prototypes retrieved", x, 0)
        bounds = self.scene().itemsBoundingRect()
        self.scene().setSceneRect(bounds.adjusted(-10, -10, 10, 10))

    # --- lines -------------------------------------------------------------------------------------
    def _clear_overlay(self) -> None:
        for item in (*self._overlay_items, *self._highlight_items):
            self.scene().removeItem(item)
        self._overlay_items, self._highlight_items, self.drawn, self.highlighted = [], [], [], None

    def _draw_matches(self) -> None:
        if self.explanation is None:
            return
        self._clear_overlay()
        if self.mode == "pixels" and self.explanation.correspondences is not None:
            self._draw_correspondences()
        else:
            self._draw_segment_matches()

    def _add_match(self, a: QPointF, b: QPointF, color: tuple[int, int, int], drawn: DrawnMatch,
                   dashed: bool = False) -> None:
        index = len(self.drawn)
        self.drawn.append(drawn)
        pen = QPen(QColor(*color))
        pen.setWidthF(2.0)
        pen.setCosmetic(True)
        if dashed:
            pen.setStyle(Qt.PenStyle.DashLine)
        line = MatchLine(QLineF(a, b), pen, index, self._clicked, drawn.tooltip)
        line.setZValue(3)
        items: list[QGraphicsItem] = [line]
        for point in (a, b):
            dot = KeypointDot(point, 5.0, QColor(*color), index, self._clicked, drawn.tooltip)
            dot.setZValue(4)
            items.append(dot)
        for item in items:
            self.scene().addItem(item)
        self._overlay_items += items

    def _draw_segment_matches(self) -> None:
        explanation, query = self.explanation, self.panels[0]
        for match in explanation.kept(self.label_consistent):
            panel = self.panels[1 + match.prototype]
            parts = explanation.prototypes[match.prototype]
            q_label, p_label = match.query_label, match.prototype_label
            tooltip = (f"similarity {match.similarity:.3f}\n"
                       f"query: {q_label or '(unlabelled)'}  ·  segment {match.query_segment}\n"
                       f"prototype {match.prototype + 1} ({parts.label}): {p_label or '(unlabelled)'}  ·  "
                       f"segment {match.prototype_segment}")
            drawn = DrawnMatch(match.query_segment, 1 + match.prototype, match.prototype_segment,
                               float(match.similarity), tooltip)
            self._add_match(query.to_scene(match.query_xy), panel.to_scene(match.prototype_xy),
                            self.colors.get(q_label, UNLABELLED), drawn, dashed=q_label != p_label)

    def _draw_correspondences(self) -> None:
        query = self.panels[0]
        count = 0
        for rank, corr in enumerate(self.explanation.correspondences):
            if 1 + rank >= len(self.panels):
                break
            panel = self.panels[1 + rank]
            for i in range(len(corr.similarity)):
                q_xy, p_xy = corr.query_xy[i], corr.other_xy[i]
                q_seg, p_seg = query.segment_at(q_xy), panel.segment_at(p_xy)
                q_label = query.segments.names[q_seg] if q_seg >= 0 else ""
                p_label = panel.segments.names[p_seg] if p_seg >= 0 else ""
                tooltip = (f"similarity {float(corr.similarity[i]):.3f}  ·  saliency {float(corr.saliency[i]):.2f}\n"
                           f"query ({q_xy[0]:.0f}, {q_xy[1]:.0f}): {q_label or '(unlabelled)'}\n"
                           f"prototype {rank + 1} ({p_xy[0]:.0f}, {p_xy[1]:.0f}): {p_label or '(unlabelled)'}")
                drawn = DrawnMatch(q_seg, 1 + rank, p_seg, float(corr.similarity[i]), tooltip)
                self._add_match(query.to_scene(q_xy), panel.to_scene(p_xy), pair_color(count), drawn)
                count += 1

    # --- highlight ---------------------------------------------------------------------------------
    def _clicked(self, index: int) -> None:
        self.highlight(index)
        self.match_clicked.emit(index)

    def highlight(self, index: int | None) -> None:
        """Highlight both segments of drawn match ``index`` (None clears)."""
        for item in self._highlight_items:
            self.scene().removeItem(item)
        self._highlight_items, self.highlighted = [], None
        if index is None or not 0 <= index < len(self.drawn):
            return
        drawn = self.drawn[index]
        for panel, segment in ((self.panels[0], drawn.query_segment), (self.panels[drawn.panel],
                                                                        drawn.prototype_segment)):
            if segment < 0:
                continue
            rows, cols = panel.pixmap_size
            mask = cv2.resize((panel.segments.ids == segment).astype(np.uint8), (cols, rows),
                              interpolation=cv2.INTER_NEAREST)
            rgba = np.zeros((rows, cols, 4), np.uint8)
            rgba[mask > 0] = (*HIGHLIGHT, 110)
            contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(rgba, contours, -1, (*HIGHLIGHT, 255), 2)
            item = self.scene().addPixmap(_pixmap(rgba))
            item.setPos(panel.origin)
            item.setScale(panel.image_size[0] * panel.scale / rows)
            item.setZValue(2)
            self._highlight_items.append(item)
        self.highlighted = index

    # --- view --------------------------------------------------------------------------------------
    def fit(self) -> None:
        """Scale so the scene's width fits and the query is whole; taller scenes scroll."""
        rect = self.sceneRect()
        viewport = self.viewport().rect()
        if rect.width() <= 0 or rect.height() <= 0 or viewport.width() <= 1:
            return
        visible_height = min(rect.height(), 2.2 * (QUERY_HEIGHT + CAPTION))
        scale = min(viewport.width() / rect.width(), viewport.height() / visible_height)
        self.resetTransform()
        self.scale(scale, scale)
        self.centerOn(QPointF(rect.center().x(), rect.top() + viewport.height() / (2 * scale)))

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        if not self._zoomed:
            self.fit()

    def wheelEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            factor = 1.15 if event.angleDelta().y() > 0 else 1 / 1.15
            self.scale(factor, factor)
            self._zoomed = True
            event.accept()
            return
        super().wheelEvent(event)

    def mouseDoubleClickEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        self._zoomed = False
        self.fit()
        super().mouseDoubleClickEvent(event)
