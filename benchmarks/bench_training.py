"""Training figure of issue 10: time per epoch from cached tile tokens vs an epoch that reruns the backbone.

    .venv/bin/python benchmarks/bench_training.py [--epochs 3] [--photo-size 768x512] [--crop 64] [--crop-input 112]

Setup: the 4 sample quadrats, ViT-S/14 (``vit_small_patch14_dinov2.lvd142m``) random weights, CPU, fp32, photo
768x512 cut into 64-px crops (8 x 12 = 96 crops) fed at 112 px; narrow ViT of the paper's shape at ViT-S width
(depth 6, 12 heads, width 384, K = 64 random prototypes), accumulation 4 (one update per epoch), no probe.

Both arms run the same loop (:func:`protolens.models.training.train`, checkpoints included) side by side in one
process: (a) samples are the tokens held in memory (computed once by ``crop_tokens``, disk-cached: what protolens
does from the second epoch on and on every rerun); (b) every micro-batch reruns the backbone over the quadrat's
96 crops (the token step inside the loss, under ``no_grad``), as a loop without a token cache would. Printed:
median time per epoch of each, the speed-up, and the one-off cost of the tokens (cold, then from the disk cache).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
QUADRATS = ROOT / "resources" / "samples" / "quadrats"
MODEL = "vit_small_patch14_dinov2.lvd142m"


def epoch_times(arch, data, loss_fn, config, run) -> tuple[list[float], list[float], object]:
    """Train; per epoch, the wall time of its updates and of the whole epoch (updates + checkpoint files).

    An epoch starts when the previous one's ``metrics.jsonl`` line is written (after its weights and optimizer
    files) and its updates end when the loop asks for its indicators (just before its checkpoint is written).
    """
    import torch

    from protolens.models.prototype.narrow_vit import NarrowViT
    from protolens.models.training import train
    from protolens.services.segment import drain

    asked: list[float] = []

    def evaluate(model, epoch):
        asked.append(time.time())
        return {}

    torch.manual_seed(0)
    start = time.time()
    summary = drain(train(NarrowViT(arch), data, loss_fn, config, run, device="cpu", run_config={"arm": str(run.path)},
                          evaluate=evaluate))
    ends = [r["time"] for r in run.read_metrics()[0] if r["type"] == "epoch"]
    starts = [start, *ends[:-1]]
    return ([a - s for s, a in zip(starts, asked, strict=True)], [e - s for s, e in zip(starts, ends, strict=True)],
            summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--photo-size", default="768x512")
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--crop-input", type=int, default=112)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-training-"))
    os.environ["PROTOLENS_CACHE_DIR"] = str(work / "cache")

    import torch
    import torch.nn.functional as F

    from protolens.core.jobs import CancelToken
    from protolens.core.runs import RunFolder
    from protolens.models.prototype.narrow_vit import NarrowViTConfig
    from protolens.models.registry import Registry
    from protolens.models.training import TrainConfig
    from protolens.models.vit.engine import crop_token_grid
    from protolens.models.vit.loading import load_vit, vit_spec
    from protolens.services.pipeline import Tiling
    from protolens.services.segment import Segmenter, drain, load_image
    from protolens.services.training import quadrat_paths, quadrat_tokens

    tiling = Tiling.parse(args.photo_size, args.crop, args.crop_input)
    rows, cols = tiling.grid
    segmenter = Segmenter(Registry.discover(), device="cpu", disk_cache=None)
    paths = quadrat_paths(QUADRATS)
    images = [load_image(p) for p in paths]

    def tokens_now():
        return drain(quadrat_tokens(segmenter, paths, tiling, backbone=MODEL, weights_path=None, precision="float32",
                                    allow_random_weights=True, cancel=CancelToken()))

    drain(quadrat_tokens(segmenter, paths[:1], Tiling((tiling.crop, tiling.crop), tiling.crop, 28), backbone=MODEL,
                         weights_path=None, precision="float32", allow_random_weights=True, cancel=CancelToken()))
    start = time.perf_counter()
    cached = tokens_now()  # cold: runs the backbone, fills the disk cache
    cold = time.perf_counter() - start
    start = time.perf_counter()
    tokens_now()
    warm = time.perf_counter() - start

    dim = cached.tokens[0].shape[-1]
    prototypes = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 64, dim)).astype(np.float32))
    arch = NarrowViTConfig(grid=(rows, cols), prototypes=64, token_dim=dim, depth=6, heads=12)
    config = TrainConfig(epochs=args.epochs, lr=1e-4, accumulation=4, precision="float32")
    backbone = load_vit(MODEL, None, "cpu")
    spec = vit_spec(backbone)

    def backbone_tokens(image) -> torch.Tensor:
        with torch.no_grad():
            grid = drain(crop_token_grid(backbone, image.rgb, grid=(rows, cols), crop=tiling.crop,
                                         input_size=tiling.crop_input, mean=spec.mean, std=spec.std, batch_size=32,
                                         device="cpu", dtype="float32", cancel=CancelToken()))
        return torch.from_numpy(grid.reshape(1, rows * cols, dim))

    def from_cache(model, sample, device):
        return F.mse_loss(model(sample), prototypes)

    def rerun_backbone(model, image, device):
        return F.mse_loss(model(backbone_tokens(image)), prototypes)

    agreement = max(float(np.abs(backbone_tokens(im).numpy().reshape(rows, cols, dim) - t).max())
                    for im, t in zip(images, cached.tokens, strict=True))
    samples = [torch.from_numpy(t.reshape(1, rows * cols, dim)) for t in cached.tokens]
    results = {}
    for name, data, loss_fn in (("cached tokens", samples, from_cache), ("backbone rerun", images, rerun_backbone)):
        updates, times, summary = epoch_times(arch, data, loss_fn, config, RunFolder(work / name))
        results[name] = (float(np.median(times)), times, float(np.median(updates)), summary.loss)

    print(f"setup: {len(paths)} quadrats, {args.photo_size} -> {rows}x{cols} = {rows * cols} crops of {tiling.crop} px "
          f"at {tiling.crop_input} px, {MODEL} random weights, CPU fp32 ({torch.get_num_threads()} threads), "
          f"narrow ViT depth 6 / 12 heads / width {dim}, K 64, accumulation 4, {args.epochs} epochs")
    print(f"tile tokens, all quadrats: cold {cold:.2f} s (backbone), from the disk cache {warm:.3f} s; "
          f"backbone rerun vs cached tokens max |diff| {agreement:.2e}")
    for name, (median, times, updates, loss) in results.items():
        print(f"{name:>15}: {median:.3f} s per epoch (median; epochs {', '.join(f'{t:.3f}' for t in times)}), "
              f"of which forward/backward/updates {updates:.3f} s, the rest writing the checkpoint; "
              f"final loss {loss:.6g}")
    speedup = results["backbone rerun"][0] / results["cached tokens"][0]
    compute = results["backbone rerun"][2] / results["cached tokens"][2]
    print(f"speed-up of an epoch from cached tokens: {speedup:.1f}x ({compute:.1f}x without the checkpoint writes)")


if __name__ == "__main__":
    main()
