"""Edit ▸ Export masks: the dialog's cleaning spin boxes reach the polygon exports."""

from __future__ import annotations

import json

import numpy as np

from protolens.gui.export_dialog import ExportDialog
from tests.services.test_export_defects import annotate, make_photo, speckled_map


def test_dialog_spin_boxes_default_to_zero_and_report_values(qtbot):
    dialog = ExportDialog("/tmp/out")
    qtbot.addWidget(dialog)
    assert dialog.min_area() == 0 and dialog.fill_holes() == 0
    dialog.min_area_box.setValue(12)
    dialog.fill_holes_box.setValue(5)
    assert dialog.min_area() == 12 and dialog.fill_holes() == 5
    assert dialog.min_area_box.minimum() == 0


def test_dialog_options_pass_through_the_main_window(qtbot, window, tmp_path, monkeypatch):
    photo = make_photo(tmp_path / "photos" / "floor.jpg")
    annotate(photo, speckled_map())
    window.open_path(photo.parent)
    out = tmp_path / "masks"

    def accept(dialog):
        for name, check in dialog.checks.items():
            check.setChecked(name in ("geojson", "png"))
        dialog.min_area_box.setValue(4)
        dialog.fill_holes_box.setValue(3)
        dialog.path.setText(str(out))
        return 1

    monkeypatch.setattr(ExportDialog, "exec", accept)
    window.export_masks()
    qtbot.waitUntil(lambda: (out / "provenance.json").exists(), timeout=20000)
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["cleanup"]["min_area"] == 4 and provenance["cleanup"]["fill_holes"] == 3
    features = json.loads((out / "floor.geojson").read_text())["features"]
    assert 0 < len(features) <= 2
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(out / "floor.labels.png")), speckled_map())
