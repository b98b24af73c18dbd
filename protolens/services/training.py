"""Training the narrow ViT of prototype-guided zero-shot segmentation on quadrats (arXiv 2512.19957, steps 3-5).

The training set is the unlabeled test quadrats themselves (transductive, METHODS.md §1 step 5):

1. tile tokens of every quadrat (step 3) come from :func:`protolens.services.tokens.crop_tokens`, cached on disk
   and held in memory for the run, so epochs after the first (and reruns) never run the backbone again;
2. a :class:`~protolens.models.prototype.narrow_vit.NarrowViT` (step 4) maps a quadrat's tokens to Z_hat (K, D);
3. the loss is ``MSE(Z_hat, P)`` with the same prototype matrix P for every quadrat, batch 1 with gradient
   accumulation (step 5), in the generic loop :func:`protolens.models.training.train` (AdamW, warm-up + cosine
   stepped per optimizer update, checkpoints per epoch, resume);
4. after every epoch the collapse indicators (:func:`protolens.core.indicators.epoch_indicators`: entropy,
   border share and IoU with the previous epoch's crop masks, step 6) are computed on a fixed probe set.

Torch is imported only when training starts, so the GUI may import this module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protolens.core.errors import CheckpointError, ImageReadError, ParamError, ProtolensError
from protolens.core.hashing import sha256_file
from protolens.core.imageio import scan_paths
from protolens.core.indicators import crop_mask, epoch_indicators
from protolens.core.jobs import CancelToken, Progress, rescaled
from protolens.core.runs import RunFolder
from protolens.services.pipeline import Tiling
from protolens.services.segment import Segmenter, load_image
from protolens.services.tokens import DEFAULT_MODEL, TokenGrid, crop_tokens

MODEL_ID = "prototype-vit"
"""``"model"`` of the run config."""
PHASE_TOKENS = "tile tokens"
"""Progress texts of the first phase (tokens) start with this; those of the training with ``"epoch "``."""


def quadrat_paths(quadrats: str | Path | Sequence[str | Path]) -> list[Path]:
    """The photos of a folder, or of a list of photos and folders, as absolute paths sorted by path string."""
    items = [quadrats] if isinstance(quadrats, str | Path) else list(quadrats)
    return sorted({p.resolve() for p in scan_paths(items).images}, key=str)


@dataclass
class QuadratTokens:
    """Tile tokens of the readable quadrats, in the order of :func:`quadrat_paths`.

    ``tokens[i]`` is (rows, cols, D) float32; ``skipped`` lists unreadable photos as (path, reason);
    ``first`` is the first grid (its model and weights identity give the run's backbone provenance).
    """

    paths: list[Path] = field(default_factory=list)
    tokens: list[np.ndarray] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    first: TokenGrid | None = None


def quadrat_tokens(segmenter: Segmenter, paths: Sequence[Path], tiling: Tiling, *, backbone: str,
                   weights_path: str | Path | None, precision: str, allow_random_weights: bool,
                   cancel: CancelToken, dim: int | None = None) -> Generator[Progress, None, QuadratTokens]:
    """Tile tokens of every quadrat (arXiv 2512.19957, step 3), from the disk cache when there.

    Unreadable photos are skipped and reported (in the progress text and :attr:`QuadratTokens.skipped`).
    Raises CheckpointError when the tokens are not ``dim`` wide (prototypes of another backbone), and what
    :func:`~protolens.services.tokens.crop_tokens` raises.
    """
    out = QuadratTokens()
    for i, path in enumerate(paths):
        cancel.raise_if_set()
        text = f"{PHASE_TOKENS} {i + 1}/{len(paths)}: {path.name}"
        try:
            image = load_image(path)
        except ImageReadError as exc:
            out.skipped.append((str(path), exc.reason))
            yield Progress((i + 1) / len(paths), f"{text} skipped ({exc.reason})")
            continue
        grid = yield from rescaled(crop_tokens(segmenter, image, backbone, weights_path=weights_path,
                                               grid=tiling.grid, crop=tiling.crop, input_size=tiling.crop_input,
                                               precision=precision, cancel=cancel,
                                               allow_random_weights=allow_random_weights),
                                   i / len(paths), 1 / len(paths), text)
        if dim is not None and grid.tokens.shape[-1] != dim:
            raise CheckpointError(f"the prototypes are {dim} wide but {backbone} tokens are "
                                  f"{grid.tokens.shape[-1]}: build the prototypes with the same backbone")
        if out.first is None:
            out.first = grid
        out.paths.append(path)
        out.tokens.append(grid.tokens)
    return out


class ProbeIndicators:
    """``evaluate(model, epoch)`` of the training loop: collapse indicators on a fixed probe set.

    For each probe quadrat the narrow ViT's received attention (all blocks and heads, step 6) is reshaped to
    the crop grid (rows, cols); :func:`~protolens.core.indicators.epoch_indicators` gives entropy, border share
    and the IoU of the crop masks (threshold t) with those of the previous epoch. The previous masks are kept
    between epochs; after a resume (or whenever they are not those of ``epoch - 1``) they are recomputed from
    the run's ``epoch_###.safetensors`` of ``epoch - 1``, so ``iou_previous`` is NaN only at epoch 1.
    """

    def __init__(self, tokens: Sequence[np.ndarray], run: RunFolder, arch: Any, threshold: float) -> None:
        self.tokens = [np.ascontiguousarray(t, dtype=np.float32) for t in tokens]
        self.run, self.arch, self.threshold = run, arch, threshold
        self.masks: list[np.ndarray] | None = None
        self.epoch = 0

    def received(self, model: Any) -> list[np.ndarray]:
        """Raw received attention of each probe quadrat, (rows, cols) float32 (float32 compute, no autocast)."""
        import torch

        device = next(model.parameters()).device
        rows, cols = self.arch.grid
        maps = []
        for grid in self.tokens:
            batch = torch.from_numpy(grid.reshape(1, rows * cols, -1)).to(device)
            maps.append(model.received_attention(batch)[0].reshape(rows, cols).cpu().numpy())
        return maps

    def _masks_of(self, epoch: int, device: Any) -> list[np.ndarray]:
        from protolens.models.prototype.narrow_vit import NarrowViT
        from protolens.models.training import load_checkpoint

        model = load_checkpoint(self.run.checkpoint_path(epoch), NarrowViT(self.arch)).to(device).eval()
        return [crop_mask(r, self.threshold) for r in self.received(model)]

    def __call__(self, model: Any, epoch: int) -> dict[str, float]:
        if epoch > 1 and self.epoch != epoch - 1:
            self.masks = self._masks_of(epoch - 1, next(model.parameters()).device)
        indicators, self.masks = epoch_indicators(self.received(model), self.masks, self.threshold)
        self.epoch = epoch
        indicators.pop("loss")  # the loop adds the epoch's training loss
        return indicators


def _mse_loss(prototypes: np.ndarray) -> Any:
    """``loss_fn(model, tokens, device)``: MSE(Z_hat, P) in float32 (arXiv 2512.19957, step 5)."""
    import torch
    import torch.nn.functional as F

    target = torch.from_numpy(prototypes).unsqueeze(0)
    on_device: dict[str, torch.Tensor] = {}

    def loss_fn(model: Any, tokens: torch.Tensor, device: str) -> torch.Tensor:
        if device not in on_device:
            on_device[device] = target.to(device)
        return F.mse_loss(model(tokens.to(device, non_blocking=True)).float(), on_device[device])

    return loss_fn


def _narrow_vit(grid: tuple[int, int], prototypes: np.ndarray, *, width: int, depth: int, heads: int,
                seed: int) -> tuple[Any, Any]:
    """NarrowViTConfig and a model initialised from ``seed`` (global torch RNG left as it was). Raises ParamError."""
    import torch

    from protolens.models.prototype.narrow_vit import NarrowViT, NarrowViTConfig

    if depth < 1 or heads < 1 or width < 0:
        raise ParamError(f"depth {depth} and heads {heads} must be >= 1, width {width} >= 0")
    arch = NarrowViTConfig(grid=grid, prototypes=int(prototypes.shape[0]), token_dim=int(prototypes.shape[1]),
                           width=width, depth=depth, heads=heads)
    if arch.block_width % heads or arch.block_width % 4:
        raise ParamError(f"narrow ViT width {arch.block_width} must be a multiple of 4 and of {heads} heads")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return arch, NarrowViT(arch)


def _prototype_info(path: Path, prototypes: np.ndarray) -> dict[str, Any]:
    return {"file": str(path.resolve()), "sha256": sha256_file(path), "k": int(prototypes.shape[0]),
            "dim": int(prototypes.shape[1])}


def train_prototype_vit(segmenter: Segmenter, quadrats: str | Path | Sequence[str | Path],
                        prototypes_file: str | Path, run_dir: str | Path, *, epochs: int,
                        tiling: Tiling, backbone: str = DEFAULT_MODEL,
                        weights_path: str | Path | None = None, depth: int = 6, heads: int = 12, width: int = 0,
                        lr: float = 1e-4, accumulation: int = 8, warmup_steps: int | None = None, seed: int = 0,
                        probe: int = 4, threshold: float = 0.6, precision: str = "auto",
                        allow_random_weights: bool = False,
                        cancel: CancelToken | None = None) -> Generator[Progress, None, Any]:
    """Train (or resume) a prototype-guided narrow ViT into ``run_dir`` (arXiv 2512.19957, steps 3-5).

    Parameters
    ----------
    segmenter : Segmenter
        Its device pool computes the tile tokens (one job per uncached quadrat) and runs the whole training as
        one job (so a GUI may drive this generator from a worker thread).
    quadrats : path or sequence of paths
        A folder of quadrat photos, or photos and folders; sorted by absolute path. Unreadable photos are
        skipped and listed in the summary's ``skipped``.
    prototypes_file : path
        ``prototypes.safetensors`` with tensor ``"prototypes"`` (K, D) float32 (``protolens prototypes build``).
    run_dir : path
        The run folder (:class:`~protolens.core.runs.RunFolder`); a run with checkpoints is resumed.
    epochs : int
        Epochs in all (the paper stopped early, at 10-15; later epochs attend to quadrat frames).
    tiling : Tiling
        Photo size (W, H), crop side and crop input side (step 3); grid = (H // crop, W // crop).
    backbone, weights_path, allow_random_weights
        Backbone of the tile tokens (a vit-attention ``model``), its weights file (default: the local cache).
    depth, heads, width : int
        Narrow ViT blocks, heads and block width (0 = the token width D) (step 4).
    lr, accumulation, warmup_steps, seed, precision
        See :class:`~protolens.models.training.TrainConfig` (AdamW, min_lr 1e-6, weight decay 0.05).
    probe : int
        The first ``probe`` quadrats are the fixed probe set of the collapse indicators (0 = none).
    threshold : float
        Crop-mask threshold t in [0, 1] of the IoU indicator (step 6).
    cancel : CancelToken, optional
        Stops between quadrats or micro-batches; the completed epochs are kept.

    Yields
    ------
    Progress
        ``"tile tokens i/n: name"`` (fraction of the token phase), then ``"epoch e/E step s/S loss L"``
        (fraction of the whole run).

    Returns
    -------
    protolens.models.training.TrainSummary

    Raises
    ------
    ParamError
        Bad settings, or no quadrats.
    CheckpointError
        Unusable prototypes (wrong file, D not the backbone's token width) or a run folder of another model,
        data or settings.
    ProtolensError
        No readable quadrat; also WeightsNotFoundError, Cancelled, StoreWriteError.
    """
    from protolens.models.training import TrainConfig, train
    from protolens.services.prototypes import load_prototypes

    cancel = cancel or CancelToken()
    config = TrainConfig(epochs=epochs, lr=lr, accumulation=accumulation, warmup_steps=warmup_steps, seed=seed,
                         precision=precision)
    if probe < 0 or not 0.0 <= threshold <= 1.0:
        raise ParamError(f"probe {probe} must be >= 0 and threshold {threshold} in [0, 1]")
    prototypes_file = Path(prototypes_file)
    prototypes, _ = load_prototypes(prototypes_file)
    paths = quadrat_paths(quadrats)
    if not paths:
        raise ParamError(f"no photos in {quadrats}")
    data = yield from quadrat_tokens(segmenter, paths, tiling, backbone=backbone, weights_path=weights_path,
                                     precision=precision, allow_random_weights=allow_random_weights,
                                     cancel=cancel, dim=int(prototypes.shape[1]))
    if data.first is None:
        path, reason = data.skipped[0]
        raise ProtolensError(f"none of the {len(paths)} quadrat photos could be read (first: {path}: {reason})")
    arch, model = _narrow_vit(tiling.grid, prototypes, width=width, depth=depth, heads=heads, seed=seed)
    run = RunFolder(run_dir)
    run_config = {"model": MODEL_ID, "narrow_vit": arch.to_json(), "tiling": tiling.to_json(),
                  "backbone": {"model": backbone, "weights": data.first.weights_id,
                               "weights_sha256": data.first.weights_sha256},
                  "prototypes": _prototype_info(prototypes_file, prototypes),
                  "quadrats": [str(p) for p in data.paths], "probe": [str(p) for p in data.paths[:probe]],
                  "threshold": threshold}
    samples = [_as_sample(t) for t in data.tokens]
    evaluate = ProbeIndicators(data.tokens[:probe], run, arch, threshold) if probe else None
    loss_fn = _mse_loss(prototypes)

    def job(device: str) -> Generator[Progress, None, Any]:
        return (yield from train(model, samples, loss_fn, config, run, device=device, cancel=cancel,
                                 run_config=run_config, evaluate=evaluate))

    summary = yield from segmenter.pool().run(job, cancel=cancel, prefer=segmenter.device)
    return dataclasses.replace(summary, skipped=tuple(data.skipped))


def _as_sample(tokens: np.ndarray) -> Any:
    """(rows, cols, D) tokens -> a (1, rows*cols, D) float32 CPU tensor, row-major (row = y, col = x)."""
    import torch

    rows, cols, dim = tokens.shape
    return torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.float32).reshape(1, rows * cols, dim))
