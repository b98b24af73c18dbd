"""Prototype-guided zero-shot segmentation backend (arXiv 2512.19957; steps of METHODS.md §1).

Weights: ``ctx.weights_path`` is an epoch checkpoint ``RUN_DIR/epoch_###.safetensors`` or a run folder (then its
chosen epoch, else the last: :func:`protolens.core.runs.resolve_checkpoint`). The run's ``config.json`` gives the
backbone (timm name, weights file and SHA-256), the tiling (photo size, crop, crop input) and the narrow ViT.

Steps
-----
1. Tile tokens (step 3): the photo is resized to the run's photo size (aspect ignored), cut into crop x crop
   tiles, each upsampled (bicubic) to the crop input and encoded by the frozen backbone; CLS per crop ->
   (rows, cols, dim). Batched (memory bounded by ``batch_size``), cached in memory and on disk under the key
   of :func:`protolens.services.tokens.crop_tokens` (``api.tile_tokens_key``), so all epochs of a run share them.
2. Received attention (step 6): the epoch's narrow ViT (step 4) on the tokens; attention of all blocks and
   heads averaged, summed over queries -> raw (rows, cols) scores (float32).
3. Crop mask (step 6): min-max normalised (eps 1e-6), kept where >= ``threshold``.
4. With a classifier (steps 7-8): for every kept crop, in row-major order, its K x K neighbourhood is stitched
   (out-of-grid cells zeros in normalised space), resized to the classifier input and classified; softmax;
   the species list rule of step 8 (:func:`protolens.core.species.species_list`).

Result
------
heatmap
    The normalised received attention upsampled to the photo size with *nearest-neighbour* resampling
    (cv2 ``INTER_NEAREST``), so every crop is one flat block and ``heatmap >= threshold`` is exactly the crop
    mask upsampled (the suggested threshold is ``threshold``): the mask a user exports is the set of crops the
    classifier saw. (float32, photo (height, width), in [0, 1].)
extras
    ``score``: raw received attention (rows, cols) float32. With a classifier: ``kept`` (n, 2) int32 (row, col)
    of the classified crops, ``top1`` (n,) int32 class index and ``top1_probability`` (n,) float32 of each.
scores_table
    Species id (and name when the mapping has one, ``"id name"``) and the probability of its hit, best first.
regions
    One per listed species: the union of the crops it came from, (n, rows, cols) bool on the crop grid
    (``Regions.mask(i)`` gives it at the photo size with the same nearest resampling), label = species id,
    score = its probability.
info
    Run folder, epoch, checkpoint and its SHA-256, tiling, backbone, device, dtype, and with a classifier the
    species list: ``species`` = [{species_id, name, class_index, probability, crops: [{row, col, box}]}] where
    ``box`` = [x, y, width, height] in photo pixels (origin top-left) of the crop's block in the heatmap.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from protolens.core.cache import DiskCache, MemoryCache
from protolens.core.errors import CheckpointError, ParamError, WeightsNotFoundError
from protolens.core.hashing import sha256_file, sha256_json
from protolens.core.indicators import crop_mask, normalise_received
from protolens.core.jobs import Progress
from protolens.core.layers import Regions, ScoresTable
from protolens.core.runs import EpochRecord, RunFolder, resolve_checkpoint
from protolens.core.species import ClassMapping, species_list
from protolens.core.types import BackendResult, Heatmap
from protolens.models import api
from protolens.models.api import Backend, RunContext

TOKEN_CACHE_BYTES = 512 * 1024**2


@dataclass(frozen=True)
class RunInfo:
    """What one epoch checkpoint of a run needs at inference (read from its run folder)."""

    run: RunFolder
    record: EpochRecord
    sha256: str
    backbone: dict[str, Any]
    narrow_vit: dict[str, Any]
    photo_size: tuple[int, int]
    crop: int
    crop_input: int

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the crop grid."""
        return self.photo_size[1] // self.crop, self.photo_size[0] // self.crop

    @property
    def weights_id(self) -> str:
        return f"{self.run.path.name}:epoch_{self.record.epoch:03d}"


