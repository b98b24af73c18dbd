"""SVIP patch selection backend (arXiv 2503.10252, Sec. 3.2; METHODS.md §2): kept / dropped super-patches.

Steps
-----
1. The photo is resized to ``input`` x ``input`` (aspect ignored, as SVIP's 224 px crops) and normalised; the
   patch grid (g, g), g = input / patch, must be even.
2. Without a selector: one forward pass gives the attention rollout as SVIP codes it (head mean, (A + I)/2 rows
   renormalised, R_l = A_l R_(l-1), CLS row without the prefix columns; float32) and, from a hook, the raw patch
   embeddings. Patch scores are grouped 2x2 into (g/2, g/2) super-patch scores *like the features*
   (:func:`protolens.core.super_patches.super_patch_scores`: the reference groups the scores by consecutive
   tokens, ``view(7, 7, 4)``, which does not match its 2x2 feature grouping; fixed here).
   With a selector (param ``selector`` = a run folder or epoch checkpoint of ``protolens train
   patch-selector``): only the patch embedding runs (no transformer block, no rollout); the selector's MLP
   gives P(not kept) per super-patch and the super-patch score is 1 - P.
3. The top M (``keep``, clipped to the super-patch count) are kept (:func:`~protolens.core.super_patches.top_m`).

Result
------
heatmap
    Per super-patch rank score in [0, 1] (1 = highest score, evenly spaced by rank), (g/2, g/2) float32 drawn
    with *nearest* interpolation (one flat block per super-patch).
suggested_threshold
    :func:`~protolens.core.super_patches.keep_threshold`: ``heatmap >= threshold`` is exactly the top M. The
    display threshold slider therefore works as a live M slider: threshold t keeps the super-patches whose
    rank score is >= t (M = their number), re-thresholding the cached result without rerunning any model.
    Changing the ``keep`` parameter reruns the backend, but the scores come from this backend's memory cache.
regions
    Two regions on the (g/2, g/2) super-patch grid: "kept" (the top M) and "dropped" (the rest), scores 1.
extras
    ``super_scores`` (g/2, g/2) float32 (mean rollout of the 2x2 block, or 1 - P(not kept)); ``kept`` (g/2, g/2)
    bool; with the rollout ``score`` (g, g) float32 raw rollout per patch.
info
    ``selection`` ("rollout" or "selector"), ``keep`` (M used), ``super_patches``, ``kept_indices`` (row-major
    flat indices, best first), ``super_scores`` (nested list), grid sizes, model, input, device, dtype, and with
    a selector its run, epoch and checkpoint SHA-256.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from protolens.core.cache import MemoryCache
from protolens.core.errors import CheckpointError, ParamError
from protolens.core.hashing import sha256_json
from protolens.core.jobs import Progress
from protolens.core.layers import Regions
from protolens.core.runs import resolve_checkpoint
from protolens.core.super_patches import keep_threshold, rank_heatmap, rank_order, super_patch_scores, top_m
from protolens.core.types import BackendResult, Heatmap
from protolens.models import api
from protolens.models.api import Backend, RunContext

RUN_MODEL_ID = "patch-selector"
"""``"model"`` of a patch-selector run's config.json."""


