"""Running a ViT over many windows or crops: batches, autocast, cancellation and CUDA out-of-memory handling.

Memory is bounded by the batch: windows are cut from the working image and crops upsampled batch by
batch, so a 5640 x 3172 photo never needs more than one batch of model inputs at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any, TypeVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from protolens.core.attention import HEAD_FUSIONS, AttentionSummary
from protolens.core.errors import DeviceOutOfMemoryError
from protolens.core.jobs import CancelToken, Progress
from protolens.core.tiling import Window
from protolens.models.device import autocast
from protolens.models.vit.capture import capture_summaries
from protolens.models.vit.families import forward_tokens
from protolens.models.vit.preprocess import normalise

T = TypeVar("T")
R = TypeVar("R")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a CUDA (or other accelerator) out-of-memory error."""
    return isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc))


def run_batches(items: Sequence[T], fn: Callable[[Sequence[T]], list[R]], *, batch_size: int, device: str,
                cancel: CancelToken, what: str) -> Generator[Progress, None, list[R]]:
    """Apply ``fn`` to ``items`` in batches, yielding progress; cancellation is checked before every batch.

    On an out-of-memory error the batch size is halved and the batch retried; at batch size 1 it raises
    :class:`DeviceOutOfMemoryError` (the caller may fall back to the CPU).
    """
    results: list[R] = []
    size = max(1, int(batch_size))
    done = 0
    while done < len(items):
        cancel.raise_if_set()
        chunk = items[done:done + size]
        try:
            results.extend(fn(chunk))
        except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are handled here
            if not is_out_of_memory(exc):
                raise
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
            if size == 1:
                raise DeviceOutOfMemoryError(f"{device} ran out of memory with a batch of one {what}") from exc
            size = max(1, size // 2)
            yield Progress(done / len(items), f"{device} out of memory: batch of {what}s halved to {size}")
            continue
        done += len(chunk)
        yield Progress(done / len(items), f"{what} {done}/{len(items)} on {device} (batch {size})")
    return results


def window_summaries(model: nn.Module, working: np.ndarray, windows: Sequence[Window], *, full: bool,
                     batch_size: int, device: str, dtype: str, cancel: CancelToken,
                     fusions: Sequence[str] = HEAD_FUSIONS, fused_dtype: str = "float16",
                     ) -> Generator[Progress, None, tuple[list[AttentionSummary], list[np.ndarray]]]:
    """Attention summaries and final tokens of every window of a normalised working image.

    Parameters
    ----------
    working : numpy.ndarray
        (3, height, width) float32 normalised image; sizes are patch multiples.
    windows : sequence of Window
        Equal-sized windows (see :func:`protolens.core.tiling.plan_windows`).
    full : bool
        Capture the full attention (received, rollout) or only the CLS rows (cheap).
    fusions : sequence of str
        Head fusions whose (blocks, tokens, tokens) matrices are kept for rollout (full capture only).
    fused_dtype : str
        "float16" (half the memory) or "float32" (needed by a rollout discard ratio); see
        :func:`~protolens.models.vit.capture.capture_summaries`.

    Returns
    -------
    (list of AttentionSummary, list of numpy.ndarray)
        Per window, in order: the summary, and the tokens (tokens, dim) float16 after the last norm.
    """
    image = torch.from_numpy(np.ascontiguousarray(working)).to(device)

    def run(chunk: Sequence[Window]) -> list[tuple[AttentionSummary, np.ndarray]]:
        batch = torch.stack([image[:, w.top:w.top + w.height, w.left:w.left + w.width] for w in chunk])
        with autocast(device, dtype):
            summaries, tokens = capture_summaries(model, batch, full=full, fusions=fusions, fused_dtype=fused_dtype)
        tokens = tokens.to(torch.float16).cpu().numpy()
        return [(summary, tokens[i]) for i, summary in enumerate(summaries)]

    pairs = yield from run_batches(list(windows), run, batch_size=batch_size, device=device, cancel=cancel,
                                   what="window")
    return [p[0] for p in pairs], [p[1] for p in pairs]


def resize_to_crop_grid(image: np.ndarray, rows: int, cols: int, crop: int) -> np.ndarray:
    """Resize (H, W, 3) uint8 RGB to exactly (rows*crop, cols*crop), aspect ignored (arXiv 2512.19957, step 3)."""
    size = (cols * crop, rows * crop)
    shrink = size[0] < image.shape[1] and size[1] < image.shape[0]
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


@torch.inference_mode()
def crop_cls_tokens(model: nn.Module, crops: torch.Tensor, input_size: int) -> torch.Tensor:
    """CLS tokens (batch, dim) of (batch, 3, c, c) normalised crops upsampled (bicubic) to ``input_size``."""
    upsampled = F.interpolate(crops, size=(input_size, input_size), mode="bicubic", align_corners=False)
    return forward_tokens(model, upsampled)[:, 0]


def crop_token_grid(model: nn.Module, image: np.ndarray, *, grid: tuple[int, int], crop: int, input_size: int,
                    mean: Sequence[float], std: Sequence[float], batch_size: int, device: str, dtype: str,
                    cancel: CancelToken) -> Generator[Progress, None, np.ndarray]:
    """Tile-token mode of prototype guidance (arXiv 2512.19957, step 3): one CLS token per crop.

    The photo is resized to (rows*crop, cols*crop), cut into non-overlapping crop x crop tiles, each tile
    upsampled (bicubic) to ``input_size`` and encoded; only one batch of upsampled crops exists at a time,
    so memory is bounded by ``batch_size`` (4.9 GB would be needed for 1536 crops at 518 px in fp32).

    Returns (rows, cols, dim) float32 CLS tokens after the model's last norm.
    """
    rows, cols = grid
    small = normalise(resize_to_crop_grid(image, rows, cols, crop), mean, std)
    tensor = torch.from_numpy(small).to(device)
    cells = [(r, c) for r in range(rows) for c in range(cols)]

    def run(chunk: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        batch = torch.stack([tensor[:, r * crop:(r + 1) * crop, c * crop:(c + 1) * crop] for r, c in chunk])
        with autocast(device, dtype):
            tokens = crop_cls_tokens(model, batch, input_size)
        # copy: a view would keep the whole (batch, tokens, dim) output of every batch alive
        return list(tokens.float().cpu().numpy().copy())

    tokens: list[Any] = yield from run_batches(cells, run, batch_size=batch_size, device=device, cancel=cancel,
                                               what="crop")
    return np.stack(tokens).reshape(rows, cols, -1).astype(np.float32)
