"""Starting the desktop application, and checking first that Qt can open a window at all."""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import PySide6
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

XCB_LIBRARIES: tuple[tuple[str, str], ...] = (
    ("libxcb-cursor.so.0", "libxcb-cursor0"),
    ("libxcb-icccm.so.4", "libxcb-icccm4"),
    ("libxcb-keysyms.so.1", "libxcb-keysyms1"),
    ("libxcb-image.so.0", "libxcb-image0"),
    ("libxcb-render-util.so.0", "libxcb-render-util0"),
    ("libxcb-util.so.1", "libxcb-util1"),
    ("libxkbcommon-x11.so.0", "libxkbcommon-x11-0"),
    ("libxcb-xkb.so.1", "libxcb-xkb1"),
    ("libxcb-randr.so.0", "libxcb-randr0"),
    ("libxcb-render.so.0", "libxcb-render0"),
    ("libxcb-shape.so.0", "libxcb-shape0"),
    ("libxcb-shm.so.0", "libxcb-shm0"),
    ("libxcb-sync.so.1", "libxcb-sync1"),
    ("libxcb-xfixes.so.0", "libxcb-xfixes0"),
    ("libX11-xcb.so.1", "libx11-xcb1"),
    ("libxcb.so.1", "libxcb1"),
)
"""System libraries (soname, Debian/Ubuntu package) that Qt's ``xcb`` platform plugin links against.

PySide6 wheels do not ship them; the first three are the ones a fresh desktop install usually lacks.
"""

XCB_BASE_PACKAGES = ("libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1")


def xcb_platform_selected(environ: Mapping[str, str], platform: str) -> bool:
    """Whether Qt will start with its ``xcb`` (X11) platform plugin.

    True on Linux when ``QT_QPA_PLATFORM`` names xcb first, or is unset with ``DISPLAY`` set and no
    ``WAYLAND_DISPLAY`` (a Wayland session may use Qt's wayland plugin instead, so it is not checked).
    """
    if not platform.startswith("linux"):
        return False
    chosen = environ.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip()
    if chosen:
        return chosen == "xcb"
    return bool(environ.get("DISPLAY")) and not environ.get("WAYLAND_DISPLAY")


def _load_library(soname: str) -> object:
    """Load ``soname`` from the system search path or PySide6's own Qt/lib folder; OSError if neither has it."""
    try:
        return ctypes.CDLL(soname)
    except OSError:
        bundled = Path(PySide6.__file__).parent / "Qt" / "lib" / soname
        if not bundled.exists():
            raise
        return ctypes.CDLL(str(bundled))


def missing_xcb_libraries(loader: Callable[[str], object] | None = None) -> list[tuple[str, str]]:
    """The (soname, package) pairs of :data:`XCB_LIBRARIES` that ``loader`` cannot load.

    ``loader`` takes a soname and raises ``OSError`` when the library cannot be loaded (like
    ``ctypes.CDLL``); the default, ``ctypes.CDLL``, also looks in PySide6's bundled Qt/lib folder.
    """
    load = loader or _load_library
    missing = []
    for soname, package in XCB_LIBRARIES:
        try:
            load(soname)
        except OSError:
            missing.append((soname, package))
    return missing


def qt_platform_problem(environ: Mapping[str, str] | None = None, platform: str | None = None,
                        loader: Callable[[str], object] | None = None) -> str | None:
    """One line saying why Qt's ``xcb`` plugin would abort on start-up (missing libraries), or None.

    Checked before a :class:`QApplication` exists, because Qt aborts the process (it does not raise)
    when the platform plugin cannot load. The line names the missing sonames and the apt command that
    installs them (:data:`XCB_BASE_PACKAGES` plus any other missing package). ``environ`` and
    ``platform`` default to ``os.environ`` and ``sys.platform``; ``loader`` is as in
    :func:`missing_xcb_libraries`.
    """
    environ = os.environ if environ is None else environ
    if not xcb_platform_selected(environ, sys.platform if platform is None else platform):
        return None
    missing = missing_xcb_libraries(loader)
    if not missing:
        return None
    packages = list(XCB_BASE_PACKAGES) + [p for _, p in missing if p not in XCB_BASE_PACKAGES]
    return (f"error: Qt cannot open a window: system libraries missing for its xcb plugin: "
            f"{', '.join(s for s, _ in missing)}; install them with: sudo apt install {' '.join(packages)}")


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
