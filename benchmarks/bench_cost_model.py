"""Cost model of a survey: per-crop forward FLOPs of DINOv2 ViT-S/B at 224/518 and GPU-hours per 1,000 quadrats.

    .venv/bin/python benchmarks/bench_cost_model.py [--mfu 0.40] [--repeats 5] [--threads N]

Setup: timm ``vit_small_patch14_reg4_dinov2`` and ``vit_base_patch14_reg4_dinov2`` (DINOv2 with 4 registers,
``pretrained=False``: random weights, nothing downloaded; FLOPs do not depend on the weights), built with
``img_size=`` 224 and 518, one crop (batch 1) under ``torch.no_grad``. Prints:

1. GFLOP per crop forward, counted by ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts as 2
   FLOPs), with the split by operator and a check against the analytic count
   ``2 * depth * (12 * N * D^2 + 2 * N^2 * D)`` + patch embedding (N tokens incl. CLS and registers, width D).
   The counter has no formula for the CPU kernel of fused scaled-dot-product attention, so the counted models
   use timm's explicit attention (``fused_attn = False``): the same maths, counted in full.
2. Crops per quadrat from the prototype-guided pipeline's default grid (``services.tokens.DEFAULT_GRID``,
   32 x 48 = 1536 crops), FLOP per 1,000 quadrats, and GPU-hours per 1,000 quadrats as markdown tables:
   ``hours = 1000 * crops * FLOP_per_crop / (peak * MFU) / 3600`` with the dense (no sparsity) bf16 tensor peak
   of each GPU from its vendor datasheet (T4: fp16, it has no bf16) at an ASSUMED model FLOPs utilisation of
   40 % (``--mfu``), and at 100 % (the lower bound no GPU reaches). Forwards only: no decoding, I/O or the
   narrow ViT / classifier stages. A projection, not a measurement.
3. The PlantCLEF-scale survey of issue 14 (2,105 quadrats x 1536 crops, ViT-B/14 at 518): total FLOP and
   projected GPU-hours.
4. For context, the measured time per crop of ViT-S/14 at 224 on this machine's CPU (fused attention, as the
   backends run it; batch 1, median of ``--repeats`` after a warm-up).

Runs in well under 2 minutes on 2 CPU cores (the ViT-B/518 count is the longest part).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

MODELS = {"ViT-S/14": "vit_small_patch14_reg4_dinov2", "ViT-B/14": "vit_base_patch14_reg4_dinov2"}
SIZES = (224, 518)
SURVEY_QUADRATS = 2105  # PlantCLEF test quadrats, the survey named in issue 14
# Dense (no structured sparsity) tensor-core peaks in TFLOPS, from the vendor datasheets / whitepaper.
GPUS = (
    ("T4", 65.0, "NVIDIA T4 datasheet, FP16 mixed precision (Turing has no bf16)"),
    ("A10", 125.0, "NVIDIA A10 datasheet, BF16 (250 with sparsity)"),
    ("L4", 121.0, "NVIDIA L4 datasheet, BF16 (242 with sparsity)"),
    ("RTX 4090", 165.2, "NVIDIA Ada Lovelace whitepaper, BF16 with FP32 accumulate (330.4 with sparsity)"),
    ("A100", 312.0, "NVIDIA A100 datasheet, BF16 (624 with sparsity)"),
    ("H100 SXM", 989.0, "NVIDIA H100 datasheet, BF16 (1,979 with sparsity)"),
    ("H200", 989.0, "NVIDIA H200 datasheet, BF16 (1,979 with sparsity)"),
)


def _model(name: str, size: int, fused: bool) -> torch.nn.Module:
    import timm

    network = timm.create_model(name, pretrained=False, img_size=size, num_classes=0).eval()
    if not fused:
        for module in network.modules():
            if hasattr(module, "fused_attn"):
                module.fused_attn = False
    return network


def count(name: str, size: int) -> tuple[int, dict[str, int], int]:
    """FLOPs of one crop's forward (counted, by operator) and the analytic count."""
    from torch.utils.flop_counter import FlopCounterMode

    network = _model(name, size, fused=False)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(torch.randn(1, 3, size, size))
    by_op = {str(op).removeprefix("aten."): int(n) for op, n in counter.get_flop_counts()["Global"].items()}
    tokens = network.patch_embed.num_patches + network.num_prefix_tokens
    width, depth, patch = network.embed_dim, len(network.blocks), network.patch_embed.patch_size[0]
    analytic = 2 * depth * (12 * tokens * width**2 + 2 * tokens**2 * width)
    analytic += 2 * network.patch_embed.num_patches * 3 * patch * patch * width
    return counter.get_total_flops(), by_op, analytic


