"""Dense CLIP engine: each last-block mode against a numpy re-derivation, windows, class maps, text cache,
offline tokenizer, weights loading — on a tiny random open_clip CLIP."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from protolens.core.cache import DiskCache  # noqa: E402
from protolens.core.errors import CheckpointError, ParamError  # noqa: E402
from protolens.core.prompts import IMAGENET_TEMPLATES, parse_class_list  # noqa: E402
from protolens.models.clip import dense, loading, text  # noqa: E402
from protolens.models.vit.hf import CLIP_MEAN, CLIP_STD  # noqa: E402

TINY_CFG = {"embed_dim": 16,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def make_tiny_clip(seed: int = 0, name: str = "tiny-test-clip"):
    """A real open_clip CLIP, tiny, random weights with sharpened attention (so modes differ), eval mode."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    model = CLIP(embed_dim=16, vision_cfg=CLIPVisionCfg(**TINY_CFG["vision_cfg"]),
                 text_cfg=CLIPTextCfg(**TINY_CFG["text_cfg"]))
    with torch.no_grad():
        for block in model.visual.transformer.resblocks:
            block.attn.in_proj_weight.normal_(0.0, 0.4)
            block.attn.in_proj_bias.normal_(0.0, 0.3)
        model.visual.positional_embedding.normal_(0.0, 0.5)
    return loading.set_clip_identity(model.eval(), name, f"random-{seed}")


@pytest.fixture(scope="module")
def tiny_clip():
    return make_tiny_clip()


# ---- numpy re-derivation of the image tower -----------------------------------------------------------------

def _np(t):
    return t.detach().double().numpy()


def _ln(x, ln):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + ln.eps) * _np(ln.weight) + _np(ln.bias)