def read_selector_run(selector: str) -> dict[str, Any]:
    """The run, epoch, checkpoint, its SHA-256 and the run's selector/backbone/input config of ``selector``.

    Raises CheckpointError for a path that is not a patch-selector run folder or epoch checkpoint.
    """
    run, record = resolve_checkpoint(Path(selector).expanduser())
    config = run.config()
    if config.get("model") != RUN_MODEL_ID:
        raise CheckpointError(f"{run.path}: a {config.get('model')!r} run, not a patch-selector run")
    try:
        backbone, arch, size = dict(config["backbone"]), dict(config["selector"]), int(config["input"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{run.config_path}: incomplete run config ({type(exc).__name__}: {exc})") from None
    sha = api.weights_sha256(record.checkpoint)
    if record.sha256 and record.sha256 != sha:
        raise CheckpointError(f"{record.checkpoint}: its SHA-256 differs from the one its metadata recorded")
    return {"run": run, "record": record, "sha256": sha, "backbone": backbone, "selector": arch, "input": size}


class PatchSelection(Backend):
    """Rollout (or trained-selector) super-patch selection with a live top-M threshold."""

    def __init__(self) -> None:
        self._features: MemoryCache[tuple[np.ndarray | None, np.ndarray]] = MemoryCache(
            64, max_bytes=256 * 1024**2, size_of=lambda e: e[1].nbytes + (e[0].nbytes if e[0] is not None else 0))

    # --- weights -----------------------------------------------------------------------------------
    def _backbone(self, params: Any, ctx: RunContext) -> tuple[str, Any, str, str]:
        """(model name, weights path or None = random, weights id, weights sha256) of the ViT to run."""
        if params.selector:
            run = read_selector_run(params.selector)
            model = str(run["backbone"]["model"])
            path, sha = api.resolve_backbone(run["backbone"], allow_random=ctx.allow_random_weights)
            return model, path, str(run["backbone"].get("weights") or model), sha
        return (params.model, *self.catalogue_weights(params, ctx))

    def weights_identity(self, params: Any, ctx: RunContext) -> tuple[str, str]:
        """The backbone's (id, sha256); with a selector ``<run>:epoch_###`` and a SHA-256 over both files."""
        model, _, weights_id, sha = self._backbone(params, ctx)
        if not params.selector:
            return weights_id, sha
        run = read_selector_run(params.selector)
        return (f"{run['run'].path.name}:epoch_{run['record'].epoch:03d}",
                sha256_json({"backbone": sha, "selector": run["sha256"], "model": model}))

    def load_model(self, params: Any, ctx: RunContext) -> Any:
        """The ViT this result runs (eval mode, ``ctx.device``); reused per (model, weights, device)."""
        model, path, _, sha = self._backbone(params, ctx)
        return api.load_vit(model, path, ctx.device, weights_key=sha if path is not None else None)

    def prepare(self, params: Any, ctx: RunContext) -> None:
        self.load_model(params, ctx)

    # --- features ----------------------------------------------------------------------------------
    def features(self, image: np.ndarray, params: Any, ctx: RunContext, *,
                 rollout: bool) -> tuple[np.ndarray | None, np.ndarray, str]:
        """(rollout (g, g) float32 or None, raw embeddings (g, g, d) float32, "memory" or "computed").

        Cached in memory per (image, model, weights, input, dtype) when ``ctx.image_id`` is known, so a new
        ``keep`` never reruns the model. Raises ParamError when input / patch is odd.
        """
        model_name, _, _, sha = self._backbone(params, ctx)
        model = self.load_model(params, ctx)
        spec = api.vit_spec(model)
        size = read_selector_run(params.selector)["input"] if params.selector else params.input
        grid = int(round(size / spec.patch_size))
        if grid < 2 or grid % 2:
            raise ParamError(f"input {size} px gives a {grid}x{grid} grid of {spec.patch_size}-px patches: it must "
                             "be even (>= 2) to form 2x2 super-patches")
        dtype = params.precision if params.precision != "auto" else ctx.resolved_dtype()
        key = None if ctx.image_id is None else sha256_json({"image": ctx.image_id, "model": model_name,
                                                             "weights": sha, "grid": grid, "dtype": dtype})
        hit = self._features.get(key) if key else None
        if hit is not None and (hit[0] is not None or not rollout):
            return hit[0], hit[1], "memory"
        working = api.normalise(api.resize_to_grid(image, grid, grid, spec.patch_size), spec.mean, spec.std)
        scores, embeddings = api.image_features(model, working, rollout=rollout, device=ctx.device, dtype=dtype)
        if key:
            self._features.put(key, (scores, embeddings))
        return scores, embeddings, "computed"

    # --- run ---------------------------------------------------------------------------------------
    def run(self, image: np.ndarray, params: Any, ctx: RunContext) -> Generator[Progress, None, BackendResult]:
        selector = read_selector_run(params.selector) if params.selector else None
        yield Progress(0.05, "patch embeddings (selector)" if selector else "attention rollout")
        scores, embeddings, source = self.features(image, params, ctx, rollout=selector is None)
        ctx.cancel.raise_if_set()
        if selector is not None:
            scores = None  # a cached rollout of the same photo is not what the selector selected by
        if scores is not None:
            super_scores = super_patch_scores(scores)
        else:
            network = api.load_selector(selector["record"].checkpoint, selector["selector"], ctx.device)
            super_scores = (1.0 - api.predict_not_kept(network, embeddings, ctx.device)).astype(np.float32)
        result = selection_result(super_scores, params.keep, image.shape[:2])
        if scores is not None:
            result.extras["score"] = scores.astype(np.float32)
        result.info.update(self._info(params, ctx, selector, scores, embeddings, source))
        yield Progress(1.0, "done")
        return result

    def _info(self, params: Any, ctx: RunContext, selector: dict[str, Any] | None, scores: np.ndarray | None,
              embeddings: np.ndarray, source: str) -> dict[str, Any]:
        model = str(selector["backbone"]["model"]) if selector else params.model
        info = {"selection": "selector" if selector else "rollout", "model": model,
                "grid": list(embeddings.shape[:2]), "embed_dim": int(embeddings.shape[-1]), "features": source,
                "input": selector["input"] if selector else params.input, "device": ctx.device,
                "dtype": params.precision if params.precision != "auto" else ctx.resolved_dtype(),
                "threshold": "heatmap >= threshold keeps exactly the top M (rank scores): the display threshold "
                             "slider is a live M slider over cached scores",
                "method": "SVIP arXiv 2503.10252 Sec. 3.2; rollout as coded (METHODS.md §2); 2x2 score "
                          "grouping matches the features (reference view(7,7,4) bug fixed)"}
        if selector:
            info.update(run=str(selector["run"].path), epoch=selector["record"].epoch,
                        checkpoint=selector["record"].checkpoint.name, checkpoint_sha256=selector["sha256"])
        return info


def selection_result(super_scores: np.ndarray, keep: int, image_size: tuple[int, int]) -> BackendResult:
    """Rank heatmap, top-M threshold, kept/dropped regions and info of (R, C) super-patch scores.

    ``keep`` is clipped to 1..R*C. Returns a BackendResult (see the module docstring).
    """
    count = int(super_scores.size)
    m = max(1, min(int(keep), count))
    kept = top_m(super_scores, m)
    regions = Regions(np.stack([kept, ~kept]), ["kept", "dropped"], np.ones(2, np.float32), image_size)
    order = rank_order(super_scores)
    info = {"keep": m, "keep_requested": int(keep), "super_patches": count, "super_grid": list(super_scores.shape),
            "kept_indices": [int(i) for i in order[:m]],
            "super_scores": np.round(super_scores.astype(np.float64), 7).tolist()}
    return BackendResult(Heatmap(rank_heatmap(super_scores), image_size, "nearest"),
                         suggested_threshold=keep_threshold(count, m), regions=regions,
                         extras={"super_scores": super_scores.astype(np.float32), "kept": kept}, info=info)
