"""Figures of the attention engine (issue 3), measured side by side in one run.

    .venv/bin/python benchmarks/bench_attention.py [--crops 1536] [--repeats 3]

1. Pipeline time / bare backbone forward over the same windows: moss_carpet.jpg (2560x1600) resized to long
   side 1036, six 518-px windows (overlap 0.25), ViT-S/14 random weights, CPU, for each aggregation mode.
2. Tile-token mode (prototype guidance step 3): 3072x2048 -> 48x32 = 1536 crops of 64 px upsampled to 224,
   batched (protolens) vs a naive per-crop loop, fp32: max |token difference|, time ratio, peak memory
   (each run in its own process; resident-set growth over a process that only loaded the model);
   then bf16 autocast vs fp32: speed-up and max deviation of tokens and of attention maps.
3. Re-aggregation from the feature cache (switch rollout -> received, and head/fusion changes) on the same
   photo: time from request to new heatmap.
4. On a GPU (when one is present): windows/s and the fraction of peak bf16 FLOP/s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "resources" / "samples" / "quadrats" / "moss_carpet.jpg"
MODEL = "vit_small_patch14_dinov2.lvd142m"


def _median(fn, repeats: int) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), value


def pipeline_ratio(repeats: int) -> None:
    import torch

    from protolens.core.imageio import read_image
    from protolens.core.params import make_params
    from protolens.core.tiling import plan_windows
    from protolens.models.api import RunContext
    from protolens.models.registry import Registry
    from protolens.models.vit.families import forward_tokens
    from protolens.models.vit.loading import load_vit, vit_spec
    from protolens.models.vit.preprocess import grid_size, normalise, resize_to_grid
    from protolens.services.segment import drain

    registry = Registry.discover()
    backend = registry.create("vit-attention")
    rgb = read_image(PHOTO)
    model = load_vit(MODEL, None, "cpu")
    spec = vit_spec(model)
    rows, cols = grid_size(*rgb.shape[:2], 1036, spec.patch_size)
    working = torch.from_numpy(normalise(resize_to_grid(rgb, rows, cols, spec.patch_size), spec.mean, spec.std))
    windows = plan_windows(rows * 14, cols * 14, 518, 0.25, 14)
    batch = 2

    def bare() -> None:
        with torch.inference_mode():
            for i in range(0, len(windows), batch):
                chunk = windows[i:i + batch]
                forward_tokens(model, torch.stack([working[:, w.top:w.top + w.height, w.left:w.left + w.width]
                                                   for w in chunk]))

    def pipeline(mode: str) -> object:
        params = make_params(registry.manifest("vit-attention").params,
                             {"mode": mode, "long_side": 1036, "tile_size": 518, "overlap": 0.25, "batch_size": batch})
        return drain(backend.run(rgb, params, RunContext(allow_random_weights=True)))  # no image id: no cache

    bare()
    print(f"1. pipeline / bare forward, {len(windows)} windows of 518 px ({(518 // 14) ** 2 + 1} tokens), "
          f"{torch.get_num_threads()} CPU threads (runs alternate; median of the paired ratios, since this "
          f"shared machine's speed drifts by 20% between minutes)")
    for mode in ("cls", "received", "rollout"):
        pairs = []
        for _ in range(repeats):
            base, _ = _median(bare, 1)
            seconds, _ = _median(lambda m=mode: pipeline(m), 1)
            pairs.append((seconds, base))
        ratios = [s / b for s, b in pairs]
        print(f"   {mode:9s} pipeline {np.median([s for s, _ in pairs]):6.2f} s  bare {np.median([b for _, b in pairs]):6.2f} s"
              f"  ratio {np.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")


class _RssSampler:
    """Samples this process's resident set every 5 ms; ``stop()`` returns the peak growth in bytes."""

    def __init__(self) -> None:
        import threading

        self.start = self.peak = self._rss()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * resource.getpagesize()

    def _loop(self) -> None:
        while not self._done.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return max(self.peak, self._rss()) - self.start


