"""One training loop for every trainable model: accumulation, a per-update schedule, bf16, cancel, resume.

The loop (:func:`train`) knows nothing about the model it trains: it gets the samples, a loss function and a
:class:`~protolens.core.runs.RunFolder`, and writes the run folder of DESIGN.md ("One training service")::

    config.json                    the caller's run config + "train" (TrainConfig) + "schedule" (resolved)
    epoch_###.safetensors          model state_dict after epoch ### (as completed: 001 = after the first)
    epoch_###.optim.safetensors    AdamW state, for a bit-exact resume
    epoch_###.json                 epoch, loss, steps (optimizer updates so far), lr, indicators, config
    metrics.jsonl                  one line per optimizer update and one per epoch

Schedule. The learning rate is set before *every optimizer update* from
:func:`protolens.core.schedule.warmup_cosine_lr` (update ``s``, 0-based, of ``total_steps = epochs x
ceil(samples / accumulation)``). The reference implementation of arXiv 2512.19957 (METHODS.md §1 step 5)
stepped its scheduler 128x too rarely, so its LR stayed near the warm-up start (~1e-5..1.5e-5) and "epoch 10"
was ~80 updates; protolens steps it per update.

Resume. A rerun on a run folder with checkpoints continues after the last completed epoch: weights and AdamW
state are loaded from its files, ``metrics.jsonl`` is cut back to its step count, and each epoch's sample
order and torch seed are functions of (seed, epoch) only, so 2 epochs + resume to 3 gives the same weights as 3
uninterrupted epochs. The run config (architecture, data) and the train config must be those of the run;
only ``epochs`` may grow. Growing it keeps the warm-up and recomputes ``total_steps`` for the new number of
epochs: the updates already done keep the LRs they had, later updates follow the longer cosine (so the LR
rises at the resume point to where the longer schedule is at that step). Fewer epochs than the run was
started with are refused (they would change a schedule already partly run); as many epochs as completed
returns at once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from protolens.core.errors import CheckpointError, ParamError, ProtolensError, StoreWriteError
from protolens.core.jobs import CancelToken, Progress
from protolens.core.runs import RunFolder
from protolens.core.schedule import warmup_cosine_lr
from protolens.models.device import autocast

PRECISIONS = ("auto", "float32", "bfloat16")
"""``auto``: bfloat16 autocast on CUDA, float32 on the CPU."""
OPTIMIZER_FORMAT = "protolens.optimizer/1"
_META_KEY = "protolens"

LossFn = Callable[[nn.Module, Any, str], torch.Tensor]
Evaluate = Callable[[nn.Module, int], dict[str, float]]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of a run (AdamW, warm-up + cosine per optimizer update).

    Attributes
    ----------
    epochs : int
        Epochs to train in all (a resumed run stops there), >= 1.
    lr, min_lr : float
        Peak learning rate after the warm-up, and the floor the cosine reaches at the last update.
    weight_decay : float
        AdamW decoupled weight decay of matrices (>= 2-D weights); biases and norm weights get none.
    warmup_steps : int or None
        Updates of linear warm-up; None = one epoch's updates but at most 10% of all updates
        (``min(updates_per_epoch, total_steps // 10)``, fixed when the run starts). Clipped to all updates.
    accumulation : int
        Micro-batches (samples) per optimizer update; the last group of an epoch may be smaller and is averaged
        over its own size.
    seed : int
        Sample order of epoch ``e`` is the permutation of ``numpy.random.default_rng([seed, e])``; torch is
        seeded with (seed, e) at the start of each epoch. >= 0.
    precision : str
        One of :data:`PRECISIONS`.
    clip_grad : float or None
        Max global gradient norm per update (``torch.nn.utils.clip_grad_norm_``), None = no clipping.
    """

    epochs: int
    lr: float = 1e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    warmup_steps: int | None = None
    accumulation: int = 8
    seed: int = 0
    precision: str = "auto"
    clip_grad: float | None = None

    def __post_init__(self) -> None:
        problems = [text for bad, text in [
            (self.epochs < 1, f"epochs must be >= 1, not {self.epochs}"),
            (not self.lr > 0, f"lr must be > 0, not {self.lr}"),
            (not 0 <= self.min_lr <= self.lr, f"min_lr must be in [0, lr], not {self.min_lr}"),
            (self.weight_decay < 0, f"weight_decay must be >= 0, not {self.weight_decay}"),
            (self.warmup_steps is not None and self.warmup_steps < 0, "warmup_steps must be >= 0"),
            (self.accumulation < 1, f"accumulation must be >= 1, not {self.accumulation}"),
            (self.seed < 0, f"seed must be >= 0, not {self.seed}"),
            (self.precision not in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, "
                                               f"not {self.precision!r}"),
            (self.clip_grad is not None and not self.clip_grad > 0, "clip_grad must be > 0 or None"),
        ] if bad]
        if problems:
            raise ParamError("; ".join(problems))

    def updates_per_epoch(self, samples: int) -> int:
        """Optimizer updates of one epoch over ``samples`` samples: ``ceil(samples / accumulation)``."""
        return math.ceil(samples / self.accumulation)

    def compute_dtype(self, device: str) -> str:
        """Autocast dtype on ``device``: ``"bfloat16"`` or ``"float32"``."""
        if self.precision == "auto":
            return "bfloat16" if device.startswith("cuda") else "float32"
        return self.precision

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        """From :meth:`to_json` output; unknown keys are ignored. Raises ParamError for bad values."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Schedule:
    """The resolved LR schedule of a run (stored as ``"schedule"`` in ``config.json``)."""

    updates_per_epoch: int
    total_steps: int
    warmup_steps: int

    @classmethod
    def resolve(cls, config: TrainConfig, samples: int) -> Schedule:
        per_epoch = config.updates_per_epoch(samples)
        total = per_epoch * config.epochs
        warmup = min(per_epoch, total // 10) if config.warmup_steps is None else config.warmup_steps
        return cls(per_epoch, total, min(warmup, total))

    def lr(self, step: int, config: TrainConfig) -> float:
        """LR of optimizer update ``step`` (0-based) under ``warmup_cosine_lr``."""
        return warmup_cosine_lr(step, base_lr=config.lr, total_steps=self.total_steps,
                                warmup_steps=self.warmup_steps, min_lr=config.min_lr)

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainSummary:
    """What a call of :func:`train` left in the run folder.

    Attributes
    ----------
    run_dir : Path
        The run folder.
    epoch : int
        Epochs completed in the run (the latest checkpoint's number).
    steps : int
        Optimizer updates done in the run.
    loss, lr : float
        Mean loss and last LR of the latest epoch.
    indicators : dict
        Indicators of the latest epoch (``evaluate`` output merged with ``loss``).
    resumed_from : int
        The epoch this call continued after (0 = a fresh run).
    trained : tuple of int
        Epochs trained by this call (empty when the run was already complete).
    skipped : tuple of (str, str)
        Inputs the caller left out (path, reason), e.g. unreadable photos.
    """

    run_dir: Path
    epoch: int
    steps: int
    loss: float
    lr: float
    indicators: dict[str, float]
    resumed_from: int
    trained: tuple[int, ...]
    skipped: tuple[tuple[str, str], ...] = field(default=())

    @property
    def checkpoint(self) -> Path:
        """``epoch_###.safetensors`` of the latest epoch."""
        return RunFolder(self.run_dir).checkpoint_path(self.epoch)


# --- checkpoints ---------------------------------------------------------------------------------------
def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """``safetensors.torch.save_file`` to a temporary file beside ``path``, then ``os.replace``."""
    from safetensors.torch import save_file

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise StoreWriteError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        save_file(tensors, tmp_name, metadata=metadata)
        os.replace(tmp_name, path)
    except BaseException as exc:
        Path(tmp_name).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise StoreWriteError(f"cannot write {path}: {exc.strerror or exc}; nothing was overwritten") from exc
        raise


def _load_tensors(path: str | Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} file is missing")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise CheckpointError(f"{path}: unreadable {what} ({type(exc).__name__}: {exc})") from None


def save_checkpoint(path: str | Path, model: nn.Module, metadata: dict[str, Any] | None = None) -> None:
    """Write ``model.state_dict()`` as safetensors atomically (CPU copies, contiguous).

    ``metadata`` (JSON-able) is stored under the safetensors metadata key ``"protolens"``.
    Raises StoreWriteError when the file cannot be written (an existing file is left as it was).
    """
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    _save_tensors(Path(path), tensors, {_META_KEY: json.dumps(metadata or {})})


def load_checkpoint(path: str | Path, model: nn.Module) -> nn.Module:
    """Load ``epoch_###.safetensors`` (or any state_dict file) into ``model``, exactly; returns ``model``.

    Raises
    ------
    CheckpointError
        The file is missing or unreadable, or its tensors do not fit ``model`` (missing or unexpected names,
        other shapes); the message names the file and the first offending tensors.
    """
    tensors, _ = _load_tensors(path, "checkpoint")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = [f"{k} {tuple(tensors[k].shape)} (model {tuple(v.shape)})" for k, v in expected.items()
              if k in tensors and tensors[k].shape != v.shape]
    problems = [f"{label}: {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}"
                for label, names in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)) if names]
    if problems:
        raise CheckpointError(f"{path}: does not fit this model ({'; '.join(problems)})")
    model.load_state_dict(tensors, strict=True)
    return model


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: group 0 = >= 2-D weights (weight decay), group 1 = the rest (none)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr)


