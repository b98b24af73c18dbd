"""Dense ViT descriptors (models/descriptors.py, Amir et al. arXiv 2112.05814) against plain re-derivations."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from protolens.core.errors import ParamError
from protolens.core.explanation import Correspondence
from protolens.core.jobs import CancelToken
from protolens.models.dense import dense_features
from protolens.models.descriptors import (
    FACETS,
    Descriptors,
    facet_descriptors,
    find_correspondences,
    log_bin,
    strided_model,
)

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def drain(generator):
    while True:
        try:
            next(generator)
        except StopIteration as stop:
            return stop.value


def photo(seed: int = 0, shape=(50, 70, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def descriptors_of(model, images, **options):
    kwargs = dict(mean=MEAN, std=STD, device="cpu", dtype="float32", cancel=CancelToken(), input_size=64)
    kwargs.update(options)
    return drain(facet_descriptors(model, images, **kwargs))


# --- log-binning --------------------------------------------------------------------------------------------

def reference_log_bin(x: np.ndarray, hierarchy: int) -> np.ndarray:
    """Plain loops over cells: level k averages the in-grid cells of the 3^k window around a position (padding
    not counted) at the 3x3 neighbours offset 3^k (centre only at level 0), out-of-grid neighbours clamped."""
    rows, cols, d = x.shape
    out = np.zeros((rows, cols, d * (1 + 8 * hierarchy)))
    for r in range(rows):
        for c in range(cols):
            parts = []
            for level in range(hierarchy):
                step, half = 3 ** level, 3 ** level // 2
                for dr in (-step, 0, step):
                    for dc in (-step, 0, step):
                        if level > 0 and dr == 0 and dc == 0:
                            continue
                        nr, nc = min(max(r + dr, 0), rows - 1), min(max(c + dc, 0), cols - 1)
                        window = [x[i, j] for i in range(nr - half, nr + half + 1)
                                  for j in range(nc - half, nc + half + 1) if 0 <= i < rows and 0 <= j < cols]
                        parts.append(np.mean(window, axis=0))
            out[r, c] = np.concatenate(parts)
    return out


@pytest.mark.parametrize(("shape", "hierarchy"), [((7, 5, 3), 2), ((11, 9, 2), 3), ((4, 6, 2), 1)])
def test_log_bin_matches_a_loop_re_derivation(shape, hierarchy):
    x = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    binned = log_bin(x, hierarchy)
    assert isinstance(binned, np.ndarray) and binned.dtype == np.float32
    assert binned.shape == (*shape[:2], shape[2] * (1 + 8 * hierarchy))
    np.testing.assert_allclose(binned, reference_log_bin(x.astype(np.float64), hierarchy), atol=1e-5)


def test_log_bin_edge_clamping_and_bin_order():
    x = np.arange(7 * 5, dtype=np.float32).reshape(7, 5, 1)
    binned = log_bin(x)
    assert binned.shape == (7, 5, 17)
    # corner (0, 0), level 0: neighbours (-1,-1) (-1,0) (-1,1) (0,-1) (0,0) (0,1) (1,-1) (1,0) (1,1), clamped
    np.testing.assert_array_equal(binned[0, 0, :9], [0, 0, 1, 0, 0, 1, 5, 5, 6])
    # level 1 at the corner: 3x3 means (padding not counted) around the clamped positions (0,0), (0,3), (3,0), (3,3)
    m00, m03 = np.mean([0, 1, 5, 6]), np.mean([2, 3, 4, 7, 8, 9])
    m30, m33 = np.mean([10, 11, 15, 16, 20, 21]), np.mean([12, 13, 14, 17, 18, 19, 22, 23, 24])
    np.testing.assert_allclose(binned[0, 0, 9:], [m00, m00, m03, m00, m03, m30, m30, m33], rtol=1e-6)


def test_log_bin_tensor_and_amir_size():
    x = torch.randn(55, 55, 384)
    binned = log_bin(x)
    assert isinstance(binned, torch.Tensor) and binned.shape == (55, 55, 6528)
    np.testing.assert_allclose(binned[20, 30, :384].numpy(), x[19, 29].numpy())
    with pytest.raises(ParamError):
        log_bin(np.zeros((3, 3)))


# --- strided model ------------------------------------------------------------------------------------------

def test_strided_model_gives_a_denser_grid_and_leaves_the_model_alone(tiny_vit):
    model = tiny_vit(8, img_size=64)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model.forward_features(x).clone()
        strided = strided_model(model, 4)
        assert strided is not model and strided_model(model, 4) is strided  # one copy per (model, stride)
        assert strided(x).shape == (1, 48)
        tokens = strided.forward_features(x)
        after = model.forward_features(x)
    assert tokens.shape == (1, 1 + 15 * 15, 48)  # (64 - 8) / 4 + 1 = 15
    assert model.patch_embed.proj.stride == (8, 8)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert strided_model(model, 8) is model
    assert strided_model(model, 0) is strided  # 0 = patch // 2


def test_strided_position_embedding_is_resampled_bicubically(tiny_vit):
    """A zero image: the first block sees conv bias + position embedding, resampled from the 8 x 8 grid to 15 x 15
    by timm (bicubic, align_corners=False, antialias=True: the a = -0.5 cubic kernel)."""
    model = tiny_vit(8, img_size=64)
    strided = strided_model(model, 4)
    caught = {}
    handle = strided.blocks[0].register_forward_pre_hook(lambda _m, args: caught.__setitem__("x", args[0]))
    with torch.no_grad():
        strided.forward_features(torch.zeros(1, 3, 64, 64))
    handle.remove()
    pos = model.pos_embed.detach()[0, 1:].reshape(1, 8, 8, 48).permute(0, 3, 1, 2)
    resampled = torch.nn.functional.interpolate(pos, size=(15, 15), mode="bicubic", align_corners=False,
                                                antialias=True)[0].permute(1, 2, 0).reshape(225, 48)
    expected = resampled + model.patch_embed.proj.bias.detach()
    torch.testing.assert_close(caught["x"][0, 1:], expected, atol=1e-5, rtol=1e-5)


def test_strided_model_of_a_fixed_size_timm_vit():
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=1, num_heads=3, num_classes=0).eval()
    with torch.no_grad():
        tokens = strided_model(model, 4).forward_features(torch.randn(2, 3, 48, 48))
        plain = model.forward_features(torch.randn(1, 3, 32, 32))
    assert tokens.shape == (2, 1 + 11 * 11, 48) and plain.shape == (1, 17, 48)


def test_strided_model_refuses_bad_strides(tiny_vit):
    model = tiny_vit(8)
    for stride in (3, 16, -2):
        with pytest.raises(ParamError, match="must divide the patch size 8"):
            strided_model(model, stride)


def model_input(image: np.ndarray, size: int) -> torch.Tensor:
    """The model input re-derived: cv2 resize (area when shrinking both sides, else cubic), (x/255-mean)/std."""
    shrink = size < image.shape[0] and size < image.shape[1]
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    x = (resized.astype(np.float64) / 255.0 - np.array(MEAN)) / np.array(STD)
    return torch.from_numpy(x.transpose(2, 0, 1)[None].astype(np.float32))


def block_io(model, x: torch.Tensor, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """(attention input = norm1 output, block output) of block ``layer``, each (tokens, dim) float64."""
    caught = {}
    block = model.blocks[layer]
    handles = [block.norm1.register_forward_hook(lambda _m, _i, out: caught.__setitem__("in", out)),
               block.register_forward_hook(lambda _m, _i, out: caught.__setitem__("out", out))]
    with torch.no_grad():
        model.forward_features(x)
    for handle in handles:
        handle.remove()
    return caught["in"][0].double().numpy(), caught["out"][0].double().numpy()


# --- facets -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("registers", [0, 4])
def test_facets_match_the_qkv_projection_and_block_output(tiny_vit, registers):
    model = tiny_vit(8, reg_tokens=registers, img_size=64)
    image = photo()
    attention_in, block_out = block_io(model, model_input(image, 64), 0)
    qkv = attention_in @ model.blocks[0].attn.qkv.weight.detach().double().numpy().T
    qkv += model.blocks[0].attn.qkv.bias.detach().double().numpy()
    prefix = 1 + registers
    expected = {"query": qkv[prefix:, :48], "key": qkv[prefix:, 48:96], "value": qkv[prefix:, 96:],
                "token": block_out[prefix:]}
    for facet in FACETS:
        (found,) = descriptors_of(model, [image], facet=facet, layer=0, bin=False, stride=8)
        assert found.values.shape == (8, 8, 48) and found.values.dtype == np.float32
        np.testing.assert_allclose(found.values, expected[facet].reshape(8, 8, 48), atol=1e-4, err_msg=facet)


def test_saliency_is_the_dense_features_saliency_at_patch_stride(tiny_vit):
    model = tiny_vit(8, reg_tokens=4, img_size=64)
    images = [photo(1), photo(2, (30, 90, 3))]
    found = descriptors_of(model, images, layer=1, stride=8, saliency_block=-1)
    dense = drain(dense_features(model, images, input_size=64, mean=MEAN, std=STD, device="cpu", dtype="float32",
                                 cancel=CancelToken()))
    for d, f, image in zip(found, dense, images, strict=True):
        np.testing.assert_allclose(d.saliency, f.saliency, atol=1e-5)
        assert d.image_size == image.shape[:2] and (d.stride, d.patch, d.input_size) == (8, 8, 64)
        assert d.values.shape == (8, 8, 48 * 17)


def test_strided_binned_descriptors(tiny_vit):
    model = tiny_vit(8, img_size=64)
    images = [photo(3), photo(4)]
    binned = descriptors_of(model, images, layer=-1, facet="key", stride=4, batch_size=1)
    plain = descriptors_of(model, images, layer=-1, facet="key", stride=0, bin=False, batch_size=2)
    for b, p in zip(binned, plain, strict=True):
        assert b.values.shape == (15, 15, 48 * 17) and b.saliency.shape == (15, 15) and b.grid == (15, 15)
        assert p.values.shape == (15, 15, 48) and p.stride == 4
        np.testing.assert_allclose(b.values, log_bin(p.values), atol=1e-5)
        np.testing.assert_allclose(b.saliency, p.saliency, atol=1e-5)
        assert b.saliency.min() == 0.0 and b.saliency.max() == 1.0


def test_facet_options_are_checked(tiny_vit):
    model = tiny_vit(8)
    with pytest.raises(ParamError, match="facet 'attn'"):
        descriptors_of(model, [photo()], facet="attn")
    with pytest.raises(ParamError, match="layer 9 is out of range"):
        descriptors_of(model, [photo()])
    with pytest.raises(ParamError, match="multiple of the patch size"):
        descriptors_of(model, [photo()], layer=1, input_size=60)
    with pytest.raises(ParamError, match="divide"):
        descriptors_of(model, [photo()], layer=1, stride=3)
    assert descriptors_of(model, [], layer=1) == []


def test_hugging_face_key_facet_at_patch_stride_only():
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    model = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, patch_size=8, image_size=32)).eval()
    image = photo()
    key = next(m for n, m in model.encoder.layer[1].named_modules() if n.endswith(("key", "k_proj")))
    caught = {}
    handle = key.register_forward_hook(lambda _m, _i, out: caught.__setitem__("k", out))
    with torch.no_grad():
        model(pixel_values=model_input(image, 32))
    handle.remove()
    (found,) = descriptors_of(model, [image], layer=1, bin=False, stride=8, input_size=32)
    np.testing.assert_allclose(found.values, caught["k"][0, 1:].reshape(4, 4, 32).numpy(), atol=1e-4)
    with pytest.raises(ParamError, match="needs a timm ViT"):
        descriptors_of(model, [image], layer=1, stride=4, input_size=32)


# --- pixels and correspondences -----------------------------------------------------------------------------

def make_descriptors(values: np.ndarray, saliency: np.ndarray | None = None, *, stride: int = 4, patch: int = 8,
                     input_size: int = 64, image_size=(64, 64)) -> Descriptors:
    saliency = np.ones(values.shape[:2], np.float32) if saliency is None else saliency.astype(np.float32)
    return Descriptors(values.astype(np.float32), saliency, stride, patch, input_size, image_size)


def test_pixel_xy_maps_tokens_to_photo_pixels():
    d = make_descriptors(np.zeros((15, 15, 2)), image_size=(100, 200))
    xy = d.pixel_xy(np.array([0, 2, 14]), np.array([0, 3, 1]))
    assert xy.shape == (3, 2) and xy.dtype == np.float32
    # input pixel = idx * 4 + 8 // 2; x scaled by 200 / 64, y by 100 / 64
    expected = [[4 * 200 / 64, 4 * 100 / 64], [16 * 200 / 64, 12 * 100 / 64], [8 * 200 / 64, 60 * 100 / 64]]
    np.testing.assert_allclose(xy, expected, rtol=1e-6)


def permuted_pair(seed: int = 0, rows: int = 6, cols: int = 5, dim: int = 8):
    """d1 random, d2 = d1 with its cells moved: cell i of d1 sits at cell perm[i] of d2."""
    rng = np.random.default_rng(seed)
    v1 = rng.normal(size=(rows * cols, dim))
    perm = rng.permutation(rows * cols)
    v2 = np.empty_like(v1)
    v2[perm] = v1
    return v1.reshape(rows, cols, dim), v2.reshape(rows, cols, dim), perm


def xy_of(index: np.ndarray, cols: int, d: Descriptors) -> np.ndarray:
    return d.pixel_xy(index // cols, index % cols)


def test_correspondences_of_a_permutation():
    v1, v2, perm = permuted_pair()
    d1, d2 = make_descriptors(v1, image_size=(64, 128)), make_descriptors(v2, image_size=(32, 64))
    found = find_correspondences(d1, d2, n_pairs=100)
    assert isinstance(found, Correspondence)
    assert len(found.query_xy) == 30  # fewer candidates than n_pairs: all of them
    np.testing.assert_allclose(found.similarity, 1.0, atol=1e-5)
    np.testing.assert_allclose(found.saliency, 1.0)
    # every query point is matched with the place its descriptor moved to
    expected = {tuple(xy_of(np.array([i]), 5, d1)[0]): tuple(xy_of(np.array([perm[i]]), 5, d2)[0]) for i in range(30)}
    got = {tuple(q): tuple(o) for q, o in zip(found.query_xy, found.other_xy, strict=True)}
    assert got == expected
    for array in (found.query_xy, found.other_xy, found.similarity, found.saliency):
        assert array.dtype == np.float32


def test_saliency_filter_drops_pairs_at_or_below_the_threshold():
    v1, v2, perm = permuted_pair(1)
    s1 = np.ones(30)
    s1[:10] = 0.05  # not strictly above the threshold
    s2 = np.ones(30)
    s2[perm[10:15]] = 0.01
    found = find_correspondences(make_descriptors(v1, s1.reshape(6, 5)), make_descriptors(v2, s2.reshape(6, 5)),
                                 n_pairs=50, saliency_threshold=0.05)
    kept = {tuple(q) for q in found.query_xy}
    d = make_descriptors(v1)
    assert kept == {tuple(xy_of(np.array([i]), 5, d)[0]) for i in range(15, 30)}


def test_kmeans_keeps_the_most_salient_pair_of_each_group():
    rng = np.random.default_rng(2)
    centres = np.eye(3, 6) * 10  # three well-separated groups of descriptors
    group = np.repeat(np.arange(3), 10)
    v1 = (centres[group] + rng.normal(scale=0.05, size=(30, 6))).reshape(6, 5, 6)
    v2 = v1.copy()  # identity matching: every cell is its own best buddy
    saliency = rng.uniform(0.2, 0.9, size=30)
    d1, d2 = make_descriptors(v1, saliency.reshape(6, 5)), make_descriptors(v2, saliency.reshape(6, 5))
    found = find_correspondences(d1, d2, n_pairs=3, seed=0)
    best = [int(np.flatnonzero(group == g)[np.argmax(saliency[group == g])]) for g in range(3)]
    best.sort(key=lambda i: -saliency[i])  # returned by decreasing mean saliency
    np.testing.assert_allclose(found.query_xy, xy_of(np.array(best), 5, d1))
    np.testing.assert_allclose(found.other_xy, found.query_xy)
    np.testing.assert_allclose(found.saliency, saliency[best], rtol=1e-6)


def test_correspondence_arguments_are_checked():
    d = make_descriptors(np.ones((2, 2, 3)))
    with pytest.raises(ParamError, match="n_pairs"):
        find_correspondences(d, d, n_pairs=0)
    with pytest.raises(ParamError, match="descriptor sizes differ"):
        find_correspondences(d, make_descriptors(np.ones((2, 2, 4))))
    empty = find_correspondences(d, make_descriptors(np.ones((2, 2, 3)), np.zeros((2, 2))))
    assert empty.query_xy.shape == (0, 2) and empty.similarity.shape == (0,)


def test_exposed_through_the_plugin_api():
    from protolens.models import api, descriptors

    for name in ("facet_descriptors", "log_bin", "find_correspondences", "strided_model"):
        assert getattr(api, name) is getattr(descriptors, name)
