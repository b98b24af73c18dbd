"""The backend API: what a plugin implements and what it receives. Importing this module is cheap.

A backend is a class deriving from :class:`Backend`, named by a manifest (``plugin.toml``)::

    id = "vegetation-index"           # stable id used by the CLI, caches and provenance
    name = "Vegetation index"         # GUI name
    version = "1.0.0"                 # bump when results change (it is part of every cache key)
    kind = "heatmap"                  # heatmap | segmentation | explanation
    entry = "backend:VegetationIndex" # module (relative to the plugin folder) : class
    requires = ["cv2"]                # modules that must be importable (checked without importing)
    weights_param = "model"           # optional: the parameter that selects a [weights.*] entry
    weights_file = "Run folder"       # optional: the backend takes a weights file or folder the user chooses
    [params.NAME]                     # typed parameters, see protolens.core.params
    [weights.NAME]                    # hf_repo, filename, size_bytes, licence, sha256 (optional)

``run(image, params, ctx)`` is a generator: it yields :class:`~protolens.core.jobs.Progress` and returns a
:class:`~protolens.core.types.BackendResult`. It calls ``ctx.cancel.raise_if_set()`` between batches.

Plugins import only ``protolens.core`` and this module. The model helpers they need (ViT loading,
attention capture) are re-exported here lazily, so importing the API does not import torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protolens.core.jobs import CancelToken, Progress
from protolens.core.params import ParamSpec
from protolens.core.types import BackendResult

BACKEND_KINDS = ("heatmap", "segmentation", "explanation")


@dataclass(frozen=True)
class WeightsSpec:
    """Where a model's weights come from and what they are.

    Attributes
    ----------
    name : str
        Weights id, e.g. ``vit_small_patch14_dinov2.lvd142m`` (timm model name with its tag).
    hf_repo : str
        Hugging Face Hub repository, e.g. ``timm/vit_small_patch14_dinov2.lvd142m``.
    filename : str
        File in that repository (``model.safetensors``).
    size_bytes : int or None
        Download size, shown before a download.
    licence : str
        SPDX licence id of the weights.
    sha256 : str or None
        Expected SHA-256 of the file, if known.
    extra_files : tuple of str
        Further files of the repository the model needs beside the weights (``config.json`` for
        Hugging Face ``transformers`` models); downloaded with them.
    """

    name: str
    hf_repo: str
    filename: str = "model.safetensors"
    size_bytes: int | None = None
    licence: str = "unknown"
    sha256: str | None = None
    extra_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class BackendManifest:
    """A backend's declaration, read without importing its code."""

    id: str
    name: str
    version: str
    kind: str
    entry: str
    description: str = ""
    params: tuple[ParamSpec, ...] = ()
    weights: tuple[WeightsSpec, ...] = ()
    weights_param: str | None = None
    requires: tuple[str, ...] = ()
    source: str = ""
    weights_file: str = ""
    """A label saying the backend takes a weights file or folder chosen by the user (``ctx.weights_path``), e.g.
    "Training checkpoint (epoch_###.safetensors) or run folder"; empty when it needs none or uses a catalogue."""

    def param(self, name: str) -> ParamSpec:
        """The spec of parameter ``name``; raises ``KeyError``."""
        for spec in self.params:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def weights_for(self, params: Any) -> WeightsSpec | None:
        """The weights entry selected by ``params`` (via ``weights_param``), or the only one, or None."""
        if not self.weights:
            return None
        if self.weights_param:
            wanted = getattr(params, self.weights_param, None) if not isinstance(params, dict) else params.get(
                self.weights_param)
            for spec in self.weights:
                if spec.name == wanted:
                    return spec
            return None
        return self.weights[0]


@dataclass
class RunContext:
    """What a backend gets besides the image and parameters.

    Attributes
    ----------
    device : str
        Torch device string (``"cpu"``, ``"cuda:0"``).
    dtype : str
        Compute dtype: ``"float32"``, ``"bfloat16"`` / ``"float16"`` for autocast, or ``"auto"``
        (bfloat16 on CUDA, float32 on the CPU; see ``resolve_dtype``).
    cache_dir : Path or None
        A folder the backend may use for its own caches.
    cancel : CancelToken
        Checked between batches with ``cancel.raise_if_set()``.
    weights_path : Path or None
        Weights the user chose (a file or a Hugging Face snapshot folder); None = the local cache.
    image_id : str or None
        SHA-256 of the image's file, when known: the key of backend-side feature caches.
    """

    device: str = "cpu"
    dtype: str = "float32"
    cache_dir: Path | None = None
    cancel: CancelToken = field(default_factory=CancelToken)
    weights_path: Path | None = None
    allow_random_weights: bool = False
    """Build models with random weights when none are found (tests and benchmarks only)."""
    image_id: str | None = None

    def resolved_dtype(self) -> str:
        """``dtype`` with ``"auto"`` resolved for ``device``: bfloat16 on CUDA, float32 elsewhere."""
        if self.dtype != "auto":
            return self.dtype
        return "bfloat16" if self.device.startswith("cuda") else "float32"


