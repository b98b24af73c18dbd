"""LDVC training loss: sigmoid focal + Dice on per-class logits (arXiv 2403.08426 §3.4).

The paper trains with a focal loss plus a Dice loss. It builds on ZegCLIP (arXiv 2212.03588), whose loss is a
per-class (binary, sigmoid) focal loss (Lin et al., arXiv 1708.02002 Eq. 5, alpha 0.25, gamma 2) and a per-class
Dice loss with +1 smoothing (Milletari et al., arXiv 1606.04797), weighted 100 : 1 (assumption: LDVC does not
restate the weights; ZegCLIP's ``mask_weight=100, dice_weight=1``). Reductions (ours, documented):

- focal: mean over all (image, class, valid pixel) elements (``torchvision.ops.sigmoid_focal_loss`` "mean");
- dice: ``1 - (2 sum p y + eps) / (sum p + sum y + eps)`` per (image, class) over the image's valid pixels,
  averaged over images and classes.

Targets are class-id maps; ``ignore`` pixels (255) count in neither loss. Logits smaller than the target map are
upsampled bilinearly (``align_corners=False``) to it first, as ZegCLIP does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from protolens.core.errors import ParamError

__all__ = ["dice_loss", "focal_loss", "ldvc_loss", "one_hot_target"]


def one_hot_target(logits: torch.Tensor, target: torch.Tensor, ignore: int = 255,
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Align logits with a target map and one-hot encode it.

    Parameters
    ----------
    logits : torch.Tensor
        (B, n, h, w) float per-class logits.
    target : torch.Tensor
        (B, H, W) integer class ids in ``[0, n)`` or ``ignore``.

    Returns
    -------
    tuple of torch.Tensor
        ``(logits (B, n, H, W) float32, one_hot (B, n, H, W) float32, valid (B, 1, H, W) float32)``.

    Raises
    ------
    ParamError
        Batch sizes differ, or a target id is neither ``ignore`` nor in ``[0, n)`` (map unseen classes to
        ``ignore`` before training).
    """
    if logits.ndim != 4 or target.ndim != 3 or logits.shape[0] != target.shape[0]:
        raise ParamError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)}: expected (B, n, h, w) "
                         "and (B, H, W)")
    n = logits.shape[1]
    logits = logits.float()
    if tuple(logits.shape[-2:]) != tuple(target.shape[-2:]):
        logits = F.interpolate(logits, size=tuple(target.shape[-2:]), mode="bilinear", align_corners=False)
    target = target.long()
    valid = target != ignore
    bad = valid & ((target < 0) | (target >= n))
    if bool(bad.any()):
        raise ParamError(f"target ids {sorted(set(target[bad].tolist()))[:5]} are outside the {n} classes "
                         f"(use {ignore} for pixels to ignore)")
    one_hot = F.one_hot(torch.where(valid, target, 0), n).permute(0, 3, 1, 2).float()
    valid_f = valid.unsqueeze(1).float()
    return logits, one_hot * valid_f, valid_f


def focal_loss(logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 0.25, gamma: float = 2.0,
               ignore: int = 255) -> torch.Tensor:
    """Multi-class sigmoid focal loss (arXiv 1708.02002 Eq. 5), mean over valid (image, class, pixel) elements.

    With ``p = sigmoid(x)``, ``y`` the one-hot target, ``p_t = p y + (1 - p)(1 - y)``,
    ``alpha_t = alpha y + (1 - alpha)(1 - y)``: ``FL = -alpha_t (1 - p_t)^gamma log(p_t)``.
    ``logits`` (B, n, h, w), ``target`` (B, H, W) ids -> scalar float32 (0 when no pixel is valid).
    """
    x, y, valid = one_hot_target(logits, target, ignore)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")  # -log(p_t), stable
    p = torch.sigmoid(x)
    p_t = p * y + (1 - p) * (1 - y)
    alpha_t = alpha * y + (1 - alpha) * (1 - y)
    loss = alpha_t * (1 - p_t) ** gamma * ce * valid
    count = valid.sum() * x.shape[1]
    return loss.sum() / count.clamp(min=1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, *, ignore: int = 255, eps: float = 1.0) -> torch.Tensor:
    """Per-class Dice loss on sigmoid probabilities, averaged over (image, class).

    ``1 - (2 sum_i p_i y_i + eps) / (sum_i p_i + sum_i y_i + eps)`` over the image's valid pixels i.
    ``logits`` (B, n, h, w), ``target`` (B, H, W) ids -> scalar float32.
    """
    x, y, valid = one_hot_target(logits, target, ignore)
    p = torch.sigmoid(x) * valid
    inter = (p * y).sum(dim=(2, 3))
    total = p.sum(dim=(2, 3)) + y.sum(dim=(2, 3))
    return (1 - (2 * inter + eps) / (total + eps)).mean()


def ldvc_loss(logits: torch.Tensor, target: torch.Tensor, *, focal_weight: float = 100.0, dice_weight: float = 1.0,
              alpha: float = 0.25, gamma: float = 2.0, ignore: int = 255, eps: float = 1.0) -> torch.Tensor:
    """``focal_weight * focal_loss + dice_weight * dice_loss`` (LDVC §3.4; weights: ZegCLIP's, module docstring).

    ``logits`` (B, n, h, w) float, ``target`` (B, H, W) integer ids (``ignore`` = 255 skipped) -> scalar.
    """
    focal = focal_loss(logits, target, alpha=alpha, gamma=gamma, ignore=ignore)
    return focal_weight * focal + dice_weight * dice_loss(logits, target, ignore=ignore, eps=eps)
