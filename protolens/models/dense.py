"""Dense ViT features of whole photos: CLS token, the patch-token grid and the CLS-attention saliency.

Source: Key-point Labeling Classifiers (seed 002, METHODS.md §4), step 1: every photo (bank prototype or
query) is resized to the model input, encoded once, and its patch tokens (the grid that segments are pooled
from) and CLS token (retrieval) are kept. The saliency is Amir et al.'s (arXiv 2112.05814, §4; METHODS.md
§4): the last block's CLS-query attention to the patches, mean over heads, min-max normalised. It is
captured in the same forward pass as the tokens (:class:`~protolens.models.vit.capture.QKCapture`).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from protolens.core.errors import ParamError
from protolens.core.jobs import CancelToken, Progress
from protolens.models.device import autocast
from protolens.models.vit.capture import QKCapture, attention_rows
from protolens.models.vit.engine import run_batches
from protolens.models.vit.families import family_info, forward_tokens
from protolens.models.vit.preprocess import normalise, resize_to_grid


@dataclass
class DenseFeatures:
    """Dense features of one photo (:func:`dense_features`).

    Attributes
    ----------
    cls : numpy.ndarray
        (d,) float32 CLS token after the model's final norm.
    tokens : numpy.ndarray
        (rows, cols, d) float32 patch tokens after the final norm, row-major grid of the model input
        (rows = cols = input_size / patch); registers dropped.
    saliency : numpy.ndarray
        (rows, cols) float32 in [0, 1]: the last block's CLS attention to the patches, mean over heads,
        min-max normalised (Amir et al., arXiv 2112.05814); a constant map gives all ones.
    input_size : int
        The photo was resized to input_size x input_size (aspect ignored) before encoding.
    image_size : tuple of int
        (height, width) of the photo in pixels.
    """

    cls: np.ndarray
    tokens: np.ndarray
    saliency: np.ndarray
    input_size: int
    image_size: tuple[int, int]

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the token grid."""
        return int(self.tokens.shape[0]), int(self.tokens.shape[1])


def min_max(x: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each row of (batch, n) float32 to [0, 1]; a constant row becomes all ones."""
    low = x.amin(dim=-1, keepdim=True)
    span = x.amax(dim=-1, keepdim=True) - low
    return torch.where(span > 0, (x - low) / span.clamp_min(torch.finfo(x.dtype).tiny), torch.ones_like(x))


def cls_saliency(q: torch.Tensor, k: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """Amir et al.'s saliency from one block's (pre-scaled q, k), each (batch, heads, tokens, head_dim).

    Returns (batch, patches) float32 in [0, 1]: CLS-query attention to the patch tokens (prefix columns
    dropped after the softmax over all tokens), mean over heads, min-max normalised per image.
    """
    cls = attention_rows(q, k, slice(0, 1))[:, :, 0, num_prefix:]
    return min_max(cls.mean(dim=1))


def model_inputs(images: Sequence[np.ndarray], input_size: int, patch: int, mean: Sequence[float],
                 std: Sequence[float], device: str) -> torch.Tensor:
    """(batch, 3, input_size, input_size) float32 normalised inputs of (h, w, 3) uint8 RGB photos.

    Each photo is resized to input_size x input_size, aspect ignored (cv2 INTER_AREA when shrinking, else
    INTER_CUBIC: :func:`~protolens.models.vit.preprocess.resize_to_grid`).
    """
    cells = input_size // patch
    arrays = [normalise(resize_to_grid(np.asarray(image), cells, cells, patch), mean, std) for image in images]
    return torch.from_numpy(np.stack(arrays)).to(device)


def check_input_size(input_size: int, patch: int) -> None:
    """Raise :class:`ParamError` unless ``input_size`` is a positive multiple of the patch size."""
    if input_size < patch or input_size % patch:
        raise ParamError(f"input size {input_size} is not a multiple of the patch size {patch} of this model "
                         f"(e.g. {max(patch, input_size // patch * patch)})")


def dense_features(model: nn.Module, images: Sequence[np.ndarray], *, input_size: int, mean: Sequence[float],
                   std: Sequence[float], device: str, dtype: str, batch_size: int = 8,
                   cancel: CancelToken) -> Generator[Progress, None, list[DenseFeatures]]:
    """CLS token, patch-token grid and saliency of each photo (KLC step 1; Amir et al. saliency).

    Parameters
    ----------
    model : torch.nn.Module
        timm ViT, HF DINOv2 or HF CLIP vision model on ``device``, eval mode (any model
        :class:`~protolens.models.vit.capture.QKCapture` supports).
    images : sequence of numpy.ndarray
        (height, width, 3) uint8 RGB photos, any sizes.
    input_size : int
        Side of the square model input; a multiple of the patch size. Grid = input_size / patch per side.
    mean, std : sequence of float
        The model's per-channel normalisation (RGB, values in [0, 1]).
    device, dtype : str
        Torch device; ``"float32"``, ``"bfloat16"`` or ``"float16"`` autocast.
    batch_size : int
        Photos per forward pass (halved on out-of-memory by
        :func:`~protolens.models.vit.engine.run_batches`).
    cancel : CancelToken
        Checked before every batch.

    Yields
    ------
    Progress
        One report per batch.

    Returns
    -------
    list of DenseFeatures
        One per photo, in input order; arrays float32 on the host.

    Raises
    ------
    ParamError
        ``input_size`` is not a multiple of the patch size.
    Cancelled, DeviceOutOfMemoryError
        From :func:`~protolens.models.vit.engine.run_batches`.
    """
    info = family_info(model)
    check_input_size(input_size, info.patch_size)
    cells = input_size // info.patch_size

    def run(chunk: Sequence[np.ndarray]) -> list[DenseFeatures]:
        x = model_inputs(chunk, input_size, info.patch_size, mean, std, device)
        found: dict[str, torch.Tensor] = {}

        def handler(_index: int, q: torch.Tensor, k: torch.Tensor) -> None:
            found["saliency"] = cls_saliency(q, k, info.num_prefix)

        with torch.inference_mode(), autocast(device, dtype), QKCapture(model, [-1], handler):
            tokens = forward_tokens(model, x)
        tokens = tokens.float().cpu().numpy()
        saliency = found["saliency"].float().cpu().numpy().reshape(len(chunk), cells, cells)
        return [DenseFeatures(cls=tokens[i, 0].copy(),
                              tokens=tokens[i, info.num_prefix:].reshape(cells, cells, -1).copy(),
                              saliency=saliency[i].copy(), input_size=int(input_size),
                              image_size=(int(image.shape[0]), int(image.shape[1])))
                for i, image in enumerate(chunk)]

    if not images:
        return []
    return (yield from run_batches(list(images), run, batch_size=batch_size, device=device, cancel=cancel,
                                   what="image"))