def _softmax(a):
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _heads(block, x):
    """q, k, v per head: (heads, L, d_h), from in_proj on ln_1(x)."""
    attn = block.attn
    qkv = _ln(x, block.ln_1) @ _np(attn.in_proj_weight).T + _np(attn.in_proj_bias)
    n, c = x.shape
    h = attn.num_heads
    return [qkv[:, i * c:(i + 1) * c].reshape(n, h, c // h).transpose(1, 0, 2) for i in range(3)]


def _merge_out(block, heads_out):
    out = heads_out.transpose(1, 0, 2).reshape(heads_out.shape[1], -1)
    return out @ _np(block.attn.out_proj.weight).T + _np(block.attn.out_proj.bias)


def _mlp(block, x):
    hidden = _gelu(_ln(x, block.ln_2) @ _np(block.mlp.c_fc.weight).T + _np(block.mlp.c_fc.bias))
    return hidden @ _np(block.mlp.c_proj.weight).T + _np(block.mlp.c_proj.bias)


def _np_block(block, x, mode):
    q, k, v = _heads(block, x)
    s = q.shape[-1] ** -0.5
    if mode == "vanilla":
        attn = _softmax(s * q @ k.transpose(0, 2, 1)) @ v
    elif mode == "maskclip":
        attn = v  # identity attention
    elif mode == "sclip":
        attn = (_softmax(s * q @ q.transpose(0, 2, 1)) + _softmax(s * k @ k.transpose(0, 2, 1))) @ v
    else:  # clearclip
        attn = _softmax(s * q @ q.transpose(0, 2, 1)) @ v
    out = _merge_out(block, attn)
    if mode == "clearclip":
        return out  # residual and FFN dropped
    x = x + out
    return x + _mlp(block, x)


def _cubic_weights(n_in, n_out):
    """PyTorch's bicubic (A = -0.75, half-pixel centres, clamped borders) as an (n_out, n_in) matrix."""
    a = -0.75
    w = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = (i + 0.5) * n_in / n_out - 0.5
        f = math.floor(src)
        t = src - f
        for j, d in zip(range(f - 1, f + 3), (1 + t, t, 1 - t, 2 - t), strict=True):
            d = abs(d)
            k = ((a + 2) * d - (a + 3)) * d * d + 1 if d <= 1 else ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
            w[i, min(max(j, 0), n_in - 1)] += k
    return w


def _np_tower(model, pixels, mode):
    """Per-patch features (rows, cols, D) of one normalised image (3, H, W), all in numpy."""
    vis = model.visual
    p = vis.conv1.kernel_size[0]
    img = pixels.double().numpy()
    _, hh, ww = img.shape
    rows, cols = hh // p, ww // p
    patches = img[:, :rows * p, :cols * p].reshape(3, rows, p, cols, p).transpose(1, 3, 0, 2, 4)
    tokens = patches.reshape(rows * cols, -1) @ _np(vis.conv1.weight).reshape(vis.conv1.out_channels, -1).T
    pos = _np(vis.positional_embedding)
    side = int(round((pos.shape[0] - 1) ** 0.5))
    grid = pos[1:].reshape(side, side, -1)
    grid = np.einsum("rs,sc...->rc...", _cubic_weights(side, rows), grid)
    grid = np.einsum("cs,rs...->rc...", _cubic_weights(side, cols), grid)
    x = np.concatenate([_np(vis.class_embedding)[None], tokens]) + np.concatenate(
        [pos[:1], grid.reshape(rows * cols, -1)])
    x = _ln(x, vis.ln_pre)
    blocks = vis.transformer.resblocks
    for block in blocks[:-1]:
        x = _np_block(block, x, "vanilla")
    x = _np_block(blocks[-1], x, mode)
    f = _ln(x, vis.ln_post)[1:] @ _np(vis.proj)
    f /= np.linalg.norm(f, axis=-1, keepdims=True)
    return f.reshape(rows, cols, -1)


def test_numpy_reference_matches_open_clip_forward(tiny_clip):
    """The numpy tower itself is right: its unmodified (vanilla) path gives open_clip's own tokens."""
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        tiny_clip.visual.output_tokens = True
        _, tokens = tiny_clip.visual(pixels)
        tiny_clip.visual.output_tokens = False
    ours = _np_tower(tiny_clip, pixels[0], "vanilla")
    want = _np(tokens[0] @ tiny_clip.visual.proj)
    want /= np.linalg.norm(want, axis=-1, keepdims=True)
    np.testing.assert_allclose(ours.reshape(-1, ours.shape[-1]), want, atol=1e-5)


@pytest.mark.parametrize("mode", dense.CLIP_MODES)
@pytest.mark.parametrize("size", [(32, 32), (48, 24)])
def test_each_mode_against_numpy(tiny_clip, mode, size):
    """Every mode's last block, incl. the bicubic position embedding of a non-square, other-size window."""
    pixels = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = dense.patch_features(tiny_clip, pixels, mode).numpy()
    assert got.shape == (2, size[0] // 8, size[1] // 8, 16)
    for i in range(2):
        np.testing.assert_allclose(got[i], _np_tower(tiny_clip, pixels[i], mode), atol=2e-5)


def test_modes_differ(tiny_clip):
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        outs = [dense.patch_features(tiny_clip, pixels, m).numpy() for m in dense.CLIP_MODES]
    assert min(np.abs(a - b).max() for a in outs for b in outs if a is not b) > 1e-2


def test_position_embedding_same_grid_is_unchanged(tiny_clip):
    pos = dense.interpolate_pos_embed(tiny_clip.visual, 4, 4)
    assert pos is tiny_clip.visual.positional_embedding
    assert dense.interpolate_pos_embed(tiny_clip.visual, 6, 3).shape == (1 + 18, 32)


def test_unknown_mode_and_model():
    with pytest.raises(ParamError, match="mode"):
        dense.patch_features(make_tiny_clip(), torch.zeros(1, 3, 32, 32), "vanilla")
    with pytest.raises(ParamError, match="open_clip CLIP ViT"):
        dense.patch_features(torch.nn.Linear(2, 2), torch.zeros(1, 3, 32, 32), "sclip")


# ---- windows -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("width, height, window, stride", [(100, 64, 32, 16), (538, 336, 224, 112),
                                                           (20, 50, 32, 16), (64, 64, 64, 32)])
def test_windows_cover_the_image(width, height, window, stride):
    boxes = dense.window_boxes(width, height, window, stride)
    cover = np.zeros((height, width), int)
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert x1 - x0 == min(window, width) and y1 - y0 == min(window, height)
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1
    assert boxes[:, 2].max() == width and boxes[:, 3].max() == height  # last windows flush with the edges
    per_axis = [1 if side <= window else math.ceil((side - window) / stride) + 1 for side in (width, height)]
    assert len(boxes) == per_axis[0] * per_axis[1]


def _run(gen):
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value


def _photo(h=48, w=80, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((h, w, 3)) * 255).astype(np.uint8)


def test_dense_features_windows_match_single_forward(tiny_clip):
    image = _photo(48, 80)
    feats = _run(dense.dense_patch_features(tiny_clip, image, mode="sclip", short_side=32, window=32, stride=16))
    assert feats.resized_size == (53, 32) and feats.image_size == (80, 48)
    assert feats.boxes.tolist() == [[0, 0, 32, 32], [16, 0, 48, 32], [21, 0, 53, 32]]
    resized = dense.resize_short_side(image, 32)
    mean, std = CLIP_MEAN, CLIP_STD
    for f, (x0, y0, x1, y1) in zip(feats.features, feats.boxes, strict=True):
        pixels = dense.window_pixels(resized[y0:y1, x0:x1], 8, mean, std)[None]
        with torch.no_grad():
            want = dense.patch_features(tiny_clip, pixels, "sclip")[0].numpy()
        np.testing.assert_allclose(f, want, atol=1e-5)
        assert f.shape == (4, 4, 16)


def test_cancel_between_batches(tiny_clip):
    from protolens.core.errors import Cancelled
    from protolens.core.jobs import CancelToken

    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        _run(dense.dense_patch_features(tiny_clip, _photo(), short_side=32, window=32, stride=16, cancel=token))


# ---- class maps: window averaging, softmax over synonyms, synonym max, threshold ----------------------------

def _unit(rng, *shape):
    a = rng.normal(size=shape)
    return (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)


def test_class_logits_average_upsampled_windows():
    rng = np.random.default_rng(4)
    boxes = dense.window_boxes(40, 24, 24, 8)  # 3 windows along x, overlapping
    feats = dense.DenseClipFeatures([_unit(rng, 3, 3, 8) for _ in boxes], boxes, (40, 24), (80, 48), "sclip")
    texts = [_unit(rng, 2, 8), _unit(rng, 1, 8)]
    got = dense.class_logits(feats, texts)
    table = np.concatenate(texts)
    total = np.zeros((24, 40, 3))
    count = np.zeros((24, 40, 1))
    for f, (x0, y0, x1, y1) in zip(feats.features, boxes, strict=True):
        logits = f @ table.T  # (3, 3, S) cosine similarities
        total[y0:y1, x0:x1] += cv2_resize(logits, (x1 - x0, y1 - y0))
        count[y0:y1, x0:x1] += 1
    np.testing.assert_allclose(got, (total / count).transpose(2, 0, 1), atol=1e-5)
    small = dense.class_logits(feats, texts, max_side=20)
    assert small.shape == (3, 12, 20)


def cv2_resize(a, size):
    import cv2

    return cv2.resize(a.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)


def test_class_maps_softmax_synonym_max_and_threshold():
    rng = np.random.default_rng(5)
    boxes = np.asarray([[0, 0, 16, 16]])
    feats = dense.DenseClipFeatures([_unit(rng, 4, 4, 8)], boxes, (16, 16), (16, 16), "maskclip")
    texts = [_unit(rng, 2, 8), _unit(rng, 1, 8), _unit(rng, 3, 8)]
    maps = dense.dense_class_maps(feats, texts, class_names=["a", "b", "c"], logit_scale=7.0,
                                  prob_threshold=0.45)
    logits = dense.class_logits(feats, texts)  # (6, 16, 16)
    e = np.exp(7.0 * logits - (7.0 * logits).max(0))
    p = e / e.sum(0)
    want = np.stack([p[0:2].max(0), p[2:3].max(0), p[3:6].max(0)])
    np.testing.assert_allclose(maps.probabilities, want, atol=1e-6)
    best = want.max(0)
    labels = np.where(best >= 0.45, want.argmax(0) + 1, 0)
    np.testing.assert_array_equal(maps.labels, labels)
    assert 0 < (maps.labels == 0).mean() < 1  # the threshold is exercised both ways
    assert maps.class_names == ["a", "b", "c"] and maps.labels.dtype == np.int32
    with pytest.raises(ParamError):
        dense.dense_class_maps(feats, texts, class_names=["a", "b"])


def test_pipeline_on_a_quadrat(tiny_clip):
    from protolens.core.imageio import read_image

    image = read_image(Path(__file__).resolve().parents[2] / "resources/samples/quadrats/moss_carpet.jpg")
    prompts = parse_class_list("moss; bryophyte\nsoil\nclover\n")
    maps = _run(dense.clip_class_maps(tiny_clip, image, prompts, mode="clearclip", short_side=48, window=32,
                                      stride=16, max_side=64))
    rows, cols = maps.labels.shape
    assert max(rows, cols) <= 64 and maps.probabilities.shape == (3, rows, cols)
    assert abs(cols / rows - image.shape[1] / image.shape[0]) < 0.1
    assert np.all((maps.probabilities >= 0) & (maps.probabilities <= 1))
    assert maps.image_size == (image.shape[1], image.shape[0])


# ---- text: template averaging, cache per synonym, tokenizer offline ------------------------------------------

def test_template_averaging_by_hand(tiny_clip):
    prompts = parse_class_list("moss; bryophyte\nsoil\n")
    got = text.encode_texts(tiny_clip, prompts)
    assert [g.shape for g in got] == [(2, 16), (1, 16)]
    for block, prompt in zip(got, prompts, strict=True):
        for row, synonym in zip(block, prompt.synonyms, strict=True):
            tokens = loading.tokenize([t.format(synonym) for t in IMAGENET_TEMPLATES])
            with torch.no_grad():
                emb = tiny_clip.encode_text(tokens).double().numpy()  # open_clip's own, full 77 tokens
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
            mean = emb.mean(0)
            np.testing.assert_allclose(row, mean / np.linalg.norm(mean), atol=1e-5)


def test_editing_one_class_reencodes_only_it(tmp_path):
    model = make_tiny_clip(seed=7, name="tiny-cache-clip")
    text.reset_text_stats(clear_cache=True)
    disk = DiskCache(tmp_path / "text")
    first = text.TextEncoderStats()
    text.encode_texts(model, parse_class_list("moss; bryophyte\nsoil\nclover\n"), cache=disk, stats=first)
    assert (first.encoded, first.cached) == (4, 0)
    edited = text.TextEncoderStats()
    out = text.encode_texts(model, parse_class_list("moss; bryophyte\nbare soil; soil\nclover\n"), cache=disk,
                            stats=edited)
    assert (edited.encoded, edited.cached, edited.disk) == (1, 4, 0)  # only "bare soil" is new
    assert text.text_stats().encoded == 5
    text.reset_text_stats(clear_cache=True)  # a new process: memory empty, disk kept
    again = text.TextEncoderStats()
    out2 = text.encode_texts(model, parse_class_list("moss; bryophyte\nbare soil; soil\nclover\n"), cache=disk,
                             stats=again)
    assert (again.encoded, again.cached, again.disk) == (0, 5, 5)
    for a, b in zip(out, out2, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-7)
    other = text.TextEncoderStats()  # other weights: the same synonyms are encoded again
    text.encode_texts(make_tiny_clip(seed=8, name="tiny-cache-clip"), parse_class_list("moss\n"), stats=other)
    assert other.encoded == 1


def test_tokenizer_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(loading, "_TOKENIZERS", {})
    tokens = loading.tokenize(["a photo of a white clover.", "moss"])
    assert tokens.shape == (2, 77) and tokens.dtype == torch.int64
    assert tokens[:, 0].tolist() == [49406, 49406]
    ends = tokens.argmax(dim=1)
    assert tokens[0, ends[0]] == 49407 and tokens[1, 2] == 49407 and int(ends[1]) == 2
    assert int(tokens[1, 3:].abs().sum()) == 0


# ---- loading ---------------------------------------------------------------------------------------------------

@pytest.fixture
def tiny_config(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "protolens-tiny-clip.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(folder)
    return "protolens-tiny-clip"


def test_load_clip_weights_cache_and_errors(tmp_path, tiny_config):
    from safetensors.torch import save_file

    source = loading.create_clip(tiny_config)
    with torch.no_grad():
        source.visual.proj.mul_(3.0)
    weights = tmp_path / "w" / "open_clip_model.safetensors"
    weights.parent.mkdir()
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(weights))
    model = loading.load_clip(tiny_config, weights, "cpu")
    assert torch.equal(model.visual.proj, source.visual.proj)
    assert loading.load_clip(tiny_config, weights, "cpu") is model  # reused
    assert loading.clip_identity(model)[1] != "random" and len(loading.clip_identity(model)[1]) == 64
    assert loading.load_clip(tiny_config, None, "cpu") is not model
    assert loading.load_clip(tiny_config, weights.parent, "cpu") is model  # a snapshot folder: same file, same key
    assert loading.load_clip(tiny_config, weights.parent, "cpu", weights_key="x").visual.proj.shape == (32, 16)
    with pytest.raises(CheckpointError, match="no such weights file"):
        loading.load_clip(tiny_config, tmp_path / "missing.safetensors", "cpu")

    bad = dict(source.state_dict())
    bad["visual.proj"] = torch.zeros(32, 8)
    wrong = tmp_path / "wrong.pt"
    torch.save(bad, wrong)
    with pytest.raises(CheckpointError, match=rf"wrong\.pt.*{tiny_config}.*visual\.proj"):
        loading.load_clip(tiny_config, wrong, "cpu")
    with pytest.raises(CheckpointError, match="unknown CLIP model"):
        loading.load_clip("no-such-clip", None, "cpu")


def test_quick_gelu_from_open_clip_config(tmp_path, tiny_config):
    from safetensors.torch import save_file

    folder = tmp_path / "snap"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in loading.create_clip(tiny_config).state_dict().items()},
              str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"quick_gelu": True}}))
    model = loading.load_clip(tiny_config, folder / "open_clip_model.safetensors", "cpu")
    assert type(model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    assert loading.clip_identity(model)[0].endswith("+quickgelu")
    plain = loading.load_clip(tiny_config, folder / "open_clip_model.safetensors", "cpu", quick_gelu=False)
    assert type(plain.visual.transformer.resblocks[0].mlp.gelu).__name__ == "GELU"
