"""Figures of the mask editor and exports (issue 4), measured in one run.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_editor.py

1. Brush stroke on a 5640x3172 photo: time per mouse-move event, from the event to the repainted view
   (a synchronous render of the viewport), p50/p95 over a 300-event stroke; next to it the cost of the
   same stroke drawn by re-colouring the whole label map per event, for orientation.
2. Undo of a flood fill covering the whole 5640x3172 map (to the repainted view), and the history's memory
   after 40 edits against its cap.
3. Export of a folder of 20 photos (2560x1600 and 1280x1024 quadrats) in all formats (COCO as RLE, then
   as polygons).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
SCRATCH = Path(tempfile.mkdtemp(prefix="protolens-bench-editor-"))
os.environ.setdefault("PROTOLENS_SETTINGS", str(SCRATCH / "settings.ini"))
os.environ.setdefault("PROTOLENS_CACHE_DIR", str(SCRATCH / "cache"))
ROOT = Path(__file__).resolve().parents[1]
QUADRATS = ROOT / "resources" / "samples" / "quadrats"


def percentiles(samples: list[float]) -> str:
    ms = np.asarray(samples) * 1e3
    return f"p50 {np.percentile(ms, 50):6.2f} ms  p95 {np.percentile(ms, 95):6.2f} ms"


def big_photo() -> Path:
    import cv2

    folder = SCRATCH / "big"
    folder.mkdir()
    image = cv2.imread(str(QUADRATS / "moss_carpet.jpg"))
    cv2.imwrite(str(folder / "quadrat_5640x3172.jpg"), cv2.resize(image, (5640, 3172), interpolation=cv2.INTER_CUBIC))
    return folder


def _wait(app, condition, timeout: float = 60.0) -> None:
    end = time.time() + timeout
    while not condition():
        if time.time() > end:
            raise TimeoutError("condition not met")
        app.processEvents()
        time.sleep(0.002)


def editor_figures() -> None:
    from PySide6.QtCore import QEvent, QPointF, Qt
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    from protolens.core.editing import flood_fill
    from protolens.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication([])
    window = MainWindow()
    window.backend_panel.auto_run.setChecked(False)
    window.resize(1400, 900)
    window.show()
    window.open_path(big_photo())
    _wait(app, lambda: window.image is not None)
    window.edit.start("empty")
    _wait(app, lambda: window.edit.editor.active)
    editor, viewport = window.edit.editor, window.canvas.viewport()
    window.edit.set_tool("brush")
    window.edit.panel.radius.setValue(25)
    viewport.grab()

    def send(kind, x: float, y: float, buttons) -> None:
        point = window.canvas.mapFromScene(window.canvas.view.mapViewToScene(QPointF(x, y)))
        button = Qt.MouseButton.NoButton if kind == QEvent.Type.MouseMove else Qt.MouseButton.LeftButton
        QApplication.sendEvent(viewport, QMouseEvent(kind, QPointF(point), QPointF(viewport.mapToGlobal(point)),
                                                     button, buttons, Qt.KeyboardModifier.NoModifier))

    held = Qt.MouseButton.LeftButton
    xs = np.linspace(300, 5300, 300)
    ys = 1586 + 900 * np.sin(np.linspace(0, 6, 300))
    send(QEvent.Type.MouseButtonPress, xs[0], ys[0], held)
    moves = []
    for x, y in zip(xs[1:], ys[1:], strict=True):
        start = time.perf_counter()
        send(QEvent.Type.MouseMove, x, y, held)
        viewport.grab()
        moves.append(time.perf_counter() - start)
    send(QEvent.Type.MouseButtonRelease, xs[-1], ys[-1], Qt.MouseButton.NoButton)
    labels = editor.annotation.labels
    painted = int((labels == 1).sum())
    print(f"1. brush stroke on a 5640x3172 label map (radius 25 px, {len(moves)} mouse moves, {painted} px painted,"
          f" view {viewport.width()}x{viewport.height()}):")
    print(f"   per mouse-move event to repainted view: {percentiles(moves)}")
    lut = np.random.default_rng(0).integers(0, 255, (256, 4), dtype=np.uint8)
    naive = []
    for _ in range(5):
        start = time.perf_counter()
        lut[labels]  # re-colour the whole map, as a full-image overlay would on every event
        naive.append(time.perf_counter() - start)
    print(f"   for orientation, re-colouring the whole map once: {percentiles(naive)}")

    editor.history.begin(labels)
    region = flood_fill(labels, (10, 10), 1 if labels[10, 10] != 1 else 0)
    editor.history.commit(labels, region, "fill")
    editor.layer.changed(region)
    viewport.grab()
    start = time.perf_counter()
    editor.undo()
    viewport.grab()
    undo = time.perf_counter() - start
    print(f"2. undo of a flood fill over {region.area / 1e6:.1f} Mpx: {undo * 1e3:.1f} ms (to the repainted view)")
    rng = np.random.default_rng(1)
    for step in range(40):
        editor.history.begin(labels)
        x, y = rng.uniform(0, 5640), rng.uniform(0, 3172)
        editor._region = None
        editor._last = None
        editor._paint_to(x, y)
        editor._paint_to(x + rng.uniform(-800, 800), y + rng.uniform(-800, 800))
        editor._finish(f"stroke {step}")
    print(f"   history after {len(editor.history.labels)} steps: {editor.history.nbytes / 2**20:.2f} MiB "
          f"(cap {editor.history.max_bytes / 2**20:.0f} MiB, steps dropped {editor.history.dropped})")
    window.edit.discard()
    window.close()


def export_figures() -> None:
    from protolens.core.labels import Project
    from protolens.core.store import ResultStore
    from protolens.services.annotations import FORMATS, export_masks
    from protolens.services.batch import segment_paths
    from protolens.services.segment import Segmenter

    folder = SCRATCH / "folder20"
    folder.mkdir()
    photos = sorted(QUADRATS.glob("*.jpg"))
    for i in range(20):
        shutil.copy(photos[i % len(photos)], folder / f"quadrat_{i:02d}{photos[i % len(photos)].suffix}")
    segment_paths([folder], "vegetation-index", {"smoothing": 2.0}, segmenter=Segmenter(disk_cache=None),
                  store=ResultStore())
    for encoding in ("rle", "polygon"):
        out = SCRATCH / f"export-{encoding}"
        summary = export_masks([folder], FORMATS, out, store=ResultStore(), project=Project(), coco_encoding=encoding)
        size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
        print(f"3. export of {summary.exported} photos in all formats (COCO {encoding}): {summary.seconds:.1f} s, "
              f"{size:.0f} MiB written")


if __name__ == "__main__":
    editor_figures()
    export_figures()
