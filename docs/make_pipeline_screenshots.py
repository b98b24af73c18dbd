"""Render docs/screenshots/training.png (Model ▸ Train prototype ViT… after a short run, its live monitor) and
docs/screenshots/epochs.png (File ▸ Open training run…: every epoch's attention on a real quadrat, the difference of
the last two epochs and the indicator plot) from the real window.

Random backbone weights (no weights are downloaded on the machine that makes them), prototypes from the bundled
bird and plant photos, the four sample quadrats at 1536x1024 (24 x 16 crops of 64 px, each at 56 px).

    xvfb-run -a -s "-screen 0 1600x1100x24" env QT_QPA_PLATFORM=xcb .venv/bin/python docs/make_pipeline_screenshots.py

Uses a throw-away settings file, store, cache and run folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from shotkit import OUT, ROOT, open_window, settle
from shotkit import wait as _wait

SAMPLES = ROOT / "resources" / "samples"
BACKBONE = "vit_small_patch14_dinov2.lvd142m"


def _prototypes(scratch: Path) -> Path:
    from protolens.services.prototypes import build_prototypes
    from protolens.services.segment import Segmenter, drain

    training = scratch / "training"
    for group in ("birds", "plants"):
        shutil.copytree(SAMPLES / group, training / group, ignore=shutil.ignore_patterns("*matte*"))
    out = scratch / "prototypes.safetensors"
    drain(build_prototypes(Segmenter(), training, out, backbone=BACKBONE, k=8, input_size=56, niter=50, nredo=3,
                           allow_random_weights=True))
    return out


def main() -> None:
    app, window, scratch = open_window((1600, 1080), "protolens-shots-")
    prototypes = _prototypes(scratch)
    quadrats = scratch / "quadrats"
    shutil.copytree(SAMPLES / "quadrats", quadrats)
    window.open_path(quadrats / "moss_carpet.jpg")
    window.open_train_dialog()
    dialog = window.train_dialog
    dialog.resize(1100, 900)
    for field, value in ((dialog.quadrats, quadrats), (dialog.prototypes, prototypes),
                         (dialog.run_dir, scratch / "run"), (dialog.photo_size, "1536x1024"), (dialog.lr, "0.001")):
        field.setText(str(value))
    dialog.backbone.setCurrentText(BACKBONE)
    for field, value in ((dialog.epochs, 8), (dialog.crop, 64), (dialog.crop_input, 56), (dialog.depth, 2),
                         (dialog.heads, 6), (dialog.accumulation, 1)):
        field.setValue(value)
    if dialog.start() is None:
        raise SystemExit(f"training did not start: {dialog.status.text()}")
    _wait(app, lambda: not dialog.running)
    settle(app, 2.0)  # the monitor polls the run folder twice a second
    dialog.grab().save(str(OUT / "training.png"))
    print(f"wrote {OUT / 'training.png'}")
    dialog.compare_button.click()
    view = window.epochs_view
    _wait(app, lambda: view is not None and len(view.data) >= len(view.epochs) and not window.jobs.active())
    view.fit()
    settle(app, 1.0)
    window.grab().save(str(OUT / "epochs.png"))
    print(f"wrote {OUT / 'epochs.png'}")
    dialog.close()
    window.close()


if __name__ == "__main__":
    main()
