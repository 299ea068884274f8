"""Tests of hybrid_mlir.sampler: batch-type and language rules, no shared question ids, source mixing,
alpha statistics, exact alpha, stream keys, determinism, rank splits, DataLoader use, resume, errors."""
import json, math, zlib
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings, strategies as st, HealthCheck
from torch.utils.data import DataLoader

from hybrid_mlir.core import ConfigError
from hybrid_mlir.sampler import (MonoBatchSampler, CrossBatchSampler, MixedBatchSampler, HybridBatchSampler,
                                 make_sampler, toy_pairs, pair_index, EXACT_ALPHA)

ALL = [MonoBatchSampler, CrossBatchSampler, MixedBatchSampler, HybridBatchSampler]


@pytest.fixture(scope="module")
def big():
    "400 questions in 4 languages (some translations missing), two sources of sizes 200/200."
    return toy_pairs(400, langs=("en", "de", "ar", "zh"), sources=("mlqa-r", "xquad-r"), seed=1, drop=0.2)


def id_langs(df):
    return df[df.q_lang == df.p_lang].groupby("xling_id").q_lang.agg(set).to_dict()


def check_batch(df, rows, kind, lang=None, langs_of=None):
    b = df.iloc[rows]
    assert b.xling_id.nunique() == len(rows), "two rows of one batch share an xling_id"
    if kind == "mono":
        assert (b.q_lang == lang).all() and (b.p_lang == lang).all()
    elif kind == "cross":
        assert (b.q_lang != b.p_lang).all()
        for x, ql, pl in zip(b.xling_id, b.q_lang, b.p_lang):
            assert {ql, pl} <= langs_of[x]
    elif kind == "mixed":
        assert (b.q_lang == b.p_lang).all()
    else: raise AssertionError(kind)


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_rules_every_batch(big, cls, seed):
    s = cls(big, 8, seed=seed)
    langs_of = id_langs(big)
    n = 0
    for e in range(2):
        for g in s.global_batches(e):
            check_batch(big, g.rows, g.kind, g.lang, langs_of); n += 1
            if cls is MonoBatchSampler: assert g.kind == "mono"
            if cls is CrossBatchSampler: assert g.kind == "cross"
            if cls is MixedBatchSampler: assert g.kind == "mixed"
            if cls is HybridBatchSampler: assert g.kind in ("mono", "cross")
    assert n == 2*len(s) == 2*(400//8)


def test_mixed_mixes_languages(big):
    langs = [big.iloc[g.rows].q_lang.nunique() for g in MixedBatchSampler(big, 16).global_batches()]
    assert np.mean([l > 1 for l in langs]) > 0.9


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75])
def test_alpha_fraction_over_2000_batches(big, alpha):
    kinds = []
    for seed in range(5):
        s = HybridBatchSampler(big, 4, alpha=alpha, seed=seed)   # 100 batches per epoch
        kinds += [g.kind for e in range(4) for g in s.global_batches(e)]
    assert len(kinds) == 2000
    frac = np.mean([k == "mono" for k in kinds])
    assert abs(frac - alpha) < 3*math.sqrt(alpha*(1 - alpha)/2000), frac


def test_mono_language_uniform(big):
    langs = [g.lang for seed in range(5) for e in range(4) for g in MonoBatchSampler(big, 4, seed=seed).global_batches(e)]
    counts = pd.Series(langs).value_counts()
    assert set(counts.index) == {"en", "de", "ar", "zh"}
    sigma = math.sqrt(2000*0.25*0.75)
    assert (abs(counts - 500) < 3*sigma).all(), counts.to_dict()


