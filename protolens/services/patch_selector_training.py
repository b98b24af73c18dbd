"""Training SVIP's patch selector against attention-rollout targets (arXiv 2503.10252, Sec. 3.2; METHODS.md §2).

1. Rollout targets: every photo is resized to ``input`` x ``input`` and run once through the patch-selection
   backend's ViT (its model list, weights look-up and dtype rule); the SVIP rollout (float32) and the raw
   patch embeddings (before the position embedding) are cached on disk per (image SHA-256, model, weights,
   input, dtype), so reruns and resumed runs never run the ViT again.
2. Samples: per photo the (S, 4d) super-patch features (2x2 groups of raw embeddings,
   :func:`protolens.core.super_patches.super_patch_features`) and the (S,) targets, 1 = not among the top
   ``keep`` super-patches by rollout, grouped like the features (:func:`~protolens.core.super_patches.
   super_patch_scores`, the reference's grouping bug fixed).
3. :class:`~protolens.models.patch_selector.PatchSelector` (4d -> 512 -> ReLU -> 1 -> sigmoid) trained with BCE
   in the generic loop :func:`protolens.models.training.train` (AdamW, warm-up + cosine per update, per-epoch
   checkpoints, resume, bf16 on CUDA), run config ``{"model": "patch-selector", ...}``.
4. After every epoch: ``agreement_iou`` = mean over the held-out photos of IoU(kept by the selector's top
   ``keep``, kept by the rollout's top ``keep``), into the epoch's indicators.

Torch is imported only when training starts, so the GUI may import this module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protolens.core.cache import DiskCache, default_cache_dir
from protolens.core.errors import ImageReadError, ParamError, ProtolensError
from protolens.core.hashing import sha256_json
from protolens.core.jobs import CancelToken, Progress
from protolens.core.params import make_params
from protolens.core.runs import RunFolder
from protolens.core.super_patches import kept_iou, selection_targets, super_patch_scores, top_m
from protolens.models.api import RunContext
from protolens.services.segment import Segmenter, load_image
from protolens.services.training import quadrat_paths

MODEL_ID = "patch-selector"
"""``"model"`` of the run config."""
BACKEND = "patch-selection"
"""The backend whose model list, weights and feature extraction the targets use."""
DEFAULT_MODEL = "vit_small_patch16_224.dino"
PHASE_TARGETS = "rollout targets"
"""Progress texts of the target phase start with this; those of the training with ``"epoch "``."""


@dataclass
class RolloutTargets:
    """Per readable photo (sorted by path): ``scores`` (g, g) float32 rollout, ``embeddings`` (g, g, d) float32.

    ``skipped`` lists unreadable photos as (path, reason); ``weights_id`` / ``weights_sha256`` name the backbone.
    """

    paths: list[Path] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    weights_id: str = "none"
    weights_sha256: str = "none"


def rollout_targets(segmenter: Segmenter, paths: Sequence[Path], *, model: str, input_size: int,
                    weights_path: str | Path | None, precision: str, allow_random_weights: bool,
                    cancel: CancelToken, cache: DiskCache | None | str = "default",
                    ) -> Generator[Progress, None, RolloutTargets]:
    """Rollout scores and raw patch embeddings of every photo, from the disk cache when there.

    Raises BackendUnavailableError, ParamError (model, precision, odd grid), WeightsNotFoundError, Cancelled.
    """
    backend = segmenter.registry.create(BACKEND)
    params = make_params(backend.manifest.params, {"model": model, "precision": precision, "input": input_size})
    ctx = RunContext(dtype=params.precision, cancel=cancel, allow_random_weights=allow_random_weights,
                     weights_path=Path(weights_path) if weights_path is not None else None)
    out = RolloutTargets()
    out.weights_id, out.weights_sha256 = backend.weights_identity(params, ctx)
    disk = DiskCache(default_cache_dir() / "features") if cache == "default" else cache
    for i, path in enumerate(paths):
        cancel.raise_if_set()
        text = f"{PHASE_TARGETS} {i + 1}/{len(paths)}: {path.name}"
        try:
            image = load_image(path)
        except ImageReadError as exc:
            out.skipped.append((str(path), exc.reason))
            yield Progress((i + 1) / len(paths), f"{text} skipped ({exc.reason})")
            continue
        key = sha256_json({"kind": "svip-rollout/1", "image": image.meta.sha256, "model": model,
                           "weights": out.weights_sha256, "input": input_size, "precision": precision})
        hit = disk.get(key) if disk is not None else None
        if hit is None:
            def job(device: str, image: Any = image, text: str = text) -> Generator[Progress, None, Any]:
                device_ctx = dataclasses.replace(ctx, device=device)
                scores, embeddings, _ = backend.features(image.rgb, params, device_ctx, rollout=True)
                yield Progress(1.0, text)
                return scores, embeddings

            scores, embeddings = yield from segmenter.pool().run(job, cancel=cancel, prefer=segmenter.device)
            if disk is not None:
                disk.put(key, {"scores": scores, "embeddings": embeddings}, {"model": model})
        else:
            scores, embeddings = hit[0]["scores"], hit[0]["embeddings"]
        out.paths.append(path)
        out.scores.append(np.asarray(scores, np.float32))
        out.embeddings.append(np.asarray(embeddings, np.float32))
        yield Progress((i + 1) / len(paths), text)
    return out


def split_holdout(count: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) indices: ``round(count * fraction)`` photos (at least 1 when fraction > 0 and count
    >= 2, at most count - 1) drawn by ``numpy.random.default_rng(seed)``; both lists sorted. With fewer than
    2 photos or fraction 0 nothing is held out (the indicator is then measured on the training photos)."""
    if not 0.0 <= fraction < 1.0:
        raise ParamError(f"--val-fraction must be in [0, 1), not {fraction}")
    held = 0 if count < 2 or fraction == 0 else min(count - 1, max(1, round(count * fraction)))
    order = np.random.default_rng(seed).permutation(count)
    return sorted(int(i) for i in order[held:]), sorted(int(i) for i in order[:held])


