"""Correcting a mask by hand in the main window: start from the threshold, paint two classes, undo/redo,
leave and come back (edits restored), export every format."""

from __future__ import annotations

import json

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from tests.gui.conftest import select_backend


def _viewport_point(window, x: float, y: float) -> QPoint:
    scene = window.canvas.view.mapViewToScene(QPointF(x, y))
    return window.canvas.mapFromScene(scene)


def _send(window, kind, point: QPoint, buttons) -> None:
    viewport = window.canvas.viewport()
    button = Qt.MouseButton.LeftButton if kind != QEvent.Type.MouseMove else Qt.MouseButton.NoButton
    event = QMouseEvent(kind, QPointF(point), QPointF(viewport.mapToGlobal(point)), button, buttons,
                        Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(viewport, event)


# pyqtgraph drops mouse moves closer together than 1/mouseRateLimit s (100/s by default); a user's mouse
# reports at most that often, so the test paces its moves the same way (a burst would read as a click).
MOVE_INTERVAL_MS = 1000 // int(pg.getConfigOption("mouseRateLimit")) + 5


def drag(window, points) -> None:
    """A left-button drag through photo pixel points (x, y), as a user's mouse does it."""
    held = Qt.MouseButton.LeftButton
    first = _viewport_point(window, *points[0])
    _send(window, QEvent.Type.MouseButtonPress, first, held)
    for x, y in points[1:]:
        QTest.qWait(MOVE_INTERVAL_MS)
        _send(window, QEvent.Type.MouseMove, _viewport_point(window, x, y), held)
    _send(window, QEvent.Type.MouseButtonRelease, _viewport_point(window, *points[-1]), Qt.MouseButton.NoButton)


def _start_editing(qtbot, window, folder):
    select_backend(window, "vegetation-index")
    window.backend_panel.auto_run.setChecked(True)
    window.open_path(folder)
    qtbot.waitUntil(lambda: window.result is not None, timeout=15000)
    window.edit.panel.from_threshold.click()
    qtbot.waitUntil(lambda: window.edit.editor.active, timeout=10000)
    return window.edit.editor


def test_start_from_threshold_paint_two_classes_undo_redo(qtbot, window, photo_folder):
    editor = _start_editing(qtbot, window, photo_folder)
    labels = editor.annotation.labels
    heat = window.result.heatmap.full_resolution()
    np.testing.assert_array_equal(labels == 1, heat >= window.result.finalized_record().applied_threshold)
    before = labels.copy()
    window.edit.set_tool("brush")
    window.edit.panel.radius.setValue(20)
    editor.class_id = 1
    drag(window, [(200, 500), (260, 500), (320, 500), (400, 500)])
    assert (labels[495:506, 210:390] == 1).all()
    window.edit.project.labels.add("moss")
    window.edit._labels_changed()
    editor.class_id = 2
    drag(window, [(600, 200), (600, 300)])
    assert (labels[210:290, 595:606] == 2).all()
    assert editor.history.labels == ["brush plant", "brush moss"]
    qtbot.keyClick(window.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert not (labels == 2).any() and (labels[495:506, 210:390] == 1).all()
    qtbot.keyClick(window.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    np.testing.assert_array_equal(labels, before)
    qtbot.keyClick(window.canvas, Qt.Key.Key_Z,
                   Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert (labels[495:506, 210:390] == 1).all() and not (labels == 2).any()
    assert window.edit.panel.history_list.count() == 2  # one done step, one redoable


def test_tools_eraser_fill_polygon_and_brush_keys(qtbot, window, photo_folder):
    editor = _start_editing(qtbot, window, photo_folder)
    labels = editor.annotation.labels
    labels[:] = 0
    window.edit.set_tool("polygon")
    for x, y in ((100, 100), (300, 100), (300, 300), (100, 300)):
        editor._click(x, y, False)
    editor._click(100, 300, True)  # the second click of a double-click closes the polygon
    assert (labels[110:290, 110:290] == 1).all()
    qtbot.keyClick(window.canvas, Qt.Key.Key_E)
    assert editor.tool == "eraser"
    drag(window, [(150, 200), (250, 200)])
    assert (labels[198:203, 160:240] == 0).all()
    qtbot.keyClick(window.canvas, Qt.Key.Key_F)
    editor.class_id = 1
    editor._click(600, 600, False)
    assert (labels[600:700, 600:700] == 1).all()
    radius = window.edit.panel.radius.value()
    qtbot.keyClick(window.canvas, Qt.Key.Key_BracketRight)
    assert window.edit.panel.radius.value() > radius and editor.radius > radius


def test_edits_autosave_are_saved_on_leaving_and_restored(qtbot, window, photo_folder):
    editor = _start_editing(qtbot, window, photo_folder)
    window.edit.set_tool("brush")
    drag(window, [(50, 50), (90, 50)])
    painted = editor.annotation.labels.copy()
    window.next_image()
    qtbot.waitUntil(lambda: window.image is not None and window.image.meta.path.name == "b_dahlia.jpg", timeout=10000)
    qtbot.waitUntil(lambda: not window.jobs.active("save"), timeout=10000)
    sidecar = json.loads((photo_folder / ".protolens" / "a_meadow.jpg.json").read_text())
    assert sidecar["annotation"]["state"] == "saved" and sidecar["annotation"]["edited"]["strokes"] >= 1
    assert sidecar["annotation"]["source"]["kind"] == "threshold"
    assert sidecar["annotation"]["source"]["result"]["backend"]["id"] == "vegetation-index"
    assert not editor.active
    window.previous_image()
    qtbot.waitUntil(lambda: editor.active, timeout=10000)
    np.testing.assert_array_equal(editor.annotation.labels, painted)
    assert window.messages.level != "warning" or "Restored" not in window.messages.label.text()


def test_export_all_formats_from_the_editor(qtbot, window, photo_folder, tmp_path):
    _start_editing(qtbot, window, photo_folder)
    out = tmp_path / "masks"
    window.export_masks(str(out), ["png", "coco", "geojson", "labelme", "cover"], whole_folder=True)
    qtbot.waitUntil(lambda: (out / "provenance.json").exists(), timeout=20000)
    from pycocotools.coco import COCO

    coco = COCO(str(out / "annotations.coco.json"))
    assert [img["file_name"] for img in coco.dataset["images"]] == ["a_meadow.jpg"]
    assert (out / "a_meadow.labels.png").exists() and (out / "a_meadow.geojson").exists()
    labelme = json.loads((out / "a_meadow.json").read_text())
    assert {"version", "shapes", "imagePath", "imageHeight", "imageWidth"} <= set(labelme)
    assert "b_dahlia" not in (out / "cover.csv").read_text()  # no mask saved for it: skipped
    qtbot.waitUntil(lambda: "exported 1" in window.messages.label.text(), timeout=5000)
