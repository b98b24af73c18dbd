"""Run a :class:`~protolens.services.work.BatchJob` on Ray: model-holding actors, bounded tasks in flight, retries.

Ray (https://docs.ray.io) is the distributed engine; protolens adds no scheduler of its own. The driver (the
``protolens`` command) starts ``workers`` actors. On a cluster with GPUs each actor asks for one GPU
(``num_gpus=1``: pinned to it, one model per GPU); without GPUs each asks for ``cpus_per_worker`` CPUs. An actor
calls :meth:`BatchJob.open` once (its model loads once) and then runs one unit per call.

- **Back-pressure**: at most ``max_in_flight`` units are submitted and not yet finished (default two per worker,
  so a worker never waits for the driver); the rest wait on the driver.
- **Outputs** are written by the actors straight into the job's output folder (a shared filesystem on a
  cluster), atomically; only the small :class:`~protolens.services.work.UnitResult` travels back through
  Ray's object store.
- **A worker that dies** mid-unit (killed process, lost node) makes Ray raise ``RayActorError`` for its units;
  each is resubmitted, to another live worker where there is one, up to ``max_retries`` times, and counted as
  retried in the manifest. Ray restarts the actor (``max_restarts``), which loads its model again.
- **A unit that fails on its own** (unreadable photo) is a failed result, never a failed job; an exception
  raised by ``run`` (missing weights) stops the job and is raised on the driver.

A local Ray instance (no ``address``) is private to this machine: every Ray server binds to 127.0.0.1, with no
dashboard and no usage reporting (:func:`start_local_ray`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from protolens.core.errors import ExecutorError, ProtolensError
from protolens.core.job_manifest import JobManifest
from protolens.services.work import BatchJob, Tally, UnitResult, WorkUnit

INSTALL_HINT = 'the Ray executor needs Ray: pip install "protolens[cluster]" (or pip install ray)'
LOOPBACK = "127.0.0.1"
_LOCAL_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
"""Environment of a private local instance. ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes Ray take the
loopback address as the node address (Ray's single-machine mode); without it ``ray.init`` replaces a given
127.0.0.1 by the machine's routable address and binds its servers there."""


@dataclass
class RayOptions:
    """How to run on Ray.

    Attributes
    ----------
    address : str or None
        None: start a private local instance (:func:`start_local_ray`). Else a cluster to join: ``auto`` (on a
        node of the cluster), ``HOST:6379`` or ``ray://HOST:10001`` (Ray Client).
    workers : int or None
        Model-holding actors; default one per GPU of the cluster, else one per ``cpus_per_worker`` CPUs.
    max_in_flight : int or None
        Units submitted and not finished, at most; default ``2 * workers``.
    max_retries : int
        Resubmissions of a unit whose worker died, at most (then the unit fails).
    cpus_per_worker : float
        CPUs each actor reserves on a cluster without GPUs (also its torch threads).
    num_cpus : int or None
        CPUs of a local instance (default: all).
    """

    address: str | None = None
    workers: int | None = None
    max_in_flight: int | None = None
    max_retries: int = 3
    cpus_per_worker: float = 1.0
    num_cpus: int | None = None


def import_ray() -> Any:
    """``import ray``, or raise :class:`ExecutorError` with the one-line install hint."""
    try:
        import ray
    except ImportError:
        raise ExecutorError(INSTALL_HINT) from None
    return ray


def start_local_ray(num_cpus: int | None = None) -> Any:
    """Start a private Ray instance on this machine, bound to 127.0.0.1 only; returns the ``ray`` module.

    No dashboard, no usage reporting, no Ray Client server; GCS, raylet, workers, object manager and agents
    listen on 127.0.0.1 (see :data:`_LOCAL_ENV`). ``address="local"`` never joins a cluster found on the machine.
    Raises :class:`ExecutorError` without Ray.
    """
    os.environ.update(_LOCAL_ENV)
    ray = import_ray()
    from ray._private import ray_constants  # read at import: a ray imported earlier needs the value set

    ray_constants.ENABLE_RAY_CLUSTER = False
    # Ray's token authentication stays on; its notice about it would be a stray line on every command's stderr.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address=LOOPBACK,
             log_to_driver=False, configure_logging=False)
    node_ip = ray.util.get_node_ip_address()
    if node_ip != LOOPBACK:
        ray.shutdown()
        raise ExecutorError(f"the local Ray instance took the address {node_ip}, not {LOOPBACK}; stopped it")
    return ray


