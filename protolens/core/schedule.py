"""Learning-rate schedules, as pure functions of the optimizer-update index (numpy-free, no torch).

Source: prototype-guided zero-shot segmentation, arXiv 2512.19957, step 5 (METHODS.md §1). The reference code
stepped its warm-up + cosine scheduler once per *epoch fraction* it computed for 128-image batches while it
updated the weights far more often, so the schedule ran 128x too slowly: the effective LR stayed near its
warm-up start (~1e-5..1.5e-5). protolens evaluates the schedule at every optimizer update instead.
"""

from __future__ import annotations

import math


def warmup_cosine_lr(step: int, *, base_lr: float, total_steps: int, warmup_steps: int, min_lr: float = 0.0) -> float:
    """The learning rate of optimizer update ``step`` (0-based) under linear warm-up then cosine decay.

    Parameters
    ----------
    step : int
        Index of the optimizer update (0 = the first update), not of the micro-batch or epoch.
    base_lr : float
        Peak learning rate, reached at the end of the warm-up.
    total_steps : int
        Optimizer updates of the whole run (epochs x updates per epoch), >= 1.
    warmup_steps : int
        Updates of linear warm-up, in [0, total_steps]; update ``i < warmup_steps`` uses
        ``base_lr * (i + 1) / warmup_steps``.
    min_lr : float
        Floor of the cosine decay, reached at the last update.

    Returns
    -------
    float
        ``min_lr + (base_lr - min_lr) * (1 + cos(pi * p)) / 2`` with ``p = (step - warmup) / (total - warmup - 1)``
        after the warm-up (p clipped to [0, 1]; a single decay step uses ``base_lr``).

    Raises
    ------
    ValueError
        Negative ``step``, ``total_steps < 1`` or ``warmup_steps`` outside [0, total_steps].
    """
    if step < 0 or total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"bad schedule: step {step}, total {total_steps}, warm-up {warmup_steps}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay = total_steps - warmup_steps - 1
    progress = min(1.0, (step - warmup_steps) / decay) if decay > 0 else 0.0
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
