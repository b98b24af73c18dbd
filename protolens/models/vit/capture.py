"""Capturing self-attention from vision transformers that use fused attention kernels.

timm and Hugging Face compute attention with ``scaled_dot_product_attention``, so the softmax matrix never
exists as a tensor and hooks on ``attn_drop`` see nothing (METHODS.md §6). We hook the query/key
projections instead (timm: the fused ``qkv`` linear; HF: ``q_proj``/``k_proj`` or ``query``/``key``),
rebuild the normalised, scaled queries and keys, and recompute ``softmax(q k^T / sqrt(d))`` ourselves:
exactly what the fused kernel computes. Each block is reduced as soon as its keys are known, so only
what the caller asked for is kept.

Token layout: [CLS, registers (0 or 4), patches in row-major (rows, cols) order].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType

import torch
from torch import nn

from protolens.core.attention import HEAD_FUSIONS, AttentionSummary
from protolens.models.vit.families import attention_sites, family_info, forward_tokens
from protolens.models.vit.sdpa import SDPAIntercept

QKHandler = Callable[[int, torch.Tensor, torch.Tensor], None]


class QKCapture:
    """Context manager calling ``handler(block, q, k)`` for chosen blocks during forward passes.

    ``q`` (pre-scaled) and ``k`` are (batch, heads, tokens, head_dim). Without a handler, ``captured[block]``
    keeps ``(q, k)``. Blocks are non-negative indices or negative ones counted from the end; default all.
    Hooks are removed on exit, also after an exception.
    """

    def __init__(self, model: nn.Module, blocks: Sequence[int] | None = None, handler: QKHandler | None = None) -> None:
        sites = attention_sites(model)
        count = len(sites)
        indices = range(count) if blocks is None else sorted({b % count for b in blocks})
        self._sites = {i: sites[i] for i in indices}
        self._handler = handler
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._pending: dict[int, dict[str, torch.Tensor]] = {}
        self.captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _hook(self, index: int, name: str) -> Callable[..., None]:
        site = self._sites[index]

        def hook(_module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            outputs = self._pending.setdefault(index, {})
            outputs[name] = output
            if len(outputs) == len(site.hooks):
                q, k = site.build_qk(self._pending.pop(index))
                if self._handler is not None:
                    self._handler(index, q, k)
                else:
                    self.captured[index] = (q, k)

        return hook

    def __enter__(self) -> QKCapture:
        self.captured.clear()
        self._pending.clear()
        for index, site in self._sites.items():
            for name, module in site.hooks.items():
                self._handles.append(module.register_forward_hook(self._hook(index, name)))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._pending.clear()


def attention_rows(q: torch.Tensor, k: torch.Tensor, rows: slice | None = None,
                   buffers: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Softmax attention of the query tokens ``rows`` (default all) to every key, in float32.

    ``q`` (pre-scaled) and ``k`` are (batch, heads, tokens, head_dim). Returns (batch, heads, len(rows), tokens);
    each row sums to 1. Computed in float32 even inside a reduced-precision autocast region.

    ``buffers``, an initially empty list, keeps the two (batch, heads, rows, tokens) work tensors between
    calls of the same shape: allocating ~100 MB per block costs more than the product itself on a CPU.
    The result then lives in a buffer and is overwritten by the next call.
    """
    q = q if rows is None else q[:, :, rows]
    shape = (*q.shape[:-1], k.shape[-2])
    with torch.autocast(device_type=q.device.type, enabled=False):
        if buffers is None:
            return torch.softmax(torch.matmul(q.float(), k.float().transpose(-2, -1)), dim=-1)
        if not buffers or buffers[0].shape != shape or buffers[0].device != q.device:
            buffers[:] = [torch.empty(shape, device=q.device), torch.empty(shape, device=q.device)]
        logits, probabilities = buffers
        torch.matmul(q.float(), k.float().transpose(-2, -1), out=logits)
        return torch.softmax(logits, dim=-1, out=probabilities)


@torch.inference_mode()
def capture_attentions(model: nn.Module, x: torch.Tensor, blocks: Sequence[int] | None = None) -> dict[int, torch.Tensor]:
    """Full softmax attention of chosen blocks (default all) in one forward pass.

    Parameters
    ----------
    model : torch.nn.Module
        timm ViT, HF DINOv2 or HF CLIP vision model, in eval mode.
    x : torch.Tensor
        (batch, 3, rows*patch, cols*patch) normalised input.

    Returns
    -------
    dict of int to torch.Tensor
        Per block (non-negative index): (batch, heads, tokens, tokens) float32, rows (queries) summing to 1.
        Memory: blocks x batch x heads x tokens^2 x 4 bytes.
    """
    out: dict[int, torch.Tensor] = {}
    with QKCapture(model, blocks, lambda i, q, k: out.__setitem__(i, attention_rows(q, k))):
        forward_tokens(model, x)
    return out


