"""Batch engine (vit/engine.py): batching, progress, cancellation, out-of-memory halving, window summaries
and the tile-token grid of prototype guidance, checked against naive per-window / per-crop loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from protolens.core.errors import Cancelled, DeviceOutOfMemoryError
from protolens.core.jobs import CancelToken, Progress
from protolens.core.tiling import plan_windows
from protolens.models.vit.capture import capture_attentions, capture_cls_attention
from protolens.models.vit.engine import crop_token_grid, resize_to_crop_grid, run_batches, window_summaries
from protolens.models.vit.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalise


def drive(generator):
    """Run a progress generator to the end: (list of Progress, return value)."""
    progress = []
    while True:
        try:
            progress.append(next(generator))
        except StopIteration as stop:
            return progress, stop.value


def _fractions_increase_to_one(progress: list[Progress]) -> None:
    fractions = [p.fraction for p in progress]
    assert fractions, "no progress reported"
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert all(a <= b for a, b in zip(fractions, fractions[1:], strict=False))
    assert fractions[-1] == pytest.approx(1.0)


# --- run_batches ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 2, 3, 7, 10, 64])
def test_run_batches_keeps_order_for_any_batch_size(batch_size):
    items = list(range(10))
    seen = []

    def fn(chunk):
        seen.append(list(chunk))
        assert len(chunk) <= batch_size
        return [item * item for item in chunk]

    progress, results = drive(run_batches(items, fn, batch_size=batch_size, device="cpu", cancel=CancelToken(),
                                          what="thing"))
    assert results == [item * item for item in items]
    assert [item for chunk in seen for item in chunk] == items  # every item exactly once, in order
    assert len(seen) == -(-len(items) // batch_size)
    _fractions_increase_to_one(progress)
    assert len(progress) == len(seen)


def test_run_batches_of_nothing_returns_nothing():
    progress, results = drive(run_batches([], lambda chunk: list(chunk), batch_size=4, device="cpu",
                                          cancel=CancelToken(), what="thing"))
    assert results == [] and progress == []


def test_run_batches_stops_before_the_next_batch_once_cancelled():
    cancel = CancelToken()
    calls = []

    def fn(chunk):
        calls.append(list(chunk))
        if len(calls) == 2:
            cancel.cancel()  # the user presses cancel while the second batch runs
        return list(chunk)

    generator = run_batches(list(range(10)), fn, batch_size=2, device="cpu", cancel=cancel, what="thing")
    with pytest.raises(Cancelled):
        drive(generator)
    assert calls == [[0, 1], [2, 3]]  # the running batch finishes, no further batch starts


def test_run_batches_cancelled_before_the_start_runs_nothing():
    cancel = CancelToken()
    cancel.cancel()
    calls = []
    with pytest.raises(Cancelled):
        drive(run_batches(list(range(4)), lambda chunk: calls.append(chunk) or list(chunk), batch_size=2,
                          device="cpu", cancel=cancel, what="thing"))
    assert calls == []


@pytest.mark.parametrize("device", ["cpu", "cuda:0"])
@pytest.mark.parametrize("error", [torch.OutOfMemoryError, lambda text: RuntimeError(f"MPS backend {text}")])
def test_run_batches_halves_the_batch_on_out_of_memory(device, error):
    items = list(range(11))
    sizes = []

    def fn(chunk):
        sizes.append(len(chunk))
        if len(chunk) > 2:
            raise error("out of memory")
        return [item + 100 for item in chunk]

    progress, results = drive(run_batches(items, fn, batch_size=8, device=device, cancel=CancelToken(),
                                          what="window"))
    assert results == [item + 100 for item in items]
    assert sizes[:3] == [8, 4, 2]  # 8 -> 4 -> 2, then everything in batches of at most 2
    assert all(size <= 2 for size in sizes[2:])
    halvings = [p.text for p in progress if "halved" in p.text]
    assert len(halvings) == 2
    assert "4" in halvings[0] and "2" in halvings[1]
    assert all(device in text for text in halvings)
    _fractions_increase_to_one(progress)


def test_run_batches_raises_device_oom_at_batch_one():
    sizes = []

    def fn(chunk):
        sizes.append(len(chunk))
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(DeviceOutOfMemoryError, match="batch of one window") as info:
        drive(run_batches(list(range(5)), fn, batch_size=4, device="cpu", cancel=CancelToken(), what="window"))
    assert sizes == [4, 2, 1]
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)


def test_run_batches_lets_other_errors_through_unchanged():
    class Broken(ValueError):
        pass

    calls = []

    def fn(chunk):
        calls.append(len(chunk))
        raise Broken("bad pixels")

    with pytest.raises(Broken, match="bad pixels"):
        drive(run_batches(list(range(5)), fn, batch_size=4, device="cpu", cancel=CancelToken(), what="window"))
    assert calls == [4]  # not retried with smaller batches


# --- window_summaries -----------------------------------------------------------------------------------

PATCH = 8


@pytest.fixture
def model(tiny_vit):
    return tiny_vit(patch_size=PATCH, reg_tokens=4)


@pytest.fixture(scope="module")
def working() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.standard_normal((3, 5 * PATCH, 7 * PATCH)).astype(np.float32)


@pytest.fixture(scope="module")
def windows(working):
    planned = plan_windows(working.shape[1], working.shape[2], 3 * PATCH, 0.34, PATCH)
    assert len(planned) == 6  # 2 rows x 3 columns of overlapping 3x3-patch windows
    return planned


def _summaries(model, working, windows, *, full, batch_size):
    progress, (summaries, tokens) = drive(window_summaries(
        model, working, windows, full=full, batch_size=batch_size, device="cpu", dtype="float32",
        cancel=CancelToken()))
    _fractions_increase_to_one(progress)
    return summaries, tokens


def test_window_summaries_equal_each_window_alone(model, working, windows):
    summaries, tokens = _summaries(model, working, windows, full=False, batch_size=4)
    assert len(summaries) == len(tokens) == len(windows)
    for window, summary, token in zip(windows, summaries, tokens, strict=True):
        crop = torch.from_numpy(working[:, window.top:window.top + window.height,
                                        window.left:window.left + window.width].copy())[None]
        alone = capture_cls_attention(model, crop, blocks=(0, 1))
        assert summary.grid == (3, 3) and summary.num_prefix == 5
        assert summary.received is None
        np.testing.assert_allclose(summary.cls_rows, np.stack([alone[0][0].numpy(), alone[1][0].numpy()]),
                                   atol=1e-5)
        assert token.dtype == np.float16 and token.shape == (5 + 9, 48)
        with torch.no_grad():
            expected = model.forward_features(crop)[0].numpy()
        np.testing.assert_allclose(token.astype(np.float32), expected, atol=1e-2, rtol=1e-2)
    # Different windows see different content.
    assert not np.allclose(summaries[0].cls_rows, summaries[-1].cls_rows)


def test_window_summaries_do_not_depend_on_the_batch_size(model, working, windows):
    one, tokens_one = _summaries(model, working, windows, full=True, batch_size=1)
    three, tokens_three = _summaries(model, working, windows, full=True, batch_size=3)
    for a, b, ta, tb in zip(one, three, tokens_one, tokens_three, strict=True):
        np.testing.assert_allclose(a.cls_rows, b.cls_rows, atol=1e-6)
        np.testing.assert_allclose(a.received, b.received, atol=1e-5)
        for fusion in ("mean", "max", "min"):
            np.testing.assert_allclose(a.fused[fusion].astype(np.float32), b.fused[fusion].astype(np.float32),
                                       atol=1e-3)
        np.testing.assert_allclose(ta.astype(np.float32), tb.astype(np.float32), atol=1e-2)


def test_full_window_summaries_hold_received_and_fused(model, working, windows):
    summaries, _ = _summaries(model, working, windows, full=True, batch_size=4)
    tokens = 5 + 9
    for window, summary in zip(windows, summaries, strict=True):
        assert summary.full
        assert summary.received.shape == (2, 3, tokens)
        assert {name: array.shape for name, array in summary.fused.items()} == {
            f: (2, tokens, tokens) for f in ("mean", "max", "min")}
        crop = torch.from_numpy(working[:, window.top:window.top + window.height,
                                        window.left:window.left + window.width].copy())[None]
        attention = capture_attentions(model, crop)
        np.testing.assert_allclose(summary.received, np.stack([attention[i][0].sum(dim=1).numpy() for i in (0, 1)]),
                                   atol=1e-5)


def test_window_summaries_pass_the_fusions_and_their_dtype_on(model, working, windows):
    _, (summaries, _) = drive(window_summaries(
        model, working, windows, full=True, batch_size=4, device="cpu", dtype="float32", cancel=CancelToken(),
        fusions=("max",), fused_dtype="float32"))
    reference, _ = _summaries(model, working, windows, full=True, batch_size=4)
    for summary, default in zip(summaries, reference, strict=True):
        assert set(summary.fused) == {"max"} and summary.fused["max"].dtype == np.float32
        assert default.fused["max"].dtype == np.float16
        np.testing.assert_allclose(summary.fused["max"], default.fused["max"].astype(np.float32), atol=1e-3)


def test_window_summaries_can_be_cancelled(model, working, windows):
    cancel = CancelToken()
    generator = window_summaries(model, working, windows, full=False, batch_size=2, device="cpu",
                                 dtype="float32", cancel=cancel)
    first = next(generator)
    assert first.fraction == pytest.approx(2 / 6)
    cancel.cancel()
    with pytest.raises(Cancelled):
        next(generator)


# --- crop_token_grid ------------------------------------------------------------------------------------

GRID, CROP, INPUT = (3, 4), 16, 32


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    rng = np.random.default_rng(5)
    return rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)


def _grid(model, photo, batch_size, cancel=None):
    return drive(crop_token_grid(model, photo, grid=GRID, crop=CROP, input_size=INPUT, mean=IMAGENET_MEAN,
                                 std=IMAGENET_STD, batch_size=batch_size, device="cpu", dtype="float32",
                                 cancel=cancel or CancelToken()))


def _naive_grid(model, photo) -> np.ndarray:
    rows, cols = GRID
    small = normalise(resize_to_crop_grid(photo, rows, cols, CROP), IMAGENET_MEAN, IMAGENET_STD)
    assert small.shape == (3, rows * CROP, cols * CROP)
    out = np.zeros((rows, cols, 48), np.float32)
    with torch.no_grad():
        for r in range(rows):
            for c in range(cols):
                crop = torch.from_numpy(small[:, r * CROP:(r + 1) * CROP, c * CROP:(c + 1) * CROP].copy())[None]
                big = F.interpolate(crop, size=(INPUT, INPUT), mode="bicubic", align_corners=False)
                out[r, c] = model.forward_features(big)[0, 0].numpy()
    return out


def test_crop_token_grid_equals_a_per_crop_loop(model, photo):
    progress, tokens = _grid(model, photo, batch_size=5)
    assert tokens.shape == (3, 4, 48) and tokens.dtype == np.float32
    np.testing.assert_allclose(tokens, _naive_grid(model, photo), atol=1e-4)
    assert not np.allclose(tokens[0, 0], tokens[2, 3])  # each cell is its own crop
    _fractions_increase_to_one(progress)
    assert len(progress) == 3  # 5 + 5 + 2 crops


def test_crop_token_grid_does_not_depend_on_the_batch_size(model, photo):
    reference = _grid(model, photo, batch_size=1)[1]
    for batch_size in (5, 12):
        np.testing.assert_allclose(_grid(model, photo, batch_size=batch_size)[1], reference, atol=1e-5)


def test_crop_token_grid_can_be_cancelled(model, photo):
    cancel = CancelToken()
    generator = crop_token_grid(model, photo, grid=GRID, crop=CROP, input_size=INPUT, mean=IMAGENET_MEAN,
                                std=IMAGENET_STD, batch_size=4, device="cpu", dtype="float32", cancel=cancel)
    assert next(generator).fraction == pytest.approx(4 / 12)
    cancel.cancel()
    with pytest.raises(Cancelled):
        next(generator)


def test_crop_token_grid_never_holds_more_than_one_batch_of_upsampled_crops(model, photo):
    """Memory is bounded by the batch: the model never receives more than ``batch_size`` upsampled crops."""
    received: list[tuple[int, ...]] = []
    handle = model.patch_embed.register_forward_pre_hook(lambda _m, args: received.append(tuple(args[0].shape)))
    try:
        _grid(model, photo, batch_size=4)
    finally:
        handle.remove()
    assert max(shape[0] for shape in received) <= 4
    assert sum(shape[0] for shape in received) == 12  # every crop encoded exactly once
    assert all(shape[1:] == (3, INPUT, INPUT) for shape in received)


def test_crop_tokens_keep_no_batch_output_alive(model, photo, monkeypatch):
    """The CLS tokens kept per batch must own their memory: a numpy view of the model output would keep each
    batch's whole (batch, tokens, dim) tensor alive (a leak of ~5 MB per batch of 8 at 224 px)."""
    import protolens.models.vit.engine as engine

    kept = []
    real = engine.run_batches

    def recording(items, fn, **kwargs):
        results = yield from real(items, fn, **kwargs)
        kept.extend(results)
        return results

    monkeypatch.setattr(engine, "run_batches", recording)
    _grid(model, photo, batch_size=2)
    assert len(kept) == 12

    def owner(array):
        while isinstance(array, np.ndarray) and array.base is not None:
            array = array.base
        return array

    assert not any(isinstance(owner(row), torch.Tensor) for row in kept)
