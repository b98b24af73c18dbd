"""Keypoint-labeling backend: why a photo resembles its nearest prototypes, as matched and labelled parts.

Method: the Key-point Labeling Classifier (KLC, seed 002) on the dense ViT features of Amir et al.
(arXiv 2112.05814); facts and the reference code's bugs in METHODS.md §4. One engine does the work,
:func:`protolens.models.keypoint_labeling.explain_image` (``api.explain_image``), shared with
``protolens explain`` and the GUI's Explain view.

Steps
-----
1. Retrieval (KLC step 1): dense features of the photo (the bank's model and input size); its CLS embedding
   retrieves the ``k`` nearest bank images by cosine (the photo itself, same SHA-256, left out).
2. Segments (KLC step 2): part co-segmentation with the bank's part centroids (Amir et al. §4.2), SLIC
   superpixels inside the object mask, or the bank's part annotations; segment descriptor = mean of the
   bilinearly upsampled patch tokens over the segment; keypoint = segment centroid.
3. Matching (KLC step 3; Amir et al. §3 "best buddies"): mutual nearest neighbours by cosine between the
   photo's segments and the pooled segments of the retrieved prototypes; optionally only pairs whose part
   labels agree (``label_consistent``).
4. Soft vote (KLC step 4): score(c) = matches on class-c prototypes / all matches; no match = no prediction.
With ``pixels`` the pixel correspondences of Amir et al. §4.1 are found as well (they then form the keypoints).

Model and weights: the bank's (``bank.json``: model, weights id and SHA-256). Weights come from
``ctx.weights_path`` or the local Hugging Face cache and must have the bank's SHA-256; a bank built with random
weights (tests, benchmarks) runs only with ``ctx.allow_random_weights``. The weights identity of a result
folds in the bank's images, so rebuilding the bank with other images gives another result key.

Result
------
heatmap
    The photo's saliency (CLS attention of the last block, mean over heads, min-max normalised; Amir et al.)
    on the token grid, covering the photo: (rows, cols) float32 in [0, 1], drawn bilinear.
keypoints
    :meth:`Explanation.keypoints`: the photo's segment centroids (group ``"query"``, label = part name) and each
    retrieved prototype's (group = its path relative to the bank), pairs = the kept matches (query point,
    prototype point), pair score = cosine similarity; (x, y) in photo pixels of the image the point lies in.
scores_table
    The vote: class names with their share of the matches (column ``"votes"``), best first.
regions
    The photo's segments: (n, rows, cols) bool masks (longer side at most 1024 cells), label = part name,
    score = cosine similarity of the segment's kept match (0 when it has none).
info
    :meth:`Explanation.to_json` (schema ``protolens.explanation/1``: retrieval, matches with labels and
    similarities, vote, correspondences) plus the bank folder, model, device and dtype.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from protolens.core.bank_files import BankCache, bank_cache_dir, read_bank_cache
from protolens.core.errors import ParamError, WeightsNotFoundError
from protolens.core.hashing import sha256_json
from protolens.core.jobs import Progress
from protolens.core.layers import Regions, ScoresTable
from protolens.core.types import BackendResult, Heatmap, fit_grid
from protolens.models import api
from protolens.models.api import Backend, RunContext, WeightsSpec

REGION_MAX_SIDE = 1024
RANDOM_SHA = "none"
"""The weights SHA-256 a bank built with random weights records (as vit-attention names random weights)."""


def weights_spec(model: str) -> WeightsSpec:
    """The Hugging Face location of a bank's model weights: ``timm/<name>`` for timm names, the id itself for
    Hugging Face ids (``facebook/dinov2-small``, with its ``config.json``)."""
    if model.startswith(("facebook/", "openai/")):
        return WeightsSpec(name=model, hf_repo=model, extra_files=("config.json",))
    return WeightsSpec(name=model, hf_repo=f"timm/{model}")


def _segment_scores(explanation: Any, count: int, label_consistent: bool) -> np.ndarray:
    """(count,) float32: the cosine similarity of each query segment's kept match, 0 when it has none."""
    scores = np.zeros(count, np.float32)
    for match in explanation.kept(label_consistent):
        scores[match.query_segment] = max(scores[match.query_segment], float(match.similarity))
    return scores


def query_regions(explanation: Any, label_consistent: bool) -> Regions | None:
    """The photo's segments as a :class:`Regions` layer (None when it has none); see the module docstring."""
    segments = explanation.query.segments
    if segments.count == 0:
        return None
    height, width = segments.ids.shape
    rows, cols = fit_grid((height, width), REGION_MAX_SIDE)
    ids = segments.ids
    if (rows, cols) != (height, width):
        ids = cv2.resize(ids.astype(np.int32), (cols, rows), interpolation=cv2.INTER_NEAREST)
    masks = ids[None, :, :] == np.arange(segments.count, dtype=np.int32)[:, None, None]
    return Regions(masks, list(segments.names), _segment_scores(explanation, segments.count, label_consistent),
                   (height, width))


def query_heatmap(explanation: Any) -> np.ndarray:
    """The heatmap values: the query's token saliency ((rows, cols) float32 in [0, 1])."""
    return np.clip(np.asarray(explanation.query_saliency, np.float32), 0.0, 1.0)


