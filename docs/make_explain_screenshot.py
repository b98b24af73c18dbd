"""Render docs/screenshots/explain.png: View ▸ Explain on a bird sample against a bank of the bundled bird photos.

Random backbone weights (no weights are downloaded on the machine that makes it; the matches show the drawing,
not a trained model's judgement), ViT-S/14 at 224 px, 4 co-segmentation parts, SLIC segments labelled by the
part covering most of each; the bird PNGs' alpha channels are their object masks. One match is clicked, so both
of its segments are highlighted.

    xvfb-run -a -s "-screen 0 1700x1150x24" env QT_QPA_PLATFORM=xcb .venv/bin/python docs/make_explain_screenshot.py

Uses a throw-away settings file, store, cache and bank folder.
"""

from __future__ import annotations

import shutil

from shotkit import OUT, ROOT, open_window, settle
from shotkit import wait as _wait

BIRDS = ROOT / "resources" / "samples" / "birds"
QUERY = "crow.png"


def main() -> None:
    app, window, scratch = open_window((1700, 1100), "protolens-explain-shot-")
    from protolens.services.bank import build_bank
    from protolens.services.segment import Segmenter, drain

    bank, photos = scratch / "birds", scratch / "photos"
    shutil.copytree(BIRDS, bank)
    shutil.copytree(BIRDS, photos)
    drain(build_bank(Segmenter(), bank, input_size=224, parts=4, allow_random_weights=True))
    window.backend_panel.auto_run.setChecked(False)
    window.open_path(photos / QUERY)
    _wait(app, lambda: window.image is not None)
    window.toggle_explain(True)
    view = window.explain_view
    view.k_spin.setValue(4)
    view.segments_combo.setCurrentText("slic")
    view.set_bank(bank)
    _wait(app, lambda: view.explanation is not None and not window.jobs.active())
    settle(app, 0.5)
    view.scene_view.fit()
    if view.scene_view.line_count:
        view.scene_view.highlight(0)
    settle(app, 0.5)
    window.grab().save(str(OUT / "explain.png"))
    print(f"wrote {OUT / 'explain.png'}: {view.scene_view.line_count} matches, {view.chart.title.text()}")
    window.close()
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
