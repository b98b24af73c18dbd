"""The species side panel lists a result's scores table; hovering a species highlights exactly its crops."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication

from protolens.core.layers import Regions, ResultLayers, ScoresTable
from protolens.core.records import ResultRecord
from protolens.core.types import Heatmap, fit_grid
from protolens.gui.canvas import ImageCanvas
from protolens.gui.species_panel import SpeciesPanel
from protolens.services.results import FoundResult
from tests.gui.conftest import select_backend

SIZE = (256, 384)  # (height, width) of the photo
GRID = (4, 6)  # crop grid (rows, cols): 64-px crops


def _found(with_species: bool = True) -> FoundResult:
    """A prototype-guided-like result: species "sid name" in the table, regions labelled by species id."""
    masks = np.zeros((3, *GRID), bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True  # two crops
    masks[1, 2:4, 3:6] = True  # six crops
    masks[2, 3, 0] = True
    layers = ResultLayers()
    if with_species:
        layers.scores_table = ScoresTable(["1001 Achillea millefolium", "1002", "1003 Bellis perennis"],
                                          np.array([0.5, 0.9, 0.7]), "probability")
        layers.regions = Regions(masks, ["1001", "1002", "1003"], np.array([0.5, 0.9, 0.7]), SIZE)
    record = ResultRecord("prototype-guided", "1.0.0", {"threshold": 0.6}, 0.6)
    return FoundResult(record, Heatmap(np.zeros(GRID, np.float32), SIZE), None, "computed", layers=layers)


@pytest.fixture
def panel(qtbot):
    canvas = ImageCanvas()
    canvas.set_photo(np.zeros((*SIZE, 3), np.uint8))
    widget = SpeciesPanel(canvas)
    qtbot.addWidget(canvas)
    qtbot.addWidget(widget)
    widget.resize(380, 260)
    widget.show()
    return widget


def _expected(mask: np.ndarray) -> np.ndarray:
    rows, cols = fit_grid(SIZE, 1024)
    return cv2.resize(mask.astype(np.uint8), (cols, rows), interpolation=cv2.INTER_NEAREST).astype(bool)


def _hover(qtbot, panel, row: int) -> None:
    """The mouse moves over ``row`` (the event goes to the list itself: no other window can take it)."""
    viewport = panel.table.viewport()
    point = QPointF(panel.table.visualRect(panel.table.model().index(row, 0)).center())
    QApplication.sendEvent(viewport, QMouseEvent(QEvent.Type.MouseMove, point, viewport.mapToGlobal(point),
                                                 Qt.MouseButton.NoButton, Qt.MouseButton.NoButton,
                                                 Qt.KeyboardModifier.NoModifier))
    qtbot.waitUntil(lambda: panel.highlighted == panel.label_at(row), timeout=3000)


def test_lists_the_scores_table_best_first_with_crop_counts(panel):
    found = _found()
    panel.show_result(found)
    assert not panel.isHidden()
    assert panel.names() == ["1002", "1003 Bellis perennis", "1001 Achillea millefolium"]
    table = panel.table
    assert [table.item(r, 1).text() for r in range(3)] == ["0.900", "0.700", "0.500"]
    assert [table.item(r, 2).text() for r in range(3)] == ["6", "1", "2"]
    assert table.horizontalHeaderItem(1).text() == "probability"
    panel.show_result(_found(with_species=False))
    assert panel.isHidden() and panel.table.rowCount() == 0
    panel.show_result(None)
    assert panel.isHidden()


def test_hovering_a_species_highlights_exactly_its_crops(qtbot, panel):
    found = _found()
    panel.show_result(found)
    seen = []
    panel.species_highlighted.connect(seen.append)
    for row, region in ((0, 1), (2, 0), (1, 2)):
        _hover(qtbot, panel, row)
        mask = panel.highlight_mask()
        np.testing.assert_array_equal(mask, _expected(found.layers.regions.masks[region]))
        image = panel.item.image
        assert panel.item.isVisible() and image.shape[:2] == mask.shape
        assert (image[mask][:, 0] == 255).all() and (image[~mask][:, :3] == 0).all()  # its crops lit, the rest dim
        rect = panel.item.mapRectToParent(panel.item.boundingRect())
        assert (rect.width(), rect.height()) == (SIZE[1], SIZE[0])  # stretched over the photo
    QApplication.sendEvent(panel.table.viewport(), QEvent(QEvent.Type.Leave))
    assert not panel.item.isVisible() and panel.highlighted == "" and panel.highlight_mask() is None
    assert seen == ["1002", "1001 Achillea millefolium", "1003 Bellis perennis", ""]


def test_a_selected_species_stays_highlighted_after_leaving(qtbot, panel):
    found = _found()
    panel.show_result(found)
    panel.table.selectRow(2)
    np.testing.assert_array_equal(panel.highlight_mask(), _expected(found.layers.regions.masks[0]))
    _hover(qtbot, panel, 0)
    QApplication.sendEvent(panel.table.viewport(), QEvent(QEvent.Type.Leave))
    assert panel.highlighted == "1001 Achillea millefolium"
    panel.show_result(None)  # another photo or result: nothing highlighted
    assert not panel.item.isVisible() and panel.highlighted == ""


def test_the_window_lists_the_species_of_a_result_with_a_scores_table(qtbot, window, photo_folder):
    select_backend(window, "test-layers", classes=3)
    window.backend_panel.auto_run.setChecked(True)
    window.open_path(photo_folder)
    qtbot.waitUntil(lambda: window.result is not None and window.result.layers.scores_table is not None,
                    timeout=15000)
    panel = window.species_panel
    assert not panel.isHidden() and panel.names() == ["class 1", "class 2", "class 3"]
    regions = window.result.layers.regions
    assert [panel.table.item(r, 2).text() for r in range(3)] == [str(int(m.sum())) for m in regions.masks]
    panel.table.selectRow(1)
    np.testing.assert_array_equal(panel.highlight_mask(), _mask_at_display(regions.masks[1], window))
    assert panel.item.scene() is window.canvas.scene()
    select_backend(window, "vegetation-index")
    qtbot.waitUntil(lambda: window.result is not None and window.result.record.backend_id == "vegetation-index",
                    timeout=15000)
    assert panel.isHidden() and not panel.item.isVisible()


def _mask_at_display(mask: np.ndarray, window) -> np.ndarray:
    rows, cols = fit_grid(window.canvas.image_size, 1024)
    return cv2.resize(mask.astype(np.uint8), (cols, rows), interpolation=cv2.INTER_NEAREST).astype(bool)
