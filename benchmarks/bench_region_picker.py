"""Figures of click-to-accept object regions in the mask editor (issue 12 item 4), measured side by side in one
run on a 2560x1600 quadrat (resources/samples/quadrats/moss_carpet.jpg):

1. Hover: the editor's hover handler (id-map look-up + visibility toggles of the prebuilt highlight items),
   alone, then to the repainted view as Qt does it (the dirty rectangles, processed by ``processEvents``), and
   with a forced full repaint of the 1400x900 viewport; p50/p95 over random cursor positions (most moves change
   the highlighted region: the worst case). Next to them, a full repaint with nothing changed (the floor any
   edit pays). Target: <= 16 ms p95.
2. Click-to-accept: one accepted (or, every other click, removed) region painted into the 2560x1600 label map,
   recorded as one undo step, alone and to the repainted view (dirty rectangles). Target: <= 16 ms p95.
3. One n_o slider move, as the editor does it (``gui/region_source.py``): first the preview, the patch-grid
   partition of the cached tokens (``regions_from_features(refined=False)``) plus the overlay rebuild (outlines
   + one highlight item per region), which is what the slider shows; then the refined stage, the same with the
   guided-filter edge refinement, which replaces it a moment later. Target: <= 100 ms (the preview).

The cached tokens are stand-ins with the grid of the object-regions default (ViT/16 at long side 896: 56x35
patches, 384 dims): a fixed random projection of each patch's pixels, so regions follow the photo's colours;
no model runs here (the slider never runs one either).

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_region_picker.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "resources" / "samples" / "quadrats" / "moss_carpet.jpg"


def stand_in_tokens(rgb: np.ndarray, long_side: int = 896, patch: int = 16, dim: int = 384) -> np.ndarray:
    """(rows, cols, dim) float32: each patch's pixels (long side resized to ``long_side``) through a fixed
    random projection (seed 0)."""
    import cv2

    height, width = rgb.shape[:2]
    scale = long_side / max(height, width)
    rows, cols = max(1, round(height * scale / patch)), max(1, round(width * scale / patch))
    small = cv2.resize(rgb, (cols * patch, rows * patch), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    patches = small.reshape(rows, patch, cols, patch, 3).transpose(0, 2, 1, 3, 4).reshape(rows, cols, -1)
    projection = np.random.default_rng(0).standard_normal((patches.shape[-1], dim)).astype(np.float32)
    return np.tanh(patches @ projection / np.sqrt(patches.shape[-1])).astype(np.float32)


def stats(samples: list[float]) -> tuple[float, float]:
    ms = np.asarray(samples) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    args = parser.parse_args()
    hovers, clicks, moves = (100, 20, 3) if args.quick else (500, 100, 10)

    from PySide6.QtWidgets import QApplication

    from protolens.core.annotation import Annotation
    from protolens.core.imageio import read_image
    from protolens.gui.canvas import ImageCanvas
    from protolens.gui.editor import Editor
    from protolens.gui.label_layer import LabelLayerItem
    from protolens.gui.region_picker import RegionPicker
    from protolens.services.regions import regions_from_features

    app = QApplication.instance() or QApplication([])
    rgb = read_image(PHOTO)
    height, width = rgb.shape[:2]
    canvas = ImageCanvas()
    canvas.resize(1400, 900)
    canvas.show()
    canvas.set_photo(rgb)
    layer = LabelLayerItem()
    layer.setZValue(5)
    canvas.view.addItem(layer)
    editor = Editor(layer)
    editor.picker = RegionPicker(canvas.view)
    editor.set_annotation(Annotation.empty(height, width))
    layer.tool_active = True
    editor.set_tool("regions")
    tokens = stand_in_tokens(rgb)
    regions_from_features(tokens, rgb, 6, 0, 0.0)  # warm-up (OpenCV, any per-photo preparation)
    editor.picker.set_regions(regions_from_features(tokens, rgb, 8, 0, 0.0), (height, width))
    app.processEvents()
    viewport = canvas.viewport()
    rng = np.random.default_rng(1)

    def timed(action, n: int, full: bool = False) -> tuple[list[float], list[float]]:
        alone, painted = [], []
        for i in range(n):
            x, y = rng.uniform(0, width), rng.uniform(0, height)
            app.processEvents()
            t0 = time.perf_counter()
            action(x, y, i)
            t1 = time.perf_counter()
            viewport.repaint() if full else app.processEvents()
            t2 = time.perf_counter()
            alone.append(t1 - t0)
            painted.append(t2 - t0)
        return alone, painted

    hover_alone, hover_painted = timed(lambda x, y, i: editor._hover(x, y), hovers)
    _, hover_full = timed(lambda x, y, i: editor._hover(x, y), hovers, full=True)
    _, floor = timed(lambda x, y, i: None, hovers // 2, full=True)
    click_alone, click_painted = timed(lambda x, y, i: editor.accept_region(x, y, remove=i % 2 == 1), clicks)
    stages: dict[bool, tuple[list[float], list[float]]] = {False: ([], []), True: ([], [])}
    for i in range(moves):
        n = 5 + i % 6
        for refined in (False, True):
            t0 = time.perf_counter()
            ids = regions_from_features(tokens, rgb, n, 0, 0.0, refined=refined)
            t1 = time.perf_counter()
            editor.picker.set_regions(ids, (height, width))
            t2 = time.perf_counter()
            stages[refined][0].append(t1 - t0)
            stages[refined][1].append(t2 - t1)
    recompute, rebuild = stages[False]
    slider = [a + b for a, b in zip(recompute, rebuild, strict=True)]
    refined_total = [a + b for a, b in zip(*stages[True], strict=True)]

    print(f"photo {width}x{height}, tokens {tokens.shape[0]}x{tokens.shape[1]}x{tokens.shape[2]}, "
          f"id map {ids.shape[1]}x{ids.shape[0]}, {hovers} hovers, {clicks} clicks, {moves} slider moves")
    print(f"{'':34s} {'p50 ms':>8s} {'p95 ms':>8s} {'target':>8s} {'p95/target':>10s}")
    rows = [("hover handler", hover_alone, 16), ("hover to repainted view", hover_painted, 16),
            ("hover + full repaint 1400x900", hover_full, None), ("full repaint, nothing changed", floor, None),
            ("click-to-accept (1 undo step)", click_alone, 16), ("click-to-accept to repainted view",
                                                                 click_painted, 16),
            ("slider preview: partition", recompute, None), ("slider preview: overlay rebuild", rebuild, None),
            ("slider move (preview shown)", slider, 100),
            ("slider refined: partition + edges", stages[True][0], None),
            ("slider refined: overlay rebuild", stages[True][1], None),
            ("slider refined total", refined_total, None)]
    for name, samples, target in rows:
        p50, p95 = stats(samples)
        ratio = f"{p95 / target:10.2f}" if target else f"{'':10s}"
        print(f"{name:34s} {p50:8.2f} {p95:8.2f} {target or '':>8} {ratio}")
    editor.history.settle(wait=True)
    print(f"undo history after {clicks} accepts: {len(editor.history.labels)} steps, "
          f"{editor.history.nbytes / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
