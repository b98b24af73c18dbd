"""The checkpoint comparison (File ▸ Open training run…): the current photo under every epoch of a training run.

Built on the Compare view (it *is* one, :class:`~protolens.gui.compare_view.CompareView`): a grid of panes with
synchronised zoom and pan, one shared threshold and colormap, per-pane overrides and a difference pane. Here
the panes show the epochs of a training run in order, a page at a time (◀ ▶ when the run has more
epochs than panes); the difference pane shows epoch A − B for any two epochs; the scrubber moves through the
epochs (the page follows, the epoch's pane title is highlighted); the indicator plot shows the run kind's
indicators against epoch with the chosen epoch marked, and a click on it opens that epoch; "Use this epoch"
records the choice in the run's ``chosen.json`` and emits ``epoch_chosen(checkpoint, epoch)`` so the window
makes it the weights of the run kind's backend.

Run kinds (``config.json`` ``"model"``, :data:`protolens.services.run_kinds.RUN_KINDS`): a prototype-ViT run's
panes show the ``prototype-guided`` received attention; an LDVC run's the ``ldvc`` max class probability or,
with "Layers" on, its label map; a patch selector's the ``patch-selection`` super-patch ranks with the kept /
dropped outlines. A run of an unknown kind, or whose backend is not installed, is reported in the message bar
(the indicators of the latter are still plotted); nothing is computed then.

Work off the UI thread (the job runner): every epoch's result is looked up or computed by
:func:`protolens.services.epochs.epoch_keys` (tile tokens are cached, so only the narrow ViT reruns per epoch)
with progress and Cancel; each pane then reads its stored result and prepares it as the Compare view does, and
the other epochs are prefetched, so switching epochs or pages after the first computation only draws.
Source of the method: arXiv 2512.19957 (steps 5-6; later epochs attend to quadrat frames).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSplitter,
    QWidget,
)

from protolens.core.errors import BackendUnavailableError, ProtolensError
from protolens.core.runs import RunFolder
from protolens.core.types import Heatmap
from protolens.gui.compare_view import LAYOUTS, CompareView, LoadedPane, load_pane
from protolens.gui.indicator_plot import IndicatorPlot
from protolens.gui.job_progress import JobProgress
from protolens.gui.layer_overlay import LayerOverlay
from protolens.services import compare as cmp
from protolens.services import epochs as service

TITLE_STYLE = "background:#202020;color:#eee;padding:2px 4px;font-size:11px;"
FOCUS_STYLE = "background:#7a5200;color:#fff;padding:2px 4px;font-size:11px;"
PREFETCH = 48
"""Most epoch maps prepared ahead (the Compare view's pane cache holds 72)."""


class EpochsView(JobProgress, CompareView):
    """The epochs of a training run over the controller's photo (see the module docstring).

    Signals
    -------
    epoch_chosen(str checkpoint path, int epoch)
        "Use this epoch" recorded ``epoch`` in the run's ``chosen.json``.
    """

    epoch_chosen = Signal(str, int)
    settings_prefix = "epochs"
    _ready = False  # the Compare view's constructor calls overridden methods before ours has run

    def __init__(self, controller: Any, jobs: Any, settings: Any, parent: QWidget | None = None) -> None:
        super().__init__(controller, jobs, settings, parent)
        self.run: RunFolder | None = None
        self.kind: service.RunKind | None = None
        self.unavailable: str | None = None  # why the run kind's backend cannot compute (None: it can)
        self.overlays: dict[int, LayerOverlay] = {}
        self.epochs: list[int] = []
        self.losses: dict[int, float] = {}
        self.keys_by_epoch: dict[int, str] = {}
        self.page_epochs: list[int | None] = [None] * len(self.panes)
        self.page, self.focus, self.chosen = 0, None, None
        self.difference_values: np.ndarray | None = None
        self._computed_for: Any = None
        self._pending: set[tuple[str, str]] = set()
        self._build_epochs()
        self._ready = True

    # --- construction ----------------------------------------------------------------------------
    def _build_epochs(self) -> None:
        bar = self.layout().itemAt(0).layout()
        self.epoch_a, self.epoch_b = QComboBox(), QComboBox()
        for combo, tip in ((self.epoch_a, "Epoch A of the difference A − B"),
                           (self.epoch_b, "Epoch B of the difference A − B")):
            combo.setToolTip(tip)
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
            combo.currentIndexChanged.connect(lambda _i: self._update_difference())
        for spin in (self.diff_a, self.diff_b):  # pane numbers: the epochs view picks epochs instead
            spin.setVisible(False)
        at = bar.indexOf(self.diff_a)
        bar.insertWidget(at, self.epoch_b)
        bar.insertWidget(at, self.epoch_a)
        for pane in self.panes:
            pane.combo.setVisible(False)
        row = QHBoxLayout()
        self.run_label = QLabel("no training run")
        self.previous_page, self.next_page = QPushButton("◀"), QPushButton("▶")
        self.page_label = QLabel("")
        self.previous_page.clicked.connect(lambda: self.show_page(self.page - 1, follow=True))
        self.next_page.clicked.connect(lambda: self.show_page(self.page + 1, follow=True))
        self.scrubber = QSlider(Qt.Orientation.Horizontal)
        self.scrubber.setToolTip("Scrub through the epochs")
        self.scrubber.valueChanged.connect(self._scrubbed)
        self.epoch_label = QLabel("")
        self.use_button = QPushButton("Use this epoch")
        self._set_use_tip("prototype-guided")
        self.use_button.clicked.connect(lambda: self.use_epoch())
        self.layers_box = QCheckBox("Layers")
        self.layers_box.setChecked(True)
        self.layers_box.setVisible(False)
        self.layers_box.toggled.connect(lambda _on: self._show_all_layers())
        self._build_progress(260)
        self.threshold.setMinimumWidth(110)  # the shared threshold stays usable in a narrow window
        for widget in (self.run_label, self.previous_page, self.page_label, self.next_page, QLabel("epoch"),
                       self.scrubber, self.epoch_label, self.layers_box, self.use_button, self.progress,
                       self.cancel_button):
            row.addWidget(widget, 3 if widget is self.scrubber else 0)
        self._set_running(False)
        self.plot = IndicatorPlot()
        self.plot.setMinimumHeight(120)
        self.plot.epoch_clicked.connect(self.show_epoch)
        layout = self.layout()
        layout.insertLayout(1, row)
        layout.removeItem(self.grid)  # the grid and the plot share a splitter, so the plot can be resized
        panes = QWidget()
        self.grid.setParent(None)
        panes.setLayout(self.grid)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(panes)
        self.splitter.addWidget(self.plot)
        self.splitter.setStretchFactor(0, 4)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([600, 170])
        layout.addWidget(self.splitter, 1)
        self._update_paging()

    def _set_use_tip(self, backend: str) -> None:
        self.use_button.setToolTip("Record this epoch as the run's chosen one (chosen.json) and use its checkpoint "
                                   f"as the {backend} weights")

    # --- the run ---------------------------------------------------------------------------------
    def open_run(self, path: str | Path) -> None:
        """Show the epochs of the training run folder ``path`` and compute the photo's maps (off the UI thread)."""
        run = RunFolder(path)
        try:
            run.config()
            kind = service.run_kind(run)
            records = run.epochs()
            table = service.indicator_table(run)
            chosen = run.chosen()
        except ProtolensError as exc:
            self.controller.message.emit(str(exc), "error")
            return
        if not records:
            self.controller.message.emit(f"{run.path}: the run has no checkpoint yet", "warning")
        self.cancel()
        self.unavailable = None
        try:
            service.check_backend(self.controller.segmenter.registry, kind)
        except BackendUnavailableError as exc:
            self.unavailable = f"no {kind.backend} backend"
            self.controller.message.emit(f"{run.path.name}: {exc}", "error")
        self.kind = kind
        self._set_use_tip(kind.backend)
        self.layers_box.setVisible(bool(kind.layers))
        self.layers_box.setText("Label map" if "label_map" in kind.layers else "Kept / dropped")
        self.run, self.epochs, self.chosen = run, [r.epoch for r in records], chosen
        self.losses = {r.epoch: r.loss for r in records}
        self.keys_by_epoch, self._computed_for, self.page = {}, None, 0
        self.run_label.setText(f"{run.path.name} ({kind.model}): {len(records)} epochs")
        self.run_label.setToolTip(str(run.path))
        self.plot.set_table(table, chosen)
        for combo in (self.epoch_a, self.epoch_b):
            combo.blockSignals(True)
            combo.clear()
            for epoch in self.epochs:
                combo.addItem(f"{'A' if combo is self.epoch_a else 'B'} = {epoch}", epoch)
            combo.blockSignals(False)
        last = len(self.epochs) - 1
        self.epoch_a.setCurrentIndex(last)
        self.epoch_b.setCurrentIndex(max(last - 1, 0))
        self.diff_on.setChecked(len(self.epochs) > 1)
        self._fit_layout()
        self.scrubber.blockSignals(True)
        self.scrubber.setRange(0, max(last, 0))
        self.scrubber.setValue(0)
        self.scrubber.blockSignals(False)
        self.focus = self.epochs[0] if self.epochs else None
        self.show_page(0)
        self._scrubbed(0)
        self.compute()

    def _fit_layout(self) -> None:
        """The smallest layout holding every epoch (and the difference pane), up to 3×3 (then pages)."""
        needed = len(self.epochs) + (1 if self.diff_on.isChecked() else 0)
        fits = [name for name, (rows, cols) in LAYOUTS.items() if rows * cols >= needed]
        self.set_layout(fits[0] if fits else "3×3")

    def compute(self) -> None:
        """Look up or compute every epoch's map of the current photo on the worker pool (progress, Cancel)."""
        image = self._image
        if self.run is None or image is None or not self.epochs or self.unavailable:
            return
        self.cancel()  # the epochs done so far stay stored
        controller = self.controller
        self.start_job(
            service.epoch_keys, controller.segmenter, controller.store, image, self.run,
            allow_random_weights=controller.allow_random_weights, kind="epochs", what="epoch comparison",
            text="epochs", on_result=lambda keys: self._computed(image, keys))

    def _computed(self, image: Any, keys: dict[int, str]) -> None:
        if image is not self._image:
            return
        self.keys_by_epoch, self._computed_for = dict(keys), image
        for index in range(len(self.panes)):  # keys of the previous photo's run state: load again
            self.keys[index] = None
        self.show_page(self.page)
        self._prefetch()
        self.controller.refresh_entries()
        QTimer.singleShot(0, self.fit)

    def fit(self) -> None:
        """Zoom every pane (they are linked) to the whole photo."""
        self.panes[0].canvas.fit()

    # --- pages, scrubber, focus ------------------------------------------------------------------
    @property
    def page_count(self) -> int:
        return max(1, math.ceil(len(self.epochs) / max(self.count, 1)))

    def show_page(self, page: int, *, follow: bool = False) -> None:
        """Show page ``page`` (0-based) of the epochs; with ``follow`` the scrubber moves to its first epoch."""
        page = min(max(int(page), 0), self.page_count - 1)
        self.page = page
        for index in range(len(self.panes)):
            position = page * self.count + index
            epoch = self.epochs[position] if index < self.count and position < len(self.epochs) else None
            key = self.keys_by_epoch.get(epoch) if epoch is not None else None
            self.page_epochs[index] = epoch
            if self.keys[index] != key or key is None:
                self.keys[index] = key
                self.panes[index].key = key
                self.data.pop(index, None)
                if key is None:
                    self.panes[index].show_map(None)
                    self._show_layers(index)
                    waiting = self.unavailable or "computing…"
                    self.panes[index].set_title("" if epoch is None else f"epoch {epoch}: {waiting}")
        self._update_paging()
        self._load()
        self._refresh_titles()
        if follow and self.epochs:
            self.scrubber.setValue(min(page * self.count, len(self.epochs) - 1))

    def _update_paging(self) -> None:
        many = self.page_count > 1
        for widget in (self.previous_page, self.next_page, self.page_label):
            widget.setVisible(many)
        self.previous_page.setEnabled(self.page > 0)
        self.next_page.setEnabled(self.page < self.page_count - 1)
        self.page_label.setText(f"page {self.page + 1}/{self.page_count}")
        self.use_button.setEnabled(self.focus is not None)

    def show_epoch(self, epoch: int) -> None:
        """Open ``epoch``: the scrubber moves to it, its page is shown and its pane highlighted."""
        if epoch in self.epochs:
            position = self.epochs.index(epoch)
            if self.scrubber.value() != position:
                self.scrubber.setValue(position)  # valueChanged opens it
            else:
                self._scrubbed(position)

    def _scrubbed(self, position: int) -> None:
        if not self.epochs:
            return
        position = min(max(position, 0), len(self.epochs) - 1)
        self.focus = self.epochs[position]
        if position // max(self.count, 1) != self.page:
            self.show_page(position // max(self.count, 1))
        self.epoch_label.setText(f"{self.focus} ({position + 1}/{len(self.epochs)})")
        self.plot.set_current(self.focus)
        self._update_paging()
        self._refresh_titles()

    def set_layout(self, name: str) -> None:
        """As the Compare view's; the page is the one holding the focused epoch."""
        super().set_layout(name)
        if self._ready:
            focus = self.epochs.index(self.focus) if self.focus in self.epochs else 0
            self.show_page(focus // max(self.count, 1))
            QTimer.singleShot(0, self.fit)

    # --- layers (label map, kept / dropped) -------------------------------------------------------
    def _show_layers(self, index: int) -> None:
        """Draw pane ``index``'s typed layers (the run kind's) when "Layers" is on; with the label map on, the
        map under it is hidden (the pane shows the labels or the max probability)."""
        pane = self.panes[index]
        kind_layers = self.kind.layers if self.kind is not None else ()
        loaded = self.data.get(index)
        show = bool(kind_layers) and self.layers_box.isChecked()
        if not kind_layers and index not in self.overlays:
            return
        overlay = self.overlays.get(index)
        if overlay is None:
            overlay = self.overlays[index] = LayerOverlay(pane.canvas)
        overlay.show(loaded.found if loaded is not None and show else None)
        overlay.set_visible({"label_map": "label_map" in kind_layers, "regions": "regions" in kind_layers,
                             "keypoints": False})
        pane.canvas.set_heatmap_visible(not (show and "label_map" in kind_layers))

    def _show_all_layers(self) -> None:
        for index in range(self.count):
            self._show_layers(index)

    def layer_overlay(self, index: int) -> LayerOverlay | None:
        """The layer overlay of pane ``index`` (None until the run kind has layers)."""
        return self.overlays.get(index)

    # --- Compare view hooks ----------------------------------------------------------------------
    def _pane_loaded(self, image: Any, index: int, result: Any) -> None:
        super()._pane_loaded(image, index, result)
        if self._ready:
            self._show_layers(index)

    def _fill_keys(self) -> bool:
        return False  # panes show epochs, never the photo's other results

    def _photo_changed(self, image: Any) -> None:
        super()._photo_changed(image)
        if self._ready and image is not None and self.run is not None and self.isVisible():
            self.compute()  # hidden: activate() computes when the view is shown again

    def activate(self) -> None:
        """Shown: take the controller's photo; compute the epochs if this photo has not been."""
        super().activate()
        if self.run is not None and self._image is not None and self._computed_for is not self._image:
            if self.job is None or self.job.done:
                self.compute()

    def _load(self) -> None:
        """Show the page's maps: from the pane cache, else requested off the UI thread (:meth:`_request`)."""
        image = self._image
        if not self._ready or self._computed_for is None or self._computed_for is not image or not self.isVisible():
            return
        for index in range(self.count):
            key = self.keys[index]
            if key is None or index in self.data:
                continue
            cached = self._cache.get((image.meta.sha256, key))
            if cached is not None:
                self._pane_loaded(image, index, cached)
            else:
                self._request(key)

    def _request(self, key: str) -> None:
        """Read stored result ``key`` and prepare its pane on the worker pool (once, however often asked)."""
        image = self._image
        token = (image.meta.sha256, key)
        if token in self._pending or token in self._cache:
            return
        self._pending.add(token)
        grid = cmp.compare_grid((image.meta.height, image.meta.width))
        self.jobs.submit(load_pane, self.controller.store, image, key, grid, kind="lookup",
                         on_result=lambda result: self._arrived(image, result),
                         on_error=lambda exc: self._arrived(image, (key, None), exc))

    def _arrived(self, image: Any, result: tuple[str, LoadedPane | None], error: BaseException | None = None) -> None:
        key, loaded = result
        self._pending.discard((image.meta.sha256, key))
        if image is not self._image:
            return
        if loaded is not None:  # keep the drawable map, not the full-resolution one (tens of MB per epoch)
            slim = dataclasses.replace(loaded.found, heatmap=Heatmap(
                loaded.display, loaded.found.heatmap.image_size, loaded.found.heatmap.interpolation))
            result = (key, loaded._replace(found=slim))
            self._cache[(image.meta.sha256, key)] = result
        for index in range(self.count):
            if self.keys[index] == key and index not in self.data:
                if error is not None:
                    self.panes[index].set_title(f"error: {error}")
                else:
                    self._pane_loaded(image, index, result)
        self._refresh_titles()
        self._update_difference()

    def _prefetch(self) -> None:
        """Prepare the epochs' maps off the UI thread: the page's first, then the difference's, then the others
        nearest the focused epoch (at most :data:`PREFETCH` in all, so the pane cache keeps the page's)."""
        if self._image is None or self._computed_for is not self._image:
            return
        focus = self.focus if self.focus is not None else 0
        nearest = sorted(self.epochs, key=lambda e: abs(e - focus))
        wanted = [self.keys_by_epoch.get(e) for e in (*self.page_epochs, self.epoch_a.currentData(),
                                                      self.epoch_b.currentData(), *nearest)]
        for key in list(dict.fromkeys(k for k in wanted if k is not None))[:PREFETCH]:
            self._request(key)

    def _loaded(self, epoch: int | None) -> LoadedPane | None:
        """The prepared map of ``epoch`` for this photo (from the pane cache), or None if not loaded yet."""
        key = self.keys_by_epoch.get(epoch) if epoch is not None else None
        if key is None or self._image is None:
            return None
        cached = self._cache.get((self._image.meta.sha256, key))
        return cached[1] if cached is not None else None

    def _shared(self, loaded: LoadedPane) -> cmp.PaneData:
        """The map thresholded at the shared threshold and semantics."""
        level, semantics = self.threshold.value(), self.semantics.currentData()
        value = level if semantics == "value" else loaded.thresholder.value_threshold(level)
        return dataclasses.replace(loaded.pane, threshold=float(value), semantics=semantics,
                                   requested_threshold=float(level))

    def agreement_epochs(self, first: int, second: int) -> cmp.Agreement | None:
        """Agreement of two epochs' maps at the shared threshold (None until both are loaded)."""
        a, b = self._loaded(first), self._loaded(second)
        if a is None or b is None:
            return None
        pair = (self._image.meta.sha256, a.pane.key, b.pane.key)
        if pair not in self._correlations:
            self._correlations[pair] = cmp.ranked_correlations(a.pane.values, b.pane.values, a.ranks, b.ranks)
        pearson, spearman = self._correlations[pair]
        return cmp.Agreement(cmp.iou(cmp.mask(self._shared(a)), cmp.mask(self._shared(b))), pearson, spearman)

    def _refresh_titles(self) -> None:
        if not self._ready:
            return
        for index in range(self.count):
            epoch = self.page_epochs[index]
            pane = self.panes[index]
            pane.title.setStyleSheet(FOCUS_STYLE if epoch is not None and epoch == self.focus else TITLE_STYLE)
            if epoch is None or index not in self.data:
                continue
            pane.set_title(f"{self._heading(epoch, self.data[index].pane)}\n{self._versus(epoch)}")

    def _heading(self, epoch: int, pane: cmp.PaneData) -> str:
        level = f"mass {pane.level:.2f}" if pane.semantics == "mass" else f"t {pane.threshold:.3f}"
        chosen = " · chosen" if epoch == self.chosen else ""
        return f"epoch {epoch}{chosen} · loss {self.losses.get(epoch, math.nan):.4g} · {level} · {pane.key[:8]}"

    def _versus(self, epoch: int) -> str:
        position = self.epochs.index(epoch)
        if position == 0:
            return "first epoch"
        previous = self.epochs[position - 1]
        return f"vs epoch {previous}: {_figures(self.agreement_epochs(previous, epoch))}"

    def _update_difference(self) -> None:
        if not self._ready:
            return super()._update_difference()
        pane = self.difference_pane
        first, second = self.epoch_a.currentData(), self.epoch_b.currentData()
        a, b = self._loaded(first), self._loaded(second)
        if a is None or b is None:
            for epoch in (first, second):
                if self._computed_for is self._image and epoch in self.keys_by_epoch:
                    self._request(self.keys_by_epoch[epoch])
            self.difference_values = None
            pane.show_map(None)
            pane.set_title("difference: pick epochs A and B" if first is None else
                           f"difference epoch {first} − epoch {second}: loading…")
            return
        pa, pb = self._shared(a), self._shared(b)
        self.difference_values = cmp.difference_map(pa, pb)
        if self.diff_mode.currentData() == "map":
            scale = cmp.difference_scale(pa, pb)
            values = np.clip(self.difference_values / (2.0 * scale) + 0.5, 0.0, 1.0)
            legend = f"epoch {first} − epoch {second} (±{scale:.2f}): red where {first} is higher, blue where {second} is"
        else:
            values = cmp.xor_mask(pa, pb).astype("float32")
            legend = f"epoch {first} xor epoch {second}: masks disagree (bright)"
        pane.show_map(values, 1.0)
        pane.set_title(f"difference {legend}\n{_figures(self.agreement_epochs(first, second))}")

    # --- choosing and exporting ------------------------------------------------------------------
    def use_epoch(self, epoch: int | None = None) -> None:
        """Record ``epoch`` (default the focused one) as the run's chosen epoch, then emit ``epoch_chosen``."""
        epoch = self.focus if epoch is None else epoch
        if self.run is None or epoch is None:
            return
        self.jobs.submit(service.choose_epoch, self.run, epoch, kind="save",
                         on_result=self._chosen,
                         on_error=lambda exc: self.controller.message.emit(f"epoch not chosen: {exc}", "error"))

    def _chosen(self, record: Any) -> None:
        self.chosen = record.epoch
        self.plot.set_chosen(record.epoch)
        self._refresh_titles()
        self.controller.message.emit(f"epoch {record.epoch} chosen ({record.checkpoint.name} recorded in "
                                     f"{self.run.path.name}/chosen.json)", "info")
        self.epoch_chosen.emit(str(record.checkpoint), int(record.epoch))

    def export(self, out_dir: str | Path | None = None) -> None:
        """Write every epoch's PNG, the grid, the difference maps and the indicator CSV/JSON
        (:func:`protolens.services.epochs.compare_epochs`, as ``protolens compare-epochs``)."""
        if self.run is None or self._image is None or not self.epochs:
            self.controller.message.emit("Nothing to export: open a training run and a photo first.", "warning")
            return
        out_dir = self.export_folder(out_dir, "epochs_folder", "Export the epoch comparison into")
        if not out_dir:
            return
        pair = (self.epoch_a.currentData(), self.epoch_b.currentData()) if self.diff_on.isChecked() else None
        controller = self.controller
        self.start_job(
            service.compare_epochs, controller.segmenter, controller.store, self._image, self.run, out_dir,
            pair=pair, threshold=self.threshold.value(), semantics=self.semantics.currentData(),
            colormap=self.colormap.currentText(), allow_random_weights=controller.allow_random_weights,
            kind="export", what="epoch comparison", text="export",
            on_result=lambda result: controller.message.emit(
                f"exported {len(result.files)} files to {out_dir}", "info"))


def _figures(agreement: cmp.Agreement | None) -> str:
    """The figures of an agreement, "IoU … · Pearson … · Spearman …" ("loading…" while a map is missing)."""
    if agreement is None:
        return "loading…"
    text = {k: "n/a" if v is None else f"{v:.3f}" for k, v in agreement.as_json().items()}
    return f"IoU {text['iou']} · Pearson {text['pearson']} · Spearman {text['spearman']}"
