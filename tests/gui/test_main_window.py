"""The main window driven like a user: open a folder, run, move the slider, export, cancel, step with A/D."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from PySide6.QtCore import Qt

from tests.gui.conftest import select_backend


def _open_with_vegetation(qtbot, window, folder):
    select_backend(window, "vegetation-index")
    window.backend_panel.auto_run.setChecked(True)
    window.open_path(folder)
    qtbot.waitUntil(lambda: window.result is not None, timeout=15000)


def test_open_folder_runs_and_shows_heatmap(qtbot, window, photo_folder):
    _open_with_vegetation(qtbot, window, photo_folder)
    assert window.thumbs.count() == 3 and window.index == 0
    assert window.canvas.image_size == (1024, 1280) and window.canvas.has_heatmap
    assert window.result.record.backend_id == "vegetation-index"
    suggested = window.result.suggested_threshold
    assert abs(window.display_panel.threshold_value() - suggested) < 1e-3
    assert "1/3" in window.image_label.text()


def test_slider_moves_the_mask_without_rerunning(qtbot, window, photo_folder, gradient_runs):
    select_backend(window, "test-gradient")
    window.backend_panel.auto_run.setChecked(True)
    window.open_path(photo_folder)
    qtbot.waitUntil(lambda: window.result is not None, timeout=15000)
    assert len(gradient_runs) == 1
    for value in (0.1, 0.35, 0.8):
        window.display_panel.set_threshold(value)
        assert window.canvas.mask_item.threshold_level == int(np.ceil(value * 255 - 1e-6))
        assert window.result.record.threshold == value
        assert abs(window.canvas.mask_fraction() - (1 - value)) < 0.05  # the gradient map is linear in x
    window.display_panel.overlay.setCurrentText("outline")
    assert window.canvas.mask_item.outline and window.canvas.mask_item.isVisible()
    assert len(gradient_runs) == 1


def test_export_writes_what_the_cli_writes(qtbot, window, photo_folder, tmp_path):
    _open_with_vegetation(qtbot, window, photo_folder)
    window.display_panel.set_threshold(0.45)
    out = tmp_path / "export"
    window.export_current(out)
    qtbot.waitUntil(lambda: (out / "a_meadow.json").exists(), timeout=10000)
    mask = np.asarray(Image.open(out / "a_meadow.mask.png")) == 255
    heat = np.load(out / "a_meadow.heatmap.npy")
    meta = json.loads((out / "a_meadow.json").read_text())
    assert heat.shape == mask.shape == (1024, 1280)
    np.testing.assert_array_equal(mask, heat >= 0.45)
    assert meta["threshold"] == {"value": 0.45, "semantics": "value", "heatmap_threshold": 0.45}
    assert meta["backend"]["id"] == "vegetation-index"
    qtbot.waitUntil(lambda: "exported" in window.messages.label.text(), timeout=5000)


def test_cancel_a_running_job(qtbot, window, photo_folder, gradient_runs):
    select_backend(window, "test-gradient", steps=400, delay=0.02)
    window.backend_panel.auto_run.setChecked(False)
    window.open_path(photo_folder)
    qtbot.waitUntil(lambda: window.image is not None, timeout=10000)
    qtbot.mouseClick(window.backend_panel.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.backend_panel.progress.value() > 0, timeout=10000)
    assert window.backend_panel.cancel_button.isEnabled()
    qtbot.mouseClick(window.backend_panel.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.run_job.done, timeout=5000)
    assert gradient_runs == [] and window.result is None
    assert window.backend_panel.run_button.isEnabled()
    assert "cancelled" in window.backend_panel.status.text()


def test_keys_a_and_d_step_through_the_folder(qtbot, window, photo_folder):
    _open_with_vegetation(qtbot, window, photo_folder)
    window.activateWindow()
    qtbot.keyClick(window.canvas, Qt.Key.Key_D)
    qtbot.waitUntil(lambda: window.image is not None and window.image.meta.path.name == "b_dahlia.jpg",
                    timeout=10000)
    assert window.canvas.image_size == (427, 640)
    qtbot.keyClick(window.canvas, Qt.Key.Key_D)
    qtbot.waitUntil(lambda: window.messages.isVisible() and window.messages.level == "error", timeout=10000)
    assert "c_broken.jpg" in window.messages.label.text() and window.canvas.image_size is None
    qtbot.keyClick(window.canvas, Qt.Key.Key_A)
    qtbot.keyClick(window.canvas, Qt.Key.Key_A)
    qtbot.waitUntil(lambda: window.image is not None and window.image.meta.path.name == "a_meadow.jpg",
                    timeout=10000)
    assert window.index == 0


def test_returning_to_a_photo_restores_its_result_and_threshold(qtbot, window, photo_folder, gradient_runs):
    select_backend(window, "test-gradient")
    window.backend_panel.auto_run.setChecked(True)
    window.open_path(photo_folder)
    qtbot.waitUntil(lambda: window.result is not None, timeout=10000)
    window.display_panel.set_threshold(0.3)
    window.show_index(1)  # leaving the photo saves its threshold
    qtbot.waitUntil(lambda: window.result is not None and window.image.meta.path.name == "b_dahlia.jpg",
                    timeout=10000)
    window.show_index(0)
    qtbot.waitUntil(lambda: window.result is not None and window.image.meta.path.name == "a_meadow.jpg",
                    timeout=10000)
    assert len(gradient_runs) == 2
    assert abs(window.display_panel.threshold_value() - 0.3) < 1e-6
    sidecar = json.loads((photo_folder / ".protolens" / "a_meadow.jpg.json").read_text())
    assert sidecar["results"][sidecar["current"]]["threshold"]["value"] == 0.3


def test_unavailable_backend_is_reported_not_fatal(qtbot, window, photo_folder):
    window.open_path(photo_folder)
    qtbot.waitUntil(lambda: window.image is not None, timeout=10000)
    combo = window.backend_panel.combo
    select_backend(window, "test-broken")
    window.run_current()
    qtbot.waitUntil(lambda: window.messages.level == "error", timeout=10000)
    assert "not installed" in window.messages.label.text()
    assert "unavailable" in combo.itemText(combo.findData("test-broken"))
    select_backend(window, "vegetation-index")
    window.run_current()
    qtbot.waitUntil(lambda: window.result is not None, timeout=10000)
