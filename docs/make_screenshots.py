"""Render the screenshots in docs/screenshots/ from the real main window on real quadrats:
main.png (vegetation heatmap, threshold outline), attention.png (ViT rollout over tiled windows, mass
threshold; random weights, as no weights are downloaded here), editor.png (a hand-corrected mask, two classes),
compare.png (View ▸ Compare: vegetation index, ViT cls / received / rollout and a difference pane, with the
agreement figures in the pane titles; the ViT results with random weights too).

    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/make_screenshots.py

Uses a throw-away settings file and result store, so it never touches a user's own.
"""

from __future__ import annotations

from shotkit import OUT, ROOT, open_window
from shotkit import wait as _wait


def main() -> None:
    app, window, scratch = open_window((1500, 1000), "protolens-shots-")
    main_shot(app, window)
    attention_shot(app, window)
    editor_shot(app, window)
    compare_shot(app, window)
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
    window.controller.result = None
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
    window.controller.result = None
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


def compare_shot(app, window) -> None:
    from protolens.core.store import ResultStore
    from protolens.services.batch import segment_paths

    photo = ROOT / "resources" / "samples" / "quadrats" / "moss_carpet.jpg"
    runs = [("vegetation-index", {"index": "exg-exr", "smoothing": 2.0}), ("vegetation-index", {"index": "exg"})]
    runs += [("vit-attention", {"mode": mode, "long_side": 1036, "tile_size": 518, "batch_size": 2})
             for mode in ("cls", "received", "rollout")]
    for backend, params in runs:
        segment_paths([photo], backend, params, segmenter=window.segmenter, store=ResultStore.from_environment(),
                      allow_random_weights=True)
    window.backend_panel.auto_run.setChecked(False)
    window.open_path(photo)
    _wait(app, lambda: window.image is not None and len(window.controller.entries) >= len(runs))
    window.toggle_compare(True)
    view = window.compare
    view.diff_on.setChecked(True)
    view.set_layout("2×3")
    wanted = [(b, p.get("index", p.get("mode"))) for b, p in runs]
    by_run = {(e.record.backend_id, e.record.params.get("index", e.record.params.get("mode"))): e.key
              for e in window.controller.entries}
    for index, run in enumerate(wanted):
        view.choose(index, by_run[run])
    view.diff_a.setValue(3)
    view.diff_b.setValue(5)
    _wait(app, lambda: all(i in view.data for i in range(5)) and view.difference_pair() is not None)
    view.threshold.setValue(0.45)
    view.panes[0].canvas.view.setRange(xRange=(600, 1900), yRange=(300, 1200), padding=0)
    view._hovered(1250, 760, -1.0)  # the crosshair and every pane's score at one point
    _save(app, window, "compare.png")
    window.toggle_compare(False)


if __name__ == "__main__":
    main()
