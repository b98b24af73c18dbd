"""A message bar above the canvas: errors stay until closed, information fades after a few seconds."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QToolButton, QWidget

_STYLES = {
    "error": "background:#5c1f1f;color:#ffdede;border:1px solid #a33;",
    "warning": "background:#5a4a12;color:#fff3c4;border:1px solid #a80;",
    "info": "background:#1f3b5c;color:#deeeff;border:1px solid #36a;",
}


class MessageBar(QFrame):
    """Shows one message at a time; ``history`` keeps every message shown (newest last)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 4, 4, 4)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.clicked.connect(self.hide)
        layout.addWidget(self.label, 1)
        layout.addWidget(close)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.hide)
        self.history: list[tuple[str, str]] = []
        self.level = ""
        self.hide()

    def show_message(self, text: str, level: str = "info", timeout_ms: int | None = None) -> None:
        """Show ``text`` at ``level`` (error, warning, info); info hides itself after 5 s by default."""
        self.history.append((level, text))
        self.level = level
        self.setStyleSheet(f"QFrame{{{_STYLES.get(level, _STYLES['info'])}}}")
        self.label.setText(text)
        self.show()
        self._timer.stop()
        timeout = timeout_ms if timeout_ms is not None else (5000 if level == "info" else 0)
        if timeout:
            self._timer.start(timeout)

    def error(self, text: str) -> None:
        self.show_message(text, "error")

    def info(self, text: str) -> None:
        self.show_message(text, "info")
