"""One job at a time with a progress bar and a Cancel button (a mixin of the Explain and epochs views)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtWidgets import QProgressBar, QPushButton

from protolens.core.errors import Cancelled, ProtolensError
from protolens.core.jobs import CancelToken
from protolens.gui.workers import Job


class JobProgress:
    """The view's current job on its ``jobs`` (:class:`~protolens.gui.workers.JobRunner`), its progress bar and
    Cancel button; failures and cancellations go to ``controller.message``.

    The view calls :meth:`_build_progress` and lays out ``progress`` and ``cancel_button``, then starts its jobs
    with :meth:`start_job`. Reports of a job the view has since replaced are ignored. :meth:`_job_failed` is the
    hook of a failure (not a cancellation), after the message bar has it.
    """

    job: Job | None = None
    jobs: Any
    controller: Any

    def _build_progress(self, max_width: int) -> None:
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setMaximumWidth(max_width)
        self.progress.setFormat("%p%")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)

    def start_job(self, func: Callable[..., Any], *args: Any, what: str, text: str,
                  on_result: Callable[[Any], None], **kwargs: Any) -> None:
        """Submit ``func(*args, cancel=token, **kwargs)`` as the current job (the one Cancel stops), progress shown
        as "``text`` n%"; ``what`` names it in the message bar ("<what> cancelled", "<what> failed: …").
        A running job is not cancelled here (the caller does, when the new job replaces it)."""
        token = CancelToken()
        self._set_running(True, text)
        self.job = self.jobs.submit(
            func, *args, cancel=token, token=token, on_result=on_result,
            on_progress=lambda report: self._progress(token, report),
            on_error=lambda exc: self._failed(token, exc, what),
            on_finished=lambda: self._finished(token), **kwargs)

    def cancel(self) -> None:
        """Stop the running job."""
        if self.job is not None and not self.job.done:
            self.job.cancel()

    def _set_running(self, running: bool, text: str = "") -> None:
        self.progress.setVisible(running)
        self.cancel_button.setVisible(running)
        if running:
            self.progress.setValue(0)
            self.progress.setFormat(f"{text} %p%")

    def _current(self, token: CancelToken) -> bool:
        return self.job is not None and self.job.token is token

    def _progress(self, token: CancelToken, report: Any) -> None:
        if self._current(token):
            self.progress.setValue(round(1000 * report.fraction))
            self.progress.setFormat(f"{report.text} %p%")

    def _finished(self, token: CancelToken) -> None:
        if self._current(token):
            self._set_running(False)

    def _failed(self, token: CancelToken, exc: BaseException, what: str) -> None:
        if not self._current(token):
            return  # a job this view replaced
        if isinstance(exc, Cancelled):
            self.controller.message.emit(f"{what} cancelled", "info")
            return
        text = str(exc) if isinstance(exc, ProtolensError) else f"{type(exc).__name__}: {exc}"
        self.controller.message.emit(f"{what} failed: {text}", "error")
        self._job_failed(f"{what} failed: {text}")

    def _job_failed(self, message: str) -> None:
        """Hook: the current job failed with ``message`` (already in the message bar)."""
