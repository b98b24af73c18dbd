"""Segment many photos: the CLI's ``protolens segment`` and the GUI's folder runs share this."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protolens.core.errors import ImageReadError, ProtolensError, SidecarError, StoreWriteError
from protolens.core.imageio import scan_paths
from protolens.core.jobs import CancelToken, Progress
from protolens.core.store import ResultStore
from protolens.services.results import FoundResult
from protolens.services.segment import Segmenter, SegmentOutcome, drain, load_image

SKIPPED_NAMES_SHOWN = 10
"""How many skipped files :attr:`BatchSummary.line` names before it says ``and N more``."""


@dataclass
class BatchSummary:
    """What a batch did: counts, per-file errors and skipped folder entries (path, one-line reason), written files.

    ``skipped`` holds the entries of the given folders that were not read (see
    :class:`protolens.core.imageio.ScanResult`: other file types, broken links, sub-folders).
    """

    processed: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def line(self) -> str:
        """One-line summary, e.g. ``processed 4, failed 1``; skipped entries are added when there are any.

        ``processed 3, failed 0, skipped 2: a.svg (not a supported image), x.jpg (a folder)``; at most
        :data:`SKIPPED_NAMES_SHOWN` names are listed, then ``and N more`` (see :func:`skipped_text`).
        """
        text = f"processed {self.processed}, failed {len(self.failed)}"
        return f"{text}, {skipped_text(self.skipped)}" if self.skipped else text


def skipped_text(skipped: list[tuple[Path, str]], label: str = "skipped") -> str:
    """Count and name skipped files: ``skipped 2: a.svg (not a supported image), x.jpg (a folder)``.

    Parameters
    ----------
    skipped : list of (Path, str)
        The skipped entries and their reasons, in the order to list them.
    label : str
        The word before the count.

    Returns
    -------
    str
        The label, the count, then up to :data:`SKIPPED_NAMES_SHOWN` file names (without folder) with their
        reasons in brackets, then ``and N more`` for the rest.
    """
    names = [f"{path.name} ({reason})" for path, reason in skipped[:SKIPPED_NAMES_SHOWN]]
    more = len(skipped) - len(names)
    if more:
        names.append(f"and {more} more")
    return f"{label} {len(skipped)}: {', '.join(names)}"


def export_stems(paths: list[Path], *, reserved: Iterable[str] = ()) -> dict[Path, str]:
    """The name stem of each photo's export files (``<stem>.mask.png``, ``<stem>.heatmap.npy``, ``<stem>.json``).

    The rule, so that no photo of a batch overwrites another's files in the one output folder:

    1. the photo's stem (``meadow.jpg`` -> ``meadow``), unless
    2. two or more photos of the batch share that stem, compared case-insensitively (``photo.bmp`` and
       ``photo.webp``, or ``Photo.jpg`` and ``photo.png``): then each of them uses its full file name
       (``photo.bmp`` -> ``photo.bmp``, files ``photo.bmp.mask.png`` ...);
    3. a name still taken, compared case-insensitively (the same file name in two folders of the batch),
       gets ``-2``, ``-3``, ... in batch order (``photo.jpg``, ``photo.jpg-2``).

    Parameters
    ----------
    paths : list of Path
        The photos of one batch, in batch order.
    reserved : iterable of str
        Stems already used by files of the whole batch (``provenance``): a photo with such a stem uses its
        full file name, as if its stem clashed.

    Returns
    -------
    dict of Path to str
        Each path's stem, all distinct case-insensitively (so distinct on case-insensitive file systems too).
    """
    counts: dict[str, int] = {}
    for path in paths:
        counts[path.stem.lower()] = counts.get(path.stem.lower(), 0) + 1
    reserved = {name.lower() for name in reserved}
    taken = set(reserved)
    stems: dict[Path, str] = {}
    for path in paths:
        if path in stems:
            continue
        unique = counts[path.stem.lower()] == 1 and path.stem.lower() not in reserved
        stem = path.stem if unique else path.name
        candidate, number = stem, 1
        while candidate.lower() in taken:
            number += 1
            candidate = f"{stem}-{number}"
        taken.add(candidate.lower())
        stems[path] = candidate
    return stems


def save_outcome(outcome: SegmentOutcome, threshold: float | None, *, out_dir: str | Path | None,
                 store: ResultStore, semantics: str = "value", probability_threshold: float | None = None,
                 stem: str | None = None) -> list[Path]:
    """Write one result: the export files into ``out_dir``, or the per-photo result store if it is None.

    ``threshold`` is read with ``semantics`` ("value" or "mass"); None takes the default of
    :meth:`SegmentOutcome.record`. ``stem`` names the export files (default the photo's stem; a batch
    passes :func:`export_stems`); the store ignores it. Returns the written paths. Raises
    :class:`StoreWriteError` or :class:`SidecarError`.
    """
    found = FoundResult.from_outcome(outcome)
    found.record = outcome.record(threshold, semantics, probability_threshold)
    if out_dir is not None:
        return found.export(out_dir, outcome.image, stem=stem)
    return [found.save(store, outcome.image)]


def segment_file(path: Path, stem: str, backend_id: str, params: Mapping[str, Any] | None, *, segmenter: Segmenter,
                 threshold: float | None, out_dir: str | Path | None, store: ResultStore,
                 weights_path: str | Path | None = None, semantics: str = "value",
                 probability_threshold: float | None = None, cancel: CancelToken | None = None,
                 allow_random_weights: bool = False, on_progress: Callable[[Progress], None] | None = None,
                 on_outcome: Callable[[Path, SegmentOutcome, str], list[Path]] | None = None) -> list[Path]:
    """Segment one photo and write its result (:func:`save_outcome`, then ``on_outcome``); returns the written files.

    The one per-photo step of every executor (the local loop of :func:`segment_paths`, Ray's workers), so both
    write the same files. Raises ImageReadError, SidecarError or StoreWriteError for this photo's own failures;
    other ProtolensErrors (missing weights, bad parameters) concern every photo.
    """
    image = load_image(path)
    outcome = drain(segmenter.run(image, backend_id, params, weights_path=weights_path, cancel=cancel,
                                  allow_random_weights=allow_random_weights), on_progress)
    written = save_outcome(outcome, threshold, out_dir=out_dir, store=store, semantics=semantics,
                           probability_threshold=probability_threshold, stem=stem)
    if on_outcome is not None:
        written += on_outcome(path, outcome, stem)
    return written


def segment_paths(paths: Iterable[str | Path], backend_id: str, params: Mapping[str, Any] | None = None, *,
                  segmenter: Segmenter, threshold: float | None = None, out_dir: str | Path | None = None,
                  store: ResultStore | None = None, weights_path: str | Path | None = None,
                  semantics: str = "value", probability_threshold: float | None = None,
                  cancel: CancelToken | None = None, allow_random_weights: bool = False,
                  on_file: Callable[[int, int, Path], None] | None = None,
                  on_progress: Callable[[Progress], None] | None = None,
                  on_error: Callable[[Path, str], None] | None = None, reserved_stems: Iterable[str] = (),
                  on_outcome: Callable[[Path, SegmentOutcome, str], list[Path]] | None = None) -> BatchSummary:
    """Segment every photo in ``paths`` (files and folders), continuing past bad files.

    Errors tied to one file (unreadable image, corrupt sidecar, write failure) are reported through
    ``on_error`` and counted; errors that would fail every file (unknown backend, bad parameters, missing
    weights) are raised at once. ``threshold`` (read with ``semantics``, "value" or "mass") None uses each
    result's suggested threshold (value) or 0.6 (mass). With ``out_dir``, files are named by
    :func:`export_stems` (never one of ``reserved_stems``). Folder entries that are not photos are listed in
    ``summary.skipped``. ``on_outcome(path, outcome, stem)`` runs after each photo's files are written and returns
    the further files it wrote (a use case's own outputs); its per-file errors count like the others.
    """
    scan = scan_paths(paths)
    files = scan.images
    stems = export_stems(files, reserved=reserved_stems)
    store = store or ResultStore.from_environment()
    summary = BatchSummary(skipped=scan.skipped)
    cancel = cancel or CancelToken()
    for index, path in enumerate(files):
        cancel.raise_if_set()
        if on_file is not None:
            on_file(index, len(files), path)
        try:
            summary.written += segment_file(path, stems[path], backend_id, params, segmenter=segmenter,
                                            threshold=threshold, out_dir=out_dir, store=store,
                                            weights_path=weights_path, semantics=semantics,
                                            probability_threshold=probability_threshold, cancel=cancel,
                                            allow_random_weights=allow_random_weights, on_progress=on_progress,
                                            on_outcome=on_outcome)
            summary.processed += 1
        except (ImageReadError, SidecarError, StoreWriteError) as exc:
            summary.failed.append((path, str(exc)))
            if on_error is not None:
                on_error(path, str(exc))
        except ProtolensError:
            raise
    return summary
