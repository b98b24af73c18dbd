"""Render docs/screenshots/patch_selection.png from the real main window: SVIP patch selection (the
patch-selection backend, ViT-S/16 with RANDOM weights, as no weights are downloaded here) on a sample photo:
7 x 7 super-patches drawn by rank (flat blocks, brighter = higher rollout score), the kept top M = 40 outlined
by the display threshold (the suggested threshold = the M slider).

    xvfb-run -a -s "-screen 0 1700x1150x24" env QT_QPA_PLATFORM=xcb .venv/bin/python docs/make_patch_selection_screenshot.py

(``QT_QPA_PLATFORM=offscreen`` works too.) Uses a throw-away settings file, store and cache.
"""

from __future__ import annotations

import time

from shotkit import OUT, ROOT, open_window
from shotkit import wait as _wait

PHOTO = ROOT / "resources" / "samples" / "birds" / "robin.jpg"


def main() -> None:
    app, window, scratch = open_window((1600, 1050), "protolens-shots-")
    panel = window.backend_panel
    panel.auto_run.setChecked(True)
    panel.combo.setCurrentIndex(panel.combo.findData("patch-selection"))
    panel.form.set_values({**panel.form.values(), "keep": 40, "input": 224})
    panel.form.changed.emit(panel.form.values())
    window.open_path(PHOTO)
    _wait(app, lambda: window.result is not None and window.result.layers.regions is not None)
    for _ in range(50):
        app.processEvents()
        time.sleep(0.02)
    window.grab().save(str(OUT / "patch_selection.png"))
    info = window.result.layers.info if hasattr(window.result.layers, "info") else {}
    print(f"wrote {OUT / 'patch_selection.png'} ({info.get('keep', '?')} kept)")
    window.close()


if __name__ == "__main__":
    main()
