"""Training the LDVC decoder on labelled photos: a VOC folder or a protolens folder of corrected masks.

LDVC (arXiv 2403.08426) segments by text: frozen CLIP towers give patch features and class text embeddings, a
trainable text adapter and local consensus decoder (:mod:`protolens.models.ldvc`) turn them into per-patch class
logits. Zero-shot: only the SEEN classes supervise the training; the unseen classes are never trained and are
segmented at evaluation and inference from their names alone (LDVC §4.1, the inductive ZS3 setting).

Steps
-----
1. Data (:func:`protolens.services.segdata.load_dataset`): image + mask pairs; a bad or missing mask is
   reported by name and skipped (never fatal). Split: ``ImageSets/Segmentation/{train,val}.txt`` when the
   dataset has a ``val`` list, else the last ``val_fraction`` of a permutation seeded by ``seed``.
2. Classes: the run's classes are ``background`` (label 0) plus the seen and unseen classes, in dataset id
   order; ``classes`` of ``config.json`` is that list, the output channels at inference and the label map's
   class list (``["background", *names]``). The training channels are ``background`` + the seen classes only;
   mask pixels of unseen classes (and of classes in neither list) become 255 and are ignored by the loss.
3. Text: every class name is embedded with CLIP's 80 ImageNet templates (:func:`protolens.models.clip.text.
   encode_texts`, cached per synonym in memory and on disk, ``<cache>/clip_text``), the text tower is frozen.
4. Samples: photo resized to ``input_size`` x ``input_size`` (aspect ignored, ``cv2.INTER_AREA``), mask resized
   nearest-neighbour, one sample per photo (batch 1, gradient accumulation); the loss is LDVC's focal + Dice
   (§3.4, :func:`protolens.models.ldvc.ldvc_loss`), in the generic loop :func:`protolens.models.training.train`
   (AdamW, warm-up + cosine per update, per-epoch checkpoints, resume, bf16 autocast on CUDA).
5. After every epoch the validation photos are segmented over ALL run classes (argmax of the logits upsampled
   bilinearly to the mask's size) and scored with :func:`protolens.core.seg_metrics.evaluate_segmentation`:
   ``miou``, ``miou_seen``, ``miou_unseen``, ``hiou``, ``pixel_accuracy`` go into the epoch's indicators.
   Background is scored as a class only when it is named in ``seen`` (or ``unseen``); its pixels are always
   trained (the label map needs it).

Torch is imported only when training starts, so the GUI may import this module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protolens.core.errors import ImageReadError, ParamError, ProtolensError, WeightsNotFoundError
from protolens.core.jobs import CancelToken, Progress
from protolens.core.runs import RunFolder

MODEL_ID = "ldvc"
"""``"model"`` of the run config."""
PHASE_DATA = "reading"
"""Progress texts of the first phase (reading photos and masks) start with this; training's with ``"epoch "``."""
BACKGROUND = "background"
IGNORE = 255
DEFAULT_CLIP = "ViT-B-16"


@dataclass(frozen=True)
class ClassSplit:
    """The classes of a run, by dataset id.

    Attributes
    ----------
    names : list of str
        The dataset's class list (index = mask value; ``names[0]`` = background).
    seen, unseen : list of int
        Dataset ids of the seen (trained) and unseen (zero-shot) classes; disjoint.
    """

    names: list[str]
    seen: list[int]
    unseen: list[int]

    @property
    def run_ids(self) -> list[int]:
        """Dataset ids of the run's output channels: 0 (background), then seen and unseen, in id order."""
        return [0, *sorted({i for i in (*self.seen, *self.unseen) if i != 0})]

    @property
    def train_ids(self) -> list[int]:
        """Dataset ids of the training channels: 0 (background), then the seen classes, in id order."""
        return [0, *sorted({i for i in self.seen if i != 0})]

    @property
    def run_classes(self) -> list[str]:
        """``["background", *names]`` of :attr:`run_ids`: the label map's classes."""
        return [BACKGROUND, *(self.names[i] for i in self.run_ids[1:])]

    def lookup(self, ids: Sequence[int]) -> np.ndarray:
        """(256,) uint8 table: dataset id -> its index in ``ids``; any other value (and 255) -> 255."""
        table = np.full(256, IGNORE, np.uint8)
        for index, dataset_id in enumerate(ids):
            table[dataset_id] = index
        return table


