"""Finding the result to show for a photo: the heatmap cache first, then the per-photo result store."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protolens.core.errors import ProtolensError
from protolens.core.store import ResultRecord, ResultStore
from protolens.core.types import Heatmap
from protolens.services.segment import LoadedImage, Segmenter, SegmentOutcome


@dataclass
class FoundResult:
    """A result ready to show: provenance, heatmap, the backend's suggested threshold and where it came from.

    ``source`` is ``"computed"``, ``"cache"`` or ``"store"``.
    """

    record: ResultRecord
    heatmap: Heatmap
    suggested_threshold: float | None
    source: str

    @classmethod
    def from_outcome(cls, outcome: SegmentOutcome, threshold: float | None = None) -> FoundResult:
        return cls(outcome.record(threshold), outcome.result.heatmap, outcome.result.suggested_threshold,
                   "cache" if outcome.from_cache else "computed")


def find_result(segmenter: Segmenter, store: ResultStore, image: LoadedImage, backend_id: str,
                params: Mapping[str, Any], weights_path: str | Path | None = None) -> FoundResult | None:
    """The result to show for ``image``: the cached result of exactly these inputs, else the stored current
    result of the photo (any backend, if its content hash still matches), else None. Never runs a model.

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
    stored = store.load_result(image.meta.path, sha256=image.meta.sha256)
    if stored is None:
        return None
    return FoundResult(stored.record, stored.heatmap, None, "store")
