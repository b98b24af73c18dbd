"""The per-photo result store and the export files, both with provenance.

Result store (what the GUI reads, and ``protolens segment`` writes without ``--out``)
-------------------------------------------------------------------------------------
By default it lies next to each photo, in a hidden folder::

    quadrats/moss_carpet.jpg
    quadrats/.protolens/moss_carpet.jpg.json                       sidecar (schema protolens.sidecar/1)
    quadrats/.protolens/moss_carpet.jpg.<backend>.heatmap.npy      float32 (rows, cols) in [0, 1], native res.
    quadrats/.protolens/moss_carpet.jpg.<backend>.mask.png         uint8 (height, width), 0 / 255

With ``ResultStore(root=DIR)`` (``PROTOLENS_STORE=DIR``) the same files go to ``DIR/<key>/`` where
``<key>`` is derived from the photo folder's absolute path; a folder that cannot be written falls back
to that layout under the user data directory. The sidecar keeps one result per backend and the name
of the current one.

Export (GUI "Export" and ``protolens segment --out DIR``)
---------------------------------------------------------
``DIR/<stem>.mask.png`` (uint8 0/255, photo size), ``DIR/<stem>.heatmap.npy`` (float32 (height, width)
in [0, 1], photo size) and ``DIR/<stem>.json`` (schema protolens.result/1: image path and sha256,
backend id and version, weights id and sha256 or "none", parameters, threshold and its semantics, time).
All coordinates are (row, col) = (y, x) with the origin at the photo's top-left. Every write is atomic.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protolens.core.atomic import (
    read_npy,
    write_bytes_atomic,
    write_json_atomic,
    write_npy_atomic,
    write_png_atomic,
)
from protolens.core.errors import SidecarError, StoreWriteError
from protolens.core.thresholds import mask_to_png_array, threshold_mask
from protolens.core.types import Heatmap

STORE_DIRNAME = ".protolens"
SIDECAR_SCHEMA = "protolens.sidecar/1"
RESULT_SCHEMA = "protolens.result/1"


def utc_now() -> str:
    """Current UTC time as ISO 8601 with a ``Z`` suffix, second precision."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


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
    ``weights_id``/``weights_sha256`` are ``"none"`` for backends without weights.
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

    @property
    def applied_threshold(self) -> float:
        """The threshold applied to heatmap values."""
        return float(self.threshold if self.heatmap_threshold is None else self.heatmap_threshold)

    def to_json(self) -> dict[str, Any]:
        threshold: dict[str, Any] = {"value": float(self.threshold), "semantics": self.threshold_semantics,
                                     "heatmap_threshold": self.applied_threshold}
        if self.probability_threshold is not None:
            threshold["probability"] = float(self.probability_threshold)
        return {
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
        )


@dataclass
class StoredResult:
    """A result read back from the store: provenance, heatmap and mask (height, width) bool."""

    record: ResultRecord
    heatmap: Heatmap
    mask: np.ndarray | None
    probability: Heatmap | None = None
    score: np.ndarray | None = None


def result_mask(heatmap: np.ndarray, record: ResultRecord, probability: np.ndarray | None = None) -> np.ndarray:
    """The mask of a result: ``heatmap >= record.applied_threshold``, and ``probability >= p`` when the record
    has a probability threshold and a probability map is given. All arrays (height, width); returns bool."""
    mask = threshold_mask(heatmap, record.applied_threshold)
    if probability is not None and record.probability_threshold is not None:
        mask &= threshold_mask(probability, record.probability_threshold)
    return mask


def _safe_name(backend_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in backend_id)


def _fallback_root() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("protolens", appauthor=False)) / "store"


