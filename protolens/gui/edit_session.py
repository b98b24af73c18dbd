"""Glue between the main window and the mask editor: per-photo annotations, autosave, recovery, classes.

Edits are autosaved to the photo's store a few seconds after the last one (state "autosave") and saved on
leaving the photo or closing the window (state "saved"); an annotation found in state "autosave" when a
photo is opened was left by a session that did not end normally, and the window says it restored it.
All reads and writes run on the store lane of the job runner, so they never overtake each other.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QEvent, QObject, Qt, QTimer
from PySide6.QtGui import QAction, QColor, QKeySequence
from PySide6.QtWidgets import QColorDialog, QFileDialog, QInputDialog, QMainWindow

from protolens.core.annotation import Annotation, discard_annotation, load_annotation, save_annotation
from protolens.core.errors import ProtolensError
from protolens.core.labels import LabelError, LabelSet, Project, load_project, save_project
from protolens.core.store import result_mask
from protolens.gui.editor import TOOL_KEYS, TOOLS, Editor
from protolens.gui.editor_panel import EditorPanel
from protolens.gui.label_layer import LabelLayerItem
from protolens.gui.region_picker import RegionPicker
from protolens.gui.region_source import RegionSource
from protolens.services.annotations import import_labelmap

AUTOSAVE_MS = 3000


def _threshold_annotation(found: Any, class_id: int, labels: Any) -> tuple[Annotation, Any]:
    """The annotation to start from: the result's label map (classes matched to ``labels`` by name, new ones
    added to that copy of the class list) or, without one, its thresholded mask painted as ``class_id``."""
    record = found.finalized_record()
    if found.layers.label_map is not None:
        ids = labels.ids_from(found.layers.label_map)
        return Annotation(ids, {"kind": "label map", "result": record.to_json()}), labels
    return _mask_annotation(found, class_id, record), labels


def _mask_annotation(found: Any, class_id: int, record: Any) -> Annotation:
    probability = found.probability.full_resolution() if found.probability is not None else None
    mask = result_mask(found.heatmap.full_resolution(), record, probability)
    return Annotation.from_mask(mask, class_id, record)


class EditSession(QObject):
    """Owns the editor, its panel and the folder's project.

    Its dependencies are passed in: the canvas it paints on, the job runner, the result store, the message bar,
    the view controller (the photo and the result shown) and a parent widget for dialogs.
    """

    def __init__(self, canvas: Any, jobs: Any, store: Any, messages: Any, controller: Any, dialog_parent: Any,
                 *, history_bytes: int, autosave_ms: int = AUTOSAVE_MS) -> None:
        super().__init__(dialog_parent)
        self.canvas, self.jobs, self.store, self.messages = canvas, jobs, store, messages
        self.controller, self.dialog_parent = controller, dialog_parent
        self.layer = LabelLayerItem()
        self.layer.setZValue(5)
        self.editor = Editor(self.layer, history_bytes)
        for item in (self.layer, self.editor.preview, self.editor.cursor):
            canvas.view.addItem(item)
        self.picker = self.editor.picker = RegionPicker(canvas.view)
        self.regions = RegionSource(controller, jobs, self)
        self.panel = EditorPanel()
        self.project = Project()
        self.folder: Path | None = None
        self.meta: Any = None
        self._dirty = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(autosave_ms)
        self._timer.timeout.connect(lambda: self.save("autosave"))
        self._connect()
        canvas.installEventFilter(self)
        canvas.viewport().installEventFilter(self)

    def _connect(self) -> None:
        p, e = self.panel, self.editor
        p.start_requested.connect(self.start)
        p.import_requested.connect(self.import_file)
        p.discard_requested.connect(self.discard)
        p.tool_changed.connect(self.set_tool)
        p.radius_changed.connect(e.set_radius)
        p.class_selected.connect(lambda class_id: setattr(e, "class_id", class_id))
        p.visibility_changed.connect(self._visibility)
        p.opacity_changed.connect(self._opacity)
        p.add_class_requested.connect(self.add_class)
        p.rename_class_requested.connect(self.rename_class)
        p.recolor_class_requested.connect(self.recolor_class)
        p.remove_class_requested.connect(self.remove_class)
        p.undo_requested.connect(e.undo)
        p.redo_requested.connect(e.redo)
        p.history_clicked.connect(lambda row: e.undo_to(row + 1))
        p.scale_changed.connect(self._scale)
        e.edited.connect(self._edited)
        r = self.regions
        p.object_regions_requested.connect(r.compute)
        p.region_count_changed.connect(r.set_count)
        r.count_shown.connect(p.show_region_count)
        r.regions_changed.connect(self._regions_shown)
        r.busy_changed.connect(lambda busy: p.object_regions.setText("Cancel regions" if busy else "Object regions"))
        r.progress.connect(lambda fraction, text: p.region_status.setText(f"{text} ({fraction:.0%})"))
        r.failed.connect(self.messages.error)
        self.controller.result_changed.connect(r.result_changed)
        e.history_changed.connect(lambda: p.show_history(e.history.labels, e.history.redo_labels))

    def add_actions(self, menu: Any, window: QMainWindow) -> None:
        """Tool keys (B, E, F, P, L), [ and ], undo/redo and Enter (close polygon) in ``menu``."""
        actions = [(f"{t.capitalize()} tool", lambda _=False, t=t: self.set_tool(t), TOOL_KEYS[t]) for t in TOOLS]
        actions += [("Smaller brush", lambda: self._resize(1 / 1.25), "["),
                    ("Larger brush", lambda: self._resize(1.25), "]"),
                    ("Undo", self.editor.undo, QKeySequence.StandardKey.Undo),
                    ("Redo", self.editor.redo, "Ctrl+Shift+Z"),
                    ("Close polygon", self.editor.close_polygon, "Return")]
        for text, slot, key in actions:
            action = QAction(text, window)
            action.setShortcut(QKeySequence(key))
            action.triggered.connect(slot)
            menu.addAction(action)
            window.addAction(action)

    # --- folder and photo ------------------------------------------------------------------------
    def folder_opened(self, folder: Path) -> None:
        self.folder = folder
        try:
            self.project = load_project(self.store.project_folder(folder))
        except LabelError as exc:
            self.project = Project()
            self.messages.error(f"{exc}; using default classes until it is fixed (the file is kept)")
        self.editor.set_labels(self.project.labels)
        self._show_labels()
        self.panel.scale.setValue(self.project.px_per_cm or 0.0)

    def photo_leaving(self) -> None:
        """Save the current photo's edits (state "saved") before another photo is shown."""
        self.save("saved")
        self.editor.set_annotation(None)
        self.regions.photo_changed(None)
        self.canvas.set_editing(False)
        self.layer.tool_active = False
        self.meta = None
        self.panel.status.setText("not editing")

    def photo_shown(self, image: Any) -> None:
        """Load the photo's annotation, if it has one, off the UI thread."""
        self.regions.photo_changed(image)
        meta = image.meta
        self.meta = meta
        self.jobs.submit(load_annotation, self.store, meta, kind="annotation", lane="store",
                                on_result=lambda annotation: self._loaded(meta, annotation),
                                on_error=lambda exc: self.messages.error(f"edited mask not loaded: {exc}"))

    def _loaded(self, meta: Any, annotation: Annotation | None) -> None:
        if meta is not self.meta or annotation is None:
            return
        self._begin(annotation)
        if annotation.state == "autosave":
            self.messages.show_message(
                f"Restored the edits of {meta.path.name} autosaved at {annotation.saved} "
                "(protolens did not close normally).", "warning")

    def _begin(self, annotation: Annotation) -> None:
        self.editor.set_annotation(annotation)
        self.canvas.set_editing(True)
        self.layer.tool_active = True
        self._dirty = False
        kind = annotation.source.get("kind", "empty")
        self.panel.status.setText(f"editing (started from {kind}; {annotation.strokes} edits)")

    def drawn_parts(self, meta: Any) -> tuple[np.ndarray, list[tuple[int, str]]] | None:
        """The label map being edited on photo ``meta`` and the project's (id, name) classes, or None.

        The Explain view uses it as the query's parts (segments source "bank"): one part per drawn class.
        The label map is a copy ((height, width) uint8), safe to hand to a worker thread.
        """
        annotation = self.editor.annotation
        if annotation is None or self.meta is None or meta is None or self.meta.sha256 != meta.sha256:
            return None
        return annotation.labels.copy(), [(c.id, c.name) for c in self.project.labels.classes]

    # --- starting, importing, discarding ---------------------------------------------------------
    def start(self, kind: str) -> None:
        """Start editing the current photo from the result (its label map, else its thresholded mask) or empty."""
        image = self.controller.image
        if image is None:
            return
        if kind == "threshold":
            found = self.controller.result
            if found is None:
                self.messages.show_message("No mask to start from: run a backend first.", "warning")
                return
            snapshot = dataclasses.replace(found, record=dataclasses.replace(found.record))
            labels = LabelSet.from_json(self.project.labels.to_json())
            self.jobs.submit(_threshold_annotation, snapshot, self.editor.class_id, labels, kind="annotation",
                             on_result=lambda result: self._started_from_result(image, *result),
                             on_error=lambda exc: self.messages.error(str(exc)))
        else:
            self._started(image, Annotation.empty(image.meta.height, image.meta.width))

    def _started_from_result(self, image: Any, annotation: Annotation, labels: Any) -> None:
        if image is not self.controller.image:
            return
        if len(labels.classes) != len(self.project.labels.classes):  # the label map brought new classes
            self.project.labels = labels
            self._labels_changed()
        self._started(image, annotation)

    def _started(self, image: Any, annotation: Annotation) -> None:
        if image is not self.controller.image:
            return
        self._begin(annotation)
        self._edited()

    def import_file(self, path: str | None = None) -> None:
        """Import a PNG label map, COCO JSON or labelme JSON for the current photo."""
        image = self.controller.image
        if image is None:
            return
        if not path:
            path, _ = QFileDialog.getOpenFileName(self.dialog_parent, "Import a mask", "",
                                                  "Masks (*.png *.json *.geojson);;All files (*)")
            if not path:
                return
        labels = self.project.labels
        self.jobs.submit(import_labelmap, Path(path), image.meta, labels, kind="import",
                                on_result=lambda result: self._imported(image, result),
                                on_error=lambda exc: self.messages.error(f"import failed: {exc}"))

    def _imported(self, image: Any, result: tuple[Any, dict[str, Any]]) -> None:
        labelmap, source = result
        self._save_project()
        self._show_labels()
        self.editor.set_labels(self.project.labels)
        self._started(image, Annotation(labelmap, source))

    def discard(self) -> None:
        meta = self.meta
        if meta is None or not self.editor.active:
            return
        self._timer.stop()
        self._dirty = False
        self.editor.set_annotation(None)
        self.canvas.set_editing(False)
        self.layer.tool_active = False
        self.panel.status.setText("not editing (edits discarded)")
        self.jobs.submit(discard_annotation, self.store, meta, kind="save", lane="store")

    # --- saving ----------------------------------------------------------------------------------
    def _edited(self) -> None:
        self._dirty = True
        self._timer.start()
        annotation = self.editor.annotation
        if annotation is not None:
            self.panel.status.setText(f"editing ({annotation.strokes} edits, not yet saved)")

    def save(self, state: str) -> None:
        """Save the annotation (a snapshot of it) on the store lane; state "autosave" or "saved"."""
        self._timer.stop()
        annotation, meta = self.editor.annotation, self.meta
        if annotation is None or meta is None or (not self._dirty and state == "autosave"):
            return
        if not self._dirty and annotation.state == state:
            return
        self._dirty = False
        snapshot = dataclasses.replace(annotation, labels=annotation.labels.copy(), source=dict(annotation.source))
        self.jobs.submit(save_annotation, self.store, meta, snapshot, state=state, kind="save",
                                lane="store", on_result=lambda _path: self._saved(annotation, state),
                                on_error=lambda exc: self._save_failed(exc))
        annotation.state = state

    def _saved(self, annotation: Annotation, state: str) -> None:
        if annotation is self.editor.annotation:
            self.panel.status.setText(f"editing ({annotation.strokes} edits, {state})")

    def _save_failed(self, exc: BaseException) -> None:
        self._dirty = True
        self.messages.error(f"edits not saved: {exc}; they stay in memory, saving is retried")
        self._timer.start()

    # --- classes, tools, display -----------------------------------------------------------------
    def _show_labels(self) -> None:
        self.panel.show_labels(self.project.labels, self.editor.class_id, self.editor.hidden)

    def _save_project(self) -> None:
        if self.folder is None:
            return
        try:
            save_project(self.store.project_folder(self.folder), self.project)
        except ProtolensError as exc:
            self.messages.error(f"classes not saved: {exc}")

    def _labels_changed(self) -> None:
        self.editor.set_labels(self.project.labels)
        self._show_labels()
        self._save_project()

    def add_class(self) -> None:
        name, ok = QInputDialog.getText(self.dialog_parent, "New class", "Name (a species name is fine):")
        if ok and name.strip():
            try:
                label = self.project.labels.add(name)
            except LabelError as exc:
                self.messages.error(str(exc))
                return
            self.editor.class_id = label.id
            self._labels_changed()

    def rename_class(self, class_id: int) -> None:
        label = self.project.labels.by_id(class_id)
        name, ok = QInputDialog.getText(self.dialog_parent, "Rename class", "Name:", text=label.name if label else "")
        if ok and name.strip():
            try:
                self.project.labels.replace(class_id, name=name)
            except LabelError as exc:
                self.messages.error(str(exc))
                return
            self._labels_changed()

    def recolor_class(self, class_id: int) -> None:
        label = self.project.labels.by_id(class_id)
        color = QColorDialog.getColor(QColor(*label.color) if label else QColor(), self.dialog_parent, "Class colour")
        if color.isValid():
            self.project.labels.replace(class_id, color=(color.red(), color.green(), color.blue()))
            self._labels_changed()

    def remove_class(self, class_id: int) -> None:
        """Remove a class from the project; pixels of it in the current photo become background (undoable)."""
        if len(self.project.labels.classes) <= 1:
            self.messages.show_message("A project keeps at least one class.", "warning")
            return
        annotation = self.editor.annotation
        if annotation is not None:
            from protolens.core.editing import replace_class

            self.editor.history.begin(annotation.labels)
            region = replace_class(annotation.labels, class_id, 0)
            if self.editor.history.commit(annotation.labels, region, f"remove {self.project.labels.name_of(class_id)}"):
                annotation.touched()
                self.layer.changed(region)
                self._edited()
        self.project.labels.remove(class_id)
        self._labels_changed()

    def set_tool(self, tool: str) -> None:
        self.editor.set_tool(tool)
        self.panel.select_tool(tool)

    def _regions_shown(self, ids: Any, image_size: Any, text: str) -> None:
        """New regions (or None) for the Regions tool: the picker rebuilds its items, re-highlights at the cursor."""
        self.picker.set_regions(ids, image_size, text)
        self.panel.region_status.setText(text or "no regions")

    def _resize(self, factor: float) -> None:
        old = self.panel.radius.value()
        new = max(1, round(old * factor))
        self.panel.radius.setValue(new if new != old else old + (1 if factor > 1 else -1))

    def _visibility(self, hidden: set[int]) -> None:
        self.editor.hidden = hidden
        self.editor.refresh_colors()

    def _opacity(self, opacity: float) -> None:
        self.editor.opacity = opacity
        self.editor.refresh_colors()

    def _scale(self, value: float) -> None:
        self.project.px_per_cm = value if value > 0 else None
        self._save_project()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        """Space held: drags pan the view instead of painting. Shift at a click: the Regions tool removes."""
        if event.type() in (QEvent.Type.MouseButtonPress, QEvent.Type.MouseButtonRelease):
            self.editor.remove_held = bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        if event.type() in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease) and event.key() == Qt.Key.Key_Space:
            if not event.isAutoRepeat():
                self.layer.pan_held = event.type() == QEvent.Type.KeyPress
            return True
        return False