def test_alpha_extremes_equal_pure_strategies(big):
    for seed in (0, 5):
        m, c = MonoBatchSampler(big, 8, seed=seed), CrossBatchSampler(big, 8, seed=seed)
        h1, h0 = HybridBatchSampler(big, 8, alpha=1, seed=seed), HybridBatchSampler(big, 8, alpha=0, seed=seed)
        for e in (0, 3):
            for s in (m, c, h1, h0): s.set_epoch(e)
            assert list(h1) == list(m) and list(h0) == list(c)
    assert {g.kind for g in HybridBatchSampler(big, 8, alpha=1).global_batches()} == {"mono"}
    assert {g.kind for g in HybridBatchSampler(big, 8, alpha=0).global_batches()} == {"cross"}


def test_sources_mixed_by_size():
    df = toy_pairs(400, langs=("en", "de"), sources=("a", "a", "a", "b"))  # sizes 300 / 100
    for cls in ALL:
        for g in cls(df, 8, seed=2).global_batches():
            assert (df.iloc[g.rows].source == "a").sum() == 6   # exact share 8*300/400
    df = toy_pairs(300, langs=("en", "de"), sources=("a", "b", "b"))    # 100 / 200: 8/3 not whole
    share = [np.mean(df.iloc[g.rows].source == "a") for e in range(10) for g in CrossBatchSampler(df, 8).global_batches(e)]
    assert abs(np.mean(share) - 1/3) < 0.02


def test_cross_epoch_uses_each_id_once():
    df = toy_pairs(300, langs=("en", "de", "ar"), seed=2, drop=0.2)
    df = df[df.xling_id.isin(df[df.q_lang != df.p_lang].xling_id)].reset_index(drop=True)
    s = CrossBatchSampler(df, 10, seed=3)
    ids = [x for g in s.global_batches() for x in df.iloc[g.rows].xling_id]
    assert len(ids) == len(set(ids)) == 10*len(s)


def test_len_and_drop_last(big):
    for cls in ALL:
        s = cls(big, 7)
        assert len(s) == 400//7 == len(list(s))
        s = cls(big, 7, drop_last=False)
        assert len(s) == math.ceil(400/7) == len(list(s))
        assert all(len(b) == 7 for b in s)
        assert len(cls(big, 7, world_size=3)) == 400//21


def test_determinism_and_set_epoch(big):
    for cls in ALL:
        a, b = cls(big, 8, seed=4), cls(big, 8, seed=4)
        assert list(a) == list(b) == list(a)      # same epoch again: same stream
        a.set_epoch(1); b.set_epoch(1)
        assert list(a) == list(b)
        a.set_epoch(0)
        assert list(a) != list(b)
        assert list(cls(big, 8, seed=5)) != list(b)   # streams keyed by (seed, epoch), not seed + epoch


def test_dataset_input_equals_dataframe(big):
    import datasets
    ds = datasets.Dataset.from_pandas(big, preserve_index=False)
    for cls in ALL:
        assert list(cls(ds, 8, seed=1)) == list(cls(big, 8, seed=1))


@pytest.mark.parametrize("cls", ALL)
def test_rank_split(big, cls):
    W, B = 3, 4
    ranks = [cls(big, B, seed=9, rank=r, world_size=W) for r in range(W)]
    glob = cls(big, B*W, seed=9)
    per_rank = [list(s) for s in ranks]
    kinds = [[(g.kind, g.lang) for g in s.global_batches()] for s in ranks]
    assert kinds[0] == kinds[1] == kinds[2]                     # same type and language per step
    for step, g in enumerate(glob.global_batches()):
        parts = [per_rank[r][step] for r in range(W)]
        assert all(len(p) == B for p in parts)
        assert sum(parts, []) == g.rows                         # union = global batch, in rank order
        assert len(set(sum(parts, []))) == B*W                  # disjoint
        check_batch(big, g.rows, g.kind, g.lang, id_langs(big))


def test_dataloader(big):
    import datasets
    ds = datasets.Dataset.from_pandas(big, preserve_index=False)
    s = HybridBatchSampler(ds, 8, seed=1)
    dl = DataLoader(ds, batch_sampler=s, collate_fn=lambda rows: rows, num_workers=0)
    assert len(dl) == len(s) == 50
    got = list(dl)
    assert len(got) == 50
    for rows, idx in zip(got, s):
        assert [r["query"] for r in rows] == big["query"].iloc[idx].tolist()


