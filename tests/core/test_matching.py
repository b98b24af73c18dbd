"""Best buddies against a brute-force reference, the soft vote (incl. the reference's miscount), labels."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from protolens.core import matching
from protolens.core.errors import ParamError
from protolens.core.matching import best_buddies, l2_normalise, label_consistent, soft_vote

# ---------------------------------------------------------------- brute-force references (plain loops)


def _cosine_matrix(a: np.ndarray, b: np.ndarray) -> list[list[float]]:
    """Full cosine matrix in float64 by loops; a zero row has cosine 0 to everything."""
    out = []
    for row in a.astype(np.float64):
        norm_row = math.sqrt(sum(v * v for v in row))
        line = []
        for other in b.astype(np.float64):
            norm_other = math.sqrt(sum(v * v for v in other))
            dot = sum(x * y for x, y in zip(row, other, strict=True))
            line.append(0.0 if norm_row == 0 or norm_other == 0 else dot / (norm_row * norm_other))
        out.append(line)
    return out


def _exact_cosine_keys(a: np.ndarray, b: np.ndarray) -> list[list[Fraction]]:
    """For integer descriptors: keys ordered exactly like the cosines (sign(dot) dot^2 / (|a|^2 |b|^2))."""
    out = []
    for row in a.astype(np.int64).tolist():
        na = sum(v * v for v in row)
        line = []
        for other in b.astype(np.int64).tolist():
            nb = sum(v * v for v in other)
            dot = sum(x * y for x, y in zip(row, other, strict=True))
            sign = (dot > 0) - (dot < 0)
            line.append(Fraction(0) if na == 0 or nb == 0 else Fraction(sign * dot * dot, na * nb))
        out.append(line)
    return out


def _first_argmax(values) -> int:
    best = 0
    for index, value in enumerate(values):
        if value > values[best]:
            best = index
    return best


def _reference_pairs(sim) -> list[tuple[int, int]]:
    n_a, n_b = len(sim), len(sim[0])
    nn_ab = [_first_argmax(sim[i]) for i in range(n_a)]
    nn_ba = [_first_argmax([sim[i][j] for i in range(n_a)]) for j in range(n_b)]
    return [(i, nn_ab[i]) for i in range(n_a) if nn_ba[nn_ab[i]] == i]


def _pairs(result) -> list[tuple[int, int]]:
    return list(zip(result.a.tolist(), result.b.tolist(), strict=True))


def _chunk_bytes(n_b: int) -> list[int]:
    """Block sizes: one row per chunk, 3 rows, 7 rows (+ slack), everything in one block."""
    return [1, 4 * n_b * 3, 4 * n_b * 7 + 5, matching.DEFAULT_MAX_BYTES]


# ---------------------------------------------------------------- best buddies


@pytest.mark.parametrize("n_a, n_b, d, seed", [(40, 70, 16, 0), (70, 40, 8, 1), (1, 25, 5, 2), (33, 1, 5, 3)])
def test_best_buddies_equal_brute_force_on_random_descriptors(n_a, n_b, d, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n_a, d))
    b = rng.standard_normal((n_b, d))
    if n_a > 2 and n_b > 2:  # exact ties: duplicated rows on both sides, a scaled copy (same cosine)
        b[n_b // 2] = b[1]
        b[n_b - 1] = 4.0 * b[2]
        a[n_a - 1] = a[0]
        a[n_a // 2] = b[1] * 3.0
    expected = _reference_pairs(_cosine_matrix(a, b))
    assert expected  # the case has matches
    for max_bytes in _chunk_bytes(n_b):
        result = best_buddies(a, b, max_bytes=max_bytes)
        assert _pairs(result) == expected, max_bytes
        assert (
            result.a.dtype == np.int64
            and result.b.dtype == np.int64
            and result.similarity.dtype == np.float32
        )
        ref = _cosine_matrix(a[result.a], b[result.b])
        np.testing.assert_allclose(result.similarity, np.diag(np.asarray(ref)), atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_buddies_integer_descriptors_with_exact_ties(seed, monkeypatch):
    """{-1, 0, 1} descriptors, 3 non-zeros (all norms equal): many exact cosine ties, lowest index wins."""
    rng = np.random.default_rng(seed)

    def sample(n: int) -> np.ndarray:
        out = np.zeros((n, 6), dtype=np.int64)
        for row in out:
            row[rng.choice(6, 3, replace=False)] = rng.choice([-1, 1], 3)
        return out

    a, b = sample(37), sample(53)
    a[5] = 0  # a zero row: cosine 0 to everything
    b = np.concatenate([b, 2 * b[:4]])  # power-of-two scaled copies: exact ties at a higher index
    keys = _exact_cosine_keys(a, b)
    expected = _reference_pairs(keys)
    assert len(expected) >= 3
    # ties really occur: some row has its maximum at two or more places
    assert any(sum(k == max(line) for k in line) > 1 for line in keys)
    monkeypatch.setattr(matching, "_STRIP_BYTES", 4 * b.shape[0] * 2)  # strips of 2 rows inside each block
    for max_bytes in _chunk_bytes(b.shape[0]):
        for dtype in (np.int64, np.float32, np.float64):
            result = best_buddies(a.astype(dtype), b.astype(dtype), max_bytes=max_bytes)
            assert _pairs(result) == expected, (max_bytes, dtype)


def test_best_buddies_strips_and_chunks_agree(monkeypatch):
    rng = np.random.default_rng(7)
    a = rng.integers(-2, 3, (60, 4)).astype(np.float32)
    b = rng.integers(-2, 3, (45, 4)).astype(np.float32)
    reference = _pairs(best_buddies(a, b))
    for strip in (1, 4 * 45, 4 * 45 * 5 + 3):
        monkeypatch.setattr(matching, "_STRIP_BYTES", strip)
        for max_bytes in _chunk_bytes(45):
            assert _pairs(best_buddies(a, b, max_bytes=max_bytes)) == reference


def test_best_buddies_empty_and_errors():
    empty = best_buddies(np.zeros((0, 4)), np.ones((3, 4)))
    assert len(empty) == 0 and empty.a.dtype == np.int64 and empty.similarity.dtype == np.float32
    assert len(best_buddies(np.ones((3, 4)), np.zeros((0, 4)))) == 0
    with pytest.raises(ParamError, match="dimensions differ"):
        best_buddies(np.ones((3, 4)), np.ones((3, 5)))
    with pytest.raises(ParamError, match="2-D"):
        best_buddies(np.ones(4), np.ones((3, 4)))
    with pytest.raises(ParamError, match="NaN or infinity"):
        best_buddies(np.ones((3, 4)), np.array([[1.0, np.nan, 0.0, 0.0]]))
    with pytest.raises(ParamError, match="real numbers"):
        best_buddies(np.array([["a"]]), np.array([["b"]]))


def test_best_buddies_identical_sets_match_everything():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((20, 8)).astype(np.float32)
    result = best_buddies(a, a[::-1] * 5.0)
    assert result.a.tolist() == list(range(20))
    assert result.b.tolist() == list(range(19, -1, -1))
    np.testing.assert_allclose(result.similarity, 1.0, atol=1e-6)


def test_l2_normalise():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-30, 0.0]])
    out = l2_normalise(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], [0.6, 0.8], rtol=1e-6)
    assert (out[1] == 0).all()
    np.testing.assert_allclose(l2_normalise(np.array([0.0, 2.0])), [0.0, 1.0])


# ---------------------------------------------------------------- soft vote


def _reference_buggy_counts(matched_pool: list[int], n_query: int, sizes: list[int]) -> list[int]:
    """The reference's arithmetic: prototype p's range [offset_p, offset_p + size_p) shifted by n_query."""
    counts, offset = [], n_query
    for size in sizes:
        counts.append(sum(offset <= m < offset + size for m in matched_pool))
        offset += size
    return counts


def test_soft_vote_counts_per_prototype_where_the_offset_arithmetic_miscounts():
    sizes, n_query = [3, 3, 3], 3  # pooled prototype segments 0..8, owners 0,0,0,1,1,1,2,2,2
    owner = np.repeat(np.arange(3), sizes)
    matched_pool = [0, 1, 2, 6]  # three matches on prototype 0, one on prototype 2
    classes = ["crow", "robin", "robin"]
    buggy = _reference_buggy_counts(matched_pool, n_query, sizes)
    assert buggy == [0, 1, 0]  # the offset arithmetic loses three matches and credits the wrong prototype
    vote = soft_vote(owner[matched_pool], classes)
    assert vote.per_prototype.tolist() == [3, 0, 1]
    assert vote.classes == ["crow", "robin"]
    assert vote.counts.tolist() == [3, 1] and vote.total == 4
    np.testing.assert_allclose(vote.scores, [0.75, 0.25])
    assert vote.prediction == "crow"  # the buggy counts would have predicted "robin"
    assert vote.message() == "crow (3/4 matches)"


def test_soft_vote_end_to_end_with_best_buddies():
    rng = np.random.default_rng(11)
    prototypes = [rng.standard_normal((n, 12)) for n in (4, 2, 5)]
    pool = np.concatenate(prototypes)
    owner = np.concatenate([np.full(len(p), i) for i, p in enumerate(prototypes)])
    query = np.stack([prototypes[2][0], prototypes[2][3], prototypes[0][1]]) + 0.01 * rng.standard_normal(
        (3, 12)
    )
    pairs = best_buddies(query, pool)
    assert pairs.b.tolist() == [6 + 0, 6 + 3, 1]
    vote = soft_vote(owner[pairs.b], ["wren", "lark", "lark"])
    assert vote.per_prototype.tolist() == [1, 0, 2]
    assert vote.classes == ["wren", "lark"] and vote.counts.tolist() == [1, 2]
    assert vote.prediction == "lark"


def test_soft_vote_zero_matches_and_ties():
    with np.errstate(all="raise"):
        vote = soft_vote(np.zeros(0, dtype=np.int64), ["a", "b", "a"])
    assert vote.total == 0 and vote.prediction is None
    assert vote.per_prototype.tolist() == [0, 0, 0] and vote.counts.tolist() == [0, 0]
    assert vote.scores.tolist() == [0.0, 0.0]
    assert "no prediction" in vote.message()
    assert vote.to_json()["prediction"] is None
    tie = soft_vote(np.array([1, 0]), ["b", "a"])
    assert tie.prediction == "b"  # equal counts: the class retrieved first
    data = tie.to_json()
    assert data["per_prototype"] == [1, 1] and data["scores"] == [0.5, 0.5] and data["total"] == 2
    with pytest.raises(ParamError, match="out of range"):
        soft_vote(np.array([3]), ["a", "b"])
    with pytest.raises(ParamError, match="integers"):
        soft_vote(np.array([0.5]), ["a"])


def test_label_consistent():
    labels_a = ["head", "wing", "", "tail"]
    labels_b = ["wing", "head", "", "tail", "Head"]
    keep = label_consistent(labels_a, labels_b, np.array([0, 1, 2, 3, 0, 0]), np.array([1, 0, 2, 3, 4, 0]))
    assert keep.dtype == bool
    assert keep.tolist() == [True, True, False, True, False, False]
    assert label_consistent(labels_a, labels_b, np.zeros(0, int), np.zeros(0, int)).shape == (0,)
    with pytest.raises(ParamError):
        label_consistent(labels_a, labels_b, np.array([0]), np.array([0, 1]))
    with pytest.raises(ParamError):
        label_consistent(labels_a, labels_b, np.array([9]), np.array([0]))
