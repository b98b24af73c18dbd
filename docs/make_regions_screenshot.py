"""Render docs/screenshots/regions.png from the real main window: object regions (the object-regions backend,
DINO ViT-S/16 with RANDOM weights, as no weights are downloaded here) on a sample quadrat, the mask editor's
Regions tool on, a few regions accepted in two class colours and one more highlighted under the cursor.

    xvfb-run -a -s "-screen 0 1700x1150x24" env QT_QPA_PLATFORM=xcb .venv/bin/python docs/make_regions_screenshot.py

(``QT_QPA_PLATFORM=offscreen`` works too.) Uses a throw-away settings file, store and cache.
"""

from __future__ import annotations

import time

import numpy as np
from shotkit import OUT, ROOT, open_window
from shotkit import wait as _wait

PHOTO = ROOT / "resources" / "samples" / "quadrats" / "forest_floor.jpg"


def _centre(mask: np.ndarray) -> tuple[float, float]:
    """The photo pixel (x, y) of ``mask`` farthest from its border."""
    import cv2

    distance = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), mask.shape)
    return float(x), float(y)


def main() -> None:
    app, window, scratch = open_window((1600, 1050), "protolens-shots-")
    from PySide6.QtWidgets import QScrollArea


    panel = window.backend_panel
    panel.auto_run.setChecked(True)
    panel.combo.setCurrentIndex(panel.combo.findData("object-regions"))
    panel.form.set_values({**panel.form.values(), "regions": 12, "long_side": 640, "spatial": 1.0})
    panel.form.changed.emit(panel.form.values())
    window.open_path(PHOTO)
    _wait(app, lambda: window.result is not None and window.result.layers.regions is not None)
    edit = window.edit
    _wait(app, lambda: edit.picker.count == 12)
    window.display_panel.show_heatmap.setChecked(False)
    edit.start("empty")
    _wait(app, lambda: edit.editor.active)
    for name, color in (("moss", (60, 200, 90)), ("leaf litter", (230, 140, 40))):
        if edit.project.labels.by_name(name) is None:
            edit.project.labels.add(name, color)
    edit._labels_changed()
    edit.set_tool("regions")
    editor, regions = edit.editor, window.result.layers.regions
    areas = regions.masks.reshape(len(regions.labels), -1).sum(axis=1)
    order = [int(i) for i in np.argsort(-areas)]
    for index, name in zip(order[1:5], ("moss", "leaf litter", "moss", "leaf litter"), strict=True):
        editor.class_id = edit.project.labels.by_name(name).id
        editor.accept_region(*_centre(regions.mask(index)))
    editor.class_id = edit.project.labels.by_name("moss").id
    edit._show_labels()
    editor._hover(*_centre(regions.mask(order[5])))  # the region about to be accepted, highlighted
    scroll = window.findChild(QScrollArea)
    app.processEvents()
    scroll.verticalScrollBar().setValue(edit.panel.y() - 8)  # the editor panel: Regions tool, n_o slider
    app.processEvents()
    time.sleep(0.5)
    app.processEvents()
    window.grab().save(str(OUT / "regions.png"))
    print(f"wrote {OUT / 'regions.png'} (regions {edit.picker.count}, history {editor.history.labels})")
    window.close()


if __name__ == "__main__":
    main()