def test_resume_mid_epoch(big, tmp_path):
    for cls in ALL:
        s = cls(big, 8, seed=2); s.set_epoch(3)
        full = list(s)
        r = cls(big, 8, seed=2); r.set_epoch(3)
        it = iter(r); consumed = [next(it) for _ in range(11)]
        state = r.state_dict()
        assert state["epoch"] == 3 and state["position"] == 11
        torch.save(state, tmp_path/"s.pt")
        state = torch.load(tmp_path/"s.pt", weights_only=True)
        json.dumps(state)
        fresh = cls(big, 8, seed=2); fresh.load_state_dict(state)
        assert consumed + list(fresh) == full
        assert fresh.state_dict()["position"] == len(fresh)
        fresh.set_epoch(4); r.set_epoch(4)
        assert list(fresh) == list(r)


def test_resume_with_prefetching_dataloader(big):
    s = HybridBatchSampler(big, 8, seed=2)
    full = list(s)
    dl = DataLoader(list(range(len(big))), batch_sampler=s, num_workers=1, prefetch_factor=4)
    it = iter(dl); done = [next(it).tolist() for _ in range(5)]
    state = s.state_dict(position=5)            # the sampler ran ahead; the trainer knows it did 5 steps
    assert s.state_dict()["position"] >= 5
    del it
    t = HybridBatchSampler(big, 8, seed=2); t.load_state_dict(state)
    assert done + list(t) == full


def test_resume_at_epoch_end(big):
    s = CrossBatchSampler(big, 8); list(s)
    t = CrossBatchSampler(big, 8); t.load_state_dict(s.state_dict())
    assert list(t) == []


@given(n_ids=st.integers(20, 80), n_langs=st.integers(2, 4), n_src=st.integers(1, 3), bs=st.integers(1, 5),
       world=st.integers(1, 3), drop=st.sampled_from([0.0, 0.3]), alpha=st.sampled_from([0.0, 0.3, 1.0]), seed=st.integers(0, 50))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_property_no_shared_ids(n_ids, n_langs, n_src, bs, world, drop, alpha, seed):
    df = toy_pairs(n_ids, langs=("en", "de", "ar", "zh")[:n_langs], sources=tuple("abc"[:n_src]), seed=seed, drop=drop)
    try: s = HybridBatchSampler(df, bs, alpha=alpha, seed=seed, world_size=world)
    except ConfigError: return      # too few ids for this batch: the error is the expected behaviour
    langs_of = id_langs(df)
    for g in s.global_batches():
        assert len(g.rows) == bs*world
        check_batch(df, g.rows, g.kind, g.lang, langs_of)


