"""Backend discovery (models/registry.py) and torch device helpers (models/device.py)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import pytest

from protolens.core.errors import BackendUnavailableError
from protolens.models import registry as registry_module
from protolens.models.api import Backend
from protolens.models.registry import Registry

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "plugins"

GOOD_MANIFEST = """\
id = "{id}"
name = "Good test plugin"
version = "0.3"
kind = "heatmap"
entry = "backend:Good"

[params.level]
type = "int"
default = 3
min = 1
max = 9
"""
GOOD_BACKEND = """\
from protolens.models.api import Backend


class Good(Backend):
    pass
"""


def _plugin(root: Path, manifest: str, backend: str | None = None, *, folder: str | None = None) -> Path:
    """A plugin folder under ``root``, with a unique folder name (plugin modules are cached per process)."""
    path = root / (folder or f"plug_{uuid.uuid4().hex[:10]}")
    path.mkdir(parents=True)
    (path / "plugin.toml").write_text(manifest, encoding="utf-8")
    if backend is not None:
        (path / "backend.py").write_text(backend, encoding="utf-8")
    return path


# --- the real plugins ----------------------------------------------------------------------------------


def test_real_plugins_are_discovered_with_their_params():
    registry = Registry.discover([PLUGINS], entry_points=False)
    entries = {entry.id: entry for entry in registry.entries()}
    assert {"vegetation-index", "vit-attention"} <= set(entries)
    assert entries["vegetation-index"].available and entries["vegetation-index"].error is None
    assert entries["vit-attention"].available and entries["vit-attention"].error is None

    vegetation = registry.manifest("vegetation-index")
    assert vegetation.kind == "heatmap" and vegetation.weights == ()
    index = vegetation.param("index")
    assert (index.type, index.default, index.choices) == ("choice", "exg-exr", ("exg", "exg-exr"))
    smoothing = vegetation.param("smoothing")
    assert (smoothing.type, smoothing.default, smoothing.minimum, smoothing.maximum) == ("float", 0.0, 0.0, 20.0)

    vit = registry.manifest("vit-attention")
    assert [p.name for p in vit.params] == ["model", "mode", "block", "head", "head_fusion", "discard_ratio",
                                            "long_side", "tile_size", "overlap", "batch_size", "precision"]
    assert vit.param("mode").choices == ("cls", "received", "rollout")
    long_side = vit.param("long_side")
    assert (long_side.type, long_side.default, long_side.minimum, long_side.maximum) == ("int", 518, 56, 8192)
    head = vit.param("head")
    assert (head.type, head.default, head.minimum) == ("int", -1, -1)
    model = vit.param("model")
    assert model.type == "choice" and model.default in model.choices
    assert {w.name for w in vit.weights} == set(model.choices)  # every selectable model has weights listed
    chosen = vit.weights_for({"model": "vit_small_patch16_224.dino"})
    assert chosen.hf_repo == "timm/vit_small_patch16_224.dino" and chosen.filename == "model.safetensors"
    assert vit.weights_for({"model": "not_in_the_catalogue"}) is None  # never another model's weights


def test_listing_backends_does_not_import_torch():
    code = ("import sys; from protolens.models.registry import Registry; registry = Registry.discover(); "
            "ids = {e.id for e in registry.entries()}; "
            "assert {'vegetation-index', 'vit-attention'} <= ids, ids; "
            "registry.manifest('vit-attention').param('long_side'); "
            "assert 'torch' not in sys.modules; assert 'timm' not in sys.modules; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


def test_create_returns_one_shared_instance():
    registry = Registry.discover([PLUGINS], entry_points=False)
    first = registry.create("vegetation-index")
    assert isinstance(first, Backend)
    assert registry.create("vegetation-index") is first
    assert first.manifest is registry.manifest("vegetation-index")


def test_unknown_id_lists_the_known_ones():
    registry = Registry.discover([PLUGINS], entry_points=False)
    with pytest.raises(BackendUnavailableError, match="no-such-backend") as info:
        registry.create("no-such-backend")
    assert "vegetation-index" in str(info.value) and "vit-attention" in str(info.value)
    with pytest.raises(BackendUnavailableError, match="known backends"):
        registry.manifest("no-such-backend")


# --- broken plugins ------------------------------------------------------------------------------------


def test_plugin_failing_on_import_is_marked_unavailable_and_others_keep_working(tmp_path):
    backend_id = "fails-" + uuid.uuid4().hex[:6]
    _plugin(tmp_path, GOOD_MANIFEST.format(id=backend_id),
            "raise ImportError('needs the package frobnicate, which is not installed')\n")
    registry = Registry.discover([tmp_path, PLUGINS], entry_points=False)

    entry = registry.entry(backend_id)
    assert entry.available and entry.manifest is not None  # importing is deferred until first use
    assert entry.manifest.param("level").default == 3

    with pytest.raises(BackendUnavailableError, match="frobnicate"):
        registry.create(backend_id)
    assert not entry.available
    assert "ImportError" in entry.error and "frobnicate" in entry.error
    with pytest.raises(BackendUnavailableError, match="unavailable.*frobnicate"):
        registry.create(backend_id)  # stays unavailable, with the same reason

    assert registry.create("vegetation-index") is not None


def test_entry_that_is_not_a_backend_class_is_refused(tmp_path):
    backend_id = "notbackend-" + uuid.uuid4().hex[:6]
    _plugin(tmp_path, GOOD_MANIFEST.format(id=backend_id).replace("backend:Good", "backend:helper"),
            "def helper():\n    return 1\n")
    registry = Registry.discover([tmp_path], entry_points=False)
    with pytest.raises(BackendUnavailableError, match="not a protolens Backend subclass"):
        registry.create(backend_id)


def test_plugin_folder_is_imported_and_created(tmp_path):
    backend_id = "good-" + uuid.uuid4().hex[:6]
    _plugin(tmp_path, GOOD_MANIFEST.format(id=backend_id), GOOD_BACKEND)
    registry = Registry.discover([tmp_path], entry_points=False)
    instance = registry.create(backend_id)
    assert type(instance).__name__ == "Good" and instance.manifest.version == "0.3"


def test_two_plugin_folders_of_the_same_name_each_load_their_own_code(tmp_path):
    """Plugin roots (PROTOLENS_PLUGIN_PATH, the source tree, the user folder) may hold same-named folders."""
    folder = "same_" + uuid.uuid4().hex[:6]
    first_id, second_id = "first-" + folder, "second-" + folder
    _plugin(tmp_path / "root_a", GOOD_MANIFEST.format(id=first_id), GOOD_BACKEND, folder=folder)
    _plugin(tmp_path / "root_b", GOOD_MANIFEST.format(id=second_id).replace("backend:Good", "backend:Other"),
            GOOD_BACKEND.replace("class Good", "class Other"), folder=folder)
    registry = Registry.discover([tmp_path / "root_a", tmp_path / "root_b"], entry_points=False)
    assert type(registry.create(first_id)).__name__ == "Good"
    assert type(registry.create(second_id)).__name__ == "Other"


def test_first_manifest_with_an_id_wins(tmp_path):
    backend_id = "dup-" + uuid.uuid4().hex[:6]
    _plugin(tmp_path / "a", GOOD_MANIFEST.format(id=backend_id).replace('version = "0.3"', 'version = "1.0"'))
    _plugin(tmp_path / "b", GOOD_MANIFEST.format(id=backend_id).replace('version = "0.3"', 'version = "2.0"'))
    registry = Registry.discover([tmp_path / "a", tmp_path / "b"], entry_points=False)
    assert [e.id for e in registry.entries()] == [backend_id]
    assert registry.manifest(backend_id).version == "1.0"


@pytest.mark.parametrize("manifest", [
    'id = "x"\nname = "unterminated\n',                                           # not TOML
    'id = "x"\nname = "X"\nversion = "1"\nkind = "heatmap"\n',                    # no entry
    GOOD_MANIFEST.format(id="x").replace('type = "int"', 'type = "complex"'),     # bad param type
    GOOD_MANIFEST.format(id="x").replace("default = 3", "default = 30"),          # default out of bounds
    GOOD_MANIFEST.format(id="x").replace('kind = "heatmap"', 'kind = "poem"'),    # unknown kind
    GOOD_MANIFEST.format(id="x").split("[params")[0] + "[params]\nlevel = 3\n",   # a param that is not a table
    GOOD_MANIFEST.format(id="x") + '[weights.w]\nfilename = "model.safetensors"\n',  # weights without hf_repo
], ids=["bad-toml", "missing-entry", "bad-param-type", "bad-default", "bad-kind", "param-not-table",
        "weights-without-repo"])
def test_invalid_manifest_is_listed_unavailable_and_never_raises(tmp_path, manifest):
    folder = _plugin(tmp_path, manifest, GOOD_BACKEND)
    _plugin(tmp_path, GOOD_MANIFEST.format(id="fine-" + uuid.uuid4().hex[:6]), GOOD_BACKEND)

    registry = Registry.discover([tmp_path], entry_points=False)

    broken = registry.entry(folder.name)  # listed under its folder name
    assert not broken.available and broken.manifest is None
    assert broken.error.startswith("invalid manifest")
    assert "plugin.toml" in broken.origin
    with pytest.raises(BackendUnavailableError, match="invalid manifest"):
        registry.create(folder.name)
    assert sum(e.available for e in registry.entries()) == 1


def test_manifest_that_is_not_utf8_is_listed_unavailable(tmp_path):
    folder = tmp_path / "latin1"
    folder.mkdir()
    (folder / "plugin.toml").write_bytes('id = "x"\nname = "Caf\u00e9"\n'.encode("latin-1"))
    registry = Registry.discover([tmp_path], entry_points=False)
    entry = registry.entry("latin1")
    assert not entry.available and entry.error.startswith("invalid manifest")


def test_missing_requirement_is_named(tmp_path):
    backend_id = "needs-" + uuid.uuid4().hex[:6]
    manifest = GOOD_MANIFEST.format(id=backend_id).replace(
        'entry = "backend:Good"', 'entry = "backend:Good"\nrequires = ["numpy", "no_such_module_xyz"]')
    _plugin(tmp_path, manifest, GOOD_BACKEND)
    registry = Registry.discover([tmp_path], entry_points=False)
    entry = registry.entry(backend_id)
    assert not entry.available
    assert "no_such_module_xyz" in entry.error and "numpy" not in entry.error
    assert entry.manifest is not None  # its form can still be shown
    with pytest.raises(BackendUnavailableError, match="no_such_module_xyz"):
        registry.create(backend_id)


def test_missing_plugin_folder_is_not_an_error(tmp_path):
    registry = Registry.discover([tmp_path / "does-not-exist", PLUGINS], entry_points=False)
    assert "vegetation-index" in {e.id for e in registry.entries()}


# --- entry points --------------------------------------------------------------------------------------


class _EntryPointBackend(Backend):
    MANIFEST = {
        "id": "third-party", "name": "Third party", "version": "2.1", "kind": "segmentation",
        "params": {"radius": {"type": "float", "default": 1.5, "min": 0.0}},
    }


class _FakeEntryPoint:
    def __init__(self, name: str, value: str, loader) -> None:
        self.name, self.value, self._loader = name, value, loader

    def load(self):
        return self._loader()


def _raise_on_load():
    raise ModuleNotFoundError("No module named 'thirdparty_backend'")


@pytest.fixture
def entry_points(monkeypatch):
    """Replace importlib.metadata.entry_points with one that serves the given fake entry points."""
    served: list[_FakeEntryPoint] = []
    groups: list[str] = []

    def fake_entry_points(*, group):
        groups.append(group)
        return list(served) if group == registry_module.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    return served, groups


def test_entry_point_backend_is_discovered_and_creatable(entry_points):
    served, groups = entry_points
    served.append(_FakeEntryPoint("third", "thirdparty.module:Backend", lambda: _EntryPointBackend))

    registry = Registry.discover([PLUGINS])

    assert groups == ["protolens.backends"]
    entry = registry.entry("third-party")
    assert entry.available and entry.manifest.kind == "segmentation"
    assert entry.manifest.entry == "thirdparty.module:Backend"
    assert entry.manifest.param("radius").default == 1.5
    instance = registry.create("third-party")
    assert isinstance(instance, _EntryPointBackend)
    assert registry.create("third-party") is instance
    assert instance.manifest.version == "2.1"
    assert registry.create("vegetation-index") is not None


def test_entry_point_that_fails_to_load_is_listed_unavailable(entry_points):
    served, _ = entry_points
    served.append(_FakeEntryPoint("broken", "thirdparty_backend:Thing", _raise_on_load))
    served.append(_FakeEntryPoint("third", "thirdparty.module:Backend", lambda: _EntryPointBackend))

    registry = Registry.discover([PLUGINS])

    broken = registry.entry("broken")
    assert not broken.available and broken.manifest is None
    assert "thirdparty_backend" in broken.error and "ModuleNotFoundError" in broken.error
    with pytest.raises(BackendUnavailableError, match="thirdparty_backend"):
        registry.create("broken")
    assert registry.entry("third-party").available
    assert registry.create("vegetation-index") is not None


def test_entry_point_with_a_bad_manifest_is_listed_unavailable(entry_points):
    class NoManifest(Backend):
        pass

    served, _ = entry_points
    served.append(_FakeEntryPoint("nomanifest", "pkg:NoManifest", lambda: NoManifest))
    registry = Registry.discover([PLUGINS])
    entry = registry.entry("nomanifest")
    assert not entry.available and "MANIFEST" in entry.error


def test_entry_points_can_be_skipped(entry_points):
    served, groups = entry_points
    served.append(_FakeEntryPoint("third", "thirdparty.module:Backend", lambda: _EntryPointBackend))
    registry = Registry.discover([PLUGINS], entry_points=False)
    assert groups == [] and "third-party" not in {e.id for e in registry.entries()}


# --- devices -------------------------------------------------------------------------------------------


def test_available_devices_end_with_cpu():
    import torch

    from protolens.models.device import available_devices, default_device, describe_device

    devices = available_devices()
    assert devices[-1] == "cpu"
    assert devices[:-1] == [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    assert default_device() in devices
    assert describe_device("cpu").startswith("cpu (")


def test_float32_autocast_is_a_no_op():
    import torch

    from protolens.models.device import autocast

    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "unsupported autocast dtype" noise on every run
        with autocast("cpu", "float32"):
            assert not torch.is_autocast_enabled("cpu")
            product = a @ b
    assert product.dtype == torch.float32
    torch.testing.assert_close(product, a @ b, rtol=0, atol=0)


def test_bfloat16_autocast_computes_in_bfloat16():
    import torch

    from protolens.models.device import autocast

    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with autocast("cpu", "bfloat16"):
        product = a @ b
    assert product.dtype == torch.bfloat16
    torch.testing.assert_close(product.float(), a @ b, rtol=0.05, atol=0.1)
    assert (a @ b).dtype == torch.float32  # autocast ends with the block

