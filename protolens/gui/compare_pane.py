"""One pane of the Compare view: a result picker, an optional own threshold and colormap, the canvas with a
crosshair, and a title carrying the agreement figures and the score under the cursor."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from protolens.gui.canvas import COLORMAPS, ImageCanvas

DIVERGING = "CET-D1"


class ComparePane(QWidget):
    """A pane showing one stored result (or, as the difference pane, A − B or the XOR of two masks).

    Signals: ``key_chosen(str)`` (a result picked in the list), ``override_changed()`` (own threshold or
    colormap toggled or moved).
    """

    key_chosen = Signal(str)
    override_changed = Signal()

    def __init__(self, index: int, *, difference: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.index, self.difference = index, difference
        self.key: str | None = None
        self.thresholder: Any = None
        self.canvas = ImageCanvas()
        self.canvas.setMinimumSize(120, 90)
        self.title = QLabel()
        self.title.setObjectName("pane_title")
        self.title.setStyleSheet("background:#202020;color:#eee;padding:2px 4px;font-size:11px;")
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.hover = QLabel("")
        self.hover.setStyleSheet("color:#bbb;font-size:11px;padding:0 4px;")
        for label in (self.title, self.hover):  # long titles never widen the grid; the tooltip has them whole
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            label.setMinimumWidth(1)
        self.combo = QComboBox()
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(14)
        self.combo.activated.connect(lambda _i: self.key_chosen.emit(self.combo.currentData() or ""))
        self.own = QCheckBox("own")
        self.own.setToolTip("Use this pane's own threshold and colormap instead of the shared ones")
        self.own_threshold = QDoubleSpinBox()
        self.own_threshold.setRange(0.0, 1.0)
        self.own_threshold.setSingleStep(0.01)
        self.own_threshold.setDecimals(3)
        self.own_threshold.setValue(0.5)
        self.own_colormap = QComboBox()
        self.own_colormap.addItems(COLORMAPS)
        for widget in (self.own_threshold, self.own_colormap):
            widget.setVisible(False)
        self.own.toggled.connect(self._own_toggled)
        self.own_threshold.valueChanged.connect(lambda _v: self.override_changed.emit())
        self.own_colormap.currentTextChanged.connect(lambda _t: self.override_changed.emit())
        header = QHBoxLayout()
        header.setContentsMargins(0, 0, 0, 0)
        header.addWidget(self.combo, 1)
        for widget in (self.own, self.own_threshold, self.own_colormap):
            header.addWidget(widget)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(1, 1, 1, 1)
        layout.setSpacing(1)
        layout.addLayout(header)
        layout.addWidget(self.title)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.hover)
        pen = pg.mkPen(QColor(0, 255, 255, 160), width=1)
        self.cross = (pg.InfiniteLine(angle=90, pen=pen), pg.InfiniteLine(angle=0, pen=pen))
        for line in self.cross:
            line.setZValue(20)
            line.setVisible(False)
            self.canvas.view.addItem(line, ignoreBounds=True)
        self.canvas.set_overlay_mode("outline")
        if difference:
            self.combo.setVisible(False)
            self.own.setVisible(False)
            self.canvas.set_overlay_mode("none")
            self.canvas.set_contrast_stretch(False)
            self.canvas.set_colormap(DIVERGING)
            self.canvas.set_heatmap_opacity(0.75)

    def _own_toggled(self, on: bool) -> None:
        self.own_threshold.setVisible(on)
        self.own_colormap.setVisible(on)
        self.override_changed.emit()

    @property
    def overridden(self) -> bool:
        return self.own.isChecked()

    def set_entries(self, entries: list[Any]) -> None:
        """Offer ``entries`` (ResultEntry) in the picker, keeping this pane's key selected if present."""
        self.combo.blockSignals(True)
        self.combo.clear()
        for entry in entries:
            self.combo.addItem(f"{entry.record.title()} · {entry.key[:8]}", entry.key)
            self.combo.setItemData(self.combo.count() - 1, entry.line().replace("\t", "\n"), Qt.ItemDataRole.ToolTipRole)
        if self.key is not None and self.combo.findData(self.key) < 0:
            self.combo.addItem(f"(not on this photo) {self.key[:8]}", self.key)
        self.combo.setCurrentIndex(max(self.combo.findData(self.key), 0) if self.key else -1)
        self.combo.blockSignals(False)

    def set_title(self, text: str) -> None:
        """The title (agreement figures included); the tooltip keeps it whole when the pane is narrow."""
        self.title.setText(text)
        self.title.setToolTip(text)

    def set_cursor(self, x: float, y: float, visible: bool = True) -> None:
        """Move the crosshair to photo pixel (x, y) and show this pane's score there."""
        self.cross[0].setPos(x)
        self.cross[1].setPos(y)
        for line in self.cross:
            line.setVisible(visible)
        score = self.canvas.score_at(x, y) if visible else None
        self.hover.setText("" if score is None else f"x={x:.0f} y={y:.0f}  score {score:.3f}")

    def show_map(self, values: np.ndarray | None, threshold: float = 0.5, interpolation: str = "linear") -> None:
        """Draw a (rows, cols) map in [0, 1] with its mask at the value ``threshold``; None clears.
        ``interpolation``: how the map is enlarged ("nearest" for block maps such as crop scores)."""
        self.canvas.set_heatmap(values, interpolation=interpolation)
        self.canvas.set_threshold(threshold)
