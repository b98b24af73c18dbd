"""SVIP patch selection (issue 13): a trained selector vs the rollout pass on the same photo, side by side.

    .venv/bin/python benchmarks/bench_patch_selection.py [--quick] [--model NAME] [--repeats 7]

1. Rollout targets (SVIP rollout, 2x2 super-patch scores grouped like the features, top M) and raw patch
   embeddings of the sample photos (resources/samples/*), ViT with RANDOM weights (nothing is downloaded), CPU.
2. A PatchSelector (4d -> 512 -> 1) fitted to the targets of all photos but the held-out ones (Adam, BCE).
3. On each held-out photo: median time of the rollout pass (full forward with attention capture + rollout
   + grouping + top-M) vs the selector pass (patch embedding + MLP + top-M), the speed-up, and the IoU of the
   two kept sets (agreement). Random backbone weights make the rollout targets close to arbitrary, so the
   agreement here measures the mechanics, not what a selector learns from a trained ViT.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from protolens.core.imageio import read_image
from protolens.core.super_patches import kept_iou, selection_targets, super_patch_scores, top_m
from protolens.models.patch_selector import (
    PatchSelector,
    image_features,
    predict_not_kept,
    selector_features,
    selector_loss,
    stack_samples,
)
from protolens.models.vit.loading import create_vit, vit_spec
from protolens.models.vit.preprocess import normalise, resize_to_grid

ROOT = Path(__file__).resolve().parents[1]


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="ViT-S/16, 6 photos, fewer repeats and steps")
    parser.add_argument("--model", default=None, help="timm ViT (default: vit_base_patch16_224, SVIP's ViT-B/16)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--keep", type=int, default=40)
    args = parser.parse_args()
    name = args.model or ("vit_small_patch16_224" if args.quick else "vit_base_patch16_224")
    repeats = args.repeats or (3 if args.quick else 7)
    torch.manual_seed(0)
    model = create_vit(name).eval()
    spec = vit_spec(model)
    grid = 224 // spec.patch_size
    photos = sorted(p for p in (ROOT / "resources" / "samples").rglob("*") if p.suffix in (".jpg", ".png"))
    photos = photos[:6] if args.quick else photos
    inputs = [normalise(resize_to_grid(read_image(p)[..., :3], grid, grid, spec.patch_size), spec.mean, spec.std)
              for p in photos]
    print(f"{name} random weights, 224 px -> {grid}x{grid} patches -> {(grid // 2) ** 2} super-patches, keep "
          f"{args.keep}, {len(photos)} photos, CPU threads {torch.get_num_threads()}")
    data = [image_features(model, x, rollout=True) for x in inputs]
    held = max(1, len(photos) // 4)
    train = data[:-held]
    samples = stack_samples([selector_features(e) for _, e in train],
                            [selection_targets(super_patch_scores(s), args.keep) for s, _ in train])
    selector = PatchSelector(4 * spec.embed_dim)
    optimizer = torch.optim.Adam(selector.parameters(), lr=1e-3)
    steps = 100 if args.quick else 300
    for _ in range(steps):
        optimizer.zero_grad()
        loss = sum(selector_loss(selector, s, "cpu") for s in samples) / len(samples)
        loss.backward()
        optimizer.step()
    selector.eval()
    print(f"selector fitted on {len(train)} photos, {steps} full-batch Adam steps, final BCE {loss.item():.4f}")
    print(f"{'photo':28s} {'rollout ms':>11s} {'selector ms':>12s} {'speed-up':>9s} {'kept IoU':>9s}")
    ratios, ious = [], []
    for path, x in zip(photos[-held:], inputs[-held:], strict=True):
        def rollout_pass(x=x):
            scores, _ = image_features(model, x, rollout=True)
            return top_m(super_patch_scores(scores), args.keep)

        def selector_pass(x=x):
            _, embeddings = image_features(model, x, rollout=False)
            return top_m(1.0 - predict_not_kept(selector, embeddings), args.keep)

        t_rollout, t_selector = _median_seconds(rollout_pass, repeats), _median_seconds(selector_pass, repeats)
        iou = kept_iou(rollout_pass(), selector_pass())
        ratios.append(t_rollout / t_selector)
        ious.append(iou)
        print(f"{path.name[:28]:28s} {t_rollout * 1e3:11.1f} {t_selector * 1e3:12.2f} {ratios[-1]:8.1f}x {iou:9.3f}")
    print(f"median speed-up {statistics.median(ratios):.1f}x, mean kept-set IoU {np.mean(ious):.3f} "
          f"(chance for M={args.keep} of {(grid // 2) ** 2}: about "
          f"{args.keep / (2 * (grid // 2) ** 2 - args.keep):.3f})")


if __name__ == "__main__":
    main()
