"""LDVC: frozen CLIP towers + text adapter + local consensus decoder (Language-Driven Visual Consensus,
Zhang et al., arXiv 2403.08426; METHODS.md §5). LDVC has no public code.

Paper (§3): CLIP ViT-B/16; class embeddings from the text tower; the global image feature is fused into the
class embeddings by a text adapter (§3.2); a local consensus transformer decoder with route attention and class
embeddings as cross-attention anchors refines the patch features (§3.3); logits = similarity of refined patch
features and class embeddings; focal + Dice loss (§3.4); deep vision-language prompt tuning of the frozen
towers (VPT-deep, Jia et al., arXiv 2203.12119) with hand-crafted initialisation of the language prompts.

Ours / assumptions:
- The class embeddings are given (``encode_texts``: 80-template averages, cached), so the TEXT tower runs no
  prompts; deep prompt tuning is implemented for the IMAGE tower only (``prompt_tokens`` learnable tokens per
  block, VPT-deep: inserted after the class token before every block, their outputs dropped before the next
  block and after the last; initialised N(0, 0.02); off by default).
- The frozen image tower's last block output, ``ln_post`` and ``proj``, gives the patch features (B, H, W, D)
  and the class token the global feature (B, D), as in ZegCLIP (arXiv 2212.03588), which LDVC builds on.
- The CLIP model is held OUTSIDE the module tree: ``state_dict()``, ``parameters()`` and checkpoints hold only
  the trainable parts (prompts, adapter, decoder); ``.to()`` also moves the CLIP (pass one loaded on the
  training device); ``train()`` leaves the CLIP in eval mode; its parameters are set ``requires_grad=False``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from protolens.core.errors import ParamError
from protolens.models.clip.dense import _check_model, _mean_std, interpolate_pos_embed
from protolens.models.clip.loading import set_clip_identity
from protolens.models.ldvc.decoder import LocalConsensusDecoder, TextAdapter

__all__ = ["LDVC", "LDVCConfig", "ldvc_image_tensor", "tiny_clip", "tiny_ldvc"]


@dataclass(frozen=True)
class LDVCConfig:
    """Trainable-part hyper-parameters (stored in the run's config.json to rebuild the model).

    Attributes
    ----------
    dim : int
        Decoder width (assumption: 256).
    layers : int
        Decoder blocks (LDVC ablation: 2).
    heads : int
        Attention heads of the decoder.
    windows : int
        Route-attention windows per side S (BiFormer: 7, i.e. 2x2-token windows on the 14x14 grid at 224).
    top_k : int
        Windows kept per window (assumption: 8 of 49).
    prompt_tokens : int
        Deep visual prompt tokens per block of the image tower; 0 = prompt tuning off (default).
    adapter_alpha : float
        Initial residual scale of the text adapter.
    """

    dim: int = 256
    layers: int = 2
    heads: int = 8
    windows: int = 7
    top_k: int = 8
    prompt_tokens: int = 0
    adapter_alpha: float = 0.1

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict of the fields."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LDVCConfig:
        """Inverse of :meth:`to_json`; an unknown key raises ParamError (a run of another version)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ParamError(f"unknown LDVC settings: {', '.join(unknown)}")
        return cls(**data)


class LDVC(nn.Module):
    """The LDVC segmenter (module docstring: what the paper gives, what we assume).

    Parameters
    ----------
    clip : open_clip CLIP
        A CLIP ViT (``load_clip``/``create_clip``; no attention pooling); frozen, kept outside the module tree.
    config : LDVCConfig, optional

    Forward
    -------
    images : (B, 3, S, S) float, normalised with the CLIP mean / std (:func:`ldvc_image_tensor`); S a
        multiple of the patch size (other sizes than the tower's get an interpolated position embedding).
    class_text_embeddings : (n, D) float (``encode_texts`` rows; D = the CLIP embedding width).
    Returns logits (B, n, S / patch, S / patch) float32 (the autocast dtype under autocast; row = y, col = x).
    Non-square inputs (B, 3, H, W) work the same way.
    """

    def __init__(self, clip: nn.Module, config: LDVCConfig | None = None) -> None:
        super().__init__()
        self.config = config or LDVCConfig()
        visual = _check_model(clip)
        for p in clip.parameters():
            p.requires_grad_(False)
        object.__setattr__(self, "clip", clip.eval())
        self.embed_dim = int(visual.proj.shape[1])
        self.width = int(visual.conv1.out_channels)
        self.patch = int(visual.conv1.kernel_size[0])
        depth = len(visual.transformer.resblocks)
        c = self.config
        self.prompts = None
        if c.prompt_tokens > 0:
            self.prompts = nn.Parameter(torch.randn(depth, c.prompt_tokens, self.width) * 0.02)
        self.adapter = TextAdapter(self.embed_dim, alpha=c.adapter_alpha)
        self.decoder = LocalConsensusDecoder(self.embed_dim, c.dim, c.layers, c.heads, c.windows, c.top_k)

    @property
    def visual(self) -> nn.Module:
        """The frozen open_clip image tower."""
        return self.clip.visual

    def _apply(self, fn, *args, **kwargs):  # noqa: ANN001 - nn.Module API: move / cast the held CLIP too
        super()._apply(fn, *args, **kwargs)
        self.clip._apply(fn, *args, **kwargs)
        return self

    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen image tower (+ deep prompts when on).

        Returns ``(patches (B, H/p, W/p, D), global (B, D))`` float: ``ln_post`` + ``proj`` of the patch tokens
        and of the class token. Runs under ``no_grad`` unless prompts are on (then gradients reach them only).
        """
        with torch.set_grad_enabled(self.prompts is not None and torch.is_grad_enabled()):
            return self._tower(images)

    def _tower(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        visual = self.visual
        x = visual.conv1(images.to(visual.conv1.weight.dtype))
        b, c, rows, cols = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).reshape(1, 1, c).expand(b, 1, c)
        x = visual.ln_pre(torch.cat([cls, x], dim=1) + interpolate_pos_embed(visual, rows, cols).to(x.dtype))
        batch_first = getattr(visual.transformer, "batch_first", True)
        n_prompts = 0 if self.prompts is None else self.prompts.shape[1]
        for i, block in enumerate(visual.transformer.resblocks):
            if n_prompts:  # VPT-deep: replace the previous block's prompt outputs by this block's prompts
                skip = 1 + (n_prompts if i else 0)
                prompts = self.prompts[i].to(x.dtype).unsqueeze(0).expand(b, -1, -1)
                x = torch.cat([x[:, :1], prompts, x[:, skip:]], dim=1)
            x = block(x) if batch_first else block(x.transpose(0, 1)).transpose(0, 1)
        x = visual.ln_post(torch.cat([x[:, :1], x[:, 1 + n_prompts:]], dim=1)) @ visual.proj
        return x[:, 1:].reshape(b, rows, cols, -1), x[:, 0]

    def decode(self, patches: torch.Tensor, global_feature: torch.Tensor,
               class_text_embeddings: torch.Tensor) -> torch.Tensor:
        """Text adapter + decoder: patches (B, H, W, D), global (B, D), texts (n, D) -> logits (B, n, H, W)."""
        texts = class_text_embeddings.to(device=patches.device, dtype=patches.dtype)
        classes = self.adapter(texts, global_feature)
        return self.decoder(patches, classes)

    def forward(self, images: torch.Tensor, class_text_embeddings: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ParamError(f"images {tuple(images.shape)}: expected (B, 3, S, S)")
        if images.shape[2] % self.patch or images.shape[3] % self.patch:
            raise ParamError(f"image size {tuple(images.shape[2:])} is not a multiple of the patch {self.patch}")
        texts = torch.as_tensor(class_text_embeddings)
        if texts.ndim != 2 or texts.shape[1] != self.embed_dim or texts.shape[0] < 1:
            raise ParamError(f"class embeddings {tuple(texts.shape)}: expected (n >= 1, {self.embed_dim})")
        patches, global_feature = self.encode_image(images)
        return self.decode(patches.float(), global_feature.float(), texts)


def ldvc_image_tensor(image: np.ndarray, size: int, clip: nn.Module) -> torch.Tensor:
    """One photo (H, W, 3) uint8 RGB -> (3, size, size) float32, resized bilinearly (aspect not kept) and
    normalised with ``clip``'s mean / std (OpenAI's by default)."""
    mean, std = _mean_std(_check_model(clip))
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().unsqueeze(0) / 255.0
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean_t, std_t = torch.tensor(mean).reshape(3, 1, 1), torch.tensor(std).reshape(3, 1, 1)
    return (x[0] - mean_t) / std_t


TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
"""A tiny open_clip CLIP (tests, as tests/models/test_clip_dense.py): D = 16, 8-px patches, 2 image blocks."""


def tiny_clip(seed: int = 0, name: str = "tiny-ldvc-clip") -> nn.Module:
    """A tiny random open_clip CLIP (:data:`TINY_CLIP`), eval mode, tagged ``(name, f"random-{seed}")``."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(embed_dim=TINY_CLIP["embed_dim"], vision_cfg=CLIPVisionCfg(**TINY_CLIP["vision_cfg"]),
                     text_cfg=CLIPTextCfg(**TINY_CLIP["text_cfg"]))
    return set_clip_identity(model.eval(), name, f"random-{seed}")


def save_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """Write :func:`tiny_clip` (``seed``)'s weights to ``folder/open_clip_model.safetensors`` (folder created) and
    return the file: a CLIP weights file for tests, loaded by ``load_clip`` when ``create_clip`` builds
    ``tiny_clip(seed)``."""
    from safetensors.torch import save_file

    path = Path(folder) / "open_clip_model.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tiny_clip(seed).state_dict().items()}, str(path))
    return path


def tiny_ldvc(seed: int = 0, clip: nn.Module | None = None, **config: Any) -> LDVC:
    """An LDVC on :func:`tiny_clip` (or ``clip``) with a small decoder (dim 32, 4 heads, 2 windows per side,
    top_k 2; ``config`` overrides any :class:`LDVCConfig` field). Decoder weights seeded by ``seed``."""
    settings = {"dim": 32, "layers": 2, "heads": 4, "windows": 2, "top_k": 2, **config}
    clip = clip if clip is not None else tiny_clip(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LDVC(clip, LDVCConfig(**settings))
