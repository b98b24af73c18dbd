"""SVIP's self-supervised patch selection (arXiv 2503.10252, Sec. 3.2): the patch classifier and its targets.

- Raw patch embeddings: the ViT's patch-embedding output *before* the position embedding (and before CLS /
  register tokens), (rows, cols, d) on the patch grid; grouped 2x2 into super-patches of 4d dims
  (:func:`protolens.core.super_patches.super_patch_features`: 4 x 768 = 3072 for ViT-B/16).
- Targets: attention rollout as SVIP codes it (METHODS.md §2; :func:`protolens.core.attention.
  attention_rollout_map`: head mean, (A + I)/2 rows renormalised, R_l = A_l R_(l-1), CLS row without the prefix
  columns), grouped 2x2 *like the features* (:func:`~protolens.core.super_patches.super_patch_scores`, the
  reference's grouping bug fixed), top-M kept; target 1 = NOT kept.
- :class:`PatchSelector`: MLP 4d -> 512 -> ReLU -> 1 -> sigmoid, trained with binary cross-entropy
  (SVIP Sec. 3.2, L_patch). At inference it needs only the patch embedding, not the transformer blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from protolens.core.attention import attention_rollout_map
from protolens.core.errors import CheckpointError
from protolens.core.super_patches import super_patch_features
from protolens.models.vit.capture import capture_summaries
from protolens.models.vit.families import family_info, family_of

HIDDEN = 512
"""Hidden width of the patch classifier (SVIP Sec. 3.2)."""


class PatchSelector(nn.Module):
    """SVIP's patch classifier: Linear(in_dim, 512) -> ReLU -> Linear(512, 1) -> sigmoid = P(not kept).

    Parameters
    ----------
    in_dim : int
        Super-patch feature width, 4 x the ViT's embedding width (3072 for ViT-B/16, 1536 for ViT-S).
    hidden : int
        Hidden width (512 in SVIP).
    """

    def __init__(self, in_dim: int = 3072, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.in_dim, self.hidden = int(in_dim), int(hidden)
        self.net = nn.Sequential(nn.Linear(self.in_dim, self.hidden), nn.ReLU(), nn.Linear(self.hidden, 1))

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """(..., in_dim) super-patch features -> (...) logits of "not kept" (before the sigmoid)."""
        return self.net(features).squeeze(-1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(..., in_dim) -> (...) probability in [0, 1] that the super-patch is NOT kept (SVIP's r_hat)."""
        return torch.sigmoid(self.logits(features))

    def config(self) -> dict[str, int]:
        """``{"in_dim", "hidden"}``: what :func:`load_selector` needs to rebuild it."""
        return {"in_dim": self.in_dim, "hidden": self.hidden}


def selector_loss(model: PatchSelector, sample: tuple[torch.Tensor, torch.Tensor], device: str) -> torch.Tensor:
    """BCE between the predicted "not kept" probability and the 0/1 targets (SVIP Sec. 3.2, L_patch).

    ``sample`` = (features (n, in_dim) float32, targets (n,) float32, 1 = not kept); computed from the logits
    in float32 (``binary_cross_entropy_with_logits``, the stable form of the same loss). Returns a scalar.
    """
    features, targets = sample
    logits = model.logits(features.to(device, non_blocking=True)).float()
    return F.binary_cross_entropy_with_logits(logits, targets.to(device, non_blocking=True).float())


def _patch_embed_module(model: nn.Module) -> nn.Module:
    """The module whose output is the raw patch embedding (before position embedding) of a supported ViT."""
    family = family_of(model)
    if family == "timm":
        return model.patch_embed
    root = getattr(model, "vision_model", model)
    embeddings = root.embeddings
    module = getattr(embeddings, "patch_embeddings", None) or getattr(embeddings, "patch_embedding", None)
    if module is None:
        raise TypeError(f"{type(model).__name__}: no patch embedding module found")
    return module


