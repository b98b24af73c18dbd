"""The disk cache shared by processes at once (the GUI and a CLI batch on one cache folder).

Each role runs as ``python -c`` in its own interpreter; they start together on a "go" file. Every entry's
content is derived from its metadata (writer, index), so a reader can tell a whole entry from a torn one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from protolens.core.cache import DiskCache

ROOT = Path(__file__).resolve().parents[2]
N = 50
SHARED = 5  # keys both writers overwrite, again and again

SCRIPT = r'''
import json, os, random, sys, time
from pathlib import Path
import numpy as np
from protolens.core.cache import DiskCache

def expected(writer, i):
    shape = (64, 64) if i % 2 else (200, 200)  # 16 KiB inline in SQLite, or a 156 KiB value file
    return np.random.default_rng([writer, i]).random(shape, dtype=np.float32)

def check(found, key):
    arrays, meta = found
    good = (set(arrays) == {"v", "index"} and meta.get("key") == key
            and np.array_equal(arrays["v"], expected(meta["writer"], meta["i"]))
            and arrays["index"].tolist() == [meta["writer"], meta["i"]])
    return good

role, folder, go, stop = sys.argv[1:5]
n, shared, max_bytes = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
cache = DiskCache(folder, max_bytes=max_bytes)
while not os.path.exists(go):
    time.sleep(0.001)
if role.startswith("writer"):
    writer = int(role[len("writer"):])
    for i in range(n):
        for key in (f"w{writer}-{i}", f"shared-{i % shared}"):
            cache.put(key, {"v": expected(writer, i), "index": np.array([writer, i])},
                      {"key": key, "writer": writer, "i": i})
    print(json.dumps({"done": n}))
else:
    keys = [f"w{w}-{i}" for w in (0, 1) for i in range(n)] + [f"shared-{j}" for j in range(shared)]
    reads = hits = torn = 0
    rng = random.Random(0)
    while not os.path.exists(stop):
        key = rng.choice(keys)
        found = cache.get(key)
        reads += 1
        if found is not None:
            hits += 1
            torn += not check(found, key)
    for key in keys:  # a last pass once the writers are done
        found = cache.get(key)
        if found is not None:
            hits += 1
            torn += not check(found, key)
    print(json.dumps({"reads": reads, "hits": hits, "torn": torn}))
'''


def _expected(writer: int, i: int) -> np.ndarray:
    shape = (64, 64) if i % 2 else (200, 200)
    return np.random.default_rng([writer, i]).random(shape, dtype=np.float32)


def _run_together(tmp_path: Path, roles: list[str], max_bytes: int) -> dict[str, dict]:
    folder, go, stop = tmp_path / "cache", tmp_path / "go", tmp_path / "stop"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = {role: subprocess.Popen([sys.executable, "-c", SCRIPT, role, str(folder), str(go), str(stop),
                                     str(N), str(SHARED), str(max_bytes)],
                                    cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for role in roles}
    time.sleep(0.5)  # let the interpreters import numpy and diskcache, then start them at once
    go.touch()
    results = {}
    try:
        for role in [r for r in roles if r.startswith("writer")] + [r for r in roles if not r.startswith("writer")]:
            if not role.startswith("writer"):
                stop.touch()
            out, err = procs[role].communicate(timeout=180)
            assert procs[role].returncode == 0, f"{role} failed:\n{err[-3000:]}"
            results[role] = json.loads(out.strip().splitlines()[-1])
    finally:
        stop.touch()
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def _check(found: tuple[dict[str, np.ndarray], dict] | None, key: str) -> tuple[int, int]:
    assert found is not None, f"{key} missing"
    arrays, meta = found
    assert meta["key"] == key
    np.testing.assert_array_equal(arrays["v"], _expected(meta["writer"], meta["i"]))
    assert arrays["index"].tolist() == [meta["writer"], meta["i"]]
    return meta["writer"], meta["i"]


def test_two_writers_and_a_reader_share_one_cache_folder(tmp_path):
    results = _run_together(tmp_path, ["writer0", "writer1", "reader"], max_bytes=2 * 1024**3)

    assert results["writer0"] == results["writer1"] == {"done": N}
    cache = DiskCache(tmp_path / "cache")
    for writer in (0, 1):
        for i in range(N):
            assert _check(cache.get(f"w{writer}-{i}"), f"w{writer}-{i}") == (writer, i)
    for j in range(SHARED):  # overwritten by both: whole entries of one writer or the other, the last rounds
        writer, i = _check(cache.get(f"shared-{j}"), f"shared-{j}")
        assert writer in (0, 1) and i >= N - SHARED
    reader = results["reader"]
    assert reader["torn"] == 0
    assert reader["hits"] >= 2 * N  # at least its last pass found every entry
    assert reader["reads"] > 0


def test_two_writers_evicting_at_once_keep_the_cap_and_whole_entries(tmp_path):
    cap = 3 * 1024**2  # about 30 entries of the 200 the two writers put
    results = _run_together(tmp_path, ["writer0", "writer1", "reader"], max_bytes=cap)

    assert results["reader"]["torn"] == 0
    cache = DiskCache(tmp_path / "cache", max_bytes=cap)
    assert cache.size_bytes() <= cap
    survivors = {w: [i for i in range(N) if cache.get(f"w{w}-{i}") is not None] for w in (0, 1)}
    for writer, found in survivors.items():
        for i in found:
            _check(cache.get(f"w{writer}-{i}"), f"w{writer}-{i}")
    # The last entry written (by whichever writer finished last) is among the most recently used.
    # (Which others survive depends on the interleaving and on what the reader refreshed.)
    assert N - 1 in survivors[0] or N - 1 in survivors[1]
    assert len(survivors[0]) + len(survivors[1]) < 2 * N  # eviction did happen
