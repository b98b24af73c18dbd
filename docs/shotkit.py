"""What every docs/make_*screenshot*.py script shares: a real main window on throw-away settings, store and cache
(random weights allowed, as no weights are downloaded on the machine that makes the screenshots), and waiting for
it to reach a state while Qt keeps processing events."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"


def wait(app: Any, condition: Any, timeout: float = 900.0) -> None:
    """Process Qt events until ``condition()`` is true; TimeoutError after ``timeout`` seconds."""
    end = time.time() + timeout
    while not condition():
        if time.time() > end:
            raise TimeoutError("the window did not reach the expected state")
        app.processEvents()
        time.sleep(0.01)


def settle(app: Any, seconds: float) -> None:
    """Process Qt events for ``seconds`` (timers, repaints and signals of finished jobs land)."""
    end = time.time() + seconds
    while time.time() < end:
        app.processEvents()
        time.sleep(0.02)


def open_window(size: tuple[int, int], prefix: str = "protolens-shots-") -> tuple[Any, Any, Path]:
    """(QApplication, shown MainWindow of ``size`` (width, height), scratch folder); creates ``OUT``.

    ``PROTOLENS_SETTINGS``, ``PROTOLENS_STORE`` and ``PROTOLENS_CACHE_DIR`` point into the scratch folder;
    ``QT_QPA_PLATFORM`` defaults to offscreen (xvfb + xcb gives real window decorations).
    """
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["PROTOLENS_SETTINGS"] = str(scratch / "settings.ini")
    os.environ["PROTOLENS_STORE"] = str(scratch / "store")
    os.environ["PROTOLENS_CACHE_DIR"] = str(scratch / "cache")
    from PySide6.QtWidgets import QApplication

    from protolens.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = MainWindow(allow_random_weights=True)
    window.resize(*size)
    window.show()
    OUT.mkdir(parents=True, exist_ok=True)
    return app, window, scratch
