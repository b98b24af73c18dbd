"""Render docs/screenshots/clip_dense.png: clip-dense class maps with the label overlay on a quadrat.

The Class prompts panel holds five classes (synonyms after ";"); "moss" and "Trifolium repens" are classes of the
folder's project, so they keep the project's colours; the others show the colours they will get when added. One class's probability map is
picked (the canvas draws it) and the argmax label map is drawn over it as the class overlay.

RANDOM WEIGHTS: no CLIP weights are downloaded on the machine that makes it, so open_clip ViT-B/16 runs with
random weights (seeded) and the maps show the drawing, not CLIP's judgement; the canvas title says so. Random
weights give near-uniform class probabilities, so the background threshold is set just above 1/5
(``PROB_THRESHOLD``) rather than the default 0.3, which would make the whole photo background.

    xvfb-run -a -s "-screen 0 1700x1150x24" env QT_QPA_PLATFORM=xcb .venv/bin/python docs/make_clip_screenshot.py

Uses a throw-away settings file, store and cache.
"""

from __future__ import annotations

import shutil

from shotkit import OUT, ROOT, open_window, settle
from shotkit import wait as _wait

PHOTO = ROOT / "resources" / "samples" / "quadrats" / "moss_carpet.jpg"
CLASSES = """# one class per line, synonyms after ';'
moss; Bryophyta
Trifolium repens; white clover
grass; Poaceae
bare soil; bare ground
leaf litter
"""
SHOWN_CLASS = "Trifolium repens"
PROJECT_CLASSES = {"moss": (240, 210, 40), "Trifolium repens": (255, 105, 180)}
"""Classes the folder's project already has (their colours are used); the others get the next default colours."""
PROB_THRESHOLD = 0.21
"""Background below this best-class probability: about half the photo with these random weights (five classes
give near-uniform probabilities, 0.16 to 0.27), so the class overlay and the picked map both show."""


def main() -> None:
    app, window, scratch = open_window((1700, 1100), "protolens-clip-shot-")
    photos = scratch / "photos"
    photos.mkdir()
    shutil.copy(PHOTO, photos / PHOTO.name)
    window.backend_panel.auto_run.setChecked(False)
    window.open_path(photos / PHOTO.name)
    _wait(app, lambda: window.image is not None)
    labels = window.edit.project.labels
    for name, color in PROJECT_CLASSES.items():
        if labels.by_name(name) is None:
            labels.add(name, color)
    window.edit._labels_changed()
    panel = window.backend_panel
    panel.combo.setCurrentIndex(panel.combo.findData("clip-dense"))
    panel.form.set_values({**panel.form.values(), "prob_threshold": PROB_THRESHOLD, "mode": "sclip"})
    panel.form.changed.emit(panel.form.values())
    window.class_prompts.text.setPlainText(CLASSES)
    window.class_prompts.apply_text()
    window.run_current()
    _wait(app, lambda: window.result is not None and window.result.layers.label_map is not None)
    prompts = window.class_prompts
    row = next(i for i in range(prompts.list.count()) if prompts.list.item(i).text().startswith(SHOWN_CLASS))
    prompts.list.setCurrentRow(row)
    window.display_panel.opacity.setValue(0.45)
    settle(app, 0.5)
    window.canvas_title.setText(f"{window.canvas_title.text()}  ·  RANDOM CLIP weights (no download here): "
                                "the maps show the drawing, not CLIP's judgement")
    settle(app, 1.0)
    window.grab().save(str(OUT / "clip_dense.png"))
    print(f"wrote {OUT / 'clip_dense.png'}: {window.canvas_title.text()}")
    window.close()
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