def test_errors(big):
    for a in (-0.1, 1.5, "x", None, float("nan")):
        with pytest.raises(ConfigError, match="alpha"): HybridBatchSampler(big, 8, alpha=a)
    with pytest.raises(ConfigError, match="larger than"): CrossBatchSampler(big, 401)
    with pytest.raises(ConfigError, match="larger than"): MonoBatchSampler(big, 201, world_size=2)
    with pytest.raises(ConfigError, match="p_lang"): MonoBatchSampler(big.drop(columns=["p_lang"]), 8)
    with pytest.raises(ConfigError, match="xling_id"): CrossBatchSampler(big.drop(columns=["xling_id"]), 8)
    with pytest.raises(ConfigError, match="empty"): MonoBatchSampler(big.iloc[:0], 8)
    with pytest.raises(ConfigError, match="batch_size"): MonoBatchSampler(big, 0)
    with pytest.raises(ConfigError, match="rank"): MonoBatchSampler(big, 8, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="zigzag"): make_sampler("zigzag", big, 8)
    # a language with too few monolingual ids: named in the message; X-Y does not need it
    th = toy_pairs(3, langs=("en", "th")).assign(xling_id=lambda d: "th-" + d.xling_id)
    th = th[(th.q_lang == "th") & (th.p_lang == "th")]
    df = pd.concat([big, th], ignore_index=True)
    with pytest.raises(ConfigError, match="'th'"): MonoBatchSampler(df, 8)
    with pytest.raises(ConfigError, match="'th'"): HybridBatchSampler(df, 8, alpha=0.5)
    CrossBatchSampler(df, 8); HybridBatchSampler(df, 8, alpha=0.0)
    mono_only = big[big.q_lang == big.p_lang]
    with pytest.raises(ConfigError, match="cross-lingual"): CrossBatchSampler(mono_only, 8)
    clash = pd.concat([big, big.iloc[:1].assign(source="other")], ignore_index=True)
    with pytest.raises(ConfigError, match="source"): CrossBatchSampler(clash, 8)
    s = CrossBatchSampler(big, 8, seed=1)
    with pytest.raises(ConfigError, match="seed"): CrossBatchSampler(big, 8, seed=2).load_state_dict(s.state_dict())
    with pytest.raises(ConfigError, match="strategy"): MonoBatchSampler(big, 8, seed=1).load_state_dict(s.state_dict())


def test_make_sampler(big):
    assert isinstance(make_sampler("mono", big, 8), MonoBatchSampler)
    assert isinstance(make_sampler("X-X", big, 8), MixedBatchSampler)
    h = make_sampler("hybrid", big, 4, alpha=0.3, seed=3, rank=1, world_size=2)
    assert (h.alpha, h.seed, h.rank, h.world_size) == (0.3, 3, 1, 2)
    assert list(make_sampler("cross", big, 8, seed=3)) == list(CrossBatchSampler(big, 8, seed=3))


def test_no_source_column(big):
    s = MonoBatchSampler(big.drop(columns=["source"]), 8)
    assert len(list(s)) == 50
    assert pair_index(big.drop(columns=["source"])).source.unique().tolist() == ["train"]


# ---- exact alpha, stream keys, realised alpha ----------------------------------------------------

def code(s, epoch):
    "The epoch's batch types as one letter each: X for X-Y, else the mono batch's language initial."
    return "".join("X" if g.kind == "cross" else g.lang[0] for g in s.global_batches(epoch))


def crc(s, epoch): return zlib.crc32(json.dumps([g.rows for g in s.global_batches(epoch)]).encode())


# computed with the sampler before `exact` and `stream_key` existed (commit 2320f1d): the committed results'
# batches. The coin stream must never change.
FROZEN_HYBRID = [
    (dict(batch_size=4, alpha=0.5, seed=0), {0: ("XXXXXXXXezXaXaXXeXed", 3232603991), 1: ("XzzdzXXzXXXdXXzzXXXz", 2466269209)}),
    (dict(batch_size=8, alpha=0.25, seed=3, rank=1, world_size=2), {0: ("aeXXzXXeXzXXXXXXXeXX", 3908401935), 2: (None, 3076670174)}),
    (dict(batch_size=8, alpha=0.75, seed=3, rank=1, world_size=2), {0: ("aezezXezadedXezeXzdz", 2725255846), 2: (None, 3161728513)}),
]
FROZEN_OTHERS = {MonoBatchSampler: (2338360124, 1552900958), CrossBatchSampler: (4159137367, 2408674274),
                 MixedBatchSampler: (391257281, 3568564400)}


@pytest.mark.parametrize("extra", [dict(), dict(exact=False), dict(exact=False, stream_key=None)])
def test_coin_stream_unchanged(big, extra):
    for kw, want in FROZEN_HYBRID:
        s = HybridBatchSampler(big, **kw, **(extra if extra else dict(exact=False)))
        for epoch, (types, rows_crc) in want.items():
            if types is not None: assert code(s, epoch)[:20] == types
            assert crc(s, epoch) == rows_crc
    for cls, want in FROZEN_OTHERS.items():
        s = cls(big, 8, seed=1, **({"stream_key": None} if "stream_key" in extra else {}))
        assert (crc(s, 0), crc(s, 1)) == want


