"""A form generated from a backend's typed parameters (protolens.core.params.ParamSpec)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLineEdit,
    QPlainTextEdit,
    QSpinBox,
    QWidget,
)

from protolens.core.params import ParamSpec

_INT_LIMIT = 2**31 - 1
TEXT_LINES = 5
"""Height of a ``text`` parameter's editor, in lines of text."""
TEXT_DEBOUNCE_MS = 400
"""Typing in a ``text`` editor emits ``changed`` once this long after the last key stroke."""


class ParamForm(QWidget):
    """One editor per parameter: spin boxes within the bounds, a combo box for choices, a check box for bools,
    a line edit for ``str`` and a multi-line :class:`QPlainTextEdit` (``TEXT_LINES`` lines high) for ``text``.

    ``changed`` is emitted (with the full value dict) whenever the user edits a value; for a ``text`` parameter
    ``TEXT_DEBOUNCE_MS`` after the last key stroke (one emission per burst of typing).
    """

    changed = Signal(dict)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._layout = QFormLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._specs: list[ParamSpec] = []
        self._editors: dict[str, QWidget] = {}
        self._text_timer = QTimer(self)
        self._text_timer.setSingleShot(True)
        self._text_timer.setInterval(TEXT_DEBOUNCE_MS)
        self._text_timer.timeout.connect(self._emit)

    def set_specs(self, specs: Sequence[ParamSpec], values: dict[str, Any] | None = None) -> None:
        """Rebuild the form for ``specs``, showing ``values`` (defaults where missing)."""
        self._text_timer.stop()
        while self._layout.rowCount():
            self._layout.removeRow(0)
        self._specs, self._editors = list(specs), {}
        for spec in self._specs:
            editor = self._make_editor(spec)
            editor.setToolTip(spec.help)
            editor.setObjectName(f"param_{spec.name}")
            self._editors[spec.name] = editor
            self._layout.addRow(spec.display_label, editor)
        self.set_values(values or {})

    def _make_editor(self, spec: ParamSpec) -> QWidget:
        if spec.type == "int":
            box = QSpinBox()
            box.setRange(int(spec.minimum if spec.minimum is not None else -_INT_LIMIT),
                         int(spec.maximum if spec.maximum is not None else _INT_LIMIT))
            box.setSingleStep(int(spec.step or 1))
            box.valueChanged.connect(self._emit)
            return box
        if spec.type == "float":
            box = QDoubleSpinBox()
            box.setDecimals(3)
            box.setRange(float(spec.minimum if spec.minimum is not None else -1e9),
                         float(spec.maximum if spec.maximum is not None else 1e9))
            box.setSingleStep(float(spec.step or 0.1))
            box.valueChanged.connect(self._emit)
            return box
        if spec.type == "bool":
            check = QCheckBox()
            check.toggled.connect(self._emit)
            return check
        if spec.type == "choice":
            combo = QComboBox()
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(14)
            for choice in spec.choices:
                combo.addItem(str(choice), choice)
            combo.currentIndexChanged.connect(self._emit)
            return combo
        if spec.type == "text":
            text = QPlainTextEdit()
            text.setTabChangesFocus(True)
            text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
            text.setPlaceholderText(spec.help)
            margins = text.contentsMargins()
            line = QFontMetrics(text.font()).lineSpacing()
            text.setFixedHeight(TEXT_LINES * line + 2 * int(text.document().documentMargin())
                                + margins.top() + margins.bottom() + 4)
            text.textChanged.connect(self._text_timer.start)
            return text
        line = QLineEdit()
        line.editingFinished.connect(self._emit)
        return line

    def set_values(self, values: dict[str, Any]) -> None:
        """Show ``values`` (unknown names ignored, missing ones at their defaults) without emitting ``changed``."""
        self.blockSignals(True)
        try:
            for spec in self._specs:
                value = spec.coerce(values[spec.name]) if spec.name in values else spec.default
                editor = self._editors[spec.name]
                if isinstance(editor, (QSpinBox, QDoubleSpinBox)):
                    editor.blockSignals(True)
                    editor.setValue(value)
                    editor.blockSignals(False)
                elif isinstance(editor, QCheckBox):
                    editor.blockSignals(True)
                    editor.setChecked(bool(value))
                    editor.blockSignals(False)
                elif isinstance(editor, QComboBox):
                    editor.blockSignals(True)
                    editor.setCurrentIndex(max(0, editor.findData(value)))
                    editor.blockSignals(False)
                elif isinstance(editor, QLineEdit):
                    editor.setText(str(value))
                elif isinstance(editor, QPlainTextEdit) and editor.toPlainText() != value:
                    editor.blockSignals(True)  # no debounced emission either
                    editor.setPlainText(value)
                    editor.blockSignals(False)
        finally:
            self.blockSignals(False)

    def values(self) -> dict[str, Any]:
        """Current values by parameter name, validated by each spec."""
        out: dict[str, Any] = {}
        for spec in self._specs:
            editor = self._editors[spec.name]
            if isinstance(editor, (QSpinBox, QDoubleSpinBox)):
                raw: Any = editor.value()
            elif isinstance(editor, QCheckBox):
                raw = editor.isChecked()
            elif isinstance(editor, QComboBox):
                raw = editor.currentData()
            elif isinstance(editor, QPlainTextEdit):
                raw = editor.toPlainText()
            else:
                raw = editor.text()
            out[spec.name] = spec.coerce(raw)
        return out

    def editor(self, name: str) -> QWidget:
        """The editor widget of parameter ``name`` (tests drive it)."""
        return self._editors[name]

    def flush(self) -> None:
        """Emit a pending (debounced) ``text`` edit now; nothing when none is pending."""
        if self._text_timer.isActive():
            self._text_timer.stop()
            self._emit()

    def _emit(self, *_: Any) -> None:
        self._text_timer.stop()
        self.changed.emit(self.values())
