"""Dense ViT descriptors and pixel correspondences (Amir et al., "Deep ViT Features as Dense Visual
Descriptors", arXiv 2112.05814; METHODS.md §4).

- :func:`strided_model`: the patch embedding run with a stride below the patch size (§3 "increasing
  resolution": ViT-S/8 at stride 4 gives 55 x 55 tokens at 224 px), the position embedding resampled
  bicubically to the new grid.
- :func:`facet_descriptors`: per-token key / query / value (the block's qkv projection) or token (the block's
  output) facet of one block, heads concatenated, with the CLS-attention saliency of another block captured in
  the same pass, optionally log-binned (:func:`log_bin`, §3 "log-binning").
- :func:`find_correspondences`: best buddies, saliency filter and K-Means selection of the most distinct
  pairs (§4.1 "point correspondences").
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from protolens.core.errors import ParamError
from protolens.core.explanation import FACETS, Correspondence
from protolens.core.jobs import CancelToken, Progress
from protolens.core.matching import best_buddies, l2_normalise
from protolens.models.dense import check_input_size, cls_saliency, model_inputs
from protolens.models.device import autocast
from protolens.models.kmeans import kmeans
from protolens.models.vit.capture import QKCapture
from protolens.models.vit.engine import run_batches
from protolens.models.vit.families import family_info, family_of, forward_tokens

_STRIDED: weakref.WeakKeyDictionary[nn.Module, dict[int, nn.Module]] = weakref.WeakKeyDictionary()
_STRIDED_LOCK = threading.Lock()


@dataclass
class Descriptors:
    """Dense descriptors of one photo (:func:`facet_descriptors`).

    Attributes
    ----------
    values : numpy.ndarray
        (rows, cols, D) float32, row-major token grid; D = heads * head_dim (17 times that when log-binned).
    saliency : numpy.ndarray
        (rows, cols) float32 in [0, 1]: CLS attention of the saliency block, mean over heads, min-max normalised.
    stride : int
        Patch-embedding stride in input pixels.
    patch : int
        Patch size in input pixels.
    input_size : int
        The photo was resized to input_size x input_size (aspect ignored).
    image_size : tuple of int
        (height, width) of the photo in pixels.
    """

    values: np.ndarray
    saliency: np.ndarray
    stride: int
    patch: int
    input_size: int
    image_size: tuple[int, int]

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the token grid."""
        return int(self.values.shape[0]), int(self.values.shape[1])

    def pixel_xy(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Photo pixel (x, y) of tokens (row, col): the centre of each token's receptive field.

        Input pixel = index * stride + patch // 2 (Amir et al., arXiv 2112.05814, ``find_correspondences``),
        then scaled to the photo by (width / input_size, height / input_size).

        Parameters
        ----------
        rows, cols : numpy.ndarray
            (k,) int token rows and columns.

        Returns
        -------
        numpy.ndarray
            (k, 2) float32 (x, y) in photo pixels, origin top-left.
        """
        height, width = self.image_size
        x = (np.asarray(cols, np.float64) * self.stride + self.patch // 2) * (width / self.input_size)
        y = (np.asarray(rows, np.float64) * self.stride + self.patch // 2) * (height / self.input_size)
        return np.stack([x, y], axis=-1).reshape(-1, 2).astype(np.float32)


def _make_dynamic(model: nn.Module) -> None:
    """Let a timm ViT take any input size and resample its position embedding to the patch-embed output grid."""
    from timm.layers import Format

    embed = model.patch_embed
    embed.strict_img_size = False
    if not getattr(model, "dynamic_img_size", False):
        # timm's own dynamic_img_size layout: patch embed outputs (B, H, W, C), _pos_embed resamples
        embed.flatten = False
        embed.output_fmt = Format.NHWC
        model.dynamic_img_size = True


def resolve_stride(model: nn.Module, stride: int) -> int:
    """The patch-embedding stride ``stride`` stands for: itself, or half the model's patch size when 0."""
    return int(stride) or max(1, family_info(model).patch_size // 2)


def strided_model(model: nn.Module, stride: int) -> nn.Module:
    """A copy of a timm ViT whose patch embedding runs with ``stride`` (Amir et al., arXiv 2112.05814, §3).

    Overlapping patches give a denser grid, (input - patch) // stride + 1 per side (ViT-S/8, stride 4, 224 px:
    55 x 55); the position embedding is resampled bicubically to that grid by timm's dynamic image size.
    The model itself is never changed (other threads may be using it): the copy is made once per
    (model, stride) and kept while the model lives (weak-keyed cache).

    Parameters
    ----------
    model : torch.nn.Module
        timm VisionTransformer (any supported model when ``stride`` equals its patch size).
    stride : int
        Stride in input pixels; 0 means patch // 2. Must divide the patch size.

    Returns
    -------
    torch.nn.Module
        ``model`` itself when stride == patch, else the strided copy (eval mode, same device).

    Raises
    ------
    ParamError
        The stride does not divide the patch size, or the model is not a timm ViT and stride != patch.
    """
    patch = family_info(model).patch_size
    stride = resolve_stride(model, stride)
    if stride < 1 or stride > patch or patch % stride:
        raise ParamError(f"stride {stride} must divide the patch size {patch} (e.g. {patch // 2} or {patch})")
    if stride == patch:
        return model
    if family_of(model) != "timm":
        raise ParamError(f"a stride below the patch size needs a timm ViT; {type(model).__name__} "
                         f"supports only stride {patch}")
    with _STRIDED_LOCK:
        copies = _STRIDED.setdefault(model, {})
        if stride not in copies:
            strided = copy.deepcopy(model)
            for module in strided.modules():  # hooks another thread had on the original are not ours
                module._forward_hooks.clear()
                module._forward_pre_hooks.clear()
            _make_dynamic(strided)
            strided.patch_embed.proj.stride = (stride, stride)
            copies[stride] = strided.eval()
        return copies[stride]


def token_grid(input_size: int, patch: int, stride: int) -> tuple[int, int]:
    """(rows, cols) of the token grid of a square input: (input_size - patch) // stride + 1 per side."""
    side = (int(input_size) - int(patch)) // int(stride) + 1
    return side, side


def _bin_offsets(hierarchy: int) -> list[tuple[int, int, int]]:
    """(level, row offset, col offset) of each bin, in order (level 0: 9 incl. centre; others: 8)."""
    bins = []
    for level in range(hierarchy):
        step = 3 ** level
        for dr in (-step, 0, step):
            for dc in (-step, 0, step):
                if level == 0 or (dr, dc) != (0, 0):
                    bins.append((level, dr, dc))
    return bins


def log_bin_batch(x: torch.Tensor, hierarchy: int = 2) -> torch.Tensor:
    """:func:`log_bin` of a (batch, d, rows, cols) tensor -> (batch, d * (1 + 8*hierarchy), rows, cols) float32."""
    if hierarchy < 1:
        raise ParamError(f"log-binning hierarchy must be at least 1, not {hierarchy}")
    x = x.float()
    _, d, rows, cols = x.shape
    pooled = [x if level == 0 else F.avg_pool2d(x, 3 ** level, stride=1, padding=3 ** level // 2,
                                                count_include_pad=False) for level in range(hierarchy)]
    row_index, col_index = torch.arange(rows, device=x.device), torch.arange(cols, device=x.device)
    out = torch.empty(x.shape[0], d * (1 + 8 * hierarchy), rows, cols, device=x.device)
    for b, (level, dr, dc) in enumerate(_bin_offsets(hierarchy)):
        r = (row_index + dr).clamp_(0, rows - 1)
        c = (col_index + dc).clamp_(0, cols - 1)
        out[:, b * d:(b + 1) * d] = pooled[level][:, :, r][:, :, :, c]
    return out


def log_bin(x: np.ndarray | torch.Tensor, hierarchy: int = 2) -> np.ndarray | torch.Tensor:
    """Log-binned descriptors (Amir et al., arXiv 2112.05814, §3 "log-binning").

    Level k (0-based) averages 3^k x 3^k windows (stride 1, zero padding not counted:
    ``avg_pool2d(count_include_pad=False)``) and takes the 3 x 3 neighbours at offset 3^k (level 0: all 9,
    centre included; levels >= 1: the 8 around the centre). Out-of-grid neighbour positions are clamped to the
    nearest in-grid position. Bin order: level, then row offset -1, 0, +1, then column offset -1, 0, +1;
    within a bin the d input channels in order. Vectorised: one gather per bin, no loop over cells.

    Parameters
    ----------
    x : numpy.ndarray or torch.Tensor
        (rows, cols, d) descriptors, any float dtype.
    hierarchy : int
        Number of levels (2 in Amir et al.: 17 bins).

    Returns
    -------
    numpy.ndarray or torch.Tensor
        (rows, cols, d * (1 + 8*hierarchy)) float32, the type of ``x`` (a tensor stays on its device).

    Raises
    ------
    ParamError
        ``x`` is not 3-D, or hierarchy < 1.
    """
    if x.ndim != 3:
        raise ParamError(f"log_bin needs (rows, cols, d) descriptors, got shape {tuple(x.shape)}")
    tensor = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    binned = log_bin_batch(tensor.permute(2, 0, 1)[None], hierarchy)[0].permute(1, 2, 0).contiguous()
    return binned if isinstance(x, torch.Tensor) else binned.numpy()


def _timm_facet_module(model: nn.Module, layer: int, facet: str) -> tuple[nn.Module, Any]:
    """(module to hook, output -> (batch, tokens, heads*head_dim)) for a timm ViT."""
    block = model.blocks[layer]
    if facet == "token":
        return block, lambda out: out
    index = ("query", "key", "value").index(facet)
    return block.attn.qkv, lambda out: out.unflatten(-1, (3, -1))[:, :, index]


def _hf_facet_module(model: nn.Module, layer: int, facet: str, blocks: int) -> tuple[nn.Module, Any]:
    """(module to hook, output -> (batch, tokens, heads*head_dim)) for an HF DINOv2 / CLIP vision model."""
    layers = next((m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == blocks), None)
    if layers is None:
        raise ParamError(f"cannot find the {blocks} transformer layers of {type(model).__name__}")
    if facet == "token":
        return layers[layer], lambda out: out[0] if isinstance(out, tuple) else out
    names = {"query": ("q_proj", "query"), "key": ("k_proj", "key"), "value": ("v_proj", "value")}[facet]
    linear = next(m for n, m in layers[layer].named_modules() if n.endswith(names) and isinstance(m, nn.Linear))
    return linear, lambda out: out


def _check_options(model: nn.Module, layer: int, facet: str, saliency_block: int) -> tuple[int, int]:
    """Validated non-negative (layer, saliency_block) indices; ParamError for a bad facet or block."""
    if facet not in FACETS:
        raise ParamError(f"facet {facet!r} is not one of {', '.join(FACETS)}")
    blocks = family_info(model).num_blocks
    for name, value in (("layer", layer), ("saliency block", saliency_block)):
        if not -blocks <= value < blocks:
            raise ParamError(f"{name} {value} is out of range: the model has {blocks} blocks")
    return layer % blocks, saliency_block % blocks


def facet_descriptors(model: nn.Module, images: Sequence[np.ndarray], *, layer: int = 9, facet: str = "key",
                      bin: bool = True, stride: int = 4, input_size: int = 224, saliency_block: int = -1,
                      mean: Sequence[float], std: Sequence[float], device: str, dtype: str,
                      cancel: CancelToken, batch_size: int = 4) -> Generator[Progress, None, list[Descriptors]]:
    """Dense descriptors of one block's facet (Amir et al., arXiv 2112.05814, §3) with saliency.

    Each photo is resized to input_size x input_size (aspect ignored; cv2 INTER_AREA when shrinking, else
    INTER_CUBIC) and normalised; one forward pass per batch through :func:`strided_model`. The facet of block
    ``layer``: key / query / value are the block's raw qkv projection outputs (before any q/k norm and before
    the 1/sqrt(head_dim) scale, as Amir et al. hook ``attn.qkv``), token is the block's output (before the
    final norm); heads are concatenated in the projection's own order (head-major: head * head_dim + channel),
    prefix tokens (CLS, registers) dropped. The saliency (CLS attention of ``saliency_block``, mean over heads,
    min-max normalised) is captured in the same pass. ``bin`` applies :func:`log_bin` (hierarchy 2, 17 bins).

    Parameters
    ----------
    model : torch.nn.Module
        timm ViT (HF DINOv2 / CLIP only with stride equal to the patch size), on ``device``, eval mode.
    images : sequence of numpy.ndarray
        (height, width, 3) uint8 RGB photos.
    layer : int
        Block index (negative counts from the end); Amir et al.: 9 for correspondences, 11 for co-segmentation.
    facet : str
        One of :data:`FACETS`.
    bin : bool
        Log-bin the descriptors (D becomes 17 * heads * head_dim).
    stride : int
        Patch-embedding stride; 0 = patch // 2 (4 for /8 models, 7 for /14). Grid per side:
        (input_size - patch) // stride + 1.
    input_size : int
        Side of the square model input; a multiple of the patch size.
    saliency_block : int
        Block whose CLS attention gives the saliency (default the last).
    mean, std : sequence of float
        The model's normalisation.
    device, dtype : str
        Torch device; ``"float32"``, ``"bfloat16"`` or ``"float16"`` autocast.
    cancel : CancelToken
        Checked before every batch.
    batch_size : int
        Photos per forward pass (halved on out-of-memory).

    Returns
    -------
    list of Descriptors
        One per photo, in input order.

    Raises
    ------
    ParamError
        Unknown facet, block out of range, input size not a patch multiple, or a stride :func:`strided_model`
        refuses.
    Cancelled, DeviceOutOfMemoryError
        From :func:`~protolens.models.vit.engine.run_batches`.
    """
    info = family_info(model)
    layer, saliency_block = _check_options(model, layer, facet, saliency_block)
    check_input_size(input_size, info.patch_size)
    stride = resolve_stride(model, stride)
    strided = strided_model(model, stride)
    rows, cols = token_grid(input_size, info.patch_size, stride)
    if info.family == "timm":
        module, pick = _timm_facet_module(strided, layer, facet)
    else:
        module, pick = _hf_facet_module(strided, layer, facet, info.num_blocks)

    def run(chunk: Sequence[np.ndarray]) -> list[Descriptors]:
        x = model_inputs(chunk, input_size, info.patch_size, mean, std, device)
        found: dict[str, torch.Tensor] = {}

        def on_facet(_module: nn.Module, _inputs: Any, output: Any) -> None:
            found["facet"] = pick(output)[:, info.num_prefix:].float()

        def on_qk(_index: int, q: torch.Tensor, k: torch.Tensor) -> None:
            found["saliency"] = cls_saliency(q, k, info.num_prefix)

        handle = module.register_forward_hook(on_facet)
        try:
            with torch.inference_mode(), autocast(device, dtype), QKCapture(strided, [saliency_block], on_qk):
                forward_tokens(strided, x)
                values = found.pop("facet").reshape(len(chunk), rows, cols, -1).permute(0, 3, 1, 2)
                values = (log_bin_batch(values) if bin else values).permute(0, 2, 3, 1).cpu().numpy()
        finally:
            handle.remove()
        saliency = found["saliency"].float().cpu().numpy().reshape(len(chunk), rows, cols)
        return [Descriptors(values=np.ascontiguousarray(values[i]), saliency=saliency[i].copy(), stride=stride,
                            patch=info.patch_size, input_size=int(input_size),
                            image_size=(int(image.shape[0]), int(image.shape[1])))
                for i, image in enumerate(chunk)]

    if not images:
        return []
    return (yield from run_batches(list(images), run, batch_size=batch_size, device=device, cancel=cancel,
                                   what="image"))


def _select_pairs(first: np.ndarray, second: np.ndarray, saliency: np.ndarray, n_pairs: int,
                  seed: int) -> np.ndarray:
    """Indices of the chosen candidate pairs: K-Means on the pairs' concatenated descriptors, per cluster the
    pair of highest mean saliency (ties: the lowest candidate index); all of them when few enough."""
    count = len(saliency)
    if count <= n_pairs:
        return np.arange(count)
    joined = np.concatenate([l2_normalise(first), l2_normalise(second)], axis=1) / np.sqrt(2.0)
    labels = kmeans(joined, n_pairs, seed=seed, niter=100, nredo=3, library="auto").assignment
    chosen = []
    for cluster in range(n_pairs):
        members = np.flatnonzero(labels == cluster)
        if len(members):
            chosen.append(members[np.argmax(saliency[members])])
    return np.asarray(chosen, np.int64)


def find_correspondences(d1: Descriptors, d2: Descriptors, *, n_pairs: int = 10, saliency_threshold: float = 0.05,
                         seed: int = 0) -> Correspondence:
    """The ``n_pairs`` most distinct salient best-buddy pairs between two photos (Amir et al. §4.1).

    Steps (arXiv 2112.05814, §4.1 "point correspondences"): best buddies (mutual nearest neighbours by cosine,
    :func:`protolens.core.matching.best_buddies`) of the flattened descriptors; keep the pairs whose saliency
    is above ``saliency_threshold`` in both photos; K-Means (k = n_pairs, 3 restarts; faiss when installed,
    else scikit-learn: :func:`protolens.models.kmeans.kmeans`) on each pair's
    L2-normalised descriptors concatenated (each half normalised, the whole scaled by 1/sqrt(2) so it has unit
    length); per cluster keep the pair of highest mean saliency. With at most ``n_pairs`` candidates all are
    kept. Pairs are returned by decreasing mean saliency (ties: query token order, row-major).

    Parameters
    ----------
    d1, d2 : Descriptors
        Descriptors of the query photo and the other photo (same D; grids may differ).
    n_pairs : int
        Most pairs returned (>= 1).
    saliency_threshold : float
        A pair is kept only if both tokens' saliency is strictly above this.
    seed : int
        K-Means seed.

    Returns
    -------
    Correspondence
        ``query_xy`` / ``other_xy`` (n, 2) float32 (x, y) photo pixels (:meth:`Descriptors.pixel_xy`),
        ``similarity`` (n,) float32 cosine, ``saliency`` (n,) float32 mean saliency of each pair.

    Raises
    ------
    ParamError
        n_pairs < 1, or the descriptor dimensions differ.
    """
    if n_pairs < 1:
        raise ParamError(f"n_pairs must be at least 1, not {n_pairs}")
    if d1.values.shape[-1] != d2.values.shape[-1]:
        raise ParamError(f"descriptor sizes differ: {d1.values.shape[-1]} and {d2.values.shape[-1]}")
    a = d1.values.reshape(-1, d1.values.shape[-1])
    b = d2.values.reshape(-1, d2.values.shape[-1])
    buddies = best_buddies(a, b)
    s1, s2 = d1.saliency.reshape(-1)[buddies.a], d2.saliency.reshape(-1)[buddies.b]
    keep = np.flatnonzero((s1 > saliency_threshold) & (s2 > saliency_threshold))
    mean_saliency = (s1[keep] + s2[keep]) / 2
    selected = _select_pairs(a[buddies.a[keep]], b[buddies.b[keep]], mean_saliency.astype(np.float32), n_pairs,
                             seed)
    chosen, pair_saliency = keep[selected], mean_saliency[selected]
    order = np.lexsort((buddies.a[chosen], -pair_saliency))
    chosen, pair_saliency = chosen[order], pair_saliency[order]
    ia, ib = buddies.a[chosen], buddies.b[chosen]
    cols1, cols2 = d1.values.shape[1], d2.values.shape[1]
    return Correspondence(query_xy=d1.pixel_xy(ia // cols1, ia % cols1),
                          other_xy=d2.pixel_xy(ib // cols2, ib % cols2),
                          similarity=np.asarray(buddies.similarity[chosen], np.float32),
                          saliency=pair_saliency.astype(np.float32))
