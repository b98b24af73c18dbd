"""The Compare view (View ▸ Compare, Ctrl+K): results of the current photo side by side in a synchronised grid.

Each pane shows one stored result picked from the photo's results (any backend, parameters or weights, e.g.
two training checkpoints). Zoom, pan and a crosshair are shared by every pane (pyqtgraph view links); one
threshold, semantics and colormap apply to every pane that does not set its own. An optional difference pane
shows map A − B on a diverging colormap, or the XOR of their masks. Pane titles carry the agreement with
pane 1: IoU of the masks at the current thresholds and Pearson / Spearman correlation of the maps, all on the
common grid of :func:`protolens.services.compare.compare_grid`. A/D move every pane to the next photo and
keep the choice of results (keys are the same for every photo). Export writes the same PNG and JSON as
``protolens compare``.

Speed: results are read and put on the common grid off the UI thread and cached per (photo, key); the map
correlations are computed once per pair and photo; a threshold move only changes lookup tables and the IoUs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
from cachetools import LRUCache
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledDoubleSlider

from protolens.core.thresholds import MassThresholder
from protolens.gui.canvas import COLORMAPS
from protolens.gui.compare_pane import ComparePane
from protolens.services import compare as cmp

LAYOUTS = {"1×2": (1, 2), "2×2": (2, 2), "2×3": (2, 3), "3×3": (3, 3)}
PHOTO_MAX_SIDE = 1600


class LoadedPane(NamedTuple):
    """A stored result ready for a pane: the result, its map on the common grid, a mass thresholder for live
    mass thresholds, the map's ranks (for Spearman) and the map to draw ((rows, cols) float32, longer side
    <= 1024)."""

    found: Any
    pane: cmp.PaneData
    thresholder: MassThresholder
    ranks: np.ndarray
    display: np.ndarray


def load_pane(store: Any, image: Any, key: str, grid: tuple[int, int]) -> tuple[str, LoadedPane | None]:
    """Read stored result ``key`` of ``image`` and prepare it for a pane (everything costly happens here, on a
    worker thread): (key, LoadedPane or None when the photo has no such result)."""
    from protolens.services.results import load_found

    found = load_found(store, image, key)
    if found is None:
        return key, None
    pane = cmp.pane_data(found, grid)
    return key, LoadedPane(found, pane, MassThresholder(pane.values, pane.score), cmp.rank_map(pane.values),
                           found.heatmap.display(1024))


def shrink_photo(rgb: Any, max_side: int = PHOTO_MAX_SIDE) -> Any:
    """The photo for the panes: (rows, cols, 3) uint8 with the longer side at most ``max_side``."""
    height, width = rgb.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return rgb
    return cv2.resize(rgb, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)


class CompareView(QWidget):
    """The Compare grid over a :class:`~protolens.gui.controller.PhotoController` (see the module docstring)."""

    settings_prefix = "compare"
    """Prefix of the settings this view persists (``<prefix>_layout``); views built on it use their own."""

    def __init__(self, controller: Any, jobs: Any, settings: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller, self.jobs, self.settings = controller, jobs, settings
        self.keys: list[str | None] = [None] * 9
        self.entries: list[Any] = []
        self.data: dict[int, LoadedPane] = {}
        self._cache: LRUCache = LRUCache(maxsize=72)
        self._correlations: LRUCache = LRUCache(maxsize=512)  # (photo sha256, key A, key B) -> (r, rho)
        self._photos: LRUCache = LRUCache(maxsize=4)  # photo sha256 -> the shrunk copy the panes draw
        self._image: Any = None
        self.panes = [ComparePane(i) for i in range(9)]
        self.difference_pane = ComparePane(9, difference=True)
        self._build()
        for pane in self.panes:
            pane.key_chosen.connect(lambda key, p=pane: self.choose(p.index, key))
            pane.override_changed.connect(lambda p=pane: self._apply_pane(p.index) or self._refresh_titles())
        for pane in (*self.panes, self.difference_pane):
            pane.canvas.hovered.connect(self._hovered)
            if pane is not self.panes[0]:
                pane.canvas.view.setXLink(self.panes[0].canvas.view)
                pane.canvas.view.setYLink(self.panes[0].canvas.view)
        controller.photo_changed.connect(self._photo_changed)
        controller.results_listed.connect(self._entries)
        self.set_layout(str(settings.value(f"{self.settings_prefix}_layout", "2×2")))

    # --- construction ----------------------------------------------------------------------------
    def _build(self) -> None:
        bar = QHBoxLayout()
        self.layout_combo = QComboBox()
        self.layout_combo.addItems(list(LAYOUTS))
        self.layout_combo.currentTextChanged.connect(self.set_layout)
        self.threshold = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.threshold.setRange(0.0, 1.0)
        self.threshold.setSingleStep(0.01)
        self.threshold.setValue(0.5)
        self.threshold.valueChanged.connect(lambda _v: self.apply_thresholds())
        self.semantics = QComboBox()
        self.semantics.addItem("by value", "value")
        self.semantics.addItem("by attention mass", "mass")
        self.semantics.currentIndexChanged.connect(lambda _i: self.apply_thresholds())
        self.colormap = QComboBox()
        self.colormap.addItems(COLORMAPS)
        self.colormap.currentTextChanged.connect(lambda _t: self._apply_all())
        self.diff_on = QCheckBox("difference")
        self.diff_a, self.diff_b = QSpinBox(), QSpinBox()
        for spin, value in ((self.diff_a, 1), (self.diff_b, 2)):
            spin.setRange(1, 9)
            spin.setValue(value)
            spin.setPrefix("A=" if value == 1 else "B=")
            spin.valueChanged.connect(lambda _v: self._update_difference())
        self.diff_mode = QComboBox()
        self.diff_mode.addItem("A − B", "map")
        self.diff_mode.addItem("mask XOR", "xor")
        self.diff_on.toggled.connect(lambda _on: self.set_layout(self.layout_combo.currentText()))
        self.diff_mode.currentIndexChanged.connect(lambda _i: self._update_difference())
        self.export_button = QPushButton("Export…")
        self.export_button.clicked.connect(lambda: self.export())
        for widget in (QLabel("grid"), self.layout_combo, QLabel("threshold"), self.threshold, self.semantics,
                       self.colormap, self.diff_on, self.diff_a, self.diff_b, self.diff_mode, self.export_button):
            bar.addWidget(widget, 3 if widget is self.threshold else 0)
        self.grid = QGridLayout()
        self.grid.setSpacing(3)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(bar)
        layout.addLayout(self.grid, 1)

    def set_layout(self, name: str) -> None:
        """Lay out ``name`` (1×2 up to 3×3); with a difference pane it takes the last cell."""
        rows, cols = LAYOUTS.get(name, (2, 2))
        if self.layout_combo.currentText() != name and name in LAYOUTS:
            self.layout_combo.setCurrentText(name)
        self.settings.setValue(f"{self.settings_prefix}_layout", name)
        for pane in (*self.panes, self.difference_pane):
            self.grid.removeWidget(pane)
            pane.setVisible(False)
        count = rows * cols - (1 if self.diff_on.isChecked() else 0)
        shown = [*self.panes[:count], *([self.difference_pane] if self.diff_on.isChecked() else [])]
        for cell, pane in enumerate(shown):
            self.grid.addWidget(pane, *divmod(cell, cols))
            pane.setVisible(True)
        self._fill_keys()
        self._load()
        self._update_difference()

    @property
    def count(self) -> int:
        """Result panes shown (without the difference pane)."""
        rows, cols = LAYOUTS[self.layout_combo.currentText()]
        return rows * cols - (1 if self.diff_on.isChecked() else 0)

    # --- photo and results -----------------------------------------------------------------------
    def activate(self) -> None:
        """Shown: take the controller's photo and its results."""
        if self.controller.image is not self._image:
            self._photo_changed(self.controller.image)
        self._entries(self.controller.entries)
        self.controller.refresh_entries()

    def _photo_changed(self, image: Any) -> None:
        self._image, self.data = image, {}
        photo = None
        if image is not None:
            photo = self._photos.get(image.meta.sha256)
            if photo is None:
                photo = self._photos[image.meta.sha256] = shrink_photo(image.rgb)
        size = None if image is None else (image.meta.height, image.meta.width)
        for pane in (*self.panes, self.difference_pane):
            pane.canvas.set_photo(photo, keep_view=True, image_size=size)
            pane.set_title("loading…" if image is not None else "no photo")
        if image is not None and self.isVisible():
            self._load()

    def _entries(self, entries: list[Any]) -> None:
        self.entries = list(entries)
        for pane in self.panes:
            pane.set_entries(self.entries)
        if self._fill_keys():
            for pane in self.panes:
                pane.set_entries(self.entries)
        self._load()

    def _fill_keys(self) -> bool:
        """Give panes without a result the photo's results in order (repeating if fewer); True if any changed."""
        entries = self.entries
        changed = False
        for index in range(self.count):
            if self.keys[index] is None and entries:
                self.keys[index] = entries[index % len(entries)].key
                self.panes[index].key = self.keys[index]
                changed = True
        return changed

    def choose(self, index: int, key: str) -> None:
        """Show stored result ``key`` in pane ``index`` (0-based); kept for the next photos."""
        self.keys[index] = key or None
        self.panes[index].key = key or None
        self.data.pop(index, None)
        self._load()

    def _load(self) -> None:
        image = self._image
        if image is None or not self.isVisible():
            return
        grid = cmp.compare_grid((image.meta.height, image.meta.width))
        for index in range(self.count):
            key = self.keys[index]
            if key is None or index in self.data:
                continue
            cached = self._cache.get((image.meta.sha256, key))
            if cached is not None:
                self._pane_loaded(image, index, cached)
                continue
            self.jobs.submit(load_pane, self.controller.store, image, key, grid, kind="lookup",
                             on_result=lambda result, i=index: self._pane_loaded(image, i, result),
                             on_error=lambda exc, i=index: self.panes[i].set_title(f"error: {exc}"))

    def _pane_loaded(self, image: Any, index: int, result: tuple[str, LoadedPane | None]) -> None:
        key, loaded = result
        if image is not self._image or key != self.keys[index]:
            return
        self._cache[(image.meta.sha256, key)] = result
        pane = self.panes[index]
        if loaded is None:
            self.data.pop(index, None)
            pane.show_map(None)
            pane.set_title(f"{index + 1}. no result {key[:8]} for this photo")
            return
        self.data[index] = loaded
        pane_data = loaded.pane
        pane.show_map(loaded.display, pane_data.threshold, loaded.found.heatmap.interpolation)
        if self.semantics.currentData() == pane_data.semantics and len(self.data) == 1:
            self.threshold.blockSignals(True)
            self.threshold.setValue(pane_data.level)
            self.threshold.blockSignals(False)
        self._apply_pane(index)
        self._refresh_titles()
        if index in (self.diff_a.value() - 1, self.diff_b.value() - 1):
            self._update_difference()

    # --- thresholds, colormaps, titles -----------------------------------------------------------
    def pane_threshold(self, index: int) -> tuple[float, str]:
        """(threshold, semantics) in force for pane ``index``: its own, else the shared ones."""
        pane = self.panes[index]
        if pane.overridden:
            return pane.own_threshold.value(), self.semantics.currentData()
        return self.threshold.value(), self.semantics.currentData()

    def _apply_pane(self, index: int) -> None:
        if index not in self.data:
            return
        loaded = self.data[index]
        level, semantics = self.pane_threshold(index)
        value = level if semantics == "value" else loaded.thresholder.value_threshold(level)
        self.data[index] = loaded._replace(pane=dataclasses.replace(
            loaded.pane, threshold=float(value), semantics=semantics, requested_threshold=float(level)))
        pane = self.panes[index]
        pane.canvas.set_threshold(value)
        pane.canvas.set_colormap(pane.own_colormap.currentText() if pane.overridden else self.colormap.currentText())

    def _apply_all(self) -> None:
        for index in range(self.count):
            self._apply_pane(index)

    def apply_thresholds(self) -> None:
        """The shared threshold or semantics moved: redraw every pane's mask and the titles (no model runs)."""
        self._apply_all()
        self._refresh_titles()
        if self.diff_mode.currentData() == "xor":
            self._update_difference()

    def panes_data(self) -> list[Any]:
        """The PaneData of the result panes shown, in order (panes without a result left out)."""
        return [self.data[i].pane for i in range(self.count) if i in self.data]

    def agreement_with_first(self, index: int) -> cmp.Agreement | None:
        """Agreement of pane ``index`` with pane 1 at the current thresholds (None if either has no result)."""
        return self.agreement_between(0, index)

    def agreement_between(self, first: int, second: int) -> cmp.Agreement | None:
        """Agreement of two panes (0-based) at the current thresholds; correlations cached per photo."""
        if first not in self.data or second not in self.data:
            return None
        a, b = self.data[first].pane, self.data[second].pane
        pair = (self._image.meta.sha256, a.key, b.key)
        if pair not in self._correlations:
            self._correlations[pair] = cmp.ranked_correlations(a.values, b.values, self.data[first].ranks,
                                                               self.data[second].ranks)
        pearson, spearman = self._correlations[pair]
        return cmp.Agreement(cmp.iou(cmp.mask(a), cmp.mask(b)), pearson, spearman)

    def _refresh_titles(self) -> None:
        for index in range(self.count):
            if index not in self.data:
                continue
            pane_data = self.data[index].pane
            head = cmp.pane_title(index, pane_data).replace("\n", "  ·  ")
            figures = "reference for the agreement figures" if index == 0 else _figures(self.agreement_with_first(index))
            self.panes[index].set_title(f"{head}\n{figures}")

    # --- difference pane, cursor, export ---------------------------------------------------------
    def difference_pair(self) -> tuple[int, int] | None:
        """The 0-based panes of the difference (None when off or either pane has no result)."""
        a, b = self.diff_a.value() - 1, self.diff_b.value() - 1
        if not self.diff_on.isChecked() or a == b or a not in self.data or b not in self.data:
            return None
        return a, b

    def _update_difference(self) -> None:
        pair = self.difference_pair()
        pane = self.difference_pane
        if pair is None:
            pane.show_map(None)
            pane.set_title("difference: pick two panes with results (A ≠ B)")
            return
        a, b = (self.data[i].pane for i in pair)
        if self.diff_mode.currentData() == "map":
            scale = cmp.difference_scale(a, b)  # the colours span ±scale, as in the export
            values = np.clip(cmp.difference_map(a, b) / (2.0 * scale) + 0.5, 0.0, 1.0)
            legend = (f"{pair[0] + 1} − {pair[1] + 1} (±{scale:.2f}): red where {pair[0] + 1} is higher, "
                      f"blue where {pair[1] + 1} is")
        else:
            values = cmp.xor_mask(a, b).astype("float32")
            legend = f"{pair[0] + 1} xor {pair[1] + 1}: masks disagree (bright)"
        pane.show_map(values, 1.0)
        agreement = self.agreement_between(*pair)
        pane.set_title(f"difference {legend}\n{_figures(agreement)}")

    def _hovered(self, x: float, y: float, _score: float) -> None:
        for pane in (*self.panes[:self.count], self.difference_pane):
            pane.set_cursor(x, y)

    def export_folder(self, out_dir: str | Path | None, setting: str, caption: str) -> str | Path | None:
        """``out_dir``, or a folder the user picks (starting at the last one, kept under ``setting``); None if
        the user cancels."""
        if not out_dir:
            out_dir = QFileDialog.getExistingDirectory(self, caption, str(self.settings.value(setting, "")))
            if not out_dir:
                return None
        self.settings.setValue(setting, str(out_dir))
        return out_dir

    def export(self, out_dir: str | Path | None = None) -> None:
        """Write the grid as ``<photo>.compare.png`` and its agreement figures as ``<photo>.compare.json``."""
        if self._image is None or not self.data:
            self.controller.message.emit("Nothing to compare yet: no results on this photo.", "warning")
            return
        out_dir = self.export_folder(out_dir, "compare_folder", "Export the comparison into")
        if not out_dir:
            return
        panes = self.panes_data()
        shown = [i for i in range(self.count) if i in self.data]
        pair = self.difference_pair()
        difference = None if pair is None else (shown.index(pair[0]), shown.index(pair[1]))
        rows, cols = LAYOUTS[self.layout_combo.currentText()]
        self.jobs.submit(cmp.export_compare, out_dir, self._image, panes, columns=cols, difference=difference,
                         difference_mode=self.diff_mode.currentData(), colormap=self.colormap.currentText(),
                         kind="export",
                         on_result=lambda paths: self.controller.message.emit(
                             f"exported {', '.join(p.name for p in paths)} to {out_dir}", "info"),
                         on_error=lambda exc: self.controller.message.emit(f"compare export failed: {exc}", "error"))


def _figures(agreement: cmp.Agreement | None) -> str:
    if agreement is None:
        return "vs 1: —"
    values = agreement.as_json()
    text = {k: "n/a" if v is None else f"{v:.3f}" for k, v in values.items()}
    return f"vs 1: IoU {text['iou']} · Pearson {text['pearson']} · Spearman {text['spearman']}"
