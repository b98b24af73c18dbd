"""Figures of the Compare view and the multi-result store (issue 8), measured side by side in one run.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_compare.py

1. A 3×3 Compare grid on 2560×1600 quadrats (nine stored results of full-resolution maps): a shared threshold
   move until all nine panes are repainted (a synchronous render of each pane's viewport), p50/p95 over 200
   moves, in value and in mass semantics; beside it the same for one pane (ratio nine ÷ one).
2. A synchronised zoom/pan event (set the range of one pane; the eight linked panes follow) until all nine are
   repainted, p50/p95 over 200 events; beside it one unlinked pane.
3. Listing 50 stored results of one photo (``ResultStore.list_results``), median of 50; beside it a bare read
   of the sidecar JSON (ratio).
4. Next photo in the Compare view with cached results (decoded photo and pane data cached), from the key press
   to all nine panes showing their maps and repainted, p50 over 20 steps; beside it the first, uncached visit.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
SCRATCH = Path(tempfile.mkdtemp(prefix="protolens-bench-compare-"))
os.environ["PROTOLENS_SETTINGS"] = str(SCRATCH / "settings.ini")
os.environ["PROTOLENS_CACHE_DIR"] = str(SCRATCH / "cache")
ROOT = Path(__file__).resolve().parents[1]
QUADRATS = ROOT / "resources" / "samples" / "quadrats"
SMOOTHING = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0]


def ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1e3, q))


def _wait(app, condition, timeout: float = 120.0) -> None:
    end = time.time() + timeout
    while not condition():
        if time.time() > end:
            raise TimeoutError("condition not met")
        app.processEvents()
        time.sleep(0.001)


def prepare() -> list[Path]:
    from protolens.core.store import ResultStore
    from protolens.services.batch import segment_paths
    from protolens.services.segment import Segmenter

    folder = SCRATCH / "photos"
    folder.mkdir()
    photos = []
    for name in ("moss_carpet.jpg", "forest_floor.jpg"):
        shutil.copy(QUADRATS / name, folder / name)
        photos.append(folder / name)
    segmenter = Segmenter(disk_cache=None)
    for smoothing in SMOOTHING:
        segment_paths(photos, "vegetation-index", {"index": "exg-exr", "smoothing": smoothing}, segmenter=segmenter,
                      store=ResultStore())
    return photos


def repaint(app, panes) -> None:
    for pane in panes:
        pane.canvas.viewport().repaint()


def threshold_figures(app, view) -> None:
    panes = view.panes[:9]
    _wait(app, lambda: not view.jobs.active())  # nothing else running: thumbnails and loads are done
    for semantics in ("value", "mass"):
        view.semantics.setCurrentIndex(view.semantics.findData(semantics))
        for step in range(20):  # warm-up
            view.threshold.setValue(0.3 + step / 100)
            repaint(app, panes)
        app.processEvents()
        nine, one = [], []
        for step in range(200):
            value = 0.2 + 0.6 * ((step * 37) % 100) / 100
            started = time.perf_counter()
            view.threshold.setValue(value)
            repaint(app, panes)
            nine.append(time.perf_counter() - started)
            started = time.perf_counter()  # one pane's own threshold, to another level
            panes[0].canvas.set_threshold(1.0 - value)
            repaint(app, panes[:1])
            one.append(time.perf_counter() - started)
        print(f"1. shared threshold ({semantics:5s}), 9 panes: p50 {ms(nine, 50):6.2f} ms  p95 {ms(nine, 95):6.2f} ms"
              f"   | 1 pane p95 {ms(one, 95):6.2f} ms   ratio 9/1 (p95) {ms(nine, 95) / ms(one, 95):5.2f}"
              f"   target p95 <= 16 ms")
    view.semantics.setCurrentIndex(0)


def zoom_figures(app, view) -> None:
    panes = view.panes[:9]
    linked, alone = [], []
    from protolens.gui.canvas import ImageCanvas

    single = ImageCanvas()  # the same photo and map in one unlinked canvas of a pane's size
    single.resize(panes[0].canvas.size())
    single.set_photo(view._photos[view._image.meta.sha256], image_size=view._image.rgb.shape[:2])
    single.set_heatmap(view.data[0].display)
    single.show()
    _wait(app, lambda: single.isVisible())
    for step in range(200):
        x0 = 200 + (step % 20) * 40
        started = time.perf_counter()
        panes[0].canvas.view.setRange(xRange=(x0, x0 + 1200), yRange=(300, 1050), padding=0)
        repaint(app, panes)
        linked.append(time.perf_counter() - started)
        started = time.perf_counter()
        single.view.setRange(xRange=(x0, x0 + 1200), yRange=(300, 1050), padding=0)
        single.viewport().repaint()
        alone.append(time.perf_counter() - started)
    print(f"2. synced zoom/pan, 9 panes: p50 {ms(linked, 50):6.2f} ms  p95 {ms(linked, 95):6.2f} ms"
          f"   | 1 unlinked pane p95 {ms(alone, 95):6.2f} ms   ratio 9/1 (p95) {ms(linked, 95) / ms(alone, 95):5.2f}"
          f"   target p95 <= 16 ms")
    single.close()


def listing_figures(photo: Path) -> None:
    from protolens.core.hashing import sha256_file
    from protolens.core.store import ImageMeta, ResultRecord, ResultStore
    from protolens.core.types import Heatmap

    folder = SCRATCH / "fifty"
    folder.mkdir()
    target = folder / photo.name
    shutil.copy(photo, target)
    meta = ImageMeta(target, sha256_file(target), 1600, 2560)
    store = ResultStore()
    for i in range(50):
        record = ResultRecord("vit-attention", "2.0.0", {"mode": "cls", "block": i}, 0.5, weights_id=f"epoch_{i:03d}",
                              weights_sha256=f"{i:064x}")
        store.save_result(meta, record, Heatmap(np.random.default_rng(i).random((115, 184), np.float32), (1600, 2560)))
    sidecar = store.sidecar_path(target)
    listing, raw = [], []
    for _ in range(50):
        started = time.perf_counter()
        entries = store.list_results(target, sha256=meta.sha256)
        listing.append(time.perf_counter() - started)
        started = time.perf_counter()
        json.loads(sidecar.read_text())
        raw.append(time.perf_counter() - started)
    assert len(entries) == 50
    print(f"3. list 50 stored results: median {ms(listing, 50):6.2f} ms   | bare sidecar JSON read "
          f"{ms(raw, 50):6.2f} ms   ratio {ms(listing, 50) / ms(raw, 50):5.2f}   target <= 50 ms")


def next_photo_figures(app, window, view) -> None:
    def step() -> float:
        """Press D/A (the other photo) and wait until all nine panes show their maps, repainted."""
        target = 1 - window.index
        started = time.perf_counter()
        window.show_index(target)
        _wait(app, lambda: window.image is not None and window.image.meta.path == window.paths[target])
        sha = window.image.meta.sha256
        _wait(app, lambda: view._image is not None and view._image.meta.sha256 == sha
              and all(i in view.data for i in range(9)))
        repaint(app, view.panes[:9])
        return time.perf_counter() - started

    first = [step() for _ in range(2)]  # the first visit of each photo: decode and store reads
    cached = [step() for _ in range(20)]
    print(f"4. next photo, 9 panes, cached: p50 {ms(cached, 50):6.1f} ms  p95 {ms(cached, 95):6.1f} ms"
          f"   | first visit (uncached) median {ms(first, 50):6.1f} ms   ratio cached/first "
          f"{ms(cached, 50) / ms(first, 50):5.2f}   target p50 <= 150 ms")


def main() -> None:
    photos = prepare()
    from PySide6.QtWidgets import QApplication

    from protolens.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication([])
    window = MainWindow()
    window.resize(1600, 1100)
    window.show()
    window.backend_panel.auto_run.setChecked(False)
    window.open_path(photos[0].parent)
    _wait(app, lambda: window.image is not None and len(window.controller.entries) == 9)
    window.toggle_compare(True)
    view = window.compare
    view.set_layout("3×3")
    _wait(app, lambda: all(i in view.data for i in range(9)))
    app.processEvents()
    threshold_figures(app, view)
    zoom_figures(app, view)
    listing_figures(photos[0])
    next_photo_figures(app, window, view)
    window.close()


if __name__ == "__main__":
    main()
