"""The mask-editor panel: start, tools, brush size, object regions (n_o), classes, opacity, undo/redo history,
scale, export."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QButtonGroup,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledDoubleSlider, QLabeledSlider

from protolens.core.labels import LabelSet
from protolens.gui.editor import TOOL_KEYS, TOOLS


def _swatch(color: tuple[int, int, int]) -> QIcon:
    pixmap = QPixmap(14, 14)
    pixmap.fill(QColor(*color))
    return QIcon(pixmap)


class EditorPanel(QGroupBox):
    """Widgets only; the edit session connects them. ``history_list`` rows are undo steps, oldest first."""

    start_requested = Signal(str)  # "threshold" | "empty"
    import_requested = Signal()
    discard_requested = Signal()
    tool_changed = Signal(str)
    radius_changed = Signal(float)
    class_selected = Signal(int)
    visibility_changed = Signal(set)
    add_class_requested = Signal()
    rename_class_requested = Signal(int)
    recolor_class_requested = Signal(int)
    remove_class_requested = Signal(int)
    opacity_changed = Signal(float)
    undo_requested = Signal()
    redo_requested = Signal()
    history_clicked = Signal(int)
    scale_changed = Signal(float)
    export_requested = Signal()
    object_regions_requested = Signal()
    region_count_changed = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Edit mask", parent)
        layout = QVBoxLayout(self)
        start = QHBoxLayout()
        self.from_threshold = QPushButton("From threshold")
        self.from_threshold.setToolTip("Start from the current thresholded mask, painted with the selected class")
        self.from_threshold.clicked.connect(lambda: self.start_requested.emit("threshold"))
        self.empty = QPushButton("Empty")
        self.empty.clicked.connect(lambda: self.start_requested.emit("empty"))
        self.import_button = QPushButton("Import…")
        self.import_button.setToolTip("PNG label map, COCO JSON or labelme JSON")
        self.import_button.clicked.connect(self.import_requested)
        self.discard = QPushButton("Discard")
        self.discard.setToolTip("Stop editing this photo and delete its edited mask")
        self.discard.clicked.connect(self.discard_requested)
        for button in (self.from_threshold, self.empty, self.import_button, self.discard):
            start.addWidget(button)
        layout.addLayout(start)
        self.status = QLabel("not editing")
        self.status.setWordWrap(True)
        self.status.setStyleSheet("color:#888;font-size:11px;")
        layout.addWidget(self.status)
        tools = QGridLayout()
        self.tool_group = QButtonGroup(self)
        self.tool_buttons: dict[str, QToolButton] = {}
        for i, tool in enumerate(TOOLS):
            button = QToolButton()
            button.setText(f"{tool.capitalize()} ({TOOL_KEYS[tool]})")
            button.setCheckable(True)
            button.setObjectName(f"tool_{tool}")
            button.clicked.connect(lambda _=False, t=tool: self.tool_changed.emit(t))
            self.tool_group.addButton(button)
            self.tool_buttons[tool] = button
            tools.addWidget(button, i // 3, i % 3)
        self.tool_buttons["brush"].setChecked(True)
        layout.addLayout(tools)
        form = QFormLayout()
        self.radius = QSpinBox()
        self.radius.setRange(1, 500)
        self.radius.setValue(8)
        self.radius.setSuffix(" px")
        self.radius.setToolTip("Brush radius in photo pixels ([ and ] change it)")
        self.radius.valueChanged.connect(lambda v: self.radius_changed.emit(float(v)))
        form.addRow("Brush radius", self.radius)
        self.object_regions = QPushButton("Object regions")
        self.object_regions.setObjectName("object_regions")
        self.object_regions.setToolTip("Propose object regions on this photo (DINO features partitioned into n_o "
                                       "regions, OC-ZSS step 1). Regions tool (R): click adds a region with the "
                                       "current class, Shift+click removes it. Click again to cancel.")
        self.object_regions.clicked.connect(self.object_regions_requested)
        self.region_count = QLabeledSlider(Qt.Orientation.Horizontal)
        self.region_count.setObjectName("region_count")
        self.region_count.setRange(2, 40)
        self.region_count.setValue(6)
        self.region_count.setToolTip("n_o: number of object regions, recomputed from the cached features "
                                     "(the model does not run again)")
        self.region_count.valueChanged.connect(lambda v: self.region_count_changed.emit(int(v)))
        form.addRow(self.object_regions, self.region_count)
        self.region_status = QLabel("no regions")
        self.region_status.setStyleSheet("color:#888;font-size:11px;")
        form.addRow("", self.region_status)
        self.opacity = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0.0, 1.0)
        self.opacity.setValue(0.5)
        self.opacity.valueChanged.connect(self.opacity_changed)
        form.addRow("Mask opacity", self.opacity)
        self.scale = QDoubleSpinBox()
        self.scale.setRange(0.0, 100000.0)
        self.scale.setDecimals(2)
        self.scale.setSpecialValueText("not set")
        self.scale.setSuffix(" px/cm")
        self.scale.setToolTip("Pixels per centimetre of this folder's photos: cover tables then give cm²")
        self.scale.editingFinished.connect(lambda: self.scale_changed.emit(self.scale.value()))
        form.addRow("Scale", self.scale)
        layout.addLayout(form)
        layout.addWidget(QLabel("Classes (tick = shown)"))
        self.classes = QListWidget()
        self.classes.setObjectName("class_list")
        self.classes.setMaximumHeight(120)
        self.classes.currentRowChanged.connect(self._class_row)
        self.classes.itemChanged.connect(self._visibility)
        layout.addWidget(self.classes)
        buttons = QHBoxLayout()
        for text, signal in (("Add", self.add_class_requested), ("Rename", self.rename_class_requested),
                             ("Colour", self.recolor_class_requested), ("Remove", self.remove_class_requested)):
            button = QPushButton(text)
            if signal is self.add_class_requested:
                button.clicked.connect(signal)
            else:
                button.clicked.connect(lambda _=False, s=signal: self._emit_current(s))
            buttons.addWidget(button)
        layout.addLayout(buttons)
        history = QHBoxLayout()
        self.undo_button = QPushButton("Undo")
        self.undo_button.clicked.connect(self.undo_requested)
        self.redo_button = QPushButton("Redo")
        self.redo_button.clicked.connect(self.redo_requested)
        history.addWidget(self.undo_button)
        history.addWidget(self.redo_button)
        layout.addLayout(history)
        self.history_list = QListWidget()
        self.history_list.setMaximumHeight(110)
        self.history_list.itemClicked.connect(lambda item: self.history_clicked.emit(self.history_list.row(item)))
        layout.addWidget(self.history_list)
        self.export_button = QPushButton("Export masks (PNG, COCO, GeoJSON, labelme, cover)…")
        self.export_button.clicked.connect(self.export_requested)
        layout.addWidget(self.export_button)

    def show_labels(self, labels: LabelSet, current: int, hidden: set[int]) -> None:
        """List ``labels`` (colour, id, name), select ``current``, tick the shown ones, without signals."""
        self.classes.blockSignals(True)
        self.classes.clear()
        for label in labels.classes:
            item = QListWidgetItem(_swatch(label.color), f"{label.id}  {label.name}")
            item.setData(Qt.ItemDataRole.UserRole, label.id)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Unchecked if label.id in hidden else Qt.CheckState.Checked)
            self.classes.addItem(item)
            if label.id == current:
                self.classes.setCurrentItem(item)
        self.classes.blockSignals(False)

    def show_history(self, undo: list[str], redo: list[str]) -> None:
        """Undo steps (done), then redo steps (greyed)."""
        self.history_list.clear()
        for text in undo:
            self.history_list.addItem(text)
        for text in redo:
            item = QListWidgetItem(text)
            item.setForeground(QColor(140, 140, 140))
            self.history_list.addItem(item)
        self.undo_button.setEnabled(bool(undo))
        self.redo_button.setEnabled(bool(redo))

    def select_tool(self, tool: str) -> None:
        self.tool_buttons[tool].setChecked(True)

    def show_region_count(self, n: int) -> None:
        """Move the n_o slider to ``n`` without emitting ``region_count_changed``."""
        self.region_count.blockSignals(True)
        self.region_count.setValue(int(n))
        self.region_count.blockSignals(False)

    def current_class(self) -> int | None:
        item = self.classes.currentItem()
        return int(item.data(Qt.ItemDataRole.UserRole)) if item is not None else None

    def _class_row(self, _row: int) -> None:
        class_id = self.current_class()
        if class_id is not None:
            self.class_selected.emit(class_id)

    def _visibility(self, _item: QListWidgetItem) -> None:
        hidden = {int(self.classes.item(i).data(Qt.ItemDataRole.UserRole)) for i in range(self.classes.count())
                  if self.classes.item(i).checkState() != Qt.CheckState.Checked}
        self.visibility_changed.emit(hidden)

    def _emit_current(self, signal: Signal) -> None:
        class_id = self.current_class()
        if class_id is not None:
            signal.emit(class_id)
