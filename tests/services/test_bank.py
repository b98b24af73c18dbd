"""Building the prototype bank (KLC step 1, part centroids): cache files, reuse, unreadable images, vocabulary."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from protolens.core.bank_files import read_bank_cache
from protolens.core.errors import Cancelled, ParamError
from protolens.core.jobs import CancelToken
from protolens.models import dense as dense_module
from protolens.models.registry import Registry
from protolens.services.bank import build_bank, load_bank
from protolens.services.segment import Segmenter, drain
from protolens.services.tokens import _backbone

MODEL = "vit_small_patch14_dinov2.lvd142m"
FAST = {"model": MODEL, "input_size": 56, "allow_random_weights": True, "parts": 3, "library": "sklearn"}


@pytest.fixture
def segmenter():
    return Segmenter(Registry.discover(), device="cpu", disk_cache=None)


@pytest.fixture
def embedded(monkeypatch):
    """Photos passed through dense_features, counted."""
    seen: list[int] = []
    real = dense_module.dense_features

    def counting(model, images, **options):
        seen.append(len(images))
        return (yield from real(model, images, **options))

    monkeypatch.setattr(dense_module, "dense_features", counting)
    return seen


def test_build_writes_the_cache_and_a_rebuild_reuses_it(segmenter, birds, embedded):
    summary = drain(build_bank(segmenter, birds, **FAST))
    assert (summary.images, summary.embedded, summary.reused) == (11, 11, 0) and sum(embedded) == 11
    assert summary.classes == {p.stem: 1 for p in birds.iterdir() if p.is_file()} and summary.parts == 3
    assert summary.cache_dir == birds.resolve() / ".protolens-bank" and summary.unreadable == []
    meta = json.loads((summary.cache_dir / "bank.json").read_text())
    backend, params, ctx = _backbone(segmenter, MODEL, "auto", None, True, CancelToken())
    assert (meta["weights"]["id"], meta["weights"]["sha256"]) == backend.weights_identity(params, ctx)
    assert meta["weights"]["id"] == f"{MODEL}:random-init" and meta["input"] == 56
    bank = load_bank(birds)
    assert bank.cls.shape == (11, 384) and bank.part_centroids.shape == (3, 384)
    assert bank.part_names == ["part 1", "part 2", "part 3"]
    assert len(list((summary.cache_dir / "features").glob("*.npz"))) == 11
    tokens, saliency, cls = bank.features(0)
    assert tokens.shape == (4, 4, 384) and saliency.shape == (4, 4) and cls.shape == (384,)
    assert 0.0 <= saliency.min() and saliency.max() <= 1.0
    embedded.clear()
    again = drain(build_bank(segmenter, birds, **FAST))
    assert (again.embedded, again.reused) == (0, 11) and embedded == []
    np.testing.assert_array_equal(load_bank(birds).cls, bank.cls)


def test_a_changed_image_alone_is_embedded_again(segmenter, birds, embedded):
    drain(build_bank(segmenter, birds, **FAST))
    first = load_bank(birds)
    crow = np.asarray(Image.open(birds / "crow.png"))
    Image.fromarray(np.ascontiguousarray(crow[:, ::-1])).save(birds / "crow.png")  # mirrored: other bytes
    with pytest.raises(ParamError, match=r"crow.png \(changed\)"):
        read_bank_cache(birds)
    embedded.clear()
    summary = drain(build_bank(segmenter, birds, **FAST))
    assert (summary.embedded, summary.reused) == (1, 10) and embedded == [1]
    bank = load_bank(birds)
    index = next(i for i, image in enumerate(bank.images) if image.rel == "crow.png")
    assert bank.images[index].sha256 != first.images[index].sha256
    others = [i for i in range(11) if i != index]
    np.testing.assert_array_equal(bank.cls[others], first.cls[others])
    assert len(list((bank.cache_dir / "features").glob("*.npz"))) == 11  # the old crow's features removed


def test_identical_bytes_reuse_the_features(segmenter, birds, embedded, samples):
    drain(build_bank(segmenter, birds, **FAST))
    shutil.copy(samples / "birds" / "magpie.png", birds / "crow.png")  # the magpie's bytes under another name
    embedded.clear()
    summary = drain(build_bank(segmenter, birds, **FAST))
    assert (summary.embedded, summary.reused) == (0, 11) and embedded == []
    bank = load_bank(birds)
    names = [image.rel for image in bank.images]
    np.testing.assert_array_equal(bank.cls[names.index("crow.png")], bank.cls[names.index("magpie.png")])


def test_unreadable_image_is_named_skipped_and_the_bank_still_opens(segmenter, birds):
    (birds / "broken.png").write_bytes(b"not a png")
    summary = drain(build_bank(segmenter, birds, **FAST))
    assert summary.images == 11 and [rel for rel, _ in summary.unreadable] == ["broken.png"]
    bank = load_bank(birds)
    assert "broken" not in bank.classes and len(bank) == 11


def test_class_subfolders_and_a_part_vocabulary(segmenter, tmp_path, samples):
    root = tmp_path / "bank"
    for label, names in {"gulls": ["seagull.png", "silver-gull.png"], "corvids": ["crow.png", "magpie.png"]}.items():
        (root / label).mkdir(parents=True)
        for name in names:
            shutil.copy(samples / "birds" / name, root / label)
    (root / "part_names.txt").write_text("head\nwings\ntail\n")
    summary = drain(build_bank(segmenter, root, **FAST))
    assert summary.classes == {"gulls": 2, "corvids": 2}
    bank = load_bank(root)
    assert bank.part_names == ["head", "wings", "tail"] and set(bank.classes) == {"gulls", "corvids"}
    (root / "part_names.txt").write_text("head\nwings\n")
    with pytest.raises(ParamError, match="2 part names for --parts 3"):
        drain(build_bank(segmenter, root, **FAST))


def test_errors(segmenter, tmp_path):
    with pytest.raises(ParamError, match="not a folder"):
        drain(build_bank(segmenter, tmp_path / "missing", **FAST))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ParamError, match="no images"):
        drain(build_bank(segmenter, tmp_path / "empty", **FAST))
    with pytest.raises(ParamError, match="not a built bank"):
        load_bank(tmp_path / "empty")


def test_cancel_stops_the_build(segmenter, birds):
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(Cancelled):
        drain(build_bank(segmenter, birds, cancel=cancel, **FAST))
    assert not (birds / ".protolens-bank" / "bank.json").exists()
