"""The model panel: backend picker, generated parameter form, weights, Run/Cancel and progress.

The weights row shows for backends with downloadable weights (a catalogue, ``manifest.weights``) and for
backends whose weights are a file of the user's (``manifest.weights_file``, a label such as "epoch checkpoint or
run folder"; the browse button then picks a file or a folder). Such a backend keeps its own weights path; the
catalogue backends share one, as before.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from protolens.gui.param_form import ParamForm
from protolens.models.registry import BackendEntry

CACHE_PLACEHOLDER = "local Hugging Face cache"

class BackendPanel(QGroupBox):
    """Signals: ``backend_changed(id)``, ``params_changed(dict)``, ``run_requested``, ``cancel_requested``,
    ``download_requested``, ``weights_changed(str)`` (a path, or "" for the local cache)."""

    backend_changed = Signal(str)
    params_changed = Signal(dict)
    run_requested = Signal()
    cancel_requested = Signal()
    download_requested = Signal()
    weights_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Model", parent)
        layout = QVBoxLayout(self)
        self.combo = QComboBox()
        self.combo.setObjectName("backend_combo")
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(18)
        self.combo.currentIndexChanged.connect(self._combo_changed)
        self.description = QLabel()
        self.description.setWordWrap(True)
        self.description.setStyleSheet("color:#888;font-size:11px;")
        self.form = ParamForm()
        self.form.changed.connect(self.params_changed)
        self.weights_row = QWidget()
        weights_layout = QHBoxLayout(self.weights_row)
        weights_layout.setContentsMargins(0, 0, 0, 0)
        self.weights_edit = QLineEdit()
        self.weights_edit.setObjectName("weights_edit")
        self.weights_edit.setPlaceholderText(CACHE_PLACEHOLDER)
        self.weights_edit.editingFinished.connect(lambda: self.weights_changed.emit(self.weights_edit.text().strip()))
        self.browse_button = browse = QPushButton("…")
        browse.setToolTip("Choose a weights file")
        browse.clicked.connect(self._browse)
        self.browse_menu = QMenu(self)
        self.browse_menu.addAction("Checkpoint file…", self._browse)
        self.browse_menu.addAction("Run folder…", self._browse_folder)
        self._weights_label = ""
        self._weights_slot = ""
        self._weights_memory: dict[str, str] = {}
        self.download_button = QPushButton("Download…")
        self.download_button.clicked.connect(self.download_requested)
        weights_layout.addWidget(QLabel("Weights"))
        weights_layout.addWidget(self.weights_edit, 1)
        weights_layout.addWidget(browse)
        weights_layout.addWidget(self.download_button)
        self.auto_run = QCheckBox("Run on each photo")
        self.auto_run.setToolTip("Compute the heatmap whenever a photo without a result is shown.")
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.setObjectName("run_button")
        self.run_button.clicked.connect(self.run_requested)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("cancel_button")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_requested)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.status = QLabel("idle")
        self.status.setWordWrap(True)
        for widget in (self.combo, self.description, self.form, self.weights_row, self.auto_run):
            layout.addWidget(widget)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)

    def set_entries(self, entries: list[BackendEntry], current: str | None = None) -> None:
        """List the backends; unavailable ones are shown disabled with their error as tooltip."""
        self.combo.blockSignals(True)
        self.combo.clear()
        for entry in entries:
            label = entry.manifest.name if entry.manifest else entry.id
            self.combo.addItem(label if entry.available else f"{label} (unavailable)", entry.id)
            index = self.combo.count() - 1
            self.combo.setItemData(index, entry.error or (entry.manifest.description if entry.manifest else ""),
                                   Qt.ItemDataRole.ToolTipRole)
            if not entry.available:
                self.combo.model().item(index).setEnabled(False)
        found = self.combo.findData(current) if current else -1
        if found < 0:
            found = next((i for i, e in enumerate(entries) if e.available), 0)
        self.combo.setCurrentIndex(found)
        self.combo.blockSignals(False)

    def mark_unavailable(self, backend_id: str, error: str) -> None:
        index = self.combo.findData(backend_id)
        if index >= 0:
            self.combo.setItemText(index, f"{self.combo.itemText(index)} (unavailable)")
            self.combo.setItemData(index, error, Qt.ItemDataRole.ToolTipRole)

    def current_id(self) -> str:
        return self.combo.currentData() or ""

    def show_backend(self, entry: BackendEntry, values: dict[str, Any] | None = None) -> None:
        """Rebuild the form for ``entry`` and show or hide the weights row."""
        manifest = entry.manifest
        self.form.set_specs(manifest.params if manifest else (), values)
        self.description.setText(manifest.description if manifest else (entry.error or ""))
        label = str(getattr(manifest, "weights_file", "") or "") if manifest else ""
        self._swap_weights(entry.id if label else "")
        self._weights_label = label
        self.weights_edit.setPlaceholderText(label or CACHE_PLACEHOLDER)
        self.weights_edit.setToolTip(label or "A local weights file; empty = the local Hugging Face cache")
        self.browse_button.setMenu(self.browse_menu if label else None)
        self.browse_button.setToolTip("Choose a file or a folder" if label else "Choose a weights file")
        self.download_button.setVisible(bool(manifest and manifest.weights))
        self.weights_row.setVisible(bool(manifest and (manifest.weights or label)))

    def _swap_weights(self, slot: str) -> None:
        """Keep the weights path of a backend with its own weights files (slot = its id; "" = shared slot)."""
        if slot != self._weights_slot:
            self._weights_memory[self._weights_slot] = self.weights_edit.text()
            self.weights_edit.setText(self._weights_memory.get(slot, ""))
            self._weights_slot = slot

    def own_weights(self) -> dict[str, str]:
        """{backend id: weights path} of the backends with their own weights files (for the settings)."""
        memory = {**self._weights_memory, self._weights_slot: self.weights_edit.text()}
        return {slot: path for slot, path in memory.items() if slot and path}

    def set_own_weights(self, paths: dict[str, str]) -> None:
        """Restore :meth:`own_weights` (before or after the backend is shown)."""
        for slot, path in paths.items():
            if not slot:
                continue
            if slot == self._weights_slot:
                self.weights_edit.setText(str(path))
            else:
                self._weights_memory[slot] = str(path)

    def set_weights_path(self, path: str) -> None:
        """Use ``path`` as the current backend's weights (emits ``weights_changed``)."""
        self.weights_edit.setText(str(path))
        self.weights_changed.emit(self.weights_path())

    def set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        if not running:
            self.progress.setValue(0)

    def set_progress(self, fraction: float, text: str) -> None:
        self.progress.setValue(int(max(0.0, min(1.0, fraction)) * 1000))
        self.status.setText(text)

    def weights_path(self) -> str:
        return self.weights_edit.text().strip()

    def _combo_changed(self, _index: int) -> None:
        self.backend_changed.emit(self.current_id())

    def _browse(self) -> None:
        title = self._weights_label or "Weights file"
        path, _ = QFileDialog.getOpenFileName(self, title, self.weights_path(),
                                              "Weights (*.safetensors *.pth *.pt *.bin)")
        if path:
            self.set_weights_path(path)

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, self._weights_label or "Weights folder", self.weights_path())
        if path:
            self.set_weights_path(path)
