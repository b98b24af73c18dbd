"""The thumbnail strip: one entry per photo of the folder, previews decoded on the thread pool."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import QListView, QListWidget, QListWidgetItem, QWidget

from protolens.core.errors import ImageReadError
from protolens.core.imageio import read_thumbnail
from protolens.gui.workers import JobRunner

THUMB_SIDE = 96


def rgb_to_qimage(rgb: np.ndarray) -> QImage:
    """A deep-copied QImage of (h, w, 3) uint8 RGB (safe to build on a worker thread)."""
    rgb = np.ascontiguousarray(rgb)
    height, width, _ = rgb.shape
    return QImage(rgb.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()


def _load(path: Path) -> tuple[Path, QImage | None, str]:
    try:
        return path, rgb_to_qimage(read_thumbnail(path, THUMB_SIDE)), ""
    except ImageReadError as exc:
        return path, None, exc.reason


class ThumbnailStrip(QListWidget):
    """Horizontal list of photo thumbnails. ``photo_selected(index)`` fires when the user picks one."""

    photo_selected = Signal(int)

    def __init__(self, jobs: JobRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._jobs = jobs
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(False)
        self.setMovement(QListView.Movement.Static)
        self.setIconSize(QSize(THUMB_SIDE, THUMB_SIDE))
        self.setFixedHeight(THUMB_SIDE + 48)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.setStyleSheet("QListWidget{background:#252525;color:#ddd;border:none;}"
                           "QListWidget::item:selected{background:#2d5f8a;color:white;}")
        self.paths: list[Path] = []
        self.currentRowChanged.connect(self._row_changed)

    def set_paths(self, paths: list[Path]) -> None:
        """Show ``paths`` (placeholders first; previews arrive as they are decoded)."""
        self.blockSignals(True)
        self.clear()
        self.paths = list(paths)
        for path in self.paths:
            item = QListWidgetItem(path.name)
            item.setToolTip(str(path))
            item.setSizeHint(QSize(THUMB_SIDE + 16, THUMB_SIDE + 36))
            self.addItem(item)
        self.blockSignals(False)
        for path in self.paths:
            self._jobs.submit(_load, path, kind="thumbnail", on_result=self._thumbnail_ready)

    def _thumbnail_ready(self, result: tuple[Path, QImage | None, str]) -> None:
        path, image, error = result
        if path not in self.paths:
            return
        item = self.item(self.paths.index(path))
        if image is not None:
            item.setIcon(QIcon(QPixmap.fromImage(image)))
        else:
            item.setText(f"⚠ {path.name}")
            item.setToolTip(f"{path}: {error}")

    def select(self, index: int) -> None:
        """Select entry ``index`` without emitting ``photo_selected``."""
        self.blockSignals(True)
        self.setCurrentRow(index)
        self.scrollToItem(self.item(index))
        self.blockSignals(False)

    def _row_changed(self, row: int) -> None:
        if row >= 0:
            self.photo_selected.emit(row)
