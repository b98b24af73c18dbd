"""Training run folders: the files one training service writes and every view reads (no torch here).

Layout (DESIGN.md, "One training service")::

    RUN_DIR/config.json                 schema protolens.run/1: model, train config, architecture, tiling, data
    RUN_DIR/epoch_###.safetensors       model weights after epoch ### (### = epochs *completed*, 001 = first)
    RUN_DIR/epoch_###.optim.safetensors optimizer state, for resuming
    RUN_DIR/epoch_###.json              schema protolens.checkpoint/1: epoch, loss, steps, lr, indicators, sha256
    RUN_DIR/metrics.jsonl               one JSON line per optimizer update ("type": "step") and per epoch ("epoch")
    RUN_DIR/chosen.json                 the epoch a user chose (early stopping), with its checkpoint's sha256

The trainer appends to ``metrics.jsonl`` and writes every other file atomically, so a GUI monitor or the
checkpoint comparison may read a run while the CLI trains it (a partial last line is left for the next read).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protolens.core.atomic import write_bytes_atomic, write_json_atomic
from protolens.core.errors import CheckpointError
from protolens.core.hashing import sha256_file
from protolens.core.records import utc_now

RUN_SCHEMA = "protolens.run/1"
CHECKPOINT_SCHEMA = "protolens.checkpoint/1"
_EPOCH_FILE = re.compile(r"^epoch_(\d{3,})\.json$")


@dataclass(frozen=True)
class EpochRecord:
    """One completed epoch of a run: its metadata and checkpoint paths.

    Attributes
    ----------
    epoch : int
        Epochs completed when the checkpoint was written (1 = after the first epoch).
    loss : float
        Mean training loss of that epoch.
    steps : int
        Optimizer updates done in the run so far.
    indicators : dict
        Collapse indicators of the epoch (see :mod:`protolens.core.indicators`), NaN where undefined.
    checkpoint : Path
        ``epoch_###.safetensors``.
    sha256 : str
        SHA-256 of the checkpoint as written (empty if unknown).
    data : dict
        The whole ``epoch_###.json``.
    """

    epoch: int
    loss: float
    steps: int
    indicators: dict[str, float]
    checkpoint: Path
    sha256: str
    data: dict[str, Any] = field(repr=False)


def epoch_stem(epoch: int) -> str:
    """``epoch_###`` for an epoch number (>= 0)."""
    return f"epoch_{epoch:03d}"


