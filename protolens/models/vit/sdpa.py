"""Taking over ``scaled_dot_product_attention`` calls of one forward pass, in one thread.

For the full capture (received attention, rollout) the softmax matrix must exist anyway; recomputing it
next to the fused kernel costs a second ``q k^T`` and softmax per block. Inside :class:`SDPAIntercept`
the calls a timm or Hugging Face ViT makes to ``torch.nn.functional.scaled_dot_product_attention`` are
answered by ``handler(call_index, q, k, v, scale)``, which computes the attention once, reduces it and
returns ``attention @ v`` (measured on 2 CPU cores, ViT-S/14 at 518 px: the full capture costs
1.3x a bare forward instead of 1.8x).

Only calls without mask, causality or dropout are taken over, and only in the thread that entered the
context: every other call, in any thread, goes to the original kernel unchanged. The dispatcher is
installed once on first use and costs one attribute lookup per call afterwards. Callers check
:attr:`SDPAIntercept.calls` against the number of blocks: a model that computes attention some other way
(e.g. eager Hugging Face attention) makes no calls and must be captured by the query/key hooks instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

import torch
import torch.nn.functional as F

SDPAHandler = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]

_local = threading.local()
_install_lock = threading.Lock()
_original: Callable[..., torch.Tensor] | None = None


def _dispatch(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None = None,
              dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
              **kwargs: Any) -> torch.Tensor:
    intercept: SDPAIntercept | None = getattr(_local, "active", None)
    plain = attn_mask is None and not dropout_p and not is_causal and not kwargs.get("enable_gqa", False)
    if intercept is None or not plain or query.dim() != 4:
        assert _original is not None
        return _original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                         scale=scale, **kwargs)
    return intercept.handle(query, key, value, query.shape[-1] ** -0.5 if scale is None else float(scale))


def _install() -> None:
    global _original
    with _install_lock:
        if _original is None:
            _original = F.scaled_dot_product_attention
            F.scaled_dot_product_attention = _dispatch


class SDPAIntercept:
    """Context manager routing this thread's plain SDPA calls to ``handler``; ``calls`` counts them.

    ``handler(index, q, k, v, scale)`` gets (batch, heads, tokens, head_dim) tensors (q not yet scaled)
    and must return the attention output (batch, heads, tokens, head_dim) in ``v``'s dtype.
    Not re-entrant: a nested intercept in the same thread raises ``RuntimeError``.
    """

    def __init__(self, handler: SDPAHandler) -> None:
        self._handler = handler
        self.calls = 0

    def handle(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        index = self.calls
        self.calls += 1
        return self._handler(index, q, k, v, scale)

    def __enter__(self) -> SDPAIntercept:
        _install()
        if getattr(_local, "active", None) is not None:
            raise RuntimeError("an SDPA intercept is already active in this thread")
        self.calls = 0
        _local.active = self
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        _local.active = None