def _as_grid(output: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A patch-embedding output -> (batch, rows, cols, d): NHWC, (B, N, d) or a conv's (B, d, rows, cols)."""
    rows, cols = grid
    if output.ndim == 4 and output.shape[1:3] == (rows, cols):
        return output
    if output.ndim == 4:
        return output.permute(0, 2, 3, 1)
    return output.reshape(output.shape[0], rows, cols, output.shape[-1])


@torch.inference_mode()
def raw_patch_embeddings(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Raw patch embeddings (batch, rows, cols, d), before the position embedding; runs no transformer block.

    ``x`` is (batch, 3, rows*patch, cols*patch) normalised. timm: ``model.patch_embed(x)``; HF DINOv2 / CLIP:
    their patch-embedding projection. The output is in the dtype the module computes (autocast applies).
    """
    patch = family_info(model).patch_size
    grid = (x.shape[-2] // patch, x.shape[-1] // patch)
    return _as_grid(_patch_embed_module(model)(x), grid)


@torch.inference_mode()
def rollout_and_embeddings(model: nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """One forward pass: SVIP rollout scores and raw patch embeddings of every image of the batch.

    The rollout (METHODS.md §2) runs on the head-mean attention captured in float32
    (:func:`~protolens.models.vit.capture.capture_summaries`, :func:`~protolens.core.attention.
    attention_rollout_map`, no discard); the embeddings are read by a forward hook on the patch embedding.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        (batch, rows, cols) float32 raw rollout scores (patches only; row = y), and (batch, rows, cols, d)
        float32 raw patch embeddings.
    """
    patch = family_info(model).patch_size
    grid = (x.shape[-2] // patch, x.shape[-1] // patch)
    seen: list[torch.Tensor] = []
    handle = _patch_embed_module(model).register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        summaries, _ = capture_summaries(model, x, full=True, fusions=("mean",), fused_dtype="float32")
    finally:
        handle.remove()
    if not seen:
        raise TypeError(f"{type(model).__name__}: the patch embedding was not called in the forward pass")
    embeddings = _as_grid(seen[0], grid).float().cpu().numpy()
    scores = np.stack([attention_rollout_map(s, "mean") for s in summaries])
    return scores, embeddings


def image_features(model: nn.Module, working: np.ndarray, *, rollout: bool, device: str = "cpu",
                   dtype: str = "float32") -> tuple[np.ndarray | None, np.ndarray]:
    """Rollout scores (if ``rollout``) and raw patch embeddings of one normalised image on ``device``.

    ``working`` is (3, rows*patch, cols*patch) float32 (``normalise`` output). Without ``rollout`` only the
    patch embedding runs (what a trained selector needs); with it, one full forward pass
    (:func:`rollout_and_embeddings`). ``dtype`` is the autocast dtype of the forward pass.

    Returns ((rows, cols) float32 or None, (rows, cols, d) float32).
    """
    from protolens.models.device import autocast

    x = torch.from_numpy(np.ascontiguousarray(working, dtype=np.float32))[None].to(device)
    with autocast(device, dtype):
        if not rollout:
            return None, raw_patch_embeddings(model, x)[0].float().cpu().numpy()
        scores, embeddings = rollout_and_embeddings(model, x)
    return scores[0], embeddings[0]


def selector_features(embeddings: np.ndarray) -> np.ndarray:
    """(rows, cols, d) raw embeddings -> (rows/2 * cols/2, 4d) float32 super-patch features, row-major."""
    grouped = super_patch_features(np.asarray(embeddings, dtype=np.float32))
    return grouped.reshape(-1, grouped.shape[-1])


@torch.inference_mode()
def predict_not_kept(selector: PatchSelector, embeddings: np.ndarray, device: str = "cpu") -> np.ndarray:
    """P(not kept) of every super-patch of one image: (rows, cols, d) embeddings -> (rows/2, cols/2) float32.

    Raises CheckpointError when the super-patch width 4d is not the selector's ``in_dim`` (another backbone).
    """
    rows, cols = embeddings.shape[0] // 2, embeddings.shape[1] // 2
    features = selector_features(embeddings)
    if features.shape[-1] != selector.in_dim:
        raise CheckpointError(f"the selector takes {selector.in_dim}-dim super-patches but this backbone gives "
                              f"{features.shape[-1]} (4 x {embeddings.shape[-1]}): use the run's backbone")
    probability = selector(torch.from_numpy(features).to(device)).float().cpu().numpy()
    return probability.reshape(rows, cols)


def load_selector(path: str | Path, config: dict[str, Any], device: str = "cpu") -> PatchSelector:
    """A :class:`PatchSelector` with ``config`` (``in_dim``, ``hidden``) and the weights of checkpoint ``path``.

    Raises CheckpointError for a missing, corrupt or mismatching file (via ``load_checkpoint``).
    """
    from protolens.models.training import load_checkpoint

    try:
        model = PatchSelector(int(config["in_dim"]), int(config.get("hidden", HIDDEN)))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: incomplete selector config ({type(exc).__name__}: {exc})") from None
    return load_checkpoint(path, model).to(device).eval()


def stack_samples(features: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> list[tuple[torch.Tensor,
                                                                                              torch.Tensor]]:
    """Training samples of the loop: per image ((n, 4d) float32 features, (n,) float32 targets) CPU tensors."""
    return [(torch.from_numpy(np.ascontiguousarray(f, np.float32)),
             torch.from_numpy(np.ascontiguousarray(t, np.float32).reshape(-1))) for f, t in zip(features, targets,
                                                                                            strict=True)]