class KeypointLabeling(Backend):
    """Best-buddy part matches between a photo and its nearest bank prototypes, and their class vote."""

    def __init__(self) -> None:
        self._banks: dict[tuple[str, int], BankCache] = {}
        self._lock = threading.Lock()

    # --- bank and weights --------------------------------------------------------------------------
    def bank(self, params: Any) -> BankCache:
        """The built bank of ``params.bank``, read once per build (its feature memo is reused across photos).

        Raises
        ------
        ParamError
            No bank folder given, or the folder is not a built bank (or its images changed since the build).
        """
        if not str(params.bank).strip():
            raise ParamError("keypoint-labeling needs a prototype bank: --bank DIR (build it with "
                             "`protolens bank build DIR`)")
        root = Path(params.bank).expanduser().resolve()
        stamp_path = bank_cache_dir(root) / "bank.json"
        stamp = stamp_path.stat().st_mtime_ns if stamp_path.is_file() else -1
        with self._lock:
            cached = self._banks.get((str(root), stamp))
        if cached is not None:
            return cached
        bank = read_bank_cache(root)  # checks the images against the build (new, missing, edited)
        with self._lock:
            self._banks = {(str(root), stamp): bank}  # one bank at a time: its feature memo can be large
        return bank

    def _weights(self, bank: BankCache, ctx: RunContext) -> tuple[Path | None, str, str]:
        """(path or None for random init, weights id, sha256) of the bank's model; checked against the bank."""
        if bank.weights_sha256 == RANDOM_SHA:
            if ctx.weights_path is None and ctx.allow_random_weights:
                return None, bank.weights_id, RANDOM_SHA
            raise WeightsNotFoundError(f"the bank {bank.root} was built with random weights ({bank.weights_id}): "
                                       "rebuild it with real weights, or allow random weights (tests only)")
        path = api.resolve_weights(weights_spec(bank.model), ctx.weights_path)
        sha = api.weights_sha256(path)
        if sha != bank.weights_sha256:
            raise ParamError(f"weights {path} (sha256 {sha[:12]}…) are not the bank's {bank.weights_id} "
                             f"(sha256 {bank.weights_sha256[:12]}…): rebuild the bank or give its weights")
        return path, bank.weights_id, sha

    def weights_identity(self, params: Any, ctx: RunContext) -> tuple[str, str]:
        """(``<weights id>+bank:<folder name>``, SHA-256 over the weights' and the bank's digest).

        The bank's digest (model, weights, input size, image hashes, part centroids and names) is part of the
        identity, so a rebuilt bank never reuses a result computed against the old one.
        """
        bank = self.bank(params)
        _, weights_id, sha = self._weights(bank, ctx)
        digest = sha256_json({"weights": sha, "bank": bank.digest})
        return f"{weights_id}+bank:{bank.root.name}", digest

    def prepare(self, params: Any, ctx: RunContext) -> None:
        """Read the bank and load its model before the first photo, so errors surface early."""
        self.load_model(params, ctx)

    def load_model(self, params: Any, ctx: RunContext) -> Any:
        """The bank's ViT in eval mode on ``ctx.device`` (``api.load_vit``, built once and reused).

        Raises
        ------
        ParamError
            No bank, or weights that are not the bank's.
        WeightsNotFoundError
            The bank's weights are not on this machine (or random weights not allowed).
        CheckpointError
            Weights that do not fit the model.
        """
        return self._model(self.bank(params), ctx)[0]

    def _model(self, bank: BankCache, ctx: RunContext) -> tuple[Any, str]:
        """(the bank's ViT on ``ctx.device``, its weights' sha256); see :meth:`load_model`."""
        path, _, sha = self._weights(bank, ctx)
        return api.load_vit(bank.model, path, ctx.device, weights_key=sha if path is not None else None), sha

    # --- run ---------------------------------------------------------------------------------------
    def run(self, image: np.ndarray, params: Any, ctx: RunContext) -> Generator[Progress, None, BackendResult]:
        bank = self.bank(params)
        yield Progress(0.0, f"loading {bank.model} (bank {bank.root.name}: {len(bank.images)} images)")
        model, sha = self._model(bank, ctx)
        dtype = params.precision if params.precision != "auto" else ctx.resolved_dtype()
        explanation = yield from api.explain_image(
            model, image, bank, k=params.k, segments=params.segments, n_segments=params.n_segments,
            pixels=params.pixels, query_sha256=ctx.image_id, weights_sha256=sha,
            label_consistent=bool(params.label_consistent), device=ctx.device, dtype=dtype, cancel=ctx.cancel)
        ctx.cancel.raise_if_set()
        return self._result(image, explanation, params, bank, ctx, dtype)

    @staticmethod
    def _result(image: np.ndarray, explanation: Any, params: Any, bank: BankCache, ctx: RunContext,
                dtype: str) -> BackendResult:
        label_consistent = bool(params.label_consistent)
        vote = explanation.vote(label_consistent)
        saliency = query_heatmap(explanation)
        info = explanation.to_json(label_consistent)
        info.update({"bank": str(bank.root), "model": bank.model, "device": ctx.device, "dtype": dtype})
        return BackendResult(
            Heatmap(saliency, image.shape[:2]), extras={}, info=info,
            keypoints=explanation.keypoints(label_consistent),
            scores_table=ScoresTable(list(vote.classes), np.asarray(vote.scores, np.float32), "votes"),
            regions=query_regions(explanation, label_consistent))
