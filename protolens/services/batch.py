"""Segment many photos: the CLI's ``protolens segment`` and the GUI's folder runs share this."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protolens.core.errors import ImageReadError, ProtolensError, SidecarError, StoreWriteError
from protolens.core.imageio import expand_paths
from protolens.core.jobs import CancelToken, Progress
from protolens.core.store import ResultStore
from protolens.services.results import FoundResult
from protolens.services.segment import Segmenter, SegmentOutcome, drain, load_image


@dataclass
class BatchSummary:
    """What a batch did: counts, per-file errors (path, one-line message) and written files."""

    processed: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)

    @property
    def line(self) -> str:
        """One-line summary, e.g. ``processed 4, failed 1``."""
        return f"processed {self.processed}, failed {len(self.failed)}"


def save_outcome(outcome: SegmentOutcome, threshold: float | None, *, out_dir: str | Path | None,
                 store: ResultStore, semantics: str = "value", probability_threshold: float | None = None) -> list[Path]:
    """Write one result: the export files into ``out_dir``, or the per-photo result store if it is None.

    ``threshold`` is read with ``semantics`` ("value" or "mass"); None takes the default of
    :meth:`SegmentOutcome.record`. Returns the written paths. Raises :class:`StoreWriteError` or
    :class:`SidecarError`.
    """
    found = FoundResult.from_outcome(outcome)
    found.record = outcome.record(threshold, semantics, probability_threshold)
    if out_dir is not None:
        return found.export(out_dir, outcome.image)
    return [found.save(store, outcome.image)]


def segment_paths(paths: Iterable[str | Path], backend_id: str, params: Mapping[str, Any] | None = None, *,
                  segmenter: Segmenter, threshold: float | None = None, out_dir: str | Path | None = None,
                  store: ResultStore | None = None, weights_path: str | Path | None = None,
                  semantics: str = "value", probability_threshold: float | None = None,
                  cancel: CancelToken | None = None, allow_random_weights: bool = False,
                  on_file: Callable[[int, int, Path], None] | None = None,
                  on_progress: Callable[[Progress], None] | None = None,
                  on_error: Callable[[Path, str], None] | None = None) -> BatchSummary:
    """Segment every photo in ``paths`` (files and folders), continuing past bad files.

    Errors tied to one file (unreadable image, corrupt sidecar, write failure) are reported through
    ``on_error`` and counted; errors that would fail every file (unknown backend, bad parameters, missing
    weights) are raised at once. ``threshold`` (read with ``semantics``, "value" or "mass") None uses each
    result's suggested threshold (value) or 0.6 (mass).
    """
    files = expand_paths(paths)
    store = store or ResultStore.from_environment()
    summary = BatchSummary()
    cancel = cancel or CancelToken()
    for index, path in enumerate(files):
        cancel.raise_if_set()
        if on_file is not None:
            on_file(index, len(files), path)
        try:
            image = load_image(path)
            outcome = drain(segmenter.run(image, backend_id, params, weights_path=weights_path, cancel=cancel,
                                          allow_random_weights=allow_random_weights), on_progress)
            summary.written += save_outcome(outcome, threshold, out_dir=out_dir, store=store, semantics=semantics,
                                            probability_threshold=probability_threshold)
            summary.processed += 1
        except (ImageReadError, SidecarError, StoreWriteError) as exc:
            summary.failed.append((path, str(exc)))
            if on_error is not None:
                on_error(path, str(exc))
        except ProtolensError:
            raise
    return summary
