"""The job manifest (what happened to every unit, written atomically) and the sweep of stale temporaries."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from protolens.core import job_manifest
from protolens.core.atomic import stale_temporaries
from protolens.core.job_manifest import FILE_NAME, SCHEMA, JobManifest, manifest_path

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:  # monotonic seconds: the uptime, usually large
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(job_manifest, "time", SimpleNamespace(monotonic=fake))
    return fake


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_counts_per_state_and_retried_summed_over_units(tmp_path):
    manifest = JobManifest(tmp_path / FILE_NAME, "segment", "ray", "local", ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    assert manifest.counts() == {"pending": 4, "done": 0, "failed": 0, "skipped": 0, "retried": 0}
    record = manifest.record("a.jpg", state="done", attempts=3, retried=2, worker="w1", outputs=["out/a.json"])
    assert record is manifest.units["a.jpg"]
    assert (record.state, record.attempts, record.retried, record.worker, record.outputs) == (
        "done", 3, 2, "w1", ["out/a.json"])
    manifest.record("b.jpg", state="failed", attempts=1, error="b.jpg: not an image")
    manifest.record("c.jpg", state="skipped")
    manifest.record("d.jpg", attempts=2, retried=1)  # still running after one retry
    assert manifest.counts() == {"pending": 1, "done": 1, "failed": 1, "skipped": 1, "retried": 3}
    with pytest.raises(KeyError):
        manifest.record("not-a-unit.jpg", state="done")


def test_flush_writes_at_most_every_interval_unless_forced(tmp_path, clock):
    path = tmp_path / "out" / FILE_NAME  # the folder does not exist yet
    manifest = JobManifest(path, "segment", "ray", "local", ["a.jpg", "b.jpg"], interval=5.0)
    manifest.flush()
    assert read(path)["counts"]["pending"] == 2  # the first flush writes
    manifest.record("a.jpg", state="done")
    clock.now += 4.9
    manifest.flush()
    assert read(path)["counts"]["done"] == 0  # too soon: not rewritten
    clock.now += 0.2
    manifest.flush()
    assert read(path)["counts"]["done"] == 1  # interval passed
    manifest.record("b.jpg", state="failed", error="broken")
    clock.now += 0.1
    manifest.flush()
    assert read(path)["units"]["b.jpg"]["state"] == "pending"
    manifest.flush(force=True)
    assert read(path)["units"]["b.jpg"] == {"state": "failed", "attempts": 0, "retried": 0, "worker": None,
                                             "error": "broken", "outputs": [], "seconds": None}


def test_file_is_the_whole_document_replaced_atomically(tmp_path, clock):
    path = tmp_path / FILE_NAME
    manifest = JobManifest(path, "prototypes build", "ray", "ray://head:10001", ["s0", "s1"], interval=1.0)
    manifest.workers = [{"id": "w0", "pid": 1234, "node": "127.0.0.1", "device": "cpu", "memory_rss": 5}]
    manifest.record("s0", state="done", attempts=1, worker="w0", outputs=["o/s0.npz"], seconds=0.5)
    manifest.flush(force=True)
    first = read(path)
    assert first == manifest.to_json() | {"updated": first["updated"]}
    assert first["schema"] == SCHEMA and first["command"] == "prototypes build"
    assert (first["executor"], first["address"]) == ("ray", "ray://head:10001")
    assert ISO_UTC.match(first["started"]) and ISO_UTC.match(first["updated"]) and first["finished"] is None
    assert first["workers"] == manifest.workers
    assert list(first["units"]) == ["s0", "s1"]  # job order
    assert first["units"]["s0"] == {"state": "done", "attempts": 1, "retried": 0, "worker": "w0", "error": None,
                                    "outputs": ["o/s0.npz"], "seconds": 0.5}
    assert first["counts"] == {"pending": 1, "done": 1, "failed": 0, "skipped": 0, "retried": 0}
    # a reader holding the old file keeps reading a complete document; the path shows the new one
    with open(path, encoding="utf-8") as reader:
        manifest.record("s1", state="done", attempts=1)
        manifest.flush(force=True)
        assert json.loads(reader.read())["counts"]["done"] == 1
    assert read(path)["counts"]["done"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE_NAME]  # no temporary left behind


def test_manifest_path_in_the_output_folder_else_the_current_folder(tmp_path, monkeypatch):
    assert manifest_path("segment", tmp_path / "out") == tmp_path / "out" / "protolens-manifest.json"
    assert manifest_path("segment", str(tmp_path)) == tmp_path / FILE_NAME
    monkeypatch.chdir(tmp_path)
    assert manifest_path("segment", None) == tmp_path / "protolens-segment-manifest.json"
    assert manifest_path("prototypes build", None) == tmp_path / "protolens-prototypes-build-manifest.json"


def test_finish_stamps_the_end_and_writes_at_once(tmp_path, clock):
    path = tmp_path / FILE_NAME
    manifest = JobManifest(path, "segment", "ray", "local", ["a.jpg"], interval=3600.0)
    manifest.flush()
    assert read(path)["finished"] is None
    manifest.record("a.jpg", state="done", attempts=1)
    clock.now += 1.0  # well inside the interval: only a forced write reaches the file
    manifest.finish()
    document = read(path)
    assert manifest.finished is not None and document["finished"] == manifest.finished
    assert ISO_UTC.match(document["finished"]) and document["finished"] >= document["started"]
    assert document["counts"]["done"] == 1


# --- stale temporaries of atomic writes -----------------------------------------------------------------------


def touch(path: Path, mtime: float, data: bytes = b"x") -> Path:
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def test_stale_temporary_of_a_redone_write_is_listed(tmp_path):
    since = 1_000_000.0
    touch(tmp_path / "a.heatmap.npy", since + 200)
    stale = touch(tmp_path / ".a.heatmap.npy.k2j3h4_x.tmp", since + 100)  # mkstemp's name: .<name>.<random>.tmp
    same_second = touch(tmp_path / ".a.heatmap.npy.q9w8e7.tmp", since + 200)
    assert sorted(stale_temporaries(tmp_path, since)) == sorted([stale, same_second])
    assert stale_temporaries(str(tmp_path), since)  # a str folder works too


@pytest.mark.parametrize("case", ["final missing", "older than since", "newer than final", "not a temporary"])
def test_temporaries_that_may_be_live_writes_are_never_listed(tmp_path, case):
    since = 1_000_000.0
    touch(tmp_path / "a.mask.png", since + 200)
    if case == "final missing":
        touch(tmp_path / ".b.mask.png.abc123.tmp", since + 100)  # b.mask.png was never completed
    elif case == "older than since":
        touch(tmp_path / ".a.mask.png.abc123.tmp", since - 1)  # another program's (or job's) write
    elif case == "newer than final":
        touch(tmp_path / ".a.mask.png.abc123.tmp", since + 300)  # a write in progress right now
    else:
        touch(tmp_path / "a.mask.png.abc123.tmp", since + 100)  # not hidden: not atomic_writer's
    assert stale_temporaries(tmp_path, since) == []
