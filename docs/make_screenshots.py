"""Render the screenshots in docs/screenshots/ from the real main window on real quadrats:
main.png (vegetation heatmap, threshold outline), attention.png (ViT rollout over tiled windows, mass
threshold; random weights, as no weights are downloaded here), editor.png (a hand-corrected mask, two classes).

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


def _wait(app, condition, timeout: float = 120.0) -> None:
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
    window.resize(1500, 1000)
    window.show()
    OUT.mkdir(parents=True, exist_ok=True)
    main_shot(app, window)
    attention_shot(app, window)
    editor_shot(app, window)
    window.close()


def _select(window, backend: str, values: dict) -> None:
    panel = window.backend_panel
    panel.combo.setCurrentIndex(panel.combo.findData(backend))
    panel.form.set_values({**panel.form.values(), **values})
    panel.form.changed.emit(panel.form.values())


def _save(app, window, name: str) -> None:
    _wait(app, lambda: all(window.thumbs.item(i).icon().availableSizes() for i in range(window.thumbs.count())))
    app.processEvents()
    window.grab().save(str(OUT / name))
    print(f"wrote {OUT / name}")


def main_shot(app, window) -> None:
    window.backend_panel.auto_run.setChecked(True)
    _select(window, "vegetation-index", {"index": "exg-exr", "smoothing": 2.0})
    window.open_path(ROOT / "resources" / "samples" / "quadrats" / "moss_carpet.jpg")
    _wait(app, lambda: window.result is not None and window.result.record.backend_id == "vegetation-index")
    window.display_panel.colormap.setCurrentText("inferno")
    window.display_panel.opacity.setValue(0.55)
    window.display_panel.overlay.setCurrentText("outline")
    _save(app, window, "main.png")


def attention_shot(app, window) -> None:
    window.result = None
    _select(window, "vit-attention", {"mode": "rollout", "long_side": 1036, "tile_size": 518, "overlap": 0.25,
                                      "batch_size": 2})
    _wait(app, lambda: window.result is not None and window.result.record.backend_id == "vit-attention",
          timeout=600)
    window.display_panel.set_semantics("mass")
    window.display_panel.show_windows.setChecked(True)
    window.display_panel.overlay.setCurrentText("outline")
    _wait(app, lambda: window._mass is not None)
    _save(app, window, "attention.png")
    window.display_panel.show_windows.setChecked(False)
    window.display_panel.set_semantics("value")


def editor_shot(app, window) -> None:
    window.result = None
    _select(window, "vegetation-index", {"index": "exg-exr", "smoothing": 2.0})
    window.open_path(ROOT / "resources" / "samples" / "quadrats" / "forget_me_not.jpg")
    _wait(app, lambda: window.result is not None and window.result.record.backend_id == "vegetation-index")
    window.display_panel.show_heatmap.setChecked(False)
    edit = window.edit
    edit.start("threshold")
    _wait(app, lambda: edit.editor.active)
    if edit.project.labels.by_name("Myosotis (flowers)") is None:
        edit.project.labels.add("Myosotis (flowers)", (70, 110, 255))
    edit._labels_changed()
    editor = edit.editor
    editor.class_id = edit.project.labels.by_name("Myosotis (flowers)").id
    edit.set_tool("polygon")
    for x, y in ((380, 170), (560, 100), (740, 150), (780, 330), (640, 520), (450, 480), (330, 330)):
        editor._click(x, y, False)
    editor._click(330, 330, True)
    edit.set_tool("brush")
    edit.panel.radius.setValue(30)
    editor._press(2250, 650)
    for x in range(2250, 2500, 20):
        editor._drag(x, 650 + (x - 2250) * 1.5)
    editor._release(2490, 1010)
    editor.class_id = 1
    _save(app, window, "editor.png")
    edit.discard()


if __name__ == "__main__":
    main()
