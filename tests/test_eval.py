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


@pytest.mark.slow  # loads the real 470 MB offline model
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


# ---------------------------------------------------------------- the bilingual-pool setting (ALIGNMENT.md)
import hashlib
import pandas as pd
from hybrid_mlir.data import LAReQA
from hybrid_mlir.eval import english_inclination, SETTINGS, ALL_SETTINGS


class ScoreEncoder:
    "Passages one-hot in `cands` order; each query the (normalised) vector of its chosen scores (0 elsewhere)."
    def __init__(self, cands, scores, precision=None):
        self.c, self.s = list(cands), scores
        if precision: self.precision = precision
    def encode(self, texts, kind="query", **kw):
        if kind == "passage": return np.eye(len(self.c), dtype=np.float32)[[self.c.index(t) for t in texts]]
        v = np.array([[self.s[t].get(c, 0) for c in self.c] for t in texts], np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def _tiny_bilingual():
    """German, English and Chinese: question 0 answered in all three, question 1 in de and en only, question 2 nowhere.
    Candidate order (= pool positions): d0 d1 g0 | e0 e1 f0..f9 | z0; g0 and f* answer nothing."""
    f = [f"f{i}" for i in range(10)]
    cands = ["d0", "d1", "g0", "e0", "e1", *f, "z0"]
    rel = {"d0": [0], "d1": [1], "e0": [0], "e1": [1], "z0": [0]}
    C = pd.DataFrame(dict(cid=range(len(cands)), lang=["de"] * 3 + ["en"] * 12 + ["zh"], text=cands,
                          xling_ids=[rel.get(c, []) for c in cands]))
    qs = [("q0de", 0, "de"), ("q1de", 1, "de"), ("q0en", 0, "en"), ("q1en", 1, "en"), ("q0zh", 0, "zh"), ("q1zh", 1, "zh"), ("q2zh", 2, "zh")]
    Q = pd.DataFrame(dict(qid=[q[0] for q in qs], xling_id=[q[1] for q in qs], lang=[q[2] for q in qs], text=[q[0] for q in qs]))
    sc = {
        # pool en+de: f0..f9 (.90 .. .81) ranks 1-10, d0 11, e0 12 -> AP (1/11 + 2/12)/2, R@1 0, Max@R 12, not complete, inclined
        "q0de": {**{x: .9 - .01 * i for i, x in enumerate(f)}, "d0": .8, "e0": .1, "d1": .03, "g0": .02, "e1": .01},
        # e1 1, d1 .5 tied with f0 .5: d1 (position 1) before f0 (position 5) -> AP (1 + 2/3)/2 (tie-aware), R@1 1/2, Max@R 2, not inclined
        "q1de": {"e1": .9, "d1": .5, "f0": .5, **{x: .4 - .01 * i for i, x in enumerate(f) if i}, "d0": .05, "e0": .04, "g0": .03},
        # pool en+zh: z0 .7 tied with f0 .7, f0 at position 2 before z0 at 12 -> f0 1, z0 2, e0 3: AP (1/2 + 2/3)/2, R@1 0, Max@R 3, inclined
        "q0zh": {"z0": .7, "f0": .7, "e0": .6, **{x: .3 - .01 * i for i, x in enumerate(f) if i}},
        # question 1 has no Chinese answer: relevant = e1 alone; z0 1, e1 2 -> AP 1/2, R@1 0, Max@R 2, inclination undefined
        "q1zh": {"z0": .9, "e1": .8, **{x: .5 - .01 * i for i, x in enumerate(f)}, "e0": .4},
        "q2zh": {"z0": 1.},  # no relevant candidate anywhere: skipped
        # English queries: against en+de and en+zh
        "q0en": {"e0": .9, "d0": .8, "z0": .85},  # e0 1, X answer 2 in both pools: AP 1, R@1 1/2, Max@R 2
        "q1en": {"f0": .95, "e1": .9, "d1": .7},  # en+de: f0 e1 d1: AP (1/2 + 2/3)/2, Max@R 3; en+zh (e1 only): AP 1/2, Max@R 2
    }
    return LAReQA("tiny-bilingual", Q, C, ("de", "en", "zh")), ScoreEncoder(cands, sc)


def test_bilingual_hand_built():
    ds, enc = _tiny_bilingual()
    res = evaluate(enc, ds, settings=("bilingual",), cache=False)
    pq = res.per_query.set_index(["setting", "qid", "c_lang"])
    cols = ["ap", "recall", "max_rank", "complete@10"]
    want = {("bilingual", "q0de", "en+de"): [(1 / 11 + 2 / 12) / 2, 0, 12, 0, 1],
            ("bilingual", "q1de", "en+de"): [5 / 6, .5, 2, 1, 0],
            ("bilingual", "q0zh", "en+zh"): [7 / 12, 0, 3, 1, 1],
            ("bilingual", "q1zh", "en+zh"): [1 / 2, 0, 2, 1, np.nan],
            ("bilingual-en", "q0en", "en+de"): [1, .5, 2, 1, np.nan], ("bilingual-en", "q0en", "en+zh"): [1, .5, 2, 1, np.nan],
            ("bilingual-en", "q1en", "en+de"): [7 / 12, 0, 3, 1, np.nan], ("bilingual-en", "q1en", "en+zh"): [1 / 2, 0, 2, 1, np.nan]}
    assert sorted(pq.index) == sorted(want)  # q2zh: no relevant candidate, skipped (not a row)
    for key, w in want.items():
        np.testing.assert_allclose(pq.loc[key, cols + ["english_inclination"]].to_numpy(float), w, rtol=1e-6, err_msg=str(key))
    pl = res.per_language.set_index(["setting", "q_lang", "c_lang"])
    assert list(pl.index) == [("bilingual", "de", "en+de"), ("bilingual", "zh", "en+zh"),
                              ("bilingual-en", "en", "en+de"), ("bilingual-en", "en", "en+zh")]
    assert pl.n_queries.tolist() == [2, 2, 2, 2] and pl.n_skipped.tolist() == [0, 1, 0, 0]
    m = ["map", "recall", "max_rank", "complete@10", "english_inclination"]
    de = [((1 / 11 + 1 / 6) / 2 + 5 / 6) / 2, .25, 7, .5, .5]; zh = [13 / 24, 0, 2.5, 1, 1]  # zh: q1zh's undefined inclination left out
    np.testing.assert_allclose(pl[m].to_numpy(float), [de, zh, [19 / 24, .25, 2.5, 1, np.nan], [3 / 4, .25, 2, 1, np.nan]], rtol=1e-6)
    assert pl.rank_distance.isna().all() and (pl.recall_k == 1).all()
    s = res.summary
    assert s.setting.tolist() == ["bilingual"]  # one row: the X queries; bilingual-en stays per language
    np.testing.assert_allclose(s[m].to_numpy(float)[0], (np.array(de) + zh) / 2, rtol=1e-6)
    assert (s.n_queries[0], s.n_skipped[0], s.n_pools[0]) == (4, 1, 2)
    assert res.info["n_inclination_undefined"] == 1 and res.info["precision"] == "fp32"


def test_bilingual_needs_english():
    ds = subsample(load_lareqa("xquad-r", langs=["de", "zh"]), 3, seed=0)
    with pytest.raises(ConfigError, match="bilingual setting needs English"): evaluate(Oracle(ds), ds, settings=("bilingual",), cache=False)
    en = subsample(load_lareqa("xquad-r", langs=["en"]), 3, seed=0)
    with pytest.raises(ConfigError, match="needs English and another language"): evaluate(Oracle(en), en, settings=("mono", "bilingual"), cache=False)
    evaluate(Oracle(ds), ds, settings=("mono",), cache=False)  # the other settings do not need English
    assert SETTINGS == ("mono", "cross", "multi") and ALL_SETTINGS == SETTINGS + ("bilingual",)
    with pytest.raises(ConfigError, match="unknown setting"): evaluate(Oracle(ds), ds, settings=("bilingual-en",))


@pytest.mark.parametrize("seed", range(4))
def test_english_inclination_equals_the_full_ranking(seed):
    "Against the stable sort (ties by position): does a non-relevant English candidate come before the best relevant X one?"
    rng = np.random.default_rng(seed)
    n, m, k = 120, int(rng.integers(2, 60)), int(rng.integers(1, 5))
    S = rng.normal(size=(n, m)).astype(np.float32)
    if seed % 2: S = np.round(S, 1)  # many ties
    en = rng.random(m) < .5
    P = np.full((n, k), -1)
    for i in range(n): c = rng.choice(m, min(m, int(rng.integers(1, k + 1))), replace=False); P[i, :len(c)] = c
    rank = np.argsort(np.argsort(-S, 1, kind="stable"), 1)
    want = []
    for i in range(n):
        p = set(P[i][P[i] >= 0]); rx = [rank[i, j] for j in p if not en[j]]
        want.append(np.nan if not rx else float(any(en[j] and j not in p and rank[i, j] < min(rx) for j in range(m))))
    np.testing.assert_array_equal(english_inclination(S, P, en), want)


def test_max_rank_hand_worked():
    m = ranking_metrics(np.array([[6, 5, 4, 3, 2, 1.]]), np.array([[0, 1, 0, 0, 1, 0]], bool))
    assert m["max_rank"][0] == 5
    p = pool_metrics(np.array([[.1, .5, .6, .3, .9, .2]]), [[1, 3, -1]])  # ranks 3 and 4
    assert p["max_rank"][0] == 4 and p["rank_distance"][0] == 1


class Noisy(Oracle):
    "The oracle plus noise seeded by each text (not by Python's salted hash): continuous scores, the same in every process."
    def __init__(self, ds, noise=0.25): super().__init__(ds); self.noise = noise
    def encode(self, texts, kind="query", **kw):
        v = np.full((len(texts), len(self.ix) + 1), 1e-3)
        for i, t in enumerate(texts):
            for x in ([self.q[t]] if kind == "query" else self.c[t]): v[i, self.ix[x]] = 1
            seed = int(hashlib.md5(f"{kind}:{t}".encode()).hexdigest()[:8], 16)
            v[i] += self.noise * np.random.default_rng(seed).normal(size=v.shape[1])
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


# summary values of mono, cross, multi computed with the code before the bilingual setting existed
_BEFORE = {
    "xquad-r": dict(map=[0.6469378306878306, 0.629165988332655, 0.5447966774844999],
                    recall=[0.5111111111111111, 0.4444444444444444, 0.7555555555555555],
                    map20=[0.6462433862433862, 0.6287691629358296, 0.5365275362497585],
                    rank_distance=15.02222222222222, n_queries=[45, 90, 45], n_skipped=[0, 0, 0], pq_ap_sum=110.25299181769383),
    "mlqa-r": dict(map=[0.510026588366683, 0.5618152353048186, 0.3913813396474755],
                   recall=[0.37222222222222223, 0.375, 0.5842592592592593],
                   map20=[0.5074948775806618, 0.5598908229116563, 0.3813443157846752],
                   rank_distance=22.32777777777778, n_queries=[54, 52, 54], n_skipped=[0, 56, 0], pq_ap_sum=70.97188332202288),
}


@pytest.mark.parametrize("name,langs,n_ids", [("xquad-r", ["en", "de", "zh"], 15), ("mlqa-r", ["en", "de", "ar"], 30)])
def test_other_settings_unchanged_by_bilingual(name, langs, n_ids, tmp_path):
    ds = subsample(load_lareqa(name, langs=langs), n_ids, seed=3)
    old = evaluate(Noisy(ds), ds, cache=False)
    b = _BEFORE[name]; s = old.summary
    assert s.setting.tolist() == ["mono", "cross", "multi"]
    np.testing.assert_allclose(s["map"], b["map"], rtol=1e-6); np.testing.assert_allclose(s.recall, b["recall"], rtol=1e-6)
    np.testing.assert_allclose(s["map@20"], b["map20"], rtol=1e-6)
    assert s.rank_distance.iloc[2] == pytest.approx(b["rank_distance"], rel=1e-6) and s.rank_distance.iloc[:2].isna().all()
    assert s.n_queries.tolist() == b["n_queries"] and s.n_skipped.tolist() == b["n_skipped"]
    assert old.per_query.ap.sum() == pytest.approx(b["pq_ap_sum"], rel=1e-6)
    # the default output has exactly its old columns
    assert list(s.columns) == ["setting", "map", "recall", "recall_k", "map@20", "rank_distance", "n_queries", "n_skipped", "n_pools"]
    assert list(old.per_query.columns) == ["setting", "qid", "q_lang", "c_lang", "ap", "recall", "rank_distance"]
    assert "n_inclination_undefined" not in old.info
    # asking for bilingual as well leaves the other rows' numbers exactly as they were
    new = evaluate(Noisy(ds), ds, settings=SETTINGS + ("bilingual",), cache=False)
    assert new.summary.setting.tolist() == ["mono", "cross", "multi", "bilingual"]
    pd.testing.assert_frame_equal(new.summary[s.columns].iloc[:3], s, check_exact=True)
    pd.testing.assert_frame_equal(new.per_language[old.per_language.columns].iloc[:len(old.per_language)], old.per_language, check_exact=True)
    pd.testing.assert_frame_equal(new.per_query[old.per_query.columns].iloc[:len(old.per_query)], old.per_query, check_exact=True)
    assert new.summary[["max_rank", "complete@10", "english_inclination"]].iloc[:3].isna().all().all()
    assert new.per_query.iloc[:len(old.per_query)][["max_rank", "english_inclination"]].isna().all().all()
    X = [l for l in langs if l != "en"]
    pl = new.per_language
    assert pl[pl.setting == "bilingual"].c_lang.tolist() == [f"en+{x}" for x in X]
    assert pl[pl.setting == "bilingual-en"].c_lang.tolist() == [f"en+{x}" for x in X] and (pl[pl.setting == "bilingual-en"].q_lang == "en").all()
    row = new.summary.iloc[3]
    assert 0 < row["map"] < 1 and 0 <= row["english_inclination"] <= 1 and row["max_rank"] >= 2 and row.n_pools == len(X)
    assert row.recall <= .5 + 1e-9  # two relevant candidates per X query: R@1 at most 1/2
    # save / repr with the new columns
    out = new.save(tmp_path / "ev")
    back = pd.read_csv(out / "summary.csv")
    assert list(back.columns) == list(new.summary.columns) and back.setting.tolist()[-1] == "bilingual"
    assert "english_inclination" in repr(new) and "complete@10" in pd.read_csv(out / "per_query.csv.gz").columns


def test_bilingual_brute_force_on_a_real_slice():
    "Every bilingual measure of a noisy encoder on real XQuAD-R sentences, recomputed from the full score matrix."
    ds = subsample(load_lareqa("xquad-r", langs=["de", "en", "ru"]), 12, seed=1)
    enc = Noisy(ds, noise=.35)
    res = evaluate(enc, ds, settings=("bilingual",), cache=False)
    Q, C = ds.questions, ds.candidates
    S = enc.encode(Q.text.tolist(), "query") @ enc.encode(C.text.tolist(), "passage").T
    pq = res.per_query.set_index(["qid", "c_lang"])
    for x in ["de", "ru"]:
        ci = np.flatnonzero(C.lang.isin(["en", x])); en = (C.lang.to_numpy()[ci] == "en")
        for i in np.flatnonzero(Q.lang.isin([x, "en"])):
            s = S[i, ci]; rel = np.array([Q.xling_id[i] in xs for xs in C.xling_ids.to_numpy()[ci]])
            rank = np.argsort(np.argsort(-s, kind="stable"), kind="stable")  # 0-based, ties by position
            got = pq.loc[(Q.qid[i], f"en+{x}")]
            assert rel.sum() == 2 and got.ap == pytest.approx(average_precision_score(rel, s), rel=1e-5)
            assert got.recall == (rank[rel] < 1).mean() and got.max_rank == rank[rel].max() + 1
            assert got["complete@10"] == float((rank[rel] < 10).all())
            if Q.lang[i] == "en": assert np.isnan(got.english_inclination)
            else: assert got.english_inclination == float((rank[en & ~rel] < rank[rel & ~en].min()).any())
    assert res.summary.n_skipped[0] == 0 and res.per_language.n_queries.tolist() == [12] * 4


def test_precision_recorded():
    ds, enc = _tiny_bilingual()
    assert evaluate(enc, ds, settings=("mono",), cache=False).info["precision"] == "fp32"
    enc = ScoreEncoder(enc.c, enc.s, precision="bf16")
    assert evaluate(enc, ds, settings=("mono",), cache=False).info["precision"] == "bf16"


# ---------------------------------------------------------------- the counted path against a straightforward reference
from hybrid_mlir.eval import _relevant_counts, _relevance


@pytest.mark.parametrize("layout", ["scattered", "sorted", "blocks"])
@pytest.mark.parametrize("seed", range(4))
def test_relevant_counts_per_group_equal_brute_force(seed, layout):
    "Counts above / at or above / tied at a lower column, per candidate group, against comparing every candidate."
    rng = np.random.default_rng(seed)
    b, m, k, g = 30, int(rng.integers(1, 300)), int(rng.integers(1, 9)), int(rng.integers(1, 5))
    S = np.round(rng.normal(size=(b, m)), int(seed % 3)).astype(np.float32)  # seed 0: scores in a handful of values
    grp = rng.integers(0, g, m)  # scattered: a group's candidates anywhere (counted one by one)
    if layout != "scattered": grp = np.sort(grp)  # sorted: one run of columns per group (counted per run)
    if layout == "blocks": grp = np.roll(grp, m // 3)  # a group split in two runs
    R = np.full((b, k), -1)
    for i in range(b - 1): c = rng.choice(m, min(m, int(rng.integers(1, k + 1))), replace=False); R[i, :len(c)] = c
    valid, s, n_gt, n_ge, tie = _relevant_counts(S, R, grp, g)  # the last query has none: all zero
    for i in range(b):
        for j in range(k):
            if R[i, j] < 0: assert not valid[i, j]; continue
            x = S[i, R[i, j]]
            for h in range(g):
                inh = grp == h
                assert (n_gt[i, j, h], n_ge[i, j, h]) == ((S[i] > x)[inh].sum(), (S[i] >= x)[inh].sum())
                assert tie[i, j, h] == ((S[i] == x) & (np.arange(m) < R[i, j]))[inh].sum()


def test_relevance_lists_every_language():
    test = _relevance(np.array(["a", "b", "a", "z"], object), [["b"], ["a", "b"], [], ["a"], ["q"]])
    np.testing.assert_array_equal(test, [[1, 3], [0, 1], [1, 3], [-1, -1]])


class TableEncoder:
    "Each text's vector from a table: small multiples of 1/4, so every score is exact (numpy = torch) and ties abound."
    def __init__(self, vecs): self.v = vecs
    def encode(self, texts, kind="query", **kw): return np.stack([self.v[kind, t] for t in texts]).astype(np.float32)


def _random_set(seed, shuffle=True):
    """Four languages with candidates in shuffled language order (or grouped, as the loaders give them), duplicated
    sentences (exact ties), candidates that answer several questions or none, and questions that have no answer in
    some languages (skipped there)."""
    rng = np.random.default_rng(seed)
    langs, n_ids, d = ("de", "en", "th", "zh"), 25, 4
    ids = [f"x{i}" for i in range(n_ids)]
    q_rows, c_rows, vecs = [], [], {}
    for l in langs:
        asked = [x for x in ids if rng.random() < .85]
        for x in asked:
            qid = f"{x}-{l}"; q_rows.append((qid, x, l, qid)); vecs["query", qid] = rng.integers(-2, 3, d) / 4
        for c in range(int(rng.integers(15, 40))):
            ans = [x for x in rng.choice(ids, int(rng.choice([0, 1, 1, 1, 2])), replace=False)]
            text = f"{l}-c{c}"
            vecs["passage", text] = rng.integers(-2, 3, d) / 4
            c_rows.append((text, l, ans))
    for r in rng.choice(len(c_rows), 8, replace=False):  # duplicated sentences: same text, same vector, other answers
        t, l, _ = c_rows[r]; c_rows.append((t, l, [str(rng.choice(ids))]))
    c_rows = [c_rows[i] for i in rng.permutation(len(c_rows))]  # candidates not grouped by language
    if not shuffle: c_rows.sort(key=lambda r: r[1])
    Q = pd.DataFrame(dict(qid=[r[0] for r in q_rows], xling_id=[r[1] for r in q_rows], lang=[r[2] for r in q_rows], text=[r[3] for r in q_rows]))
    C = pd.DataFrame(dict(cid=range(len(c_rows)), lang=[r[1] for r in c_rows], text=[r[0] for r in c_rows], xling_ids=[r[2] for r in c_rows]))
    return LAReQA(f"random-{seed}", Q, C, langs), TableEncoder(vecs)


def _reference(ds, enc, settings):
    "Every pool the plain way: its score matrix, a stable sort (ties by position), `ranking_metrics`; English inclination from the ranks."
    from hybrid_mlir.eval import _pools
    Q, C = ds.questions, ds.candidates
    qe, ce = enc.encode(Q.text.tolist(), "query"), enc.encode(C.text.tolist(), "passage")
    rows = []
    for s, l1, pool in _pools(settings, ds.langs):
        ci = np.arange(len(C)) if pool == "all" else np.flatnonzero(C.lang.isin(pool.split("+")))
        for i in np.flatnonzero(Q.lang == l1):
            rel = np.array([Q.xling_id[i] in C.xling_ids[j] for j in ci])
            if not rel.any(): continue
            sc = (qe[i] @ ce[ci].T)[None]
            o = np.argsort(-sc, 1, kind="stable"); rank = np.argsort(o[0], kind="stable")
            m = ranking_metrics(np.take_along_axis(sc, o, 1), rel[o], ks=(1, 10, 20))
            rk = 10 if s == "multi" else 1
            row = dict(setting=s, qid=Q.qid[i], c_lang=pool, ap=m["ap"][0], recall=m[f"recall@{rk}"][0], rank_distance=m["rank_distance"][0])
            if s.startswith("bilingual"):
                en = (C.lang.to_numpy()[ci] == "en"); rx = rank[rel & ~en]
                row |= {"max_rank": m["max_rank"][0], "complete@10": float(m["max_rank"][0] <= 10),
                        "english_inclination": np.nan if s == "bilingual-en" or not len(rx) else float((rank[en & ~rel] < rx.min()).any())}
            rows.append(row)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed,shuffle", [(0, True), *(pytest.param(s, sh, marks=pytest.mark.slow)   # ~2.5 s CPU each
                                            for s, sh in [(0, False), (1, True), (1, False), (2, True), (2, False)])])
