"""The executor options of the batch commands (``--executor ray --address ...``) and the cluster progress bar.

``--executor local`` (the default) runs as before, on this machine's device pool. ``--executor ray`` runs the
same per-photo work on Ray actors (:mod:`protolens.services.ray_executor`): without ``--address`` on a private
local Ray instance bound to 127.0.0.1, with ``--address auto|HOST:6379|ray://HOST:10001`` on a cluster. The job
is resumable (photos whose outputs exist with the same result key are skipped) and keeps a manifest
(:mod:`protolens.core.job_manifest`). See ``docs/cluster.md``.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from protolens.core.atomic import stale_temporaries
from protolens.core.errors import ParamError
from protolens.core.job_manifest import JobManifest, manifest_path
from protolens.services.batch import skipped_text
from protolens.services.work import BatchJob, Tally, UnitResult, WorkUnit, pending_units

PANEL = "Executor"
EXECUTORS = ("local", "ray")
EXECUTOR = typer.Option("local", "--executor", metavar="[local|ray]", rich_help_panel=PANEL,
                        help="local: this machine's device pool. ray: Ray actors, one model each (docs/cluster.md).")
ADDRESS = typer.Option(None, "--address", rich_help_panel=PANEL,
                       help="Ray cluster to join: auto, HOST:6379 or ray://HOST:10001; default: a private "
                            "local Ray instance on 127.0.0.1.")
WORKERS = typer.Option(None, "--workers", min=1, rich_help_panel=PANEL,
                       help="Ray actors (one model each); default one per GPU, else one per CPU.")
MAX_IN_FLIGHT = typer.Option(None, "--max-in-flight", min=1, rich_help_panel=PANEL,
                             help="Photos submitted and not finished, at most; default 2 per worker.")
MAX_RETRIES = typer.Option(3, "--max-retries", min=0, rich_help_panel=PANEL,
                           help="Resubmissions of a photo whose worker died, at most.")


_OPTIONS = (("executor", EXECUTOR, str), ("address", ADDRESS, str), ("workers", WORKERS, int),
            ("max_in_flight", MAX_IN_FLIGHT, int), ("max_retries", MAX_RETRIES, int))


def with_executor_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """A typer command whose keyword-only parameter ``choice`` becomes the five executor options.

    ``func`` declares ``choice: ExecutorChoice`` (keyword-only); the returned command takes ``--executor``,
    ``--address``, ``--workers``, ``--max-in-flight`` and ``--max-retries`` in its place and calls ``func`` with
    ``choice=ExecutorChoice(...)`` (which raises ParamError for Ray options without ``--executor ray``). It can be
    wrapped again by :func:`protolens.cli.common.with_backend_options`.
    """
    signature = inspect.signature(func, eval_str=True)
    parameters: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        if parameter.name == "choice":
            parameters += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
                           for name, option, kind in _OPTIONS]
        else:
            parameters.append(parameter)

    @functools.wraps(func)
    def command(*args: Any, **values: Any) -> Any:
        picked = {name: values.pop(name) for name, _, _ in _OPTIONS}
        return func(*args, choice=ExecutorChoice(**picked), **values)

    command.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters if p.annotation is not p.empty}
    return command


@dataclass
class ExecutorChoice:
    """The executor options of one command line."""

    executor: str = "local"
    address: str | None = None
    workers: int | None = None
    max_in_flight: int | None = None
    max_retries: int = 3

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ParamError(f"--executor must be local or ray, not {self.executor!r}")
        if self.executor == "local" and (self.address or self.workers or self.max_in_flight):
            raise ParamError("--address, --workers and --max-in-flight need --executor ray")

    @property
    def ray(self) -> bool:
        return self.executor == "ray"

    def options(self) -> Any:
        from protolens.services.ray_executor import RayOptions

        return RayOptions(address=self.address, workers=self.workers, max_in_flight=self.max_in_flight,
                          max_retries=self.max_retries)


@dataclass
class RayRun:
    """What a job on Ray did: results of this run, units skipped as done before, the manifest."""

    results: list[UnitResult]
    resumed: int
    manifest: JobManifest

    @property
    def processed(self) -> int:
        return sum(result.ok for result in self.results)

    @property
    def failed(self) -> list[UnitResult]:
        return [result for result in self.results if not result.ok]

    def line(self, skipped: Sequence[tuple[Path, str]] = ()) -> str:
        """The local path's summary (``processed N, failed M[, skipped ...]``) plus resumed and retried counts."""
        text = f"processed {self.processed}, failed {len(self.failed)}"
        if self.resumed:
            text += f", already done {self.resumed}"
        retried = self.manifest.counts()["retried"]
        if retried:
            text += f", retried {retried}"
        return f"{text}, {skipped_text(list(skipped))}" if skipped else text


def run_job_on_ray(job: BatchJob, units: Sequence[WorkUnit], choice: ExecutorChoice, *,
                   out_dir: str | Path | None, write_dirs: Sequence[str | Path] = ()) -> RayRun:
    """Run ``units`` of ``job`` on Ray behind a progress bar; print one ``error:`` line per failed unit.

    Units already done (:meth:`BatchJob.is_done`) are skipped and recorded as such in the manifest. Afterwards the
    temporary files of workers killed mid-write are removed from ``out_dir`` and ``write_dirs``
    (:func:`~protolens.core.atomic.stale_temporaries`).
    """
    from protolens.services.ray_executor import import_ray, run_on_ray

    import_ray()  # without Ray: the one-line hint before any photo is hashed
    todo, done = pending_units(job, units)
    manifest = JobManifest(manifest_path(job.command, out_dir), job.command, "ray", choice.address or "local",
                           [unit.name for unit in units])
    for unit in done:
        manifest.record(unit.name, state="skipped")
    tally = Tally(total=len(units), skipped=len(done))
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task(f"{job.command} (ray)", total=len(units), completed=len(done), stats="starting workers")

        def on_workers(infos: list[dict[str, Any]]) -> None:
            bar.update(task, stats=f"{len(infos)} workers")

        def on_result(result: UnitResult, tally: Tally) -> None:
            if not result.ok:
                bar.console.print(f"error: {result.error}", markup=False, highlight=False, soft_wrap=True)
            bar.update(task, completed=tally.done + tally.failed + tally.skipped,
                       stats=f"in flight {tally.in_flight}, failed {tally.failed}, {tally.throughput:.2f}/s")

        def on_retry(name: str, worker: str, attempt: int) -> None:
            bar.console.print(f"warning: worker {worker} died while running {name}; resubmitted (attempt {attempt} "
                              f"of {choice.max_retries + 1})", markup=False, highlight=False, soft_wrap=True)

        started = time.time()
        results = run_on_ray(job, todo, manifest, choice.options(), on_result=on_result, on_workers=on_workers,
                             on_retry=on_retry, tally=tally)
    for folder in [*([out_dir] if out_dir is not None else []), *write_dirs]:
        if Path(folder).is_dir():
            for tmp in stale_temporaries(folder, started):  # left by workers killed mid-write; redone since
                tmp.unlink(missing_ok=True)
    return RayRun(results, len(done), manifest)


def finish_line(command: str, run: RayRun, skipped: Sequence[tuple[Path, str]], where: str) -> None:
    """Echo ``protolens <command>: <summary> -> <where>``; exit 1 when no photo is done (now or before)."""
    typer.echo(f"protolens {command}: {run.line(skipped)}{where}")
    if run.processed + run.resumed == 0:
        raise typer.Exit(1)
