"""The per-photo result store: every result of a photo, with provenance, kept apart by its key.

Layout (what the GUI reads, and ``protolens segment`` writes without ``--out``)
------------------------------------------------------------------------------
By default it lies next to each photo, in a hidden folder::

    quadrats/moss_carpet.jpg
    quadrats/.protolens/moss_carpet.jpg.json                   sidecar (schema protolens.sidecar/2)
    quadrats/.protolens/moss_carpet.jpg.<key>.heatmap.npy      float32 (rows, cols) in [0, 1], native res.
    quadrats/.protolens/moss_carpet.jpg.<key>.mask.png         uint8 (height, width), 0 / 255
    quadrats/.protolens/moss_carpet.jpg.<key>.<layer file>     typed layers (protolens.core.layers)

``<key>`` is the result's identity (:func:`protolens.core.records.result_key`: backend id and version,
weights sha256, parameters): two checkpoints or two parameter sets of one backend are two results. The
sidecar maps keys to results and names the current one (``"current"``). With ``ResultStore(root=DIR)``
(``PROTOLENS_STORE=DIR``) the same files go to ``DIR/<folder key>/`` where the folder key is derived from the
photo folder's absolute path; a folder that cannot be written falls back to that layout under the user
data directory.

Sidecars of schema ``protolens.sidecar/1`` (one result per backend id, keyed by the id) are read and
migrated in memory; the next write saves them as ``/2`` (their array files keep their names).

Every read-modify-write of a sidecar holds a lock file beside it (``filelock``), so the GUI and the CLI can
save results of the same photo at once without losing any. Every file write is atomic.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from protolens.core.atomic import (
    read_npy,
    write_bytes_atomic,
    write_json_atomic,
    write_npy_atomic,
    write_png_atomic,
)
from protolens.core.errors import SidecarError, StoreWriteError
from protolens.core.layers import ResultLayers, describe
from protolens.core.records import ImageMeta, ResultRecord, StoredResult, result_key, result_mask, utc_now  # noqa: F401 - re-exported: the store's public names
from protolens.core.result_export import RESULT_SCHEMA, export_result  # noqa: F401 - re-exported
from protolens.core.thresholds import mask_to_png_array
from protolens.core.types import Heatmap

STORE_DIRNAME = ".protolens"
SIDECAR_SCHEMA = "protolens.sidecar/2"
SIDECAR_SCHEMA_V1 = "protolens.sidecar/1"
LOCK_TIMEOUT_S = 30.0
_FILE_FIELDS = ("heatmap", "mask", "probability", "score")


@dataclass(frozen=True)
class ResultEntry:
    """One stored result as listed (sidecar only, no arrays read): key, provenance, current flag, layers."""

    key: str
    record: ResultRecord
    current: bool
    layers: str = ""

    def line(self) -> str:
        """``key  backend@version  weights  params  created  [current]`` for listings."""
        r = self.record
        weights = "none" if r.weights_sha256 == "none" else f"{r.weights_id}@{r.weights_sha256[:12]}"
        params = json.dumps(r.params, sort_keys=True, separators=(",", ":"))
        return "\t".join([self.key, f"{r.backend_id}@{r.backend_version}", weights, params, r.created,
                          "current" if self.current else ""]).rstrip()


def _fallback_root() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("protolens", appauthor=False)) / "store"


def migrate_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A ``protolens.sidecar/1`` document as ``/2``: results re-keyed by their identity, current by key.

    Entries that cannot be read as records are dropped (they counted as absent before too). The array files
    are not renamed: entries keep naming them.
    """
    results: dict[str, Any] = {}
    by_backend: dict[str, str] = {}
    for backend_id, entry in (data.get("results") or {}).items():
        try:
            record = ResultRecord.from_json(entry)
        except (KeyError, TypeError, ValueError):
            continue
        results[record.key] = {**entry, "key": record.key, "kind": entry.get("kind", "heatmap")}
        by_backend[backend_id] = record.key
    migrated = {k: v for k, v in data.items() if k not in ("schema", "results", "current")}
    migrated.update({"schema": SIDECAR_SCHEMA, "results": results, "migrated_from": SIDECAR_SCHEMA_V1})
    if data.get("current") in by_backend:
        migrated["current"] = by_backend[data["current"]]
    return migrated


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

    # --- where ------------------------------------------------------------------------------------
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

    def project_folder(self, folder: str | Path) -> Path:
        """Where the project file (labels, scale) of a photo folder lives."""
        return self.folders(Path(folder) / "_")[0]

    # --- reading ----------------------------------------------------------------------------------
    def read_sidecar(self, photo: str | Path) -> dict[str, Any] | None:
        """The sidecar of ``photo`` as a ``/2`` dict (a ``/1`` one migrated in memory), or None if none.

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
            schema = data.get("schema") if isinstance(data, dict) else None
            if schema not in (SIDECAR_SCHEMA, SIDECAR_SCHEMA_V1):
                raise ValueError(f"unknown schema {schema!r}")
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError) as exc:
            raise SidecarError(f"{path}: corrupt sidecar ({exc}); kept as {self._set_aside(path)}") from None
        return migrate_v1(data) if schema == SIDECAR_SCHEMA_V1 else data

    @staticmethod
    def _set_aside(path: Path) -> str:
        stamp = utc_now().replace(":", "")
        aside = path.with_name(f"{path.name}.corrupt-{stamp}")
        copy = 1
        while aside.exists():  # an earlier corrupt copy from the same second: never overwrite it
            copy += 1
            aside = path.with_name(f"{path.name}.corrupt-{stamp}-{copy}")
        os.replace(path, aside)
        return aside.name

    def _fresh(self, photo: Path, sha256: str | None) -> dict[str, Any] | None:
        data = self.read_sidecar(photo)
        if not data or (sha256 is not None and data.get("image", {}).get("sha256") != sha256):
            return None
        return data

    @staticmethod
    def _pick(data: dict[str, Any], key: str | None) -> str | None:
        """The stored key ``key`` names: a key, else a backend id (its current or newest result), else current."""
        results = data.get("results", {})
        if key is None:
            return data.get("current") if data.get("current") in results else None
        if key in results:
            return key
        current = results.get(data.get("current") or "")
        if isinstance(current, dict) and current.get("backend", {}).get("id") == key:
            return data["current"]
        same = [(e.get("created", ""), k) for k, e in results.items()
                if isinstance(e, dict) and e.get("backend", {}).get("id") == key]
        return max(same)[1] if same else None

    def list_results(self, photo: str | Path, *, sha256: str | None = None) -> list[ResultEntry]:
        """Every stored result of ``photo`` (oldest first), with provenance; empty if none or stale.

        Reads the sidecar only. Raises :class:`SidecarError` for a corrupt sidecar (moved aside).
        """
        data = self._fresh(Path(photo), sha256)
        if data is None:
            return []
        entries = []
        for key, entry in data.get("results", {}).items():
            try:
                record = ResultRecord.from_json(entry)
            except (KeyError, TypeError, ValueError):
                continue
            entries.append(ResultEntry(key, record, key == data.get("current"), describe(entry.get("layers", {}))))
        return sorted(entries, key=lambda e: e.record.created)

    def load_record(self, photo: str | Path, key: str | None = None, *,
                    sha256: str | None = None) -> ResultRecord | None:
        """Provenance of a stored result (sidecar only); None if absent, stale or malformed.

        ``key`` is a result key, or a backend id (that backend's current or newest result), or None (current).
        """
        data = self._fresh(Path(photo), sha256)
        chosen = self._pick(data, key) if data else None
        try:
            return ResultRecord.from_json(data["results"][chosen]) if chosen else None
        except (KeyError, TypeError, ValueError):
            return None

    def load_result(self, photo: str | Path, key: str | None = None, *,
                    sha256: str | None = None) -> StoredResult | None:
        """Read a stored result with its arrays and layers, or None if absent or stale.

        ``key`` as in :meth:`load_record`. With ``sha256`` given, a sidecar written for other image content
        counts as absent (stale). A result whose arrays are missing or unreadable counts as absent.
        Raises :class:`SidecarError` for a corrupt sidecar (moved aside).
        """
        photo = Path(photo)
        data = self._fresh(photo, sha256)
        chosen = self._pick(data, key) if data else None
        sidecar = self.sidecar_path(photo)
        if not chosen or sidecar is None:
            return None
        try:
            return self._read_entry(data, data["results"][chosen], sidecar.parent)
        except (KeyError, TypeError, ValueError, OSError):
            return None

    def _read_entry(self, data: dict[str, Any], entry: dict[str, Any], folder: Path) -> StoredResult:
        record = ResultRecord.from_json(entry)
        size = (data["image"]["height"], data["image"]["width"])
        heatmap = Heatmap(read_npy(folder / entry["heatmap"]["file"]), size,
                          entry["heatmap"].get("interpolation", "linear"))
        mask = None
        if "mask" in entry and (folder / entry["mask"]["file"]).exists():
            from protolens.core.imageio import read_mask

            mask = read_mask(folder / entry["mask"]["file"]) > 127
        probability = None
        if "probability" in entry:
            probability = Heatmap(read_npy(folder / entry["probability"]["file"]), size)
        score = read_npy(folder / entry["score"]["file"]) if "score" in entry else None
        return StoredResult(record, heatmap, mask, probability, score, self._read_layers(entry, folder, size))

    @staticmethod
    def _read_layers(entry: dict[str, Any], folder: Path, size: tuple[int, int]) -> ResultLayers:
        prefix = entry.get("files_prefix", "")
        return ResultLayers.from_files(entry.get("layers") or {}, lambda name: (folder / f"{prefix}{name}").read_bytes(),
                                       size)

    # --- writing ----------------------------------------------------------------------------------
    def _update(self, meta: ImageMeta, change: Callable[[dict[str, Any], Path], dict[str, Any]]) -> Path:
        """Read-modify-write the sidecar under its lock: ``change(existing, folder)`` writes array files into
        ``folder`` and returns the new sidecar. Tries the sidecar's folder first, then the others."""
        current = self.sidecar_path(meta.path)
        folders = self.folders(meta.path)
        if current is not None and current.parent in folders:
            folders = [current.parent] + [f for f in folders if f != current.parent]
        last_error: StoreWriteError | None = None
        for folder in folders:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                lock = FileLock(str(folder / f".{meta.path.name}.lock"), timeout=LOCK_TIMEOUT_S)
                with lock:
                    existing = self.read_sidecar(meta.path) or {}
                    if existing.get("image", {}).get("sha256") != meta.sha256:
                        existing = {}
                    sidecar = change(existing, folder)
                    sidecar.update(schema=SIDECAR_SCHEMA, image=meta.to_json(relative=True))
                    sidecar.pop("migrated_from", None)
                    path = folder / f"{meta.path.name}.json"
                    write_json_atomic(path, sidecar)
                    return path
            except Timeout:
                last_error = StoreWriteError(f"{folder}: the sidecar of {meta.path.name} stayed locked "
                                             f"for {LOCK_TIMEOUT_S:.0f} s (another protolens writing?)")
            except OSError as exc:
                last_error = StoreWriteError(f"{folder}: cannot write ({exc})")
            except StoreWriteError as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    def save_result(self, meta: ImageMeta, record: ResultRecord, heatmap: Heatmap,
                    mask: np.ndarray | None = None, probability: Heatmap | None = None,
                    score: np.ndarray | None = None, layers: ResultLayers | None = None, *,
                    make_current: bool = True) -> Path:
        """Save a result under its key (native-resolution heatmap, probability map and raw scores, full-resolution
        mask, typed layers, provenance); a result with the same key is replaced, others are kept.

        ``score`` is the backend's raw mass map (same grid as the heatmap), kept for mass thresholds. The mask
        defaults to :func:`result_mask` at full resolution. Returns the sidecar path.

        Raises :class:`StoreWriteError` if no store folder can be written, and :class:`SidecarError` if an
        existing sidecar is corrupt (it is moved aside first).
        """
        if mask is None:
            mask = result_mask(heatmap.full_resolution(), record,
                               probability.full_resolution() if probability is not None else None)

        def change(existing: dict[str, Any], folder: Path) -> dict[str, Any]:
            entry = self._write_arrays(folder, meta, record, heatmap, mask, probability, score, layers)
            results = dict(existing.get("results", {}))
            old = results.get(record.key)
            results[record.key] = entry
            self._remove_orphans(folder, old, entry)
            current = record.key if make_current or not existing.get("current") else existing["current"]
            return {**existing, "results": results, "current": current}

        return self._update(meta, change)

    @staticmethod
    def _write_arrays(folder: Path, meta: ImageMeta, record: ResultRecord, heatmap: Heatmap, mask: np.ndarray,
                      probability: Heatmap | None, score: np.ndarray | None,
                      layers: ResultLayers | None) -> dict[str, Any]:
        prefix = f"{meta.path.name}.{record.key}."
        write_npy_atomic(folder / f"{prefix}heatmap.npy", heatmap.values)
        write_png_atomic(folder / f"{prefix}mask.png", mask_to_png_array(mask))
        entry = record.to_json()
        entry["files_prefix"] = prefix
        entry["heatmap"] = {"file": f"{prefix}heatmap.npy", "shape": list(heatmap.values.shape),
                            "resolution": "native", "interpolation": heatmap.interpolation}
        entry["mask"] = {"file": f"{prefix}mask.png"}
        if probability is not None:
            write_npy_atomic(folder / f"{prefix}probability.npy", probability.values)
            entry["probability"] = {"file": f"{prefix}probability.npy", "shape": list(probability.values.shape)}
        if score is not None:
            write_npy_atomic(folder / f"{prefix}score.npy", np.asarray(score, dtype=np.float32))
            entry["score"] = {"file": f"{prefix}score.npy", "shape": list(np.shape(score))}
        if layers:
            entry["layers"], files = layers.to_files()
            for suffix, data in files.items():
                write_bytes_atomic(folder / f"{prefix}{suffix}", data)
        return entry

    @staticmethod
    def _entry_files(entry: dict[str, Any] | None) -> set[str]:
        if not isinstance(entry, dict):
            return set()
        files = {entry[f]["file"] for f in _FILE_FIELDS if isinstance(entry.get(f), dict) and "file" in entry[f]}
        prefix = entry.get("files_prefix", "")
        files |= {f"{prefix}{layer['file']}" for layer in (entry.get("layers") or {}).values()
                  if isinstance(layer, dict) and "file" in layer}
        return files

    def _remove_orphans(self, folder: Path, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        for name in self._entry_files(old) - self._entry_files(new):
            (folder / name).unlink(missing_ok=True)

    def set_current(self, meta: ImageMeta, key: str) -> Path:
        """Mark the stored result ``key`` current. Raises ``KeyError`` if the photo has no such result."""
        def change(existing: dict[str, Any], folder: Path) -> dict[str, Any]:
            if key not in existing.get("results", {}):
                raise KeyError(f"{meta.path.name} has no result {key}")
            return {**existing, "current": key}

        return self._update(meta, change)

    def delete_result(self, meta: ImageMeta, key: str) -> Path:
        """Delete the stored result ``key`` and its files; the newest remaining result becomes current if it was.

        Raises ``KeyError`` if the photo has no such result, :class:`StoreWriteError` if it cannot be written.
        """
        def change(existing: dict[str, Any], folder: Path) -> dict[str, Any]:
            results = dict(existing.get("results", {}))
            if key not in results:
                raise KeyError(f"{meta.path.name} has no result {key}")
            self._remove_orphans(folder, results.pop(key), None)
            current = existing.get("current")
            if current == key:
                current = max(results, key=lambda k: results[k].get("created", "")) if results else None
            return {**existing, "results": results, "current": current}

        return self._update(meta, change)

    def write_section(self, meta: ImageMeta, section: str, value: dict[str, Any],
                      files: dict[str, bytes] | None = None) -> Path:
        """Write ``files`` ({suffix: bytes}, saved as ``<photo name>.<suffix>`` beside the sidecar) and set
        sidecar ``section`` to ``value``, keeping the other sections (all only if the image content matches).

        Raises :class:`StoreWriteError` if no store folder can be written, :class:`SidecarError` for a
        corrupt sidecar (moved aside first).
        """
        def change(existing: dict[str, Any], folder: Path) -> dict[str, Any]:
            for suffix, data in (files or {}).items():
                write_bytes_atomic(folder / f"{meta.path.name}.{suffix}", data)
            return {"results": {}, **existing, section: value}

        return self._update(meta, change)

    def section(self, photo: str | Path, section: str, *, sha256: str | None = None) -> tuple[dict, Path] | None:
        """A sidecar section and the folder its files are in, or None (absent, or stale for ``sha256``).

        Raises :class:`SidecarError` for a corrupt sidecar (moved aside first).
        """
        data = self._fresh(Path(photo), sha256)
        path = self.sidecar_path(photo)
        if not data or path is None or not isinstance(data.get(section), dict):
            return None
        return data[section], path.parent
