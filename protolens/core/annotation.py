"""A photo's hand-corrected label map in the result store, with provenance and crash recovery.

Stored next to the photo's sidecar as ``<photo name>.labels.png`` (8-bit grey, pixel value = class id;
0 background, 255 ignore) and the sidecar section ``annotation``::

    {"file": "...labels.png", "state": "autosave" | "saved", "saved": time,
     "source": {"kind": "threshold" | "empty" | "import", ...provenance of the starting mask...},
     "edited": {"time": time of the last stroke or null, "strokes": number of edits}}

``state`` is "autosave" while an editing session is open and "saved" once the photo is left or the window
closed; an "autosave" found on opening means the session ended abnormally and its last autosave is
restored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from protolens.core.errors import ImageReadError
from protolens.core.store import ImageMeta, ResultRecord, ResultStore, utc_now

SECTION = "annotation"
SUFFIX = "labels.png"


@dataclass
class Annotation:
    """A label map (height, width) uint8 and where it came from.

    ``source`` describes the starting mask: ``{"kind": "threshold", "result": <result provenance>,
    "class_id": k}``, ``{"kind": "empty"}`` or ``{"kind": "import", "format": ..., "file": ...}``.
    ``strokes`` counts edits; ``edited`` is the time of the last one (None if never edited).
    """

    labels: np.ndarray
    source: dict[str, Any] = field(default_factory=lambda: {"kind": "empty"})
    strokes: int = 0
    edited: str | None = None
    state: str = "saved"
    saved: str | None = None

    @classmethod
    def empty(cls, height: int, width: int) -> Annotation:
        return cls(np.zeros((height, width), np.uint8))

    @classmethod
    def from_mask(cls, mask: np.ndarray, class_id: int, record: ResultRecord | None) -> Annotation:
        """Start from a thresholded mask: foreground pixels get ``class_id``, the rest background."""
        labels = np.where(np.asarray(mask, dtype=bool), np.uint8(class_id), np.uint8(0))
        source: dict[str, Any] = {"kind": "threshold", "class_id": int(class_id)}
        if record is not None:
            source["result"] = record.to_json()
        return cls(labels, source)

    def touched(self) -> None:
        """Count one edit now."""
        self.strokes += 1
        self.edited = utc_now()

    def provenance(self) -> dict[str, Any]:
        return {"source": self.source, "edited": {"time": self.edited, "strokes": self.strokes}}


def save_annotation(store: ResultStore, meta: ImageMeta, annotation: Annotation, *, state: str = "saved") -> Path:
    """Write the label map and its sidecar section atomically (``state`` "autosave" or "saved").

    Raises StoreWriteError (disk full, read-only) or SidecarError; nothing already saved is lost.
    """
    ok, png = cv2.imencode(".png", np.ascontiguousarray(annotation.labels, dtype=np.uint8))
    if not ok:
        raise ValueError("cannot encode the label map as PNG")
    annotation.state, annotation.saved = state, utc_now()
    value = {"file": f"{meta.path.name}.{SUFFIX}", "state": state, "saved": annotation.saved,
             "shape": list(annotation.labels.shape), **annotation.provenance()}
    return store.write_section(meta, SECTION, value, {SUFFIX: png.tobytes()})


def discard_annotation(store: ResultStore, meta: ImageMeta) -> None:
    """Mark the photo's annotation as discarded (its label map file is left in place, unused)."""
    store.write_section(meta, SECTION, {"state": "discarded", "saved": utc_now()})


def load_annotation(store: ResultStore, meta: ImageMeta) -> Annotation | None:
    """The stored annotation of this image content, or None.

    Raises SidecarError (corrupt sidecar, moved aside) and ImageReadError (unreadable or wrongly sized
    label map: the file is left as it is).
    """
    found = store.section(meta.path, SECTION, sha256=meta.sha256)
    if found is None:
        return None
    value, folder = found
    if not value.get("file"):
        return None  # discarded
    path = folder / str(value["file"])
    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if labels is None or labels.ndim != 2 or labels.dtype != np.uint8:
        raise ImageReadError(path, "the saved label map is missing or unreadable")
    if labels.shape != (meta.height, meta.width):
        raise ImageReadError(path, f"label map is {labels.shape}, the photo {(meta.height, meta.width)}")
    edited = value.get("edited", {}) or {}
    return Annotation(labels, dict(value.get("source", {"kind": "empty"})), int(edited.get("strokes", 0)),
                      edited.get("time"), str(value.get("state", "saved")), value.get("saved"))