class ResultStore:
    """Reads and writes per-photo results (see the module docstring for the layout).

    Parameters
    ----------
    root : Path or None
        None keeps results next to each photo in ``.protolens/``; a folder keeps them all there.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root else None

    @classmethod
    def from_environment(cls) -> ResultStore:
        """The store configured by ``PROTOLENS_STORE`` (unset: next to each photo)."""
        return cls(os.environ.get("PROTOLENS_STORE") or None)

    def _central_folder(self, root: Path, photo: Path) -> Path:
        parent = str(photo.resolve().parent)
        key = hashlib.sha1(parent.encode("utf-8")).hexdigest()[:16]
        return root / f"{Path(parent).name or 'root'}-{key}"

    def folders(self, photo: str | Path) -> list[Path]:
        """Candidate store folders for ``photo``, preferred first (the second is the fallback)."""
        photo = Path(photo)
        if self.root is not None:
            return [self._central_folder(self.root, photo)]
        return [photo.parent / STORE_DIRNAME, self._central_folder(_fallback_root(), photo)]

    def sidecar_path(self, photo: str | Path) -> Path | None:
        """The existing sidecar of ``photo``, or None if it has none."""
        photo = Path(photo)
        for folder in self.folders(photo):
            candidate = folder / f"{photo.name}.json"
            if candidate.exists():
                return candidate
        return None

    def read_sidecar(self, photo: str | Path) -> dict[str, Any] | None:
        """The sidecar of ``photo`` as a dict, or None if there is none.

        Raises
        ------
        SidecarError
            The sidecar is not valid JSON or not of a known schema. It has been renamed to
            ``<name>.corrupt-<time>`` (kept, never overwritten) and the message says where.
        """
        path = self.sidecar_path(photo)
        if path is None:
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("schema") != SIDECAR_SCHEMA:
                raise ValueError(f"unknown schema {data.get('schema') if isinstance(data, dict) else None!r}")
        except (ValueError, UnicodeDecodeError) as exc:
            stamp = utc_now().replace(":", "")
            aside = path.with_name(f"{path.name}.corrupt-{stamp}")
            copy = 1
            while aside.exists():  # an earlier corrupt copy from the same second: never overwrite it
                copy += 1
                aside = path.with_name(f"{path.name}.corrupt-{stamp}-{copy}")
            os.replace(path, aside)
            raise SidecarError(f"{path}: corrupt sidecar ({exc}); kept as {aside.name}") from None
        return data

    def save_result(self, meta: ImageMeta, record: ResultRecord, heatmap: Heatmap,
                    mask: np.ndarray | None = None, probability: Heatmap | None = None,
                    score: np.ndarray | None = None) -> Path:
        """Save a result (native-resolution heatmap, probability map and raw scores, full-resolution mask,
        provenance). ``score`` is the backend's raw mass map (same grid as the heatmap), kept for mass thresholds.

        The mask defaults to :func:`result_mask` at full resolution. The sidecar keeps the other backends'
        results and marks this one current. Returns the sidecar path.

        Raises :class:`StoreWriteError` if neither store folder can be written, and
        :class:`SidecarError` if an existing sidecar is corrupt (it is moved aside first).
        """
        if mask is None:
            mask = result_mask(heatmap.full_resolution(), record,
                               probability.full_resolution() if probability is not None else None)
        existing = self.read_sidecar(meta.path) or {}
        last_error: StoreWriteError | None = None
        for folder in self.folders(meta.path):
            try:
                return self._write(folder, meta, record, heatmap, mask, existing, probability, score)
            except StoreWriteError as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    def _write(self, folder: Path, meta: ImageMeta, record: ResultRecord, heatmap: Heatmap,
               mask: np.ndarray, existing: dict[str, Any], probability: Heatmap | None,
               score: np.ndarray | None) -> Path:
        base = f"{meta.path.name}.{_safe_name(record.backend_id)}"
        write_npy_atomic(folder / f"{base}.heatmap.npy", heatmap.values)
        write_png_atomic(folder / f"{base}.mask.png", mask_to_png_array(mask))
        entry = record.to_json()
        entry["heatmap"] = {"file": f"{base}.heatmap.npy", "shape": list(heatmap.values.shape),
                            "resolution": "native"}
        entry["mask"] = {"file": f"{base}.mask.png"}
        if probability is not None:
            write_npy_atomic(folder / f"{base}.probability.npy", probability.values)
            entry["probability"] = {"file": f"{base}.probability.npy", "shape": list(probability.values.shape)}
        if score is not None:
            write_npy_atomic(folder / f"{base}.score.npy", np.asarray(score, dtype=np.float32))
            entry["score"] = {"file": f"{base}.score.npy", "shape": list(np.shape(score))}
        results = dict(existing.get("results", {})) if existing.get("image", {}).get("sha256") == meta.sha256 else {}
        results[record.backend_id] = entry
        sidecar = {"schema": SIDECAR_SCHEMA, "image": meta.to_json(relative=True), "current": record.backend_id,
                   "results": results}
        if existing.get("image", {}).get("sha256") == meta.sha256:
            for key, value in existing.items():
                if key not in sidecar:
                    sidecar[key] = value  # keep other sections (the edited annotation)
        path = folder / f"{meta.path.name}.json"
        write_json_atomic(path, sidecar)
        return path

    def write_section(self, meta: ImageMeta, section: str, value: dict[str, Any],
                      files: dict[str, bytes] | None = None) -> Path:
        """Write ``files`` ({suffix: bytes}, saved as ``<photo name>.<suffix>`` beside the sidecar) and set
        sidecar ``section`` to ``value``, keeping the other sections (all only if the image content matches).

        Raises :class:`StoreWriteError` if no store folder can be written, :class:`SidecarError` for a
        corrupt sidecar (moved aside first).
        """
        existing = self.read_sidecar(meta.path) or {}
        if existing.get("image", {}).get("sha256") != meta.sha256:
            existing = {}
        last_error: StoreWriteError | None = None
        current = self.sidecar_path(meta.path)
        folders = self.folders(meta.path)
        if current is not None and current.parent in folders:
            folders = [current.parent] + [f for f in folders if f != current.parent]
        for folder in folders:
            try:
                for suffix, data in (files or {}).items():
                    write_bytes_atomic(folder / f"{meta.path.name}.{suffix}", data)
                sidecar = {"schema": SIDECAR_SCHEMA, "image": meta.to_json(relative=True),
                           "results": existing.get("results", {}), **{k: v for k, v in existing.items()
                                                                      if k not in ("schema", "image", "results")}}
                if existing.get("current"):
                    sidecar["current"] = existing["current"]
                sidecar[section] = value
                path = folder / f"{meta.path.name}.json"
                write_json_atomic(path, sidecar)
                return path
            except StoreWriteError as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    def section(self, photo: str | Path, section: str, *, sha256: str | None = None) -> tuple[dict, Path] | None:
        """A sidecar section and the folder its files are in, or None (absent, or stale for ``sha256``).

        Raises :class:`SidecarError` for a corrupt sidecar (moved aside first).
        """
        data = self.read_sidecar(photo)
        path = self.sidecar_path(photo)
        if not data or path is None or not isinstance(data.get(section), dict):
            return None
        if sha256 is not None and data.get("image", {}).get("sha256") != sha256:
            return None
        return data[section], path.parent

    def project_folder(self, folder: str | Path) -> Path:
        """Where the project file (labels, scale) of a photo folder lives."""
        return self.folders(Path(folder) / "_")[0]

    def _entry(self, photo: Path, backend_id: str | None,
               sha256: str | None) -> tuple[dict[str, Any], dict[str, Any], Path] | None:
        data = self.read_sidecar(photo)
        if not data or (sha256 is not None and data.get("image", {}).get("sha256") != sha256):
            return None
        entry = data.get("results", {}).get(backend_id or data.get("current") or "")
        sidecar = self.sidecar_path(photo)
        if not isinstance(entry, dict) or sidecar is None:
            return None
        return data, entry, sidecar.parent

    def load_record(self, photo: str | Path, backend_id: str | None = None, *,
                    sha256: str | None = None) -> ResultRecord | None:
        """Provenance of a stored result (sidecar only, no arrays read); None if absent, stale or malformed."""
        found = self._entry(Path(photo), backend_id, sha256)
        try:
            return ResultRecord.from_json(found[1]) if found else None
        except (KeyError, TypeError, ValueError):
            return None

    def load_result(self, photo: str | Path, backend_id: str | None = None, *,
                    sha256: str | None = None) -> StoredResult | None:
        """Read a stored result (the current one if ``backend_id`` is None), or None if absent or stale.

        With ``sha256`` given, a sidecar written for other image content counts as absent (stale).
        A result whose arrays are missing or unreadable counts as absent. Raises :class:`SidecarError`
        for a corrupt sidecar (moved aside).
        """
        found = self._entry(Path(photo), backend_id, sha256)
        if found is None:
            return None
        data, entry, folder = found
        try:
            record = ResultRecord.from_json(entry)
            values = read_npy(folder / entry["heatmap"]["file"])
            heatmap = Heatmap(values, (data["image"]["height"], data["image"]["width"]))
            mask_path = folder / entry["mask"]["file"]
            mask = None
            if mask_path.exists():
                from protolens.core.imageio import read_mask

                mask = read_mask(mask_path) > 127
            probability = None
            if "probability" in entry:
                probability = Heatmap(read_npy(folder / entry["probability"]["file"]), heatmap.image_size)
            score = read_npy(folder / entry["score"]["file"]) if "score" in entry else None
        except (KeyError, TypeError, ValueError, OSError):
            return None
        return StoredResult(record, heatmap, mask, probability, score)


def export_result(out_dir: str | Path, meta: ImageMeta, record: ResultRecord, heatmap: Heatmap,
                  mask: np.ndarray | None = None, probability: Heatmap | None = None) -> list[Path]:
    """Write the export trio for one photo into ``out_dir`` (see the module docstring).

    The heatmap is written at the photo's resolution; the mask defaults to :func:`result_mask`. A probability
    map, when given, is written too (``<stem>.probability.npy``, float32, photo size).
    Returns the written paths [mask, heatmap, sidecar(, probability)]. Raises :class:`StoreWriteError`.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise StoreWriteError(f"{out_dir}: exists and is not a folder")
    full = heatmap.full_resolution()
    probability_full = probability.full_resolution() if probability is not None else None
    if mask is None:
        mask = result_mask(full, record, probability_full)
    stem = meta.path.stem
    paths = [out_dir / f"{stem}.mask.png", out_dir / f"{stem}.heatmap.npy", out_dir / f"{stem}.json"]
    write_png_atomic(paths[0], mask_to_png_array(mask))
    write_npy_atomic(paths[1], full.astype(np.float32, copy=False))
    document = {"schema": RESULT_SCHEMA, "image": meta.to_json(), **record.to_json(),
                "mask": {"file": paths[0].name, "encoding": "uint8 0=background 255=foreground"},
                "heatmap": {"file": paths[1].name, "dtype": "float32", "shape": [meta.height, meta.width],
                            "range": [0.0, 1.0]},
                "coordinates": "row, col (y, x); origin top-left", "exported": utc_now()}
    if probability_full is not None:
        paths.append(out_dir / f"{stem}.probability.npy")
        write_npy_atomic(paths[3], probability_full.astype(np.float32, copy=False))
        document["probability"] = {"file": paths[3].name, "dtype": "float32", "shape": [meta.height, meta.width]}
    write_json_atomic(paths[2], document)
    return paths
