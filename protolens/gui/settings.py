"""Persistent settings (QSettings): recent folders, last backend, display choices, window geometry.

``PROTOLENS_SETTINGS=/path/file.ini`` keeps them in that file instead of the platform's default place
(tests use it so they never touch a user's settings).
"""

from __future__ import annotations

import os

from PySide6.QtCore import QSettings

MAX_RECENT = 8


def open_settings() -> QSettings:
    """The settings store in use."""
    path = os.environ.get("PROTOLENS_SETTINGS")
    if path:
        return QSettings(path, QSettings.Format.IniFormat)
    return QSettings("protolens", "protolens")


def recent_folders(settings: QSettings) -> list[str]:
    value = settings.value("recent_folders", [])
    if isinstance(value, str):
        value = [value]
    return [v for v in (value or []) if isinstance(v, str)]


def add_recent_folder(settings: QSettings, folder: str) -> list[str]:
    """Put ``folder`` first in the recent list (deduplicated, at most MAX_RECENT) and return the list."""
    folders = [folder] + [f for f in recent_folders(settings) if f != folder]
    settings.setValue("recent_folders", folders[:MAX_RECENT])
    return folders[:MAX_RECENT]