def test_exact_default_and_coin_on_request(big):
    "Exact alpha is the sampler's default; exact=False (TrainConfig's LEGACY presets) keeps the committed coin stream."
    assert EXACT_ALPHA is True
    assert HybridBatchSampler(big, 8).exact is True and make_sampler("hybrid", big, 8).exact is True
    kw, want = FROZEN_HYBRID[0]
    assert crc(HybridBatchSampler(big, **kw, exact=False), 0) == want[0][1]
    assert crc(HybridBatchSampler(big, **kw), 0) != want[0][1]


def test_strategy_names_and_old_states(big):
    "The paper's names are canonical; the older ones load, in make_sampler and in a saved sampler state."
    from hybrid_mlir.sampler import strategy_name, STRATEGIES
    assert STRATEGIES == ("x-x-mono", "x-y", "x-x", "hybrid")
    assert [strategy_name(s) for s in ("mono", "cross", "mixed", "X-X-Mono")] == ["x-x-mono", "x-y", "x-x", "x-x-mono"]
    assert [c.strategy for c in ALL] == list(STRATEGIES)
    for old, cls in zip(("mono", "cross", "mixed"), ALL):
        assert type(make_sampler(old, big, 8)) is cls
        s = cls(big, 8, seed=1); s.load_state_dict(dict(s.state_dict(), strategy=old))   # a checkpoint saved before the rename
    with pytest.raises(ConfigError, match="zigzag"): strategy_name("zigzag")


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.25, 0.3, 0.5, 0.75, 0.9, 1.0])
@pytest.mark.parametrize("bs,world,drop_last", [(4, 1, True), (7, 1, True), (7, 1, False), (16, 1, True), (3, 3, True), (64, 2, False)])
def test_exact_count_every_epoch(big, alpha, bs, world, drop_last):
    s = HybridBatchSampler(big, bs, alpha=alpha, seed=5, world_size=world, drop_last=drop_last, exact=True)
    n = len(s); k = round(alpha*n)
    for epoch in range(3):
        kinds = [g.kind for g in s.global_batches(epoch)]
        assert len(kinds) == n and kinds.count("mono") == k and kinds.count("cross") == n - k
        assert kinds == s.batch_kinds(epoch)
        s.set_epoch(epoch)
        assert s.realised_alpha() == s.realised_alpha(epoch) == k/n
    assert abs(s.realised_alpha() - alpha) <= 0.5/n + 1e-12


def test_exact_order_is_random_and_seeded(big):
    kinds = lambda **kw: HybridBatchSampler(big, 4, alpha=0.5, exact=True, **kw).batch_kinds
    a = kinds(seed=0)
    assert a(0) != a(1) and a(0) != kinds(seed=1)(0)
    assert a(0) == kinds(seed=0)(0)                              # deterministic
    assert a(0)[:50].count("mono") not in (0, 50)              # shuffled, not a block
    first = [kinds(seed=s)(0)[0] for s in range(40)]
    assert 5 < first.count("mono") < 35                        # position of the mono batches varies with the seed