def class_split(names: Sequence[str], seen: str | Sequence[str], unseen: str | Sequence[str] | None) -> ClassSplit:
    """Seen and unseen classes from comma-separated names (``"cat,dog"``) or lists of names.

    ``unseen`` None = every non-background class that is not seen. Raises ParamError for unknown names
    (naming them and the known ones), no seen class, or a class in both lists.
    """
    from protolens.core.segdata import parse_class_split

    def ids(value: str | Sequence[str]) -> list[int]:
        text = value if isinstance(value, str) else ",".join(value)
        return sorted(set(parse_class_split(text, list(names)))) if text.strip() else []

    seen_ids = ids(seen)
    if not [i for i in seen_ids if i != 0]:
        raise ParamError("--seen: name at least one class to train (besides background)")
    unseen_ids = ([i for i in range(1, len(names)) if i not in seen_ids] if unseen is None else ids(unseen))
    both = sorted(set(seen_ids) & set(unseen_ids))
    if both:
        raise ParamError(f"classes both seen and unseen: {', '.join(names[i] for i in both)}")
    return ClassSplit(list(names), seen_ids, unseen_ids)


@dataclass
class Prepared:
    """Resized photos and masks of one split; ``skipped`` lists (name, reason)."""

    names: list[str] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)  # (S, S, 3) uint8
    masks: list[np.ndarray] = field(default_factory=list)   # (S, S) uint8 training ids or (h, w) dataset ids
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _resize(image: np.ndarray, size: int, nearest: bool) -> np.ndarray:
    import cv2

    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    return np.ascontiguousarray(cv2.resize(image, (size, size), interpolation=interpolation))


def prepare_split(dataset: Any, size: int, *, table: np.ndarray | None, cancel: CancelToken, phase: str,
                  keep_mask_size: bool = False) -> Generator[Progress, None, Prepared]:
    """Read every sample of ``dataset``: photo resized to (size, size, 3) uint8; mask mapped through ``table``
    (dataset id -> channel, 255 ignore) and resized nearest to (size, size), or kept at its own size with
    dataset ids (``keep_mask_size``, for evaluation). Unreadable photos and bad masks (``dataset.load`` raises
    ImageReadError, a mask of another size included) are skipped by name."""
    out = Prepared(skipped=list(getattr(dataset, "skipped", [])))
    total = max(len(dataset.samples), 1)
    for i, sample in enumerate(dataset.samples):
        cancel.raise_if_set()
        try:
            image, mask = dataset.load(i)
        except ImageReadError as exc:
            out.skipped.append((sample.name, exc.reason))
            yield Progress((i + 1) / total, f"{PHASE_DATA} {phase} {i + 1}/{total}: {sample.name} skipped "
                                            f"({exc.reason})")
            continue
        out.names.append(sample.name)
        out.images.append(_resize(image, size, nearest=False))
        mapped = mask if table is None else table[mask]
        out.masks.append(np.ascontiguousarray(mapped) if keep_mask_size else _resize(mapped, size, nearest=True))
        yield Progress((i + 1) / total, f"{PHASE_DATA} {phase} {i + 1}/{total}: {sample.name}")
    return out


