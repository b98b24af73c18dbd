"""Work units of batch jobs: what an executor (the local loop, or Ray actors) hands to a worker and gets back.

A :class:`BatchJob` describes one batch command as plain, picklable data (backend, parameters, output folder).
An executor calls :meth:`BatchJob.open` once per worker (this loads the model: one per worker, reused for every
unit), then :meth:`BatchJob.run` per unit. ``run`` writes the unit's outputs itself, atomically, where the job
says (the output folder or the per-photo store: a shared filesystem on a cluster); only the small
:class:`UnitResult` travels back to the driver. A unit's own failure (an unreadable photo, a write error) is a
``UnitResult`` with ``ok=False``, never an exception; an exception from ``run`` is an error that would fail
every unit (missing weights, an unknown backend) and stops the job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class WorkUnit:
    """One unit of a batch job: a photo, or a shard of photos.

    ``name`` identifies it in the manifest and in messages (the photo's path as scanned); ``payload`` is
    whatever the job's ``run`` needs (picklable: paths, stems, numbers).
    """

    name: str
    payload: Any


@dataclass
class UnitResult:
    """What a worker reports for one unit.

    Attributes
    ----------
    name : str
        The unit's name.
    ok : bool
        False when the unit failed on its own (``error`` says why, in one line).
    outputs : list of str
        The files the unit wrote (absolute or as the job gave them).
    error : str or None
    seconds : float
        Wall-clock seconds the worker spent on the unit.
    value : Any
        A small, job-specific value (e.g. the unreadable photos of a shard).
    worker : str or None
        The worker that ran it (``w0``, ``w1``, ... on Ray; ``local``).
    """

    name: str
    ok: bool
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    value: Any = None
    worker: str | None = None


class BatchJob(Protocol):
    """A batch command as data; see the module docstring."""

    command: str
    """The command's name (``segment``, ``tokens``, ``prototypes build``), for messages and the manifest."""

    def open(self, device: str | None) -> Any:
        """Per-worker state (a Segmenter holding the model); ``device`` None lets the device pool choose."""

    def run(self, state: Any, unit: WorkUnit) -> UnitResult:
        """Compute and write one unit; per-unit failures come back as ``ok=False``."""

    def is_done(self, unit: WorkUnit) -> bool:
        """Whether the unit's outputs already exist with the same result key (a resumed job skips it)."""


@dataclass
class Tally:
    """Progress of a job across its workers: the counters a progress bar shows.

    ``total`` units, of which ``done``, ``failed``, ``skipped`` (done by an earlier run), ``in_flight`` now
    (submitted, not finished), ``retried`` (resubmissions after a worker died); ``seconds`` since the start.
    """

    total: int
    done: int = 0
    failed: int = 0
    skipped: int = 0
    in_flight: int = 0
    retried: int = 0
    seconds: float = 0.0

    @property
    def throughput(self) -> float:
        """Units finished (done or failed) per second of this run; 0 before the first."""
        finished = self.done + self.failed
        return finished / self.seconds if self.seconds > 0 else 0.0


def pending_units(job: BatchJob, units: Sequence[WorkUnit]) -> tuple[list[WorkUnit], list[WorkUnit]]:
    """Split ``units`` into (to run, already done) with :meth:`BatchJob.is_done`, keeping their order."""
    todo, done = [], []
    for unit in units:
        (done if job.is_done(unit) else todo).append(unit)
    return todo, done


OnResult = Callable[[UnitResult, Tally], None]