class Backend:
    """Base class of every backend. Subclasses implement :meth:`run`; the registry sets ``manifest``."""

    manifest: BackendManifest

    def weights_identity(self, params: Any, ctx: RunContext) -> tuple[str, str]:
        """(weights id, weights sha256) for provenance and cache keys; ``("none", "none")`` if weightless.

        Raises :class:`~protolens.core.errors.WeightsNotFoundError` if weights are needed but missing.
        """
        return ("none", "none")

    def catalogue_weights(self, params: Any, ctx: RunContext) -> tuple[Path | None, str, str]:
        """(weights file or None, weights id, sha256) of the model ``params.model`` names in this manifest.

        The file is ``ctx.weights_path`` or the local Hugging Face cache copy of the manifest's ``[weights.*]``
        entry (:func:`protolens.models.weights.resolve_weights`). Without either, and only with
        ``ctx.allow_random_weights``, the model gets random weights: (None, ``"<model>:random-init"``, ``"none"``).

        Raises :class:`~protolens.core.errors.WeightsNotFoundError` when the weights are missing otherwise.
        """
        from protolens.core.errors import WeightsNotFoundError
        from protolens.models.weights import resolve_weights, weights_sha256

        spec = self.manifest.weights_for(params)
        try:
            path = resolve_weights(spec, ctx.weights_path)
        except WeightsNotFoundError:
            if ctx.weights_path is None and ctx.allow_random_weights:
                return None, f"{params.model}:random-init", "none"
            raise
        return path, (spec.name if spec else params.model), weights_sha256(path)

    def prepare(self, params: Any, ctx: RunContext) -> None:
        """Load what :meth:`run` needs (weights, model) before the first image; errors surface early."""

    def run(self, image: Any, params: Any, ctx: RunContext) -> Generator[Progress, None, BackendResult]:
        """Compute the result for one image.

        Parameters
        ----------
        image : numpy.ndarray
            (height, width, 3) uint8 RGB.
        params : dataclass instance
            Validated parameters (see :func:`protolens.core.params.make_params`).
        ctx : RunContext
            Device, dtype, cancellation and weights.

        Yields
        ------
        Progress
            Progress reports with fraction in [0, 1].

        Returns
        -------
        BackendResult
        """
        raise NotImplementedError
        yield  # pragma: no cover - makes this a generator


# Lazily re-exported model helpers (they import torch when first used).
_LAZY = {
    "load_vit": "protolens.models.vit.loading",
    "vit_spec": "protolens.models.vit.loading",
    "preprocess": "protolens.models.vit.preprocess",
    "grid_size": "protolens.models.vit.preprocess",
    "capture_cls_attention": "protolens.models.vit.capture",
    "capture_attentions": "protolens.models.vit.capture",
    "capture_summaries": "protolens.models.vit.capture",
    "window_summaries": "protolens.models.vit.engine",
    "crop_token_grid": "protolens.models.vit.engine",
    "resize_to_grid": "protolens.models.vit.preprocess",
    "normalise": "protolens.models.vit.preprocess",
    "autocast": "protolens.models.device",
    "resolve_weights": "protolens.models.weights",
    "weights_sha256": "protolens.models.weights",
    "tile_tokens_key": "protolens.models.prototype.inference",
    "resolve_backbone": "protolens.models.prototype.inference",
    "load_narrow_vit": "protolens.models.prototype.inference",
    "received_attention_grid": "protolens.models.prototype.inference",
    "load_classifier": "protolens.models.prototype.classifier",
    "classify_cells": "protolens.models.prototype.classifier",
    "dense_features": "protolens.models.dense",
    "DenseFeatures": "protolens.models.dense",
    "facet_descriptors": "protolens.models.descriptors",
    "log_bin": "protolens.models.descriptors",
    "find_correspondences": "protolens.models.descriptors",
    "strided_model": "protolens.models.descriptors",
    "explain_image": "protolens.models.keypoint_labeling",
    "load_clip": "protolens.models.clip.loading",
    "encode_texts": "protolens.models.clip.dense",
    "dense_patch_features": "protolens.models.clip.dense",
    "dense_class_maps": "protolens.models.clip.dense",
    "TextEncoderStats": "protolens.models.clip.dense",
    "window_boxes": "protolens.models.clip.dense",
    "patch_tokens": "protolens.models.region_features",
    "region_features_key": "protolens.models.region_features",
    "LDVC": "protolens.models.ldvc.model",
    "LDVCConfig": "protolens.models.ldvc.model",
    "ldvc_image_tensor": "protolens.models.ldvc.model",
    "load_checkpoint": "protolens.models.training",
    "predict_not_kept": "protolens.models.patch_selector",
    "load_selector": "protolens.models.patch_selector",
    "image_features": "protolens.models.patch_selector",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
