"""Figures of the checkpoint comparison (issue 10, "Comparison view"), measured side by side in one run.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_epochs.py [--epochs 4] [--crop-input 28]

Setup: a quadrat resized to 3072×2048, 64-px crops (a 48×32 grid, 1536 crops), each crop at ``--crop-input``
(28 px: 2×2 patches, to keep the token time low), a random ViT-S/14 backbone, a run of ``--epochs`` random
narrow ViTs (depth 6, 6 heads, width 384, K = 100), on the CPU.

1. First computation, per epoch: the prototype-guided backend's attention-only run and saving the result in
   the photo's store (:func:`protolens.services.epochs.ensure_epoch_result`). Epoch 1 includes the tile tokens
   (backbone over 1536 crops); later epochs find the tokens cached and rerun only the narrow ViT.
2. Switching epochs after the first computation, what the view does per epoch map:
   a. worker: read the stored result and prepare the pane (:func:`protolens.gui.compare_view.load_pane`:
      the map on the common grid, ranks, the drawable map), median over every epoch × ``--repeats``;
   b. the epochs view (1×2: one epoch pane and the difference pane): from a scrubber move to the epoch's pane,
      its title and the difference pane drawn and repainted, with the maps prefetched as the view does.
Target: ≤ 200 ms per epoch map on CPU (2a, and 2b). Ratios: first computation ÷ switch.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
SCRATCH = Path(tempfile.mkdtemp(prefix="protolens-bench-epochs-"))
os.environ["PROTOLENS_SETTINGS"] = str(SCRATCH / "settings.ini")
os.environ["PROTOLENS_CACHE_DIR"] = str(SCRATCH / "cache")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PHOTO_SIZE, CROP, BACKBONE = (3072, 2048), 64, "vit_small_patch14_dinov2.lvd142m"


def median_ms(samples: list[float]) -> float:
    return float(np.median(np.asarray(samples)) * 1e3)


def make_photo() -> Path:
    import cv2

    folder = SCRATCH / "photos"
    folder.mkdir()
    rgb = cv2.imread(str(ROOT / "resources" / "samples" / "quadrats" / "moss_carpet.jpg"))
    path = folder / "quadrat.jpg"
    cv2.imwrite(str(path), cv2.resize(rgb, PHOTO_SIZE, interpolation=cv2.INTER_CUBIC), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path


def make_run(epochs: int, crop_input: int) -> Path:
    from tests.services.test_epochs import make_run as tiny_run

    grid = (PHOTO_SIZE[1] // CROP, PHOTO_SIZE[0] // CROP)
    return tiny_run(SCRATCH / "run", epochs=epochs, grid=grid, crop=CROP, crop_input=crop_input, prototypes=100,
                    depth=6, heads=6).path


def first_computation(run_dir: Path, photo: Path) -> tuple[list[float], dict[int, str]]:
    from protolens.core.runs import RunFolder
    from protolens.core.store import ResultStore
    from protolens.services.epochs import ensure_epoch_result
    from protolens.services.segment import Segmenter, drain, load_image

    segmenter = Segmenter(disk_cache=None, device="cpu")
    image = load_image(photo)
    seconds, keys = [], {}
    for record in RunFolder(run_dir).epochs():
        started = time.perf_counter()
        key, _ = drain(ensure_epoch_result(segmenter, ResultStore(), image, record, allow_random_weights=True))
        seconds.append(time.perf_counter() - started)
        keys[record.epoch] = key
    return seconds, keys


def switch_worker(photo: Path, keys: dict[int, str], repeats: int) -> list[float]:
    from protolens.core.store import ResultStore
    from protolens.gui.compare_view import load_pane
    from protolens.services.compare import compare_grid
    from protolens.services.segment import load_image

    image = load_image(photo)
    grid = compare_grid((image.meta.height, image.meta.width))
    samples = []
    for _ in range(repeats):
        for key in keys.values():
            started = time.perf_counter()
            _key, loaded = load_pane(ResultStore(), image, key, grid)
            samples.append(time.perf_counter() - started)
            assert loaded is not None
    return samples


def _wait(app, condition, timeout: float = 300.0) -> None:
    end = time.time() + timeout
    while not condition():
        if time.time() > end:
            raise TimeoutError("condition not met")
        app.processEvents()
        time.sleep(0.0005)


def switch_view(photo: Path, run_dir: Path, repeats: int) -> list[float]:
    from PySide6.QtWidgets import QApplication

    from protolens.core.store import ResultStore
    from protolens.gui.main_window import MainWindow
    from protolens.services.segment import Segmenter

    app = QApplication.instance() or QApplication([])
    window = MainWindow(Segmenter().registry, Segmenter(disk_cache=None, device="cpu"), ResultStore(),
                        allow_random_weights=True)
    window.resize(1400, 900)
    window.show()
    window.backend_panel.auto_run.setChecked(False)
    window.open_path(photo.parent)
    _wait(app, lambda: window.image is not None)
    window.open_training_run(run_dir)
    view = window.epochs_view
    epochs = list(view.epochs)
    _wait(app, lambda: len(view.keys_by_epoch) == len(epochs))
    view.set_layout("1×2")
    _wait(app, lambda: all(view._loaded(e) is not None for e in epochs) and 0 in view.data)
    samples = []
    for _ in range(repeats):
        for epoch in epochs[1:] + epochs[:1]:
            started = time.perf_counter()
            view.show_epoch(epoch)
            _wait(app, lambda e=epoch: 0 in view.data and view.page_epochs[0] == e)
            view.repaint()
            samples.append(time.perf_counter() - started)
    window.jobs.cancel_all()
    window.jobs.wait(5000)
    window.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--crop-input", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    photo, run_dir = make_photo(), make_run(args.epochs, args.crop_input)
    import torch

    print(f"photo {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}, grid 32x48 (1536 crops at {args.crop_input} px), {args.epochs} "
          f"epochs, random {BACKBONE}, narrow ViT depth 6 / 6 heads / width 384 / K 100; CPU, "
          f"{torch.get_num_threads()} torch threads")
    first, keys = first_computation(run_dir, photo)
    worker = switch_worker(photo, keys, args.repeats)
    view = switch_view(photo, run_dir, args.repeats)
    later = first[1:] or first
    rows = [("first computation, epoch 1 (tokens + narrow ViT + save)", first[0] * 1e3),
            ("first computation, later epochs (narrow ViT + save), median", median_ms(later)),
            ("switch: read stored map + prepare pane (worker), median", median_ms(worker)),
            ("switch: epochs view scrubber -> pane drawn, median", median_ms(view))]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:9.1f} ms")
    print(f"ratio first (later epochs) / switch (worker): {median_ms(later) / median_ms(worker):6.1f}x;  "
          f"epoch 1 / switch (view): {first[0] * 1e3 / median_ms(view):6.1f}x")
    verdict = "meets" if max(median_ms(worker), median_ms(view)) <= 200 else "MISSES"
    print(f"target <= 200 ms per epoch map on CPU: {verdict} (worker {median_ms(worker):.0f} ms, "
          f"view {median_ms(view):.0f} ms; p90 view {np.percentile(np.asarray(view) * 1e3, 90):.0f} ms)")
    shutil.rmtree(SCRATCH, ignore_errors=True)


if __name__ == "__main__":
    main()
