"""CLS embeddings of whole images, batched: the features that K-Means turns into prototypes.

Source: prototype-guided zero-shot segmentation, arXiv 2512.19957, step 2 (METHODS.md §1): every training
image is resized so its short side is the model input (bicubic), centre-cropped to input x input,
normalised with the model's own mean/std, and encoded; the feature is the CLS token after the final norm.
The resize and crop follow the reference's timm/torchvision eval transform on PIL images
(``Resize(input, bicubic)`` + ``CenterCrop(input)``): PIL bicubic (antialiased when shrinking), long side
``int(input * long / short)``, crop offsets ``round((side - input) / 2)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from protolens.core.errors import ImageReadError, ParamError
from protolens.core.jobs import CancelToken, Progress
from protolens.models.device import autocast
from protolens.models.vit.engine import run_batches
from protolens.models.vit.families import family_info, forward_tokens

T = TypeVar("T")
DECODE_THREADS = 8
"""Most threads decoding and resizing images ahead of the forward passes."""


def resize_centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Short side to ``size`` (PIL bicubic), then the centred ``size`` x ``size`` square (arXiv 2512.19957, step 2).

    Parameters
    ----------
    image : numpy.ndarray
        (height, width, 3) uint8 RGB.
    size : int
        Side of the output square in pixels.

    Returns
    -------
    numpy.ndarray
        (size, size, 3) uint8 RGB.
    """
    height, width = image.shape[:2]
    short, long = min(height, width), max(height, width)
    new_long = max(size, int(size * long / short))
    new_w, new_h = (size, new_long) if width <= height else (new_long, size)
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BICUBIC))
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return np.ascontiguousarray(resized[top:top + size, left:left + size])


@dataclass
class Embeddings:
    """Outcome of :func:`embed_images`.

    Attributes
    ----------
    vectors : numpy.ndarray
        (m, dim) float32 CLS embeddings of the images that could be read, in input order.
    done : list of int
        Input index of each row of ``vectors``.
    failed : list of (int, str)
        Input index and reason of each image that could not be read (not embedded).
    """

    vectors: np.ndarray
    done: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)


def _prepared(read: Callable[[T], np.ndarray], item: T, size: int) -> np.ndarray | str:
    """The (size, size, 3) uint8 model input of ``item``, or why it cannot be read."""
    try:
        return resize_centre_crop(read(item), size)
    except (ImageReadError, OSError, ValueError) as exc:
        return str(exc)


def _normalised(batch: np.ndarray, mean: Sequence[float], std: Sequence[float], device: str) -> torch.Tensor:
    """(b, s, s, 3) uint8 -> (b, 3, s, s) float32 on ``device``, (x/255 - mean) / std per channel."""
    x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).contiguous().float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return x.sub_(mean_t).div_(std_t)


@torch.inference_mode()
def cls_embeddings(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """CLS token (batch, dim) after the model's final norm of a (batch, 3, s, s) normalised input."""
    return forward_tokens(model, batch)[:, 0]


def embed_images(model: nn.Module, items: Sequence[T], read: Callable[[T], np.ndarray], *, input_size: int,
                 mean: Sequence[float], std: Sequence[float], batch_size: int, device: str, dtype: str,
                 cancel: CancelToken) -> Generator[Progress, None, Embeddings]:
    """CLS embeddings of whole images (arXiv 2512.19957, step 2), batched, on ``device``.

    Images are read and resized/cropped (:func:`resize_centre_crop`) by up to :data:`DECODE_THREADS` threads
    ahead of the forward passes; batches run under autocast to ``dtype``, cancellation is checked before each
    batch, and on out-of-memory the batch is halved (:func:`~protolens.models.vit.engine.run_batches`).

    Parameters
    ----------
    model : torch.nn.Module
        A ViT on ``device`` in eval mode (timm, HF DINOv2 or CLIP vision).
    items : sequence
        What ``read`` takes (paths), in the order of the result.
    read : callable
        ``read(item) -> (height, width, 3) uint8 RGB``; raises ImageReadError (or OSError, ValueError)
        for an unreadable image, which is then listed in ``failed`` and not embedded.
    input_size : int
        Side of the square model input in pixels; a multiple of the model's patch size.
    mean, std : sequence of float
        The model's per-channel normalisation (RGB, for values in [0, 1]).
    batch_size : int
        Images per forward pass (halved on out-of-memory).
    device, dtype : str
        Torch device; ``"float32"``, ``"bfloat16"`` or ``"float16"`` autocast.
    cancel : CancelToken
        Checked before every batch.

    Returns
    -------
    Embeddings
        (m, dim) float32 vectors of the readable images, their indices and the failures.

    Raises
    ------
    ParamError
        ``input_size`` is not a multiple of the patch size.
    Cancelled, DeviceOutOfMemoryError
        From :func:`~protolens.models.vit.engine.run_batches`.
    """
    patch = family_info(model).patch_size
    if input_size % patch:
        raise ParamError(f"--input {input_size} is not a multiple of the patch size {patch} of this model "
                         f"(e.g. {max(patch, input_size // patch * patch)})")
    threads = max(1, min(DECODE_THREADS, os.cpu_count() or 1, len(items)))
    with ThreadPoolExecutor(threads, thread_name_prefix="protolens-decode") as pool:
        futures: list[Future[Any]] = [pool.submit(_prepared, read, item, input_size) for item in items]
        try:
            outcome = yield from _forward_all(model, futures, mean=mean, std=std, batch_size=batch_size,
                                              device=device, dtype=dtype, cancel=cancel)
        finally:
            for future in futures:
                future.cancel()
    return outcome


def _forward_all(model: nn.Module, futures: list[Future[Any]], *, mean: Sequence[float], std: Sequence[float],
                 batch_size: int, device: str, dtype: str, cancel: CancelToken) -> Generator[Progress, None, Embeddings]:
    failed: dict[int, str] = {}

    def run(chunk: Sequence[int]) -> list[np.ndarray | None]:
        inputs = {i: futures[i].result() for i in chunk}
        failed.update({i: v for i, v in inputs.items() if isinstance(v, str)})
        ready = [i for i in chunk if not isinstance(inputs[i], str)]
        if not ready:
            return [None] * len(chunk)
        batch = _normalised(np.stack([inputs[i] for i in ready]), mean, std, device)
        with autocast(device, dtype):
            cls = cls_embeddings(model, batch)
        rows = dict(zip(ready, cls.float().cpu().numpy().copy(), strict=True))
        return [rows.get(i) for i in chunk]

    results = yield from run_batches(list(range(len(futures))), run, batch_size=batch_size, device=device,
                                     cancel=cancel, what="image")
    done = [i for i, r in enumerate(results) if r is not None]
    dim = next((r.shape[0] for r in results if r is not None), 0)
    vectors = np.stack([results[i] for i in done]).astype(np.float32) if done else np.zeros((0, dim), np.float32)
    return Embeddings(vectors, done, sorted(failed.items()))