class RunFolder:
    """A training run folder. Paths only; nothing is read until asked.

    Raises :class:`~protolens.core.errors.CheckpointError` when a file a method needs is missing or corrupt.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # --- paths --------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def checkpoint_path(self, epoch: int) -> Path:
        return self.path / f"{epoch_stem(epoch)}.safetensors"

    def optimizer_path(self, epoch: int) -> Path:
        return self.path / f"{epoch_stem(epoch)}.optim.safetensors"

    def meta_path(self, epoch: int) -> Path:
        return self.path / f"{epoch_stem(epoch)}.json"

    @staticmethod
    def is_run(path: str | Path) -> bool:
        """Whether ``path`` is a folder holding a run ``config.json``."""
        return (Path(path) / "config.json").is_file()

    # --- config -------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The run's ``config.json``. Raises CheckpointError if it is missing, corrupt or of another schema."""
        data = _read_json(self.config_path, "run config")
        if data.get("schema") != RUN_SCHEMA:
            raise CheckpointError(f"{self.config_path}: not a protolens run (schema {data.get('schema')!r})")
        return data

    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``config.json`` atomically (``schema`` and ``created`` added when missing)."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.config_path, {"schema": RUN_SCHEMA, "created": utc_now(), **config})

    # --- epochs -------------------------------------------------------------------------------------
    def epochs(self) -> list[EpochRecord]:
        """Completed epochs whose checkpoint exists, sorted by epoch. Corrupt epoch files raise CheckpointError."""
        records = []
        for meta in sorted(self.path.glob("epoch_*.json")):
            match = _EPOCH_FILE.match(meta.name)
            if match is None:
                continue
            epoch = int(match.group(1))
            if not self.checkpoint_path(epoch).is_file():
                continue  # written before its weights (interrupted) or deleted by the user
            records.append(self._record(epoch, _read_json(meta, "epoch metadata")))
        return sorted(records, key=lambda r: r.epoch)

    def _record(self, epoch: int, data: dict[str, Any]) -> EpochRecord:
        if data.get("schema") != CHECKPOINT_SCHEMA or int(data.get("epoch", -1)) != epoch:
            raise CheckpointError(f"{self.meta_path(epoch)}: not the metadata of epoch {epoch}")
        indicators = {k: float(v) if v is not None else float("nan") for k, v in data.get("indicators", {}).items()}
        return EpochRecord(epoch, float(data.get("loss", float("nan"))), int(data.get("steps", 0)), indicators,
                           self.checkpoint_path(epoch), str(data.get("sha256", "")), data)

    def epoch(self, epoch: int) -> EpochRecord:
        """The record of ``epoch``. Raises CheckpointError (naming the epochs there are) if it is absent."""
        for record in self.epochs():
            if record.epoch == epoch:
                return record
        have = ", ".join(str(r.epoch) for r in self.epochs()) or "none"
        raise CheckpointError(f"{self.path}: no checkpoint of epoch {epoch} (epochs: {have})")

    def latest(self) -> EpochRecord | None:
        """The last completed epoch, or None before the first."""
        records = self.epochs()
        return records[-1] if records else None

    def write_epoch(self, epoch: int, meta: dict[str, Any]) -> None:
        """Write ``epoch_###.json`` atomically (after its checkpoint), adding schema, epoch, sha256, created."""
        sha = sha256_file(self.checkpoint_path(epoch)) if self.checkpoint_path(epoch).is_file() else ""
        write_json_atomic(self.meta_path(epoch), {"schema": CHECKPOINT_SCHEMA, "epoch": epoch, "sha256": sha,
                                                  "created": utc_now(), **meta}, indent=None)

    # --- metrics log --------------------------------------------------------------------------------
    def append_metrics(self, *records: dict[str, Any]) -> None:
        """Append JSON lines to ``metrics.jsonl`` (one writer: the trainer)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write("".join(_json_line(r) for r in records))
            handle.flush()

    def read_metrics(self, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Complete lines of ``metrics.jsonl`` from byte ``offset``; returns (records, offset to read from next).

        A partial last line (being written) is left for the next call; a corrupt line is skipped. A missing
        file gives ``([], offset)``; a file shorter than ``offset`` (rewritten) is read from the start.
        """
        try:
            with open(self.metrics_path, "rb") as handle:
                handle.seek(0, 2)
                if handle.tell() < offset:
                    offset = 0
                handle.seek(offset)
                data = handle.read()
        except FileNotFoundError:
            return [], offset
        end = data.rfind(b"\n") + 1
        records = []
        for line in data[:end].splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records, offset + end

    def truncate_metrics(self, after_step: int) -> None:
        """Drop metric lines of optimizer updates beyond ``after_step`` (a resumed run redoes them)."""
        records, _ = self.read_metrics(0)
        kept = [r for r in records if int(r.get("step", 0)) <= after_step]
        if len(kept) != len(records):
            text = "".join(_json_line(r) for r in kept)
            write_bytes_atomic(self.metrics_path, text.encode())

    # --- the chosen epoch ---------------------------------------------------------------------------
    def chosen(self) -> int | None:
        """The epoch recorded in ``chosen.json``, or None."""
        path = self.path / "chosen.json"
        if not path.is_file():
            return None
        return int(_read_json(path, "chosen epoch")["epoch"])

    def choose(self, epoch: int) -> EpochRecord:
        """Record ``epoch`` as the run's chosen (early-stopping) epoch. Raises CheckpointError if it is absent."""
        record = self.epoch(epoch)
        write_json_atomic(self.path / "chosen.json", {"epoch": epoch, "checkpoint": record.checkpoint.name,
                                                      "sha256": record.sha256, "chosen": utc_now()})
        return record

    def active(self) -> EpochRecord:
        """The chosen epoch, else the last one. Raises CheckpointError for a run without checkpoints."""
        chosen = self.chosen()
        if chosen is not None:
            return self.epoch(chosen)
        latest = self.latest()
        if latest is None:
            raise CheckpointError(f"{self.path}: the run has no checkpoint yet")
        return latest


def resolve_checkpoint(path: str | Path) -> tuple[RunFolder, EpochRecord]:
    """The run and epoch of ``path``: an ``epoch_###.safetensors`` file, or a run folder (its active epoch).

    Raises CheckpointError when ``path`` is neither, or names an epoch whose metadata is missing.
    """
    path = Path(path)
    if path.is_dir():
        run = RunFolder(path)
        run.config()
        return run, run.active()
    match = re.match(r"^epoch_(\d{3,})\.safetensors$", path.name)
    if match is None or not path.is_file():
        raise CheckpointError(f"{path}: not a run folder or an epoch_###.safetensors checkpoint of one")
    run = RunFolder(path.parent)
    run.config()
    return run, run.epoch(int(match.group(1)))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _json_line(record: dict[str, Any]) -> str:
    """One JSON line; NaN and infinities are written as null (valid JSON, read back as NaN by :class:`RunFolder`)."""
    return json.dumps(_finite(record)) + "\n"


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: {what} file is missing") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable {what} ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: {what} is not a JSON object")
    return data
