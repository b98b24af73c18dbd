"""A session killed mid-edit: reopening the photo restores its last autosave and says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np

from tests.gui.conftest import select_backend

CHILD = textwrap.dedent("""
    import os, signal, sys, time, json
    import numpy as np
    from PySide6.QtWidgets import QApplication
    app = QApplication([])
    from protolens.gui.main_window import MainWindow
    from protolens.models.registry import Registry
    from protolens.services.segment import Segmenter
    folder, out = sys.argv[1], sys.argv[2]
    window = MainWindow(Registry.discover(), Segmenter(disk_cache=None))
    window.settings.setValue("autosave_ms", 300)
    window.edit._timer.setInterval(300)
    window.backend_panel.combo.setCurrentIndex(window.backend_panel.combo.findData("vegetation-index"))
    window.backend_panel.auto_run.setChecked(True)
    window.show()
    window.open_path(folder)
    def wait(condition, timeout=60):
        end = time.time() + timeout
        while not condition():
            assert time.time() < end, "timed out"
            app.processEvents(); time.sleep(0.01)
    wait(lambda: window.result is not None)
    window.edit.start("empty")
    wait(lambda: window.edit.editor.active)
    editor = window.edit.editor
    editor._click(100, 100, False)
    editor._click(300, 120, False)
    np.save(out, editor.annotation.labels)
    sidecar = os.path.join(folder, ".protolens", "a_meadow.jpg.json")
    def autosaved():
        try:
            return json.load(open(sidecar))["annotation"]["edited"]["strokes"] == 2
        except (OSError, ValueError, KeyError):
            return False
    wait(autosaved)
    os.kill(os.getpid(), signal.SIGKILL)  # a crash: no clean save, no close event
""")


def test_killed_session_is_recovered_from_its_autosave(qtbot, window, photo_folder, tmp_path):
    painted = tmp_path / "painted.npy"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PROTOLENS_SETTINGS": str(tmp_path / "child.ini")}
    done = subprocess.run([sys.executable, "-c", CHILD, str(photo_folder), str(painted)], env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    select_backend(window, "vegetation-index")
    window.open_path(photo_folder)
    qtbot.waitUntil(lambda: window.edit.editor.active, timeout=15000)
    np.testing.assert_array_equal(window.edit.editor.annotation.labels, np.load(painted))
    assert window.edit.editor.annotation.strokes == 2
    assert window.messages.level == "warning" and "Restored" in window.messages.label.text()
