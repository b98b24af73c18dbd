"""Device pool (models/pool.py): jobs on per-device worker threads, progress streaming, errors, job counts,
device choice, the CPU fallback after running out of device memory, and cancellation by the caller."""

from __future__ import annotations

import threading

import pytest

from protolens.core.errors import Cancelled, DeviceOutOfMemoryError
from protolens.core.jobs import CancelToken, Progress
from protolens.models.device import describe_device
from protolens.models.pool import DevicePool

WAIT = 30.0  # seconds: only a guard against a hung test, never a timing assertion


@pytest.fixture
def make_pool():
    pools: list[DevicePool] = []

    def make(devices):
        pool = DevicePool(devices)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.shutdown()


def drive(generator):
    progress = []
    while True:
        try:
            progress.append(next(generator))
        except StopIteration as stop:
            return progress, stop.value


def _wait_until(condition) -> None:
    done = threading.Event()
    for _ in range(int(WAIT / 0.01)):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError("condition never became true")


def test_job_runs_on_the_device_worker_and_streams_progress_in_order(make_pool):
    pool = make_pool(["cpu"])
    threads = []

    def job(device):
        threads.append(threading.current_thread())
        for step in range(5):
            yield Progress(step / 5, f"{device} step {step}")
        return {"device": device, "answer": 42}

    progress, value = drive(pool.run(job, cancel=CancelToken()))
    assert value == {"device": "cpu", "answer": 42}
    assert [p.text for p in progress] == [f"cpu step {step}" for step in range(5)]
    assert [p.fraction for p in progress] == [step / 5 for step in range(5)]
    assert threads[0] is not threading.current_thread()
    assert threads[0].name.startswith("protolens-cpu")

    # A model is only ever used by its device's thread: the next job on that device runs on the same one.
    drive(pool.run(job, cancel=CancelToken()))
    assert threads[1] is threads[0]


def test_job_errors_reach_the_caller_with_their_type(make_pool):
    pool = make_pool(["cpu"])

    class BadWeights(ValueError):
        pass

    def job(device):
        yield Progress(0.5, "half way")
        raise BadWeights(f"broken on {device}")

    warnings: list[str] = []
    generator = pool.run(job, cancel=CancelToken(), warnings=warnings)
    assert next(generator).text == "half way"
    with pytest.raises(BadWeights, match="broken on cpu"):
        next(generator)
    assert warnings == []
    # The worker survives a failed job.
    assert drive(pool.run(lambda device: iter(()), cancel=CancelToken()))[1] is None


def test_status_counts_running_and_queued_jobs(make_pool):
    pool = make_pool(["cpu"])
    release = threading.Event()

    def held(device):
        yield Progress(0.0, "started")
        assert release.wait(WAIT)
        return "first"

    def quick(device):
        yield Progress(1.0, "quick")
        return "second"

    (idle,) = pool.status()
    assert (idle.device, idle.running, idle.queued) == ("cpu", 0, 0)
    assert idle.description.startswith("cpu")

    first = pool.run(held, cancel=CancelToken())
    assert next(first).text == "started"  # the job is now inside the worker
    (busy,) = pool.status()
    assert (busy.running, busy.queued) == (1, 0)

    second_result = []
    consumer = threading.Thread(target=lambda: second_result.append(drive(pool.run(quick, cancel=CancelToken()))[1]))
    consumer.start()
    _wait_until(lambda: pool.status()[0].queued == 1)
    assert pool.status()[0].running == 1

    release.set()
    assert drive(first)[1] == "first"
    consumer.join(WAIT)
    assert second_result == ["second"]
    # Once the callers have their results, nothing is counted as running or queued any more.
    (after,) = pool.status()
    assert (after.running, after.queued) == (0, 0)