def _tile_child(args: argparse.Namespace) -> None:
    """Child process: one tile-token run; prints JSON (seconds, rss growth) and saves the tokens."""
    import torch

    from protolens.core.imageio import read_image
    from protolens.core.jobs import CancelToken
    from protolens.models.vit.engine import crop_cls_tokens, crop_token_grid, resize_to_crop_grid
    from protolens.models.vit.loading import load_vit, vit_spec
    from protolens.models.vit.preprocess import normalise
    from protolens.services.segment import drain

    rows, cols = args.grid
    model = load_vit(MODEL, None, "cpu")
    spec = vit_spec(model)
    image = read_image(PHOTO)
    sampler = _RssSampler()
    start = time.perf_counter()
    if args.mode == "loop":
        small = torch.from_numpy(normalise(resize_to_crop_grid(image, rows, cols, 64), spec.mean, spec.std))
        tokens = np.zeros((rows, cols, spec.embed_dim), np.float32)
        for r in range(rows):
            for c in range(cols):
                crop = small[:, r * 64:(r + 1) * 64, c * 64:(c + 1) * 64][None]
                tokens[r, c] = crop_cls_tokens(model, crop, 224)[0].numpy()
    else:
        tokens = drain(crop_token_grid(model, image, grid=(rows, cols), crop=64, input_size=224, mean=spec.mean,
                                       std=spec.std, batch_size=args.batch, device="cpu", dtype=args.dtype,
                                       cancel=CancelToken()))
    seconds = time.perf_counter() - start
    growth = sampler.stop()
    np.save(args.save, tokens)
    print(json.dumps({"seconds": seconds, "rss_growth_mb": growth / 2**20}))


