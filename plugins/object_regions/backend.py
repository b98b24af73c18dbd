"""Object-regions backend: DINO / DINOv2 patch tokens partitioned into n_o regions, refined to photo edges.

Source: OC-ZSS (seed 004, ICLR 2026; METHODS.md §3), step 1 ("Voronoi clustering" of frozen DINO patch
features into n_o regions: 6 for VOC/COCO, 8 for Pascal Context). The paper gives no procedure; ours
(documented assumption) is in :mod:`protolens.core.regions`.

Steps
-----
1. Patch tokens of the photo resized to ``long_side`` (``api.patch_tokens``: one forward pass, last layer
   after the final norm, CLS and registers dropped), cached in memory and on disk per (photo sha256, model,
   weights sha256, long side, precision) under ``api.region_features_key`` (the key
   :mod:`protolens.services.regions` shares), so another n_o, seed, spatial weight or refinement only
   re-partitions.
2. ``partition``: k-means++ seeds in feature space + nearest seed by cosine (optional spatial weight, optional
   spherical Lloyd steps).
3. ``refine`` (optional): guided filter (``cv2.ximgproc``) of the upsampled region masks with the photo as
   guide, borders moved by at most one patch.

Result: ``regions`` (n_o masks "region 1".. "region n", scores 1) at the refined working size (or the patch
grid); heatmap = region id / (n_o - 1) with nearest interpolation (a display of the partition). Extras:
``coarse_ids`` (rows, cols) int32 (patch grid) and ``region_ids`` (h', w') int32 (the regions' grid).
Default model: DINO ViT-S/16 (``vit_small_patch16_224.dino``; the paper's DINO ViT-B/16 is not in the
catalogue).
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from protolens.core.cache import DiskCache, MemoryCache
from protolens.core.jobs import Progress
from protolens.core.regions import partition, refine, regions_layer
from protolens.core.types import BackendResult, Heatmap, fit_grid
from protolens.models import api
from protolens.models.api import Backend, RunContext

MEMORY_BYTES = 512 * 1024**2
DISK_BYTES = 512 * 1024**2
DISK_FOLDER = "region-features"
"""Sub-folder of the cache folder holding patch tokens (shared with protolens.services.regions)."""
GUIDED_EPS = 1e-2


class ObjectRegions(Backend):
    """Object regions from cached self-supervised patch tokens (OC-ZSS step 1, our procedure)."""

    def __init__(self) -> None:
        self._memory: MemoryCache[np.ndarray] = MemoryCache(16, max_bytes=MEMORY_BYTES, size_of=lambda a: a.nbytes)

    # --- weights and model -----------------------------------------------------------------------
    def weights_identity(self, params: Any, ctx: RunContext) -> tuple[str, str]:
        _, weights_id, sha = self.catalogue_weights(params, ctx)
        return weights_id, sha

    def prepare(self, params: Any, ctx: RunContext) -> None:
        self.load_model(params, ctx)

    def load_model(self, params: Any, ctx: RunContext) -> Any:
        """The ViT ``params.model`` in eval mode on ``ctx.device`` (``api.load_vit``, reused per weights).

        Raises WeightsNotFoundError (no weights and random weights not allowed) or CheckpointError.
        """
        path, _, sha = self.catalogue_weights(params, ctx)
        return api.load_vit(params.model, path, ctx.device, weights_key=sha if path is not None else None)

    # --- feature cache ---------------------------------------------------------------------------
    def features_key(self, image_id: str | None, params: Any, ctx: RunContext) -> str | None:
        """The feature-cache key for a photo (None without an image id: nothing is cached)."""
        if image_id is None:
            return None
        _, _, sha = self.catalogue_weights(params, ctx)
        return api.region_features_key(image_id, params.model, sha, params.long_side, params.precision)

    def cached_features(self, key: str | None, cache_dir: Path | None) -> np.ndarray | None:
        """(rows, cols, d) float32 tokens under ``key`` from memory, else disk (then kept in memory), or None."""
        if key is None:
            return None
        tokens = self._memory.get(key)
        if tokens is None and cache_dir is not None:
            hit = DiskCache(Path(cache_dir) / DISK_FOLDER, DISK_BYTES).get(key)
            if hit is not None and "tokens" in hit[0]:
                tokens = np.asarray(hit[0]["tokens"], dtype=np.float32)
                self._memory.put(key, tokens)
        return tokens

    def store_features(self, key: str | None, tokens: np.ndarray, cache_dir: Path | None, meta: dict) -> None:
        """Keep ``tokens`` under ``key`` in memory and (with a cache folder) on disk."""
        if key is None:
            return
        self._memory.put(key, tokens)
        if cache_dir is not None:
            DiskCache(Path(cache_dir) / DISK_FOLDER, DISK_BYTES).put(key, {"tokens": tokens}, meta)

    def compute_features(self, image: np.ndarray, params: Any, ctx: RunContext) -> np.ndarray:
        """Run the model once: (rows, cols, d) float32 patch tokens of ``image`` (no cache)."""
        model = self.load_model(params, ctx)
        dtype = params.precision if params.precision != "auto" else ctx.resolved_dtype()
        return api.patch_tokens(model, image, long_side=params.long_side, device=ctx.device, dtype=dtype,
                                cancel=ctx.cancel)

    # --- run -------------------------------------------------------------------------------------
    def run(self, image: np.ndarray, params: Any, ctx: RunContext) -> Generator[Progress, None, BackendResult]:
        key = self.features_key(ctx.image_id, params, ctx)
        tokens = self.cached_features(key, ctx.cache_dir)
        source = "cache"
        if tokens is None:
            source = "computed"
            yield Progress(0.05, f"patch tokens of {params.model} at long side {params.long_side}")
            tokens = self.compute_features(image, params, ctx)
            self.store_features(key, tokens, ctx.cache_dir, {"model": params.model, "long_side": params.long_side})
        ctx.cancel.raise_if_set()
        yield Progress(0.8, f"{params.regions} regions")
        coarse = partition(tokens, params.regions, seed=params.seed, spatial=params.spatial,
                           iterations=params.iterations)
        ids = refine(coarse, image, params.regions, eps=GUIDED_EPS, max_side=params.max_side) if params.refine \
            else coarse
        return self._result(image, params, coarse, ids, tokens.shape, ctx, source)

    def _result(self, image: np.ndarray, params: Any, coarse: np.ndarray, ids: np.ndarray, shape: tuple,
                ctx: RunContext, source: str) -> BackendResult:
        n = int(params.regions)
        size = (int(image.shape[0]), int(image.shape[1]))
        heat = Heatmap(ids.astype(np.float32) / max(n - 1, 1), size, interpolation="nearest")
        rows, cols = coarse.shape
        refinement = (f"guided filter (cv2.ximgproc), radius half a patch, eps {GUIDED_EPS}, working size "
                      f"{list(fit_grid(size, params.max_side))}, borders moved <= one patch") if params.refine \
            else "none (patch grid)"
        info = {"regions": n, "seed": params.seed, "spatial": params.spatial, "iterations": params.iterations,
                "grid": [rows, cols], "feature_dim": int(shape[2]), "model": params.model,
                "long_side": params.long_side, "features": source, "device": ctx.device,
                "partition": "k-means++ seeds + nearest seed by cosine (Voronoi; protolens's assumption, "
                             "OC-ZSS gives no procedure)", "refinement": refinement}
        return BackendResult(heat, extras={"coarse_ids": coarse, "region_ids": ids},
                             regions=regions_layer(ids, n, size), info=info)
