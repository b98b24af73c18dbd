"""Batch jobs on a local Ray instance (2 CPUs, bound to 127.0.0.1): the same bytes as the local executor,
resumable, bad photos reported by name, a killed worker's photos redone exactly once, loopback only."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from PIL import Image

from protolens.core.atomic import stale_temporaries
from protolens.core.job_manifest import FILE_NAME, JobManifest, manifest_path
from protolens.core.params import make_params, params_to_dict
from protolens.core.store import ResultStore
from protolens.models.registry import Registry
from protolens.services.batch import segment_paths
from protolens.services.batch_jobs import SegmentJob, photo_units
from protolens.services.segment import Segmenter

pytest.importorskip("ray")

from protolens.cli.executor import ExecutorChoice, run_job_on_ray  # noqa: E402
from protolens.services.ray_executor import RayOptions, run_on_ray  # noqa: E402
from tests.ray_support import private_ray, without_stamps  # noqa: E402

QUADRATS = Path(__file__).resolve().parents[2] / "resources" / "samples" / "quadrats"
VIT = {"model": "vit_small_patch16_224.dino", "long_side": 224}


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One private Ray instance for the module. Its workers' heatmap cache is a folder of their own (emptied
    before each test), never the local runs' cache."""
    worker_cache = tmp_path_factory.mktemp("ray-worker-cache")
    with private_ray(worker_cache) as ray:
        yield SimpleNamespace(ray=ray, cache=worker_cache)


@pytest.fixture
def fresh_caches(local_ray, tmp_path, monkeypatch):
    """Empty worker cache, and a separate cache for local runs in this process: no run reads another's heatmaps."""
    shutil.rmtree(local_ray.cache, ignore_errors=True)
    local_ray.cache.mkdir()
    monkeypatch.setenv("PROTOLENS_CACHE_DIR", str(tmp_path / "local-cache"))
    return local_ray


def full_params(backend: str, values: dict | None = None) -> dict:
    """The backend's parameters with defaults filled in, as the CLI passes them."""
    return params_to_dict(make_params(Registry.discover().manifest(backend).params, values or {}))


def run_local(paths, out: Path, backend: str, params: dict, **options):
    return segment_paths(paths, backend, params, segmenter=Segmenter(Registry.discover(), device="cpu"),
                         out_dir=out, store=ResultStore.from_environment(), **options)


def new_manifest(job: SegmentJob, units, out: Path) -> JobManifest:
    return JobManifest(manifest_path(job.command, out), job.command, "ray", "local", [u.name for u in units])


def output_names(folder: Path) -> list[str]:
    """Every entry of an output folder (hidden ones too), but the manifest."""
    return sorted(p.name for p in folder.iterdir() if p.name != FILE_NAME)


def assert_same_outputs(local: Path, ray: Path) -> None:
    """Same file names; every file byte-identical but JSON documents, equal without their time stamps."""
    names = output_names(local)
    assert names and output_names(ray) == names
    for name in names:
        if name.endswith(".json"):
            a, b = (json.loads((folder / name).read_text(encoding="utf-8")) for folder in (local, ray))
            assert without_stamps(a) == without_stamps(b), name
        else:
            assert (local / name).read_bytes() == (ray / name).read_bytes(), name


def read_manifest(folder: Path) -> dict:
    return json.loads((folder / FILE_NAME).read_text(encoding="utf-8"))


def expected_files(stems) -> list[str]:
    return sorted(f"{stem}.{suffix}" for stem in stems for suffix in ("json", "mask.png", "heatmap.npy"))


def test_ray_writes_the_same_bytes_as_the_local_executor(fresh_caches, tmp_path):
    params = full_params("vegetation-index")
    summary = run_local([QUADRATS], tmp_path / "local", "vegetation-index", params)
    assert summary.processed == 4 and not summary.failed
    out = tmp_path / "ray"
    units, _ = photo_units([QUADRATS])
    job = SegmentJob("vegetation-index", params, out_dir=out)
    results = run_on_ray(job, units, new_manifest(job, units, out), RayOptions(workers=2))
    assert sorted(Path(r.name).name for r in results if r.ok) == sorted(p.name for p in QUADRATS.glob("*.jpg"))
    assert output_names(tmp_path / "local") == expected_files(p.stem for p in QUADRATS.glob("*.jpg"))
    assert_same_outputs(tmp_path / "local", out)
    manifest = read_manifest(out)
    assert manifest["counts"] == {"pending": 0, "done": 4, "failed": 0, "skipped": 0, "retried": 0}
    assert manifest["finished"] is not None and len(manifest["workers"]) == 2
    for name, unit in manifest["units"].items():
        assert unit["state"] == "done" and unit["attempts"] == 1 and unit["worker"] in ("w0", "w1"), name
        assert sorted(Path(p).name for p in unit["outputs"]) == expected_files([Path(name).stem]), name


