"""Render docs/screenshots/patch_selection.png from the real main window: SVIP patch selection (the
patch-selection backend, ViT-S/16 with RANDOM weights, as no weights are downloaded here) on a sample photo:
7 x 7 super-patches drawn by rank (flat blocks, brighter = higher rollout score), the kept top M = 40 outlined
by the display threshold (the suggested threshold = the M slider).

    xvfb-run -a -s "-screen 0 1700x1150x24" env QT_QPA_PLATFORM=xcb .venv/bin/python docs/make_patch_selection_screenshot.py

(``QT_QPA_PLATFORM=offscreen`` works too.) Uses a throw-away settings file, store and cache.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"
PHOTO = ROOT / "resources" / "samples" / "birds" / "robin.jpg"


def _wait(app, condition, timeout: float = 300.0) -> None:
    end = time.time() + timeout
    while not condition():
        if time.time() > end:
            raise TimeoutError("the window did not reach the expected state")
        app.processEvents()
        time.sleep(0.01)


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="protolens-shots-"))
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["PROTOLENS_SETTINGS"] = str(scratch / "settings.ini")
    os.environ["PROTOLENS_STORE"] = str(scratch / "store")
    os.environ["PROTOLENS_CACHE_DIR"] = str(scratch / "cache")
    from PySide6.QtWidgets import QApplication

    from protolens.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = MainWindow(allow_random_weights=True)
    window.resize(1600, 1050)
    window.show()
    OUT.mkdir(parents=True, exist_ok=True)
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
