"""The species side panel: the species list of the shown result, and where on the photo each one came from.

A result with a scores table (the ``prototype-guided`` backend: species and their probabilities, arXiv
2512.19957 step 8) is listed here, one row per species with its probability and the number of crops it came
from (cells of its region, on the crop grid). Hovering a row, or selecting it, draws that species' region
emphasised over the photo: its crops filled and outlined, the rest of the photo dimmed; leaving the list goes
back to the selected species, or to none. Results without a scores table hide the panel. Scene coordinates
are photo pixels (x right, y down, origin top-left), as on the canvas.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QRectF, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from protolens.core.types import fit_grid

MAX_SIDE = 1024
"""Longer side of the highlight image in cells (the canvas stretches it over the photo)."""
FILL = (255, 225, 0, 80)
OUTLINE = (255, 225, 0, 255)
DIM = (0, 0, 0, 120)
VISIBLE_ROWS = 10


class SpeciesPanel(QGroupBox):
    """Species of the shown result (see the module docstring).

    Parameters
    ----------
    canvas : ImageCanvas, optional
        The canvas to draw highlights on (``canvas.view`` a pyqtgraph ViewBox, ``canvas.image_size`` the
        photo's (height, width)); without one the panel only lists.

    Signals
    -------
    species_highlighted(str)
        The species drawn emphasised, or "" when none is.
    """

    species_highlighted = Signal(str)

    def __init__(self, canvas: Any = None, parent: QWidget | None = None) -> None:
        super().__init__("Species", parent)
        self.canvas = canvas
        self.found: Any = None
        self.highlighted = ""
        self._mask: np.ndarray | None = None
        self.table = QTableWidget(0, 3)
        self.table.setObjectName("species_table")
        self.table.setHorizontalHeaderLabels(["species", "probability", "crops"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in (1, 2):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.setMouseTracking(True)
        self.table.cellEntered.connect(lambda row, _col: self.highlight(self.label_at(row)))
        self.table.itemSelectionChanged.connect(lambda: self.highlight(self.selected_label()))
        self.table.viewport().installEventFilter(self)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setStyleSheet("color:#888;font-size:11px;")
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(self.summary)
        self.item = pg.ImageItem()
        self.item.setZValue(6)  # above the mask and region outlines, below keypoints
        self.item.setVisible(False)
        if canvas is not None:
            canvas.view.addItem(self.item)
        self.show_result(None)

    # --- the list ---------------------------------------------------------------------------------
    def show_result(self, found: Any) -> None:
        """List the scores table of ``found`` (a FoundResult), or hide the panel when it has none."""
        self.found = found
        table = found.layers.scores_table if found is not None else None
        self.highlight(None)
        self.table.blockSignals(True)
        self.table.clearContents()
        rows = table.rows() if table is not None else []
        self.table.setRowCount(len(rows))
        for row, (name, value) in enumerate(rows):
            crops = self._crops(name)
            cells = (QTableWidgetItem(name), QTableWidgetItem(f"{value:.3f}"),
                     QTableWidgetItem(str(crops) if crops is not None else "–"))
            cells[0].setData(Qt.ItemDataRole.UserRole, name)
            cells[0].setToolTip(f"{name}: {table.column} {value:.4f}" +
                                (f", from {crops} crops" if crops is not None else ", no region"))
            for col, cell in enumerate(cells):
                if col:
                    cell.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, col, cell)
        self.table.blockSignals(False)
        self._fit_height(len(rows))
        if table is not None:
            self.table.setHorizontalHeaderItem(1, QTableWidgetItem(table.column))
            self.summary.setText(f"{len(rows)} species; hover or select one to see its crops on the photo")
        self.setVisible(table is not None)

    def _fit_height(self, rows: int) -> None:
        """As tall as its rows, between 2 and VISIBLE_ROWS rows (then it scrolls)."""
        row_height = self.table.verticalHeader().defaultSectionSize()
        shown = min(max(rows, 2), VISIBLE_ROWS)
        self.table.setFixedHeight(self.table.horizontalHeader().sizeHint().height() + shown * row_height
                                  + 2 * self.table.frameWidth())

    def _region_index(self, name: str) -> int | None:
        """Index of the region labelled ``name`` (or by its first word: an id before a name), or None."""
        regions = self.found.layers.regions if self.found is not None else None
        if regions is None:
            return None
        for candidate in (name, name.split(" ")[0]):
            if candidate in regions.labels:
                return regions.labels.index(candidate)
        return None

    def _crops(self, name: str) -> int | None:
        index = self._region_index(name)
        return int(self.found.layers.regions.masks[index].sum()) if index is not None else None

    def label_at(self, row: int) -> str | None:
        item = self.table.item(row, 0)
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def selected_label(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        return self.label_at(rows[0].row()) if rows else None

    def names(self) -> list[str]:
        """Species listed, in row order (best first)."""
        return [self.label_at(row) or "" for row in range(self.table.rowCount())]

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if watched is self.table.viewport() and event.type() == QEvent.Type.Leave:
            self.highlight(self.selected_label())
        return super().eventFilter(watched, event)

    # --- the highlight ----------------------------------------------------------------------------
    def highlight(self, name: str | None) -> None:
        """Draw species ``name``'s region emphasised (None or a species without a region: nothing drawn)."""
        index = self._region_index(name) if name else None
        size = getattr(self.canvas, "image_size", None)
        if index is None or size is None:
            self._mask = None
            self.item.setVisible(False)
            name = None
        else:
            regions = self.found.layers.regions
            self._mask = self._display_mask(regions.masks[index], size)
            self.item.setImage(self._rgba(self._mask), autoLevels=False)
            self.item.setRect(QRectF(0, 0, size[1], size[0]))
            self.item.setVisible(True)
        if (name or "") != self.highlighted:
            self.highlighted = name or ""
            self.species_highlighted.emit(self.highlighted)

    @staticmethod
    def _display_mask(mask: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
        rows, cols = fit_grid(image_size, MAX_SIDE)
        cells = np.asarray(mask, np.uint8)
        if cells.shape != (rows, cols):
            cells = cv2.resize(cells, (cols, rows), interpolation=cv2.INTER_NEAREST)
        return cells.astype(bool)

    @staticmethod
    def _rgba(mask: np.ndarray) -> np.ndarray:
        """(rows, cols, 4) uint8: the region filled with a 2-cell outline inside it, everything else dimmed."""
        rgba = np.empty((*mask.shape, 4), np.uint8)
        rgba[:] = FILL
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(rgba, contours, -1, OUTLINE, 2)
        rgba[~mask] = DIM  # the outline stays inside the region
        return rgba

    def highlight_mask(self) -> np.ndarray | None:
        """The highlighted region at display resolution ((rows, cols) bool, longer side <= 1024), or None."""
        return self._mask
