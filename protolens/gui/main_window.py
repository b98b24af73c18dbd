"""The main window: composes the panels and the views over one :class:`PhotoController`.

The main view shows the controller's result over the photo (titled with backend, weights and key parameters,
or "no result"); View ▸ Compare (Ctrl+K) swaps in a grid of synchronised panes over the same photo, and
File ▸ Open training run… the checkpoint comparison of a run's epochs (choosing an epoch makes its checkpoint
the weights of the prototype-guided backend). Model ▸ Train prototype ViT… trains one, watched live. The
controller owns the per-photo state and flow; this window only wires widgets to it. Nothing slow runs on
the UI thread.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QScrollArea,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from protolens.core.errors import BackendUnavailableError
from protolens.core.imageio import is_image_path, list_images
from protolens.core.store import ResultStore
from protolens.gui.backend_panel import BackendPanel
from protolens.gui.canvas import ImageCanvas
from protolens.gui.class_prompt_panel import ClassPromptPanel
from protolens.gui.controller import PhotoController
from protolens.gui.display_panel import DisplayPanel
from protolens.gui.edit_session import EditSession
from protolens.gui.export_dialog import ExportDialog
from protolens.gui.layer_overlay import LayerOverlay
from protolens.gui.message_bar import MessageBar
from protolens.gui.results_panel import ResultsPanel
from protolens.gui.settings import add_recent_folder, open_settings, recent_folders
from protolens.gui.species_panel import SpeciesPanel
from protolens.gui.thumbnails import ThumbnailStrip
from protolens.gui.window_pages import WindowPages
from protolens.gui.workers import JobRunner
from protolens.models.registry import Registry
from protolens.services.annotations import export_masks
from protolens.services.results import FoundResult
from protolens.services.segment import Segmenter


def _json_dict(text: Any) -> dict[str, str]:
    """A {str: str} dict from a settings value holding JSON ({} when absent or damaged)."""
    try:
        data = json.loads(str(text))
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


class MainWindow(WindowPages, QMainWindow):
    """protolens's main window. Construct, ``show()``, then ``open_path(folder)``."""

    def __init__(self, registry: Registry | None = None, segmenter: Segmenter | None = None,
                 store: ResultStore | None = None, *, allow_random_weights: bool = False) -> None:
        super().__init__()
        self.setWindowTitle("protolens")
        self.settings = open_settings()
        self.registry = registry or Registry.discover()
        self.segmenter = segmenter or Segmenter(self.registry)
        self.store = store or ResultStore.from_environment()
        self.jobs = JobRunner(self)
        self.controller = PhotoController(self.registry, self.segmenter, self.store, self.jobs,
                                          allow_random_weights=allow_random_weights, parent=self)
        self.folder: Path | None = None
        self._params: dict[str, dict[str, Any]] = {}
        self.compare: Any = None
        self.epochs_view: Any = None
        self.explain_view: Any = None
        self.train_dialog: Any = None
        self._build_widgets()
        self._build_menus()
        self._connect()
        self._restore_settings()

    # --- the controller's state, for callers and tests ---------------------------------------------
    @property
    def image(self) -> Any:
        return self.controller.image

    @property
    def result(self) -> FoundResult | None:
        return self.controller.result

    @property
    def index(self) -> int:
        return self.controller.index

    @property
    def paths(self) -> list[Path]:
        return self.controller.paths

    @property
    def run_job(self) -> Any:
        return self.controller.run_job

    @property
    def _mass(self) -> Any:
        return self.controller._mass

    # --- construction ----------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        self.messages = MessageBar()
        self.canvas = ImageCanvas()
        self.canvas_title = QLabel("no photo")
        self.canvas_title.setObjectName("canvas_title")
        self.canvas_title.setStyleSheet("padding:3px 6px;background:#252525;color:#ddd;")
        self.layers = LayerOverlay(self.canvas)
        self.thumbs = ThumbnailStrip(self.jobs)
        main_view = QWidget()
        main_layout = QVBoxLayout(main_view)
        main_layout.setContentsMargins(0, 0, 0, 0)
        main_layout.setSpacing(0)
        main_layout.addWidget(self.canvas_title)
        main_layout.addWidget(self.canvas, 1)
        self.views = QStackedWidget()
        self.views.addWidget(main_view)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.messages)
        layout.addWidget(self.views, 1)
        layout.addWidget(self.thumbs)
        self.setCentralWidget(central)
        self.backend_panel = BackendPanel()
        self.display_panel = DisplayPanel()
        self.results_panel = ResultsPanel()
        self.species_panel = SpeciesPanel(self.canvas)
        self.edit = EditSession(self.canvas, self.jobs, self.store, self.messages, self.controller, self,
                                history_bytes=int(self.settings.value("history_mb", 256)) * 1024**2,
                                autosave_ms=int(self.settings.value("autosave_ms", 3000)))
        self.class_prompts = ClassPromptPanel(lambda: self.edit.project.labels, self.layers)
        side = QWidget()
        side_layout = QVBoxLayout(side)
        for panel in (self.backend_panel, self.class_prompts, self.display_panel, self.results_panel,
                      self.species_panel, self.edit.panel):
            side_layout.addWidget(panel)
        side_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(side)
        dock = QDockWidget("Controls", self)
        dock.setObjectName("controls_dock")
        dock.setWidget(scroll)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable)
        dock.setMinimumWidth(380)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        self.image_label, self.cursor_label = QLabel("no folder"), QLabel("")
        self.jobs_label, self.device_label = QLabel("jobs: idle"), QLabel("devices: cpu")
        self.statusBar().addWidget(self.image_label, 1)
        self.statusBar().addWidget(self.cursor_label)
        for label in (self.jobs_label, self.device_label):
            self.statusBar().addPermanentWidget(label)
        self._device_timer = QTimer(self)
        self._device_timer.setInterval(1000)
        self._device_timer.timeout.connect(self._refresh_devices)
        self._device_timer.start()

    def _action(self, menu: Any, text: str, slot: Any, shortcut: str | QKeySequence | None = None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(slot)
        menu.addAction(action)
        self.addAction(action)
        return action

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self._action(file_menu, "Open folder…", self.choose_folder, QKeySequence.StandardKey.Open)
        self.recent_menu = file_menu.addMenu("Open recent")
        self._action(file_menu, "Open training run…", self.open_training_run)
        self._action(file_menu, "Export mask + heatmap…", self.export_current, "Ctrl+E")
        file_menu.addSeparator()
        self._action(file_menu, "Quit", self.close, QKeySequence.StandardKey.Quit)
        go = bar.addMenu("&Go")
        self._action(go, "Next photo", self.next_image, "D")
        self._action(go, "Previous photo", self.previous_image, "A")
        model = bar.addMenu("&Model")
        self._action(model, "Run", self.run_current, "Ctrl+R")
        self._action(model, "Cancel", self.cancel_run, "Esc")
        self._action(model, "Download weights…", self.open_weights_dialog)
        model.addSeparator()
        self._action(model, "Train prototype ViT…", self.open_train_dialog)
        edit = bar.addMenu("&Edit")
        self.edit.add_actions(edit, self)
        self._action(edit, "Export masks…", self.export_masks, "Ctrl+Shift+E")
        view = bar.addMenu("&View")
        self.compare_action = self._action(view, "Compare", self.toggle_compare, "Ctrl+K")
        self.compare_action.setCheckable(True)
        self.epochs_action = self._action(view, "Training run epochs", self.toggle_epochs, "Ctrl+Shift+K")
        self.epochs_action.setCheckable(True)
        self.explain_action = self._action(view, "Explain", self.toggle_explain, "Ctrl+Shift+X")
        self.explain_action.setCheckable(True)
        self._action(view, "Fit photo", self.canvas.fit, "0")
        self._action(view, "Toggle heatmap", lambda: self.display_panel.show_heatmap.toggle(), "H")

    def _connect(self) -> None:
        c, bp, dp, rp = self.controller, self.backend_panel, self.display_panel, self.results_panel
        self.thumbs.photo_selected.connect(self.show_index)
        self.jobs.counts_changed.connect(self._jobs_changed)
        self.canvas.hovered.connect(self._hovered)
        c.photo_loading.connect(self._photo_loading)
        c.photo_changed.connect(self._photo_changed)
        c.photo_failed.connect(self._photo_failed)
        c.result_changed.connect(self._result_changed)
        c.results_listed.connect(rp.show_entries)
        c.value_threshold_changed.connect(self.canvas.set_threshold)
        c.run_progress.connect(bp.set_progress)
        c.run_state.connect(bp.set_running)
        c.run_state.connect(lambda running: self._refresh_devices() if not running else None)
        c.backend_unavailable.connect(bp.mark_unavailable)
        c.message.connect(self.messages.show_message)
        bp.backend_changed.connect(self._backend_changed)
        bp.params_changed.connect(self._params_changed)
        bp.weights_changed.connect(lambda _path: self._inputs_changed())
        bp.run_requested.connect(self.run_current)
        bp.cancel_requested.connect(self.cancel_run)
        bp.download_requested.connect(self.open_weights_dialog)
        bp.auto_run.toggled.connect(lambda on: setattr(c, "auto_run", bool(on)))
        dp.auto_threshold.toggled.connect(lambda on: setattr(c, "auto_threshold", bool(on)))
        dp.threshold_changed.connect(c.set_threshold)
        dp.semantics_changed.connect(lambda s: dp.set_threshold(c.set_semantics(s)))
        dp.probability_changed.connect(self._probability_changed)
        dp.windows_toggled.connect(self.canvas.set_windows_visible)
        dp.opacity_changed.connect(self.canvas.set_heatmap_opacity)
        dp.colormap_changed.connect(self.canvas.set_colormap)
        dp.overlay_changed.connect(self.canvas.set_overlay_mode)
        dp.heatmap_toggled.connect(self.canvas.set_heatmap_visible)
        dp.stretch_toggled.connect(self.canvas.set_contrast_stretch)
        dp.export_requested.connect(self.export_current)
        rp.show_requested.connect(c.show_key)
        rp.delete_requested.connect(c.delete_key)
        rp.layer_changed.connect(self._layer_changed)
        rp.overlays_changed.connect(self.layers.set_visible)
        cp = self.class_prompts  # the class list of a text-prompted backend: its maps drive "Map shown"
        cp.map_picked.connect(lambda name: rp.layer.setCurrentIndex(max(rp.layer.findData(name), 0)))
        rp.layer_changed.connect(cp.set_map)
        cp.mask_requested.connect(lambda: self.edit.start("threshold"))
        cp.follow(self.edit.panel)
        self.edit.panel.export_requested.connect(self.export_masks)

    def _restore_settings(self) -> None:
        s = self.settings
        backend = str(s.value("backend", "vegetation-index"))
        self.backend_panel.set_entries(self.registry.entries(), backend)
        self.backend_panel.auto_run.setChecked(s.value("auto_run", True, type=bool))
        self.controller.auto_run = self.backend_panel.auto_run.isChecked()
        self.controller.auto_threshold = self.display_panel.auto_threshold.isChecked()
        self.display_panel.colormap.setCurrentText(str(s.value("colormap", "inferno")))
        self.display_panel.opacity.setValue(float(s.value("opacity", 0.5)))
        self.display_panel.overlay.setCurrentText(str(s.value("overlay", "fill")))
        self.backend_panel.set_own_weights(_json_dict(s.value("backend_weights", "{}")))
        self.canvas.set_heatmap_opacity(self.display_panel.opacity.value())
        self._backend_changed(self.backend_panel.current_id())
        geometry = s.value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1400, 900)
        self._refresh_recent()

    def _refresh_recent(self) -> None:
        self.recent_menu.clear()
        for folder in recent_folders(self.settings):
            action = self.recent_menu.addAction(folder)
            action.triggered.connect(lambda _=False, f=folder: self.open_path(f))

    # --- folders and photos ----------------------------------------------------------------------
    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of photos", str(self.settings.value(
            "last_folder", "")))
        if folder:
            self.open_path(folder)

    def open_path(self, path: str | Path) -> None:
        """Open a folder (first photo shown) or one photo (its folder listed, that photo shown)."""
        path = Path(path).expanduser()
        folder, wanted = (path, None) if path.is_dir() else (path.parent, path)
        try:
            paths = list_images(folder)
        except OSError as exc:
            self.messages.error(f"cannot open {folder}: {exc}")
            return
        if wanted is not None and not is_image_path(wanted):
            self.messages.error(f"{wanted}: not a supported image file")
        self.edit.photo_leaving()
        self.folder = folder
        self.edit.folder_opened(folder)
        self.thumbs.set_paths(paths)
        self.settings.setValue("last_folder", str(folder))
        add_recent_folder(self.settings, str(folder.resolve()))
        self._refresh_recent()
        self.setWindowTitle(f"protolens — {folder}")
        if not paths:
            self.messages.show_message(f"{folder} holds no JPEG, PNG, TIFF, BMP, WebP or GIF photos.", "warning")
            self.canvas.set_photo(None)
        self.controller.set_paths(paths, paths.index(wanted) if wanted in paths else 0)

    def show_index(self, index: int) -> None:
        """Show photo ``index`` of the folder (decoded off the UI thread; neighbours prefetched)."""
        if index != self.controller.index:
            self.edit.photo_leaving()
        self.controller.show_index(index)

    def next_image(self) -> None:
        self.show_index(min(self.index + 1, len(self.paths) - 1))

    def previous_image(self) -> None:
        self.show_index(max(self.index - 1, 0))

    def current_path(self) -> Path | None:
        return self.controller.current_path()

    def _photo_loading(self, index: int, count: int, path: Path) -> None:
        self.thumbs.select(index)
        self.image_label.setText(f"{index + 1}/{count}  {path.name}  (loading…)")

    def _photo_changed(self, image: Any) -> None:
        if image is None:
            self.canvas.set_photo(None)
            self._result_changed(None)
            return
        self.canvas.set_photo(image.rgb, keep_view=True)
        meta = image.meta
        self.image_label.setText(f"{self.index + 1}/{len(self.paths)}  {meta.path.name}  {meta.width}×{meta.height}")
        self.edit.photo_shown(image)

    def _photo_failed(self, path: Path, message: str) -> None:
        self.canvas.set_photo(None)
        self.image_label.setText(f"{self.index + 1}/{len(self.paths)}  {path.name}  (unreadable)")
        self.messages.error(message)

    # --- results ---------------------------------------------------------------------------------
    def _result_changed(self, found: FoundResult | None) -> None:
        """Show ``found`` over the photo, titled; or clear the heatmap and say there is no result."""
        self.results_panel.show_result(found)
        self.layers.show(found)
        self.class_prompts.show_result(found, self.results_panel.current_layer())
        self.species_panel.show_result(found)
        # The manifest's kind decides the view: a segmentation's class overlay stands for the threshold mask;
        # heatmaps and explanations keep the mask (explanations add their keypoints and scores table).
        self.canvas.set_mask_suppressed(found is not None and found.record.kind == "segmentation"
                                        and found.layers.label_map is not None)
        if found is None:
            self.canvas.set_heatmap(None)
            backend = self.backend_panel.current_id()
            self.canvas_title.setText(f"no result of {backend} for this photo yet" if self.image is not None
                                      else "no photo")
            return
        self._show_map(found, self.results_panel.current_layer())
        record = found.record
        where = {"store": "saved", "cache": "cached", "computed": "computed"}[found.source]
        self.canvas_title.setText(f"{record.title()}  ·  key {found.key}  ·  {where}")
        dp = self.display_panel
        dp.set_probability_available(found.probability is not None)
        if record.probability_threshold is not None and found.probability is not None:
            dp.show_probability_threshold(record.probability_threshold)
            self.canvas.set_probability_threshold(record.probability_threshold)
        dp.show_threshold(record.threshold, record.threshold_semantics)
        self.backend_panel.status.setText(f"{where} result: {record.backend_id} {record.params}")

    def _show_map(self, found: FoundResult, layer: str) -> None:
        heatmap = found.layers.heatmaps.get(layer, found.heatmap) if layer else found.heatmap
        probability = found.probability.values if found.probability is not None and heatmap is found.heatmap else None
        self.canvas.set_heatmap(heatmap.values, probability, heatmap.interpolation)
        self.canvas.set_windows(found.windows)
        self.controller.apply_threshold()

    def _layer_changed(self, layer: str) -> None:
        if self.result is not None:
            self._show_map(self.result, layer)

    def _backend_changed(self, backend_id: str) -> None:
        try:
            entry = self.registry.entry(backend_id)
        except BackendUnavailableError as exc:
            self.messages.error(str(exc))
            return
        self.backend_panel.show_backend(entry, self._params.get(backend_id))
        self.class_prompts.attach(self.backend_panel.form, entry.manifest.params if entry.manifest else ())
        self.settings.setValue("backend", backend_id)
        self._inputs_changed()

    def _params_changed(self, values: dict[str, Any]) -> None:
        self._params[self.backend_panel.current_id()] = values
        self._inputs_changed()

    def _inputs_changed(self, *, look_up: bool = True) -> None:
        bp = self.backend_panel
        self.controller.set_inputs(bp.current_id(), bp.form.values(), bp.weights_path() or None, look_up=look_up)

    def run_current(self) -> None:
        """Run the selected backend on the current photo (cancelling a run in progress)."""
        if self.class_prompts.flush():  # a class list edit still waiting for the typing pause
            self._params[self.backend_panel.current_id()] = self.backend_panel.form.values()
        self._inputs_changed(look_up=False)
        self.controller.run()

    def cancel_run(self) -> None:
        self.edit.editor.cancel_path()
        self.controller.cancel()

    def _refresh_devices(self) -> None:
        """Devices of the model pool with their running and queued jobs (the pool exists once a model ran)."""
        self.device_label.setText(f"devices: {self.segmenter.device_description()}")

    def _probability_changed(self, value: float) -> None:
        self.canvas.set_probability_threshold(value)
        self.controller.set_probability_threshold(value)

    def save_to_store(self) -> None:
        """Save the shown result (heatmap, mask at the current threshold, provenance) to the photo's store."""
        self.controller.save()

    def export_current(self, out_dir: str | Path | None = None) -> None:
        """Export mask PNG, heatmap .npy and provenance JSON of the shown result into a chosen folder."""
        if self.result is None or self.image is None:
            self.messages.show_message("Nothing to export: run a backend on this photo first.", "warning")
            return
        if not out_dir:
            out_dir = QFileDialog.getExistingDirectory(self, "Export into folder",
                                                       str(self.settings.value("export_folder", "")))
            if not out_dir:
                return
        self.settings.setValue("export_folder", str(out_dir))
        self.controller.export(out_dir)

    # --- weights, status, closing ----------------------------------------------------------------
    def open_weights_dialog(self) -> None:
        from protolens.gui.weights_dialog import WeightsDialog
        from protolens.services.weights import catalogue

        backend, params = self.backend_panel.current_id(), self.backend_panel.form.values()
        specs = [spec for _, spec in catalogue(self.registry)]
        manifest = self.registry.manifest(backend)
        selected = params.get(manifest.weights_param) if manifest.weights_param else None
        dialog = WeightsDialog(specs, self.jobs, self, selected=selected)
        dialog.exec()
        if dialog.downloaded:
            self._inputs_changed()

    def _jobs_changed(self, running: int, queued: int) -> None:
        self.jobs_label.setText(f"jobs: {running} running, {queued} queued" if running or queued else "jobs: idle")

    def _hovered(self, x: float, y: float, score: float) -> None:
        text = f"x={x:.0f} y={y:.0f}"
        self.cursor_label.setText(text + (f"  score={score:.3f}" if score >= 0 else ""))

    def export_masks(self, out_dir: str | None = None, formats: list[str] | None = None,
                     whole_folder: bool = True, coco_encoding: str = "rle", *, min_area: int = 0,
                     fill_holes: int = 0) -> None:
        """Export the store's masks (edited, else the result's label map or thresholded mask) of this photo or the
        folder in chosen formats; ``min_area``/``fill_holes`` (pixels) clean the polygon formats."""
        if formats is None:
            dialog = ExportDialog(str(self.settings.value("mask_export_folder", "")), self)
            if not dialog.exec() or not dialog.out_dir() or not dialog.formats():
                return
            out_dir, formats = dialog.out_dir(), dialog.formats()
            whole_folder, coco_encoding = dialog.whole_folder(), dialog.coco_encoding()
            min_area, fill_holes = dialog.min_area(), dialog.fill_holes()
        self.settings.setValue("mask_export_folder", str(out_dir))
        self.edit.save("saved")
        self.controller.save()
        paths = self.paths if whole_folder else [p for p in [self.current_path()] if p is not None]
        project = self.edit.project
        self.jobs.submit(export_masks, paths, formats, out_dir, store=self.store, project=project,
                         coco_encoding=coco_encoding, min_area=min_area, fill_holes=fill_holes,
                         kind="export", lane="store",
                         on_result=lambda summary: self.messages.show_message(
                             f"{summary.line} into {out_dir} in {summary.seconds:.1f} s",
                             "info" if not summary.failed else "warning"),
                         on_error=lambda exc: self.messages.error(f"export failed: {exc}"))

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        self.edit.save("saved")
        self.controller.save()
        s = self.settings
        s.setValue("geometry", self.saveGeometry())
        s.setValue("auto_run", self.backend_panel.auto_run.isChecked())
        s.setValue("colormap", self.display_panel.colormap.currentText())
        s.setValue("opacity", self.display_panel.opacity.value())
        s.setValue("overlay", self.display_panel.overlay.currentText())
        s.setValue("backend_weights", json.dumps(self.backend_panel.own_weights()))
        self.jobs.cancel_all()
        self.jobs.wait(5000)
        super().closeEvent(event)