def _indexed_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Parameters in the order of the integer ids of ``optimizer.state_dict()``."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def save_optimizer(path: str | Path, optimizer: torch.optim.Optimizer) -> None:
    """Write an optimizer's state as safetensors atomically.

    Tensors: ``state.<param id>.<name>`` (ids as in ``optimizer.state_dict()``, 0-d ``step`` included).
    Metadata ``"protolens"`` (JSON): format, optimizer class, param groups (hyperparameters and param ids;
    tensor-valued hyperparameters go to ``group.<i>.<name>`` tensors) and non-tensor state values.
    :func:`load_optimizer` restores it bit-exactly. Raises StoreWriteError.
    """
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, entry in state_dict["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    groups = []
    for i, group in enumerate(state_dict["param_groups"]):
        plain = {}
        for name, value in group.items():
            if isinstance(value, torch.Tensor):
                tensors[f"group.{i}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                plain[name] = list(value) if isinstance(value, tuple) else value
        groups.append(plain)
    meta = {"format": OPTIMIZER_FORMAT, "class": type(optimizer).__name__, "param_groups": groups,
            "scalars": scalars}
    _save_tensors(Path(path), tensors, {_META_KEY: json.dumps(meta)})


def load_optimizer(path: str | Path, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Restore the state :func:`save_optimizer` wrote into ``optimizer`` (built over the same parameters).

    Raises
    ------
    CheckpointError
        Missing or unreadable file, another optimizer class or format, other param groups, or state tensors
        whose shape differs from their parameter's (0-d entries such as ``step`` excepted).
    """
    tensors, metadata = _load_tensors(path, "optimizer state")
    try:
        meta = json.loads(metadata[_META_KEY])
    except (KeyError, ValueError):
        raise CheckpointError(f"{path}: not a protolens optimizer state (no metadata)") from None
    if meta.get("format") != OPTIMIZER_FORMAT or meta.get("class") != type(optimizer).__name__:
        raise CheckpointError(f"{path}: holds {meta.get('class')} state ({meta.get('format')}), "
                              f"not {type(optimizer).__name__} ({OPTIMIZER_FORMAT})")
    current = optimizer.state_dict()["param_groups"]
    saved = meta["param_groups"]
    if [g["params"] for g in saved] != [g["params"] for g in current]:
        raise CheckpointError(f"{path}: optimizer state of other parameters (groups {[len(g['params']) for g in saved]}"
                              f", model has {[len(g['params']) for g in current]})")
    groups = []
    for i, (group, now) in enumerate(zip(saved, current, strict=True)):
        restored = {k: tuple(v) if isinstance(now.get(k), tuple) else v for k, v in group.items()}
        restored.update({k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"group.{i}.")})
        groups.append(restored)
    params = _indexed_params(optimizer)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        kind, index, name = key.split(".", 2)
        if kind == "state":
            state.setdefault(int(index), {})[name] = value
    for key, value in meta.get("scalars", {}).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    bad = [f"param {i} {name} {tuple(v.shape)} vs {tuple(params[i].shape)}" for i, entry in state.items()
           for name, v in entry.items() if isinstance(v, torch.Tensor) and v.ndim and i < len(params)
           and v.shape != params[i].shape]
    if bad or any(i >= len(params) for i in state):
        raise CheckpointError(f"{path}: optimizer state does not fit the model ({'; '.join(bad[:3]) or 'ids'})")
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    return optimizer


# --- the loop ------------------------------------------------------------------------------------------
def epoch_order(samples: int, seed: int, epoch: int) -> np.ndarray:
    """Sample indices of ``epoch`` (1-based): a permutation seeded by (seed, epoch) only, int64."""
    return np.random.default_rng([seed, epoch]).permutation(samples)


def _jsonable(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` as it reads back from JSON (tuples -> lists, Paths -> str), for comparisons with a stored run."""
    return json.loads(json.dumps(value, default=str))


def _differences(stored: dict[str, Any], wanted: dict[str, Any], ignore: set[str]) -> list[str]:
    keys = sorted((set(stored) | set(wanted)) - ignore)
    return [f"{k} (run: {_short(stored.get(k))}, now: {_short(wanted.get(k))})" for k in keys
            if stored.get(k) != wanted.get(k)]


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass
class _Start:
    epoch: int  # first epoch to train
    steps: int
    schedule: Schedule
    latest: Any  # EpochRecord | None


def _prepare_run(run: RunFolder, config: TrainConfig, run_config: dict[str, Any], samples: int) -> _Start:
    """Write the config of a fresh run, or check a run's config and say where to resume. Raises CheckpointError."""
    latest = run.latest()
    if latest is None:
        schedule = Schedule.resolve(config, samples)
        run.write_config({**run_config, "train": config.to_json(), "schedule": schedule.to_json()})
        return _Start(1, 0, schedule, None)
    if not run.config_path.is_file():
        raise CheckpointError(f"{run.path}: has checkpoints but no config.json; use a new run folder")
    stored = run.config()
    where = f"{run.path}: cannot resume this run"
    diffs = _differences(stored, run_config, {"schema", "created", "train", "schedule"})
    if diffs:
        raise CheckpointError(f"{where}, it was trained with another {'; '.join(diffs)}; use a new run folder")
    old = TrainConfig.from_json(stored.get("train", {}))
    diffs = _differences({**old.to_json(), "epochs": 0}, {**config.to_json(), "epochs": 0}, set())
    if diffs:
        raise CheckpointError(f"{where} with other training settings: {'; '.join(diffs)}")
    if config.epochs < old.epochs:
        raise CheckpointError(f"{where} with {config.epochs} epochs: it was started for {old.epochs}; epochs may "
                              "only grow (the cosine schedule is then stretched)")
    schedule = Schedule(**stored["schedule"])
    if schedule.updates_per_epoch != config.updates_per_epoch(samples) or latest.steps != (
            latest.epoch * schedule.updates_per_epoch):
        raise CheckpointError(f"{where}: epoch {latest.epoch} has {latest.steps} updates, expected "
                              f"{latest.epoch} x {config.updates_per_epoch(samples)} for {samples} samples")
    if config.epochs > old.epochs:
        schedule = dataclasses.replace(schedule, total_steps=schedule.updates_per_epoch * config.epochs)
        run.write_config({**stored, "train": config.to_json(), "schedule": schedule.to_json()})
    return _Start(latest.epoch + 1, latest.steps, schedule, latest)


def _seed_epoch(seed: int, epoch: int) -> None:
    torch.manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint32)[0]))


