"""Seed x cluster bootstrap, Holm, verdicts and `compare_rows`: shapes, determinism, errors, and calibration."""
from pathlib import Path
import numpy as np, pandas as pd, pytest
from hybrid_mlir.core import ConfigError
from hybrid_mlir.stats import (two_level_bootstrap, holm, verdict, compare_rows, cluster_ids, measure_frame, run_files,
                               LOWER_IS_BETTER)

RESULTS = Path(__file__).resolve().parents[1] / "results"


def toy(rng, shift=0.0, R=3, C=60, L=4, seed_sd=0.3, cluster_sd=1.0, noise_sd=3.0, Rb=None):
    "Two systems' long frames: a shared question difficulty, then per system a seed effect, a cluster effect and noise."
    base = rng.normal(0, 1, (C, L))
    def one(s, r):
        v = base + s + rng.normal(0, seed_sd, (r, 1, 1)) + rng.normal(0, cluster_sd, (1, C, 1)) + rng.normal(0, noise_sd, (r, C, L))
        si, c, l = np.indices(v.shape).reshape(3, -1)
        return pd.DataFrame(dict(seed=si, cluster=c, unit=c * L + l, pool=l, value=v.ravel()))
    return one(shift, R), one(0.0, Rb or R)


def naive_ci(a, b, rng, n_boot=300):
    "The query-level bootstrap that ignores seeds and clusters: seed-averaged per-unit differences resampled one by one."
    d = (a.groupby("unit").value.mean() - b.groupby("unit").value.mean()).to_numpy()
    boots = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(1)
    return np.quantile(boots, [0.025, 0.975])


def test_result_shape_and_keys():
    a, b = toy(np.random.default_rng(0))
    r = two_level_bootstrap(a, b, n_boot=200)
    assert set(r) == {"diff", "ci_low", "ci_high", "p", "mean_a", "mean_b", "n_seeds_a", "n_seeds_b",
                      "n_clusters", "n_units", "n_pools", "n_nan"}
    assert (r["n_seeds_a"], r["n_seeds_b"], r["n_clusters"], r["n_units"], r["n_pools"], r["n_nan"]) == (3, 3, 60, 240, 4, 0)
    assert r["ci_low"] <= r["diff"] <= r["ci_high"] and 2 / 201 <= r["p"] <= 1
    assert r["diff"] == pytest.approx(a.value.mean() - b.value.mean())  # equal pools: macro = plain mean


def test_deterministic_given_seed():
    a, b = toy(np.random.default_rng(1))
    assert two_level_bootstrap(a, b, n_boot=300, seed=5) == two_level_bootstrap(a, b, n_boot=300, seed=5)
    assert two_level_bootstrap(a, b, n_boot=300, seed=5)["ci_low"] != two_level_bootstrap(a, b, n_boot=300, seed=6)["ci_low"]
    # row order does not matter
    assert two_level_bootstrap(a.sample(frac=1, random_state=0), b, n_boot=300, seed=5)["ci_low"] == pytest.approx(
        two_level_bootstrap(a, b, n_boot=300, seed=5)["ci_low"])


def test_macro_over_pools_matches_summary_average():
    "Per seed: mean within each pool, then the plain mean over pools (eval.evaluate's summary), then the mean over seeds."
    rng = np.random.default_rng(2)
    rows = [(s, f"q{i}", f"q{i}", "big" if i < 30 else "small", rng.uniform()) for s in range(2) for i in range(40)]
    a = pd.DataFrame(rows, columns=["seed", "cluster", "unit", "pool", "value"])
    b = a.assign(value=0.0)
    want = np.mean([a[a.seed == s].groupby("pool").value.mean().mean() for s in range(2)])
    r = two_level_bootstrap(a, b, n_boot=100)
    assert r["diff"] == pytest.approx(want) and r["mean_a"] == pytest.approx(want) and r["n_pools"] == 2
    assert r["diff"] != pytest.approx(a.value.mean())  # not the plain mean over units


