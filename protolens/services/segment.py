"""Run a backend on a photo, with results cached in memory and on disk.

The cache key is the image's sha256 plus the result key (backend id + version, weights sha256, parameters:
:func:`protolens.core.records.result_key`), the same key the per-photo store keeps the result under. A
threshold is not part of it: thresholds are applied to cached heatmaps and never rerun a model.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protolens.core.cache import DiskCache, MemoryCache, default_cache_dir
from protolens.core.hashing import sha256_file
from protolens.core.imageio import read_image
from protolens.core.jobs import CancelToken, Progress
from protolens.core.layers import ResultLayers
from protolens.core.params import make_params, params_to_dict
from protolens.core.records import ImageMeta, ResultRecord, result_key
from protolens.core.thresholds import heatmap_threshold
from protolens.core.types import BackendResult, Heatmap
from protolens.models.api import RunContext
from protolens.models.registry import Registry


@dataclass
class LoadedImage:
    """A decoded photo and its identity. ``rgb`` is (height, width, 3) uint8."""

    rgb: np.ndarray
    meta: ImageMeta


def load_image(path: str | Path, *, max_pixels: int | None = None) -> LoadedImage:
    """Decode a photo and hash its bytes. Raises :class:`~protolens.core.errors.ImageReadError`."""
    path = Path(path)
    rgb = read_image(path, max_pixels=max_pixels)
    return LoadedImage(rgb, ImageMeta(path, sha256_file(path), rgb.shape[0], rgb.shape[1]))


@dataclass
class SegmentOutcome:
    """A backend result for one photo plus everything provenance needs."""

    image: ImageMeta
    result: BackendResult
    backend_id: str
    backend_version: str
    params: dict[str, Any]
    weights_id: str = "none"
    weights_sha256: str = "none"
    from_cache: bool = False
    seconds: float = 0.0
    extras_info: dict[str, Any] = field(default_factory=dict)
    kind: str = "heatmap"
    warnings: list[str] = field(default_factory=list)
    """Warnings of this run (e.g. "out of memory: fell back to the CPU"), for the caller to show."""

    @property
    def key(self) -> str:
        """The result key (:func:`protolens.core.records.result_key`)."""
        return result_key(self.backend_id, self.backend_version, self.weights_sha256, self.params)

    @property
    def probability(self) -> Heatmap | None:
        """The backend's probability map (``extras["probability"]``) as a heatmap, if it gave one."""
        values = self.result.extras.get("probability")
        return None if values is None else Heatmap(values, self.result.heatmap.image_size,
                                                   self.result.heatmap.interpolation)

    def record(self, threshold: float | None = None, semantics: str = "value",
               probability_threshold: float | None = None) -> ResultRecord:
        """Provenance of this result at ``threshold`` read with ``semantics`` ("value" or "mass").

        ``threshold`` defaults to the backend's suggestion for "value" (else 0.5) and to 0.6 for "mass"
        (DINO's 60 % of the attention mass). A mass threshold is turned into the equivalent heatmap
        threshold on the backend's raw scores (``extras["score"]``, else the heatmap values).
        """
        if threshold is None:
            suggested = self.result.suggested_threshold
            threshold = 0.6 if semantics == "mass" else (suggested if suggested is not None else 0.5)
        applied = heatmap_threshold(self.result.heatmap.values, float(threshold), semantics,
                                    self.result.extras.get("score"))
        return ResultRecord(self.backend_id, self.backend_version, dict(self.params), float(threshold), semantics,
                            self.weights_id, self.weights_sha256, info=dict(self.result.info),
                            heatmap_threshold=applied, probability_threshold=probability_threshold, kind=self.kind)


def cache_key(image_sha256: str, key: str) -> str:
    """The heatmap cache's key: the result key, then the photo's sha256."""
    return f"{key}-{image_sha256}"


def _to_cache(result: BackendResult) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays = {"heatmap": result.heatmap.values, **{f"extra.{k}": v for k, v in result.extras.items()}}
    entries, files = result.layers().to_files()
    arrays.update({f"layer.{name}": np.frombuffer(data, np.uint8) for name, data in files.items()})
    meta = {"image_size": list(result.heatmap.image_size), "interpolation": result.heatmap.interpolation,
            "suggested_threshold": result.suggested_threshold,
            "info": result.info, "layers": entries}
    return arrays, meta


