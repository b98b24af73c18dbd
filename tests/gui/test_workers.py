"""The job runner reports every job's end, whatever its generator raises."""

from __future__ import annotations

from protolens.gui.workers import JobRunner, JobRuntimeError


def test_a_runtime_error_in_a_generator_job_is_reported_and_the_job_ends(qtbot) -> None:
    runner = JobRunner()
    errors: list[BaseException] = []

    def job():
        yield 0.5
        raise RuntimeError("CUDA error: device-side assert")  # what torch raises

    submitted = runner.submit(job, on_error=errors.append)
    qtbot.waitUntil(lambda: submitted.done, timeout=5000)
    assert len(errors) == 1 and isinstance(errors[0], JobRuntimeError)
    assert "device-side assert" in str(errors[0])
    assert runner.active() == []


def test_generator_results_still_come_back(qtbot) -> None:
    runner = JobRunner()
    results: list[int] = []

    def job():
        yield 0.5
        return 42

    submitted = runner.submit(job, on_result=results.append)
    qtbot.waitUntil(lambda: submitted.done, timeout=5000)
    assert results == [42]
