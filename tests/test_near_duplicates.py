"""The LSH near-duplicate index against an exact scan, on synthetic unit vectors (pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.apis.near_duplicates import Match, NearDuplicateIndex, brute_force_nearest

DIM = 384
POOL = 20_000
SMALL_POOL = 2_000
THRESHOLD = 0.9


def unit_vectors(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def at_similarity(rng: np.random.Generator, x: np.ndarray, similarity: np.ndarray) -> np.ndarray:
    """Unit vectors whose cosine with the rows of ``x`` is exactly ``similarity`` (up to float32 rounding)."""
    x = x.astype(np.float64)
    noise = rng.standard_normal(x.shape)
    noise -= (noise * x).sum(axis=1, keepdims=True) * x
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    s = np.asarray(similarity, dtype=np.float64)[:, None]
    return (s * x + np.sqrt(1 - s * s) * noise).astype(np.float32)


@pytest.fixture(scope="module")
def pool() -> np.ndarray:
    return unit_vectors(np.random.default_rng(1), POOL)


@pytest.fixture(scope="module")
def index(pool) -> NearDuplicateIndex:
    built = NearDuplicateIndex(DIM, threshold=THRESHOLD)
    built.add_many([f"api_{i}" for i in range(POOL)], pool)
    return built


@pytest.fixture(scope="module")
def small_index(pool) -> NearDuplicateIndex:
    built = NearDuplicateIndex(DIM, threshold=THRESHOLD)
    built.add_many([f"api_{i}" for i in range(SMALL_POOL)], pool[:SMALL_POOL])
    return built


def exact_best(pool: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and cosine of each query's most similar pool row: one matrix product for all, checked against
    :func:`brute_force_nearest` on a sample (one scan of 20,000 rows per query costs ~15 ms here)."""
    sims = queries @ pool.T
    rows = sims.argmax(axis=1)
    best = sims[np.arange(len(queries)), rows]
    for i in range(0, len(queries), 10):
        expected = (int(rows[i]), float(best[i])) if best[i] >= THRESHOLD else None
        assert brute_force_nearest(pool, queries[i], THRESHOLD) == (
            None if expected is None else (expected[0], pytest.approx(expected[1], abs=1e-5)))
    return rows, best


def test_recall_against_brute_force(pool, index):
    rng = np.random.default_rng(2)
    sources = rng.choice(POOL, size=500, replace=False)
    similarities = rng.uniform(0.9005, 0.99, size=len(sources))
    queries = at_similarity(rng, pool[sources], similarities)
    rows, best = exact_best(pool, queries)
    np.testing.assert_array_equal(rows, sources)
    assert (best >= THRESHOLD).all()
    found = 0
    for source, similarity, query in zip(sources, best, queries, strict=True):
        match = index.nearest(query)
        if match is not None:
            assert match.key == f"api_{source}"
            assert match.similarity == pytest.approx(float(similarity), abs=1e-5)
            found += 1
    assert found / len(sources) >= 0.97


def test_recall_at_the_threshold_itself(pool, index):
    """The hardest case: every query at cosine 0.9 (+0.0005 so float32 rounding keeps it above)."""
    rng = np.random.default_rng(3)
    sources = rng.choice(POOL, size=400, replace=False)
    queries = at_similarity(rng, pool[sources], np.full(len(sources), 0.9005))
    found = sum(1 for s, q in zip(sources, queries, strict=True) if (m := index.nearest(q)) and m.key == f"api_{s}")
    assert found / len(sources) >= 0.97


def test_no_match_below_threshold(pool, index):
    rng = np.random.default_rng(4)
    sources = rng.choice(POOL, size=300, replace=False)
    queries = at_similarity(rng, pool[sources], rng.uniform(0.7, 0.895, size=len(sources)))
    queries = np.concatenate([queries, unit_vectors(rng, 100)])
    _, best = exact_best(pool, queries)
    assert (best < THRESHOLD).all()
    for query in queries:
        assert index.nearest(query) is None


def test_match_is_exact_and_respects_threshold(pool):
    rng = np.random.default_rng(5)
    base = pool[:500]
    (query,) = at_similarity(rng, base[7:8], np.array([0.95]))
    strict = NearDuplicateIndex(DIM, threshold=0.96)
    loose = NearDuplicateIndex(DIM, threshold=0.94)
    for built in (strict, loose):
        built.add_many([f"api_{i}" for i in range(len(base))], base)
    assert strict.nearest(query) is None
    match = loose.nearest(query)
    assert isinstance(match, Match) and match.key == "api_7"
    assert match.similarity == pytest.approx(float(base[7] @ query), abs=1e-5)
    # scale does not matter: vectors are normalised on the way in
    assert loose.nearest(3.5 * base[42]) == Match("api_42", pytest.approx(1.0, abs=1e-5))


