"""``protolens attention``: ViT attention heatmaps (the vit-attention backend) with named options."""

from __future__ import annotations

from pathlib import Path

import typer

from protolens.cli import app
from protolens.cli.segment import run_segment

BACKEND = "vit-attention"


@app.command("attention")
def attention(
    paths: list[Path] = typer.Argument(..., help="Photos and folders of photos."),
    model: str = typer.Option("vit_small_patch14_dinov2.lvd142m", "--model", "-m",
                              help="timm model name or Hugging Face id (see `protolens backends`)."),
    weights: Path = typer.Option(None, "--weights", help="Weights file or snapshot folder; default: local cache."),
    mode: str = typer.Option("cls", "--mode", help="cls | received | rollout."),
    block: int = typer.Option(-1, "--block", help="Block of the CLS attention (cls mode); -1 = last."),
    head: int = typer.Option(-1, "--head", help="Head to show; -1 fuses the heads with --head-fusion."),
    head_fusion: str = typer.Option("mean", "--head-fusion", help="mean | max | min."),
    discard_ratio: float = typer.Option(0.0, "--discard-ratio", help="Rollout: drop the lowest fraction of weights."),
    long_side: int = typer.Option(518, "--long-side", help="Resize the photo so its longer side is this long (px)."),
    tile_size: int = typer.Option(0, "--tile-size", help="Window side in px (0 = one pass over the whole image)."),
    overlap: float = typer.Option(0.25, "--overlap", help="Window overlap fraction, blended with cosine ramps."),
    batch_size: int = typer.Option(4, "--batch-size", help="Windows per forward pass."),
    precision: str = typer.Option("auto", "--precision", help="auto | float32 | bfloat16 | float16."),
    threshold: float = typer.Option(None, "--threshold", "-t", min=0.0, max=1.0,
                                    help="Mask threshold; default Otsu (value) or 0.6 (mass)."),
    semantics: str = typer.Option("value", "--threshold-semantics",
                                  help="value: score >= t. mass: smallest set of patches holding t of the mass."),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder; default: the per-photo result store."),
    device: str = typer.Option(None, "--device", help="Torch device (cpu, cuda:0); default: least busy GPU, else CPU."),
    random_weights: bool = typer.Option(False, "--random-weights", hidden=True, help="Testing only."),
) -> None:
    """Attention heatmaps, masks and provenance for photos: CLS attention, received attention or rollout."""
    params = {"model": model, "mode": mode, "block": block, "head": head, "head_fusion": head_fusion,
              "discard_ratio": discard_ratio, "long_side": long_side, "tile_size": tile_size, "overlap": overlap,
              "batch_size": batch_size, "precision": precision}
    run_segment([str(p) for p in paths], BACKEND, params, weights=weights, threshold=threshold, semantics=semantics,
                out=out, device=device, random_weights=random_weights)
