"""Object regions for the editor's live n_o slider: cached patch tokens, then regions on the CPU.

Source: OC-ZSS (seed 004, ICLR 2026; METHODS.md §3) step 1, with protolens's documented partition and
refinement (:mod:`protolens.core.regions`). :func:`region_features` runs the object-regions backend's model
(its weights resolution, ``api.patch_tokens``) on the segmenter's device pool, once per (photo, model,
weights, long side, precision): the tokens are kept in that backend's memory cache and on disk under
``<cache>/region-features`` with the backend's key (``api.region_features_key``), so the backend and this
service reuse each other's features. :func:`regions_from_features` is pure CPU and never runs a model.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protolens.core.cache import default_cache_dir
from protolens.core.jobs import CancelToken, Progress
from protolens.core.params import make_params
from protolens.core.regions import RefineGuide, partition, refine, refine_guide
from protolens.models.api import RunContext
from protolens.services.segment import LoadedImage, Segmenter

BACKEND = "object-regions"
"""The backend whose model, weights, parameters and feature cache the service shares."""
DEFAULT_MODEL = "vit_small_patch16_224.dino"
DEFAULT_LONG_SIDE = 896
DEFAULT_MAX_SIDE = 1024


@dataclass
class RegionFeatures:
    """Patch tokens of one photo for :func:`regions_from_features`.

    Attributes
    ----------
    tokens : numpy.ndarray
        (rows, cols, d) float32 last-layer patch tokens (row = y), not normalised.
    model, weights_id, weights_sha256 : str
        Provenance (``weights_sha256`` is ``"none"`` for random weights).
    long_side : int
        Long side (pixels) the photo was resized to before encoding.
    image_size : tuple of int
        (height, width) of the photo.
    from_cache : bool
        True when no model ran (memory or disk cache).
    """

    tokens: np.ndarray
    model: str
    weights_id: str
    weights_sha256: str
    long_side: int
    image_size: tuple[int, int]
    from_cache: bool


def _backend(segmenter: Segmenter, values: dict[str, Any], weights_path: str | Path | None, allow_random: bool,
             cancel: CancelToken, cache_dir: Path | None) -> tuple[Any, Any, RunContext]:
    backend = segmenter.registry.create(BACKEND)
    params = make_params(backend.manifest.params, values)
    ctx = RunContext(dtype=segmenter.dtype, cache_dir=cache_dir, cancel=cancel, allow_random_weights=allow_random,
                     weights_path=Path(weights_path) if weights_path is not None else None)
    return backend, params, ctx


def region_features(segmenter: Segmenter, image: LoadedImage, *, model: str = DEFAULT_MODEL,
                    long_side: int = DEFAULT_LONG_SIDE, weights_path: str | Path | None = None,
                    allow_random_weights: bool = False, precision: str = "auto", cancel: CancelToken | None = None,
                    cache_dir: str | Path | None = "default") -> Generator[Progress, None, RegionFeatures]:
    """The photo's patch tokens, from the cache or computed on the segmenter's device pool.

    Parameters
    ----------
    segmenter : Segmenter
        Its registry provides the object-regions backend (shared instance: shared memory cache), its pool
        the device.
    image : LoadedImage
        The photo (its sha256 is part of the cache key).
    model, long_side, precision : str, int, str
        Values of the object-regions backend's parameters of these names (validated by its manifest).
    weights_path : path, optional
        A weights file or snapshot folder; None = the local Hugging Face cache.
    allow_random_weights : bool
        Random weights when none are found (tests and benchmarks only).
    cancel : CancelToken, optional
        Cancels the model job.
    cache_dir : path, "default" or None
        Cache folder (``"default"``: the user cache folder, as the segmenter's backends use); None: memory only.

    Yields
    ------
    Progress

    Returns
    -------
    RegionFeatures

    Raises
    ------
    BackendUnavailableError, ParamError, WeightsNotFoundError, CheckpointError, Cancelled
    """
    cancel = cancel or CancelToken()
    folder = default_cache_dir() if cache_dir == "default" else (Path(cache_dir) if cache_dir is not None else None)
    values = {"model": model, "long_side": long_side, "precision": precision}
    backend, params, ctx = _backend(segmenter, values, weights_path, allow_random_weights, cancel, folder)
    weights_id, sha = backend.weights_identity(params, ctx)
    key = backend.features_key(image.meta.sha256, params, ctx)
    size = (int(image.rgb.shape[0]), int(image.rgb.shape[1]))
    tokens = backend.cached_features(key, folder)
    if tokens is not None:
        yield Progress(1.0, "patch tokens from cache")
        return RegionFeatures(tokens, model, weights_id, sha, int(long_side), size, True)

    def job(device: str) -> Generator[Progress, None, np.ndarray]:
        yield Progress(0.05, f"patch tokens of {model} on {device}")
        device_ctx = RunContext(device=device, dtype=ctx.dtype, cache_dir=folder, cancel=cancel,
                                weights_path=ctx.weights_path, allow_random_weights=allow_random_weights)
        return backend.compute_features(image.rgb, params, device_ctx)

    tokens = yield from segmenter.pool().run(job, cancel=cancel, prefer=segmenter.device)
    backend.store_features(key, tokens, folder, {"model": model, "long_side": int(long_side)})
    return RegionFeatures(tokens, model, weights_id, sha, int(long_side), size, False)


_GUIDES: list[tuple[weakref.ref, int, RefineGuide]] = []
_GUIDES_LOCK = threading.Lock()
_GUIDES_KEPT = 4


def _guide(image_rgb: np.ndarray, max_side: int) -> RefineGuide:
    """The refinement guide of ``image_rgb`` (the same array object: reused, so a slider move skips it)."""
    with _GUIDES_LOCK:
        _GUIDES[:] = [entry for entry in _GUIDES if entry[0]() is not None]
        for ref, side, guide in _GUIDES:
            if ref() is image_rgb and side == max_side and guide.image_size == image_rgb.shape[:2]:
                return guide
    guide = refine_guide(image_rgb, max_side)
    with _GUIDES_LOCK:
        _GUIDES.append((weakref.ref(image_rgb), max_side, guide))
        del _GUIDES[:-_GUIDES_KEPT]
    return guide


def regions_from_features(tokens: np.ndarray | RegionFeatures, image_rgb: np.ndarray, n: int, seed: int = 0,
                          spatial: float = 0.0, *, iterations: int = 0, refined: bool = True,
                          max_side: int = DEFAULT_MAX_SIDE) -> np.ndarray:
    """The region id map of a photo from its cached patch tokens (pure CPU, no model).

    Parameters
    ----------
    tokens : numpy.ndarray or RegionFeatures
        (rows, cols, d) patch tokens (:func:`region_features`).
    image_rgb : numpy.ndarray
        (height, width, 3) uint8 RGB photo, the refinement guide. Its prepared guide is reused while the
        same array object is passed again (do not modify it in place meanwhile).
    n : int
        Number of regions n_o.
    seed, spatial, iterations :
        As :func:`protolens.core.regions.partition`.
    refined : bool
        Guided-filter refinement (:func:`protolens.core.regions.refine`); False: the patch grid.
    max_side : int
        Longer side of the refined map.

    Returns
    -------
    numpy.ndarray
        (h', w') int32 ids in 0..n-1 on a grid covering the photo: the working size (longer side
        ``max_side``, photo aspect) when refined, else (rows, cols). Build a layer with
        :func:`protolens.core.regions.regions_layer`; look up a pixel with ``region_at``.

    Raises
    ------
    ParamError
        From partition / refine (n larger than the patches, bad shapes).
    """
    grid = tokens.tokens if isinstance(tokens, RegionFeatures) else tokens
    coarse = partition(grid, n, seed=seed, spatial=spatial, iterations=iterations)
    if not refined:
        return coarse
    return refine(coarse, image_rgb, n, guide=_guide(image_rgb, max_side))
