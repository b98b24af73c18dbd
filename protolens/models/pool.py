"""The device pool: one worker thread per CUDA device plus one for the CPU.

Model jobs are generators taking the device string; the pool runs each on its device's worker thread
(so a model is only ever used by the thread of its device) and streams the job's progress back to the
caller. A job that runs out of device memory even with a batch of one is rerun on the CPU, and the
fallback is reported as progress text and in the caller's ``warnings`` list (warnings travel with the run that
raised them, never through state shared by all runs).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from protolens.core.errors import DeviceOutOfMemoryError
from protolens.core.jobs import CancelToken, Progress

DeviceJob = Callable[[str], Generator[Progress, None, Any]]


@dataclass(frozen=True)
class DeviceStatus:
    """One device of the pool: its id, a description, and its running and queued job counts."""

    device: str
    description: str
    running: int
    queued: int


class DevicePool:
    """Runs model jobs on per-device worker threads (``devices`` default: every CUDA device, then the CPU)."""

    def __init__(self, devices: list[str] | None = None) -> None:
        if devices is None:
            from protolens.models.device import available_devices

            devices = available_devices()
        self.devices = list(devices)
        self._executors = {d: ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"protolens-{d}")
                           for d in self.devices}
        self._running = dict.fromkeys(self.devices, 0)
        self._queued = dict.fromkeys(self.devices, 0)
        self._lock = threading.Lock()

    def choose(self, prefer: str | None = None) -> str:
        """``prefer`` if it is in the pool, else the least busy CUDA device, else the CPU."""
        if prefer in self._executors:
            return prefer
        gpus = [d for d in self.devices if d != "cpu"]
        if not gpus:
            return "cpu" if "cpu" in self._executors else self.devices[0]
        with self._lock:
            return min(gpus, key=lambda d: (self._running[d] + self._queued[d], self.devices.index(d)))

    def status(self) -> list[DeviceStatus]:
        """Each device with its running and queued job counts."""
        from protolens.models.device import describe_device

        with self._lock:
            counts = [(d, self._running[d], self._queued[d]) for d in self.devices]
        return [DeviceStatus(d, describe_device(d), running, queued) for d, running, queued in counts]

    def run(self, job: DeviceJob, *, cancel: CancelToken, prefer: str | None = None,
            warnings: list[str] | None = None) -> Generator[Progress, None, Any]:
        """Run ``job(device)`` on a device worker, yielding its progress here; return its result.

        Falls back to the CPU once if the device runs out of memory with a batch of one, and appends a message
        saying so to ``warnings`` (the caller's list, e.g. the run's outcome). Closing this generator (a
        cancelled caller) cancels the job.
        """
        device = self.choose(prefer)
        try:
            return (yield from self._run_on(device, job, cancel))
        except DeviceOutOfMemoryError as exc:
            if device == "cpu" or "cpu" not in self._executors:
                raise
            message = f"{exc}; running this job on the CPU instead"
            if warnings is not None:
                warnings.append(message)
            yield Progress(0.0, message)
            return (yield from self._run_on("cpu", job, cancel))

    def _run_on(self, device: str, job: DeviceJob, cancel: CancelToken) -> Generator[Progress, None, Any]:
        events: queue.Queue[tuple[str, Any]] = queue.Queue()

        def work() -> None:
            with self._lock:
                self._queued[device] -= 1
                self._running[device] += 1
            outcome: tuple[str, Any] = ("error", RuntimeError("device job ended without a result"))
            try:
                generator = job(device)
                while True:
                    try:
                        events.put(("progress", next(generator)))
                    except StopIteration as stop:
                        outcome = ("done", stop.value)
                        return
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                outcome = ("error", exc)
            finally:
                # Uncount the job before the caller can see its end, so status() is never stale afterwards.
                with self._lock:
                    self._running[device] -= 1
                events.put(outcome)

        with self._lock:
            self._queued[device] += 1
        self._executors[device].submit(work)
        try:
            while True:
                kind, value = events.get()
                if kind == "progress":
                    yield value
                elif kind == "done":
                    return value
                else:
                    raise value
        except GeneratorExit:
            cancel.cancel()
            raise

    def shutdown(self) -> None:
        """Stop the workers after their current jobs."""
        for executor in self._executors.values():
            executor.shutdown(wait=False)  # queued jobs still finish, so no caller waits forever
