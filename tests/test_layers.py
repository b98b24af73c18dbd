"""Architecture rules of DESIGN.md, checked on every CI run."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOWED_PLUGIN_IMPORTS = ("protolens.core", "protolens.models.api")


def test_import_linter_contracts_hold():
    """Layers core <- models <- services <- gui <- cli; Qt only in gui; no torch in core or gui (pyproject)."""
    done = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                           "lint_imports_command()"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def _protolens_imports(tree: ast.AST) -> list[str]:
    """Every protolens module (or ``module.name``) a file imports."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "protolens.models":
                found += [f"protolens.models.{alias.name}" for alias in node.names]
            else:
                found.append(node.module)
    return [name for name in found if name.split(".")[0] == "protolens"]


def test_plugins_import_only_core_and_the_backend_api():
    sources = list(ROOT.glob("plugins/*/*.py"))
    assert sources
    for source in sources:
        for name in _protolens_imports(ast.parse(source.read_text(encoding="utf-8"))):
            assert name.startswith(ALLOWED_PLUGIN_IMPORTS), f"{source.relative_to(ROOT)} imports {name}"


def test_import_and_main_window_do_not_import_torch(tmp_path):
    script = (
        "import sys, os\n"
        "os.environ['QT_QPA_PLATFORM'] = 'offscreen'\n"
        "import protolens, protolens.cli\n"
        "assert 'torch' not in sys.modules, 'import protolens imported torch'\n"
        "from PySide6.QtWidgets import QApplication\n"
        "app = QApplication([])\n"
        "from protolens.gui.main_window import MainWindow\n"
        "w = MainWindow(); w.show(); app.processEvents()\n"
        "w.open_path(sys.argv[1])\n"
        "import time\n"
        "end = time.time() + 20\n"
        "while w.result is None and time.time() < end:\n"
        "    app.processEvents(); time.sleep(0.01)\n"
        "assert w.result is not None, 'no heatmap shown'\n"
        "assert 'torch' not in sys.modules, 'showing the main window imported torch'\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PROTOLENS_SETTINGS": str(tmp_path / "settings.ini")}
    done = subprocess.run([sys.executable, "-c", script, str(ROOT / "resources" / "samples" / "quadrats")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]
