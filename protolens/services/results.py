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
from protolens.core.layers import ResultLayers
from protolens.core.store import ImageMeta, ResultRecord, ResultStore, StoredResult, export_result
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
    layers: ResultLayers = field(default_factory=ResultLayers)

    @property
    def key(self) -> str:
        """The result's identity (:func:`protolens.core.records.result_key`)."""
        return self.record.key

    @classmethod
    def from_outcome(cls, outcome: SegmentOutcome, threshold: float | None = None) -> FoundResult:
        result = outcome.result
        return cls(outcome.record(threshold), result.heatmap, result.suggested_threshold,
                   "cache" if outcome.from_cache else "computed", result.extras.get("score"), outcome.probability,
                   list(result.info.get("windows", [])), result.layers())

    @classmethod
    def from_stored(cls, stored: StoredResult) -> FoundResult:
        """A result read back from the per-photo store (its saved threshold wins over any suggestion)."""
        return cls(stored.record, stored.heatmap, None, "store", stored.score, stored.probability,
                   list(stored.record.info.get("windows", [])), stored.layers)

    def finalized_record(self) -> ResultRecord:
        """A copy of the record whose heatmap threshold realises its threshold and semantics exactly."""
        record = dataclasses.replace(self.record, params=dict(self.record.params))
        record.heatmap_threshold = heatmap_threshold(self.heatmap.values, record.threshold,
                                                     record.threshold_semantics, self.score)
        return record

    def save(self, store: ResultStore, meta: ImageMeta) -> Path:
        """Save to the per-photo store (with the exact heatmap threshold). Raises StoreWriteError."""
        return store.save_result(meta, self.finalized_record(), self.heatmap, probability=self.probability,
                                 score=self.score, layers=self.layers)

    def export(self, out_dir: str | Path, meta: ImageMeta, *, stem: str | None = None) -> list[Path]:
        """Write the export files into ``out_dir`` (see :func:`protolens.core.store.export_result`)."""
        return export_result(out_dir, meta, self.finalized_record(), self.heatmap, probability=self.probability,
                             stem=stem, layers=self.layers)


def find_result(segmenter: Segmenter, store: ResultStore, image: LoadedImage, backend_id: str,
                params: Mapping[str, Any], weights_path: str | Path | None = None, *,
                any_backend: bool = True) -> FoundResult | None:
    """The result to show for ``image``: the cached result of exactly these inputs, else the stored result of
    exactly these inputs (same key), else (with ``any_backend``) the photo's current stored result, else None.
    Stored results count only while the photo's content hash matches. Never runs a model.

    A stored result of the same backend with other parameters or weights is never shown for these inputs: the
    view must always show the result its title names. Errors of the key look-up (missing weights, bad
    parameters) skip to ``any_backend``; a corrupt sidecar raises
    :class:`~protolens.core.errors.SidecarError` (it has been moved aside).
    """
    try:
        key, outcome = segmenter.lookup_keyed(image, backend_id, params, weights_path=weights_path)
    except ProtolensError:
        outcome, key = None, None
    if outcome is not None:
        found = FoundResult.from_outcome(outcome)
        saved = store.load_record(image.meta.path, outcome.key, sha256=image.meta.sha256)
        if saved is not None:
            found.record.threshold = saved.threshold  # the user's threshold, not the suggestion
            found.record.threshold_semantics = saved.threshold_semantics
            found.record.probability_threshold = saved.probability_threshold
            found.suggested_threshold = None
        return found
    stored = store.load_result(image.meta.path, key, sha256=image.meta.sha256) if key is not None else None
    if stored is None and any_backend:
        stored = store.load_result(image.meta.path, sha256=image.meta.sha256)
    return FoundResult.from_stored(stored) if stored is not None else None


def load_found(store: ResultStore, image: LoadedImage, key: str | None) -> FoundResult | None:
    """The stored result ``key`` of ``image`` (None: the current one); None if absent or stale. Reads arrays: run
    it off the UI thread."""
    stored = store.load_result(image.meta.path, key, sha256=image.meta.sha256)
    return FoundResult.from_stored(stored) if stored is not None else None


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
