"""Choosing what to export: formats, COCO encoding, this photo or the whole folder, and where."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from protolens.services.annotations import FORMATS

_NAMES = {"png": "Indexed PNG label maps + labels.txt", "coco": "COCO JSON", "geojson": "GeoJSON (pixel coordinates)",
          "labelme": "labelme JSON", "cover": "Cover table (CSV)"}


class ExportDialog(QDialog):
    """``formats()``, ``coco_encoding()``, ``whole_folder()`` and ``out_dir()`` after ``exec()``."""

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

    def whole_folder(self) -> bool:
        return self.folder.isChecked()

    def out_dir(self) -> str:
        return self.path.text().strip()
