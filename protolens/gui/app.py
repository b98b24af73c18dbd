"""Starting the desktop application."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication


def run_app(path: str | Path | None = None, *, backend: str | None = None, run_first: bool = False) -> int:
    """Open the main window (on ``path`` if given) and run the event loop; returns the exit status."""
    from protolens.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("protolens")
    app.setOrganizationName("protolens")
    window = MainWindow()
    if backend:
        index = window.backend_panel.combo.findData(backend)
        if index >= 0:
            window.backend_panel.combo.setCurrentIndex(index)
    window.show()
    if path is not None:
        QTimer.singleShot(0, lambda: window.open_path(path))
        if run_first:
            window.backend_panel.auto_run.setChecked(True)
    return app.exec()