def connect(options: RayOptions) -> tuple[Any, bool]:
    """(the ``ray`` module, whether this call started it): join ``options.address``, reuse a running
    instance, or start a private local one. Raises :class:`ExecutorError` if the cluster cannot be reached."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    if options.address is None:
        return start_local_ray(options.num_cpus), True
    try:
        ray.init(address=options.address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ExecutorError(f"--address {options.address}: cannot join the Ray cluster ({exc})") from None
    return ray, True


class UnitWorker:
    """The actor body: holds one job's per-worker state (its model) and runs units. Used through Ray only."""

    def __init__(self, job: BatchJob, worker_id: str, device: str | None, threads: int) -> None:
        if "torch" in sys.modules:  # a worker process Ray reused
            sys.modules["torch"].set_num_threads(threads)
        else:  # read when torch is imported (only by backends that need it)
            os.environ["OMP_NUM_THREADS"] = str(threads)
        self.job, self.worker_id = job, worker_id
        self.state = job.open(device)
        self.device = device or "auto"

    def info(self) -> dict[str, Any]:
        """The worker's id, process id, node address, device and resident memory (bytes)."""
        import psutil
        import ray

        return {"id": self.worker_id, "pid": os.getpid(), "node": ray.util.get_node_ip_address(),
                "device": self.device, "memory_rss": psutil.Process().memory_info().rss}

    def run(self, unit: WorkUnit) -> UnitResult:
        """Run one unit (see :meth:`BatchJob.run`), stamped with this worker's id."""
        result = self.job.run(self.state, unit)
        result.worker = self.worker_id
        return result


def _worker_count(ray: Any, options: RayOptions) -> tuple[int, bool]:
    """(workers, on GPUs): the option, else one per GPU, else one per ``cpus_per_worker`` CPUs of the cluster."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if options.workers is not None:
        return options.workers, gpus > 0
    if gpus:
        return gpus, True
    return max(1, int(resources.get("CPU", 1) // options.cpus_per_worker)), False


class _Scheduler:
    """The driver's loop: submit with back-pressure, collect, resubmit units of dead workers."""

    def __init__(self, ray: Any, actors: list[Any], options: RayOptions, manifest: JobManifest, tally: Tally,
                 on_result: Callable[[UnitResult, Tally], None] | None,
                 on_retry: Callable[[str, str, int], None] | None = None) -> None:
        self.ray, self.actors, self.options = ray, actors, options
        self.manifest, self.tally, self.on_result, self.on_retry = manifest, tally, on_result, on_retry
        self.limit = options.max_in_flight or 2 * len(actors)
        self.load = [0] * len(actors)
        self.in_flight: dict[Any, tuple[WorkUnit, int]] = {}
        self.results: list[UnitResult] = []

    def _pick(self, avoid: int | None) -> int:
        choices = [i for i in range(len(self.actors)) if i != avoid] or list(range(len(self.actors)))
        return min(choices, key=lambda i: self.load[i])

    def submit(self, unit: WorkUnit, avoid: int | None = None) -> None:
        index = self._pick(avoid)
        self.in_flight[self.actors[index].run.remote(unit)] = (unit, index)
        self.load[index] += 1
        record = self.manifest.units[unit.name]
        record.attempts += 1

    def collect(self, ref: Any, queue: deque[tuple[WorkUnit, int | None]]) -> UnitResult | None:
        """The finished unit's result; None when its worker died and the unit went back to the queue."""
        unit, index = self.in_flight.pop(ref)
        self.load[index] -= 1
        try:
            result = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as exc:
            record = self.manifest.units[unit.name]
            if record.attempts <= self.options.max_retries:
                record.retried += 1
                self.tally.retried += 1
                queue.appendleft((unit, index))
                if self.on_retry is not None:
                    self.on_retry(unit.name, f"w{index}", record.attempts + 1)
                return None
            result = UnitResult(unit.name, False, error=f"{unit.name}: its worker died {record.attempts} times "
                                                       f"({type(exc).__name__})")
        except self.ray.exceptions.RayTaskError as exc:
            raise _task_error(exc) from None
        self.tally.done += result.ok
        self.tally.failed += not result.ok
        self.manifest.record(result.name, state="done" if result.ok else "failed", worker=result.worker,
                             error=result.error, outputs=list(result.outputs), seconds=round(result.seconds, 4))
        self.results.append(result)
        return result

    def run(self, units: Sequence[WorkUnit], started: float) -> list[UnitResult]:
        queue: deque[tuple[WorkUnit, int | None]] = deque((unit, None) for unit in units)
        while queue or self.in_flight:
            while queue and len(self.in_flight) < self.limit:
                self.submit(*queue.popleft())
            ready, _ = self.ray.wait(list(self.in_flight), num_returns=1, timeout=1.0)
            for ref in ready:
                result = self.collect(ref, queue)
                self.tally.in_flight = len(self.in_flight)
                self.tally.seconds = time.perf_counter() - started
                if result is not None and self.on_result is not None:
                    self.on_result(result, self.tally)
            self.manifest.flush()
        return self.results