def test_exact_shift_and_p_floor():
    a, b = toy(np.random.default_rng(3), R=1, seed_sd=0)
    r = two_level_bootstrap(b.assign(value=b.value + 0.25), b, n_boot=199)
    assert (r["diff"], r["ci_low"], r["ci_high"]) == pytest.approx((0.25, 0.25, 0.25)) and r["p"] == pytest.approx(2 / 200)
    r = two_level_bootstrap(b, b, n_boot=199)
    assert r["diff"] == 0 and r["p"] == 1.0


def test_unequal_seed_counts_and_paired_seeds():
    a, b = toy(np.random.default_rng(4), R=3, Rb=5)
    r = two_level_bootstrap(a, b, n_boot=200)
    assert (r["n_seeds_a"], r["n_seeds_b"]) == (3, 5)
    with pytest.raises(ConfigError, match="same seeds"): two_level_bootstrap(a, b, n_boot=200, paired_seeds=True)
    a, b = toy(np.random.default_rng(4))
    rp = two_level_bootstrap(a, b, n_boot=200, paired_seeds=True)
    assert rp["diff"] == pytest.approx(two_level_bootstrap(a, b, n_boot=200)["diff"])


def test_nan_values_dropped_and_counted():
    a, b = toy(np.random.default_rng(5))
    a.loc[a.unit == 0, "value"] = np.nan; b.loc[b.unit == 0, "value"] = np.nan  # e.g. English inclination of a unit without X answer
    r = two_level_bootstrap(a, b, n_boot=100)
    assert r["n_nan"] == 6 and r["n_units"] == 239


@pytest.mark.parametrize("mutate, match", [
    (lambda a, b: (a, b.iloc[:-1]), "unequal units across seeds"),
    (lambda a, b: (a, b.assign(unit=b.unit + 1000)), "unequal units: 240 units only in a"),
    (lambda a, b: (a, b.iloc[:0]), "no seeds"),
    (lambda a, b: (a.drop(columns="cluster"), b), r"missing column\(s\) \['cluster'\]"),
    (lambda a, b: (pd.concat([a, a.iloc[:1]]), b), "duplicate rows"),
    (lambda a, b: (a, b.drop(columns="pool")), "pool column"),
    (lambda a, b: (a.assign(value="x"), b), "numeric"),
    (lambda a, b: (a.to_dict(), b), "need a DataFrame"),
])
def test_bad_input(mutate, match):
    a, b = toy(np.random.default_rng(6))
    with pytest.raises(ConfigError, match=match): two_level_bootstrap(*mutate(a, b), n_boot=100)


@pytest.mark.parametrize("kw, match", [(dict(n_boot=99), "n_boot"), (dict(n_boot=500.0), "n_boot"), (dict(ci=1.0), "ci")])
def test_bad_settings(kw, match):
    a, b = toy(np.random.default_rng(7))
    with pytest.raises(ConfigError, match=match): two_level_bootstrap(a, b, **kw)


def test_holm_by_hand():
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.3, 0.6, 0.9]).tolist() == pytest.approx([0.9, 1.0, 1.0])  # capped
    h = holm([0.5, np.nan, 0.4]); assert np.isnan(h[1]) and h[[0, 2]].tolist() == pytest.approx([0.8, 0.8])
    p = np.random.default_rng(0).uniform(size=20); h = holm(p)
    assert (h >= p).all() and (np.diff(h[np.argsort(p)]) >= 0).all()
    assert holm([]).tolist() == []
    with pytest.raises(ConfigError, match="1-D"): holm([[0.1]])
    with pytest.raises(ConfigError, match=r"\[0, 1\]"): holm([1.2])


def test_verdict_rules():
    assert verdict(0.02, 0.01, 0.03, 0.01) == "holds"
    assert verdict(-0.02, -0.03, -0.01, 0.01) == "fails"
    assert verdict(0.02, -0.001, 0.04, 0.01) == "inconclusive"  # CI touches zero
    assert verdict(0.02, 0.01, 0.03, 0.06) == "inconclusive"  # Holm p too large
    assert verdict(0.02, 0.01, 0.03, 0.06, alpha=0.1) == "holds"
    assert verdict(-30, -40, -20, 0.001, higher_is_better=False) == "holds"  # smaller rank distance: better
    assert verdict(30, 20, 40, 0.001, higher_is_better=False) == "fails"
    assert verdict(np.nan, np.nan, np.nan, np.nan) == "inconclusive"
    assert {"rank_distance", "max_rank", "english_inclination"} <= set(LOWER_IS_BETTER)


