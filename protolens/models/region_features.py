"""Last-layer patch tokens of a DINO / DINOv2 ViT for object regions, and their cache key.

Source: OC-ZSS (seed 004, ICLR 2026; METHODS.md §3), step 1: the patch features of a frozen DINO ViT
(ViT-B/16 in the paper) are what the regions partition. Here: the photo is resized so its longer side is
``long_side`` (aspect kept, both sides rounded to patch multiples: :func:`~protolens.models.vit.preprocess.
grid_size`), normalised with the model's mean/std and encoded in one forward pass; the tokens after the
model's final norm (:func:`~protolens.models.vit.families.forward_tokens`) minus CLS and register tokens
(METHODS.md §6) form the (rows, cols, d) grid.

The object-regions backend and :mod:`protolens.services.regions` (the GUI's live n_o slider) key their
feature caches with :func:`region_features_key`, so either finds what the other computed.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from protolens.core.hashing import sha256_json
from protolens.core.jobs import CancelToken
from protolens.models.device import autocast
from protolens.models.vit.families import family_info, forward_tokens
from protolens.models.vit.loading import vit_spec
from protolens.models.vit.preprocess import grid_size, normalise, resize_to_grid

FEATURES_SCHEMA = "protolens.region-features/1"
"""Part of every cache key; bump it when :func:`patch_tokens` changes what it computes."""


def region_features_key(image_sha256: str, model: str, weights_sha256: str, long_side: int, dtype: str) -> str:
    """The cache key of :func:`patch_tokens` for one photo: a sha256 hex string.

    Parameters
    ----------
    image_sha256 : str
        SHA-256 of the photo's file.
    model : str
        Model name (the backend's ``model`` parameter).
    weights_sha256 : str
        SHA-256 of the weights file, or ``"none"`` for random weights.
    long_side : int
        The ``long_side`` parameter (pixels).
    dtype : str
        The resolved compute dtype (``"float32"``, ``"bfloat16"``, ``"float16"``; never ``"auto"``).
    """
    return sha256_json({"schema": FEATURES_SCHEMA, "image": image_sha256, "model": model,
                        "weights": weights_sha256, "long_side": int(long_side), "dtype": dtype})


def patch_tokens(model: nn.Module, image: np.ndarray, *, long_side: int, device: str, dtype: str = "float32",
                 cancel: CancelToken | None = None) -> np.ndarray:
    """The (rows, cols, d) last-layer patch tokens of one photo (one forward pass, no windows).

    Parameters
    ----------
    model : torch.nn.Module
        A timm ViT or a Hugging Face DINOv2 / CLIP vision model on ``device`` in eval mode
        (``protolens.models.vit.loading.load_vit``).
    image : numpy.ndarray
        (height, width, 3) uint8 RGB.
    long_side : int
        The photo is resized (aspect kept; ``INTER_AREA`` when shrinking, bicubic else) so its longer side is
        about this many pixels; both sides rounded to multiples of the patch size, so the grid is
        (rows, cols) = :func:`~protolens.models.vit.preprocess.grid_size` (row = y).
    device : str
        Torch device string.
    dtype : str
        ``"float32"``, or ``"bfloat16"`` / ``"float16"`` autocast.
    cancel : CancelToken, optional
        Checked before the forward pass.

    Returns
    -------
    numpy.ndarray
        (rows, cols, d) float32 tokens after the model's final norm, CLS and registers dropped; not
        normalised (:func:`protolens.core.regions.partition` normalises).

    Raises
    ------
    Cancelled
        ``cancel`` was set.
    """
    if cancel is not None:
        cancel.raise_if_set()
    info = family_info(model)
    spec = vit_spec(model)
    patch = info.patch_size
    rows, cols = grid_size(image.shape[0], image.shape[1], int(long_side), patch)
    x = normalise(resize_to_grid(np.asarray(image), rows, cols, patch), spec.mean, spec.std)
    with torch.inference_mode(), autocast(device, dtype):
        tokens = forward_tokens(model, torch.from_numpy(x)[None].to(device))
    patches = tokens[0, info.num_prefix:].float().cpu().numpy()
    return np.ascontiguousarray(patches.reshape(rows, cols, -1), dtype=np.float32)