def test_evaluate_equals_the_sorted_reference(seed, shuffle):
    "The counted, pool-summing evaluation = sorting every pool's full ranking, every metric, on random data with ties."
    ds, enc = _random_set(seed, shuffle)
    settings = ALL_SETTINGS
    res = evaluate(enc, ds, settings=settings, cache=False)
    want = _reference(ds, enc, settings)
    got = res.per_query
    assert len(got) == len(want) > 0
    np.testing.assert_array_equal(got.setting, want.setting); np.testing.assert_array_equal(got.qid, want.qid)
    np.testing.assert_array_equal(got.c_lang, want.c_lang)
    for col in ["ap", "recall", "rank_distance", "max_rank", "complete@10", "english_inclination"]:
        np.testing.assert_allclose(got[col].to_numpy(float), want[col].to_numpy(float), rtol=1e-12, atol=1e-12, err_msg=col)
    assert got["english_inclination"].notna().any() and (got["max_rank"] > 1).any()
    # the per-language means are those of the per-query rows (skipped queries counted, never averaged)
    pl = res.per_language.set_index(["setting", "q_lang", "c_lang"])
    mean = got.groupby(["setting", "q_lang", "c_lang"]).ap.mean()
    np.testing.assert_allclose(pl.loc[mean.index, "map"], mean, rtol=1e-12)
    assert pl.n_skipped.sum() > 0