@torch.inference_mode()
def capture_cls_attention(model: nn.Module, x: torch.Tensor, blocks: Sequence[int] = (-1,)) -> dict[int, torch.Tensor]:
    """CLS-query attention of chosen blocks in one forward pass (DINO, arXiv 2104.14294, Sec. 4.2).

    Returns per block (non-negative index) (batch, heads, tokens) float32 summing to 1 over tokens.
    Costs one (1 x tokens) product per head and block on top of the forward pass.
    """
    out: dict[int, torch.Tensor] = {}
    with QKCapture(model, blocks, lambda i, q, k: out.__setitem__(i, attention_rows(q, k, slice(0, 1))[:, :, 0])):
        forward_tokens(model, x)
    return out


@torch.inference_mode()
def capture_summaries(model: nn.Module, x: torch.Tensor, *, full: bool, fusions: Sequence[str] = HEAD_FUSIONS,
                      fused_dtype: str = "float16") -> tuple[list[AttentionSummary], torch.Tensor]:
    """One forward pass reduced to :class:`~protolens.core.attention.AttentionSummary` per image of the batch.

    With ``full=False`` only the CLS rows of every block are computed (cheap: the pipeline costs little more
    than the bare forward). With ``full=True`` each block's attention matrix is computed once and reduced
    at once to the CLS rows, the attention each token receives (column sums) and the head-fused matrices
    for rollout (``fusions``, stored as ``fused_dtype``), then freed; where the model calls
    ``scaled_dot_product_attention`` that matrix also gives the block's output
    (:class:`~protolens.models.vit.sdpa.SDPAIntercept`), so it is computed once instead of twice.

    ``fused_dtype`` is "float16" (half the memory: blocks x tokens^2 x 2 bytes per fusion and image) or
    "float32", which a rollout with a discard ratio needs: float16 rounding makes the ranking of small
    weights tie at the cut-off (:func:`~protolens.core.attention.attention_rollout_map`).

    Returns the summaries and the final tokens (batch, tokens, dim) after the model's last norm.
    """
    info = family_info(model)
    rows, cols = x.shape[-2] // info.patch_size, x.shape[-1] // info.patch_size
    batch, blocks = x.shape[0], info.num_blocks
    tokens_count = info.num_prefix + rows * cols
    device = x.device
    cls_rows = torch.empty(batch, blocks, info.num_heads, tokens_count, device=device)
    received = torch.empty_like(cls_rows) if full else None
    fused = _fused_buffers(fusions if full else (), (batch, blocks, tokens_count, tokens_count), fused_dtype, device)
    reduced = torch.empty(batch, tokens_count, tokens_count, device=device) if full else None
    ones = torch.ones(1, tokens_count, device=device)
    buffers: list[torch.Tensor] = []
    reducers = {"mean": torch.mean, "max": torch.amax, "min": torch.amin}

    def reduce_attention(index: int, attention: torch.Tensor) -> None:
        cls_rows[:, index] = attention[:, :, 0]
        # column sums as a BLAS product (1 x T) @ (T x T): 2.4x faster than a reduction over queries on a CPU
        torch.matmul(ones, attention, out=received[:, index].unsqueeze(2))
        for fusion, target in fused.items():
            reducers[fusion](attention, dim=1, out=reduced)
            target[:, index].copy_(reduced)

    def reduce(index: int, q: torch.Tensor, k: torch.Tensor) -> None:
        if full:
            reduce_attention(index, attention_rows(q, k, buffers=buffers))
        else:
            cls_rows[:, index] = attention_rows(q, k, slice(0, 1))[:, :, 0]

    def attend(index: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        attention = attention_rows(q * scale, k, buffers=buffers)
        if index < blocks:
            reduce_attention(index, attention)
        return torch.matmul(attention.to(v.dtype), v)

    tokens = None
    if full:
        with SDPAIntercept(attend) as intercept:
            tokens = forward_tokens(model, x)
        if intercept.calls != blocks:  # attention computed without SDPA: capture from the projections instead
            tokens = None
    if tokens is None:
        with QKCapture(model, None, reduce):
            tokens = forward_tokens(model, x)
    buffers.clear()
    return _summaries(cls_rows, received, fused, (rows, cols), info.num_prefix), tokens


def _fused_buffers(fusions: Sequence[str], shape: tuple[int, ...], dtype: str,
                   device: torch.device) -> dict[str, torch.Tensor]:
    """Per fusion, an empty (batch, blocks, tokens, tokens) tensor of ``dtype`` ("float16" or "float32")."""
    if dtype not in ("float16", "float32"):
        raise ValueError(f"fused_dtype must be float16 or float32, not {dtype!r}")
    return {f: torch.empty(shape, dtype=getattr(torch, dtype), device=device) for f in fusions}


def _summaries(cls_rows: torch.Tensor, received: torch.Tensor | None, fused: dict[str, torch.Tensor],
               grid: tuple[int, int], num_prefix: int) -> list[AttentionSummary]:
    """One :class:`AttentionSummary` per image of the batch, as numpy arrays on the host."""
    cls_np = cls_rows.cpu().numpy()
    received_np = received.cpu().numpy() if received is not None else None
    fused_np = {f: t.cpu().numpy() for f, t in fused.items()}
    return [AttentionSummary(cls_rows=cls_np[b], grid=grid, num_prefix=num_prefix,
                             received=received_np[b] if received_np is not None else None,
                             fused={f: array[b] for f, array in fused_np.items()})
            for b in range(cls_np.shape[0])]
