"""Figure of issue 11: opening the keypoint view for a query with a cached bank (<= 1 s on CPU, ViT-S/14 at 224).

    python benchmarks/bench_explain.py [--input 224] [--repeats 5] [--k 5] [--device cpu] [--quick]

A bank of the bird samples (resources/samples/birds, each image its own class) is built once with random
weights of vit_small_patch14_dinov2.lvd142m (the figure is about time, not accuracy). Then
:func:`protolens.services.explain.explain` is timed for bird queries, each left out of its own retrieval:

- cold: the first query after the bank is loaded afresh and the engine's memo cleared (the k prototypes'
  features read and their segments and descriptors computed);
- warm: the next query (other bird) with that memo: the prototypes' work it shares is reused;
- the bare forward pass of one 224 x 224 image through the same model (torch.inference_mode), the floor,
  timed before every cold/warm pair;
- pixel mode once cold (facet descriptors of query and prototypes at stride 7, correspondences) and once
  warm (another query: only its own descriptors are computed);
- the Explain view itself (Qt offscreen): from a photo shown in View ▸ Explain with the bank cached to its
  explanation drawn (job on the worker pool, scene, vote chart), cold and for the next photo.

Medians are printed side by side with their ratios to the bare forward pass. The model itself is built (and
cached) by an untimed warm-up call, as the GUI does once per session.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIRDS = ROOT / "resources" / "samples" / "birds"
MODEL = "vit_small_patch14_dinov2.lvd142m"


def build(folder: Path, segmenter, input_size: int):
    from protolens.services.bank import build_bank, load_bank
    from protolens.services.segment import drain

    shutil.copytree(BIRDS, folder)
    start = time.perf_counter()
    drain(build_bank(segmenter, folder, model=MODEL, input_size=input_size, allow_random_weights=True))
    print(f"bank build ({len(list(BIRDS.iterdir()))} birds, input {input_size}): {time.perf_counter() - start:.2f} s")
    return load_bank(folder)


def timed_explain(segmenter, bank, query, k: int, **options) -> tuple[float, object]:
    from protolens.services.explain import explain
    from protolens.services.segment import drain

    start = time.perf_counter()
    explanation = drain(explain(segmenter, query, bank, k=k, allow_random_weights=True, **options))
    return time.perf_counter() - start, explanation


def bare_forward(input_size: int, device: str) -> float:
    """Seconds of one forward pass of a ready 1 x 3 x input x input tensor (model built and warmed up before)."""
    import torch

    from protolens.models.vit.families import forward_tokens
    from protolens.models.vit.loading import load_vit

    model = load_vit(MODEL, None, device)
    x = torch.randn(1, 3, input_size, input_size, device=device)
    with torch.inference_mode():
        forward_tokens(model, x)
        start = time.perf_counter()
        forward_tokens(model, x)
        return time.perf_counter() - start


def view_open(bank: Path, k: int) -> tuple[float, float]:
    """Seconds from showing a photo in View ▸ Explain (bank cached) to its explanation drawn: first, next photo."""
    import os

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["PROTOLENS_SETTINGS"] = str(bank.parent / "settings.ini")
    from PySide6.QtWidgets import QApplication

    from protolens.core.store import ResultStore
    from protolens.gui.main_window import MainWindow
    from protolens.models.registry import Registry
    from protolens.services.segment import Segmenter

    app = QApplication.instance() or QApplication([])
    window = MainWindow(Registry.discover(), Segmenter(Registry.discover(), disk_cache=None), ResultStore(),
                        allow_random_weights=True)
    window.resize(1500, 900)
    window.show()
    window.backend_panel.auto_run.setChecked(False)
    window.toggle_explain(True)
    view = window.explain_view
    view.k_spin.setValue(k)
    view.set_bank(bank)
    times = []
    for name in ("magpie.png", "pigeon.png"):
        window.open_path(bank / name)
        start = time.perf_counter()
        while view.explanation is None or not view.explanation.query.path.endswith(name):
            app.processEvents()
            time.sleep(0.002)
            if time.perf_counter() - start > 120:
                raise RuntimeError("the Explain view did not draw within 120 s")
        times.append(time.perf_counter() - start)
    window.jobs.cancel_all()
    window.jobs.wait(5000)
    window.close()
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=int, default=224, help="model input side (a multiple of 14)")
    parser.add_argument("--repeats", type=int, default=5, help="cold/warm pairs timed")
    parser.add_argument("--k", type=int, default=5, help="prototypes per query")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="2 repeats")
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats

    import torch

    from protolens.models import keypoint_labeling
    from protolens.models.registry import Registry
    from protolens.services.bank import load_bank
    from protolens.services.segment import Segmenter, load_image

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, model {MODEL} "
          f"(random weights), input {args.input}, k {args.k}")
    segmenter = Segmenter(Registry.discover(), device=args.device, disk_cache=None)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "birds"
        build(folder, segmenter, args.input)
        queries = [load_image(p) for p in sorted(BIRDS.iterdir())]
        first, _ = timed_explain(segmenter, load_bank(folder), queries[0], args.k)  # builds the model
        cold, warm, matches, forwards = [], [], [], []
        for i in range(repeats):  # interleaved, so that all three see the same machine load
            forwards.append(bare_forward(args.input, args.device))
            keypoint_labeling.clear_memo()
            bank = load_bank(folder)  # features read afresh
            seconds, explanation = timed_explain(segmenter, bank, queries[(2 * i) % len(queries)], args.k)
            cold.append(seconds)
            seconds, explanation = timed_explain(segmenter, bank, queries[(2 * i + 1) % len(queries)], args.k)
            warm.append(seconds)
            matches.append(len(explanation.matches))
        keypoint_labeling.clear_memo()
        bank = load_bank(folder)
        pixel, explanation = timed_explain(segmenter, bank, load_image(BIRDS / "robin.jpg"), args.k, pixels=True)
        pairs = sum(len(c) for c in explanation.correspondences or [])
        pixel_warm, _ = timed_explain(segmenter, bank, load_image(BIRDS / "crow.png"), args.k, pixels=True)
        keypoint_labeling.clear_memo()
        view_cold, view_warm = view_open(folder, args.k)
    forward = statistics.median(forwards)
    rows = [("bare forward (1 image)", forward), ("explain, cold prototypes", statistics.median(cold)),
            ("explain, warm prototypes", statistics.median(warm)), ("explain, pixel mode (cold, once)", pixel),
            ("explain, pixel mode (warm, once)", pixel_warm), ("Explain view drawn, cold", view_cold),
            ("Explain view drawn, next photo", view_warm)]
    print(f"first call (model built, untimed elsewhere): {first:.3f} s")
    print(f"{'':34s} {'median s':>9s} {'x forward':>10s}")
    for name, seconds in rows:
        print(f"{name:34s} {seconds:9.3f} {seconds / forward:10.1f}")
    print(f"warm / cold: {statistics.median(warm) / statistics.median(cold):.2f}; matches per warm query: "
          f"{statistics.median(matches):.0f}; pixel correspondences: {pairs}")
    verdict = "meets" if statistics.median(cold) <= 1.0 else "misses"
    print(f"target: opening a query with a cached bank <= 1 s on CPU: cold {statistics.median(cold):.3f} s, "
          f"warm {statistics.median(warm):.3f} s ({verdict} it cold)")


if __name__ == "__main__":
    main()
