"""Figures of the main job (issue 2), measured side by side in one run.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_main_job.py [--moves 200]

Prints:
1. threshold-slider latency on moss_carpet.jpg (2560x1600), from the slider's value change to the repainted
   canvas (a synchronous render of the view), p50/p95 over N moves, for a full-resolution heatmap
   (vegetation-index) and a patch-grid heatmap (vit-attention), fill and outline overlays; next to it the
   naive approach (a full-resolution RGBA overlay recomputed per move) for orientation;
2. next-photo latency (key press to photo painted), p50, with and without neighbour prefetch;
3. vit-attention end-to-end time (RGB array -> full-resolution heatmap) / bare model forward on the same
   input (ViT-S/14, random weights, long side 518), medians of interleaved runs;
4. whether `import protolens` and showing the main window import torch.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PROTOLENS_SETTINGS", str(Path(tempfile.mkdtemp()) / "bench.ini"))
ROOT = Path(__file__).resolve().parents[1]
QUADRATS = ROOT / "resources" / "samples" / "quadrats"
PHOTO = QUADRATS / "moss_carpet.jpg"


def percentiles(samples: list[float]) -> str:
    ms = np.asarray(samples) * 1e3
    return f"p50 {np.percentile(ms, 50):6.2f} ms  p95 {np.percentile(ms, 95):6.2f} ms"


def run_backend(segmenter, image, backend, params):
    from protolens.services.segment import drain

    return drain(segmenter.run(image, backend, params, allow_random_weights=True))


def slider_latency(moves: int) -> None:
    from PySide6.QtWidgets import QApplication

    from protolens.gui.main_window import MainWindow
    from protolens.services.results import FoundResult
    from protolens.services.segment import load_image

    app = QApplication.instance() or QApplication([])
    window = MainWindow(allow_random_weights=True)
    window.backend_panel.auto_run.setChecked(False)
    window.resize(1400, 900)
    window.show()
    app.processEvents()
    image = load_image(PHOTO)
    controller = window.controller
    controller.paths, controller.index, controller.image = [PHOTO], 0, image
    window.canvas.set_photo(image.rgb)
    viewport = window.canvas.viewport()
    rng = np.random.default_rng(0)
    print(f"1. threshold slider, {PHOTO.name} {image.meta.width}x{image.meta.height}, view "
          f"{viewport.width()}x{viewport.height()} px, {moves} moves")
    for backend, params in (("vegetation-index", {}), ("vit-attention", {"long_side": 518})):
        outcome = run_backend(window.segmenter, image, backend, params)
        controller.show_result(FoundResult.from_outcome(outcome))
        controller._save_timer.stop()
        time.sleep(1.0)  # let torch's worker threads stop spinning after the forward pass
        for mode in ("fill", "outline"):
            window.display_panel.overlay.setCurrentText(mode)
            viewport.grab()
            times = []
            for value in rng.uniform(0.05, 0.95, moves):
                start = time.perf_counter()
                window.display_panel.set_threshold(float(value))
                viewport.grab()
                times.append(time.perf_counter() - start)
            grid = "x".join(map(str, outcome.result.heatmap.values.shape))
            print(f"   {backend:17s} heatmap {grid:>9s}  {mode:7s} {percentiles(times)}")
    import pyqtgraph as pg

    naive, item = [], pg.ImageItem()
    window.canvas.mask_item.setVisible(False)
    window.canvas.view.addItem(item)
    heat = window.result.heatmap.full_resolution()
    for value in rng.uniform(0.05, 0.95, 20):
        start = time.perf_counter()
        rgba = np.zeros(heat.shape + (4,), np.uint8)
        rgba[heat >= value] = (0, 255, 255, 90)
        item.setImage(rgba, autoLevels=False)
        viewport.grab()
        naive.append(time.perf_counter() - start)
    window.canvas.view.removeItem(item)
    print(f"   naive: full-resolution RGBA overlay recomputed per move:  {percentiles(naive)}")
    window.display_panel.overlay.setCurrentText("fill")
    next_photo_latency(app, window)
    window.close()


def next_photo_latency(app, window) -> None:
    paths = sorted(QUADRATS.glob("*.jpg")) * 3
    window.controller.paths = paths
    window.thumbs.set_paths(paths)
    loader = window.controller.loader
    viewport = window.canvas.viewport()
    results = {}
    for prefetch in (True, False):
        loader._cache.clear()
        loader._wanted = None
        window.show_index(0)
        _wait(app, lambda: window.image is not None and window.image.meta.path == paths[0])
        times = []
        for index in range(1, len(paths)):
            if prefetch:
                _wait(app, lambda i=index: loader.cached(paths[i]) is not None)
            else:
                loader._cache.clear()
            start = time.perf_counter()
            window.next_image()
            _wait(app, lambda i=index: window.image is not None and window.image.meta.path == paths[i]
                  and window.canvas.image_size is not None)
            viewport.grab()
            times.append(time.perf_counter() - start)
        results[prefetch] = times
    print("2. next photo (D) until the photo is painted, 2560x1600 / 1280x1024 JPEGs:")
    print(f"   neighbour prefetched: {percentiles(results[True])}")
    print(f"   cold (decode on key): {percentiles(results[False])}")


def _wait(app, condition, timeout: float = 30.0) -> None:
    end = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > end:
            raise TimeoutError("condition not met")
        app.processEvents()
        time.sleep(0.0005)


def vit_overhead(repeats: int) -> None:
    import torch

    from protolens.core.imageio import read_image
    from protolens.core.params import make_params
    from protolens.models.api import RunContext
    from protolens.models.registry import Registry
    from protolens.models.vit.loading import load_vit, vit_spec
    from protolens.models.vit.preprocess import preprocess
    from protolens.services.segment import drain

    registry = Registry.discover()
    backend = registry.create("vit-attention")
    params = make_params(registry.manifest("vit-attention").params, {"long_side": 518})
    rgb = read_image(PHOTO)
    ctx = RunContext(allow_random_weights=True)
    model = load_vit(params.model, None, "cpu")
    spec = vit_spec(model)
    x = torch.from_numpy(preprocess(rgb, 518, spec.patch_size, spec.mean, spec.std)[0])

    def end_to_end() -> None:
        result = drain(backend.run(rgb, params, ctx))
        result.heatmap.full_resolution()

    def bare() -> None:
        with torch.inference_mode():
            model.forward_features(x)

    end_to_end(), bare()
    e2e, fwd = [], []
    for _ in range(repeats):
        for fn, bucket in ((end_to_end, e2e), (bare, fwd)):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    ratio = np.median(e2e) / np.median(fwd)
    rows, cols = x.shape[2] // spec.patch_size, x.shape[3] // spec.patch_size
    print(f"3. vit-attention ViT-S/14 random weights, {rows}x{cols} patches, {torch.get_num_threads()} threads:")
    print(f"   end-to-end median {np.median(e2e) * 1e3:.1f} ms / bare forward median {np.median(fwd) * 1e3:.1f} ms"
          f" = {ratio:.3f}")


def torch_free_start() -> None:
    script = ("import sys; import protolens, protolens.cli; a = 'torch' in sys.modules\n"
              "from PySide6.QtWidgets import QApplication; app = QApplication([])\n"
              "from protolens.gui.main_window import MainWindow; w = MainWindow(); w.show(); app.processEvents()\n"
              "print(a, 'torch' in sys.modules)")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    took = time.perf_counter() - start
    print(f"4. torch imported by `import protolens`: {out[0]}; by showing the main window: {out[1]}"
          f" (process start to window shown: {took:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--moves", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    slider_latency(args.moves)
    vit_overhead(args.repeats)
    torch_free_start()


if __name__ == "__main__":
    main()
