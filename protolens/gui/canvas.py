"""The zoom/pan canvas: photo, heatmap (colormap + opacity) and threshold mask (fill or outline).

Speed: the heatmap is quantised once to a uint8 display map (longer side <= 1024, stretched over the
photo). Photo and heatmap are cached by the scene at screen resolution; the mask is drawn from the same
display map at screen resolution (``MaskOverlayItem``), so moving the threshold never reruns a model and
costs about a millisecond of pixel work plus the repaint.
Scene coordinates are photo pixels: x to the right, y down, origin at the photo's top-left corner.
"""

from __future__ import annotations

import cv2
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPen
from PySide6.QtWidgets import QGraphicsItem, QGraphicsRectItem

from protolens.core.types import fit_grid
from protolens.gui.mask_overlay import MaskOverlayItem, threshold_index

OVERLAY_MODES = ("fill", "outline", "none")
COLORMAPS = ("inferno", "viridis", "magma", "plasma", "turbo")
DISPLAY_MAX_SIDE = 1024

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)


def colormap_lut(name: str) -> np.ndarray:
    """(256, 4) uint8 RGBA lookup table of a named colormap (fully opaque)."""
    lut = pg.colormap.get(name).getLookupTable(0.0, 1.0, 256, alpha=True)
    lut[:, 3] = 255
    return lut.astype(np.uint8)


def display_map(values: np.ndarray, image_size: tuple[int, int], max_side: int = DISPLAY_MAX_SIDE,
                interpolation: str = "linear") -> np.ndarray:
    """Heatmap values resampled to display resolution and quantised: (rows, cols) uint8, 0..255.

    The display grid has the photo's aspect ratio with its longer side at most ``max_side`` (bilinear
    from patch grids, or nearest for block maps with ``interpolation="nearest"`` such as crop scores;
    area-averaged from full-resolution maps), so the drawn mask matches the exported one.
    """
    rows, cols = fit_grid(image_size, max_side)
    src = np.asarray(values, np.float32)
    if src.shape != (rows, cols):
        shrink = rows < src.shape[0] and cols < src.shape[1]
        enlarge = cv2.INTER_NEAREST if interpolation == "nearest" else cv2.INTER_LINEAR
        src = cv2.resize(src, (cols, rows), interpolation=cv2.INTER_AREA if shrink else enlarge)
    return np.clip(src * 255.0 + 0.5, 0, 255).astype(np.uint8)


