"""Weights catalogue and explicit downloads, over every backend's manifest."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from protolens.core.errors import WeightsNotFoundError
from protolens.core.jobs import CancelToken
from protolens.models.api import WeightsSpec
from protolens.models.registry import Registry


def catalogue(registry: Registry) -> list[tuple[str, WeightsSpec]]:
    """(backend id, weights spec) for every weights entry of every readable manifest."""
    rows = []
    for entry in registry.entries():
        if entry.manifest is not None:
            rows.extend((entry.id, spec) for spec in entry.manifest.weights)
    return rows


def find_spec(registry: Registry, name: str) -> WeightsSpec:
    """The catalogue entry called ``name``; raises :class:`WeightsNotFoundError` listing the known names."""
    for _, spec in catalogue(registry):
        if spec.name == name:
            return spec
    known = ", ".join(sorted({spec.name for _, spec in catalogue(registry)})) or "none"
    raise WeightsNotFoundError(f"no weights called {name!r}; known: {known}")


def cached_path(spec: WeightsSpec) -> Path | None:
    """Where ``spec`` lies in the local Hugging Face cache, or None (no network)."""
    from protolens.models.weights import hf_cached_file

    return hf_cached_file(spec)


def pull(spec: WeightsSpec, *, progress: Callable[[int, int | None], None] | None = None,
         cancel: CancelToken | None = None) -> Path:
    """Download ``spec`` into the Hugging Face cache (explicit user action). See ``models.weights.pull_weights``."""
    from protolens.models.weights import pull_weights

    return pull_weights(spec, progress=progress, cancel=cancel)


def remote_size(spec: WeightsSpec) -> int | None:
    """The download size in bytes as the Hub reports it (network), falling back to the catalogue's."""
    from protolens.models.weights import remote_info

    try:
        return remote_info(spec)["size_bytes"] or spec.size_bytes
    except Exception:  # noqa: BLE001 - offline: show the catalogue's size
        return spec.size_bytes
