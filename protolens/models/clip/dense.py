"""Training-free dense CLIP: per-patch image features with a modified last block, sliding windows, class maps.

METHODS.md §5 (training-free baselines of LDVC, seed 001). The image tower of an open_clip CLIP ViT runs its
blocks unchanged except the last, which is replaced per mode; q, k, v come from the block's fused
``in_proj`` applied to ``ln_1(x)``, split into heads of size ``d_h`` (attention per head), scale
``s = d_h ** -0.5``; ``P`` is the block's ``out_proj``:

``maskclip`` (Zhou et al., ECCV 2022, arXiv 2112.01071; chongzhou96/MaskCLIP
``mmseg/models/backbones/vit.py``, ``TransformerEncoderLayer.forward`` with ``return_qkv`` and
``VisionTransformer.forward`` with ``skip_last_attn``): identity attention, residual and FFN kept::

    x = x + P(v);  x = x + mlp(ln_2(x))

``sclip`` (Wang et al., ECCV 2024, arXiv 2312.01597; wangf3014/SCLIP ``clip/model.py``,
``VisionTransformer.forward`` and ``custom_attn(csa=True)``): correlative self-attention; the released code
KEEPS the residual and the FFN of the last block::

    x = x + P((softmax(s q q^T) + softmax(s k k^T)) v);  x = x + mlp(ln_2(x))

``clearclip`` (Lan et al., ECCV 2024, arXiv 2407.12442; mc-lan/ClearCLIP ``open_clip/transformer.py``,
``VisionTransformer.forward`` with ``ignore_residual=True`` and ``custom_attn(model_type='ClearCLIP')``):
query-query attention, residual and FFN dropped::

    x = P(softmax(s q q^T) v)

(the block's layer scales ``ls_1``/``ls_2``, identities in CLIP, are applied where the block applies them).
Then ``ln_post`` and ``proj`` on every token, the class token is dropped, and the patch features are
L2-normalised.

Sliding windows and class maps follow wangf3014/SCLIP ``clip_segmentor.py`` (``forward_slide``,
``forward_feature``, ``postprocess_result``): the photo is resized so its short side is ``short_side``
(aspect kept); windows of ``window`` pixels every ``stride`` pixels, the last one flush with the edge; a
window size other than the model's input gets a bicubically interpolated position embedding; per window
``logits = F T^T`` (cosine similarities) are upsampled bilinearly to the window's pixels and summed, overlaps
divided by their counts; ``softmax(logit_scale * logits)`` over all synonyms of all classes; per class the
max over its synonyms; the label map is the argmax + 1 where the winning probability reaches
``prob_threshold``, else 0 (background).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from protolens.core.errors import ParamError
from protolens.core.jobs import CancelToken, Progress
from protolens.core.types import fit_grid
from protolens.models.clip.loading import clip_identity
from protolens.models.clip.text import TextEncoderStats, encode_texts, reset_text_stats, text_stats
from protolens.models.device import autocast
from protolens.models.vit.hf import CLIP_MEAN, CLIP_STD

__all__ = ["CLIP_MODES", "ClipMaps", "DenseClipFeatures", "TextEncoderStats", "class_logits", "clip_class_maps",
           "dense_class_maps", "dense_patch_features", "encode_texts", "interpolate_pos_embed", "patch_features",
           "reset_text_stats", "resize_short_side", "text_stats", "window_boxes", "window_pixels"]
"""The text side (:func:`encode_texts`, :func:`text_stats`, ...) lives in :mod:`.text` and is re-exported."""

CLIP_MODES = ("sclip", "maskclip", "clearclip")
WINDOW_BATCH = 8
"""Windows per forward of the image tower."""


@dataclass
class DenseClipFeatures:
    """Per-window patch features of one photo.

    Attributes
    ----------
    features : list of numpy.ndarray
        Per window (rows, cols, D) float32, unit L2 norm per patch, row-major over the window's patch grid.
    boxes : numpy.ndarray
        (n_windows, 4) int64 window boxes ``(x0, y0, x1, y1)`` in resized-photo pixels (x = column), end
        exclusive.
    resized_size : tuple of int
        (width, height) of the resized photo (short side = ``short_side``).
    image_size : tuple of int
        (width, height) of the original photo.
    mode : str
        One of :data:`CLIP_MODES`.
    model_id : tuple of str or None
        ``clip_identity`` of the model (name, weights key).
    """

    features: list[np.ndarray]
    boxes: np.ndarray
    resized_size: tuple[int, int]
    image_size: tuple[int, int]
    mode: str
    model_id: tuple[str, str] | None = None


@dataclass
class ClipMaps:
    """Class probability maps and the label map of one photo.

    Attributes
    ----------
    probabilities : numpy.ndarray
        (n_classes, rows, cols) float32 in [0, 1]: per class the max over its synonyms of the softmax over all
        synonyms of all classes. The grid covers the whole photo: cell (row, col) spans photo pixels
        ``x in [col * W / cols, (col + 1) * W / cols)``, likewise y.
    labels : numpy.ndarray
        (rows, cols) int32: 0 = background (winning probability below ``prob_threshold``), i + 1 = class i.
    class_names : list of str
        Names of the classes, in order (label i + 1 is ``class_names[i]``).
    image_size : tuple of int
        (width, height) of the photo.
    logits : numpy.ndarray
        (n_synonyms_total, rows, cols) float32 window-averaged cosine similarities (before the logit scale).
    """

    probabilities: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    image_size: tuple[int, int]
    logits: np.ndarray


def _check_model(model: nn.Module) -> nn.Module:
    visual = getattr(model, "visual", model)
    needed = ("conv1", "class_embedding", "positional_embedding", "transformer", "ln_post", "proj")
    if not all(hasattr(visual, name) for name in needed) or getattr(visual, "attn_pool", None) is not None:
        raise ParamError("clip-dense needs an open_clip CLIP ViT (conv1, class and position embeddings, "
                         "no attention pooling)")
    if not isinstance(visual.transformer.resblocks[-1].attn, nn.MultiheadAttention):
        raise ParamError("clip-dense needs the last block's attention to be nn.MultiheadAttention")
    return visual


def interpolate_pos_embed(visual: nn.Module, rows: int, cols: int) -> torch.Tensor:
    """Position embedding for a (rows, cols) patch grid: (1 + rows * cols, width).

    The class token's entry is kept; the patch entries (a square grid in CLIP) are resized bicubically
    (``F.interpolate(mode="bicubic", align_corners=False)``; SCLIP ``interpolate_pos_encoding``) when the grid
    differs from the model's.
    """
    pos = visual.positional_embedding
    n = pos.shape[0] - 1
    side = int(round(n ** 0.5))
    if side * side != n:
        raise ParamError(f"position embedding of {n} patches is not a square grid")
    if (rows, cols) == (side, side):
        return pos
    grid = pos[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False)
    return torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(rows * cols, -1).to(pos.dtype)])


def _last_block(block: nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    """The last block per ``mode`` on batch-first tokens x (B, L, C) (formulas: module docstring)."""
    attn: nn.MultiheadAttention = block.attn
    b, n, c = x.shape
    heads = attn.num_heads
    y = block.ln_1(x)
    if mode == "maskclip":  # only v is needed
        v = F.linear(y, attn.in_proj_weight[2 * c:], attn.in_proj_bias[2 * c:])
        out = v
    else:
        q, k, v = F.linear(y, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(b, n, heads, c // heads).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, q, v)  # softmax(q q^T / sqrt(d_h)) v
        if mode == "sclip":
            out = out + F.scaled_dot_product_attention(k, k, v)
        out = out.transpose(1, 2).reshape(b, n, c)
    out = attn.out_proj(out)
    if mode == "clearclip":
        return out
    x = x + block.ls_1(out)
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def patch_features(model: nn.Module, pixels: torch.Tensor, mode: str) -> torch.Tensor:
    """Dense per-patch features of normalised windows.

    Parameters
    ----------
    model : open_clip CLIP (or its ``visual``)
    pixels : torch.Tensor
        (B, 3, H, W) normalised with CLIP's mean and std; H and W multiples of the patch size.
    mode : str
        One of :data:`CLIP_MODES`.

    Returns
    -------
    torch.Tensor
        (B, H / patch, W / patch, D) float32, unit L2 norm along D.
    """
    if mode not in CLIP_MODES:
        raise ParamError(f"mode {mode!r}: choose one of {', '.join(CLIP_MODES)}")
    visual = _check_model(model)
    x = visual.conv1(pixels.to(visual.conv1.weight.dtype))
    b, c, rows, cols = x.shape
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).reshape(1, 1, c).expand(b, 1, c)
    x = torch.cat([cls, x], dim=1) + interpolate_pos_embed(visual, rows, cols).to(x.dtype)
    x = visual.ln_pre(x)
    blocks = visual.transformer.resblocks
    batch_first = getattr(visual.transformer, "batch_first", True)
    x = x if batch_first else x.transpose(0, 1)
    for block in blocks[:-1]:
        x = block(x)
    x = x if batch_first else x.transpose(0, 1)
    x = _last_block(blocks[-1], x, mode)
    x = visual.ln_post(x)[:, 1:] @ visual.proj
    return F.normalize(x.float(), dim=-1).reshape(b, rows, cols, -1)


def window_boxes(width: int, height: int, window: int, stride: int) -> np.ndarray:
    """Sliding-window boxes covering a (width, height) image, the last window flush with the edge.

    As SCLIP ``forward_slide``: ``ceil((side - window) / stride) + 1`` windows per axis; a side shorter than
    the window gets one window of that side. Returns (n, 4) int64 ``(x0, y0, x1, y1)``, end exclusive, row-major.
    """
    if window < 1 or stride < 1:
        raise ParamError(f"window ({window}) and stride ({stride}) must be positive")

    def starts(side: int) -> list[int]:
        if side <= window:
            return [0]
        count = -(-(side - window) // stride) + 1
        return [min(i * stride, side - window) for i in range(count)]

    boxes = [(x, y, min(x + window, width), min(y + window, height))
             for y in starts(height) for x in starts(width)]
    return np.asarray(boxes, dtype=np.int64)


def resize_short_side(image: np.ndarray, short_side: int) -> np.ndarray:
    """``image`` (H, W, 3) uint8 resized so min(H, W) = ``short_side``, aspect kept (cv2 INTER_AREA when
    shrinking, INTER_LINEAR when enlarging); the long side is rounded to the nearest pixel."""
    h, w = image.shape[:2]
    scale = short_side / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def window_pixels(crop: np.ndarray, patch: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """One window (h, w, 3) uint8 -> (3, h', w') float32 normalised; h', w' = h, w rounded UP to the patch size
    (a window narrower than the model's input is stretched bilinearly; full windows are multiples already)."""
    h, w = crop.shape[:2]
    hh, ww = -(-h // patch) * patch, -(-w // patch) * patch
    if (hh, ww) != (h, w):
        crop = cv2.resize(crop, (ww, hh), interpolation=cv2.INTER_LINEAR)
    x = (crop.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def _mean_std(visual: nn.Module) -> tuple[Sequence[float], Sequence[float]]:
    cfg = getattr(visual, "preprocess_cfg", None) or {}
    return tuple(cfg.get("mean", CLIP_MEAN)), tuple(cfg.get("std", CLIP_STD))


def dense_patch_features(model: nn.Module, image: np.ndarray, *, mode: str = "sclip", short_side: int = 336,
                         window: int = 224, stride: int = 112, device: str = "cpu", dtype: str = "float32",
                         cancel: CancelToken | None = None, batch_size: int = WINDOW_BATCH,
                         forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
                         ) -> Generator[Progress, None, DenseClipFeatures]:
    """Per-window dense CLIP features of a photo (METHODS.md §5 steps 2-3).

    Parameters
    ----------
    model : open_clip CLIP
        On ``device``, eval mode.
    image : numpy.ndarray
        (H, W, 3) uint8 RGB.
    mode : str
        ``"sclip"``, ``"maskclip"`` or ``"clearclip"`` (last-block formulas: module docstring).
    short_side : int
        The photo's short side is resized to this many pixels (SCLIP 336, ClearCLIP 448).
    window, stride : int
        Sliding windows in resized-photo pixels (SCLIP 224 / 112, ClearCLIP 448 / 224).
    device, dtype : str
        Torch device; compute dtype (``"float32"``, ``"bfloat16"``, ``"float16"``: autocast).
    cancel : CancelToken, optional
        Checked between window batches.
    batch_size : int
        Windows per forward.
    forward : callable, optional
        Replaces :func:`patch_features` (pixels -> (B, rows, cols, D)); benchmarks pass the bare tower here.

    Yields
    ------
    Progress

    Returns
    -------
    DenseClipFeatures

    Raises
    ------
    ParamError
        Unknown mode, non-positive sizes, or a model that is not an open_clip CLIP ViT.
    Cancelled
        When ``cancel`` is set.
    """
    if mode not in CLIP_MODES:
        raise ParamError(f"mode {mode!r}: choose one of {', '.join(CLIP_MODES)}")
    if short_side < 1:
        raise ParamError(f"short side {short_side} must be positive")
    visual = _check_model(model)
    patch = int(visual.conv1.kernel_size[0])
    mean, std = _mean_std(visual)
    resized = resize_short_side(np.asarray(image), short_side)
    boxes = window_boxes(resized.shape[1], resized.shape[0], window, stride)
    run = forward or (lambda pixels: patch_features(model, pixels, mode))
    features: list[np.ndarray] = []
    for start in range(0, len(boxes), batch_size):
        if cancel is not None:
            cancel.raise_if_set()
        batch = boxes[start:start + batch_size]
        crops = [window_pixels(resized[y0:y1, x0:x1], patch, mean, std) for x0, y0, x1, y1 in batch]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, crop in enumerate(crops):  # windows narrower than `window` at small photos: own shapes
            groups.setdefault(tuple(crop.shape), []).append(i)
        out: list[np.ndarray | None] = [None] * len(crops)
        with torch.no_grad(), autocast(device, dtype):
            for indices in groups.values():
                pixels = torch.stack([crops[i] for i in indices]).to(device)
                result = run(pixels).float().cpu().numpy()
                for i, feats in zip(indices, result, strict=True):
                    out[i] = np.ascontiguousarray(feats, dtype=np.float32)
        features.extend(out)  # type: ignore[arg-type]
        done = min(start + batch_size, len(boxes))
        yield Progress(done / len(boxes), f"CLIP windows {done}/{len(boxes)}")
    return DenseClipFeatures(features=features, boxes=boxes, resized_size=(resized.shape[1], resized.shape[0]),
                             image_size=(image.shape[1], image.shape[0]), mode=mode,
                             model_id=clip_identity(model))


def class_logits(features: DenseClipFeatures, texts: Sequence[np.ndarray], *,
                 max_side: int = 1024) -> np.ndarray:
    """Window-averaged cosine logits on a grid covering the photo (METHODS.md §5 step 4, before the softmax).

    Per window ``F T^T`` (F: the window's unit patch features, T: all synonyms' unit text embeddings, classes
    concatenated in order) is upsampled bilinearly (``align_corners=False``) to the window's pixels on the
    resized photo and summed; each pixel is divided by the number of windows covering it. The result is
    resized bilinearly to the output grid: the resized photo's size, scaled down so its longer side is at most
    ``max_side``.

    Returns
    -------
    numpy.ndarray
        (n_synonyms_total, rows, cols) float32.
    """
    table = np.concatenate([np.asarray(t, np.float32).reshape(-1, np.shape(t)[-1]) for t in texts])
    text = torch.from_numpy(table)
    width, height = features.resized_size
    total = torch.zeros((len(table), height, width))
    count = torch.zeros((1, height, width))
    for feats, (x0, y0, x1, y1) in zip(features.features, features.boxes, strict=True):
        rows, cols, d = feats.shape
        logits = (torch.from_numpy(feats).reshape(rows * cols, d) @ text.T).T.reshape(1, -1, rows, cols)
        up = F.interpolate(logits, size=(int(y1 - y0), int(x1 - x0)), mode="bilinear", align_corners=False)
        total[:, y0:y1, x0:x1] += up[0]
        count[:, y0:y1, x0:x1] += 1
    total /= count.clamp_min(1)
    size = fit_grid((height, width), max_side)
    if size != (height, width):
        total = F.interpolate(total[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return total.numpy().astype(np.float32, copy=False)


def dense_class_maps(features: DenseClipFeatures, texts: Sequence[np.ndarray], *, class_names: Sequence[str],
                     logit_scale: float = 40.0, prob_threshold: float = 0.3, max_side: int = 1024) -> ClipMaps:
    """Class probabilities and label map from dense features and class text embeddings (METHODS.md §5 step 4).

    Parameters
    ----------
    features : DenseClipFeatures
        From :func:`dense_patch_features`.
    texts : sequence of numpy.ndarray
        Per class (n_synonyms, D) unit rows, from :func:`encode_texts`.
    class_names : sequence of str
        One per class (``ClassPrompt.name``).
    logit_scale : float
        Softmax temperature s in ``softmax(s * logits)`` (SCLIP 40..65, ClearCLIP 50).
    prob_threshold : float
        Pixels whose winning class probability is below this become background (0).
    max_side : int
        Longest side of the output grid in cells.

    Returns
    -------
    ClipMaps

    Raises
    ------
    ParamError
        No class, class names and texts of different lengths, or a class without synonyms.
    """
    if not texts or len(texts) != len(class_names):
        raise ParamError(f"{len(texts)} text blocks for {len(class_names)} class names: give one per class")
    sizes = [len(t) for t in texts]
    if min(sizes) < 1:
        raise ParamError("every class needs at least one synonym")
    logits = class_logits(features, texts, max_side=max_side)
    probs_syn = torch.softmax(torch.from_numpy(logits) * float(logit_scale), dim=0)
    starts = np.cumsum([0, *sizes])
    probs = torch.stack([probs_syn[a:b].amax(dim=0) for a, b in zip(starts[:-1], starts[1:], strict=True)])
    best, arg = probs.max(dim=0)
    labels = torch.where(best >= prob_threshold, arg + 1, torch.zeros_like(arg)).to(torch.int32)
    return ClipMaps(probabilities=probs.numpy().astype(np.float32), labels=labels.numpy(),
                    class_names=list(class_names), image_size=features.image_size, logits=logits)


def clip_class_maps(model: nn.Module, image: np.ndarray, prompts: Sequence, *, mode: str = "sclip",
                    logit_scale: float = 40.0, prob_threshold: float = 0.3, short_side: int = 336,
                    window: int = 224, stride: int = 112, device: str = "cpu", dtype: str = "float32",
                    cancel: CancelToken | None = None, cache=None, stats: TextEncoderStats | None = None,
                    max_side: int = 1024) -> Generator[Progress, None, ClipMaps]:
    """The whole pipeline for one photo: :func:`encode_texts` (cached), :func:`dense_patch_features`,
    :func:`dense_class_maps`. ``prompts``: ClassPrompt list; ``cache``: optional DiskCache for the text side;
    other parameters as there. Yields Progress, returns :class:`ClipMaps`."""
    texts = encode_texts(model, prompts, device=device, cache=cache, stats=stats)
    feats = yield from dense_patch_features(model, image, mode=mode, short_side=short_side, window=window,
                                            stride=stride, device=device, dtype=dtype, cancel=cancel)
    return dense_class_maps(feats, texts, class_names=[p.name for p in prompts], logit_scale=logit_scale,
                            prob_threshold=prob_threshold, max_side=max_side)
