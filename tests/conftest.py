"""Test-wide settings: offscreen Qt, no network, and per-session cache/settings folders."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="protolens-tests-"))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["PROTOLENS_CACHE_DIR"] = str(_SESSION_DIR / "cache")
os.environ["PROTOLENS_SETTINGS"] = str(_SESSION_DIR / "settings.ini")
os.environ.pop("PROTOLENS_STORE", None)

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "resources" / "samples"


@pytest.fixture(scope="session")
def samples() -> Path:
    """The bundled sample photos (resources/samples)."""
    return SAMPLES

FIXTURE_PLUGINS = Path(__file__).resolve().parent / "fixtures" / "plugins"


@pytest.fixture
def registry():
    """Real plugins plus the test fixtures (a slow counting gradient and a broken plugin)."""
    from protolens.models.registry import Registry, default_plugin_dirs

    return Registry.discover([FIXTURE_PLUGINS, *default_plugin_dirs()], entry_points=False)


@pytest.fixture
def gradient_runs():
    """The list the test-gradient backend appends to on every real run (cleared per test)."""
    from protolens.models.registry import Registry

    Registry.discover([FIXTURE_PLUGINS], entry_points=False).create("test-gradient")
    import sys

    runs = sys.modules["protolens_plugins.test_gradient.backend"].RUNS
    runs.clear()
    return runs


@pytest.fixture
def birds(tmp_path, samples):
    """A writable copy of the 11 bird samples: a flat prototype bank (each photo its own class)."""
    import shutil

    root = tmp_path / "birds"
    shutil.copytree(samples / "birds", root)
    return root


@pytest.fixture
def photo_folder(tmp_path, samples):
    """A writable folder with two real quadrat photos and one broken file."""
    import shutil

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(samples / "quadrats" / "green_meadow.jpg", folder / "a_meadow.jpg")
    shutil.copy(samples / "plants" / "dahlia.jpg", folder / "b_dahlia.jpg")
    (folder / "c_broken.jpg").write_bytes(b"this is not a jpeg")
    return folder
