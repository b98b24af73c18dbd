"""GUI fixtures: a main window over the test registry, writing only into tmp folders."""

from __future__ import annotations

import pytest


@pytest.fixture
def window(qtbot, registry, tmp_path, monkeypatch):
    from protolens.core.store import ResultStore
    from protolens.gui.main_window import MainWindow
    from protolens.services.segment import Segmenter

    monkeypatch.setenv("PROTOLENS_SETTINGS", str(tmp_path / "settings.ini"))
    win = MainWindow(registry, Segmenter(registry, disk_cache=None), ResultStore(), allow_random_weights=True)
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.jobs.cancel_all()
    win.jobs.wait(5000)


def select_backend(window, backend_id: str, **values) -> None:
    panel = window.backend_panel
    panel.combo.setCurrentIndex(panel.combo.findData(backend_id))
    if values:
        merged = {**panel.form.values(), **values}
        panel.form.set_values(merged)
        panel.form.changed.emit(panel.form.values())