def test_a_rerun_does_nothing_and_a_new_threshold_reruns(fresh_caches, tmp_path):
    out = tmp_path / "out"
    units, _ = photo_units([QUADRATS])
    job = SegmentJob("vegetation-index", full_params("vegetation-index"), out_dir=out)
    first = run_job_on_ray(job, units, ExecutorChoice("ray", workers=2), out_dir=out)
    assert (first.processed, len(first.failed), first.resumed) == (4, 0, 0)
    mtimes = {name: (out / name).stat().st_mtime_ns for name in output_names(out)}
    assert len(mtimes) == 12
    time.sleep(0.05)
    again = run_job_on_ray(job, units, ExecutorChoice("ray", workers=2), out_dir=out)
    assert again.results == [] and again.resumed == 4 and again.line() == "processed 0, failed 0, already done 4"
    assert {name: (out / name).stat().st_mtime_ns for name in output_names(out)} == mtimes
    manifest = read_manifest(out)
    assert manifest["counts"] == {"pending": 0, "done": 0, "failed": 0, "skipped": 4, "retried": 0}
    assert {unit["state"] for unit in manifest["units"].values()} == {"skipped"}
    assert all(unit["attempts"] == 0 for unit in manifest["units"].values())

    other = SegmentJob("vegetation-index", full_params("vegetation-index"), threshold=0.25, out_dir=out)
    rerun = run_job_on_ray(other, units, ExecutorChoice("ray", workers=2), out_dir=out)
    assert (rerun.processed, rerun.resumed) == (4, 0)
    for stem in (p.stem for p in QUADRATS.glob("*.jpg")):
        assert json.loads((out / f"{stem}.json").read_text())["threshold"]["value"] == 0.25
    assert read_manifest(out)["counts"]["done"] == 4