def test_candidates_stay_flat_as_the_pool_grows(pool, index, small_index):
    """Queries near items present in both indexes: 10x the items must not mean ~10x the comparisons."""
    rng = np.random.default_rng(6)
    sources = rng.choice(SMALL_POOL, size=300, replace=False)
    queries = at_similarity(rng, pool[sources], rng.uniform(0.9005, 0.99, size=len(sources)))

    def mean_candidates(built: NearDuplicateIndex) -> float:
        before = built.candidates_examined
        for query in queries:
            built.nearest(query)
        return (built.candidates_examined - before) / len(queries)

    small, large = mean_candidates(small_index), mean_candidates(index)
    assert small >= 0.9  # the true match is (nearly always) a candidate
    assert large <= 2 * small
    assert large < 0.001 * POOL  # a few comparisons, not a scan (measured 1.08 at 2,000 items, 1.74 at 20,000)


def test_add_many_equals_repeated_add(pool):
    rng = np.random.default_rng(7)
    base = np.concatenate([pool[:300], pool[:5]])  # duplicate vectors under other keys
    keys = [f"k{i}" for i in range(len(base))]
    bulk = NearDuplicateIndex(DIM, threshold=0.8, seed=3)
    bulk.add_many(keys, base)
    single = NearDuplicateIndex(DIM, threshold=0.8, seed=3)
    for key, vector in zip(keys, base, strict=True):
        single.add(key, vector)
    assert len(bulk) == len(single) == len(base)
    queries = np.concatenate([at_similarity(rng, base[:100], rng.uniform(0.8, 1.0, 100)), unit_vectors(rng, 20)])
    for query in queries:
        assert bulk.nearest(query) == single.nearest(query)
    assert bulk.candidates_examined == single.candidates_examined > 0


def test_growing_one_at_a_time_finds_earlier_items():
    rng = np.random.default_rng(8)
    base = unit_vectors(rng, 100)
    built = NearDuplicateIndex(DIM)
    for i, vector in enumerate(base):
        assert built.nearest(vector) is None  # not yet there, and nothing else is near
        built.add(f"k{i}", vector)
        assert built.nearest(vector) == Match(f"k{i}", pytest.approx(1.0, abs=1e-5))
    assert len(built) == 100


def test_empty_index():
    built = NearDuplicateIndex(DIM)
    assert len(built) == 0
    assert built.nearest(unit_vectors(np.random.default_rng(9), 1)[0]) is None
    assert built.candidates_examined == 0
    built.add_many([], np.zeros((0, DIM), dtype=np.float32))
    assert len(built) == 0
    assert brute_force_nearest(np.zeros((0, DIM), dtype=np.float32), np.ones(DIM), THRESHOLD) is None


def test_dimension_mismatch_and_bad_vectors():
    built = NearDuplicateIndex(DIM)
    good = unit_vectors(np.random.default_rng(10), 2)
    built.add_many(["a", "b"], good)
    with pytest.raises(ValueError):
        built.nearest(np.ones(DIM - 1))
    with pytest.raises(ValueError):
        built.add("c", np.ones(DIM + 1))
    with pytest.raises(ValueError):
        built.add_many(["c", "d"], np.ones((2, 10)))
    with pytest.raises(ValueError):
        built.add_many(["c"], good)  # one key, two vectors
    with pytest.raises(ValueError):
        built.add("zero", np.zeros(DIM))
    with pytest.raises(ValueError):
        built.nearest(np.full(DIM, np.nan))
    with pytest.raises(ValueError):
        brute_force_nearest(good, np.ones(DIM - 1), THRESHOLD)
    assert len(built) == 2  # failed adds changed nothing


@pytest.mark.parametrize("kwargs", [{"dim": 0}, {"threshold": 1.5}, {"tables": 0}, {"bits": 0}, {"bits": 63},
                                    {"probes": 0}, {"probes": 1000}])
def test_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        NearDuplicateIndex(**{"dim": DIM, **kwargs})


def test_single_probe_is_plain_simhash(pool):
    """probes=1 reads only each table's own bucket: classic LSH. 40 tables of 16 bits: recall 1 - (1 - p^16)^40,
    with p = 1 - arccos(0.92) / pi = 0.872, is 0.991 at cosine 0.92."""
    rng = np.random.default_rng(11)
    built = NearDuplicateIndex(DIM, tables=40, bits=16, probes=1)
    built.add_many([f"api_{i}" for i in range(1000)], pool[:1000])
    sources = rng.choice(1000, size=150, replace=False)
    queries = at_similarity(rng, pool[sources], rng.uniform(0.92, 0.99, size=len(sources)))
    found = sum(1 for s, q in zip(sources, queries, strict=True) if (m := built.nearest(q)) and m.key == f"api_{s}")
    assert found / len(sources) >= 0.95
