"""The model panel: backend picker, generated parameter form, weights, Run/Cancel and progress."""

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
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from protolens.gui.param_form import ParamForm
from protolens.models.registry import BackendEntry


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
        self.weights_edit.setPlaceholderText("local Hugging Face cache")
        self.weights_edit.editingFinished.connect(lambda: self.weights_changed.emit(self.weights_edit.text().strip()))
        browse = QPushButton("…")
        browse.setToolTip("Choose a weights file")
        browse.clicked.connect(self._browse)
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
        self.weights_row.setVisible(bool(manifest and manifest.weights))

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
        path, _ = QFileDialog.getOpenFileName(self, "Weights file", "", "Weights (*.safetensors *.pth *.pt *.bin)")
        if path:
            self.weights_edit.setText(path)
            self.weights_changed.emit(path)