def _from_cache(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> BackendResult:
    extras = {k[len("extra."):]: v for k, v in arrays.items() if k.startswith("extra.")}
    size = tuple(meta["image_size"])
    layers = ResultLayers.from_files(meta.get("layers") or {}, lambda name: arrays[f"layer.{name}"].tobytes(), size)
    heatmap = Heatmap(arrays["heatmap"], size, meta.get("interpolation", "linear"))
    return BackendResult(heatmap, meta.get("suggested_threshold"), extras,
                         dict(meta.get("info", {})), layers.heatmaps, layers.label_map, layers.regions,
                         layers.keypoints, layers.scores_table)


class Segmenter:
    """Runs backends on photos; the one place results are cached.

    Parameters
    ----------
    registry : Registry, optional
        Backends to use (default: discovered).
    disk_cache : DiskCache or None, optional
        On-disk heatmap cache; default ``<user cache>/heatmaps`` (2 GiB cap); None disables it.
    device : str, optional
        Preferred torch device for backends that need torch; default: the device pool picks the least busy
        CUDA device, else the CPU.
    dtype : str
        ``"auto"`` (bfloat16 autocast on CUDA, float32 on the CPU), ``"float32"``, ``"bfloat16"`` or ``"float16"``.

    Backends that require torch run on a :class:`~protolens.models.pool.DevicePool` (one worker per CUDA device
    plus the CPU), created on first use so that weightless backends never import torch.
    """

    def __init__(self, registry: Registry | None = None, *, disk_cache: DiskCache | None | str = "default",
                 device: str | None = None, dtype: str = "auto", memory_capacity: int = 48) -> None:
        self.registry = registry or Registry.discover()
        self.disk_cache = DiskCache(default_cache_dir() / "heatmaps") if disk_cache == "default" else disk_cache
        self.memory: MemoryCache[BackendResult] = MemoryCache(memory_capacity)
        self.device = device
        self.dtype = dtype
        self.last_device: str | None = None
        self._pool: Any = None
        self._pool_lock = threading.Lock()

    def pool(self) -> Any:
        """The device pool (created, and torch imported, on first call)."""
        with self._pool_lock:
            if self._pool is None:
                from protolens.models.pool import DevicePool

                self._pool = DevicePool()
            return self._pool

    def pool_status(self) -> list[Any]:
        """Devices with running/queued job counts; empty until a torch backend has run."""
        return self._pool.status() if self._pool is not None else []

    def _prepare(self, image: LoadedImage, backend_id: str, params: Mapping[str, Any] | None,
                 weights_path: str | Path | None, cancel: CancelToken | None,
                 allow_random_weights: bool) -> tuple[Any, Any, RunContext, str, SegmentOutcome]:
        manifest = self.registry.manifest(backend_id)
        values = make_params(manifest.params, params or {})
        backend = self.registry.create(backend_id)
        ctx = RunContext(device="cpu", dtype=self.dtype, cache_dir=default_cache_dir(),
                         cancel=cancel or CancelToken(), weights_path=Path(weights_path) if weights_path else None,
                         allow_random_weights=allow_random_weights, image_id=image.meta.sha256)
        weights_id, weights_sha = backend.weights_identity(values, ctx)
        plain = params_to_dict(values)
        outcome = SegmentOutcome(image.meta, None, manifest.id, manifest.version, plain,  # type: ignore[arg-type]
                                 weights_id, weights_sha, kind=manifest.kind)
        return backend, values, ctx, cache_key(image.meta.sha256, outcome.key), outcome

    def _cached(self, key: str) -> BackendResult | None:
        cached = self.memory.get(key)
        if cached is None and self.disk_cache is not None:
            hit = self.disk_cache.get(key)
            cached = _from_cache(*hit) if hit else None
            if cached is not None:
                self.memory.put(key, cached)
        return cached

    def result_key(self, backend_id: str, params: Mapping[str, Any] | None = None, *,
                   weights_path: str | Path | None = None, allow_random_weights: bool = False) -> str:
        """The result key these inputs give every photo (:func:`protolens.core.records.result_key`); runs no model.

        Raises the same errors as :meth:`run` for an unknown backend, bad parameters or missing weights.
        """
        manifest = self.registry.manifest(backend_id)
        values = make_params(manifest.params, params or {})
        ctx = RunContext(device="cpu", dtype=self.dtype, cache_dir=default_cache_dir(),
                         weights_path=Path(weights_path) if weights_path else None,
                         allow_random_weights=allow_random_weights)
        _, weights_sha = self.registry.create(backend_id).weights_identity(values, ctx)
        return result_key(manifest.id, manifest.version, weights_sha, params_to_dict(values))

    def lookup(self, image: LoadedImage, backend_id: str, params: Mapping[str, Any] | None = None, *,
               weights_path: str | Path | None = None, allow_random_weights: bool = False) -> SegmentOutcome | None:
        """The cached result for these inputs, or None; never runs a model.

        Raises the same errors as :meth:`run` for an unknown backend, bad parameters or missing weights.
        """
        return self.lookup_keyed(image, backend_id, params, weights_path=weights_path,
                                 allow_random_weights=allow_random_weights)[1]

    def lookup_keyed(self, image: LoadedImage, backend_id: str, params: Mapping[str, Any] | None = None, *,
                     weights_path: str | Path | None = None,
                     allow_random_weights: bool = False) -> tuple[str, SegmentOutcome | None]:
        """(the result key of these inputs, their cached result or None); never runs a model.

        Raises as :meth:`lookup`.
        """
        *_, key, outcome = self._prepare(image, backend_id, params, weights_path, None, allow_random_weights)
        cached = self._cached(key)
        if cached is None:
            return outcome.key, None
        outcome.result, outcome.from_cache = cached, True
        return outcome.key, outcome

    def run(self, image: LoadedImage, backend_id: str, params: Mapping[str, Any] | None = None, *,
            weights_path: str | Path | None = None, cancel: CancelToken | None = None,
            allow_random_weights: bool = False) -> Generator[Progress, None, SegmentOutcome]:
        """Run ``backend_id`` on ``image`` (or fetch its cached result), yielding progress.

        Raises
        ------
        BackendUnavailableError, ParamError, WeightsNotFoundError, CheckpointError, Cancelled
            As the backend and its weights dictate; nothing is cached then.
        """
        started = time.perf_counter()
        backend, values, ctx, key, outcome = self._prepare(image, backend_id, params, weights_path, cancel,
                                                           allow_random_weights)
        cached = self._cached(key)
        if cached is not None:
            outcome.result, outcome.from_cache = cached, True
            yield Progress(1.0, "from cache")
        else:
            ctx.cancel.raise_if_set()
            if "torch" in self.registry.manifest(backend_id).requires:
                def job(device: str) -> Generator[Progress, None, BackendResult]:
                    self.last_device = device
                    return (yield from backend.run(image.rgb, values, dataclasses.replace(ctx, device=device)))

                outcome.result = yield from self.pool().run(job, cancel=ctx.cancel, prefer=self.device,
                                                            warnings=outcome.warnings)
            else:
                outcome.result = yield from backend.run(image.rgb, values, ctx)
            self.memory.put(key, outcome.result)
            if self.disk_cache is not None:
                self.disk_cache.put(key, *_to_cache(outcome.result))
        outcome.seconds = time.perf_counter() - started
        return outcome

    def device_description(self) -> str:
        """The devices of the pool with their jobs, in words; "cpu" until a torch backend has run."""
        status = self.pool_status()
        if not status:
            return "cpu"
        return ", ".join(f"{s.description}" + (f" [{s.running} running, {s.queued} queued]" if s.running or s.queued
                                                  else "") for s in status)


def drain(generator: Generator[Progress, None, Any], on_progress: Any = None) -> Any:
    """Run a progress generator to completion, passing each report to ``on_progress``; return its value."""
    while True:
        try:
            report = next(generator)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(report)
