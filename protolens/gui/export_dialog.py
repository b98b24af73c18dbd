"""Choosing what to export: formats, COCO encoding, polygon cleaning, this photo or the whole folder, and where."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from protolens.services.annotations import FORMATS

_NAMES = {"png": "PNG label maps (grey class ids + colour view) + labels.txt", "coco": "COCO JSON", "geojson": "GeoJSON (pixel coordinates)",
          "labelme": "labelme JSON", "cover": "Cover table (CSV)"}


class ExportDialog(QDialog):
    """``formats()``, ``coco_encoding()``, ``min_area()``, ``fill_holes()``, ``whole_folder()`` and ``out_dir()``
    after ``exec()``. The two pixel counts clean polygon formats only (GeoJSON, labelme, COCO polygons)."""

    def __init__(self, out_dir: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export masks")
        layout = QVBoxLayout(self)
        self.checks = {}
        for name in FORMATS:
            self.checks[name] = QCheckBox(_NAMES[name])
            self.checks[name].setChecked(True)
            layout.addWidget(self.checks[name])
        form = QFormLayout()
        self.encoding = QComboBox()
        self.encoding.addItem("RLE (exact)", "rle")
        self.encoding.addItem("polygons", "polygon")
        form.addRow("COCO segmentation", self.encoding)
        self.min_area_box = _pixels_box("Regions of a class with fewer pixels become background (0 keeps all).")
        form.addRow("Drop regions smaller than", self.min_area_box)
        self.fill_holes_box = _pixels_box("Background holes inside one class with fewer pixels get that class "
                                          "(0 keeps all).")
        form.addRow("Fill holes smaller than", self.fill_holes_box)
        note = QLabel("Dropping and filling apply to polygon formats only (GeoJSON, labelme, COCO polygons); "
                      "PNG, cover and COCO RLE stay exact.")
        note.setWordWrap(True)
        form.addRow(note)
        scope = QHBoxLayout()
        self.this_photo = QRadioButton("this photo")
        self.folder = QRadioButton("the whole folder")
        self.folder.setChecked(True)
        scope.addWidget(self.this_photo)
        scope.addWidget(self.folder)
        form.addRow("Export", scope)
        row = QHBoxLayout()
        self.path = QLineEdit(out_dir)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        form.addRow("Into folder", row)
        layout.addLayout(form)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export into folder", self.path.text())
        if folder:
            self.path.setText(folder)

    def formats(self) -> list[str]:
        return [name for name, check in self.checks.items() if check.isChecked()]

    def coco_encoding(self) -> str:
        return str(self.encoding.currentData())

    def min_area(self) -> int:
        """Pixels: polygon formats drop 4-connected regions smaller than this (0: none)."""
        return int(self.min_area_box.value())

    def fill_holes(self) -> int:
        """Pixels: polygon formats fill holes smaller than this (0: none)."""
        return int(self.fill_holes_box.value())

    def whole_folder(self) -> bool:
        return self.folder.isChecked()

    def out_dir(self) -> str:
        return self.path.text().strip()


def _pixels_box(tip: str) -> QSpinBox:
    box = QSpinBox()
    box.setRange(0, 1_000_000)
    box.setSuffix(" px")
    box.setToolTip(tip)
    return box