def split_dataset(dataset: Any, val_fraction: float, seed: int) -> tuple[Any, Any, str]:
    """(train, val, source) of a :class:`~protolens.core.segdata.SegDataset`.

    With ``ImageSets/Segmentation/val.txt``: val = that list, train = ``train.txt`` when present, else every
    other sample (source ``"ImageSets"``). Otherwise :meth:`SegDataset.holdout` holds out a seeded random
    ``val_fraction`` (source ``"fraction"``; no validation when it is 0). The parts' ``skipped`` are emptied
    (the whole data set's list is reported once). Raises ParamError for a fraction outside [0, 1).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ParamError(f"the validation fraction must be in [0, 1), not {val_fraction}")
    splits = dataset.splits()
    if "val" in splits:
        val = dataset.split("val")
        held = {s.name for s in val.samples}
        train = (dataset.split("train") if "train" in splits
                 else dataset.subset([s.name for s in dataset.samples if s.name not in held]))
        return (dataclasses.replace(train, skipped=[]), dataclasses.replace(val, skipped=[]), "ImageSets")
    train, val = dataset.holdout(val_fraction, seed)
    return dataclasses.replace(train, skipped=[]), dataclasses.replace(val, skipped=[]), "fraction"


@dataclass(frozen=True)
class ClipChoice:
    """The frozen CLIP of a run: open_clip name, weights file (None = random, tests only) and its identity."""

    model: str
    path: Path | None
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "weights": str(self.path) if self.path else None,
                "weights_sha256": self.sha256}


def resolve_clip(registry: Any, model: str, weights_path: str | Path | None,
                 allow_random_weights: bool) -> ClipChoice:
    """The CLIP weights of ``model``: ``weights_path``, else the local Hugging Face cache entry of the
    clip-dense backend's catalogue, else random weights when allowed (sha256 ``"random"``).

    Raises WeightsNotFoundError (naming how to get them) otherwise.
    """
    from protolens.models.weights import resolve_weights, weights_sha256

    spec = None
    try:
        spec = registry.manifest("clip-dense").weights_for({"model": model})
    except (ProtolensError, KeyError):
        spec = None
    try:
        path = resolve_weights(spec, weights_path)
    except WeightsNotFoundError:
        if weights_path is None and allow_random_weights:
            return ClipChoice(model, None, "random")
        raise
    return ClipChoice(model, path, weights_sha256(path))


def load_frozen_clip(choice: ClipChoice, device: str) -> Any:
    """The CLIP of ``choice`` on ``device`` (:func:`protolens.models.clip.loading.load_clip`, reused)."""
    from protolens.models.clip.loading import load_clip

    return load_clip(choice.model, choice.path, device, weights_key=choice.sha256 if choice.path else None)


def class_text_embeddings(clip: Any, names: Sequence[str], device: str) -> np.ndarray:
    """(n, D) float32 unit rows: each class name embedded with the 80 ImageNet templates (METHODS §5 step 1),
    cached per name in memory and on disk (``<cache>/clip_text``, shared with clip-dense)."""
    from protolens.core.cache import DiskCache, default_cache_dir
    from protolens.core.prompts import ClassPrompt
    from protolens.models.clip.text import encode_texts

    cache = DiskCache(default_cache_dir() / "clip_text", 64 * 1024**2)
    blocks = encode_texts(clip, [ClassPrompt(n, (n,)) for n in names], device=device, cache=cache)
    return np.concatenate(blocks, axis=0).astype(np.float32)


class ValidationMetrics:
    """``evaluate(model, epoch)`` of the loop: segmentation metrics on the validation photos.

    Each photo's logits over ALL run classes (seen and unseen) are upsampled bilinearly to its mask's size,
    the argmax is the prediction; the confusion matrices summed over the photos give
    :func:`protolens.core.seg_metrics.evaluate_segmentation` with the seen / unseen channels (LDVC §4.1:
    mIoU(S), mIoU(U), hIoU) -> ``{"miou", "miou_seen", "miou_unseen", "hiou", "pixel_accuracy"}`` (NaN where
    undefined). Computed in float32 without gradients.
    """

    def __init__(self, images: Sequence[Any], masks: Sequence[np.ndarray], texts: np.ndarray, split: ClassSplit):
        self.images, self.masks, self.texts, self.split = list(images), list(masks), texts, split
        run = split.run_ids
        self.seen = [run.index(i) for i in split.seen if i in run]
        self.unseen = [run.index(i) for i in split.unseen if i in run]

    def confusion(self, model: Any) -> np.ndarray:
        """(n, n + 1) int64 summed confusion matrix over the validation photos (n = run classes)."""
        import torch
        import torch.nn.functional as F

        from protolens.core.seg_metrics import confusion_matrix

        device = next(iter(model.parameters())).device
        n = len(self.split.run_ids)
        texts = torch.from_numpy(self.texts).to(device)
        total = np.zeros((n, n + 1), np.int64)
        with torch.no_grad():
            for image, mask in zip(self.images, self.masks, strict=True):
                logits = model(image.unsqueeze(0).to(device), texts).float()
                logits = F.interpolate(logits, size=mask.shape, mode="bilinear", align_corners=False)
                pred = logits[0].argmax(0).cpu().numpy()
                total += confusion_matrix(pred, mask, n)
        return total

    def __call__(self, model: Any, epoch: int) -> dict[str, float]:
        from protolens.core.seg_metrics import evaluate_segmentation

        scores = evaluate_segmentation(self.confusion(model), self.split.run_classes, self.seen, self.unseen)
        return {k: float("nan") if v is None else float(v) for k, v in scores.indicators().items()}


def _ldvc_loss(train_texts: np.ndarray) -> Any:
    """``loss_fn(model, (image, target), device)``: LDVC focal + Dice on the seen channels (§3.4)."""
    import torch

    from protolens.models.ldvc.losses import ldvc_loss

    texts = torch.from_numpy(train_texts)
    on_device: dict[str, torch.Tensor] = {}

    def loss_fn(model: Any, sample: tuple[Any, Any], device: str) -> Any:
        if device not in on_device:
            on_device[device] = texts.to(device)
        image, target = sample
        logits = model(image.unsqueeze(0).to(device, non_blocking=True), on_device[device])
        return ldvc_loss(logits.float(), target.unsqueeze(0).to(device, non_blocking=True))

    return loss_fn


def _read_data(dataset: Any, split: ClassSplit, val_fraction: float, seed: int, size: int,
               cancel: CancelToken) -> Generator[Progress, None, tuple[Prepared, Prepared, str]]:
    """Step 1: the train and validation photos, resized; the masks mapped to training / run channels."""
    from protolens.core.jobs import rescaled

    train_set, val_set, source = split_dataset(dataset, val_fraction, seed)
    share = len(train_set.samples) / max(len(train_set.samples) + len(val_set.samples), 1)
    train = yield from rescaled(prepare_split(train_set, size, table=split.lookup(split.train_ids), cancel=cancel,
                                              phase="train"), 0.0, share)
    val = yield from rescaled(prepare_split(val_set, size, table=split.lookup(split.run_ids), cancel=cancel,
                                            phase="val", keep_mask_size=True), share, 1.0 - share)
    return train, val, source


def train_ldvc(segmenter: Any, data: str | Path, *, seen: str | Sequence[str],
               unseen: str | Sequence[str] | None = None, epochs: int, out: str | Path, input_size: int = 224,
               clip_model: str = DEFAULT_CLIP, weights_path: str | Path | None = None,
               arch: Any = None, val_fraction: float = 0.2, lr: float = 1e-4, accumulation: int = 8,
               warmup_steps: int | None = None, seed: int = 0, precision: str = "auto",
               allow_random_weights: bool = False, store: Any = None,
               cancel: CancelToken | None = None) -> Generator[Progress, None, Any]:
    """Train (or resume) the LDVC decoder into the run folder ``out`` (arXiv 2403.08426; module docstring).

    Parameters
    ----------
    segmenter : protolens.services.segment.Segmenter
        Its registry gives the CLIP weights catalogue; its device pool runs the training as one job.
    data : path
        A VOC-style folder or a protolens photo folder with corrected masks (:func:`~protolens.services.
        segdata.load_dataset`; ``store`` = the result store of the latter, default: the environment's).
    seen, unseen : str or sequence of str
        Comma-separated class names (or lists); ``unseen`` None = every other non-background class.
    epochs : int
        Epochs in all; a rerun on the same ``out`` resumes and may only raise it.
    input_size : int
        Square side S the photos are resized to (multiple of the CLIP patch, 16 for ViT-B/16); logits are
        (S/16, S/16).
    clip_model, weights_path, allow_random_weights
        open_clip model and weights of the frozen towers (default: the local cache; random only in tests).
    arch : LDVCConfig or dict, optional
        Decoder settings (:class:`protolens.models.ldvc.LDVCConfig`; default: its defaults).
    val_fraction : float
        Held-out share when the data has no ``ImageSets/Segmentation/val.txt`` (0 = no validation metrics).
    lr, accumulation, warmup_steps, seed, precision
        :class:`~protolens.models.training.TrainConfig` (AdamW, min_lr 1e-6, weight decay 0.05; ``seed`` also
        seeds the decoder's initial weights and the hold-out).
    cancel : CancelToken, optional
        Stops between photos; the completed epochs are kept.

    Yields
    ------
    Progress
        ``"reading train i/n: name"`` (fraction of the reading phase; ``skipped (reason)`` for a bad sample),
        then ``"epoch e/E step s/S loss L"`` (fraction of the whole run).

    Returns
    -------
    protolens.models.training.TrainSummary
        ``skipped``: (name, reason) of every sample left out (bad or missing masks, unreadable photos).

    Raises
    ------
    ParamError
        Bad settings, unknown classes, or no training photo.
    CheckpointError
        A run folder of another model, data or settings; CLIP weights of another architecture.
    WeightsNotFoundError, Cancelled, StoreWriteError, ProtolensError (no readable photo; diverged loss).
    """
    from protolens.models.ldvc.model import LDVCConfig
    from protolens.models.training import TrainConfig
    from protolens.services.segdata import load_dataset

    cancel = cancel or CancelToken()
    config = TrainConfig(epochs=epochs, lr=lr, accumulation=accumulation, warmup_steps=warmup_steps, seed=seed,
                         precision=precision)
    arch = arch if isinstance(arch, LDVCConfig) else LDVCConfig.from_json(dict(arch or {}))
    if input_size < 8:
        raise ParamError(f"--input {input_size} is too small (a multiple of the CLIP patch size, 16)")
    dataset = load_dataset(data, store)
    split = class_split(dataset.classes, seen, unseen)
    clip = resolve_clip(segmenter.registry, clip_model, weights_path, allow_random_weights)
    train_data, val_data, source = yield from _read_data(dataset, split, val_fraction, seed, input_size, cancel)
    skipped = [*dataset.skipped, *train_data.skipped, *val_data.skipped]
    if not train_data.images:
        first = f" (first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise ProtolensError(f"no training photo with a usable mask in {data}{first}")
    run = RunFolder(out)
    run_config = {"model": MODEL_ID, "classes": split.run_classes,
                  "seen": [split.names[i] for i in split.seen], "unseen": [split.names[i] for i in split.unseen],
                  "train_classes": [split.names[i] if i else BACKGROUND for i in split.train_ids],
                  "dataset_ids": split.run_ids, "input_size": input_size, "clip": clip.to_json(),
                  "ldvc": arch.to_json(), "text": {"templates": "imagenet-80", "per_class": "class name"},
                  "data": {"path": str(Path(data).resolve()), "split": source, "train": train_data.names,
                           "val": val_data.names}}

    def job(device: str) -> Generator[Progress, None, Any]:
        model, texts, samples = _build(clip, arch, split, train_data, input_size, seed, device)
        evaluate = (ValidationMetrics(_tensors(val_data.images, model.clip, input_size), val_data.masks, texts,
                                      split) if val_data.images else None)
        train_texts = texts[[split.run_ids.index(i) for i in split.train_ids]]
        from protolens.models.training import train

        return (yield from train(model, samples, _ldvc_loss(train_texts), config, run, device=device,
                                 cancel=cancel, run_config=run_config, evaluate=evaluate))

    summary = yield from segmenter.pool().run(job, cancel=cancel, prefer=segmenter.device)
    return dataclasses.replace(summary, skipped=tuple(skipped))


def _tensors(images: Sequence[np.ndarray], clip: Any, size: int) -> list[Any]:
    from protolens.models.ldvc.model import ldvc_image_tensor

    return [ldvc_image_tensor(image, size, clip) for image in images]


def _build(clip: ClipChoice, arch: Any, split: ClassSplit, train_data: Prepared, size: int, seed: int,
           device: str) -> tuple[Any, np.ndarray, list[Any]]:
    """The model (decoder seeded by ``seed``, global torch RNG untouched), the run classes' text embeddings
    (n_run, D) and the training samples ((3, S, S) float32 image, (S, S) int64 target)."""
    import torch

    from protolens.models.ldvc.model import LDVC

    frozen = load_frozen_clip(clip, device)
    patch = int(frozen.visual.conv1.kernel_size[0])
    if size % patch:
        raise ParamError(f"--input {size} is not a multiple of the {clip.model} patch size {patch}")
    texts = class_text_embeddings(frozen, split.run_classes, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LDVC(frozen, arch)
    images = _tensors(train_data.images, frozen, size)
    samples = [(image, torch.from_numpy(mask.astype(np.int64))) for image, mask in zip(images, train_data.masks,
                                                                                         strict=True)]
    return model, texts, samples