def _folder_with_a_broken_photo(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(QUADRATS / "green_meadow.jpg", folder / "a_meadow.jpg")
    shutil.copy(QUADRATS / "forget_me_not.jpg", folder / "b_forget.jpg")
    (folder / "c_broken.jpg").write_bytes((QUADRATS / "moss_carpet.jpg").read_bytes()[:3000])  # truncated JPEG
    return folder


def test_a_bad_photo_is_reported_by_name_and_the_others_are_done(fresh_caches, tmp_path):
    folder = _folder_with_a_broken_photo(tmp_path)
    out = tmp_path / "out"
    units, _ = photo_units([folder])
    job = SegmentJob("vegetation-index", full_params("vegetation-index"), out_dir=out)
    results = {Path(r.name).name: r for r in run_on_ray(job, units, new_manifest(job, units, out),
                                                         RayOptions(workers=2))}
    assert sorted(results) == ["a_meadow.jpg", "b_forget.jpg", "c_broken.jpg"]
    broken = results["c_broken.jpg"]
    assert not broken.ok and "c_broken.jpg" in broken.error and "\n" not in broken.error
    assert results["a_meadow.jpg"].ok and results["b_forget.jpg"].ok
    assert output_names(out) == expected_files(["a_meadow", "b_forget"])
    manifest = read_manifest(out)
    assert manifest["counts"] == {"pending": 0, "done": 2, "failed": 1, "skipped": 0, "retried": 0}
    unit = manifest["units"][str(folder / "c_broken.jpg")]
    assert unit["state"] == "failed" and unit["error"] == broken.error and unit["outputs"] == []
    assert manifest["units"][str(folder / "a_meadow.jpg")]["state"] == "done"


def _eight_photos(folder: Path) -> Path:
    """Eight distinct small photos (two sizes of each quadrat), so none is another's cache hit."""
    folder.mkdir()
    for index, size in enumerate((320, 304)):
        for photo in sorted(QUADRATS.glob("*.jpg")):
            with Image.open(photo) as image:
                image.thumbnail((size, size))
                image.convert("RGB").save(folder / f"{photo.stem}_{index}.jpg", quality=90)
    return folder


def test_a_killed_worker_loses_nothing_and_duplicates_nothing(fresh_caches, tmp_path):
    photos = _eight_photos(tmp_path / "photos")
    params = full_params("vit-attention", VIT)
    out = tmp_path / "ray"
    units, _ = photo_units([photos])
    job = SegmentJob("vit-attention", params, out_dir=out, allow_random_weights=True, command="attention")
    manifest = new_manifest(job, units, out)
    pids: dict[str, int] = {}
    killed: list[int] = []
    reported: list[str] = []

    def on_workers(infos):
        pids.update({info["id"]: info["pid"] for info in infos})

    def on_result(result, tally):
        reported.append(result.name)
        if not killed:  # kill the worker that has not finished a photo yet: it is mid-photo, with more queued
            victim = next(pid for worker, pid in pids.items() if worker != result.worker)
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    started = time.time()
    results = run_on_ray(job, units, manifest, RayOptions(workers=2, max_in_flight=4), on_result=on_result,
                         on_workers=on_workers)
    assert len(pids) == 2 and len(killed) == 1 and not psutil.pid_exists(killed[0])
    leftovers = sorted(out.glob(".*.tmp"))
    assert leftovers == sorted(stale_temporaries(out, started))  # only writes that were redone (the CLI sweeps them)
    for tmp in leftovers:
        tmp.unlink()
    assert output_names(out) == expected_files(Path(u.name).stem for u in units)  # each once, no name-2
    assert sorted(r.name for r in results) == sorted(u.name for u in units) and all(r.ok for r in results)
    assert sorted(reported) == sorted(u.name for u in units)  # each photo reported once, retried ones too
    document = read_manifest(out)
    counts = document["counts"]
    assert (counts["done"], counts["failed"], counts["pending"]) == (8, 0, 0) and counts["retried"] >= 1
    for name, unit in document["units"].items():
        assert unit["state"] == "done" and unit["attempts"] == 1 + unit["retried"], name
    assert sum(unit["retried"] for unit in document["units"].values()) == counts["retried"]
    restarted = {worker["id"]: worker.get("pid") for worker in document["workers"]}
    assert killed[0] not in restarted.values()  # Ray restarted the killed actor (a new process)

    local = tmp_path / "local"
    summary = run_local([photos], local, "vit-attention", params, allow_random_weights=True)
    assert summary.processed == 8
    assert_same_outputs(local, out)


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _session_sockets() -> dict[str, list]:
    """Every inet socket of this process and of every process it started (GCS, raylet, agents, workers)."""
    sockets = {}
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            sockets[f"{process.pid} {process.name()}"] = process.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
    return sockets


def test_every_ray_socket_is_on_the_loopback_address(fresh_caches, tmp_path):
    ray = fresh_caches.ray
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    session = ray._private.worker._global_node.get_session_dir_path()
    out = tmp_path / "out"
    units, _ = photo_units([QUADRATS])
    job = SegmentJob("vegetation-index", full_params("vegetation-index"), out_dir=out)
    snapshots, workers = [], []
    results = run_on_ray(job, units, new_manifest(job, units, out), RayOptions(workers=2),
                         on_workers=workers.extend, on_result=lambda result, tally: snapshots.append(_session_sockets()))
    assert len(results) == 4 and len(snapshots) == 4
    names = {key.split(" ", 1)[1] for snapshot in snapshots for key in snapshot}
    assert {"gcs_server", "raylet"} <= names  # the Ray servers are this session's children
    worker_pids = {worker["pid"] for worker in workers}
    assert all(any(key.startswith(f"{pid} ") for key in snapshots[0]) for pid in worker_pids)
    assert all(worker["node"] == "127.0.0.1" for worker in workers)
    for child in psutil.Process().children(recursive=True):  # the session's processes are all ours
        try:
            command = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "session_" in command and "/tmp/ray/" in command:
            assert session in command, command
    listening = 0
    for snapshot in snapshots:
        for process, connections in snapshot.items():
            for conn in connections:
                if conn.status == psutil.CONN_LISTEN:
                    listening += 1
                    assert _loopback(conn.laddr.ip), (process, conn)
                if conn.raddr:
                    assert _loopback(conn.raddr.ip), (process, conn)
                if conn.laddr and conn.laddr.port:
                    assert _loopback(conn.laddr.ip), (process, conn)
    assert listening >= 4  # GCS, raylet (2), workers: the check saw the servers