def run_on_ray(job: BatchJob, units: Sequence[WorkUnit], manifest: JobManifest, options: RayOptions | None = None,
               *, on_result: Callable[[UnitResult, Tally], None] | None = None,
               on_workers: Callable[[list[dict[str, Any]]], None] | None = None,
               on_retry: Callable[[str, str, int], None] | None = None,
               tally: Tally | None = None) -> list[UnitResult]:
    """Run ``units`` of ``job`` on Ray and return their results (in completion order).

    Parameters
    ----------
    job : BatchJob
        Picklable; every actor gets a copy and calls ``open`` once.
    units : sequence of WorkUnit
        The units to run (already filtered by :func:`~protolens.services.work.pending_units`).
    manifest : JobManifest
        Updated per unit (state, attempts, retried, worker, outputs) and flushed as the job runs and at the end;
        its ``workers`` list holds each actor's id, pid, node, device and memory.
    options : RayOptions, optional
        Address, workers, in-flight bound, retries.
    on_result : callable, optional
        ``on_result(result, tally)`` after each finished unit (done or failed), on the driver.
    on_workers : callable, optional
        ``on_workers(infos)`` once the actors are up (the ``workers`` entries of the manifest).
    on_retry : callable, optional
        ``on_retry(unit name, dead worker id, next attempt)`` when a unit is resubmitted after its worker died.
    tally : Tally, optional
        Counters to continue (e.g. with ``skipped`` set); default a fresh one.

    Returns
    -------
    list of UnitResult

    Raises
    ------
    ExecutorError
        Ray missing, a cluster that cannot be reached, or no workers.
    ProtolensError
        An error every unit would hit (missing weights, unknown backend), raised by a worker.
    """
    options = options or RayOptions()
    tally = tally or Tally(total=len(units))
    if not units:  # a resumed job with everything done: no Ray, no workers
        manifest.finish()
        return []
    ray, started_here = connect(options)
    started = time.perf_counter()
    try:
        count, gpus = _worker_count(ray, options)
        if count < 1:
            raise ExecutorError("--workers must be at least 1")
        threads = max(1, int(options.cpus_per_worker))
        resources = {"num_gpus": 1} if gpus else {"num_cpus": options.cpus_per_worker}
        actor_class = ray.remote(**resources, max_restarts=4, max_task_retries=0)(UnitWorker)
        device = None if gpus else "cpu"
        actors = [actor_class.remote(job, f"w{i}", device, threads) for i in range(count)]
        manifest.workers = _infos(ray, actors)
        if on_workers is not None:
            on_workers(manifest.workers)
        manifest.flush(force=True)
        results = _Scheduler(ray, actors, options, manifest, tally, on_result, on_retry).run(units, started)
        manifest.workers = _infos(ray, actors, previous=manifest.workers)
        return results
    finally:
        manifest.finish()
        if started_here:
            ray.shutdown()


def _infos(ray: Any, actors: list[Any], previous: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Each actor's :meth:`UnitWorker.info` (after a restart: the new process); a dead actor keeps its last."""
    infos = []
    for index, actor in enumerate(actors):
        try:
            infos.append(ray.get(actor.info.remote(), timeout=60))
        except ray.exceptions.RayTaskError as exc:
            raise _task_error(exc) from None
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            infos.append({**(previous[index] if previous else {"id": f"w{index}"}), "alive": False})
    return infos


def _task_error(exc: Any) -> Exception:
    """The error to raise on the driver for a worker's exception: its ProtolensError, else an ExecutorError."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, ProtolensError):
        return cause
    return ExecutorError(f"a worker failed: {type(cause).__name__ if cause else 'error'}: {cause or exc}")