@pytest.mark.slow  # 300 bootstraps (~4 s CPU)
def test_calibration_seed_and_cluster_effects():
    "No true difference, a seed effect and a cluster effect: the two-level CI covers 0 about 95% of the time; the naive one does not."
    rng, n, cover, naive = np.random.default_rng(2024), 300, 0, 0
    for i in range(n):
        a, b = toy(rng)
        r = two_level_bootstrap(a, b, n_boot=200, seed=i)
        cover += r["ci_low"] <= 0 <= r["ci_high"]
        lo, hi = naive_ci(a, b, rng)
        naive += lo <= 0 <= hi
    print(f"coverage of 95% CIs over {n} null draws: two-level {cover / n:.3f}, naive query-level {naive / n:.3f}")
    assert 0.91 <= cover / n <= 0.99
    assert naive / n < 0.85


def write_tree(root, rng, rows=(("h", 0.2, 2), ("m", 0.0, 2)), n_q=30, langs=("en", "de")):
    "<root>/A/<row>-s<seed>/eval/per_query.csv.gz with mono, cross and multi rows; `h` is better on mono AP by the shift."
    for row, shift, seeds in rows:
        for s in range(seeds):
            recs = [(st, f"{l}:x{i}", l, c) for l in langs for i in range(n_q)
                    for st, c in [("mono", l), ("multi", "all")] + [("cross", c) for c in langs if c != l]]
            q = pd.DataFrame(recs, columns=["setting", "qid", "q_lang", "c_lang"])
            q["ap"] = np.clip(rng.uniform(0.2, 0.6, len(q)) + shift * (q.setting == "mono"), 0, 1)
            q["recall"], q["rank_distance"] = q.ap, rng.integers(0, 40, len(q)).astype(float)
            d = Path(root) / "A" / (f"{row}-s{s}" if row != "base" else row) / "eval"; d.mkdir(parents=True)
            q.to_csv(d / "per_query.csv.gz", index=False)


def test_compare_rows_tiny_tree(tmp_path):
    write_tree(tmp_path, np.random.default_rng(0), rows=(("h", 0.2, 3), ("m", 0.0, 2), ("base", 0.0, 1)))
    measures = [("mono", "map"), ("cross", "map"), ("multi", "map"), ("multi", "rank_distance")]
    fam = compare_rows(tmp_path, "A", pairs=[("h", "m"), ("h", "base")], measures=measures, n_boot=1000)
    assert list(fam.columns) == ["protocol", "comparison", "measure", "diff", "ci_low", "ci_high", "p", "p_holm", "verdict",
                                 "n_seeds_a", "n_seeds_b", "n_clusters", "n_units", "n_boot"]
    assert fam.comparison.tolist() == ["h vs m"] * 4 + ["h vs base"] * 4
    assert fam.measure.tolist()[:4] == ["mono map", "cross map", "multi map", "multi rank_distance"]
    assert fam.p_holm.tolist() == pytest.approx(holm(fam.p).tolist())  # Holm over the whole family
    assert (fam.n_seeds_a == 3).all() and fam.n_seeds_b.tolist() == [2] * 4 + [1] * 4 and (fam.n_clusters == 30).all()
    assert fam.n_units.tolist()[:3] == [60, 60, 60]  # cross: 30 questions x 2 query languages x 1 other language
    assert fam.verdict.iloc[0] == "holds"
    # the difference is that of the seed-averaged macro (per pool, then over pools) measure
    per = {r: pd.concat([pd.read_csv(f).assign(seed=s) for s, f in run_files(tmp_path, "A", r).items()]) for r in ["h", "m"]}
    mac = lambda d: d[d.setting == "mono"].groupby(["seed", "q_lang", "c_lang"]).ap.mean().groupby("seed").mean().mean()
    assert fam["diff"].iloc[0] == pytest.approx(mac(per["h"]) - mac(per["m"]))
    assert compare_rows(tmp_path, "A", pairs=[("h", "m")], measures=measures[:1], n_boot=300).equals(
        compare_rows(tmp_path, "A", pairs=[("h", "m")], measures=measures[:1], n_boot=300))
    assert compare_rows(tmp_path, "A", pairs=[("h", "m")], measures=measures[:1]).n_boot[0] == 2000