class ImageCanvas(pg.GraphicsView):
    """Photo viewer with heatmap and mask layers. Wheel zooms, drag pans, ``fit()`` shows the whole photo.

    Signals
    -------
    hovered(float x, float y, float score)
        Mouse position in photo pixels and the heatmap score there (-1 when there is none).
    """

    hovered = Signal(float, float, float)

    def __init__(self, parent: object = None) -> None:
        super().__init__(parent)
        self.setBackground(QColor(30, 30, 30))
        self.view = pg.ViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.setCentralItem(self.view)
        self.photo_item = pg.ImageItem()
        self.heatmap_item = pg.ImageItem()
        self.mask_item = MaskOverlayItem()
        for z, item in enumerate((self.photo_item, self.heatmap_item, self.mask_item)):
            item.setZValue(z)
            self.view.addItem(item)
        self.photo_item.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.heatmap_item.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.image_size: tuple[int, int] | None = None
        self._window_items: list[QGraphicsRectItem] = []
        self._editing = False
        self._windows_visible = False
        self._display: np.ndarray | None = None
        self._threshold = 0.5
        self._stretch = True
        self._mode = "fill"
        self._colormap = COLORMAPS[0]
        self.heatmap_item.setLookupTable(colormap_lut(self._colormap))
        self.heatmap_item.setOpacity(0.5)
        self.scene().sigMouseMoved.connect(self._mouse_moved)

    # --- photo -----------------------------------------------------------------------------------
    def set_photo(self, rgb: np.ndarray | None, *, keep_view: bool = False,
                  image_size: tuple[int, int] | None = None) -> None:
        """Show a (rows, cols, 3) uint8 RGB photo (None clears); the heatmap layers are cleared.

        ``image_size`` (height, width) is the photo's real size when ``rgb`` is a shrunk copy of it: the copy is
        stretched over it, so scene coordinates stay photo pixels.
        """
        self.set_heatmap(None)
        if rgb is None:
            self.photo_item.clear()
            self.image_size = None
            return
        new_size = tuple(image_size) if image_size is not None else rgb.shape[:2]
        self.photo_item.setImage(rgb, autoLevels=False, levels=None)
        self.photo_item.setRect(QRectF(0, 0, new_size[1], new_size[0]))
        changed = new_size != self.image_size
        self.image_size = new_size
        if changed or not keep_view:
            self.fit()

    def fit(self) -> None:
        """Zoom to show the whole photo."""
        if self.image_size is not None:
            height, width = self.image_size
            self.view.setRange(QRectF(0, 0, width, height), padding=0.01)

    # --- heatmap ---------------------------------------------------------------------------------
    def set_heatmap(self, values: np.ndarray | None, probability: np.ndarray | None = None,
                    interpolation: str = "linear") -> None:
        """Show a heatmap (rows, cols) float in [0, 1] stretched over the photo, or clear it with None.

        ``probability`` ((rows', cols') in [0, 1], any resolution) restricts the mask to probability >= the
        probability threshold. ``interpolation`` ("linear" or "nearest") is how ``values`` are enlarged.
        """
        self.set_windows([])
        if values is None or self.image_size is None:
            self._display = None
            self.heatmap_item.clear()
            self.mask_item.set_map(None)
            return
        self._display = display_map(values, self.image_size, interpolation=interpolation)
        shown_probability = None
        if probability is not None:
            shown_probability = cv2.resize(display_map(probability, self.image_size),
                                           (self._display.shape[1], self._display.shape[0]),
                                           interpolation=cv2.INTER_NEAREST)
        height, width = self.image_size
        rect = QRectF(0, 0, width, height)
        low, high = int(self._display.min()), int(self._display.max())
        levels = (low, high) if self._stretch and high - low >= 8 else (0, 255)
        self.heatmap_item.setImage(self._display, autoLevels=False, levels=levels)
        self.heatmap_item.setRect(rect)
        self.mask_item.set_map(self._display, rect, shown_probability)
        self._apply_threshold()

    @property
    def has_heatmap(self) -> bool:
        return self._display is not None

    def set_heatmap_visible(self, visible: bool) -> None:
        self.heatmap_item.setVisible(visible)

    def set_contrast_stretch(self, stretch: bool) -> None:
        """Spread the colormap over this map's own range (True) or over the fixed range [0, 1] (False).

        Display only: the mask threshold is always read on the [0, 1] scores.
        """
        self._stretch = bool(stretch)
        if self._display is not None:
            low, high = int(self._display.min()), int(self._display.max())
            self.heatmap_item.setLevels((low, high) if self._stretch and high - low >= 8 else (0, 255))

    def set_colormap(self, name: str) -> None:
        self._colormap = name
        self.heatmap_item.setLookupTable(colormap_lut(name))

    def set_heatmap_opacity(self, opacity: float) -> None:
        """Heatmap layer opacity in [0, 1]."""
        self.heatmap_item.setOpacity(float(np.clip(opacity, 0.0, 1.0)))

    # --- mask ------------------------------------------------------------------------------------
    def set_threshold(self, threshold: float) -> None:
        """Move the mask threshold (value semantics, in [0, 1]); only the lookup table changes."""
        self._threshold = float(threshold)
        self._apply_threshold()

    def set_overlay_mode(self, mode: str) -> None:
        """``fill`` (translucent colour), ``outline`` (contours) or ``none``."""
        if mode not in OVERLAY_MODES:
            raise ValueError(f"overlay mode must be one of {OVERLAY_MODES}")
        self._mode = mode
        self._apply_threshold()

    def set_mask_color(self, color: QColor) -> None:
        self.mask_item.set_color(color)

    def set_editing(self, editing: bool) -> None:
        """While a mask is edited its label layer replaces the threshold mask."""
        self._editing = bool(editing)
        self._apply_threshold()

    def set_mask_suppressed(self, suppressed: bool) -> None:
        """Hide the threshold mask while another layer stands for it (a segmentation's class overlay)."""
        self._suppressed = bool(suppressed)
        self._apply_threshold()

    def _apply_threshold(self) -> None:
        self.mask_item.setVisible(self._mode != "none" and self._display is not None and not self._editing
                                  and not getattr(self, "_suppressed", False))
        self.mask_item.set_outline(self._mode == "outline")
        self.mask_item.set_threshold(self._threshold)

    def set_probability_threshold(self, threshold: float) -> None:
        """Also require probability >= ``threshold`` (only for heatmaps shown with a probability map)."""
        self.mask_item.set_probability_threshold(threshold)

    def set_windows(self, rects: list[list[float]]) -> None:
        """Outline analysis windows, each [x, y, width, height] in photo pixels (dashed; see ``set_windows_visible``)."""
        for item in self._window_items:
            self.view.removeItem(item)
        self._window_items = []
        pen = QPen(QColor(255, 220, 0, 200))
        pen.setCosmetic(True)
        pen.setStyle(Qt.PenStyle.DashLine)
        for x, y, width, height in rects:
            item = QGraphicsRectItem(QRectF(x, y, width, height))
            item.setPen(pen)
            item.setZValue(10)
            item.setVisible(self._windows_visible)
            self.view.addItem(item)
            self._window_items.append(item)

    def set_windows_visible(self, visible: bool) -> None:
        self._windows_visible = bool(visible)
        for item in self._window_items:
            item.setVisible(self._windows_visible)

    @property
    def window_count(self) -> int:
        """Number of analysis windows outlined."""
        return len(self._window_items)

    def mask_fraction(self) -> float:
        """Fraction of the display map at or above the threshold (what the overlay shows); 0 without a map."""
        if self._display is None:
            return 0.0
        return float((self._display >= threshold_index(self._threshold)).mean())

    # --- cursor ----------------------------------------------------------------------------------
    def score_at(self, x: float, y: float) -> float | None:
        """Heatmap score (display resolution) at photo pixel (x, y), or None outside / without a heatmap."""
        if self._display is None or self.image_size is None:
            return None
        height, width = self.image_size
        if not (0 <= x < width and 0 <= y < height):
            return None
        rows, cols = self._display.shape
        return float(self._display[int(y * rows / height), int(x * cols / width)]) / 255.0

    def _mouse_moved(self, position: QPointF) -> None:
        if self.image_size is None:
            return
        point = self.view.mapSceneToView(position)
        score = self.score_at(point.x(), point.y())
        self.hovered.emit(point.x(), point.y(), -1.0 if score is None else score)

    def keyPressEvent(self, event: object) -> None:  # noqa: N802 - Qt override
        if getattr(event, "key", lambda: None)() == Qt.Key.Key_0:
            self.fit()
            return
        super().keyPressEvent(event)
