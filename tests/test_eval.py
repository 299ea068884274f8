"""LAReQA metrics against sklearn and hand-worked examples; evaluate() on real data slices; the embedding cache."""
import numpy as np, pytest
from sklearn.metrics import average_precision_score
from hybrid_mlir.core import ConfigError
from hybrid_mlir.data import load_lareqa, subsample
from hybrid_mlir.eval import ranking_metrics, pool_metrics, evaluate, encode_cached, EmbeddingCache


def _sorted(S, R):
    o = np.argsort(-S, 1, kind="stable")
    return np.take_along_axis(S, o, 1), np.take_along_axis(R, o, 1)


@pytest.mark.parametrize("seed", range(5))
def test_ap_equals_sklearn_on_random_rankings(seed):
    rng = np.random.default_rng(seed)
    n, m = 40, int(rng.integers(5, 200))
    S = rng.normal(size=(n, m)).astype(np.float32)
    if seed % 2: S = np.round(S, 1)  # many ties
    R = rng.random((n, m)) < rng.uniform(.01, .5); R[np.arange(n), rng.integers(0, m, n)] = True
    got = ranking_metrics(*_sorted(S, R))["ap"]
    want = [average_precision_score(R[i], S[i]) for i in range(n)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_hand_worked():
    # relevant at ranks 2 and 5 of 6: AP = (1/2 + 2/5) / 2 = 0.45
    S = np.array([[6, 5, 4, 3, 2, 1.]]); R = np.array([[0, 1, 0, 0, 1, 0]], bool)
    m = ranking_metrics(S, R, ks=(1, 5))
    assert m["ap"][0] == pytest.approx(0.45)
    assert m["recall@1"][0] == 0 and m["recall@5"][0] == 1
    assert m["ap@1"][0] == 0 and m["ap@5"][0] == pytest.approx(0.45)
    assert m["rank_distance"][0] == 3
    # k cut: AP@k divides by min(R, k)
    m = ranking_metrics(S, R, ks=(2,)); assert m["ap@2"][0] == pytest.approx((1 / 2) / 2)
    # single relevant: rank distance 0, AP = 1/rank
    m = ranking_metrics(S, np.array([[0, 0, 1, 0, 0, 0]], bool))
    assert m["ap"][0] == pytest.approx(1 / 3) and m["rank_distance"][0] == 0
    with pytest.raises(ValueError): ranking_metrics(S, np.zeros((1, 6), bool))


class Oracle:
    "Embeds each text as the one-hot of its question id (with a little noise): the perfect retriever."
    def __init__(self, ds, noise=0.0, seed=0):
        ids = sorted(ds.questions.xling_id.unique()); self.ix = {x: i for i, x in enumerate(ids)}
        self.q = dict(zip(ds.questions.text, ds.questions.xling_id)); self.c = dict(zip(ds.candidates.text, ds.candidates.xling_ids))
        self.noise, self.rng = noise, np.random.default_rng(seed)
    def encode(self, texts, kind="query", **kw):
        v = np.full((len(texts), len(self.ix) + 1), 1e-3, np.float32)
        for i, t in enumerate(texts):
            for x in ([self.q[t]] if kind == "query" else self.c[t]): v[i, self.ix[x]] = 1
        for i, t in enumerate(texts):  # deterministic per text, so repeated calls agree
            if self.noise: v[i] += self.noise * np.random.default_rng(abs(hash((t, kind))) % 2**32).normal(size=v.shape[1]).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_evaluate_oracle_mlqa_slice():
    ds = subsample(load_lareqa("mlqa-r"), 40, seed=0)
    res = evaluate(Oracle(ds), ds, cache=False)
    s = res.summary.set_index("setting")
    assert s.loc["mono", "map"] == pytest.approx(1) and s.loc["cross", "map"] == pytest.approx(1)
    assert s.loc["multi", "map"] == pytest.approx(1) and s.loc["multi", "recall"] == pytest.approx(1)  # <= 4 relevant
    # MLQA-R: questions lacking a language are skipped (and counted) in cross, never in mono
    pl = res.per_language
    assert pl[pl.setting == "mono"].n_skipped.sum() == 0 and pl[pl.setting == "cross"].n_skipped.sum() > 0
    assert len(pl[pl.setting == "cross"]) == 42
    # rank distance of the oracle: number of relevant - 1, averaged
    nrel = {x: len(v) for x, v in ds.relevant().items()}
    q = ds.questions
    want = q.groupby("lang").xling_id.apply(lambda xs: np.mean([nrel[x] - 1 for x in xs])).mean()
    assert s.loc["multi", "rank_distance"] == pytest.approx(want)


def test_evaluate_noisy_matches_per_query_sklearn():
    ds = subsample(load_lareqa("xquad-r", langs=["en", "de", "zh"]), 15, seed=2)
    enc = Oracle(ds, noise=0.3)
    res = evaluate(enc, ds, settings=("multi", "cross"), cache=False)
    qe = enc.encode(ds.questions.text.tolist(), "query"); ce = enc.encode(ds.candidates.text.tolist(), "passage")
    S = qe @ ce.T
    R = np.array([[x in xs for xs in ds.candidates.xling_ids] for x in ds.questions.xling_id])
    pq = res.per_query[res.per_query.setting == "multi"].set_index("qid")
    want = {q: average_precision_score(R[i], S[i]) for i, q in enumerate(ds.questions.qid)}
    np.testing.assert_allclose(pq.ap.to_numpy(), [want[q] for q in pq.index], rtol=1e-5)
    assert 0.2 < pq.ap.mean() < 0.99  # noisy: neither trivial nor perfect
    # cross en->zh by brute force
    qi = np.flatnonzero(ds.questions.lang == "en"); ci = np.flatnonzero(ds.candidates.lang == "zh")
    aps = [average_precision_score(R[i, ci], S[i, ci]) for i in qi]
    row = res.per_language.query("setting == 'cross' and q_lang == 'en' and c_lang == 'zh'")
    assert row["map"].iloc[0] == pytest.approx(np.mean(aps), rel=1e-5)


def test_bad_settings():
    ds = subsample(load_lareqa("xquad-r", langs=["en"]), 5)
    with pytest.raises(ConfigError, match="unknown setting"): evaluate(Oracle(ds), ds, settings=("mono", "bogus"))


def test_cache_rebuilds_corrupt_shard(tmp_path):
    calls = []
    class Enc:
        fingerprint = "fp1"
        def encode(self, texts, kind="query", **kw):
            calls.append(len(texts)); return np.eye(8, dtype=np.float32)[[len(t) % 8 for t in texts]]
    a = encode_cached(Enc(), ["a", "bb", "ccc"], root=tmp_path)
    b = encode_cached(Enc(), ["ccc", "a"], root=tmp_path)
    assert calls == [3] and np.array_equal(a[[2, 0]], b)
    shard = next((tmp_path / "fp1").glob("query-*.npz"))
    shard.write_bytes(shard.read_bytes()[:-10])  # truncate
    c = encode_cached(Enc(), ["a", "bb", "ccc"], root=tmp_path)
    assert calls == [3, 3] and np.array_equal(a, c)
    assert not shard.exists()
    # passages are cached separately from queries
    encode_cached(Enc(), ["a"], kind="passage", root=tmp_path); assert calls == [3, 3, 1]


def test_real_model_on_real_slice():
    "The real stage: the offline multilingual-e5-small on a slice of XQuAD-R (and the cache makes a re-run free)."
    from hybrid_mlir.model import load_encoder
    ds = subsample(load_lareqa("xquad-r", langs=["en", "de", "zh"]), 8, seed=0)
    enc = load_encoder("offline:multilingual-e5-small")
    res = evaluate(enc, ds, cache=False)
    s = res.summary.set_index("setting")
    # a real multilingual retriever on a tiny pool: far above chance (1 relevant among ~30 per language)
    assert s.loc["mono", "map"] > 0.5 and s.loc["cross", "map"] > 0.3 and s.loc["multi", "map"] > 0.2
    assert s.loc["multi", "rank_distance"] >= 2  # three relevant sentences: ranks differ by at least 2


@pytest.mark.parametrize("seed", range(6))
def test_pool_metrics_equal_the_sorted_reference(seed):
    "Rank counting on unsorted scores = `ranking_metrics` on the stable sort (ties by position), every metric, ties included."
    rng = np.random.default_rng(seed)
    n, m, k = 50, int(rng.integers(3, 400)), int(rng.integers(1, 12))
    S = rng.normal(size=(n, m)).astype(np.float32)
    if seed % 2: S = np.round(S, 1)  # many ties, relevant candidates tied with others and with each other
    P = np.full((n, k), -1)
    for i in range(n):
        c = rng.choice(m, min(m, int(rng.integers(1, k + 1))), replace=False); P[i, :len(c)] = c
    R = np.zeros((n, m), bool)
    for i in range(n): R[i, P[i][P[i] >= 0]] = True
    o = np.argsort(-S, 1, kind="stable")
    want = ranking_metrics(np.take_along_axis(S, o, 1), np.take_along_axis(R, o, 1), ks=(1, 5, 10, 20))
    got = pool_metrics(S, P, ks=(1, 5, 10, 20))
    for key in want: np.testing.assert_allclose(got[key], want[key], rtol=1e-12, atol=1e-12, err_msg=key)
    np.testing.assert_allclose(got["ap"], [average_precision_score(R[i], S[i]) for i in range(n)], rtol=1e-9, atol=1e-12)


def test_pool_metrics_refuses_bad_input():
    with pytest.raises(ValueError, match="finite"): pool_metrics(np.array([[0.1, np.nan]]), [[0]])
    with pytest.raises(ValueError, match="relevant"): pool_metrics(np.array([[0.1, 0.2]]), [[-1]])


def test_evaluate_refuses_nan_embeddings():
    ds = subsample(load_lareqa("xquad-r", langs=["en", "de"]), 5, seed=0)
    class Bad:
        def encode(self, texts, kind="query", **kw): return np.full((len(texts), 4), np.nan, np.float32)
    with pytest.raises(ValueError, match="NaN"): evaluate(Bad(), ds, cache=False)
