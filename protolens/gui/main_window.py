"""The main window: folder browsing, heatmaps over photos, live threshold, run/cancel, export.

Nothing slow runs on the UI thread: decoding, result look-ups, model runs, saving and exporting are
jobs on the thread pool (``JobRunner``); their results come back as signals. A threshold change only
swaps the canvas's lookup table and (debounced) saves the threshold to the photo's result store.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import QDockWidget, QFileDialog, QLabel, QMainWindow, QScrollArea, QVBoxLayout, QWidget

from protolens.core.errors import BackendUnavailableError, Cancelled, ProtolensError
from protolens.core.imageio import is_image_path, list_images
from protolens.core.jobs import CancelToken, Progress
from protolens.core.store import ResultStore
from protolens.core.thresholds import MassThresholder
from protolens.gui.backend_panel import BackendPanel
from protolens.gui.canvas import ImageCanvas
from protolens.gui.display_panel import DisplayPanel
from protolens.gui.edit_session import EditSession
from protolens.gui.export_dialog import ExportDialog
from protolens.gui.image_loader import ImageLoader
from protolens.gui.message_bar import MessageBar
from protolens.gui.settings import add_recent_folder, open_settings, recent_folders
from protolens.gui.thumbnails import ThumbnailStrip
from protolens.gui.workers import Job, JobRunner
from protolens.models.registry import Registry
from protolens.services.annotations import export_masks
from protolens.services.results import FoundResult, find_result, mass_thresholder
from protolens.services.segment import LoadedImage, Segmenter, SegmentOutcome

SAVE_DELAY_MS = 1500


class MainWindow(QMainWindow):
    """protolens's main window. Construct, ``show()``, then ``open_path(folder)``."""

    def __init__(self, registry: Registry | None = None, segmenter: Segmenter | None = None,
                 store: ResultStore | None = None, *, allow_random_weights: bool = False) -> None:
        super().__init__()
        self.setWindowTitle("protolens")
        self.settings = open_settings()
        self.registry = registry or Registry.discover()
        self.segmenter = segmenter or Segmenter(self.registry)
        self.store = store or ResultStore.from_environment()
        self.allow_random_weights = allow_random_weights
        self.jobs = JobRunner(self)
        self.loader = ImageLoader(self.jobs)
        self.paths: list[Path] = []
        self.folder: Path | None = None
        self.index = -1
        self.image: LoadedImage | None = None
        self.result: FoundResult | None = None
        self.run_job: Job | None = None
        self._params: dict[str, dict[str, Any]] = {}
        self._dirty = False
        self._mass: tuple[FoundResult, MassThresholder] | None = None
        self._build_widgets()
        self._build_menus()
        self._connect()
        self._restore_settings()

    # --- construction ----------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        self.messages = MessageBar()
        self.canvas = ImageCanvas()
        self.thumbs = ThumbnailStrip(self.jobs)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.messages)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.thumbs)
        self.setCentralWidget(central)
        self.backend_panel = BackendPanel()
        self.display_panel = DisplayPanel()
        side = QWidget()
        side_layout = QVBoxLayout(side)
        self.edit = EditSession(self, int(self.settings.value("history_mb", 256)) * 1024**2)
        side_layout.addWidget(self.backend_panel)
        side_layout.addWidget(self.display_panel)
        side_layout.addWidget(self.edit.panel)
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
        self._save_timer = QTimer(self)
        self._save_timer.setSingleShot(True)
        self._save_timer.setInterval(SAVE_DELAY_MS)
        self._save_timer.timeout.connect(self.save_to_store)
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
        edit = bar.addMenu("&Edit")
        self.edit.add_actions(edit)
        self._action(edit, "Export masks…", self.export_masks, "Ctrl+Shift+E")
        view = bar.addMenu("&View")
        self._action(view, "Fit photo", self.canvas.fit, "0")
        self._action(view, "Toggle heatmap", lambda: self.display_panel.show_heatmap.toggle(), "H")

    def _connect(self) -> None:
        self.thumbs.photo_selected.connect(self.show_index)
        self.loader.loaded.connect(self._image_loaded)
        self.loader.failed.connect(self._image_failed)
        self.jobs.counts_changed.connect(self._jobs_changed)
        self.canvas.hovered.connect(self._hovered)
        bp, dp = self.backend_panel, self.display_panel
        bp.backend_changed.connect(self._backend_changed)
        bp.params_changed.connect(self._params_changed)
        bp.weights_changed.connect(lambda _path: self._inputs_changed())
        bp.run_requested.connect(self.run_current)
        bp.cancel_requested.connect(self.cancel_run)
        bp.download_requested.connect(self.open_weights_dialog)
        dp.threshold_changed.connect(self._threshold_changed)
        dp.semantics_changed.connect(self._semantics_changed)
        dp.probability_changed.connect(self._probability_changed)
        dp.windows_toggled.connect(self.canvas.set_windows_visible)
        dp.opacity_changed.connect(self.canvas.set_heatmap_opacity)
        dp.colormap_changed.connect(self.canvas.set_colormap)
        dp.overlay_changed.connect(self.canvas.set_overlay_mode)
        dp.heatmap_toggled.connect(self.canvas.set_heatmap_visible)
        dp.stretch_toggled.connect(self.canvas.set_contrast_stretch)
        dp.export_requested.connect(self.export_current)
        self.edit.panel.export_requested.connect(self.export_masks)

    def _restore_settings(self) -> None:
        s = self.settings
        backend = str(s.value("backend", "vegetation-index"))
        self.backend_panel.set_entries(self.registry.entries(), backend)
        self.backend_panel.auto_run.setChecked(s.value("auto_run", True, type=bool))
        self.display_panel.colormap.setCurrentText(str(s.value("colormap", "inferno")))
        self.display_panel.opacity.setValue(float(s.value("opacity", 0.5)))
        self.display_panel.overlay.setCurrentText(str(s.value("overlay", "fill")))
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
        self.paths = paths
        self.folder = folder
        self.edit.folder_opened(folder)
        self.thumbs.set_paths(paths)
        self.settings.setValue("last_folder", str(folder))
        add_recent_folder(self.settings, str(folder.resolve()))
        self._refresh_recent()
        self.setWindowTitle(f"protolens — {folder}")
        if not paths:
            self.messages.show_message(f"{folder} holds no JPEG, PNG, TIFF, BMP or WebP photos.", "warning")
            self.canvas.set_photo(None)
            return
        self.show_index(paths.index(wanted) if wanted in paths else 0)

    def show_index(self, index: int) -> None:
        """Show photo ``index`` of the folder (decoded off the UI thread; neighbours prefetched)."""
        if not self.paths or not 0 <= index < len(self.paths):
            return
        self.save_to_store()
        if index != self.index:
            self.edit.photo_leaving()
        self.index = index
        path = self.paths[index]
        self.thumbs.select(index)
        self.image_label.setText(f"{index + 1}/{len(self.paths)}  {path.name}  (loading…)")
        self.loader.request(path)
        self.loader.prefetch([self.paths[i] for i in (index + 1, index - 1) if 0 <= i < len(self.paths)])

    def next_image(self) -> None:
        self.show_index(min(self.index + 1, len(self.paths) - 1))

    def previous_image(self) -> None:
        self.show_index(max(self.index - 1, 0))

    def current_path(self) -> Path | None:
        return self.paths[self.index] if 0 <= self.index < len(self.paths) else None

    def _image_loaded(self, image: LoadedImage) -> None:
        if image.meta.path != self.current_path():
            return
        self.image, self.result = image, None
        self.canvas.set_photo(image.rgb, keep_view=True)
        meta = image.meta
        self.image_label.setText(f"{self.index + 1}/{len(self.paths)}  {meta.path.name}  {meta.width}×{meta.height}")
        self._look_up_result()
        self.edit.photo_shown(image)

    def _image_failed(self, path: Path, message: str) -> None:
        if path != self.current_path():
            return
        self.image, self.result = None, None
        self.canvas.set_photo(None)
        self.image_label.setText(f"{self.index + 1}/{len(self.paths)}  {path.name}  (unreadable)")
        self.messages.error(message)

    # --- results ---------------------------------------------------------------------------------
    def _inputs(self) -> tuple[str, dict[str, Any], str | None]:
        backend = self.backend_panel.current_id()
        return backend, self.backend_panel.form.values(), self.backend_panel.weights_path() or None

    def _look_up_result(self, any_backend: bool | None = None) -> None:
        """Show the photo's result for the current inputs (cache, else store); run if none and auto-run is on.

        A stored result of another backend is shown only when auto-run is off and the inputs did not just change.
        """
        image = self.image
        if image is None:
            return
        backend, params, weights = self._inputs()
        if any_backend is None:
            any_backend = not self.backend_panel.auto_run.isChecked()
        self.jobs.submit(find_result, self.segmenter, self.store, image, backend, params, weights,
                         any_backend=any_backend, kind="lookup",
                         lane="store",
                         on_result=lambda found: self._found(image, found),
                         on_error=lambda exc: self.messages.error(str(exc)))

    def _found(self, image: LoadedImage, found: FoundResult | None) -> None:
        if image is not self.image:
            return
        if found is not None:
            self._show_result(found)
        elif self.backend_panel.auto_run.isChecked():
            self.run_current()
        else:
            self.backend_panel.status.setText("no result for this photo yet: press Run (Ctrl+R)")

    def _show_result(self, found: FoundResult) -> None:
        self.result, self._mass = found, None
        probability = found.probability.values if found.probability is not None else None
        self.canvas.set_heatmap(found.heatmap.values, probability)
        self.canvas.set_windows(found.windows)
        dp = self.display_panel
        record = found.record
        dp.set_probability_available(probability is not None)
        if probability is not None:
            if record.probability_threshold is None:
                record.probability_threshold = dp.probability.value()
            dp.show_probability_threshold(record.probability_threshold)
            self.canvas.set_probability_threshold(record.probability_threshold)
        if found.suggested_threshold is None:
            pass  # a threshold the user saved: keep it and its semantics
        elif dp.auto_threshold.isChecked() and dp.semantics_value() == "value":
            record.threshold, record.threshold_semantics = float(found.suggested_threshold), "value"
        else:
            record.threshold, record.threshold_semantics = dp.threshold_value(), dp.semantics_value()
        dp.show_threshold(record.threshold, record.threshold_semantics)
        self._apply_threshold()
        where = {"store": "saved result", "cache": "cached result", "computed": "computed"}[found.source]
        self.backend_panel.status.setText(f"{where}: {record.backend_id} {record.params}")
        self._dirty = found.source != "store"
        if self._dirty:
            self._save_timer.start()

    def _backend_changed(self, backend_id: str) -> None:
        try:
            entry = self.registry.entry(backend_id)
        except BackendUnavailableError as exc:
            self.messages.error(str(exc))
            return
        self.backend_panel.show_backend(entry, self._params.get(backend_id))
        self.settings.setValue("backend", backend_id)
        self._inputs_changed()

    def _params_changed(self, values: dict[str, Any]) -> None:
        self._params[self.backend_panel.current_id()] = values
        self._inputs_changed()

    def _inputs_changed(self) -> None:
        if self.image is not None:
            self._look_up_result(any_backend=False)

    def run_current(self) -> None:
        """Run the selected backend on the current photo (cancelling a run in progress)."""
        image = self.image
        if image is None:
            return
        self.cancel_run()
        backend, params, weights = self._inputs()
        token = CancelToken()
        self.backend_panel.set_running(True)
        self.backend_panel.set_progress(0.0, f"running {backend}…")
        self.run_job = self.jobs.submit(
            self.segmenter.run, image, backend, params, weights_path=weights, cancel=token, token=token,
            allow_random_weights=self.allow_random_weights, kind="run",
            on_progress=lambda report: self._progress(report, token),
            on_result=lambda outcome: self._run_done(image, outcome), on_error=self._run_failed,
            on_finished=lambda: self._run_finished(token))

    def cancel_run(self) -> None:
        self.edit.editor.cancel_path()
        if self.run_job is not None and not self.run_job.done:
            self.run_job.cancel()
            self.backend_panel.set_progress(0.0, "cancelled")

    def _is_live(self, token: CancelToken) -> bool:
        return self.run_job is not None and self.run_job.token is token and not token.is_set

    def _progress(self, report: Progress, token: CancelToken) -> None:
        if self._is_live(token):
            self.backend_panel.set_progress(report.fraction, report.text)

    def _refresh_devices(self) -> None:
        """Devices of the model pool with their running and queued jobs (the pool exists once a model ran)."""
        self.device_label.setText(f"devices: {self.segmenter.device_description()}")

    def _run_done(self, image: LoadedImage, outcome: SegmentOutcome) -> None:
        self._refresh_devices()
        if self.segmenter.pool_status() and self.segmenter.pool().warnings:
            self.messages.show_message(self.segmenter.pool().warnings.pop(), "warning")
        if image is self.image:
            self._show_result(FoundResult.from_outcome(outcome))
            self.backend_panel.set_progress(1.0, f"done in {outcome.seconds:.2f} s"
                                            + (" (from cache)" if outcome.from_cache else ""))

    def _run_failed(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled):
            self.backend_panel.set_progress(0.0, "cancelled")
            return
        if isinstance(exc, BackendUnavailableError):
            self.backend_panel.mark_unavailable(self.backend_panel.current_id(), str(exc))
        self.backend_panel.set_progress(0.0, "failed")
        self.messages.error(str(exc) if isinstance(exc, ProtolensError) else f"{type(exc).__name__}: {exc}")

    def _run_finished(self, token: CancelToken) -> None:
        if self.run_job is not None and self.run_job.token is token:
            self.backend_panel.set_running(False)
            if token.is_set:
                self.backend_panel.set_progress(0.0, "cancelled")

    # --- threshold, saving, export ---------------------------------------------------------------
    def _threshold_changed(self, value: float) -> None:
        if self.result is not None:
            self.result.record.threshold = float(value)
            self._dirty = True
            self._save_timer.start()
        self._apply_threshold()

    def _apply_threshold(self) -> None:
        """Draw the mask for the slider's threshold in the active semantics (mass -> equivalent value)."""
        value = self.display_panel.threshold_value()
        if self.display_panel.semantics_value() == "value" or self.result is None:
            self.canvas.set_threshold(value)
        elif self._mass is not None and self._mass[0] is self.result:
            self.canvas.set_threshold(self._mass[1].value_threshold(value))
        else:
            found = self.result
            self.jobs.submit(mass_thresholder, found, kind="mass",
                             on_result=lambda thresholder: self._mass_ready(found, thresholder))

    def _mass_ready(self, found: FoundResult, thresholder: MassThresholder) -> None:
        if found is self.result:
            self._mass = (found, thresholder)
            self._apply_threshold()

    def _semantics_changed(self, semantics: str) -> None:
        """Switch between thresholds by value and by attention mass (DINO's 60 % is the mass default)."""
        dp = self.display_panel
        if self.result is not None:
            self.result.record.threshold_semantics = semantics
        default = 0.6 if semantics == "mass" else (self.result.suggested_threshold if self.result is not None
                                                    and self.result.suggested_threshold is not None else 0.5)
        dp.set_threshold(default)

    def _probability_changed(self, value: float) -> None:
        self.canvas.set_probability_threshold(value)
        if self.result is not None and self.result.probability is not None:
            self.result.record.probability_threshold = float(value)
            self._dirty = True
            self._save_timer.start()

    def save_to_store(self) -> None:
        """Save the shown result (heatmap, mask at the current threshold, provenance) to the photo's store."""
        self._save_timer.stop()
        if not self._dirty or self.result is None or self.image is None:
            return
        self._dirty = False
        snapshot = dataclasses.replace(self.result, record=dataclasses.replace(self.result.record))
        self.jobs.submit(snapshot.save, self.store, self.image.meta, kind="save", lane="store",
                         on_error=lambda exc: self.messages.error(f"not saved: {exc}"))

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
        snapshot = dataclasses.replace(self.result, record=dataclasses.replace(self.result.record))
        self.jobs.submit(snapshot.export, out_dir, self.image.meta, kind="export",
                         on_result=lambda paths: self.messages.info(
                             f"exported {', '.join(p.name for p in paths)} to {out_dir}"),
                         on_error=lambda exc: self.messages.error(f"export failed: {exc}"))

    # --- weights, status, closing ----------------------------------------------------------------
    def open_weights_dialog(self) -> None:
        from protolens.gui.weights_dialog import WeightsDialog
        from protolens.services.weights import catalogue

        backend, params, _ = self._inputs()
        specs = [spec for _, spec in catalogue(self.registry)]
        dialog = WeightsDialog(specs, self.jobs, self, selected=params.get("model"))
        dialog.exec()
        if dialog.downloaded:
            self._inputs_changed()

    def _jobs_changed(self, running: int, queued: int) -> None:
        self.jobs_label.setText(f"jobs: {running} running, {queued} queued" if running or queued else "jobs: idle")

    def _hovered(self, x: float, y: float, score: float) -> None:
        text = f"x={x:.0f} y={y:.0f}"
        self.cursor_label.setText(text + (f"  score={score:.3f}" if score >= 0 else ""))

    def export_masks(self, out_dir: str | None = None, formats: list[str] | None = None,
                     whole_folder: bool = True, coco_encoding: str = "rle") -> None:
        """Export the store's masks (edited, else thresholded) of this photo or the folder in chosen formats."""
        if formats is None:
            dialog = ExportDialog(str(self.settings.value("mask_export_folder", "")), self)
            if not dialog.exec() or not dialog.out_dir() or not dialog.formats():
                return
            out_dir, formats = dialog.out_dir(), dialog.formats()
            whole_folder, coco_encoding = dialog.whole_folder(), dialog.coco_encoding()
        self.settings.setValue("mask_export_folder", str(out_dir))
        self.edit.save("saved")
        paths = self.paths if whole_folder else [p for p in [self.current_path()] if p is not None]
        project = self.edit.project
        self.jobs.submit(export_masks, paths, formats, out_dir, store=self.store, project=project,
                         coco_encoding=coco_encoding, kind="export", lane="store",
                         on_result=lambda summary: self.messages.show_message(
                             f"{summary.line} into {out_dir} in {summary.seconds:.1f} s",
                             "info" if not summary.failed else "warning"),
                         on_error=lambda exc: self.messages.error(f"export failed: {exc}"))

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        self.edit.save("saved")
        self.save_to_store()
        s = self.settings
        s.setValue("geometry", self.saveGeometry())
        s.setValue("auto_run", self.backend_panel.auto_run.isChecked())
        s.setValue("colormap", self.display_panel.colormap.currentText())
        s.setValue("opacity", self.display_panel.opacity.value())
        s.setValue("overlay", self.display_panel.overlay.currentText())
        self.jobs.cancel_all()
        self.jobs.wait(5000)
        super().closeEvent(event)
