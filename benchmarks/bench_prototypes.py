"""Figures of `protolens prototypes build` (issue 10, item 1).

    python benchmarks/bench_prototypes.py [--images 64] [--input 224] [--device cpu] [--precision auto]

Prints:
1. embedding throughput (images/s) of the service (decode threads + batched forwards + shard writes) on
   copies of the sample photos, ViT-S/14 random weights, against a naive loop (decode, resize, one forward
   per image) and against the bare batched forwards alone;
2. the time of a rerun that finds every image in the shards (no forward);
3. K-Means on synthetic float32 data: faiss against scikit-learn, same n, d, K, niter, nredo.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "resources" / "samples"
MODEL = "vit_small_patch14_dinov2.lvd142m"


def make_images(folder: Path, count: int) -> list[Path]:
    """``count`` photos in two class folders, copied round-robin from the samples (birds and quadrats)."""
    sources = sorted((SAMPLES / "birds").iterdir()) + sorted((SAMPLES / "quadrats").iterdir())
    paths = []
    for i in range(count):
        source = sources[i % len(sources)]
        target = folder / source.parent.name / f"{i:04d}_{source.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
        paths.append(target)
    return paths


def naive(paths: list[Path], input_size: int, device: str) -> float:
    """Seconds for decode + resize + one forward per image, serially."""
    import torch

    from protolens.core.imageio import read_image
    from protolens.models.embeddings import resize_centre_crop
    from protolens.models.vit.families import forward_tokens
    from protolens.models.vit.loading import load_vit, vit_spec
    from protolens.models.vit.preprocess import normalise

    model = load_vit(MODEL, None, device)
    spec = vit_spec(model)
    start = time.perf_counter()
    with torch.inference_mode():
        for path in paths:
            x = normalise(resize_centre_crop(read_image(path), input_size), spec.mean, spec.std)
            forward_tokens(model, torch.from_numpy(x[None]).to(device))[:, 0].cpu()
    return time.perf_counter() - start


def bare_forwards(count: int, input_size: int, batch: int, device: str) -> float:
    """Seconds for the forwards alone on ready inputs, batched like the service."""
    import torch

    from protolens.models.vit.families import forward_tokens
    from protolens.models.vit.loading import load_vit

    model = load_vit(MODEL, None, device)
    x = torch.randn(batch, 3, input_size, input_size, device=device)
    start = time.perf_counter()
    with torch.inference_mode():
        for done in range(0, count, batch):
            forward_tokens(model, x[:min(batch, count - done)])[:, 0].cpu()
    return time.perf_counter() - start


def service(folder: Path, out: Path, args: argparse.Namespace) -> tuple[float, object]:
    from protolens.models.registry import Registry
    from protolens.services.prototypes import build_prototypes
    from protolens.services.segment import Segmenter, drain

    segmenter = Segmenter(Registry.discover(), device=args.device, disk_cache=None)
    start = time.perf_counter()
    summary = drain(build_prototypes(segmenter, folder, out, backbone=MODEL, k=4, input_size=args.input,
                                     batch_size=args.batch_size, precision=args.precision, niter=20, nredo=2,
                                     allow_random_weights=True))
    return time.perf_counter() - start, summary


def kmeans_figures(n: int, d: int, k: int) -> None:
    from protolens.models.kmeans import faiss_available, kmeans

    x = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
    for library in (["faiss"] if faiss_available() else []) + ["sklearn"]:
        start = time.perf_counter()
        result = kmeans(x, k, niter=50, nredo=3, library=library)
        print(f"k-means {library:8s} n {n} d {d} K {k} niter 50 nredo 3: {time.perf_counter() - start:6.2f} s, "
              f"inertia {result.inertia:.6g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--input", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--kmeans-n", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        paths = make_images(folder, args.images)
        bare_forwards(args.batch_size, args.input, args.batch_size, args.device)  # warm-up, model built
        seconds, summary = service(folder, Path(tmp) / "out" / "p.safetensors", args)
        bare = bare_forwards(args.images, args.input, args.batch_size, args.device)
        serial = naive(paths, args.input, args.device)
        print(f"{args.images} images at {args.input} px on {args.device}: service {seconds:6.2f} s "
              f"({args.images / seconds:7.1f} images/s, incl. k-means), bare batched forwards {bare:6.2f} s "
              f"({args.images / bare:7.1f}/s), naive per-image loop {serial:6.2f} s ({args.images / serial:7.1f}/s)")
        rerun, again = service(folder, Path(tmp) / "out" / "p.safetensors", args)
        print(f"rerun with every image in the shards: {rerun:6.2f} s, embedded {again.embedded}, "
              f"reused {again.reused} (first run embedded {summary.embedded})")
    kmeans_figures(args.kmeans_n, 384, 50)


if __name__ == "__main__":
    main()
