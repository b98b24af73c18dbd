"""``protolens gui``: open the desktop window (with a folder)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from protolens.cli import app

HEADLESS_HINT = (
    "No display is available, so the window cannot open. The headless twin does the same job:\n"
    "  protolens segment {folder} --backend vegetation-index --out results/\n"
    "(or run under a virtual display: xvfb-run protolens gui {folder})"
)

MISSING_LIBRARIES_TWIN = (
    "The headless twin works without them: protolens segment {folder} --backend vegetation-index --out results/"
)


def display_available() -> bool:
    """Whether Qt can open a window: a display server is set, or a non-window platform was chosen."""
    if sys.platform in ("win32", "darwin"):
        return True
    if os.environ.get("QT_QPA_PLATFORM", "").split(":")[0] in ("offscreen", "minimal", "vnc", "eglfs", "linuxfb"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@app.command("gui")
def gui(folder: Path = typer.Argument(None, help="Folder of photos (or one photo) to open."),
        backend: str = typer.Option(None, "--backend", help="Backend to select at start."),
        run: bool = typer.Option(False, "--run", help="Run the backend on the first photo once it is shown.")) -> None:
    """Open the protolens window, optionally on a folder of photos."""
    if not display_available():
        typer.echo(HEADLESS_HINT.format(folder=folder or "resources/samples/quadrats"), err=True)
        raise typer.Exit(1)
    from protolens.gui.app import qt_platform_problem, run_app

    problem = qt_platform_problem()
    if problem is not None:  # Qt would abort with its own text; say what to install instead
        typer.echo(problem, err=True)
        typer.echo(MISSING_LIBRARIES_TWIN.format(folder=folder or "PATH"), err=True)
        raise typer.Exit(1)
    raise typer.Exit(run_app(folder, backend=backend, run_first=run))
