"""Figures of the LDVC model (issue 13), measured side by side in one run, on the CPU.

    .venv/bin/python benchmarks/bench_ldvc.py [--quick] [--repeats 5] [--classes 16] [--threads N]

1. LDVC training step at 224 px, open_clip ViT-B-16 with random weights, batch 1, default decoder
   (LDVCConfig()): median time of the whole step (tower forward + decoder forward/backward + AdamW step) and
   the share spent in the frozen CLIP image tower vs the decoder (the parts timed separately within each
   step; class embeddings are given, as training caches them, so the text tower does not run per step).
   Also with deep prompt tuning on (the tower then runs forward AND backward for the prompts' gradients).
2. Route attention vs full multi-head attention at 64 x 64 = 4096 tokens, C = 256, 8 heads; route: 8 x 8
   windows of 8 x 8 tokens, top-k 4 (each query attends to 256 keys instead of 4096): median time of a
   forward and of a forward + backward, and peak memory (growth of the peak resident set, Linux VmHWM reset
   through /proc/self/clear_refs, over the process's state after building the module and input; each case
   runs in its own fresh process). "full" is
   ``F.scaled_dot_product_attention`` (PyTorch may pick a memory-efficient CPU kernel); "full-math" builds the
   4096 x 4096 attention matrices explicitly, as the textbook formula does.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def training_step(repeats: int, classes: int, prompt_tokens: int) -> dict[str, float]:
    """Median seconds of a full step and of its tower / decoder parts (see the module docstring)."""
    import torch

    from protolens.models.clip.loading import create_clip
    from protolens.models.ldvc import LDVC, LDVCConfig, ldvc_loss

    torch.manual_seed(0)
    model = LDVC(create_clip("ViT-B-16"), LDVCConfig(prompt_tokens=prompt_tokens))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(1, 3, 224, 224)
    texts = torch.nn.functional.normalize(torch.randn(classes, model.embed_dim), dim=-1)
    target = torch.randint(0, classes, (1, 224, 224))
    tower, decoder, total = [], [], []
    for i in range(repeats + 1):  # the first step warms up
        t0 = time.perf_counter()
        patches, global_feature = model.encode_image(images)
        t1 = time.perf_counter()
        loss = ldvc_loss(model.decode(patches, global_feature, texts), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        t2 = time.perf_counter()
        if i:
            tower.append(t1 - t0)
            decoder.append(t2 - t1)
            total.append(t2 - t0)
    return {"step": float(np.median(total)), "tower_forward": float(np.median(tower)),
            "decoder_and_backward": float(np.median(decoder)),
            "trainable_params": sum(p.numel() for p in model.parameters()),
            "frozen_params": sum(p.numel() for p in model.clip.visual.parameters())}


def _attention_case(kind: str):
    import torch

    from protolens.models.ldvc.route_attention import RouteAttention, full_attention

    torch.manual_seed(0)
    module = RouteAttention(256, heads=8, windows=8, top_k=4)
    x = torch.randn(1, 64, 64, 256)

    def full_math(m, z):
        b, r, c, d = z.shape
        q, k, v = m.qkv(z.reshape(b, r * c, d)).chunk(3, dim=-1)
        q, k, v = (t.reshape(b, r * c, 8, d // 8).transpose(1, 2) for t in (q, k, v))
        a = torch.softmax(q @ k.transpose(-1, -2) * (d // 8) ** -0.5, dim=-1)
        return m.proj((a @ v).transpose(1, 2).reshape(b, r, c, d))

    fn = {"route": lambda z: module(z), "full": lambda z: full_attention(module, z),
          "full-math": lambda z: full_math(module, z)}[kind]
    return module, x, fn


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> int:
    """Reset the peak resident set (Linux: ``5 > /proc/self/clear_refs``) and return the current one (KiB).

    Without /proc, the process's lifetime peak (``ru_maxrss``) is the baseline."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return _status_kib("VmRSS") or 0
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_rss() -> int:
    """Peak resident set since :func:`_reset_peak_rss` (KiB)."""
    return _status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def attention_child(kind: str, mode: str) -> None:
    """In a fresh process: resident-set growth (MiB) of one forward (``no_grad``) or forward + backward."""
    import torch

    module, x, fn = _attention_case(kind)
    base = _reset_peak_rss()
    if mode == "forward":
        with torch.no_grad():
            fn(x)
    else:
        x.requires_grad_(True)
        fn(x).square().mean().backward()
    print(json.dumps({"peak_mib": (_peak_rss() - base) / 1024}))


def attention_times(kind: str, repeats: int) -> dict[str, float]:
    import torch

    module, x, fn = _attention_case(kind)
    with torch.no_grad():
        fn(x)  # warm-up
        forward = _median(lambda: fn(x), repeats)
    xg = x.clone().requires_grad_(True)
    train = _median(lambda: fn(xg).square().mean().backward(), repeats)
    return {"forward": forward, "forward_backward": train}


def _peak(kind: str, mode: str, threads: int) -> float:
    cmd = [sys.executable, __file__, "--child", kind, mode, "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["peak_mib"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 repeats, no prompt-tuning step")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--classes", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        attention_child(*args.child)
        return
    repeats = 2 if args.quick else args.repeats
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, repeats {repeats}")
    print("\n1. LDVC training step, ViT-B-16 random weights, 224 px, batch 1, "
          f"{args.classes} classes, CPU")
    cases = [("frozen towers", 0)] + ([] if args.quick else [("deep prompts (10/block)", 10)])
    for label, prompts in cases:
        r = training_step(repeats, args.classes, prompts)
        share = r["tower_forward"] / r["step"]
        print(f"   {label:24s} step {r['step'] * 1e3:8.1f} ms | tower forward {r['tower_forward'] * 1e3:8.1f} ms "
              f"({share:5.1%}) | decoder fwd+bwd+AdamW {r['decoder_and_backward'] * 1e3:8.1f} ms "
              f"({1 - share:5.1%}) | trainable {r['trainable_params'] / 1e6:.2f} M beside the frozen image tower's "
              f"{r['frozen_params'] / 1e6:.1f} M")
        if prompts:
            print("   (with prompts the tower's BACKWARD pass falls in the second part: the backward runs there)")
    print("\n2. Route vs full attention, 64x64 tokens, C 256, 8 heads; route 8x8 windows, top-k 4")
    threads = args.threads or torch.get_num_threads()
    rows = {}
    for kind in ("route", "full", "full-math"):
        t = attention_times(kind, repeats)
        rows[kind] = (t, _peak(kind, "forward", threads), _peak(kind, "train", threads))
        print(f"   {kind:10s} forward {t['forward'] * 1e3:8.1f} ms, peak +{rows[kind][1]:7.1f} MiB | "
              f"fwd+bwd {t['forward_backward'] * 1e3:8.1f} ms, peak +{rows[kind][2]:7.1f} MiB")
    (rt, rf, rb) = rows["route"]
    for kind in ("full", "full-math"):
        t, f, b = rows[kind]
        print(f"   {kind} / route: forward time x{t['forward'] / rt['forward']:.2f}, memory "
              f"x{f / max(rf, 1e-3):.2f}; fwd+bwd time x{t['forward_backward'] / rt['forward_backward']:.2f}, "
              f"memory x{b / max(rb, 1e-3):.2f}")


if __name__ == "__main__":
    main()
