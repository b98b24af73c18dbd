"""Figures of the clip-dense backend (issue 12), measured side by side in one run.

    .venv/bin/python benchmarks/bench_clip_dense.py [--quick] [--repeats 3] [--short-side 336]

moss_carpet.jpg (2560x1600), 10 classes, CPU, random open_clip ViT-B-16 weights (no download):

1. Text side, reported separately: cold (in-memory and disk caches empty: 10 classes x 80 templates through the
   text tower), cached in memory (the LRU), and cached on disk only (memory cleared, DiskCache warm).
2. Pipeline / bare image forward over the same windows: the whole clip-dense run (backend.run: resize, window
   crops, the mode's last block, ln_post + proj on every token, logits, window averaging, softmax, label map;
   text cached) divided by the bare CLIP image forward (``model.encode_image``, unmodified) over the SAME window
   tensors (built beforehand, not timed), in batches of the engine's size. Target: <= 1.2. Pipeline and bare
   forward alternate, medians over ``--repeats``; reported as wall-clock time and as this process's CPU time
   (``time.process_time``, all threads), which other load on a shared machine disturbs less.

``--quick``: short side 224 (3 windows), 1 repeat of the text side, 2 of the ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PHOTO = ROOT / "resources" / "samples" / "quadrats" / "moss_carpet.jpg"
CLASSES = """moss
grass
bare soil
leaf litter
clover
lichen
dandelion
fern
stone
twig
"""
TARGET = 1.2


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def text_side(model, prompts, repeats: int) -> dict[str, float]:
    """Median seconds of encode_texts: cold, memory-cached, disk-cached (fresh DiskCache per repeat)."""
    from protolens.core.cache import DiskCache
    from protolens.models.clip.text import TextEncoderStats, encode_texts, reset_text_stats

    def encode(cache):
        stats = TextEncoderStats()
        seconds, _ = _timed(lambda: encode_texts(model, prompts, device="cpu", cache=cache, stats=stats))
        return seconds, stats

    cold, memory, disk = [], [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as folder:
            cache = DiskCache(Path(folder) / "clip_text", 64 * 1024**2)
            reset_text_stats(clear_cache=True)
            seconds, stats = encode(cache)
            assert stats.encoded == len(prompts) and stats.cached == 0, stats
            cold.append(seconds)
            seconds, stats = encode(cache)
            assert stats.cached == len(prompts) and stats.disk == 0, stats
            memory.append(seconds)
            reset_text_stats(clear_cache=True)
            seconds, stats = encode(cache)
            assert stats.disk == len(prompts), stats
            disk.append(seconds)
    return {"cold": float(np.median(cold)), "memory": float(np.median(memory)), "disk": float(np.median(disk))}


def window_tensors(model, rgb: np.ndarray, short_side: int, window: int, stride: int, batch: int):
    """The engine's window tensors (same resize, boxes and normalisation), in batches of ``batch``."""
    import torch

    from protolens.models.clip.dense import _mean_std, resize_short_side, window_boxes, window_pixels

    mean, std = _mean_std(model.visual)
    patch = int(model.visual.conv1.kernel_size[0])
    resized = resize_short_side(rgb, short_side)
    boxes = window_boxes(resized.shape[1], resized.shape[0], window, stride)
    crops = [window_pixels(resized[y0:y1, x0:x1], patch, mean, std) for x0, y0, x1, y1 in boxes]
    return [torch.stack(crops[i:i + batch]) for i in range(0, len(crops), batch)], boxes


def _timed_cpu(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def ratio(model, rgb: np.ndarray, params: dict, repeats: int) -> dict[str, float]:
    """Median seconds of the clip-dense run (text cached) and of the bare forward over the same windows."""
    import torch

    from protolens.core.params import make_params
    from protolens.models.api import RunContext
    from protolens.models.clip.dense import WINDOW_BATCH
    from protolens.models.registry import Registry
    from protolens.services.segment import drain

    registry = Registry.discover()
    backend = registry.create("clip-dense")
    values = make_params(registry.manifest("clip-dense").params, params)
    ctx = RunContext(device="cpu", dtype="float32", allow_random_weights=True, cache_dir=None)
    batches, boxes = window_tensors(model, rgb, values.short_side, values.window, values.stride, WINDOW_BATCH)

    def bare() -> None:
        with torch.no_grad():
            for pixels in batches:
                model.encode_image(pixels)

    result = drain(backend.run(rgb, values, ctx))  # warm-up: model built, text cached
    assert result.info["text"]["encoded"] == 0 and len(result.info["windows"]) == len(boxes)
    bare()
    pipe_times, bare_times = [], []
    for _ in range(repeats):
        pipe_times.append(_timed_cpu(lambda: drain(backend.run(rgb, values, ctx))))
        bare_times.append(_timed_cpu(bare))
    pipe, base = np.median(pipe_times, axis=0), np.median(bare_times, axis=0)
    return {"pipeline": float(pipe[0]), "bare": float(base[0]), "ratio": float(pipe[0] / base[0]),
            "pipeline_cpu": float(pipe[1]), "bare_cpu": float(base[1]), "ratio_cpu": float(pipe[1] / base[1]),
            "windows": len(boxes), "grid": result.info["grid"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short side 224, fewer repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--short-side", type=int, default=None)
    parser.add_argument("--mode", default="sclip", choices=["sclip", "maskclip", "clearclip"])
    args = parser.parse_args()
    short_side = args.short_side or (224 if args.quick else 336)
    repeats = args.repeats or (2 if args.quick else 3)

    import torch

    from protolens.core.imageio import read_image
    from protolens.core.prompts import parse_class_list
    from protolens.models.clip.loading import load_clip

    rgb = read_image(PHOTO)
    prompts = parse_class_list(CLASSES)
    print(f"clip-dense benchmark: {PHOTO.name} {rgb.shape[1]}x{rgb.shape[0]}, {len(prompts)} classes, CPU "
          f"({torch.get_num_threads()} threads), random ViT-B-16 weights, mode {args.mode}")
    seconds, model = _timed(lambda: load_clip("ViT-B-16", None, "cpu"))
    print(f"model build (random init): {seconds:.2f} s")
    text = text_side(model, prompts, 1 if args.quick else 2)
    print(f"text side, {len(prompts)} classes x 80 templates: cold {text['cold']:.2f} s | cached in memory "
          f"{text['memory'] * 1e3:.2f} ms | cached on disk {text['disk'] * 1e3:.2f} ms")
    params = {"classes": CLASSES, "mode": args.mode, "short_side": short_side, "window": 224, "stride": 112}
    figures = ratio(model, rgb, params, repeats)
    print(f"short side {short_side}: {figures['windows']} windows of 224 px, stride 112, maps {figures['grid']}")
    for label, key in (("wall-clock", ""), ("CPU time", "_cpu")):
        value = figures["ratio" + key]
        verdict = "OK" if value <= TARGET else "ABOVE TARGET"
        print(f"{label}: pipeline (text cached) median {figures['pipeline' + key]:.3f} s | bare encode_image over "
              f"the same windows median {figures['bare' + key]:.3f} s | ratio {value:.3f} (target <= {TARGET}: "
              f"{verdict}; {repeats} repeats)")


if __name__ == "__main__":
    main()