def _run_child(mode: str, grid: tuple[int, int], batch: int, dtype: str, save: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--grid", str(grid[0]), str(grid[1]), "--batch", str(batch),
           "--dtype", dtype, "--save", str(save)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return json.loads(out)


def _grid(crops: int) -> tuple[int, int]:
    cols = 48 if crops >= 1536 else max(1, int(round((crops * 1.5) ** 0.5)))
    return max(1, crops // cols), cols


def tile_tokens(crops: int, bf16_crops: int) -> None:
    grid = _grid(crops)
    rows, cols = grid
    scratch = Path(tempfile.mkdtemp(prefix="protolens-bench-"))
    print(f"2. tile-token mode: {rows}x{cols} = {rows * cols} crops of 64 px upsampled to 224, ViT-S/14, fp32")
    loop = _run_child("loop", grid, 1, "float32", scratch / "loop.npy")
    batched = _run_child("batched", grid, 32, "float32", scratch / "b32.npy")
    diff = float(np.abs(np.load(scratch / "loop.npy") - np.load(scratch / "b32.npy")).max())
    print(f"   naive loop {loop['seconds']:.1f} s, batched (32) {batched['seconds']:.1f} s: "
          f"time ratio {batched['seconds'] / loop['seconds']:.3f}, max |token diff| {diff:.2e}")
    print(f"   peak memory growth: loop {loop['rss_growth_mb']:.0f} MB, batch 32 {batched['rss_growth_mb']:.0f} MB"
          f" (all upsampled crops at once would be {rows * cols * 3 * 224 * 224 * 4 / 1e9:.2f} GB)")
    other = _run_child("batched", grid, 8, "float32", scratch / "b8.npy")
    print(f"   batch   8: {other['seconds']:.1f} s, peak memory growth {other['rss_growth_mb']:.0f} MB")
    small = _grid(bf16_crops)
    fp32 = _run_child("batched", small, 32, "float32", scratch / "s32.npy")
    bf16 = _run_child("batched", small, 32, "bfloat16", scratch / "bf16.npy")
    reference = np.load(scratch / "s32.npy")
    deviation = float(np.abs(np.load(scratch / "bf16.npy") - reference).max())
    print(f"   bf16 autocast, {small[0] * small[1]} crops, batch 32: {bf16['seconds']:.1f} s vs fp32 "
          f"{fp32['seconds']:.1f} s, speed-up x{fp32['seconds'] / bf16['seconds']:.2f}, max |token deviation| "
          f"{deviation:.2e} (max |token| {np.abs(reference).max():.2f})")


def bf16_maps() -> None:
    from protolens.core.imageio import read_image
    from protolens.core.params import make_params
    from protolens.models.api import RunContext
    from protolens.models.registry import Registry
    from protolens.services.segment import drain

    registry = Registry.discover()
    backend = registry.create("vit-attention")
    rgb = read_image(PHOTO)
    out = {}
    for precision in ("float32", "bfloat16"):
        params = make_params(registry.manifest("vit-attention").params, {"mode": "received", "precision": precision})
        start = time.perf_counter()
        out[precision] = (drain(backend.run(rgb, params, RunContext(allow_random_weights=True))),
                          time.perf_counter() - start)
    fp32, bf16 = out["float32"][0], out["bfloat16"][0]
    deviation = float(np.abs(fp32.heatmap.values - bf16.heatmap.values).max())
    print(f"   bf16 attention maps (received, 1 window): heatmap max deviation {deviation:.2e} on [0, 1]; "
          f"time fp32 {out['float32'][1]:.2f} s vs bf16 {out['bfloat16'][1]:.2f} s")


def reaggregation() -> None:
    from protolens.core.cache import DiskCache
    from protolens.services.segment import Segmenter, drain, load_image

    image = load_image(PHOTO)
    segmenter = Segmenter(disk_cache=DiskCache(Path(tempfile.mkdtemp()) / "heatmaps"))
    # A discard keeps the chosen fusion's matrices in float32 (the first discard run computes them).
    drain(segmenter.run(image, "vit-attention", {"mode": "rollout", "discard_ratio": 0.05}, allow_random_weights=True))
    switches = []
    for head in range(6):
        for mode, extra in (("received", {"head": head}),
                            ("rollout", {"head_fusion": "mean", "discard_ratio": 0.15 + 0.1 * head})):
            start = time.perf_counter()
            outcome = drain(segmenter.run(image, "vit-attention", {"mode": mode, **extra}, allow_random_weights=True))
            seconds = time.perf_counter() - start
            assert outcome.result.info["features"] == "cache"
            switches.append((mode, seconds))
    to_received = [s for m, s in switches if m == "received"]
    to_rollout = [s for m, s in switches if m == "rollout"]
    print(f"3. re-aggregation from the feature cache, {PHOTO.name} (23x37 patches):")
    print(f"   rollout -> received: median {np.median(to_received) * 1e3:.1f} ms, max {max(to_received) * 1e3:.1f} ms")
    print(f"   received -> rollout (other discard ratio): median {np.median(to_rollout) * 1e3:.1f} ms")


def gpu_figures() -> None:
    import torch

    if not torch.cuda.is_available():
        print("4. no CUDA device here: GPU figures not measured")
        return
    from protolens.models.vit.families import forward_tokens
    from protolens.models.vit.loading import load_vit

    model = load_vit(MODEL, None, "cuda:0")
    x = torch.randn(64, 3, 518, 518, device="cuda:0")
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        forward_tokens(model, x)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(5):
            forward_tokens(model, x)
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / 5
    tokens = 1370
    flops = 64 * 12 * (2 * tokens * 12 * 384 ** 2 + 4 * tokens ** 2 * 384)
    print(f"4. {torch.cuda.get_device_name(0)}: {64 / seconds:.0f} windows/s at 518 px, "
          f"{flops / seconds / 1e12:.0f} TFLOP/s bf16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", type=int, default=1536)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bf16-crops", type=int, default=192)
    parser.add_argument("--parts", nargs="+", default=["pipeline", "tiles", "bf16", "cache", "gpu"],
                        choices=["pipeline", "tiles", "bf16", "cache", "gpu"], help="Which figures to measure.")
    parser.add_argument("--child", choices=["loop", "batched"], help=argparse.SUPPRESS)
    parser.add_argument("--grid", type=int, nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("PROTOLENS_CACHE_DIR", tempfile.mkdtemp(prefix="protolens-bench-cache-"))
    if args.child:
        args.mode = args.child
        _tile_child(args)
        return
    parts = {"pipeline": lambda: pipeline_ratio(args.repeats), "tiles": lambda: tile_tokens(args.crops, args.bf16_crops),
             "bf16": bf16_maps, "cache": reaggregation, "gpu": gpu_figures}
    for name in args.parts:
        parts[name]()


if __name__ == "__main__":
    main()
