"""Figures of the Ray executor (issue 14), measured side by side in one run.

    .venv/bin/python benchmarks/bench_ray_executor.py [--photos 100] [--backends vegetation-index,vit-attention]

Makes ``--photos`` distinct photos (the four sample quadrats, each copy with one pixel changed so that no two
share a content hash and nothing comes from a cache), then per backend runs, in this order and each with a
fresh cache folder:

1. local: :func:`protolens.services.batch.segment_paths` in this process, torch on 1 thread;
2. ray, 1 worker (1 CPU, torch on 1 thread), on a private local Ray instance;
3. ray, 2 workers (1 CPU each).

Prints per configuration the steady-state seconds per photo (from the first finished photo to the last, which
leaves out model loading and Ray's start), the end-to-end time (Ray's start included), and the
resident memory of each Ray worker at the end (its model included; for local, this whole process). Then the ratios: the per-photo overhead
of Ray with one worker against local (goal <= 10 % for vegetation-index, <= 5 % for vit-attention) and the
scaling from 1 to 2 workers (ideal 2x; this machine has 2 cores, shared with the driver and Ray's daemons).
vit-attention runs ViT-S/14 with random weights at its default long side 518.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUADRATS = ROOT / "resources" / "samples" / "quadrats"
PARAMS = {"vegetation-index": {}, "vit-attention": {"model": "vit_small_patch14_dinov2.lvd142m"}}


def make_photos(folder: Path, count: int) -> list[Path]:
    """``count`` distinct JPEGs made from the sample quadrats (one pixel changed per copy)."""
    import cv2

    sources = [cv2.imread(str(p)) for p in sorted(QUADRATS.glob("*.jpg"))]
    paths = []
    for i in range(count):
        image = sources[i % len(sources)].copy()
        image[0, 0] = (i % 256, i // 256, 7)
        paths.append(folder / f"photo_{i:03d}.jpg")
        cv2.imwrite(str(paths[-1]), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return paths


def steady(times: list[float]) -> float:
    """Seconds per photo from the first finished photo to the last (the mean gap; 2 workers finish in pairs)."""
    times = sorted(times)
    return (times[-1] - times[0]) / (len(times) - 1) if len(times) > 2 else float("nan")


def fresh_cache() -> None:
    os.environ["PROTOLENS_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-ray-cache-")


def run_local(backend: str, folder: Path, out: Path) -> dict:
    import torch

    from protolens.models.registry import Registry
    from protolens.services.batch import segment_paths
    from protolens.services.segment import Segmenter

    fresh_cache()
    torch.set_num_threads(1)
    finished: list[float] = []
    started = time.perf_counter()
    segmenter = Segmenter(Registry.discover(), device="cpu")
    summary = segment_paths([folder], backend, PARAMS[backend], segmenter=segmenter, out_dir=out,
                            allow_random_weights=True,
                            on_file=lambda index, total, path: finished.append(time.perf_counter()))
    finished.append(time.perf_counter())
    assert summary.processed == len(finished) - 1, summary.line
    import psutil

    rss = [psutil.Process().memory_info().rss]  # this process, for comparison (the driver's own imports included)
    return {"per_photo": steady(finished[1:]), "total": time.perf_counter() - started, "rss": rss}


def run_ray(backend: str, folder: Path, out: Path, workers: int) -> dict:
    from protolens.core.job_manifest import JobManifest, manifest_path
    from protolens.services.batch_jobs import SegmentJob, photo_units
    from protolens.services.ray_executor import RayOptions, run_on_ray, start_local_ray

    fresh_cache()
    started = time.perf_counter()
    ray = start_local_ray(num_cpus=2)
    try:
        units, _ = photo_units([folder])
        job = SegmentJob(backend, PARAMS[backend], out_dir=out, allow_random_weights=True)
        manifest = JobManifest(manifest_path("segment", out), "segment", "ray", "local", [u.name for u in units])
        finished: list[float] = []
        results = run_on_ray(job, units, manifest, RayOptions(workers=workers),
                             on_result=lambda result, tally: finished.append(time.perf_counter()))
        assert all(r.ok for r in results) and len(results) == len(units)
        rss = [w.get("memory_rss", 0) for w in manifest.workers]
    finally:
        ray.shutdown()
    return {"per_photo": steady(finished), "total": time.perf_counter() - started, "rss": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--backends", default="vegetation-index,vit-attention")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    folder = work / "photos"
    folder.mkdir()
    make_photos(folder, args.photos)
    print(f"{args.photos} photos (2560x1600 JPEG), {os.cpu_count()} CPUs")
    for backend in args.backends.split(","):
        rows = {"local": run_local(backend, folder, work / f"{backend}-local"),
                "ray, 1 worker": run_ray(backend, folder, work / f"{backend}-ray1", 1),
                "ray, 2 workers": run_ray(backend, folder, work / f"{backend}-ray2", 2)}
        print(f"\n{backend}")
        print(f"  {'executor':<16}{'s / photo':>12}{'end to end':>12}   memory (RSS) per worker; local: the process")
        for name, row in rows.items():
            memory = ", ".join(f"{b / 2**20:.0f} MiB" for b in row["rss"]) or "-"
            print(f"  {name:<16}{row['per_photo']:>12.4f}{row['total']:>11.1f}s   {memory}")
        local, one, two = (rows[k]["per_photo"] for k in rows)
        print(f"  per-photo overhead, ray 1 worker vs local: {100 * (one / local - 1):+.1f} %")
        print(f"  scaling 1 -> 2 workers: {one / two:.2f}x (ideal 2x)")


if __name__ == "__main__":
    main()