def test_exact_lists_and_resume(big, tmp_path):
    for key in (None, "mlqa-r"):
        a = HybridBatchSampler(big, 8, alpha=0.25, seed=2, exact=True, stream_key=key)
        b = HybridBatchSampler(big, 8, alpha=0.25, seed=2, exact=True, stream_key=key)
        a.set_epoch(3); b.set_epoch(3)
        full = list(a); assert full == list(b) == list(a)
        it = iter(b); consumed = [next(it) for _ in range(13)]
        torch.save(b.state_dict(), tmp_path/"s.pt")
        state = torch.load(tmp_path/"s.pt", weights_only=True); json.dumps(state)
        assert (state["exact"], state["stream_key"], state["position"]) == (True, key, 13)
        r = HybridBatchSampler(big, 8, alpha=0.25, seed=2, exact=True, stream_key=key); r.load_state_dict(state)
        assert consumed + list(r) == full
        r.set_epoch(4); a.set_epoch(4)
        assert list(r) == list(a)
    with pytest.raises(ConfigError, match="exact"): HybridBatchSampler(big, 8, alpha=0.25, seed=2, exact=False, stream_key="mlqa-r").load_state_dict(state)
    with pytest.raises(ConfigError, match="stream_key"):
        HybridBatchSampler(big, 8, alpha=0.25, seed=2, exact=True, stream_key="xquad-r").load_state_dict(state)
    old = {k: v for k, v in state.items() if k not in ("exact", "stream_key")}     # a state written before these keys
    HybridBatchSampler(big, 8, alpha=0.25, seed=2, exact=True, stream_key="mlqa-r").load_state_dict(old)


@pytest.mark.parametrize("exact", [False, True])
def test_exact_rank_split_and_rules(big, exact):
    W, B = 3, 4
    ranks = [HybridBatchSampler(big, B, alpha=0.4, seed=9, rank=r, world_size=W, exact=exact, stream_key="k") for r in range(W)]
    glob = HybridBatchSampler(big, B*W, alpha=0.4, seed=9, exact=exact, stream_key="k")
    kinds = [[(g.kind, g.lang) for g in s.global_batches()] for s in ranks]
    assert kinds[0] == kinds[1] == kinds[2] == [(g.kind, g.lang) for g in glob.global_batches()]
    its = [iter(s) for s in ranks]
    for g in glob.global_batches():
        parts = [next(it) for it in its]
        assert sum(parts, []) == g.rows
        assert all(s.last_batch == g for s in ranks)            # every rank sees the whole global batch
        check_batch(big, g.rows, g.kind, g.lang, id_langs(big))
    assert all(s.realised_alpha() == ranks[0].realised_alpha() for s in ranks)


def test_stream_key(big):
    for cls in ALL:
        base, a, a2, b = (cls(big, 8, seed=1, stream_key=k) for k in (None, "A", "A", "B"))
        assert list(a) == list(a2) and list(a) != list(base) and list(a) != list(b)
        assert list(cls(big, 8, seed=1, stream_key="")) != list(base)
    h = lambda key: HybridBatchSampler(big, 4, alpha=0.5, seed=0, stream_key=key).batch_kinds()
    assert h("mlqa-r") != h("xquad-r")                          # protocols A and B: different batch-type sequences
    with pytest.raises(ConfigError, match="stream_key"): MonoBatchSampler(big, 8, stream_key=3)


def test_realised_alpha_coin_and_pure(big):
    s = HybridBatchSampler(big, 4, alpha=0.3, seed=1)
    for e in range(3):
        assert s.realised_alpha(e) == np.mean([g.kind == "mono" for g in s.global_batches(e)])
    assert MonoBatchSampler(big, 8).realised_alpha() == 1.0
    assert CrossBatchSampler(big, 8).realised_alpha() == MixedBatchSampler(big, 8).realised_alpha() == 0.0


def test_exact_errors_and_make_sampler(big):
    for bad in (1, "yes", None):
        with pytest.raises(ConfigError, match="exact"): HybridBatchSampler(big, 8, exact=bad)
    h = make_sampler("hybrid", big, 8, alpha=0.25, seed=1, exact=True, stream_key="A")
    assert (h.exact, h.stream_key) == (True, "A")
    assert list(h) == list(HybridBatchSampler(big, 8, alpha=0.25, seed=1, exact=True, stream_key="A"))
    c = make_sampler("x-y", big, 8, seed=1, exact=True, stream_key="A")   # exact means nothing for one batch type
    assert list(c) == list(CrossBatchSampler(big, 8, seed=1, stream_key="A"))