def _run_epoch(model: nn.Module, samples: Sequence[Any], loss_fn: LossFn, optimizer: torch.optim.Optimizer,
               config: TrainConfig, schedule: Schedule, run: RunFolder, epoch: int, steps: int, device: str,
               cancel: CancelToken) -> Generator[Progress, None, tuple[float, int, float]]:
    """One epoch of accumulated updates; returns (mean micro-batch loss, updates so far, last LR)."""
    order = epoch_order(len(samples), config.seed, epoch)
    _seed_epoch(config.seed, epoch)
    dtype = config.compute_dtype(device)
    model.train()
    losses: list[float] = []
    lr, total = config.lr, 0.0
    for start in range(0, len(order), config.accumulation):
        group = order[start:start + config.accumulation]
        lr = schedule.lr(steps, config)
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr
        group_loss = 0.0
        for index in group:
            cancel.raise_if_set()
            with autocast(device, dtype):
                loss = loss_fn(model, samples[int(index)], device)
            (loss.float() / len(group)).backward()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise ProtolensError(f"training diverged: loss {value} in epoch {epoch}, update {steps + 1}; the "
                                     "last completed epoch is kept (try a lower learning rate)")
            group_loss += value
            total += value
            losses.append(value)
            done = (epoch - 1) * len(samples) + len(losses)
            yield Progress(done / (config.epochs * len(samples)), f"epoch {epoch}/{config.epochs} step "
                           f"{steps + 1}/{schedule.total_steps} loss {total / len(losses):.4g}")
        if config.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps += 1
        run.append_metrics({"type": "step", "epoch": epoch, "step": steps, "loss": group_loss / len(group), "lr": lr,
                            "time": time.time()})
    return float(np.mean(losses)), steps, lr


