"""Click-to-accept object regions in the mask editor (issue 12 item 4), driven with real mouse events on a sample
quadrat: the object-regions backend (tiny long side, random weights) proposes the regions; hovering highlights
the one under the cursor, a click paints exactly its pixels with the current class, Shift+click clears them,
each accept is one undo step, and the n_o slider re-partitions the cached features without a model forward."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from tests.gui.conftest import select_backend
from tests.gui.test_editor import MOVE_INTERVAL_MS, _viewport_point

pytest.importorskip("timm")

NO_MODIFIER, SHIFT = Qt.KeyboardModifier.NoModifier, Qt.KeyboardModifier.ShiftModifier


def _send(window, kind, point: QPoint, modifiers=NO_MODIFIER) -> None:
    viewport = window.canvas.viewport()
    left = Qt.MouseButton.LeftButton
    button = Qt.MouseButton.NoButton if kind == QEvent.Type.MouseMove else left
    buttons = left if kind == QEvent.Type.MouseButtonPress else Qt.MouseButton.NoButton
    event = QMouseEvent(kind, QPointF(point), QPointF(viewport.mapToGlobal(point)), button, buttons, modifiers)
    QApplication.sendEvent(viewport, event)


def hover(window, x: float, y: float) -> None:
    """The mouse moves onto photo pixel (x, y) (paced like a real mouse: pyqtgraph rate-limits moves)."""
    QTest.qWait(MOVE_INTERVAL_MS)
    _send(window, QEvent.Type.MouseMove, _viewport_point(window, x + 3, y))
    QTest.qWait(MOVE_INTERVAL_MS)
    _send(window, QEvent.Type.MouseMove, _viewport_point(window, x, y))


def click(window, x: float, y: float, modifiers=NO_MODIFIER) -> None:
    point = _viewport_point(window, x, y)
    _send(window, QEvent.Type.MouseButtonPress, point, modifiers)
    _send(window, QEvent.Type.MouseButtonRelease, point, modifiers)


def _count_jobs(window, monkeypatch) -> list[str]:
    """The kinds of the jobs the window submits from now on, in order."""
    kinds: list[str] = []
    submit = window.jobs.submit

    def counting(func, *args, **kwargs):
        kinds.append(kwargs.get("kind"))
        return submit(func, *args, **kwargs)

    monkeypatch.setattr(window.jobs, "submit", counting)
    return kinds


@pytest.fixture
def regions_window(qtbot, window, photo_folder):
    """The window on a quadrat with an object-regions result (6 regions) and an empty mask being edited."""
    select_backend(window, "object-regions", long_side=128, regions=6)
    window.backend_panel.auto_run.setChecked(True)
    window.open_path(photo_folder)
    qtbot.waitUntil(lambda: window.result is not None and window.result.layers.regions is not None, timeout=20000)
    qtbot.waitUntil(lambda: window.edit.picker.count == 6, timeout=5000)
    window.edit.panel.empty.click()
    qtbot.waitUntil(lambda: window.edit.editor.active, timeout=10000)
    qtbot.keyClick(window.canvas, Qt.Key.Key_R)
    assert window.edit.editor.tool == "regions" and window.edit.picker.active
    return window


def _point_in(mask: np.ndarray) -> tuple[float, float]:
    """A photo pixel (x, y) deep inside ``mask`` (its cell farthest from the border)."""
    import cv2

    distance = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), mask.shape)
    return float(x) + 0.5, float(y) + 0.5


def test_hover_highlights_and_click_accepts_exactly_the_region(qtbot, regions_window):
    window = regions_window
    editor, picker = window.edit.editor, window.edit.picker
    regions = window.result.layers.regions
    labels = editor.annotation.labels
    assert not labels.any() and picker.outlines.isVisible()
    window.edit.project.labels.add("moss")
    window.edit._labels_changed()
    for index, class_id in ((0, 1), (3, 2)):
        mask = regions.mask(index)
        x, y = _point_in(mask)
        hover(window, x, y)
        assert picker.hovered == index
        assert [i for i, item in enumerate(picker._items) if item.isVisible()] == [index]
        editor.class_id = class_id
        before = labels.copy()
        click(window, x, y)
        expected = before.copy()
        expected[mask] = class_id
        np.testing.assert_array_equal(labels, expected)  # exactly the region's pixels, the current class id
    assert editor.history.labels == ["add region 1 plant", "add region 4 moss"]


def test_shift_click_removes_and_each_accept_is_one_undo_step(qtbot, regions_window):
    window = regions_window
    editor = window.edit.editor
    regions = window.result.layers.regions
    labels = editor.annotation.labels
    first, second = regions.mask(1), regions.mask(2)
    click(window, *_point_in(first))
    click(window, *_point_in(second))
    after_two = labels.copy()
    np.testing.assert_array_equal(labels == 1, first | second)
    click(window, *_point_in(first), SHIFT)
    np.testing.assert_array_equal(labels == 1, second & ~first)
    assert editor.history.labels[-1] == "remove region 2"
    qtbot.keyClick(window.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    np.testing.assert_array_equal(labels, after_two)  # the removal undone, and nothing else
    qtbot.keyClick(window.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    np.testing.assert_array_equal(labels == 1, first & ~second)  # exactly one accept undone
    assert len(editor.history.labels) == 1


def test_region_count_slider_repartitions_cached_features_without_a_forward(qtbot, regions_window, monkeypatch):
    from protolens.gui import region_source
    from protolens.models import region_features

    window = regions_window
    forwards: list[int] = []
    real = region_features.patch_tokens
    monkeypatch.setattr(region_features, "patch_tokens", lambda *a, **k: forwards.append(1) or real(*a, **k))
    kinds = _count_jobs(window, monkeypatch)
    picker, slider = window.edit.picker, window.edit.panel.region_count
    assert slider.value() == 6
    slider.setValue(9)  # no tokens in the editor yet: fetched from the features cache, not recomputed
    # each move: the patch-grid preview at once, then the refined edges
    qtbot.waitUntil(lambda: "9 object regions" in picker.source and "refining" not in picker.source, timeout=20000)
    assert len(np.unique(picker.ids)) == 9 and picker.count == 9
    assert kinds.count(region_source.FEATURES_JOB) == 1 and not forwards
    slider.setValue(4)
    qtbot.waitUntil(lambda: "4 object regions" in picker.source and "refining" not in picker.source, timeout=10000)
    assert picker.count == 4 and kinds.count(region_source.FEATURES_JOB) == 1 and not forwards
    assert kinds.count(region_source.REGIONS_JOB) == 4  # preview + refined, twice
    x, y = 10.0, 10.0
    hover(window, x, y)
    assert picker.hovered == picker.region_at(x, y) >= 0
    click(window, x, y)
    box, inside = picker.pixels(picker.hovered)
    expected = np.zeros_like(labels := window.edit.editor.annotation.labels, bool)
    expected[box.slices] = inside
    assert expected[int(y), int(x)]
    np.testing.assert_array_equal(labels == 1, expected)  # the new partition's region is what a click takes


def test_object_regions_button_computes_features_once(qtbot, window, photo_folder, monkeypatch):
    from protolens.gui import region_source

    select_backend(window, "object-regions", long_side=128, regions=5)
    window.backend_panel.auto_run.setChecked(False)
    window.open_path(photo_folder)
    qtbot.waitUntil(lambda: window.image is not None, timeout=10000)
    kinds = _count_jobs(window, monkeypatch)
    window.edit.panel.object_regions.click()
    qtbot.waitUntil(lambda: "object regions" in window.edit.picker.source, timeout=20000)
    assert window.edit.picker.count == 6  # the slider's n_o (6), not the backend's
    assert kinds.count(region_source.FEATURES_JOB) == 1
    window.edit.panel.object_regions.click()  # again: the editor's cached tokens, only a regions job
    qtbot.waitUntil(lambda: kinds.count(region_source.REGIONS_JOB) == 2, timeout=10000)
    assert kinds.count(region_source.FEATURES_JOB) == 1