def read_run(weights_path: Path | None) -> RunInfo:
    """The run and epoch of ``weights_path`` (checkpoint or run folder), checked against its config.

    Raises WeightsNotFoundError (no path) or CheckpointError (not a run, corrupt or inconsistent files, or a
    checkpoint whose SHA-256 differs from the one its metadata recorded).
    """
    if weights_path is None:
        raise WeightsNotFoundError("prototype-guided needs a training checkpoint: pass --weights "
                                   "RUN_DIR/epoch_###.safetensors or a run folder (protolens train prototype-vit)")
    run, record = resolve_checkpoint(weights_path)
    config = run.config()
    try:
        tiling, narrow, backbone = config["tiling"], dict(config["narrow_vit"]), dict(config["backbone"])
        photo_size = (int(tiling["photo_size"][0]), int(tiling["photo_size"][1]))
        crop, crop_input = int(tiling["crop"]), int(tiling["crop_input"])
        narrow_grid = (int(narrow["grid"][0]), int(narrow["grid"][1]))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CheckpointError(f"{run.config_path}: incomplete run config ({type(exc).__name__}: {exc})") from None
    sha = api.weights_sha256(record.checkpoint)
    if record.sha256 and record.sha256 != sha:
        raise CheckpointError(f"{record.checkpoint}: its SHA-256 differs from the one recorded in "
                              f"{run.meta_path(record.epoch).name} (rewritten or damaged)")
    info = RunInfo(run, record, sha, backbone, narrow, photo_size, crop, crop_input)
    if crop < 1 or photo_size[0] % crop or photo_size[1] % crop or narrow_grid != info.grid:
        raise CheckpointError(f"{run.config_path}: the narrow ViT's grid {narrow_grid} does not match the tiling "
                              f"(photo {photo_size[0]}x{photo_size[1]}, crop {crop})")
    return info


