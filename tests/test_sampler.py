"""Tests of hybrid_mlir.sampler: batch-type and language rules, no shared question ids, source mixing,
alpha statistics, determinism, rank splits, DataLoader use, resume, errors."""
import json, math
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings, strategies as st, HealthCheck
from torch.utils.data import DataLoader

from hybrid_mlir.core import ConfigError
from hybrid_mlir.sampler import (MonoBatchSampler, CrossBatchSampler, MixedBatchSampler, HybridBatchSampler,
                                 make_sampler, toy_pairs, pair_index)

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
