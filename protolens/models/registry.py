"""Backend discovery: ``plugins/*/plugin.toml`` folders and the ``protolens.backends`` entry-point group.

Manifests are read without importing plugin code, so listing backends (and building their GUI forms
and CLI options) is fast and never imports torch. A plugin is imported on first use; if that fails it
is listed as unavailable with its error, and the other backends keep working.

Plugin folders searched, in order: ``PROTOLENS_PLUGIN_PATH`` (``os.pathsep``-separated), the
``plugins/`` folder of this source tree, and ``<user data dir>/protolens/plugins``. The first
manifest with a given id wins.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
import threading
import tomllib
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protolens.core.errors import BackendUnavailableError, ParamError
from protolens.core.params import parse_param_specs
from protolens.models.api import BACKEND_KINDS, Backend, BackendManifest, WeightsSpec

ENTRY_POINT_GROUP = "protolens.backends"
_PACKAGE = "protolens_plugins"


def default_plugin_dirs() -> list[Path]:
    """Folders searched for plugin sub-folders (see the module docstring)."""
    dirs = [Path(p) for p in os.environ.get("PROTOLENS_PLUGIN_PATH", "").split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parents[2] / "plugins")
    import platformdirs

    dirs.append(Path(platformdirs.user_data_dir("protolens", appauthor=False)) / "plugins")
    return dirs


def parse_manifest(data: dict[str, Any], source: str) -> BackendManifest:
    """Validate a manifest dict (from TOML or a ``MANIFEST`` attribute).

    Raises
    ------
    ParamError
        Missing keys, unknown kind, or invalid parameter declarations.
    """
    missing = [key for key in ("id", "name", "version", "kind", "entry") if key not in data]
    if missing:
        raise ParamError(f"{source}: manifest lacks {', '.join(missing)}")
    if data["kind"] not in BACKEND_KINDS:
        raise ParamError(f"{source}: kind must be one of {', '.join(BACKEND_KINDS)}")
    weights = tuple(
        WeightsSpec(name=name, hf_repo=entry["hf_repo"], filename=entry.get("filename", "model.safetensors"),
                    size_bytes=entry.get("size_bytes"), licence=entry.get("licence", "unknown"),
                    sha256=entry.get("sha256"), extra_files=tuple(entry.get("extra_files", ())))
        for name, entry in data.get("weights", {}).items()
    )
    return BackendManifest(
        id=data["id"], name=data["name"], version=str(data["version"]), kind=data["kind"], entry=data["entry"],
        description=data.get("description", ""), params=tuple(parse_param_specs(data.get("params", {}))),
        weights=weights, weights_param=data.get("weights_param"), requires=tuple(data.get("requires", ())),
        source=source, weights_file=str(data.get("weights_file", "")),
    )


@dataclass
class BackendEntry:
    """A discovered backend: its manifest (None if unreadable), availability and error."""

    id: str
    manifest: BackendManifest | None
    origin: str
    available: bool = True
    error: str | None = None
    folder: Path | None = None
    loaded_class: type[Backend] | None = None


def _missing_requirements(requires: tuple[str, ...]) -> list[str]:
    missing = []
    for module in requires:
        try:
            if importlib.util.find_spec(module) is None:
                missing.append(module)
        except (ImportError, ValueError):
            missing.append(module)
    return missing


def _folder_entries(folder: Path) -> list[BackendEntry]:
    entries = []
    if not folder.is_dir():
        return entries
    for manifest_path in sorted(folder.glob("*/plugin.toml")):
        plugin_dir = manifest_path.parent
        try:
            data = tomllib.loads(manifest_path.read_text(encoding="utf-8"))
            manifest = parse_manifest(data, str(manifest_path))
        except Exception as exc:  # noqa: BLE001 - a broken manifest (bad encoding, wrong table shape) is never fatal
            entries.append(BackendEntry(plugin_dir.name, None, str(manifest_path), False,
                                        f"invalid manifest: {exc}", plugin_dir))
            continue
        entry = BackendEntry(manifest.id, manifest, str(manifest_path), folder=plugin_dir)
        missing = _missing_requirements(manifest.requires)
        if missing:
            entry.available, entry.error = False, f"missing Python package(s): {', '.join(missing)}"
        entries.append(entry)
    return entries


def _entry_point_entries() -> list[BackendEntry]:
    entries = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        origin = f"entry point {ep.name} = {ep.value}"
        try:
            cls = ep.load()
            manifest = parse_manifest(dict(cls.MANIFEST, entry=ep.value), origin)
            entries.append(BackendEntry(manifest.id, manifest, origin, loaded_class=cls))
        except Exception as exc:  # noqa: BLE001 - a broken third-party plugin must never be fatal
            entries.append(BackendEntry(ep.name, None, origin, False, f"{type(exc).__name__}: {exc}"))
    return entries


def _plugin_package(folder: Path) -> str:
    """Register ``folder`` as package ``protolens_plugins.<name>`` so its modules import normally."""
    if _PACKAGE not in sys.modules:
        root = types.ModuleType(_PACKAGE)
        root.__path__ = []  # type: ignore[attr-defined]
        sys.modules[_PACKAGE] = root
    base = name = f"{_PACKAGE}.{folder.name}"
    count = 1
    # Same-named folders under different plugin roots get their own packages (else one runs the other's code).
    while name in sys.modules and [os.path.realpath(p) for p in getattr(sys.modules[name], "__path__", ())] != [
            os.path.realpath(folder)]:
        count += 1
        name = f"{base}__{count}"
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]  # type: ignore[attr-defined]
        sys.modules[name] = package
    return name


class Registry:
    """The backends known to this process. Thread-safe; backends are created once and reused."""

    def __init__(self, entries: list[BackendEntry]) -> None:
        self._entries: dict[str, BackendEntry] = {}
        for entry in entries:
            self._entries.setdefault(entry.id, entry)
        self._instances: dict[str, Backend] = {}
        self._lock = threading.RLock()

    @classmethod
    def discover(cls, plugin_dirs: list[Path] | None = None, *, entry_points: bool = True) -> Registry:
        """Find all backends (see the module docstring). Never raises for a broken plugin."""
        entries: list[BackendEntry] = []
        for folder in plugin_dirs if plugin_dirs is not None else default_plugin_dirs():
            entries.extend(_folder_entries(Path(folder)))
        if entry_points:
            entries.extend(_entry_point_entries())
        return cls(entries)

    def entries(self) -> list[BackendEntry]:
        """All discovered backends, available or not, in discovery order."""
        with self._lock:
            return list(self._entries.values())

    def entry(self, backend_id: str) -> BackendEntry:
        """The entry of ``backend_id``; raises :class:`BackendUnavailableError` naming the known ids."""
        with self._lock:
            if backend_id not in self._entries:
                known = ", ".join(sorted(self._entries)) or "none"
                raise BackendUnavailableError(f"unknown backend {backend_id!r}; known backends: {known}")
            return self._entries[backend_id]

    def manifest(self, backend_id: str) -> BackendManifest:
        """The manifest of ``backend_id``; raises :class:`BackendUnavailableError`."""
        entry = self.entry(backend_id)
        if entry.manifest is None:
            raise BackendUnavailableError(f"backend {backend_id!r} is unavailable: {entry.error}")
        return entry.manifest

    def create(self, backend_id: str) -> Backend:
        """The (shared) instance of ``backend_id``, importing its plugin on first use.

        Raises
        ------
        BackendUnavailableError
            Unknown id, unreadable manifest, missing requirements, or an import error (the entry is then
            marked unavailable with that error).
        """
        with self._lock:
            if backend_id in self._instances:
                return self._instances[backend_id]
            entry = self.entry(backend_id)
            if not entry.available or entry.manifest is None:
                raise BackendUnavailableError(f"backend {backend_id!r} is unavailable: {entry.error}")
            try:
                cls = entry.loaded_class or self._import_class(entry)
                instance = cls()
            except Exception as exc:  # noqa: BLE001 - plugin code may raise anything on import
                entry.available, entry.error = False, f"{type(exc).__name__}: {exc}"
                raise BackendUnavailableError(f"backend {backend_id!r} failed to load: {entry.error}") from exc
            instance.manifest = entry.manifest
            self._instances[backend_id] = instance
            return instance

    @staticmethod
    def _import_class(entry: BackendEntry) -> type[Backend]:
        assert entry.manifest is not None and entry.folder is not None
        module_name, _, class_name = entry.manifest.entry.partition(":")
        package = _plugin_package(entry.folder)
        module = importlib.import_module(f"{package}.{module_name}")
        cls = getattr(module, class_name)
        if not (isinstance(cls, type) and issubclass(cls, Backend)):
            raise TypeError(f"{entry.manifest.entry} is not a protolens Backend subclass")
        return cls