class AgreementIoU:
    """``evaluate(model, epoch)``: mean IoU of the selector's and the rollout's top-``keep`` kept sets."""

    def __init__(self, embeddings: Sequence[np.ndarray], scores: Sequence[np.ndarray], keep: int) -> None:
        self.embeddings = list(embeddings)
        self.truth = [top_m(super_patch_scores(s), keep) for s in scores]
        self.keep = keep

    def __call__(self, model: Any, epoch: int) -> dict[str, float]:
        from protolens.models.patch_selector import predict_not_kept

        device = str(next(model.parameters()).device)
        ious = [kept_iou(top_m(1.0 - predict_not_kept(model, e, device), self.keep), t)
                for e, t in zip(self.embeddings, self.truth, strict=True)]
        return {"agreement_iou": float(np.mean(ious)) if ious else float("nan")}


def train_patch_selector(segmenter: Segmenter, images: str | Path | Sequence[str | Path], run_dir: str | Path, *,
                         epochs: int, model: str = DEFAULT_MODEL, keep: int = 40, input_size: int = 224,
                         weights_path: str | Path | None = None, lr: float = 1e-3, accumulation: int = 8,
                         warmup_steps: int | None = None, seed: int = 0, val_fraction: float = 0.2,
                         precision: str = "auto", allow_random_weights: bool = False,
                         cancel: CancelToken | None = None) -> Generator[Progress, None, Any]:
    """Train (or resume) SVIP's patch selector into ``run_dir`` against rollout targets (arXiv 2503.10252, 3.2).

    Parameters
    ----------
    segmenter : Segmenter
        Its device pool runs the ViT (one job per uncached photo) and the training (one job).
    images : path or sequence of paths
        A folder of photos, or photos and folders; sorted by absolute path; unreadable ones skipped.
    run_dir : path
        The run folder; a run with checkpoints is resumed.
    epochs : int
        Epochs in all.
    model, weights_path, precision, allow_random_weights
        The patch-selection backend's ``model`` (a timm ViT), its weights file (default: the local cache),
        ``precision`` (autocast of the ViT and of the training; the rollout is float32).
    keep : int
        M, super-patches kept per photo (1 .. (input / patch / 2)^2; 40 of 49 in SVIP for CUB).
    input_size : int
        Photos are resized to input x input; input / patch must be even.
    lr, accumulation, warmup_steps, seed
        See :class:`~protolens.models.training.TrainConfig` (one photo = one micro-batch of its super-patches).
    val_fraction : float
        Share of photos held out for ``agreement_iou`` (see :func:`split_holdout`).

    Returns
    -------
    protolens.models.training.TrainSummary

    Raises
    ------
    ParamError
        No photos, bad settings (keep outside 1..S, odd grid, val fraction).
    CheckpointError
        A run folder of another model, data or settings.
    ProtolensError
        No readable photo; also WeightsNotFoundError, Cancelled, StoreWriteError.
    """
    from protolens.models.patch_selector import selector_features, selector_loss, stack_samples
    from protolens.models.training import TrainConfig, train

    cancel = cancel or CancelToken()
    config = TrainConfig(epochs=epochs, lr=lr, accumulation=accumulation, warmup_steps=warmup_steps, seed=seed,
                         precision=precision if precision in ("auto", "float32", "bfloat16") else "auto")
    paths = quadrat_paths(images)
    if not paths:
        raise ParamError(f"no photos in {images}")
    data = yield from rollout_targets(segmenter, paths, model=model, input_size=input_size,
                                      weights_path=weights_path, precision=precision,
                                      allow_random_weights=allow_random_weights, cancel=cancel)
    if not data.paths:
        path, reason = data.skipped[0]
        raise ProtolensError(f"none of the {len(paths)} photos could be read (first: {path}: {reason})")
    rows, cols = data.scores[0].shape
    count = (rows // 2) * (cols // 2)
    if not 1 <= keep <= count:
        raise ParamError(f"--keep {keep}: the {rows}x{cols} patch grid has {count} super-patches (keep 1..{count})")
    train_ids, held_ids = split_holdout(len(data.paths), val_fraction, seed)
    probe = held_ids or train_ids
    features = [selector_features(e) for e in data.embeddings]
    targets = [selection_targets(super_patch_scores(s), keep) for s in data.scores]
    selector = _new_selector(int(features[0].shape[-1]), seed)
    run = RunFolder(run_dir)
    run_config = {"model": MODEL_ID, "selector": selector.config(), "input": input_size, "keep": keep,
                  "grid": [rows, cols], "super_grid": [rows // 2, cols // 2],
                  "backbone": {"model": model, "weights": str(weights_path) if weights_path else data.weights_id,
                               "weights_sha256": data.weights_sha256},
                  "images": [str(data.paths[i]) for i in train_ids],
                  "validation": [str(data.paths[i]) for i in held_ids],
                  "targets": "SVIP rollout (head mean, (A+I)/2, CLS row), 2x2 super-patch mean, 1 = not in top keep"}
    samples = stack_samples([features[i] for i in train_ids], [targets[i] for i in train_ids])
    evaluate = AgreementIoU([data.embeddings[i] for i in probe], [data.scores[i] for i in probe], keep)

    def job(device: str) -> Generator[Progress, None, Any]:
        return (yield from train(selector, samples, selector_loss, config, run, device=device, cancel=cancel,
                                 run_config=run_config, evaluate=evaluate))

    summary = yield from segmenter.pool().run(job, cancel=cancel, prefer=segmenter.device)
    return dataclasses.replace(summary, skipped=tuple(data.skipped))


def _new_selector(in_dim: int, seed: int) -> Any:
    """A PatchSelector initialised from ``seed`` (the global torch RNG left as it was)."""
    import torch

    from protolens.models.patch_selector import PatchSelector

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PatchSelector(in_dim)
