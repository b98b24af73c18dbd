"""The display panel: heatmap colormap and opacity, the live threshold slider, overlay mode, export."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QGroupBox, QLabel, QPushButton, QWidget
from superqt import QLabeledDoubleSlider

from protolens.gui.canvas import COLORMAPS, OVERLAY_MODES


def _slider(value: float) -> QLabeledDoubleSlider:
    slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
    slider.setRange(0.0, 1.0)
    slider.setDecimals(3)
    slider.setSingleStep(0.005)
    slider.setValue(value)
    return slider


class DisplayPanel(QGroupBox):
    """Signals: ``threshold_changed(float)``, ``opacity_changed(float)``, ``colormap_changed(str)``,
    ``overlay_changed(str)``, ``heatmap_toggled(bool)``, ``stretch_toggled(bool)``, ``semantics_changed(str)``
    ("value" or "mass"), ``probability_changed(float)``, ``windows_toggled(bool)``, ``export_requested``."""

    threshold_changed = Signal(float)
    semantics_changed = Signal(str)
    probability_changed = Signal(float)
    windows_toggled = Signal(bool)
    opacity_changed = Signal(float)
    colormap_changed = Signal(str)
    overlay_changed = Signal(str)
    heatmap_toggled = Signal(bool)
    stretch_toggled = Signal(bool)
    export_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Display", parent)
        form = QFormLayout(self)
        self.show_heatmap = QCheckBox("Show heatmap")
        self.show_heatmap.setChecked(True)
        self.show_heatmap.toggled.connect(self.heatmap_toggled)
        self.colormap = QComboBox()
        self.colormap.addItems(COLORMAPS)
        self.colormap.currentTextChanged.connect(self.colormap_changed)
        self.stretch = QCheckBox("Stretch colours to this map's range")
        self.stretch.setChecked(True)
        self.stretch.toggled.connect(self.stretch_toggled)
        self.opacity = _slider(0.5)
        self.opacity.valueChanged.connect(self.opacity_changed)
        self.threshold = _slider(0.5)
        self.threshold.setObjectName("threshold_slider")
        self.threshold.valueChanged.connect(self.threshold_changed)
        self.semantics = QComboBox()
        self.semantics.setObjectName("semantics_combo")
        self.semantics.addItem("by value", "value")
        self.semantics.addItem("by attention mass", "mass")
        self.semantics.currentIndexChanged.connect(self._semantics_changed)
        self.semantics_label = QLabel()
        self.semantics_label.setWordWrap(True)
        self.semantics_label.setStyleSheet("color:#888;font-size:11px;")
        self.probability = _slider(0.5)
        self.probability.setObjectName("probability_slider")
        self.probability.valueChanged.connect(self.probability_changed)
        self.probability_label = QLabel("Probability ≥")
        self.show_windows = QCheckBox("Show analysis windows (tiles)")
        self.show_windows.toggled.connect(self.windows_toggled)
        self.auto_threshold = QCheckBox("Start at the suggested threshold (Otsu)")
        self.auto_threshold.setChecked(True)
        self.overlay = QComboBox()
        self.overlay.addItems(OVERLAY_MODES)
        self.overlay.currentTextChanged.connect(self.overlay_changed)
        self.export_button = QPushButton("Export mask + heatmap…")
        self.export_button.setObjectName("export_button")
        self.export_button.clicked.connect(self.export_requested)
        form.addRow(self.show_heatmap)
        form.addRow("Colormap", self.colormap)
        form.addRow(self.stretch)
        form.addRow("Opacity", self.opacity)
        form.addRow("Threshold", self.threshold)
        form.addRow("Semantics", self.semantics)
        form.addRow(self.semantics_label)
        form.addRow(self.probability_label, self.probability)
        form.addRow(self.auto_threshold)
        form.addRow("Mask", self.overlay)
        form.addRow(self.show_windows)
        form.addRow(self.export_button)
        self._describe_semantics()
        self.set_probability_available(False)

    def semantics_value(self) -> str:
        """The active threshold semantics: "value" or "mass"."""
        return str(self.semantics.currentData())

    def set_semantics(self, semantics: str) -> None:
        """Select ``semantics`` ("value"/"mass"); emits ``semantics_changed`` if it changes."""
        self.semantics.setCurrentIndex(max(0, self.semantics.findData(semantics)))

    def _describe_semantics(self) -> None:
        if self.semantics_value() == "mass":
            text = "mask = the smallest set of cells holding this fraction of the attention mass (DINO)"
        else:
            text = "mask = score ≥ threshold (by value)"
        self.semantics_label.setText(text)

    def _semantics_changed(self, _index: int) -> None:
        self._describe_semantics()
        self.semantics_changed.emit(self.semantics_value())

    def set_probability_available(self, available: bool) -> None:
        """Show the probability slider only for results that carry a probability map."""
        self.probability.setVisible(available)
        self.probability_label.setVisible(available)

    def show_threshold(self, value: float, semantics: str) -> None:
        """Show a result's threshold and semantics without emitting signals (nothing was edited)."""
        for widget in (self.semantics, self.threshold):
            widget.blockSignals(True)
        self.semantics.setCurrentIndex(max(0, self.semantics.findData(semantics)))
        self.threshold.setValue(float(value))
        for widget in (self.semantics, self.threshold):
            widget.blockSignals(False)
        self._describe_semantics()

    def show_probability_threshold(self, value: float) -> None:
        """Show a result's probability threshold without emitting ``probability_changed``."""
        self.probability.blockSignals(True)
        self.probability.setValue(float(value))
        self.probability.blockSignals(False)

    def set_threshold(self, value: float) -> None:
        """Move the slider (emits ``threshold_changed`` like a user move)."""
        self.threshold.setValue(float(value))

    def threshold_value(self) -> float:
        return float(self.threshold.value())
