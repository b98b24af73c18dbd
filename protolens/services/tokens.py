"""Tile tokens for prototype guidance: one CLS token per 64-px crop of a quadrat, cached on disk.

Source: prototype-guided zero-shot segmentation, arXiv 2512.19957, step 3: the photo is resized to
(rows*crop, cols*crop) (aspect ignored; 48 x 32 crops of 64 px for 3072 x 2048), each crop upsampled to the
backbone input (518) and encoded by a frozen ViT; the CLS tokens form a (rows, cols, dim) grid.

The backbone is the vit-attention backend's: its ``model`` and ``precision`` parameters, weights look-up
(``weights_identity``, ``load_model``) and dtype rule (:meth:`RunContext.resolved_dtype`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protolens.core.atomic import write_json_atomic, write_npy_atomic
from protolens.core.cache import DiskCache, default_cache_dir
from protolens.core.jobs import CancelToken, Progress
from protolens.core.params import make_params
from protolens.core.store import utc_now
from protolens.models import api
from protolens.models.api import Backend, RunContext
from protolens.services.segment import LoadedImage, Segmenter

BACKEND = "vit-attention"
"""The backend whose model, weights and precision rules tile tokens share."""
DEFAULT_MODEL = "vit_base_patch14_reg4_dinov2.lvd142m"
DEFAULT_GRID = (32, 48)


@dataclass
class TokenGrid:
    """CLS tokens of the crops of one photo: ``tokens`` (rows, cols, dim) float32, plus provenance."""

    tokens: np.ndarray
    model: str
    weights_id: str
    weights_sha256: str
    crop: int
    input_size: int
    from_cache: bool

    def save(self, out_dir: str | Path, image: LoadedImage) -> list[Path]:
        """Write ``<stem>.tokens.npy`` and ``<stem>.tokens.json`` (provenance) into ``out_dir`` atomically."""
        out_dir = Path(out_dir)
        stem = image.meta.path.stem
        paths = [out_dir / f"{stem}.tokens.npy", out_dir / f"{stem}.tokens.json"]
        write_npy_atomic(paths[0], self.tokens)
        rows, cols, dim = self.tokens.shape
        write_json_atomic(paths[1], {
            "schema": "protolens.tokens/1", "image": image.meta.to_json(), "model": self.model,
            "weights": {"id": self.weights_id, "sha256": self.weights_sha256},
            "grid": {"rows": rows, "cols": cols, "crop": self.crop, "input_size": self.input_size},
            "tokens": {"file": paths[0].name, "shape": [rows, cols, dim], "dtype": "float32",
                       "order": "row, col of the crop grid (y, x); origin top-left"},
            "method": "arXiv 2512.19957 step 3: resize (aspect ignored), crops upsampled bicubic, CLS after norm",
            "created": utc_now()})
        return paths


def _backbone(segmenter: Segmenter, model: str, precision: str, weights_path: str | Path | None,
              allow_random: bool, cancel: CancelToken) -> tuple[Backend, Any, RunContext]:
    """The vit-attention backend, its validated params (``model``, ``precision``) and a run context.

    Weights, their identity and the compute dtype are resolved as that backend resolves them
    (:meth:`Backend.weights_identity`, ``load_model``, :meth:`RunContext.resolved_dtype`), not a second time here.
    Raises BackendUnavailableError, or ParamError for a model or precision the backend does not offer.
    """
    backend = segmenter.registry.create(BACKEND)
    params = make_params(backend.manifest.params, {"model": model, "precision": precision})
    ctx = RunContext(dtype=params.precision, cancel=cancel, allow_random_weights=allow_random,
                     weights_path=Path(weights_path) if weights_path is not None else None)
    return backend, params, ctx


def crop_tokens(segmenter: Segmenter, image: LoadedImage, model: str = DEFAULT_MODEL, *,
                weights_path: str | Path | None = None, grid: tuple[int, int] = DEFAULT_GRID, crop: int = 64,
                input_size: int = 518, batch_size: int = 32, precision: str = "auto", cancel: CancelToken | None = None,
                allow_random_weights: bool = False,
                cache: DiskCache | None | str = "default") -> Generator[Progress, None, TokenGrid]:
    """The (rows, cols, dim) CLS-token grid of ``image`` on the segmenter's device pool, from the cache if possible.

    ``model`` and ``precision`` take the values of the vit-attention backend's ``model`` and ``precision``
    parameters; its weights resolution and dtype rule apply (``auto``: bfloat16 on CUDA, float32 on the CPU).

    Raises BackendUnavailableError, ParamError, WeightsNotFoundError, CheckpointError or Cancelled.
    """
    cancel = cancel or CancelToken()
    backend, params, ctx = _backbone(segmenter, model, precision, weights_path, allow_random_weights, cancel)
    weights_id, sha = backend.weights_identity(params, ctx)
    disk = DiskCache(default_cache_dir() / "features") if cache == "default" else cache
    key = api.tile_tokens_key(image.meta.sha256, model, sha, grid, crop, input_size, precision)  # = the backend's
    hit = disk.get(key) if disk is not None else None
    if hit is not None:
        yield Progress(1.0, "tile tokens from cache")
        return TokenGrid(hit[0]["tokens"], model, weights_id, sha, crop, input_size, True)

    def job(device: str) -> Generator[Progress, None, Any]:
        device_ctx = dataclasses.replace(ctx, device=device)
        network = backend.load_model(params, device_ctx)  # type: ignore[attr-defined]
        spec = api.vit_spec(network)
        return (yield from api.crop_token_grid(network, image.rgb, grid=grid, crop=crop, input_size=input_size,
                                               mean=spec.mean, std=spec.std, batch_size=batch_size, device=device,
                                               dtype=device_ctx.resolved_dtype(), cancel=cancel))

    tokens = yield from segmenter.pool().run(job, cancel=cancel, prefer=segmenter.device)
    if disk is not None:
        disk.put(key, {"tokens": tokens}, {"model": model})
    return TokenGrid(tokens, model, weights_id, sha, crop, input_size, False)
