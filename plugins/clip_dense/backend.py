"""clip-dense backend: one class map per typed class, from CLIP with a changed last block, training-free.

The training-free CLIP baselines that LDVC (seed 001) builds on; facts in METHODS.md §5. The engine is
:mod:`protolens.models.clip` (``api.load_clip``, ``api.encode_texts``, ``api.dense_patch_features``,
``api.dense_class_maps``); this module reads the parameters, resolves the weights and builds the result.

Why open_clip (not transformers ``CLIPModel``): its visual tower exposes the residual blocks (``ln_1``,
``attn.in_proj_weight``, ``attn.out_proj``, ``ln_2``, ``mlp``) that the modes rewrite, exactly as the reference
code of MaskCLIP, SCLIP and ClearCLIP does, and its tokenizer ships the BPE vocabulary (works offline).

Steps
-----
1. Class list (``classes``, :func:`protolens.core.prompts.parse_class_list`): one class per line, synonyms
   after ``;``.
2. Text side (METHODS §5 step 1): every synonym encoded with the 80 ImageNet templates (mean of the
   L2-normalised embeddings, normalised again); cached per synonym and (model, weights) in memory and on disk
   (``ctx.cache_dir / "clip_text"``), so editing one class re-encodes only its synonyms.
3. Image side (steps 2-3): the photo's short side resized to ``short_side``, sliding windows (``window``,
   ``stride``) with the position embedding interpolated; the last block changed per ``mode``:
   ``sclip`` softmax(qqᵀ)+softmax(kkᵀ) attention (SCLIP, arXiv 2312.01597), ``maskclip`` identity attention with
   residual and FFN kept (MaskCLIP, arXiv 2112.01071), ``clearclip`` softmax(qqᵀ) without residual and FFN
   (ClearCLIP, arXiv 2407.12442).
4. Class maps (step 4): cosine logits per window upsampled and averaged over the windows, softmax of
   ``logit_scale`` × logits over all synonyms, max over each class's synonyms; label = argmax + 1 where the best
   probability is at least ``prob_threshold``, else 0 (background).

Weights: ``ctx.weights_path`` (an open_clip state dict, e.g. ``open_clip_model.safetensors`` of
timm/vit_base_patch16_clip_224.openai), else the local Hugging Face cache (``protolens weights pull ViT-B-16``),
else random weights, only with ``ctx.allow_random_weights`` (tests, benchmarks).

Result
------
heatmap
    The best class probability per cell: (rows, cols) float32 in [0, 1] on a grid covering the photo (longer
    side at most 1024 cells); the suggested threshold is ``prob_threshold``, so the mask is "some class".
heatmaps
    One :class:`Heatmap` per class name: that class's probability (max over its synonyms), same grid.
label_map
    :class:`LabelMap` ids (rows, cols) int32, classes ``["background", *class names]``.
info
    ``classes`` (``[{"name", "synonyms"}]``), ``mode``, ``model``, ``logit_scale``, ``prob_threshold``,
    ``windows`` (``[x, y, width, height]`` per window, photo pixels), ``grid`` ([rows, cols]), ``device``, ``dtype``, and ``text`` (``seconds`` of the text side,
    ``encoded`` synonyms computed and ``cached`` synonyms reused in this run).
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

import numpy as np

from protolens.core.cache import DiskCache
from protolens.core.errors import ParamError
from protolens.core.jobs import Progress
from protolens.core.layers import LabelMap
from protolens.core.prompts import ClassPrompt, class_names, parse_class_list
from protolens.core.types import BackendResult, Heatmap
from protolens.models import api
from protolens.models.api import Backend, RunContext

TEXT_DISK_BYTES = 64 * 1024**2


def class_prompts(params: Any) -> list[ClassPrompt]:
    """The class list of ``params.classes``; raises :class:`ParamError` (naming the line) when it is not valid."""
    return parse_class_list(str(params.classes))


def check_windows(params: Any) -> None:
    """Raise :class:`ParamError` when the stride is longer than the window (windows would leave gaps).

    A window longer than the resized photo's short side is allowed: that side then gets one window of its
    length (SCLIP ``forward_slide``; ``api.window_boxes``).
    """
    if params.stride > params.window:
        raise ParamError(f"--stride {params.stride} is larger than --window {params.window}: windows would "
                         "leave gaps")


def photo_windows(features: Any) -> list[list[float]]:
    """The sliding windows as ``[x, y, width, height]`` in photo pixels (x right, y down), as vit-attention
    reports its windows (the GUI outlines them)."""
    width, height = features.resized_size
    scale_x, scale_y = features.image_size[0] / width, features.image_size[1] / height
    return [[float(x0 * scale_x), float(y0 * scale_y), float((x1 - x0) * scale_x), float((y1 - y0) * scale_y)]
            for x0, y0, x1, y1 in np.asarray(features.boxes).tolist()]


class ClipDense(Backend):
    """Text-prompted class maps from a dense CLIP (SCLIP / MaskCLIP / ClearCLIP last block)."""

    # --- weights ---------------------------------------------------------------------------------
    def weights_identity(self, params: Any, ctx: RunContext) -> tuple[str, str]:
        _, weights_id, sha = self.catalogue_weights(params, ctx)
        return weights_id, sha

    def prepare(self, params: Any, ctx: RunContext) -> None:
        """Check the class list and stride and load the model before the first photo (errors surface early)."""
        class_prompts(params)
        check_windows(params)
        self.load_model(params, ctx)

    def load_model(self, params: Any, ctx: RunContext) -> Any:
        """The open_clip CLIP ``params.model`` in eval mode on ``ctx.device`` (``api.load_clip``, built once).

        Raises
        ------
        WeightsNotFoundError
            No weights found and random weights not allowed.
        CheckpointError
            Weights that do not fit the model.
        """
        path, _, sha = self.catalogue_weights(params, ctx)
        return api.load_clip(params.model, path, ctx.device, weights_key=sha if path is not None else None)

    # --- run -------------------------------------------------------------------------------------
    def _text_cache(self, ctx: RunContext) -> DiskCache | None:
        return DiskCache(ctx.cache_dir / "clip_text", TEXT_DISK_BYTES) if ctx.cache_dir is not None else None

    def run(self, image: np.ndarray, params: Any, ctx: RunContext) -> Generator[Progress, None, BackendResult]:
        prompts = class_prompts(params)
        check_windows(params)
        yield Progress(0.0, f"loading {params.model}")
        model = self.load_model(params, ctx)
        dtype = params.precision if params.precision != "auto" else ctx.resolved_dtype()
        texts, text_info = yield from self._texts(model, prompts, ctx)
        features = yield from api.dense_patch_features(
            model, image, mode=params.mode, short_side=params.short_side, window=params.window,
            stride=params.stride, device=ctx.device, dtype=dtype, cancel=ctx.cancel)
        ctx.cancel.raise_if_set()
        maps = api.dense_class_maps(features, texts, class_names=class_names(prompts),
                                    logit_scale=params.logit_scale, prob_threshold=params.prob_threshold)
        return self._result(image, prompts, maps, params, ctx, dtype, text_info, features)

    def _texts(self, model: Any, prompts: list[ClassPrompt],
               ctx: RunContext) -> Generator[Progress, None, tuple[list[np.ndarray], dict[str, Any]]]:
        """Text embeddings class by class (progress and cancellation between classes; a cold class costs 80
        text-tower passes per synonym), and the text side's info: seconds, synonyms encoded and cached."""
        start, stats, cache = time.perf_counter(), api.TextEncoderStats(), self._text_cache(ctx)
        texts: list[np.ndarray] = []
        for index, prompt in enumerate(prompts):
            ctx.cancel.raise_if_set()
            yield Progress(0.02 + 0.18 * index / len(prompts), f"class names {index + 1}/{len(prompts)}: {prompt.name}")
            texts.extend(api.encode_texts(model, [prompt], device=ctx.device, cache=cache, stats=stats))
        ctx.cancel.raise_if_set()
        info = {"seconds": round(time.perf_counter() - start, 4), "encoded": stats.encoded, "cached": stats.cached}
        return texts, info

    @staticmethod
    def _result(image: np.ndarray, prompts: list[ClassPrompt], maps: Any, params: Any, ctx: RunContext,
                dtype: str, text_info: dict[str, Any], features: Any) -> BackendResult:
        size = image.shape[:2]
        names = class_names(prompts)
        probs = np.asarray(maps.probabilities, np.float32)
        heatmaps = {name: Heatmap(probs[i], size) for i, name in enumerate(names)}
        best = probs.max(axis=0)
        info = {"classes": [{"name": p.name, "synonyms": list(p.synonyms)} for p in prompts],
                "mode": params.mode, "model": params.model, "logit_scale": params.logit_scale,
                "prob_threshold": params.prob_threshold, "windows": photo_windows(features),
                "grid": list(probs.shape[1:]), "device": ctx.device, "dtype": dtype, "text": text_info}
        return BackendResult(Heatmap(best, size), suggested_threshold=float(params.prob_threshold), info=info,
                             heatmaps=heatmaps, label_map=LabelMap(maps.labels, ["background", *names], size))
