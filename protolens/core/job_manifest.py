"""The manifest of one batch job: what happened to every photo (or shard), written atomically as the job runs.

A batch command run with ``--executor ray`` keeps ``protolens-manifest.json`` in its output folder (without
``--out``: ``protolens-<command>-manifest.json`` in the current folder). It is rewritten atomically (temp file,
fsync, rename) at most every ``interval`` seconds and at the end, so a reader (the GUI, a second terminal,
another job) always sees a complete document. Layout (schema ``protolens.manifest/1``)::

    {"schema": ..., "command": "segment", "executor": "ray", "address": "local", "started": ISO-8601 UTC,
     "updated": ..., "finished": ... or null, "counts": {"done": 9, "failed": 1, "skipped": 0, "pending": 0,
     "retried": 1},
     "workers": [{"id": "w0", "pid": 1234, "node": "127.0.0.1", "device": "cpu", "memory_rss": 123456789}],
     "units": {"<photo path>": {"state": "done", "attempts": 2, "retried": 1, "worker": "w1", "error": null,
                                "outputs": ["out/a.mask.png", ...], "seconds": 0.41}}}

``state`` is ``pending`` (not finished yet), ``done``, ``failed`` (the photo's own error, e.g. unreadable, in
``error``) or ``skipped`` (its outputs already existed with the same result key: a resumed job).
``attempts`` counts the submissions of a unit; ``retried`` those after its worker died mid-task.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from protolens.core.atomic import write_json_atomic
from protolens.core.store import utc_now

SCHEMA = "protolens.manifest/1"
FILE_NAME = "protolens-manifest.json"
STATES = ("pending", "done", "failed", "skipped")


def manifest_path(command: str, out_dir: str | Path | None) -> Path:
    """Where a job's manifest goes: ``<out>/protolens-manifest.json``, else ``./protolens-<command>-manifest.json``."""
    if out_dir is not None:
        return Path(out_dir) / FILE_NAME
    return Path.cwd() / f"protolens-{command.replace(' ', '-')}-manifest.json"


@dataclass
class UnitRecord:
    """What happened to one unit (photo or shard); see the module docstring."""

    state: str = "pending"
    attempts: int = 0
    retried: int = 0
    worker: str | None = None
    error: str | None = None
    outputs: list[str] = field(default_factory=list)
    seconds: float | None = None


class JobManifest:
    """A job's manifest, kept in memory and flushed atomically to ``path``.

    Parameters
    ----------
    path : Path
        The manifest file.
    command, executor, address : str
        Recorded as they are (``address`` "local" for a private local Ray instance).
    names : list of str
        The units, in job order, all ``pending`` at first.
    interval : float
        Seconds between two writes while the job runs (:meth:`flush` with ``force`` always writes).

    Raises :class:`~protolens.core.errors.StoreWriteError` when the file cannot be written.
    """

    def __init__(self, path: str | Path, command: str, executor: str, address: str, names: list[str],
                 interval: float = 1.0) -> None:
        self.path = Path(path)
        self.command, self.executor, self.address = command, executor, address
        self.units: dict[str, UnitRecord] = {name: UnitRecord() for name in names}
        self.workers: list[dict[str, Any]] = []
        self.started = utc_now()
        self.finished: str | None = None
        self.interval = interval
        self._written = float("-inf")

    def record(self, name: str, **changes: Any) -> UnitRecord:
        """Update unit ``name``'s record with ``changes`` (fields of :class:`UnitRecord`); returns it."""
        unit = self.units[name]
        for key, value in changes.items():
            if not hasattr(unit, key):
                raise AttributeError(f"UnitRecord has no field {key!r}")
            setattr(unit, key, value)
        return unit

    def counts(self) -> dict[str, int]:
        """Units per state, plus ``retried``: the resubmissions after a worker died, summed over units."""
        counts = {state: 0 for state in STATES}
        for unit in self.units.values():
            counts[unit.state] += 1
        counts["retried"] = sum(unit.retried for unit in self.units.values())
        return counts

    def to_json(self) -> dict[str, Any]:
        """The document written to :attr:`path` (see the module docstring)."""
        return {"schema": SCHEMA, "command": self.command, "executor": self.executor, "address": self.address,
                "started": self.started, "updated": utc_now(), "finished": self.finished,
                "counts": self.counts(), "workers": self.workers,
                "units": {name: asdict(unit) for name, unit in self.units.items()}}

    def flush(self, *, force: bool = False) -> None:
        """Write the manifest if ``interval`` seconds passed since the last write, or always with ``force``."""
        now = time.monotonic()
        if force or now - self._written >= self.interval:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, self.to_json())
            self._written = now

    def finish(self) -> None:
        """Stamp the end time and write the manifest."""
        self.finished = utc_now()
        self.flush(force=True)