def test_compare_rows_errors(tmp_path):
    write_tree(tmp_path, np.random.default_rng(1))
    with pytest.raises(ConfigError, match="no runs of row 'x'"): compare_rows(tmp_path, "A", pairs=[("h", "x")], n_boot=1000)
    with pytest.raises(ConfigError, match="no runs of row 'h'"): compare_rows(tmp_path, "B", pairs=[("h", "m")], n_boot=1000)
    with pytest.raises(ConfigError, match="setting 'bilingual'"):
        compare_rows(tmp_path, "A", pairs=[("h", "m")], measures=[("bilingual", "map")], n_boot=1000)
    with pytest.raises(ConfigError, match="column 'max_rank'"):
        compare_rows(tmp_path, "A", pairs=[("h", "m")], measures=[("multi", "max_rank")], n_boot=1000)
    with pytest.raises(ConfigError, match="at least one pair"): compare_rows(tmp_path, "A", pairs=[], n_boot=100)
    # 8 claims: the smallest Holm p of 300 replicates is 8 x 2/301 > 0.05, so no claim could ever hold
    with pytest.raises(ConfigError, match="use n_boot >= 320"): compare_rows(tmp_path, "A", pairs=[("h", "m"), ("h", "m")], n_boot=300)
    assert compare_rows(tmp_path, "A", pairs=[("h", "m")] * 15, measures=[("mono", "map")] * 4).n_boot[0] == 12000  # family of 60


def test_cluster_ids():
    assert cluster_ids(pd.Series(["de:56be", "en:56be", "zh:a:b"]), pd.Series(["de", "en", "zh"])).tolist() == ["56be", "56be", "a:b"]
    with pytest.raises(ConfigError, match="not '<q_lang>:<xling_id>'"): cluster_ids(pd.Series(["de:1"]), pd.Series(["en"]))
    assert cluster_ids(pd.Series(["a", "b"]), None, clusters={"a": "x", "b": "x"}).tolist() == ["x", "x"]
    with pytest.raises(ConfigError, match="missing from the clusters map"): cluster_ids(pd.Series(["c"]), None, clusters={"a": "x"})


def test_qid_is_lang_and_xling_id():
    "The data module's qids are '<lang>:<xling_id>', which is what `cluster_ids` relies on."
    from hybrid_mlir.data import load_lareqa
    try: q = load_lareqa("xquad-r", langs=["en", "de"]).questions
    except Exception as e: pytest.skip(f"XQuAD-R not available here: {e}")
    assert (cluster_ids(q.qid, q.lang) == q.xling_id.to_numpy()).all()


@pytest.mark.skipif(not (RESULTS / "A" / "hybrid-0.5-s0" / "eval" / "per_query.csv.gz").exists(), reason="no committed runs")
def test_committed_protocol_a_matches_seed_differences():
    "On the committed runs the differences are the project's own seed-averaged summary differences."
    fam = compare_rows(RESULTS, "A", pairs=[("hybrid-0.5", "x-x-mono")], measures=[("cross", "map"), ("multi", "rank_distance")], n_boot=100)
    sd = pd.read_csv(RESULTS / "seed_differences.csv").query("protocol == 'A' and against == 'x-x-mono'")
    want = sd.set_index(sd.setting + " " + sd.metric)["diff"]
    assert fam.set_index("measure")["diff"].to_dict() == pytest.approx(want[fam.measure].to_dict())
    assert (fam.n_clusters == 1190).all() and fam.n_units.tolist() == [130900, 13090]