def test_choose_prefers_the_given_device_else_the_least_busy_gpu(make_pool):
    assert make_pool(["cpu"]).choose() == "cpu"
    assert make_pool(["cpu"]).choose("cuda:0") == "cpu"  # not in the pool

    pool = make_pool(["cuda:0", "cuda:1", "cpu"])
    assert pool.choose() == "cuda:0"  # all idle: the first GPU
    assert pool.choose("cuda:1") == "cuda:1"
    assert pool.choose("cpu") == "cpu"
    assert pool.choose("cuda:7") == "cuda:0"  # unknown preference: least busy GPU

    release = threading.Event()

    def held(device):
        yield Progress(0.0, device)
        assert release.wait(WAIT)
        return device

    busy = pool.run(held, cancel=CancelToken(), prefer="cuda:0")  # no CUDA is touched: jobs are plain generators
    try:
        assert next(busy).text == "cuda:0"
        assert pool.choose() == "cuda:1"  # cuda:0 has a running job
        assert pool.choose("cuda:0") == "cuda:0"  # an explicit preference still wins
    finally:
        release.set()
    assert drive(busy)[1] == "cuda:0"


def test_out_of_memory_falls_back_to_the_cpu(make_pool):
    pool = make_pool(["cuda:fake", "cpu"])
    tried = []

    def job(device):
        tried.append((device, threading.current_thread().name))
        yield Progress(0.1, f"loading on {device}")
        if device == "cuda:fake":
            raise DeviceOutOfMemoryError("cuda:fake ran out of memory with a batch of one window")
        return f"result from {device}"

    warnings: list[str] = []
    progress, value = drive(pool.run(job, cancel=CancelToken(), warnings=warnings))
    assert value == "result from cpu"
    assert [device for device, _name in tried] == ["cuda:fake", "cpu"]
    assert tried[0][1].startswith("protolens-cuda:fake") and tried[1][1].startswith("protolens-cpu")
    texts = [p.text for p in progress]
    fallback = [text for text in texts if "CPU" in text]
    assert len(fallback) == 1 and "out of memory" in fallback[0]
    assert texts.index(fallback[0]) == 1  # after the GPU attempt's progress, before the CPU's
    assert texts[-1] == "loading on cpu"
    assert len(warnings) == 1 and "CPU" in warnings[0]  # the run's own warnings, not the pool's


def test_out_of_memory_on_the_cpu_or_without_a_cpu_is_raised(make_pool):
    def job(device):
        yield Progress(0.0, device)
        raise DeviceOutOfMemoryError(f"{device} ran out of memory with a batch of one crop")

    for devices in (["cpu"], ["cuda:fake"]):
        pool = make_pool(devices)
        warnings: list[str] = []
        with pytest.raises(DeviceOutOfMemoryError, match=devices[0]):
            drive(pool.run(job, cancel=CancelToken(), warnings=warnings))
        assert warnings == []

    tried = []

    def always(device):
        tried.append(device)
        raise DeviceOutOfMemoryError(f"{device} ran out of memory")
        yield  # pragma: no cover - makes this a generator

    pool = make_pool(["cuda:fake", "cpu"])
    with pytest.raises(DeviceOutOfMemoryError, match="cpu ran out"):
        drive(pool.run(always, cancel=CancelToken()))
    assert tried == ["cuda:fake", "cpu"]  # one fallback, no loop


def test_closing_the_callers_generator_cancels_the_job(make_pool):
    pool = make_pool(["cpu"])
    cancel = CancelToken()
    go = threading.Event()
    stopped = threading.Event()
    steps = []

    def job(device):
        try:
            yield Progress(0.0, "first")
            assert go.wait(WAIT)
            for step in range(1000):
                cancel.raise_if_set()
                steps.append(step)
                yield Progress(step / 1000, "working")
        except Cancelled:
            stopped.set()
            raise
        return "finished"

    generator = pool.run(job, cancel=cancel)
    assert next(generator).text == "first"
    generator.close()  # the caller goes away (e.g. the user closed the view)
    assert cancel.is_set
    go.set()
    assert stopped.wait(WAIT)  # the job stopped at its next check
    assert steps == []

    # The worker is free again for the next job.
    assert drive(pool.run(lambda device: iter(()), cancel=CancelToken()))[1] is None


@pytest.mark.parametrize("device", ["cuda:fake", "cuda:99", "cuda:0"])
def test_describe_device_never_crashes(device):
    description = describe_device(device)
    assert description.startswith(device)


def test_status_describes_devices_without_cuda(make_pool):
    statuses = make_pool(["cuda:fake", "cpu"]).status()
    assert [s.device for s in statuses] == ["cuda:fake", "cpu"]
    assert statuses[0].description == "cuda:fake"
    assert "threads" in statuses[1].description
