"""``protolens train``: train models into run folders; ``prototype-vit`` is the narrow ViT of arXiv 2512.19957.

``--backbone`` is the vit-attention backend's ``model`` parameter and ``--precision`` its ``precision`` (help
and choices from its ``plugin.toml``); the work is :func:`protolens.services.training.train_prototype_vit`.
Rerunning the same command on the same ``--out`` resumes after the last completed epoch.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from protolens.cli import app
from protolens.cli.common import backend_specs, registry, with_backend_options
from protolens.core.jobs import CancelToken
from protolens.core.runs import RunFolder
from protolens.services.pipeline import Tiling
from protolens.services.segment import Segmenter, drain
from protolens.services.tokens import BACKEND, DEFAULT_MODEL
from protolens.services.training import PHASE_TOKENS, train_prototype_vit

train_app = typer.Typer(name="train", no_args_is_help=True, add_completion=False,
                        help="Train models into run folders (config.json, epoch_###.safetensors, metrics.jsonl).")
app.add_typer(train_app, name="train")

_INDICATORS = (("entropy", "entropy"), ("border_share", "border"), ("iou_previous", "IoU prev"))


def epoch_line(record: dict[str, Any], run: RunFolder,
               indicators: tuple[tuple[str, str], ...] = _INDICATORS) -> str:
    """``epoch 2: loss 0.0123, entropy 0.981, border 0.25, IoU prev 0.8 -> RUN/epoch_002.safetensors``: the loss,
    then ``indicators`` ((key in the epoch's indicators, label) pairs, the prototype ViT's by default)."""
    values = record.get("indicators") or {}
    parts = [f"loss {_number(record.get('loss'))}"]
    parts += [f"{label} {_number(values[key])}" for key, label in indicators if key in values]
    return f"epoch {record['epoch']}: {', '.join(parts)} -> {run.checkpoint_path(int(record['epoch']))}"


def _number(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def prototype_vit(
    *,
    quadrats: Path = typer.Option(..., "--quadrats", help="Folder of quadrat photos to train on (transductive)."),
    prototypes: Path = typer.Option(..., "--prototypes", help="prototypes.safetensors from `protolens prototypes "
                                                              "build` (K x D; D = the backbone's token width)."),
    epochs: int = typer.Option(..., "--epochs", min=1, help="Epochs in all; a rerun may only raise it."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder; rerunning the command resumes it."),
    photo_size: str = typer.Option("3072x2048", "--photo-size", help="WxH each quadrat is resized to."),
    crop: int = typer.Option(64, "--crop", min=1, help="Crop side in resized pixels (grid = H/crop x W/crop)."),
    crop_input: int = typer.Option(518, "--crop-input", min=14, help="Each crop is resized to this side."),
    weights: Path = typer.Option(None, "--weights", help="Backbone weights file; default: the local cache."),
    depth: int = typer.Option(6, "--depth", min=1, help="Narrow ViT blocks."),
    heads: int = typer.Option(12, "--heads", min=1, help="Attention heads per block."),
    width: int = typer.Option(0, "--width", min=0, help="Block width; 0 = the token width D."),
    lr: float = typer.Option(1e-4, "--lr", help="Peak learning rate (AdamW, warm-up + cosine per update)."),
    accumulation: int = typer.Option(8, "--accumulation", min=1, help="Quadrats per optimizer update."),
    warmup: int = typer.Option(None, "--warmup", min=0, help="Warm-up updates; default: one epoch, at most "
                                                             "10% of all updates."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the initial weights and the sample order."),
    probe: int = typer.Option(4, "--probe", min=0, help="The first N quadrats are the indicator probe set."),
    threshold: float = typer.Option(0.6, "--threshold", min=0.0, max=1.0, help="Crop-mask threshold of the "
                                                                                "IoU indicator."),
    device: str = typer.Option(None, "--device", help="Torch device; default: least busy GPU, else CPU."),
    allow_random: bool = typer.Option(False, "--allow-random-weights",
                                      help="Random backbone weights when none are found (testing only)."),
    **backbone: Any,
) -> None:
    """Train the narrow ViT of prototype-guided segmentation (arXiv 2512.19957, steps 3-5) on quadrat photos.

    Tile tokens are computed once per quadrat and cached; every epoch writes OUT/epoch_###.safetensors and
    OUT/epoch_###.json (loss, collapse indicators). Ctrl-C stops after the current quadrat and keeps the
    completed epochs.
    """
    tiling = Tiling.parse(photo_size, crop, crop_input)
    run, resumed = _open_run(out)
    segmenter = Segmenter(registry(), device=device)
    cancel = CancelToken()
    generator = train_prototype_vit(
        segmenter, quadrats, prototypes, out, epochs=epochs, tiling=tiling, backbone=backbone.get("backbone", DEFAULT_MODEL),
        weights_path=weights, depth=depth, heads=heads, width=width, lr=lr, accumulation=accumulation,
        warmup_steps=warmup, seed=seed, probe=probe, threshold=threshold, precision=backbone.get("precision", "auto"),
        allow_random_weights=allow_random, cancel=cancel)
    summary = _with_progress(generator, run, resumed, cancel=cancel)
    for path, reason in summary.skipped:
        typer.echo(f"skipped: {path}: {reason}", err=True)
    trained = _trained(summary)
    typer.echo(f"protolens train prototype-vit: {trained}; epoch {summary.epoch}/{epochs}, {summary.steps} optimizer "
               f"updates, loss {_number(summary.loss)} -> {summary.checkpoint} "
               f"(checkpoints epoch_###.safetensors in {out})")


def _open_run(out: Path) -> tuple[RunFolder, int]:
    """The run folder ``out`` and its last completed epoch (0 for a new run), saying when a rerun resumes it."""
    run = RunFolder(out)
    latest = run.latest()
    if latest is not None:
        typer.echo(f"resuming {out} after epoch {latest.epoch} ({latest.steps} optimizer updates)", err=True)
    return run, latest.epoch if latest else 0


def _with_progress(generator: Any, run: RunFolder, resumed: int, phase: str = PHASE_TOKENS,
                   indicators: tuple[tuple[str, str], ...] = _INDICATORS, cancel: CancelToken | None = None,
                   epochs_to_stdout: bool = False) -> Any:
    """Drain a training generator under a rich progress bar (its ``phase`` — tile tokens, reading the data,
    rollout targets — then training) and print each new epoch's line (:func:`epoch_line`) as it completes.

    Ctrl+C cancels the training job at its next micro-batch, says which epochs are kept, and exits 130.
    """
    printed = {resumed}
    offset = 0
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        first = bar.add_task(phase, total=1.0)
        training = bar.add_task("training", total=1.0, visible=False)

        def print_new_epochs() -> None:
            nonlocal offset
            records, offset = run.read_metrics(offset)
            for record in records:
                if record.get("type") == "epoch" and int(record["epoch"]) > max(printed):
                    printed.add(int(record["epoch"]))
                    line = epoch_line(record, run, indicators)
                    if epochs_to_stdout:
                        typer.echo(line)
                    else:
                        bar.console.print(line, markup=False, highlight=False, soft_wrap=True)

        def on_progress(report: Any) -> None:
            in_phase = report.text.startswith(phase)
            if not in_phase:
                bar.update(first, completed=1.0)
                bar.update(training, visible=True)
                print_new_epochs()  # read only once training began (a resume first cuts the log back)
            bar.update(first if in_phase else training, completed=report.fraction, description=report.text[:70])
            if "skipped" in report.text or "out of memory" in report.text:
                bar.console.print(f"warning: {report.text}", markup=False, highlight=False, soft_wrap=True)

        try:
            summary = drain(generator, on_progress)
        except KeyboardInterrupt:
            if cancel is not None:
                cancel.cancel()  # the training job on the device worker stops at its next micro-batch
            done = run.latest()
            typer.echo(f"cancelled; kept {'epochs up to ' + str(done.epoch) if done else 'no epoch'} in {run.path} "
                       "(rerun the command to resume)", err=True)
            raise typer.Exit(130) from None
        print_new_epochs()  # the last epoch's line is written after its last progress report
    return summary


def _trained(summary: Any) -> str:
    """"trained epochs 3-5" / "trained epoch 3" / "nothing to train" of a TrainSummary."""
    first, last = (summary.trained[0], summary.trained[-1]) if summary.trained else (0, 0)
    return ("nothing to train" if not summary.trained else f"trained epoch {first}" if first == last
            else f"trained epochs {first}-{last}")


def _backbone_specs() -> list[Any]:
    """The backend's ``model`` parameter as ``--backbone`` (default: the tile-token backbone) and its ``precision``."""
    specs = {s.name: s for s in backend_specs(BACKEND)}
    chosen = [dataclasses.replace(specs["model"], name="backbone", default=DEFAULT_MODEL)] if "model" in specs else []
    return chosen + ([specs["precision"]] if "precision" in specs else [])


train_app.command("prototype-vit")(with_backend_options(prototype_vit, _backbone_specs()))


# --- `protolens train ldvc` (issue 13: the LDVC decoder, arXiv 2403.08426) -----------------------------------
_LDVC_INDICATORS = (("miou", "mIoU"), ("miou_seen", "seen"), ("miou_unseen", "unseen"), ("hiou", "hIoU"),
                    ("pixel_accuracy", "pixel acc"))


def ldvc(
    data: Path = typer.Option(..., "--data", help="VOC-style folder (JPEGImages/, SegmentationClass/) or a protolens "
                                                  "photo folder with corrected masks."),
    seen: str = typer.Option(..., "--seen", help="Comma-separated classes that supervise the training."),
    unseen: str = typer.Option(None, "--unseen", help="Comma-separated zero-shot classes, never trained; default: "
                                                      "every other class."),
    epochs: int = typer.Option(..., "--epochs", min=1, help="Epochs in all; a rerun may only raise it."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder; rerunning the command resumes it."),
    input_size: int = typer.Option(224, "--input", min=16, help="Photos are resized to this square side "
                                                                "(a multiple of the CLIP patch, 16)."),
    clip_model: str = typer.Option("ViT-B-16", "--clip-model", help="open_clip model of the frozen towers "
                                                                     "(ViT-B-16, ViT-B-16-quickgelu)."),
    weights: Path = typer.Option(None, "--weights", help="open_clip weights file or folder; default: the local "
                                                         "cache (protolens weights pull ViT-B-16)."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", min=0.0, max=0.95, help="Share held out for the "
                                       "per-epoch metrics when the data has no ImageSets/Segmentation/val.txt."),
    lr: float = typer.Option(1e-4, "--lr", help="Peak learning rate (AdamW, warm-up + cosine per update)."),
    accumulation: int = typer.Option(8, "--accumulation", min=1, help="Photos per optimizer update."),
    warmup: int = typer.Option(None, "--warmup", min=0, help="Warm-up updates; default: one epoch, at most "
                                                             "10% of all updates."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the initial weights, split and sample order."),
    precision: str = typer.Option("auto", "--precision", help="auto (bfloat16 on CUDA), float32 or bfloat16."),
    decoder_dim: int = typer.Option(256, "--decoder-dim", min=1, help="Decoder width."),
    layers: int = typer.Option(2, "--layers", min=1, help="Decoder blocks (LDVC: 2)."),
    heads: int = typer.Option(8, "--heads", min=1, help="Decoder attention heads."),
    windows: int = typer.Option(7, "--windows", min=1, help="Route-attention windows per side (must divide "
                                                            "the patch grid, 14 at 224)."),
    top_k: int = typer.Option(8, "--top-k", min=1, help="Windows each window attends to (route attention)."),
    prompt_tokens: int = typer.Option(0, "--prompt-tokens", min=0, help="Deep visual prompt tokens per block of "
                                                                        "the frozen image tower (0 = off)."),
    device: str = typer.Option(None, "--device", help="Torch device; default: least busy GPU, else CPU."),
    allow_random: bool = typer.Option(False, "--allow-random-weights",
                                      help="Random CLIP weights when none are found (testing only)."),
) -> None:
    """Train the LDVC decoder (arXiv 2403.08426) on labelled photos: only the --seen classes supervise it.

    Every epoch writes OUT/epoch_###.safetensors and OUT/epoch_###.json with the loss and, on the validation
    photos, mIoU, seen/unseen mIoU, hIoU and pixel accuracy. Bad or missing masks are reported and skipped.
    Ctrl-C stops after the current photo and keeps the completed epochs.
    """
    from protolens.services.ldvc_training import PHASE_DATA, train_ldvc

    run, resumed = _open_run(out)
    cancel = CancelToken()
    generator = train_ldvc(
        Segmenter(registry(), device=device), data, seen=seen, unseen=unseen, epochs=epochs, out=out,
        input_size=input_size, clip_model=clip_model, weights_path=weights, val_fraction=val_fraction, lr=lr,
        accumulation=accumulation, warmup_steps=warmup, seed=seed, precision=precision,
        allow_random_weights=allow_random, cancel=cancel,
        arch={"dim": decoder_dim, "layers": layers, "heads": heads, "windows": windows, "top_k": top_k,
              "prompt_tokens": prompt_tokens})
    summary = _with_progress(generator, run, resumed, PHASE_DATA, _LDVC_INDICATORS, cancel)
    for name, reason in summary.skipped:
        typer.echo(f"skipped: {name}: {reason}", err=True)
    trained = _trained(summary)
    metrics = "".join(f", {label} {_number(summary.indicators[key])}" for key, label in _LDVC_INDICATORS
                      if key in summary.indicators)
    typer.echo(f"protolens train ldvc: {trained}; epoch {summary.epoch}/{epochs}, {summary.steps} optimizer "
               f"updates, loss {_number(summary.loss)}{metrics} -> {summary.checkpoint} "
               f"(checkpoints epoch_###.safetensors in {out})")


train_app.command("ldvc")(ldvc)


# --- `protolens train patch-selector` (issue 13: SVIP's patch classifier, arXiv 2503.10252) ------------------
def patch_selector(
    images: Path = typer.Option(..., "--images", help="Folder of photos; their rollout gives the targets."),
    epochs: int = typer.Option(..., "--epochs", min=1, help="Epochs in all; a rerun may only raise it."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder; rerunning the command resumes it."),
    model: str = typer.Option("vit_small_patch16_224.dino", "--model", help="The patch-selection backend's ViT "
                                                                            "(SVIP: ViT-B/16)."),
    keep: int = typer.Option(40, "--keep", min=1, help="M: super-patches kept per photo (SVIP: 40 of 49)."),
    input_size: int = typer.Option(224, "--input", min=32, help="Photos are resized to input x input."),
    weights: Path = typer.Option(None, "--weights", help="ViT weights file; default: the local cache."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (AdamW, warm-up + cosine per update)."),
    accumulation: int = typer.Option(8, "--accumulation", min=1, help="Photos per optimizer update."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the initial weights, split and sample order."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", min=0.0, max=0.95,
                                       help="Share of photos held out for the agreement IoU."),
    precision: str = typer.Option("auto", "--precision", help="auto, float32 or bfloat16."),
    device: str = typer.Option(None, "--device", help="Torch device; default: least busy GPU, else CPU."),
    allow_random: bool = typer.Option(False, "--allow-random-weights",
                                      help="Random ViT weights when none are found (testing only)."),
) -> None:
    """Train SVIP's patch selector (arXiv 2503.10252, Sec. 3.2) against attention-rollout targets.

    Rollout targets and raw patch embeddings are computed once per photo and cached; every epoch writes
    OUT/epoch_###.safetensors and OUT/epoch_###.json (loss, agreement_iou = mean IoU of the selector's and
    the rollout's kept sets on held-out photos).
    """
    from protolens.services.patch_selector_training import PHASE_TARGETS, train_patch_selector

    run, resumed = _open_run(out)
    cancel = CancelToken()
    generator = train_patch_selector(
        Segmenter(registry(), device=device), images, out, epochs=epochs, model=model, keep=keep,
        input_size=input_size, weights_path=weights, lr=lr, accumulation=accumulation, seed=seed,
        val_fraction=val_fraction, precision=precision, allow_random_weights=allow_random, cancel=cancel)
    summary = _with_progress(generator, run, resumed, PHASE_TARGETS,
                             (("agreement_iou", "agreement IoU"),), cancel, epochs_to_stdout=True)
    typer.echo(f"protolens train patch-selector: epoch {summary.epoch}/{epochs}, {summary.steps} optimizer updates, "
               f"loss {_number(summary.loss)}, agreement IoU {_number(summary.indicators.get('agreement_iou'))} "
               f"-> {summary.checkpoint}")


train_app.command("patch-selector")(patch_selector)
