"""The Results panel: every stored result of the photo (key, backend, weights, parameters, time), the current
one marked; show or delete one; pick which map of the shown result to draw; toggle its typed layers; read its
scores table."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

MAIN_MAP = ""


class ResultsPanel(QGroupBox):
    """Signals: ``show_requested(key)``, ``delete_requested(key)``, ``layer_changed(name)`` ("" = the main
    heatmap, else a named heatmap), ``overlays_changed(dict)`` ({layer name: visible})."""

    show_requested = Signal(str)
    delete_requested = Signal(str)
    layer_changed = Signal(str)
    overlays_changed = Signal(dict)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Results of this photo", parent)
        layout = QVBoxLayout(self)
        self.list = QListWidget()
        self.list.setObjectName("results_list")
        self.list.setMaximumHeight(150)
        self.list.itemDoubleClicked.connect(lambda item: self.show_requested.emit(item.data(Qt.ItemDataRole.UserRole)))
        buttons = QHBoxLayout()
        self.show_button, self.delete_button = QPushButton("Show"), QPushButton("Delete")
        self.show_button.setToolTip("Show the selected result and mark it current (double-click does the same)")
        self.show_button.clicked.connect(lambda: self._emit_selected(self.show_requested))
        self.delete_button.clicked.connect(lambda: self._emit_selected(self.delete_requested))
        buttons.addWidget(self.show_button)
        buttons.addWidget(self.delete_button)
        self.layer = QComboBox()
        self.layer.setObjectName("layer_combo")
        self.layer.currentIndexChanged.connect(lambda _i: self.layer_changed.emit(self.current_layer()))
        self.toggles = {name: QCheckBox(text) for name, text in (("label_map", "class overlay"),
                                                                  ("regions", "regions"), ("keypoints", "keypoints"))}
        toggle_row = QHBoxLayout()
        for box in self.toggles.values():
            box.setChecked(True)
            box.toggled.connect(lambda _on: self.overlays_changed.emit(
                {n: b.isChecked() for n, b in self.toggles.items()}))
            toggle_row.addWidget(box)
        self.scores = QLabel()
        self.scores.setWordWrap(True)
        self.scores.setTextFormat(Qt.TextFormat.PlainText)
        layout.addWidget(self.list)
        layout.addLayout(buttons)
        layout.addWidget(QLabel("Map shown:"))
        layout.addWidget(self.layer)
        layout.addLayout(toggle_row)
        layout.addWidget(self.scores)
        self.show_result(None)

    def _emit_selected(self, signal: Any) -> None:
        item = self.list.currentItem()
        if item is not None:
            signal.emit(item.data(Qt.ItemDataRole.UserRole))

    def show_entries(self, entries: list[Any]) -> None:
        """List ResultEntry objects (current one in bold)."""
        selected = self.list.currentItem().data(Qt.ItemDataRole.UserRole) if self.list.currentItem() else None
        self.list.clear()
        for entry in entries:
            record = entry.record
            item = QListWidgetItem(f"{record.title()}  ·  {entry.key[:8]}  ·  {record.created}")
            item.setData(Qt.ItemDataRole.UserRole, entry.key)
            item.setToolTip(entry.line().replace("\t", "\n") + (f"\nlayers: {entry.layers}" if entry.layers else ""))
            if entry.current:
                font = QFont(item.font())
                font.setBold(True)
                item.setFont(font)
            self.list.addItem(item)
            if entry.key == selected:
                self.list.setCurrentItem(item)

    def show_result(self, found: Any) -> None:
        """Offer the shown result's maps and layers (only those it has)."""
        layers = found.layers if found is not None else None
        current = self.current_layer()
        self.layer.blockSignals(True)
        self.layer.clear()
        self.layer.addItem("main heatmap", MAIN_MAP)
        for name in (layers.heatmaps if layers is not None else {}):
            self.layer.addItem(name, name)
        index = self.layer.findData(current)
        self.layer.setCurrentIndex(max(index, 0))
        self.layer.blockSignals(False)
        self.layer.setEnabled(self.layer.count() > 1)
        for name, box in self.toggles.items():
            box.setVisible(layers is not None and getattr(layers, name) is not None)
        table = layers.scores_table if layers is not None else None
        self.scores.setVisible(table is not None)
        if table is not None:
            rows = "\n".join(f"{name}: {value:.3f}" for name, value in table.rows()[:10])
            self.scores.setText(f"{table.column}:\n{rows}")

    def current_layer(self) -> str:
        data = self.layer.currentData()
        return data if isinstance(data, str) else MAIN_MAP