def cpu_ms_per_crop(name: str, size: int, repeats: int) -> tuple[float, float]:
    """Median wall and CPU time in ms of one crop's forward (batch 1, fused attention)."""
    network = _model(name, size, fused=True)
    crop = torch.randn(1, 3, size, size)
    wall, cpu = [], []
    with torch.no_grad():
        network(crop)  # warm-up
        for _ in range(repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            network(crop)
            wall.append((time.perf_counter() - start) * 1000)
            cpu.append((time.process_time() - start_cpu) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def hours(flop: float, tflops: float, mfu: float) -> float:
    return flop / (tflops * 1e12 * mfu) / 3600


def _fmt(value: float) -> str:
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def _table(rows: list[tuple[str, int]], crops: int, mfu: float) -> None:
    print("| model, input | GFLOP/crop | PFLOP/1k quadrats | " + " | ".join(g for g, _, _ in GPUS) + " |")
    print("|---|--:|--:|" + "--:|" * len(GPUS))
    for label, flop in rows:
        per_k = 1000 * crops * flop
        cells = " | ".join(_fmt(hours(per_k, tflops, mfu)) for _, tflops, _ in GPUS)
        print(f"| {label} | {flop / 1e9:.1f} | {per_k / 1e15:.1f} | {cells} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mfu", type=float, default=0.40, help="assumed model FLOPs utilisation (default 0.40)")
    parser.add_argument("--repeats", type=int, default=5, help="timed crops for the CPU figure (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from protolens.services.tokens import DEFAULT_GRID

    crops = DEFAULT_GRID[0] * DEFAULT_GRID[1]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; per-crop forward, batch 1, random "
          f"weights (FlopCounterMode: a multiply-add = 2 FLOPs)")
    print(f"{'model':<9} {'input':>5} {'tokens':>6} {'GFLOP/crop':>11} {'analytic':>9}  by operator (GFLOP)")
    flops: dict[tuple[str, int], int] = {}
    for label, name in MODELS.items():
        for size in SIZES:
            total, by_op, analytic = count(name, size)
            flops[label, size] = total
            tokens = (size // 14) ** 2 + 5
            split = ", ".join(f"{op} {n / 1e9:.2f}" for op, n in by_op.items())
            print(f"{label:<9} {size:>5} {tokens:>6} {total / 1e9:>11.2f} {total / analytic:>8.3f}x  {split}")
    rows = [(f"{label} @ {size}", flops[label, size]) for label in MODELS for size in SIZES]
    print(f"\ncrops per quadrat: default grid {DEFAULT_GRID[0]} rows x {DEFAULT_GRID[1]} cols = {crops}")
    print(f"\nGPU-hours per 1,000 quadrats, projection at an assumed MFU of {args.mfu * 100:.0f} % "
          f"(hours = 1000 x {crops} x FLOP/crop / (peak x MFU) / 3600; forwards only):\n")
    _table(rows, crops, args.mfu)
    print("\nLower bound, MFU 100 % (the peak itself, never reached):\n")
    _table(rows, crops, 1.0)
    print("\nPeaks used (dense bf16 tensor TFLOPS, no sparsity):")
    for gpu, tflops, source in GPUS:
        print(f"  {gpu:<9} {tflops:>6.1f}  {source}")
    survey = SURVEY_QUADRATS * crops * flops["ViT-B/14", 518]
    print(f"\nPlantCLEF survey: {SURVEY_QUADRATS} quadrats x {crops} crops x "
          f"{flops['ViT-B/14', 518] / 1e9:.1f} GFLOP (ViT-B/14 @ 518) = {survey:.2e} FLOP = "
          f"{survey / 1e18:.2f} EFLOP ({survey / 1e15:.0f} PFLOP)")
    print("  GPU-hours at " + f"{args.mfu * 100:.0f} % MFU: " + ", ".join(
        f"{gpu} {hours(survey, tflops, args.mfu):.1f}" for gpu, tflops, _ in GPUS))
    wall, cpu = cpu_ms_per_crop(MODELS["ViT-S/14"], 224, args.repeats)
    rate = flops["ViT-S/14", 224] / (wall / 1000) / 1e9
    print(f"\nThis machine's CPU, ViT-S/14 @ 224, batch 1, fused attention: {wall:.1f} ms per crop (median of "
          f"{args.repeats}; CPU time {cpu:.1f} ms, all threads) = {rate:.0f} GFLOP/s; "
          f"{crops} crops = {crops * wall / 1000:.0f} s per quadrat; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
