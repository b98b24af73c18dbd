"""Finding the result to show for a photo: the heatmap cache first, then the per-photo result store."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from protolens.core.errors import ProtolensError
from protolens.core.store import ImageMeta, ResultRecord, ResultStore, export_result
from protolens.core.thresholds import MassThresholder, heatmap_threshold
from protolens.core.types import Heatmap
from protolens.services.segment import LoadedImage, Segmenter, SegmentOutcome


@dataclass
class FoundResult:
    """A result ready to show: provenance, heatmap, the backend's suggested threshold and where it came from.

    ``source`` is ``"computed"``, ``"cache"`` or ``"store"``. ``suggested_threshold`` is None when the record's
    threshold was chosen by the user (it then wins over the suggestion). ``score`` is the raw mass map
    (for mass thresholds) and ``probability`` the backend's probability map, when it gives them.
    ``windows`` are the analysis windows as [x, y, width, height] in photo pixels.
    """

    record: ResultRecord
    heatmap: Heatmap
    suggested_threshold: float | None
    source: str
    score: np.ndarray | None = None
    probability: Heatmap | None = None
    windows: list[list[float]] = field(default_factory=list)

    @classmethod
    def from_outcome(cls, outcome: SegmentOutcome, threshold: float | None = None) -> FoundResult:
        result = outcome.result
        return cls(outcome.record(threshold), result.heatmap, result.suggested_threshold,
                   "cache" if outcome.from_cache else "computed", result.extras.get("score"), outcome.probability,
                   list(result.info.get("windows", [])))

    def finalized_record(self) -> ResultRecord:
        """A copy of the record whose heatmap threshold realises its threshold and semantics exactly."""
        record = dataclasses.replace(self.record, params=dict(self.record.params))
        record.heatmap_threshold = heatmap_threshold(self.heatmap.values, record.threshold,
                                                     record.threshold_semantics, self.score)
        return record

    def save(self, store: ResultStore, meta: ImageMeta) -> Path:
        """Save to the per-photo store (with the exact heatmap threshold). Raises StoreWriteError."""
        return store.save_result(meta, self.finalized_record(), self.heatmap, probability=self.probability,
                                 score=self.score)

    def export(self, out_dir: str | Path, meta: ImageMeta) -> list[Path]:
        """Write the export files into ``out_dir`` (see :func:`protolens.core.store.export_result`)."""
        return export_result(out_dir, meta, self.finalized_record(), self.heatmap, probability=self.probability)


def find_result(segmenter: Segmenter, store: ResultStore, image: LoadedImage, backend_id: str,
                params: Mapping[str, Any], weights_path: str | Path | None = None, *,
                any_backend: bool = True) -> FoundResult | None:
    """The result to show for ``image``: the cached result of exactly these inputs, else the stored result of
    ``backend_id``, else (with ``any_backend``) the photo's stored current result of another backend, else
    None. Stored results count only while the photo's content hash matches. Never runs a model.

    Errors of the cache look-up (missing weights, bad parameters) make it fall through to the store;
    a corrupt sidecar raises :class:`~protolens.core.errors.SidecarError` (it has been moved aside).
    """
    try:
        outcome = segmenter.lookup(image, backend_id, params, weights_path=weights_path)
    except ProtolensError:
        outcome = None
    if outcome is not None:
        found = FoundResult.from_outcome(outcome)
        saved = store.load_record(image.meta.path, backend_id, sha256=image.meta.sha256)
        if saved is not None and (saved.params, saved.weights_sha256) == (outcome.params, outcome.weights_sha256):
            found.record.threshold = saved.threshold  # the user's threshold, not the suggestion
            found.suggested_threshold = None
        return found
    stored = store.load_result(image.meta.path, backend_id, sha256=image.meta.sha256)
    if stored is None and any_backend:
        stored = store.load_result(image.meta.path, sha256=image.meta.sha256)
    if stored is None:
        return None
    return FoundResult(stored.record, stored.heatmap, None, "store", stored.score, stored.probability,
                       list(stored.record.info.get("windows", [])))


def mass_thresholder(found: FoundResult, max_cells: int = 1024 * 1024) -> MassThresholder:
    """A :class:`MassThresholder` for live mass thresholds on ``found`` (sorting once; run it off the UI thread).

    Maps with more than ``max_cells`` cells (full-resolution heatmaps) are area-averaged first, so the live
    preview may differ from the saved mask, which is always computed exactly, by a pixel at the boundary.
    """
    values, score = found.heatmap.values, found.score
    if values.size > max_cells:
        scale = (max_cells / values.size) ** 0.5
        shape = (max(1, int(values.shape[0] * scale)), max(1, int(values.shape[1] * scale)))
        values = cv2.resize(values, shape[::-1], interpolation=cv2.INTER_AREA)
        score = None if score is None else cv2.resize(np.asarray(score, np.float32), shape[::-1],
                                                      interpolation=cv2.INTER_AREA)
    return MassThresholder(values, score)
