"""ViT attention backend: CLS attention, received attention or attention rollout as a heatmap, at any resolution.

Steps
-----
1. Resize the photo so its longer side is ``long_side`` (aspect kept), both sides multiples of the patch
   size (a non-square patch grid); optionally cut it into overlapping windows of ``tile_size``.
2. Forward the windows in batches; per block, capture the attention from the queries and keys (correct under
   fused attention, METHODS.md §6) and keep a summary: CLS rows (cheap, "cls" mode) or also the attention
   each token receives and the head-fused matrices ("received", "rollout").
3. Aggregate each window (protolens.core.attention), drop CLS and register tokens, blend the windows with
   cosine ramps (protolens.core.tiling), min-max normalise to [0, 1].

Summaries are cached per (image sha256, model, weights sha256, working size, windows, precision): in memory
(with the rollout matrices) and on disk (CLS rows, received attention, tokens), so changing the mode, block,
head or fusion re-aggregates without running the model. Rollout needs the in-memory matrices; after they
were evicted the model runs again. The matrices of all three head fusions are kept in float16; a rollout
with a discard ratio needs float32 (float16 rounding ties change which weights are discarded), so it runs the
model once more and keeps the chosen fusion only, in float32 (less memory than the three float16 ones);
other discard ratios then re-aggregate from it.

Extras: ``score`` (rows, cols) float32 raw blended scores (attention mass, for mass thresholds);
``head_attention`` (heads, rows, cols) float32 raw CLS attention per head of the chosen block (cls mode).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np

from protolens.core.attention import HEAD_FUSIONS, AttentionSummary, aggregate, cls_attention_map, min_max
from protolens.core.cache import DiskCache, MemoryCache
from protolens.core.errors import ParamError
from protolens.core.hashing import sha256_json
from protolens.core.jobs import Progress
from protolens.core.thresholds import otsu_threshold
from protolens.core.tiling import Window, blend, plan_windows
from protolens.core.types import BackendResult, Heatmap
from protolens.models import api
from protolens.models.api import Backend, RunContext

MEMORY_BYTES = 1536 * 1024**2
DISK_BYTES = 1024**3


def _nbytes(entry: tuple[list[AttentionSummary], list[np.ndarray]]) -> int:
    summaries, tokens = entry
    total = sum(t.nbytes for t in tokens)
    for s in summaries:
        total += s.cls_rows.nbytes + (s.received.nbytes if s.received is not None else 0)
        total += sum(m.nbytes for m in s.fused.values())
    return total


def _fused_missing(summaries: list[AttentionSummary], params: Any) -> bool:
    """Whether a rollout with ``params`` needs fused matrices the cached summaries lack (or hold in float16)."""
    if params.mode != "rollout":
        return False
    fused = summaries[0].fused.get(params.head_fusion)
    return fused is None or (params.discard_ratio > 0 and fused.dtype != np.float32)


def _check_selection(params: Any, blocks: int, heads: int) -> None:
    if params.head >= heads:
        raise ParamError(f"--head {params.head}: this model has {heads} heads (0..{heads - 1}, or -1 to fuse)")
    if not -blocks <= params.block < blocks:
        raise ParamError(f"--block {params.block}: this model has {blocks} blocks (0..{blocks - 1}, or -1 = last)")


class ViTAttention(Backend):
    """Attention heatmaps from timm and Hugging Face ViTs, with a feature cache for re-aggregation."""

    def __init__(self) -> None:
        self._memory: MemoryCache[tuple[list[AttentionSummary], list[np.ndarray]]] = MemoryCache(
            16, max_bytes=MEMORY_BYTES, size_of=_nbytes)

    # --- weights ---------------------------------------------------------------------------------
    def _weights(self, params: Any, ctx: RunContext) -> tuple[Any, str, str]:
        """(path or None for random init, weights id, sha256)."""
        return self.catalogue_weights(params, ctx)

    def weights_identity(self, params: Any, ctx: RunContext) -> tuple[str, str]:
        _, weights_id, sha = self._weights(params, ctx)
        return weights_id, sha

    def prepare(self, params: Any, ctx: RunContext) -> None:
        self._model(params, ctx)

    def load_model(self, params: Any, ctx: RunContext) -> Any:
        """The ViT ``params.model`` in eval mode on ``ctx.device``, with the weights :meth:`weights_identity` names.

        Weights: ``ctx.weights_path``, else the local Hugging Face cache, else random (only with
        ``ctx.allow_random_weights``). Built once per (model, weights sha256, device) and reused
        (``api.load_vit``); other services (tile tokens) load their backbone here too.

        Raises
        ------
        WeightsNotFoundError
            No weights found and random weights not allowed.
        CheckpointError
            Unknown model, or weights that do not fit it.
        """
        return self._model(params, ctx)[0]

    def _model(self, params: Any, ctx: RunContext) -> tuple[Any, str]:
        path, _, sha = self._weights(params, ctx)
        model = api.load_vit(params.model, path, ctx.device, weights_key=sha if path is not None else None)
        return model, sha

    # --- features --------------------------------------------------------------------------------
    def _disk(self, ctx: RunContext) -> DiskCache | None:
        return DiskCache(ctx.cache_dir / "features", DISK_BYTES) if ctx.cache_dir is not None else None

    def _cached(self, key: str | None, ctx: RunContext, full: bool,
                mode: str) -> tuple[list[AttentionSummary], list[np.ndarray]] | None:
        if key is None:
            return None
        entry = self._memory.get(key)
        if entry is not None and (entry[0][0].full or not full):
            return entry
        disk = self._disk(ctx)
        hit = disk.get(key) if disk is not None and mode != "rollout" else None
        if hit is None or (full and "received" not in hit[0]):
            return None
        arrays, meta = hit
        summaries = [AttentionSummary(cls_rows=arrays["cls_rows"][i], grid=tuple(meta["grid"]),
                                      num_prefix=int(meta["num_prefix"]),
                                      received=arrays["received"][i] if "received" in arrays else None)
                     for i in range(arrays["cls_rows"].shape[0])]
        entry = (summaries, list(arrays["tokens"]))
        self._memory.put(key, entry)
        return entry

    def _store(self, key: str | None, ctx: RunContext, entry: tuple[list[AttentionSummary], list[np.ndarray]]) -> None:
        if key is None:
            return
        self._memory.put(key, entry)
        disk = self._disk(ctx)
        if disk is None:
            return
        summaries, tokens = entry
        arrays = {"cls_rows": np.stack([s.cls_rows for s in summaries]), "tokens": np.stack(tokens)}
        if summaries[0].full:
            arrays["received"] = np.stack([s.received for s in summaries])
        disk.put(key, arrays, {"grid": list(summaries[0].grid), "num_prefix": summaries[0].num_prefix})

    # --- run -------------------------------------------------------------------------------------
    def run(self, image: np.ndarray, params: Any, ctx: RunContext) -> Generator[Progress, None, BackendResult]:
        yield Progress(0.0, f"loading {params.model}")
        model, weights_sha = self._model(params, ctx)
        spec = api.vit_spec(model)
        _check_selection(params, spec.num_blocks, spec.num_heads)
        dtype = params.precision if params.precision != "auto" else ctx.resolved_dtype()
        patch = spec.patch_size
        rows, cols = api.grid_size(image.shape[0], image.shape[1], params.long_side, patch)
        tile = int(round(params.tile_size / patch)) * patch
        windows = plan_windows(rows * patch, cols * patch, tile, params.overlap, patch)
        full = params.mode != "cls"
        key = None if ctx.image_id is None else sha256_json({
            "image": ctx.image_id, "model": params.model, "weights": weights_sha, "working": [rows, cols],
            "tile": tile, "overlap": params.overlap if len(windows) > 1 else 0, "dtype": dtype})
        entry = self._cached(key, ctx, full, params.mode)
        source = "cache"
        if entry is None or _fused_missing(entry[0], params):
            source = "computed"
            working = api.normalise(api.resize_to_grid(image, rows, cols, patch), spec.mean, spec.std)
            yield Progress(0.05, f"{len(windows)} window(s) on a {rows}x{cols} patch grid")
            discard = params.mode == "rollout" and params.discard_ratio > 0
            entry = yield from api.window_summaries(
                model, working, windows, full=full, batch_size=params.batch_size, device=ctx.device, dtype=dtype,
                cancel=ctx.cancel, fusions=(params.head_fusion,) if discard else HEAD_FUSIONS,
                fused_dtype="float32" if discard else "float16")
            self._store(key, ctx, entry)
        ctx.cancel.raise_if_set()
        return self._result(image, params, entry[0], windows, (rows, cols), spec, ctx, dtype, source)

    def _result(self, image: np.ndarray, params: Any, summaries: list[AttentionSummary], windows: list[Window],
                grid: tuple[int, int], spec: Any, ctx: RunContext, dtype: str, source: str) -> BackendResult:
        patch = spec.patch_size
        maps = [aggregate(s, params.mode, block=params.block, head=params.head, fusion=params.head_fusion,
                          discard_ratio=params.discard_ratio) for s in summaries]
        score = blend(windows, maps, grid[0], grid[1], patch)
        heat = min_max(score)
        extras = {"score": score}
        if params.mode == "cls":
            per_head = [blend(windows, [cls_attention_map(s, params.block, h) for s in summaries], grid[0], grid[1],
                              patch) for h in range(spec.num_heads)]
            extras["head_attention"] = np.stack(per_head)
        scale_y, scale_x = image.shape[0] / (grid[0] * patch), image.shape[1] / (grid[1] * patch)
        info = {"grid": list(grid), "patch_size": patch, "mode": params.mode, "blocks": spec.num_blocks,
                "heads": spec.num_heads, "registers": spec.num_registers, "device": ctx.device, "dtype": dtype,
                "features": source, "windows": [w.to_photo(scale_y, scale_x) for w in windows]}
        return BackendResult(Heatmap(heat, image.shape[:2]), suggested_threshold=otsu_threshold(heat), extras=extras,
                             info=info)
