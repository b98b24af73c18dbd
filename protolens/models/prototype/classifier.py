"""The species classifier of prototype-guided zero-shot segmentation (arXiv 2512.19957, steps 1, 7 and 8).

Any timm classifier, built by name with ``num_classes`` outputs (the class mapping's length) and loaded from a
local weights file (``.safetensors``, or a torch file read with ``weights_only=True``). The paper uses
``vit_base_patch14_reg4_dinov2.lvd142m`` fine-tuned on PlantCLEF 2024 (7806 classes, input 518).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch import nn

from protolens.core.cache import MemoryCache
from protolens.core.errors import ParamError, WeightsNotFoundError
from protolens.core.jobs import CancelToken, Progress
from protolens.models.device import autocast
from protolens.models.prototype.assembly import assemble_neighbourhoods, check_grid_size, resize_square
from protolens.models.vit.engine import resize_to_crop_grid, run_batches
from protolens.models.vit.loading import load_fitting_state, read_state_dict
from protolens.models.vit.preprocess import normalise

_MODELS: MemoryCache[tuple[nn.Module, ClassifierSpec]] = MemoryCache(2)


@dataclass(frozen=True)
class ClassifierSpec:
    """How a classifier wants its input.

    Attributes
    ----------
    name : str
        timm model name.
    num_classes : int
        Outputs (C).
    input_size : int
        Side of the square input in pixels (the requested one, else the model's ``pretrained_cfg`` input size).
    mean, std : (float, float, float)
        Normalisation from timm's data config of the model (ImageNet's for most models).
    """

    name: str
    num_classes: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _build(name: str, num_classes: int, input_size: int) -> tuple[nn.Module, int]:
    """A random-weights timm classifier and its input side; ViTs get ``dynamic_img_size`` for another size."""
    try:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    except RuntimeError as exc:
        raise ParamError(f"unknown classifier {name!r}: {exc}") from None
    default = int((getattr(model, "pretrained_cfg", {}) or {}).get("input_size", (3, 224, 224))[-1])
    if input_size and input_size != default:
        try:  # position embeddings interpolated at forward time (timm ViTs); CNNs take any size as built
            model = timm.create_model(name, pretrained=False, num_classes=num_classes, dynamic_img_size=True)
        except TypeError:
            pass
    return model, int(input_size or default)


def load_classifier(name: str, weights: str | Path | None, num_classes: int, device: str = "cpu", *,
                    input_size: int = 0, weights_key: str | None = None,
                    allow_random: bool = False) -> tuple[nn.Module, ClassifierSpec]:
    """A timm classifier in eval mode on ``device`` and its input spec (arXiv 2512.19957, step 1).

    Parameters
    ----------
    name : str
        timm model name (``vit_base_patch14_reg4_dinov2.lvd142m``, ``resnet50``...).
    weights : path or None
        Local weights file; None builds random weights (only with ``allow_random``).
    num_classes : int
        Outputs C; must match the weights' head (the class mapping's length).
    input_size : int
        Side of the input in pixels; 0 = the model's ``pretrained_cfg`` input size.
    weights_key : str, optional
        Identity of the weights for the reuse cache (their SHA-256); default the path.
    allow_random : bool
        Accept ``weights=None`` (tests and benchmarks).

    Built once per (name, weights, classes, input size, device) and reused (the last two are kept).

    Raises
    ------
    ParamError
        Unknown model name, or fewer than one class.
    WeightsNotFoundError
        No weights file and random weights not allowed, or the file does not exist.
    CheckpointError
        Unreadable weights, or weights that do not fit the model with ``num_classes`` outputs.
    """
    if num_classes < 1:
        raise ParamError(f"a classifier needs at least one class, not {num_classes}")
    if weights is None and not allow_random:
        raise WeightsNotFoundError(f"classifier {name}: give its weights file (--classifier-weights FILE)")
    if weights is not None and not Path(weights).is_file():
        raise WeightsNotFoundError(f"{weights}: classifier weights file does not exist")
    key = (name, weights_key or (str(Path(weights).resolve()) if weights else "random"), num_classes, input_size,
           device)
    cached = _MODELS.get(key)
    if cached is not None:
        return cached
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # random classifiers (tests) are the same in every process
        model, size = _build(name, num_classes, input_size)
    if weights is not None:
        load_fitting_state(model, read_state_dict(weights), weights, f"{name} with {num_classes} classes")
    config = timm.data.resolve_data_config({}, model=model)
    spec = ClassifierSpec(name, num_classes, size, tuple(config["mean"]), tuple(config["std"]))  # type: ignore[arg-type]
    entry = (model.eval().to(device), spec)
    _MODELS.put(key, entry)
    return entry


def classify_cells(model: nn.Module, spec: ClassifierSpec, image: np.ndarray, *, grid: tuple[int, int], crop: int,
                   k: int, cells: Sequence[tuple[int, int]], batch_size: int, device: str, dtype: str,
                   cancel: CancelToken) -> Generator[Progress, None, np.ndarray]:
    """Class probabilities of the K x K assembly around each cell (arXiv 2512.19957, steps 7 and 8).

    The photo is resized to (rows*crop, cols*crop) (step 3, aspect ignored) and normalised with the classifier's
    mean/std; each cell's K x K neighbourhood is stitched (out-of-grid cells are zeros in normalised space),
    resized to ``spec.input_size`` (bilinear, antialiased), classified under ``dtype`` autocast, and softmaxed
    in float32. Only one batch of stitched images exists at a time; a CUDA out-of-memory error halves the batch.

    Parameters
    ----------
    image : numpy.ndarray
        (height, width, 3) uint8 RGB photo, any size.
    grid : (int, int)
        (rows, cols) of the crop grid.
    cells : sequence of (int, int)
        (row, col) of the kept crops, in the order wanted.

    Returns
    -------
    numpy.ndarray
        (len(cells), C) float32 probabilities, rows in ``cells`` order.

    Raises ``ValueError`` for an even ``k``; Cancelled; DeviceOutOfMemoryError.
    """
    check_grid_size(k)
    if not cells:
        return np.zeros((0, spec.num_classes), np.float32)
    rows, cols = grid
    small = normalise(resize_to_crop_grid(image, rows, cols, crop), spec.mean, spec.std)
    tensor = torch.from_numpy(small).to(device)

    @torch.inference_mode()
    def run(chunk: Sequence[tuple[int, int]]) -> list[Any]:
        batch = resize_square(assemble_neighbourhoods(tensor, chunk, crop=crop, k=k), spec.input_size)
        with autocast(device, dtype):
            logits = model(batch)
        return list(torch.softmax(logits.float(), dim=-1).cpu().numpy())

    probabilities = yield from run_batches(list(cells), run, batch_size=batch_size, device=device, cancel=cancel,
                                           what="stitched crop")
    return np.stack(probabilities).astype(np.float32, copy=False)