def _save_epoch(run: RunFolder, model: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig,
                epoch: int, steps: int, loss: float, lr: float, indicators: dict[str, float]) -> None:
    """Weights, optimizer state, the epoch line of metrics.jsonl, then epoch_###.json (what marks it done)."""
    save_checkpoint(run.checkpoint_path(epoch), model, {"epoch": epoch, "steps": steps})
    save_optimizer(run.optimizer_path(epoch), optimizer)
    run.append_metrics({"type": "epoch", "epoch": epoch, "step": steps, "steps": steps, "loss": loss, "lr": lr,
                        "indicators": indicators, "time": time.time()})
    run.write_epoch(epoch, {"loss": loss, "steps": steps, "lr": lr, "indicators": indicators,
                            "config": config.to_json()})


def train(model: nn.Module, samples: Sequence[Any], loss_fn: LossFn, config: TrainConfig, run: RunFolder, *,
          device: str = "cpu", cancel: CancelToken | None = None, run_config: dict[str, Any] | None = None,
          evaluate: Evaluate | None = None) -> Generator[Progress, None, TrainSummary]:
    """Train ``model`` on ``samples`` with AdamW into the run folder ``run``, resuming it if it has checkpoints.

    Parameters
    ----------
    model : torch.nn.Module
        Moved to ``device``; its parameters stay float32 (autocast computes in bfloat16 on CUDA).
    samples : sequence
        One item per micro-batch, passed as is to ``loss_fn`` (e.g. a (1, N, D) token tensor).
    loss_fn : callable
        ``loss_fn(model, sample, device) -> scalar tensor``, run under autocast; the loop divides it by the
        size of its accumulation group and back-propagates it.
    config : TrainConfig
        Epochs, LR schedule, accumulation, seed, precision.
    run : RunFolder
        Where config, checkpoints and metrics go (see the module docstring).
    device : str
        Torch device, e.g. ``"cpu"`` or ``"cuda:0"``.
    cancel : CancelToken, optional
        Checked before every micro-batch.
    run_config : dict, optional
        JSON-able description of the model and data (architecture, data, provenance); written into
        ``config.json`` with ``"train"`` and ``"schedule"``; a resumed run must have the same.
    evaluate : callable, optional
        ``evaluate(model, epoch) -> {name: float}`` after each epoch (model in eval mode); merged with
        ``{"loss": epoch loss}`` into the epoch's ``indicators``.

    Yields
    ------
    Progress
        After every micro-batch: fraction of all micro-batches of the run, text
        ``"epoch 2/10 step 17/80 loss 0.0123"`` (step = the optimizer update in progress, 1-based).

    Returns
    -------
    TrainSummary

    Raises
    ------
    Cancelled
        ``cancel`` was set; the epochs completed so far are kept, the partial epoch is discarded.
    CheckpointError
        The run folder holds another model or data, other settings, fewer epochs, or damaged checkpoints.
    ParamError
        No samples.
    ProtolensError
        The loss became NaN or infinite (the last completed epoch is kept).
    StoreWriteError
        A checkpoint could not be written.
    """
    if len(samples) == 0:
        raise ParamError("nothing to train on: no samples")
    cancel = cancel or CancelToken()
    start = _prepare_run(run, config, _jsonable(run_config or {}), len(samples))
    model.to(device)
    optimizer = make_optimizer(model, config)
    latest = start.latest
    if latest is not None:
        load_checkpoint(latest.checkpoint, model)
        load_optimizer(run.optimizer_path(latest.epoch), optimizer)
    run.truncate_metrics(start.steps)
    steps, trained = start.steps, []
    loss, lr = (latest.loss, float(latest.data.get("lr", config.lr))) if latest else (float("nan"), config.lr)
    indicators = dict(latest.indicators) if latest else {}
    for epoch in range(start.epoch, config.epochs + 1):
        loss, steps, lr = yield from _run_epoch(model, samples, loss_fn, optimizer, config, start.schedule, run,
                                                epoch, steps, device, cancel)
        cancel.raise_if_set()
        yield Progress(epoch / config.epochs, f"epoch {epoch}/{config.epochs}: indicators and checkpoint")
        model.eval()
        indicators = {**(evaluate(model, epoch) if evaluate is not None else {}), "loss": loss}
        _save_epoch(run, model, optimizer, config, epoch, steps, loss, lr, indicators)
        trained.append(epoch)
    final = trained[-1] if trained else latest.epoch
    return TrainSummary(run.path, final, steps, loss, lr, indicators, latest.epoch if latest else 0, tuple(trained))
