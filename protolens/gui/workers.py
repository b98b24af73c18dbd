"""Running work off the UI thread (superqt workers on the Qt thread pool) and counting jobs."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Generator
from typing import Any

from PySide6.QtCore import QObject, QThreadPool, Signal
from superqt.utils import GeneratorWorker, WorkerBase, create_worker

from protolens.core.jobs import CancelToken


class JobRuntimeError(Exception):
    """A ``RuntimeError`` raised by a generator job (torch raises them), re-raised under another type.

    superqt's GeneratorWorker takes a ``RuntimeError`` from the generator for "the worker was deleted": it warns
    and never emits ``errored`` or ``finished``, so the job would stay active forever.
    """


def _reraise_runtime_errors(func: Callable[..., Generator[Any, Any, Any]]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        try:
            return (yield from func(*args, **kwargs))
        except RuntimeError as exc:
            raise JobRuntimeError(f"{type(exc).__name__}: {exc}") from exc
    return wrapper


class Job:
    """A started worker plus its cancel token. ``cancel()`` asks it to stop at its next check."""

    def __init__(self, worker: WorkerBase, token: CancelToken, kind: str) -> None:
        self.worker = worker
        self.token = token
        self.kind = kind
        self.done = False

    def cancel(self) -> None:
        self.token.cancel()
        if isinstance(self.worker, GeneratorWorker):
            self.worker.quit()


class JobRunner(QObject):
    """Starts functions and generators on the thread pool; results come back as Qt signals on the UI thread.

    ``counts_changed(running, queued)`` is emitted whenever a job starts or ends (for the status bar).
    """

    counts_changed = Signal(int, int)

    def __init__(self, parent: QObject | None = None, max_threads: int = 4) -> None:
        super().__init__(parent)
        pool = QThreadPool.globalInstance()
        pool.setMaxThreadCount(max(pool.maxThreadCount(), max_threads))
        self._jobs: list[Job] = []
        self._lanes: dict[str, QThreadPool] = {}

    def submit(self, func: Callable[..., Any], *args: Any, kind: str = "job",
               on_result: Callable[[Any], None] | None = None,
               on_error: Callable[[BaseException], None] | None = None,
               on_progress: Callable[[Any], None] | None = None,
               on_finished: Callable[[], None] | None = None, token: CancelToken | None = None,
               lane: str | None = None, **kwargs: Any) -> Job:
        """Run ``func(*args, **kwargs)`` on the pool (a generator's yields go to ``on_progress``).

        Jobs given the same ``lane`` run one at a time in submission order (e.g. writes and reads of the
        result store, so a look-up never overtakes the save before it); other jobs run concurrently.
        """
        token = token or CancelToken()
        if inspect.isgeneratorfunction(func):
            func = _reraise_runtime_errors(func)
        worker = create_worker(func, *args, _start_thread=False, _ignore_errors=True, **kwargs)
        job = Job(worker, token, kind)
        if on_result is not None:
            worker.returned.connect(on_result)
        if on_error is not None:
            worker.errored.connect(on_error)
        if on_progress is not None and isinstance(worker, GeneratorWorker):
            worker.yielded.connect(on_progress)
        worker.started.connect(self._emit_counts)
        worker.finished.connect(lambda: self._finish(job))
        if on_finished is not None:
            worker.finished.connect(on_finished)
        self._jobs.append(job)
        if lane is None:
            worker.start()
        else:
            if lane not in self._lanes:
                self._lanes[lane] = QThreadPool(self)
                self._lanes[lane].setMaxThreadCount(1)
            self._lanes[lane].start(worker)
        self._emit_counts()
        return job

    def _finish(self, job: Job) -> None:
        job.done = True
        if job in self._jobs:
            self._jobs.remove(job)
        self._emit_counts()

    def _emit_counts(self) -> None:
        running = sum(1 for j in self._jobs if getattr(j.worker, "_running", False))
        self.counts_changed.emit(running, len(self._jobs) - running)

    def active(self, kind: str | None = None) -> list[Job]:
        """Jobs not yet finished (of ``kind`` if given)."""
        return [j for j in self._jobs if kind is None or j.kind == kind]

    def cancel_all(self) -> None:
        """Ask every job to stop (used on close)."""
        for job in list(self._jobs):
            job.cancel()

    def wait(self, msecs: int = 5000) -> bool:
        """Block until all pool threads are idle or ``msecs`` pass (tests and shutdown only)."""
        done = all(pool.waitForDone(msecs) for pool in self._lanes.values())
        return QThreadPool.globalInstance().waitForDone(msecs) and done
