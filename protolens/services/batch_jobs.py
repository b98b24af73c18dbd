"""The batch commands as :class:`~protolens.services.work.BatchJob`\\ s, so any executor can run them.

:class:`SegmentJob` is ``protolens segment`` / ``attention`` / ``species`` (one photo per unit, the same
per-photo step as the local loop: :func:`protolens.services.batch.segment_file`). Jobs are plain dataclasses:
Ray pickles them to its workers, which build their own :class:`~protolens.services.segment.Segmenter` (and so
their own model) in :meth:`open`.

Resuming: a unit is done when its outputs exist for the same photo content and result key. With an output
folder that is ``<stem>.json`` (written last of a photo's files, so its presence means all are there) holding
the photo's sha256, the key and, when one was given, the same threshold and semantics; in the per-photo store,
the sidecar's result under the key with that threshold.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protolens.core.errors import ImageReadError, SidecarError, StoreWriteError
from protolens.core.hashing import sha256_file
from protolens.core.imageio import ScanResult, scan_paths
from protolens.core.result_export import exported_files
from protolens.core.store import ResultStore
from protolens.services.batch import export_stems, segment_file
from protolens.services.segment import Segmenter, SegmentOutcome
from protolens.services.work import UnitResult, WorkUnit

UNIT_ERRORS = (ImageReadError, SidecarError, StoreWriteError)
"""Errors that concern one photo only: a unit with one of them fails, the job goes on."""


def photo_units(paths: Iterable[str | Path], reserved_stems: Iterable[str] = ()) -> tuple[list[WorkUnit], ScanResult]:
    """One unit per photo of ``paths`` (files and folders, as ``segment`` scans them), payload (path, stem).

    Stems are :func:`~protolens.services.batch.export_stems`'s, so every executor names files alike; the path in
    the payload is absolute (a worker may run in another folder, on another node), the name as scanned.
    Returns the units and the scan (its ``skipped`` entries for the summary).
    """
    scan = scan_paths(paths)
    stems = export_stems(scan.images, reserved=reserved_stems)
    return [WorkUnit(str(path), (path.resolve(), stems[path])) for path in scan.images], scan


def _registry() -> Any:
    from protolens.models.registry import Registry

    return Registry.discover()


@dataclass
class SpeciesHook:
    """Writes ``<stem>.species.json`` after each quadrat (the ``species`` command's ``on_outcome``)."""

    out_dir: Path
    options: Any

    def __call__(self, path: Path, outcome: SegmentOutcome, stem: str) -> list[Path]:
        from protolens.core.atomic import write_json_atomic
        from protolens.services.species import species_document

        target = self.outputs(stem)[0]
        write_json_atomic(target, species_document(outcome, path.stem, self.options))
        return [target]

    def outputs(self, stem: str) -> list[Path]:
        """The files this hook writes for a photo of export stem ``stem`` (a resumed job checks they exist)."""
        return [Path(self.out_dir) / f"{stem}.species.json"]


@dataclass
class SegmentJob:
    """``protolens segment`` (and ``attention``, ``species``) as a batch job; fields as in
    :func:`protolens.services.batch.segment_paths`. ``on_outcome`` must be picklable and name the files it writes
    with ``outputs(stem)`` (e.g. :class:`SpeciesHook`)."""

    backend_id: str
    params: dict[str, Any]
    threshold: float | None = None
    out_dir: Path | None = None
    weights_path: Path | None = None
    semantics: str = "value"
    probability_threshold: float | None = None
    allow_random_weights: bool = False
    on_outcome: Any = None
    command: str = "segment"

    def __post_init__(self) -> None:  # workers may run in another folder (another node): absolute paths
        self.out_dir = Path(self.out_dir).resolve() if self.out_dir is not None else None
        self.weights_path = Path(self.weights_path).resolve() if self.weights_path is not None else None

    def open(self, device: str | None) -> Segmenter:
        """A Segmenter of this worker (its model loads on the first photo and stays). A worker never sees a photo
        twice, so it keeps one result in memory, not the GUI's 48 (full-resolution heatmaps add up)."""
        return Segmenter(_registry(), device=device, memory_capacity=1)

    def _store(self) -> ResultStore:
        return ResultStore.from_environment()

    def run(self, state: Segmenter, unit: WorkUnit) -> UnitResult:
        """Segment and write one photo; its own errors make a failed result."""
        path, stem = unit.payload
        started = time.perf_counter()
        try:
            written = segment_file(path, stem, self.backend_id, self.params, segmenter=state,
                                   threshold=self.threshold, out_dir=self.out_dir, store=self._store(),
                                   weights_path=self.weights_path, semantics=self.semantics,
                                   probability_threshold=self.probability_threshold,
                                   allow_random_weights=self.allow_random_weights, on_outcome=self.on_outcome)
        except UNIT_ERRORS as exc:
            return UnitResult(unit.name, False, error=str(exc), seconds=time.perf_counter() - started)
        return UnitResult(unit.name, True, [str(p) for p in written], seconds=time.perf_counter() - started)

    @functools.cached_property
    def key(self) -> str:
        """The result key of every photo of this job (runs no model)."""
        return Segmenter(_registry(), disk_cache=None).result_key(
            self.backend_id, self.params, weights_path=self.weights_path,
            allow_random_weights=self.allow_random_weights)

    def is_done(self, unit: WorkUnit) -> bool:
        """Whether this photo's outputs exist with the same content hash, key and (given) threshold."""
        path, stem = unit.payload
        try:
            sha = sha256_file(path)
        except OSError:
            return False
        if self.out_dir is None:
            record = self._store().load_record(path, self.key, sha256=sha)
            return record is not None and record.key == self.key and self._same_threshold(
                record.threshold, record.threshold_semantics)
        hooked = self.on_outcome.outputs(stem) if self.on_outcome is not None else []
        return all(p.exists() for p in hooked) and self._exported(Path(self.out_dir) / f"{stem}.json", sha)

    def _exported(self, document_path: Path, sha: str) -> bool:
        try:
            document = json.loads(document_path.read_text(encoding="utf-8"))
            threshold = document["threshold"]
            same = (document["image"]["sha256"] == sha and document["key"] == self.key
                    and self._same_threshold(threshold["value"], threshold["semantics"]))
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return same and all((document_path.parent / name).exists() for name in exported_files(document))

    def _same_threshold(self, value: float, semantics: str) -> bool:
        if semantics != self.semantics:
            return False
        return self.threshold is None or abs(float(value) - self.threshold) < 1e-12

