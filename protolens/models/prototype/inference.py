"""Inference of prototype-guided zero-shot segmentation: backbone weights of a run, the narrow ViT of one epoch,
the tile-token cache key and the received-attention crop scores (arXiv 2512.19957, steps 3 and 6).

Plugins reach these functions through :mod:`protolens.models.api` (lazy names), so importing a plugin does not
import torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from protolens.core.cache import MemoryCache
from protolens.core.errors import CheckpointError, WeightsNotFoundError
from protolens.core.hashing import sha256_json
from protolens.models.api import WeightsSpec
from protolens.models.prototype.narrow_vit import NarrowViT, NarrowViTConfig
from protolens.models.weights import resolve_weights, weights_sha256

RANDOM_SHAS = ("", "none", "random", "random-init")
"""``backbone.weights_sha256`` values of a run whose backbone had random weights (tests and benchmarks)."""
_MODELS: MemoryCache[NarrowViT] = MemoryCache(4)


def tile_tokens_key(image_sha256: str, model: str, weights_sha256: str, grid: Sequence[int], crop: int,
                    input_size: int, precision: str) -> str:
    """The disk-cache key of one photo's tile-token grid (arXiv 2512.19957, step 3).

    The same scheme as :func:`protolens.services.tokens.crop_tokens`, so tokens cached by ``protolens tokens``
    or by training are reused at inference, and the other way round.

    Parameters
    ----------
    image_sha256 : str
        SHA-256 of the photo's file.
    model, weights_sha256 : str
        Backbone (timm name) and the SHA-256 of its weights (``"none"`` for random weights).
    grid : (int, int)
        (rows, cols) of the crop grid.
    crop, input_size : int
        Crop side in resized-photo pixels and the side each crop is upsampled to.
    precision : str
        The ``precision`` parameter value (``auto``, ``float32``, ``bfloat16``, ``float16``).

    Returns
    -------
    str
        64 hex digits.
    """
    return sha256_json({"tokens": image_sha256, "model": model, "weights": weights_sha256, "grid": list(grid),
                        "crop": crop, "input": input_size, "precision": precision})


def _backbone_spec(model: str) -> WeightsSpec:
    """The Hugging Face cache entry of a timm name (``timm/<name>``) or a Hugging Face id (its own repo)."""
    return WeightsSpec(name=model, hf_repo=model if "/" in model else f"timm/{model}")


def resolve_backbone(backbone: dict[str, Any], *, allow_random: bool) -> tuple[Path | None, str]:
    """The weights file of a run's backbone (``config.json`` ``backbone`` section) and its SHA-256.

    Parameters
    ----------
    backbone : dict
        ``{"model": timm name, "weights": path or "" / None, "weights_sha256": hex or "none"}``.
    allow_random : bool
        Accept a run trained on a random backbone (tests, benchmarks): returns ``(None, "none")``.

    Returns
    -------
    (Path or None, str)
        The file (the recorded path when it still exists, else the local Hugging Face cache), and its SHA-256.

    Raises
    ------
    WeightsNotFoundError
        The weights are neither at the recorded path nor cached; or the run used random weights and
        ``allow_random`` is false.
    CheckpointError
        The file found is not the one the run was trained with (another SHA-256).
    """
    model = str(backbone.get("model", ""))
    if not model:
        raise CheckpointError("the run's config.json names no backbone model")
    expected = str(backbone.get("weights_sha256") or "none")
    if expected in RANDOM_SHAS:
        if not allow_random:
            raise WeightsNotFoundError(f"the run was trained on a randomly initialised {model} backbone "
                                       "(tests only); allow random weights to run it")
        return None, "none"
    recorded = backbone.get("weights")
    path = Path(recorded) if recorded and Path(recorded).is_file() else None
    path = path or resolve_weights(_backbone_spec(model))
    sha = weights_sha256(path)
    if sha != expected:
        raise CheckpointError(f"{path}: backbone weights differ from those the run was trained with "
                              f"(sha256 {sha[:12]}..., run: {expected[:12]}...)")
    return path, sha


def load_narrow_vit(checkpoint: str | Path, sha256: str, config: NarrowViTConfig | dict[str, Any],
                    device: str = "cpu") -> NarrowViT:
    """The narrow ViT of one epoch checkpoint (arXiv 2512.19957, step 4), eval mode on ``device``.

    ``config`` is its architecture, or the run's ``config.json`` ``narrow_vit`` section.

    Loaded with safetensors (tensors only, nothing unpickled), strictly; built once per (checkpoint SHA-256,
    device) and reused (the last four are kept).

    Raises
    ------
    CheckpointError
        Unreadable file, or weights that do not fit ``config``.
    """
    key = f"{sha256}:{device}"
    cached = _MODELS.get(key)
    if cached is not None:
        return cached
    from safetensors.torch import load_file

    try:
        state = load_file(str(checkpoint), device="cpu")
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a bad file
        raise CheckpointError(f"{checkpoint}: cannot read the checkpoint ({type(exc).__name__}: {exc})") from None
    try:
        model = NarrowViT(config if isinstance(config, NarrowViTConfig) else NarrowViTConfig.from_json(config))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{checkpoint}: the run's narrow_vit config is invalid ({exc})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise CheckpointError(f"{checkpoint}: weights do not fit the run's narrow ViT ({first[0].strip()})") from None
    model = model.eval().to(device)
    _MODELS.put(key, model)
    return model


def received_attention_grid(model: NarrowViT, tokens: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Raw received attention per crop (arXiv 2512.19957, step 6), (rows, cols) float32.

    Parameters
    ----------
    model : NarrowViT
        Its ``config.grid`` must be (rows, cols) of ``tokens``.
    tokens : numpy.ndarray
        (rows, cols, dim) float32 CLS tokens of the crops, row = y, col = x.
    device : str
        Where the model is.

    Computed in float32 (the attention of all blocks averaged, then the heads; summed over the query axis).
    Raises ``ValueError`` when the tokens do not fit the model's grid or width.
    """
    rows, cols, dim = tokens.shape
    if (rows, cols) != tuple(model.config.grid):
        raise ValueError(f"tokens are a {rows}x{cols} grid, the narrow ViT was trained on "
                         f"{model.config.grid[0]}x{model.config.grid[1]}")
    batch = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.float32)).reshape(1, rows * cols, dim)
    received = model.received_attention(batch.to(device))
    return received.reshape(rows, cols).float().cpu().numpy()
