"""Job primitives shared by every long-running step: progress reports and cancellation."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TypeVar

from protolens.core.errors import Cancelled

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """One progress report of a running job.

    Attributes
    ----------
    fraction : float
        Done fraction in [0, 1].
    text : str
        What the job is doing now, for a status line.
    """

    fraction: float
    text: str = ""


class CancelToken:
    """A thread-safe cancellation flag, checked by jobs between batches or tiles.

    The owner calls :meth:`cancel`; the job calls :meth:`raise_if_set`, which raises
    :class:`~protolens.core.errors.Cancelled`.
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the job to stop at its next check."""
        self._event.set()

    @property
    def is_set(self) -> bool:
        """Whether cancellation was asked for."""
        return self._event.is_set()

    def raise_if_set(self) -> None:
        """Raise :class:`Cancelled` if cancellation was asked for."""
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


def rescaled(generator: Generator[Progress, None, T], start: float, span: float,
             text: str | Callable[[Progress], str] | None = None) -> Generator[Progress, None, T]:
    """Run ``generator`` as one step of a longer job: its reports mapped into ``[start, start + span]``.

    ``text`` replaces each report's text (a string), derives it (a callable of the report), or keeps it (None).
    Returns the generator's value; if the caller stops early (closes this generator, e.g. on cancel), the inner
    generator is closed at once, so a device job it drives stops too.
    """
    try:
        while True:
            try:
                report = next(generator)
            except StopIteration as stop:
                return stop.value
            label = report.text if text is None else text if isinstance(text, str) else text(report)
            yield Progress(start + span * report.fraction, label)
    finally:
        generator.close()