def crop_boxes(grid: tuple[int, int], image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Photo-pixel extent of every grid row and column under nearest-neighbour upsampling.

    Returns ``(ys, xs)``: (rows, 2) int first pixel row and height, (cols, 2) int first pixel column and width,
    the block each cell covers in ``cv2.resize(..., INTER_NEAREST)`` to ``image_size`` = (height, width) (the
    heatmap's and ``Regions.mask``'s resampling).
    """
    def extents(cells: int, pixels: int) -> np.ndarray:
        index = cv2.resize(np.arange(cells, dtype=np.float32)[None, :], (pixels, 1),
                           interpolation=cv2.INTER_NEAREST)[0].astype(np.int64)
        starts = np.searchsorted(index, np.arange(cells), side="left")
        ends = np.searchsorted(index, np.arange(cells), side="right")
        return np.stack([starts, ends - starts], axis=1)

    return extents(grid[0], image_size[0]), extents(grid[1], image_size[1])


class PrototypeGuided(Backend):
    """Received-attention crop masks and, with a classifier, species lists (arXiv 2512.19957)."""

    def __init__(self) -> None:
        self._tokens: MemoryCache[np.ndarray] = MemoryCache(64, max_bytes=TOKEN_CACHE_BYTES,
                                                            size_of=lambda a: a.nbytes)

    # --- weights -----------------------------------------------------------------------------------
    @staticmethod
    def _classifier_files(params: Any) -> tuple[Path | None, Path]:
        """(classifier weights or None when empty, class mapping) of a classifier run; raises when missing."""
        if not params.class_mapping:
            raise ParamError(f"classifier {params.classifier}: give its class mapping CSV (--class-mapping FILE)")
        mapping = Path(params.class_mapping).expanduser()
        if not mapping.is_file():
            raise ParamError(f"{mapping}: class mapping file does not exist")
        weights = Path(params.classifier_weights).expanduser() if params.classifier_weights else None
        if weights is not None and not weights.is_file():
            raise WeightsNotFoundError(f"{weights}: classifier weights file does not exist")
        return weights, mapping

    def weights_identity(self, params: Any, ctx: RunContext) -> tuple[str, str]:
        """(``<run folder name>:epoch_###``, SHA-256).

        Attention only: the checkpoint's SHA-256 (as ``epoch_###.json`` and ``chosen.json`` record it). With a
        classifier: SHA-256 over the checkpoint's, the classifier weights' (``"random"`` without a file) and the
        class mapping's. So two epochs, or two classifiers, never share a result key.
        """
        info = read_run(ctx.weights_path)
        if not params.classifier:
            return info.weights_id, info.sha256
        weights, mapping = self._classifier_files(params)
        if weights is None and not ctx.allow_random_weights:
            raise WeightsNotFoundError(f"classifier {params.classifier}: give its weights file "
                                       "(--classifier-weights FILE)")
        classifier = api.weights_sha256(weights) if weights is not None else "random"
        return (f"{info.weights_id}+{params.classifier}",
                sha256_json({"checkpoint": info.sha256, "classifier": classifier, "mapping": sha256_file(mapping)}))

    def prepare(self, params: Any, ctx: RunContext) -> None:
        """Check the checkpoint, the run's backbone weights and the classifier files before the first photo."""
        info = read_run(ctx.weights_path)
        api.resolve_backbone(info.backbone, allow_random=ctx.allow_random_weights)
        self._check_params(params)
        if params.classifier:
            self.weights_identity(params, ctx)
            ClassMapping.from_file(self._classifier_files(params)[1])

    @staticmethod
    def _check_params(params: Any) -> None:
        if params.grid % 2 == 0:
            raise ParamError(f"--grid {params.grid}: the assembly grid K must be odd (9 and 5 were used)")

    # --- tokens ------------------------------------------------------------------------------------
    def _tile_tokens(self, image: np.ndarray, info: RunInfo, params: Any,
                     ctx: RunContext) -> Generator[Progress, None, tuple[np.ndarray, str]]:
        """Step 3: (rows, cols, dim) float32 tokens and where they came from ("memory", "disk", "computed")."""
        model = str(info.backbone["model"])
        path, sha = api.resolve_backbone(info.backbone, allow_random=ctx.allow_random_weights)
        key = None if ctx.image_id is None else api.tile_tokens_key(
            ctx.image_id, model, sha, info.grid, info.crop, info.crop_input, params.precision)
        disk = DiskCache(ctx.cache_dir / "features") if ctx.cache_dir is not None and key else None
        tokens = self._tokens.get(key) if key else None
        if tokens is not None:
            return tokens, "memory"
        hit = disk.get(key) if disk is not None else None
        if hit is not None and "tokens" in hit[0]:
            tokens, source = hit[0]["tokens"].astype(np.float32, copy=False), "disk"
        else:
            yield Progress(0.02, f"loading {model}")
            network = api.load_vit(model, path, ctx.device, weights_key=sha if path is not None else None)
            spec = api.vit_spec(network)
            dtype = params.precision if params.precision != "auto" else ctx.resolved_dtype()
            tokens = yield from _scaled(api.crop_token_grid(
                network, image, grid=info.grid, crop=info.crop, input_size=info.crop_input, mean=spec.mean,
                std=spec.std, batch_size=params.batch_size, device=ctx.device, dtype=dtype, cancel=ctx.cancel),
                0.05, 0.8)
            source = "computed"
            if disk is not None:
                disk.put(key, {"tokens": tokens}, {"model": model})
        if key:
            self._tokens.put(key, tokens)
        return tokens, source

    # --- run ---------------------------------------------------------------------------------------
    def run(self, image: np.ndarray, params: Any, ctx: RunContext) -> Generator[Progress, None, BackendResult]:
        self._check_params(params)
        info = read_run(ctx.weights_path)
        tokens, source = yield from self._tile_tokens(image, info, params, ctx)
        ctx.cancel.raise_if_set()
        yield Progress(0.82, f"received attention of epoch {info.record.epoch}")
        narrow = api.load_narrow_vit(info.record.checkpoint, info.sha256, info.narrow_vit, ctx.device)
        try:
            score = api.received_attention_grid(narrow, tokens, ctx.device)
        except ValueError as exc:
            raise CheckpointError(f"{info.record.checkpoint}: {exc}") from None
        normalised = normalise_received(score)
        mask = crop_mask(score, params.threshold)
        height, width = image.shape[:2]
        # stored at the crop grid (kilobytes, not tens of megabytes per epoch) and enlarged as whole crops
        result = BackendResult(Heatmap(normalised, (height, width), "nearest"), suggested_threshold=params.threshold,
                               extras={"score": score}, info=self._info(info, params, ctx, tokens, source, mask))
        if params.classifier:
            yield from self._classify(image, info, params, ctx, mask, result)
        yield Progress(1.0, "done")
        return result

    @staticmethod
    def _info(info: RunInfo, params: Any, ctx: RunContext, tokens: np.ndarray, source: str,
              mask: np.ndarray) -> dict[str, Any]:
        return {"run": str(info.run.path), "epoch": info.record.epoch, "checkpoint": info.record.checkpoint.name,
                "checkpoint_sha256": info.sha256, "grid": list(info.grid), "crop": info.crop,
                "crop_input": info.crop_input, "photo_size": list(info.photo_size),
                "backbone": str(info.backbone.get("model")), "token_dim": int(tokens.shape[-1]),
                "tokens": source, "kept_crops": int(mask.sum()), "device": ctx.device,
                "dtype": params.precision if params.precision != "auto" else ctx.resolved_dtype(),
                "heatmap": "normalised received attention on the crop grid, enlarged nearest-neighbour (one block per crop)",
                "method": "arXiv 2512.19957 steps 3-8"}

    def _classify(self, image: np.ndarray, info: RunInfo, params: Any, ctx: RunContext, mask: np.ndarray,
                  result: BackendResult) -> Generator[Progress, None, None]:
        """Steps 7-8: classify the K x K assembly of every kept crop; fill the scores table, regions and info."""
        weights, mapping_path = self._classifier_files(params)
        mapping = ClassMapping.from_file(mapping_path)
        yield Progress(0.84, f"loading classifier {params.classifier}")
        model, spec = api.load_classifier(
            params.classifier, weights, len(mapping), ctx.device, input_size=params.classifier_input,
            weights_key=api.weights_sha256(weights) if weights is not None else None,
            allow_random=ctx.allow_random_weights)
        cells = [(int(r), int(c)) for r, c in np.argwhere(mask)]  # row-major: the order of step 8
        dtype = params.precision if params.precision != "auto" else ctx.resolved_dtype()
        probabilities = yield from _scaled(api.classify_cells(
            model, spec, image, grid=info.grid, crop=info.crop, k=params.grid, cells=cells,
            batch_size=params.batch_size, device=ctx.device, dtype=dtype, cancel=ctx.cancel), 0.85, 0.99)
        hits = species_list(probabilities, params.prob)
        kept = np.asarray(cells, np.int32).reshape(-1, 2)
        top = probabilities.argmax(axis=1).astype(np.int32) if len(cells) else np.zeros(0, np.int32)
        result.extras.update(kept=kept, top1=top,
                             top1_probability=probabilities[np.arange(len(top)), top].astype(np.float32))
        _species_layers(result, hits, kept, mapping, info.grid, image.shape[:2])
        result.info.update(classifier=params.classifier, classifier_input=spec.input_size,
                           classes=len(mapping), assembly_grid=params.grid, species_threshold=params.prob)


def _species_layers(result: BackendResult, hits: list[Any], kept: np.ndarray, mapping: ClassMapping,
                    grid: tuple[int, int], image_size: tuple[int, int]) -> None:
    """Scores table, one region per species (union of its source crops) and ``info["species"]``."""
    ys, xs = crop_boxes(grid, image_size)
    masks = np.zeros((len(hits), *grid), bool)
    species, names = [], []
    for i, hit in enumerate(hits):
        sid = mapping.species_id(hit.class_index)
        name = mapping.name(sid)
        crops = [(int(kept[s, 0]), int(kept[s, 1])) for s in hit.sources]
        for row, col in crops:
            masks[i, row, col] = True
        names.append(f"{sid} {name}" if name else sid)
        species.append({"species_id": sid, "name": name, "class_index": hit.class_index,
                        "probability": hit.probability,
                        "crops": [{"row": r, "col": c, "box": [int(xs[c, 0]), int(ys[r, 0]), int(xs[c, 1]),
                                                               int(ys[r, 1])]} for r, c in crops]})
    probabilities = np.array([h.probability for h in hits], np.float32)
    result.scores_table = ScoresTable(names, probabilities, "probability")
    result.regions = Regions(masks, [s["species_id"] for s in species], probabilities, image_size)
    result.info["species"] = species


def _scaled(job: Generator[Progress, None, Any], start: float, end: float) -> Generator[Progress, None, Any]:
    """Re-yield ``job``'s progress mapped into [start, end]; return its value."""
    while True:
        try:
            report = next(job)
        except StopIteration as stop:
            return stop.value
        yield Progress(start + (end - start) * report.fraction, report.text)
