"""Result identity and provenance: what a photo is, what produced a result, and the key it is kept under.

A result is identified by (backend id, backend version, weights sha256 or ``"none"``, a hash of the
parameters): :func:`result_key`. The per-photo store, the heatmap cache, the GUI and ``protolens segment``
all use this key, so two checkpoints or two parameter sets of one backend never overwrite each other.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protolens.core.hashing import sha256_json
from protolens.core.thresholds import threshold_mask
from protolens.core.types import Heatmap, ResultLayers

_TITLE_PARAMS = ("mode", "index", "epoch", "block", "head", "discard_ratio", "smoothing", "classes")
"""Parameters a title names (when set to something other than a default-like -1 / 0)."""

KEY_LENGTH = 16
"""Hex digits of a result key (64 bits of SHA-256)."""


def _title_value(value: Any, limit: int = 60) -> str:
    """A parameter value on one line: a multi-line text (a class list, one class per line, synonyms after ";")
    becomes its first names joined by ", ", cut to ``limit`` characters."""
    if not isinstance(value, str) or "\n" not in value:
        return str(value)
    names = [line.split(";")[0].strip() for line in value.splitlines()]
    text = ", ".join(n for n in names if n and not n.startswith("#"))
    return text if len(text) <= limit else text[:limit - 1].rstrip(", ") + "…"


def utc_now() -> str:
    """Current UTC time as ISO 8601 with a ``Z`` suffix, second precision."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def params_hash(params: dict[str, Any]) -> str:
    """SHA-256 (hex) of the parameters as canonical JSON (sorted keys): the parameter part of a result key."""
    return sha256_json(params)


def result_key(backend_id: str, backend_version: str, weights_sha256: str, params: dict[str, Any]) -> str:
    """The identity of a result: 16 hex digits of SHA-256 over backend id, version, weights and parameters.

    ``weights_sha256`` is the weights file's SHA-256, or ``"none"`` for a backend without weights. The photo is
    not part of the key (results are kept per photo); the heatmap cache adds the photo's SHA-256 to it.
    """
    return sha256_json({"backend": backend_id, "version": backend_version, "weights": weights_sha256,
                        "params": params_hash(params)})[:KEY_LENGTH]


@dataclass(frozen=True)
class ImageMeta:
    """Identity of a photo: path, content hash and size (height, width) in pixels."""

    path: Path
    sha256: str
    height: int
    width: int

    def to_json(self, *, relative: bool = False) -> dict[str, Any]:
        return {"path": self.path.name if relative else str(self.path.resolve()), "sha256": self.sha256,
                "height": self.height, "width": self.width}


@dataclass
class ResultRecord:
    """Provenance of one backend result on one photo.

    ``threshold`` is in [0, 1] and read according to ``threshold_semantics``: "value" (mask = heatmap >= t)
    or "mass" (the smallest set of cells holding that fraction of the attention mass). ``heatmap_threshold``
    is the value threshold that realises it on the heatmap (equal to ``threshold`` for "value");
    ``probability_threshold``, when a backend gives a probability map, also requires probability >= it.
    ``weights_id``/``weights_sha256`` are ``"none"`` for backends without weights. ``kind`` is the backend
    manifest's kind (heatmap | segmentation | explanation): it decides how a view shows the result.
    """

    backend_id: str
    backend_version: str
    params: dict[str, Any]
    threshold: float
    threshold_semantics: str = "value"
    weights_id: str = "none"
    weights_sha256: str = "none"
    created: str = field(default_factory=utc_now)
    info: dict[str, Any] = field(default_factory=dict)
    heatmap_threshold: float | None = None
    probability_threshold: float | None = None
    kind: str = "heatmap"

    @property
    def key(self) -> str:
        """This result's identity (:func:`result_key`); thresholds and times are not part of it."""
        return result_key(self.backend_id, self.backend_version, self.weights_sha256, self.params)

    @property
    def applied_threshold(self) -> float:
        """The threshold applied to heatmap values."""
        return float(self.threshold if self.heatmap_threshold is None else self.heatmap_threshold)

    def title(self) -> str:
        """A short human title: backend, the key parameters (mode, index, block...), then the weights."""
        weights = "" if self.weights_id == "none" else f" · {Path(self.weights_id).name}"
        if self.weights_sha256 not in ("none", "") and self.weights_id != "none":
            weights += f" [{self.weights_sha256[:8]}]"
        shown = [f"{k}={_title_value(v)}" for k, v in self.params.items()
                 if k in _TITLE_PARAMS and v not in (-1, 0, 0.0, None)
                 and not (k in ("block", "head") and self.params.get("mode") not in (None, "cls"))]
        return f"{self.backend_id}" + (f" ({', '.join(shown)})" if shown else "") + weights

    def to_json(self) -> dict[str, Any]:
        threshold: dict[str, Any] = {"value": float(self.threshold), "semantics": self.threshold_semantics,
                                     "heatmap_threshold": self.applied_threshold}
        if self.probability_threshold is not None:
            threshold["probability"] = float(self.probability_threshold)
        return {
            "key": self.key,
            "kind": self.kind,
            "backend": {"id": self.backend_id, "version": self.backend_version},
            "weights": {"id": self.weights_id, "sha256": self.weights_sha256},
            "params": self.params,
            "threshold": threshold,
            "created": self.created,
            "info": self.info,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResultRecord:
        """Inverse of :meth:`to_json`; raises ``KeyError``/``TypeError`` on malformed data."""
        return cls(
            backend_id=data["backend"]["id"], backend_version=data["backend"]["version"],
            params=dict(data["params"]), threshold=float(data["threshold"]["value"]),
            threshold_semantics=data["threshold"].get("semantics", "value"),
            weights_id=data["weights"]["id"], weights_sha256=data["weights"]["sha256"],
            created=data.get("created", ""), info=dict(data.get("info", {})),
            heatmap_threshold=data["threshold"].get("heatmap_threshold"),
            probability_threshold=data["threshold"].get("probability"),
            kind=data.get("kind", "heatmap"),
        )


@dataclass
class StoredResult:
    """A result read back from the store: provenance, heatmap, mask (height, width) bool and layers."""

    record: ResultRecord
    heatmap: Heatmap
    mask: np.ndarray | None
    probability: Heatmap | None = None
    score: np.ndarray | None = None
    layers: ResultLayers = field(default_factory=ResultLayers)

    @property
    def key(self) -> str:
        return self.record.key


def result_mask(heatmap: np.ndarray, record: ResultRecord, probability: np.ndarray | None = None) -> np.ndarray:
    """The mask of a result: ``heatmap >= record.applied_threshold``, and ``probability >= p`` when the record
    has a probability threshold and a probability map is given. All arrays (height, width); returns bool."""
    mask = threshold_mask(heatmap, record.applied_threshold)
    if probability is not None and record.probability_threshold is not None:
        mask &= threshold_mask(probability, record.probability_threshold)
    return mask
