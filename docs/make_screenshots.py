"""Render docs/screenshots/main.png: the real main window on a real quadrat with its heatmap and slider.

    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/make_screenshots.py

Uses a throw-away settings file and result store, so it never touches a user's own.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"


def _wait(app, condition, timeout: float = 60.0) -> None:
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
    window = MainWindow()
    window.resize(1500, 940)
    window.show()
    panel = window.backend_panel
    panel.combo.setCurrentIndex(panel.combo.findData("vegetation-index"))
    panel.auto_run.setChecked(True)
    panel.form.set_values({"index": "exg-exr", "smoothing": 2.0})
    window.open_path(ROOT / "resources" / "samples" / "quadrats" / "moss_carpet.jpg")
    _wait(app, lambda: window.result is not None)
    window.display_panel.colormap.setCurrentText("inferno")
    window.display_panel.opacity.setValue(0.55)
    window.display_panel.overlay.setCurrentText(os.environ.get("SHOT_OVERLAY", "outline"))
    _wait(app, lambda: all(window.thumbs.item(i).icon().availableSizes() for i in range(window.thumbs.count())))
    app.processEvents()
    OUT.mkdir(parents=True, exist_ok=True)
    window.grab().save(str(OUT / "main.png"))
    print(f"wrote {OUT / 'main.png'}")
    window.close()


if __name__ == "__main__":
    main()
