"""Decoding photos on the thread pool, with a small LRU of decoded images and neighbour prefetch."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal

from protolens.core.cache import MemoryCache
from protolens.core.errors import ImageReadError
from protolens.gui.workers import JobRunner
from protolens.services.segment import LoadedImage, load_image


def _decode(path: Path) -> tuple[Path, LoadedImage | None, str]:
    try:
        return path, load_image(path), ""
    except ImageReadError as exc:
        return path, None, str(exc)
    except OSError as exc:
        return path, None, f"{path}: {exc.strerror or exc}"


class ImageLoader(QObject):
    """``request(path)`` decodes off the UI thread; ``loaded(LoadedImage)`` or ``failed(path, message)`` follow.

    Decoded images are kept in an LRU (``capacity`` photos) so returning to one, or stepping to a
    prefetched neighbour, needs no decode at all.
    """

    loaded = Signal(object)
    failed = Signal(object, str)

    def __init__(self, jobs: JobRunner, capacity: int = 6, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._jobs = jobs
        self._cache: MemoryCache[LoadedImage] = MemoryCache(capacity)
        self._pending: set[Path] = set()
        self._wanted: Path | None = None

    def cached(self, path: Path) -> LoadedImage | None:
        """The decoded image if it is in memory, else None (never decodes)."""
        return self._cache.get(str(path))

    def request(self, path: Path) -> None:
        """Decode ``path`` (unless cached or already in flight) and emit ``loaded``/``failed`` for it."""
        self._wanted = path
        image = self.cached(path)
        if image is not None:
            self.loaded.emit(image)
            return
        self._start(path)

    def prefetch(self, paths: list[Path]) -> None:
        """Decode ``paths`` in the background (no signal unless one becomes the requested path)."""
        for path in paths:
            if self.cached(path) is None:
                self._start(path)

    def _start(self, path: Path) -> None:
        if path in self._pending:
            return
        self._pending.add(path)
        self._jobs.submit(_decode, path, kind="decode", on_result=self._done)

    def _done(self, result: tuple[Path, LoadedImage | None, str]) -> None:
        path, image, error = result
        self._pending.discard(path)
        if image is not None:
            self._cache.put(str(path), image)
        if path != self._wanted:
            return
        if image is not None:
            self.loaded.emit(image)
        else:
            self.failed.emit(path, error)
