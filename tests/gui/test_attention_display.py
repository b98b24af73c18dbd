"""Threshold semantics, the probability slider and the analysis-window overlay in the main window."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from tests.gui.conftest import select_backend


def _show_gradient(qtbot, window, folder, **values):
    select_backend(window, "test-gradient", **values)
    window.backend_panel.auto_run.setChecked(True)
    window.open_path(folder)
    qtbot.waitUntil(lambda: window.result is not None, timeout=15000)


def test_mass_semantics_keeps_the_smallest_set_holding_the_mass(qtbot, window, photo_folder, tmp_path):
    _show_gradient(qtbot, window, photo_folder)
    dp = window.display_panel
    assert "by value" in dp.semantics_label.text()
    dp.set_semantics("mass")
    assert "attention mass" in dp.semantics_label.text()
    assert abs(dp.threshold_value() - 0.6) < 1e-9  # DINO's default: keep 60 % of the mass
    qtbot.waitUntil(lambda: window._mass is not None, timeout=5000)
    # The gradient runs 0..1 over 32 columns: 60 % of its mass lies in the right-most columns.
    values = np.linspace(0.0, 1.0, 32)
    order = np.argsort(-values)
    kept = order[: int(np.searchsorted(np.cumsum(values[order]) / values.sum(), 0.6) + 1)]
    expected_fraction = len(kept) / 32
    assert abs(window.canvas.mask_fraction() - expected_fraction) < 0.04
    out = tmp_path / "export"
    window.export_current(out)
    qtbot.waitUntil(lambda: (out / "a_meadow.json").exists(), timeout=10000)
    meta = json.loads((out / "a_meadow.json").read_text())
    assert meta["threshold"]["semantics"] == "mass" and meta["threshold"]["value"] == 0.6
    heat = np.load(out / "a_meadow.heatmap.npy")
    mask = np.asarray(Image.open(out / "a_meadow.mask.png")) == 255
    np.testing.assert_array_equal(mask, heat >= meta["threshold"]["heatmap_threshold"])
    assert abs(meta["threshold"]["heatmap_threshold"] - values[kept].min()) < 1e-6


def test_probability_slider_appears_and_restricts_the_mask(qtbot, window, photo_folder):
    select_backend(window, "vegetation-index")
    window.open_path(photo_folder)
    qtbot.waitUntil(lambda: window.result is not None, timeout=15000)
    assert window.display_panel.probability.isHidden()
    _show_gradient(qtbot, window, photo_folder, probability=True)
    qtbot.waitUntil(lambda: window.result.record.backend_id == "test-gradient", timeout=10000)
    dp = window.display_panel
    assert not dp.probability.isHidden()
    dp.set_threshold(0.0)
    dp.probability.setValue(0.75)
    assert window.result.record.probability_threshold == 0.75
    window.save_to_store()
    qtbot.waitUntil(lambda: not window.jobs.active("save"), timeout=10000)
    sidecar = json.loads((photo_folder / ".protolens" / "a_meadow.jpg.json").read_text())
    assert sidecar["results"][sidecar["current"]]["threshold"]["probability"] == 0.75
    mask_file = sidecar["results"][sidecar["current"]]["mask"]["file"]
    mask = np.asarray(Image.open(photo_folder / ".protolens" / mask_file)) == 255
    # probability grows from top to bottom: only the lowest quarter of the rows passes 0.75.
    rows_kept = mask.any(axis=1)
    assert not rows_kept[: mask.shape[0] // 2].any() and rows_kept[-10:].all()


def test_analysis_windows_are_outlined_on_request(qtbot, window, photo_folder):
    _show_gradient(qtbot, window, photo_folder)
    assert window.canvas.window_count == 2
    assert not any(item.isVisible() for item in window.canvas._window_items)
    window.display_panel.show_windows.setChecked(True)
    assert all(item.isVisible() for item in window.canvas._window_items)
    rect = window.canvas._window_items[1].rect()
    assert (rect.x(), rect.width(), rect.height()) == (640.0, 640.0, 1024.0)
