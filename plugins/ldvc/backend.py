"""ldvc backend: per-class maps and a label map from a trained LDVC checkpoint (arXiv 2403.08426).

Weights: ``ctx.weights_path`` is an epoch checkpoint ``RUN_DIR/epoch_###.safetensors`` or a run folder (then its
chosen epoch, else the last: :func:`protolens.core.runs.resolve_checkpoint`), of a ``protolens train ldvc`` run
(:mod:`protolens.services.ldvc_training`). The run's ``config.json`` gives the class list (``classes``:
``["background", *seen and unseen classes]``, the output channels), the input size S, the decoder settings
(``ldvc``) and the CLIP (``clip``: open_clip model, weights file, SHA-256; ``"random"`` only in tests).

Steps
-----
1. The photo is resized to S x S (aspect ignored, ``cv2.INTER_AREA``, as at training) and normalised with the
   CLIP mean / std (``api.ldvc_image_tensor``).
2. Class embeddings of every run class name (80 ImageNet templates, cached in ``ctx.cache_dir / "clip_text"``,
   METHODS §5 step 1); the unseen classes come from their names alone (zero-shot).
3. LDVC forward (frozen towers, text adapter, local consensus decoder): logits (n, S/p, S/p).
4. The logits are enlarged bilinearly to a grid of the photo's aspect whose longer side is ``max_side``;
   per-class probability = sigmoid(logit) (the per-class sigmoid of the focal + Dice training, §3.4); label =
   argmax over all classes (0 = background).

Result
------
heatmap
    The best non-background class probability per cell (rows, cols) float32 in [0, 1]; suggested threshold 0.5.
heatmaps
    One :class:`Heatmap` per run class (background left out), named by the class.
label_map
    :class:`LabelMap` ids (rows, cols) int32, classes ``["background", *classes]`` (the run's order).
info
    ``run``, ``epoch``, ``checkpoint``, ``checkpoint_sha256``, ``classes``, ``seen``, ``unseen``,
    ``input_size``, ``clip`` (model, weights SHA-256), ``grid`` (logit grid), ``map_size``, ``device``,
    ``dtype``, ``method``.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from protolens.core.cache import DiskCache
from protolens.core.errors import CheckpointError, WeightsNotFoundError
from protolens.core.jobs import Progress
from protolens.core.layers import LabelMap
from protolens.core.prompts import ClassPrompt
from protolens.core.runs import EpochRecord, RunFolder, resolve_checkpoint
from protolens.core.types import BackendResult, Heatmap
from protolens.models import api
from protolens.models.api import Backend, RunContext

TEXT_DISK_BYTES = 64 * 1024**2
MODELS_KEPT = 2


@dataclass(frozen=True)
class LdvcRun:
    """What one epoch checkpoint of an LDVC run needs at inference (read from its run folder)."""

    run: RunFolder
    record: EpochRecord
    sha256: str
    classes: list[str]
    seen: list[str]
    unseen: list[str]
    input_size: int
    clip: dict[str, Any]
    ldvc: dict[str, Any]

    @property
    def weights_id(self) -> str:
        return f"{self.run.path.name}:epoch_{self.record.epoch:03d}"


def read_ldvc_run(weights_path: Path | None) -> LdvcRun:
    """The run and epoch of ``weights_path`` (checkpoint or run folder), checked against its config.

    Raises WeightsNotFoundError (no path) or CheckpointError (not a run, not an LDVC run, incomplete config,
    or a checkpoint whose SHA-256 differs from the one its metadata recorded).
    """
    if weights_path is None:
        raise WeightsNotFoundError("ldvc needs a training checkpoint: pass --weights RUN_DIR/epoch_###.safetensors "
                                   "or a run folder (protolens train ldvc)")
    run, record = resolve_checkpoint(weights_path)
    config = run.config()
    if config.get("model") != "ldvc":
        raise CheckpointError(f"{run.config_path}: a {config.get('model')!r} run, not an LDVC run "
                              "(protolens train ldvc)")
    try:
        classes = [str(c) for c in config["classes"]]
        info = LdvcRun(run, record, "", classes, list(config["seen"]), list(config["unseen"]),
                       int(config["input_size"]), dict(config["clip"]), dict(config["ldvc"]))
        str(info.clip["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{run.config_path}: incomplete LDVC run config ({type(exc).__name__}: {exc})") from None
    if len(classes) < 2 or classes[0] != "background":
        raise CheckpointError(f"{run.config_path}: classes must be background and at least one class")
    sha = api.weights_sha256(record.checkpoint)
    if record.sha256 and record.sha256 != sha:
        raise CheckpointError(f"{record.checkpoint}: its SHA-256 differs from the one recorded in "
                              f"{run.meta_path(record.epoch).name} (rewritten or damaged)")
    return replace(info, sha256=sha)


def clip_file(info: LdvcRun, params: Any, allow_random: bool) -> tuple[Path | None, str]:
    """(CLIP weights path or None for the run's random CLIP, SHA-256) of the run, checked against the record.

    Raises WeightsNotFoundError (the file is gone, or random weights not allowed) or CheckpointError (a file
    whose SHA-256 is not the run's).
    """
    wanted = str(info.clip.get("weights_sha256", ""))
    given = params.clip_weights or info.clip.get("weights")
    if wanted == "random" and not params.clip_weights:
        if not allow_random:
            raise WeightsNotFoundError(f"{info.run.path} was trained on a random CLIP (a test run); "
                                       "pass --allow-random-weights to use it")
        return None, "random"
    if not given:
        raise WeightsNotFoundError(f"{info.run.config_path}: no CLIP weights recorded; give --clip-weights FILE")
    path = api.resolve_weights(None, given)
    sha = api.weights_sha256(path)
    if wanted and sha != wanted:
        raise CheckpointError(f"{path}: CLIP weights SHA-256 {sha[:12]}... differ from the run's {wanted[:12]}... "
                              f"({info.clip.get('model')}, {info.clip.get('weights')})")
    return path, sha


def map_size(image_size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(rows, cols) of the class maps: the photo's (height, width) scaled so the longer side is ``max_side``
    (never larger than the photo), at least 1."""
    height, width = image_size
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def class_maps(logits: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Logits (n, g_rows, g_cols) float32 -> (probabilities (n, rows, cols) float32 = sigmoid of the bilinearly
    enlarged logits, label ids (rows, cols) int32 = argmax over the classes). ``size`` = (rows, cols)."""
    rows, cols = size
    planes = np.ascontiguousarray(np.moveaxis(logits.astype(np.float32), 0, -1))
    big = cv2.resize(planes, (cols, rows), interpolation=cv2.INTER_LINEAR)
    big = big.reshape(rows, cols, logits.shape[0])
    labels = big.argmax(axis=-1).astype(np.int32)
    probabilities = 1.0 / (1.0 + np.exp(-np.clip(big, -60.0, 60.0)))
    return np.moveaxis(probabilities, -1, 0).astype(np.float32), labels


class Ldvc(Backend):
    """Class maps and label map of a trained LDVC checkpoint (arXiv 2403.08426)."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str, str], Any] = {}

    def weights_identity(self, params: Any, ctx: RunContext) -> tuple[str, str]:
        """(``<run folder name>:epoch_###``, the checkpoint's SHA-256): two epochs never share a result key."""
        info = read_ldvc_run(ctx.weights_path)
        return info.weights_id, info.sha256

    def prepare(self, params: Any, ctx: RunContext) -> None:
        """Check the checkpoint and the run's CLIP, and load the model, before the first photo."""
        info = read_ldvc_run(ctx.weights_path)
        self._model(info, params, ctx)

    def _model(self, info: LdvcRun, params: Any, ctx: RunContext) -> Any:
        path, clip_sha = clip_file(info, params, ctx.allow_random_weights)
        key = (info.sha256, clip_sha, ctx.device)
        model = self._models.get(key)
        if model is None:
            clip = api.load_clip(str(info.clip["model"]), path, ctx.device,
                                 weights_key=clip_sha if path is not None else None)
            model = api.LDVC(clip, api.LDVCConfig.from_json(info.ldvc))
            api.load_checkpoint(info.record.checkpoint, model)
            model = model.to(ctx.device).eval().requires_grad_(False)
            while len(self._models) >= MODELS_KEPT:
                self._models.pop(next(iter(self._models)))
            self._models[key] = model
        return model

    def run(self, image: np.ndarray, params: Any, ctx: RunContext) -> Generator[Progress, None, BackendResult]:
        info = read_ldvc_run(ctx.weights_path)
        yield Progress(0.0, f"loading epoch {info.record.epoch} of {info.run.path.name}")
        model = self._model(info, params, ctx)
        ctx.cancel.raise_if_set()
        yield Progress(0.2, f"class names ({len(info.classes)})")
        cache = DiskCache(ctx.cache_dir / "clip_text", TEXT_DISK_BYTES) if ctx.cache_dir is not None else None
        texts = np.concatenate(api.encode_texts(model.clip, [ClassPrompt(c, (c,)) for c in info.classes],
                                                device=ctx.device, cache=cache), axis=0)
        ctx.cancel.raise_if_set()
        yield Progress(0.5, "decoder")
        size = info.input_size
        resized = cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=cv2.INTER_AREA)
        pixels = api.ldvc_image_tensor(resized, size, model.clip).unsqueeze(0).to(ctx.device)
        dtype = params.precision if params.precision != "auto" else ctx.resolved_dtype()
        with api.autocast(ctx.device, dtype):
            logits = model(pixels, texts)
        logits = logits[0].float().cpu().numpy()
        probabilities, labels = class_maps(logits, map_size(image.shape[:2], params.max_side))
        yield Progress(1.0, "done")
        return self._result(image, info, probabilities, labels, logits, params, ctx, dtype)

    @staticmethod
    def _result(image: np.ndarray, info: LdvcRun, probabilities: np.ndarray, labels: np.ndarray,
                logits: np.ndarray, params: Any, ctx: RunContext, dtype: str) -> BackendResult:
        size = image.shape[:2]
        names = info.classes[1:]
        heatmaps = {name: Heatmap(probabilities[i + 1], size) for i, name in enumerate(names)}
        result_info = {"run": str(info.run.path), "epoch": info.record.epoch,
                       "checkpoint": info.record.checkpoint.name, "checkpoint_sha256": info.sha256,
                       "classes": list(info.classes), "seen": info.seen, "unseen": info.unseen,
                       "input_size": info.input_size,
                       "clip": {"model": info.clip.get("model"), "weights_sha256": info.clip.get("weights_sha256")},
                       "grid": list(logits.shape[1:]), "map_size": list(labels.shape), "device": ctx.device,
                       "dtype": dtype, "method": "LDVC arXiv 2403.08426: sigmoid class maps, argmax label map"}
        return BackendResult(Heatmap(probabilities[1:].max(axis=0), size), suggested_threshold=0.5,
                             info=result_info, heatmaps=heatmaps,
                             label_map=LabelMap(labels, ["background", *names], size))
