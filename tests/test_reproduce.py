"""The reproduction grid at smoke scale: runs, resumption, tables, significance, figures, CLI."""
import json, subprocess, sys
import numpy as np, pandas as pd, pytest
import torch
from hybrid_mlir.core import ConfigError
from hybrid_mlir.reproduce import (reproduce, collect, table1, table2, per_language, significance, alpha_table,
                                   paired_test, row_strategy, plan, seed_differences, claims, PRESETS, Preset)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("r") / "results"
    info = reproduce("smoke", out=out)
    return out, info


@pytest.mark.slow  # fixture smoke: the 7-run smoke grid (~50 s CPU)
def test_grid_and_tables(smoke):
    out, info = smoke
    assert len(info["jobs"]) == 1 + 3 * 2  # base once, three trained rows x two seeds
    runs = collect(out)
    assert set(runs.row) == {"base", "x-x-mono", "x-y", "hybrid-0.5"} and set(runs.setting) == {"mono", "cross", "multi"}
    assert runs[runs.row != "base"].steps.eq(3).all()
    t1 = table1(runs)
    assert list(t1.row) == ["base", "x-x-mono", "x-y", "hybrid-0.5"]
    # table values are the means over seeds of the runs' own summaries
    for r in t1.to_dict("records"):
        for s in ["mono", "cross", "multi"]:
            want = runs[(runs.row == r["row"]) & (runs.setting == s)]["map"].mean()
            assert r[s] == pytest.approx(want)
    assert t1.set_index("row").loc["hybrid-0.5", "mono_std"] >= 0
    t2 = table2(runs); assert (t2.rank_distance >= 0).all()
    pl = per_language(out)
    from hybrid_mlir.data import LAREQA_LANGS
    assert set(pl.q_lang) == set(LAREQA_LANGS["xquad-r"])  # protocol A evaluates on all 11 XQuAD-R languages
    for f in ["table1_map.csv", "table2_rank_distance.csv", "tables3_8_per_language.csv", "significance.csv", "alpha_grid.csv", "runs.csv", "claims.csv"]:
        assert (out / f).exists(), f
    assert {p.name for p in (out / "figures").glob("*.png")} == {"alpha.png", "cross_heatmap_A.png", "per_language_A.png", "training_A.png"}
    # each run keeps its config, log and evaluation; the checkpoints are dropped to save disk
    d = out / "A" / "hybrid-0.5-s1"
    assert (d / "config.json").exists() and (d / "train_log.jsonl").exists() and (d / "eval/per_query.csv.gz").exists()
    assert json.loads((d / "config.json").read_text())["seed"] == 1
    at = alpha_table(runs); assert sorted(at.alpha.unique()) == [0.0, 0.5, 1.0]


@pytest.mark.slow  # fixture smoke: the 7-run smoke grid (~50 s CPU)
def test_resumes_without_rerunning(smoke):
    out, _ = smoke
    before = {p: p.stat().st_mtime for p in out.glob("A/*/result.json")}
    record = (out / "reproduce_smoke.json").read_text()
    info = reproduce("smoke", out=out, tables=False)
    assert (out / "reproduce_smoke.json").read_text() == record  # a call that ran nothing leaves the run record as it was
    assert all(j["status"] == "existing" for j in info["jobs"])   # nothing retrained (the mtimes below say so too)
    assert (info["finished"], info["total"], info["remaining"]) == (7, 7, [])
    assert before == {p: p.stat().st_mtime for p in out.glob("A/*/result.json")}


@pytest.mark.slow  # fixture smoke: the 7-run smoke grid (~50 s CPU)
def test_significance_pairs_queries(smoke):
    out, _ = smoke
    sig = significance(out)
    assert set(sig.against) == {"base", "x-x-mono", "x-y"}
    m = sig[(sig.against == "x-x-mono") & (sig.setting == "multi") & (sig.metric == "map")].iloc[0]
    # recompute: per-query AP averaged over seeds, paired by query
    def pq(row):
        fs = sorted(out.glob(f"A/{row}-s*/eval/per_query.csv.gz"))
        d = pd.concat([pd.read_csv(f) for f in fs]); d = d[d.setting == "multi"]
        return d.groupby("qid").ap.mean()
    h, b = pq("hybrid-0.5"), pq("x-x-mono")
    assert m["diff"] == pytest.approx((h - b.reindex(h.index)).mean()) and m["n"] == len(h)


def test_paired_test_calibration():
    rng = np.random.default_rng(3)
    ps = [paired_test(rng.normal(size=200), rng.normal(size=200), n=500, seed=i)["p"] for i in range(60)]
    assert np.mean(np.array(ps) < 0.05) <= 0.15  # under the null, about 5% false positives
    r = paired_test(np.ones(50) * .6, np.ones(50) * .5)
    assert r["diff"] == pytest.approx(.1) and r["p"] < .01
    with pytest.raises(ValueError): paired_test(np.ones(3), np.ones(4))


def test_rows_and_presets():
    assert row_strategy("mono") == row_strategy("x-x-mono") == ("x-x-mono", 1.0) and row_strategy("hybrid-0.75") == ("hybrid", .75)
    for bad in ["hybrid-x", "hybrid-1.5", "bogus"]:
        with pytest.raises(ConfigError): row_strategy(bad)
    assert PRESETS["default"].protocols == ("A",) and set(PRESETS["default"].rows) == {"base", "x-x-mono", "x-y", "hybrid-0.5"}
    full = PRESETS["full"]
    assert full.protocols == ("A", "B") and len(full.seeds) >= 3 and {"x-x", "hybrid-0.25", "hybrid-0.75"} <= set(full.rows)
    with pytest.raises(ConfigError, match="unknown preset"): reproduce("nope")


def test_cli_errors(tmp_path):
    r = subprocess.run([sys.executable, "-m", "hybrid_mlir.cli", "reproduce", "--preset", "huge", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and not (tmp_path / "x").exists()


def test_plan_order_and_subsets():
    full = PRESETS["full"]; jobs = plan(full)
    assert len(jobs) == len(set(jobs)) == 2 * (1 + 6 * 3)
    # seed by seed: every protocol and row at seed 0 comes before any run at seed 1
    first1 = next(i for i, j in enumerate(jobs) if j[2] == 1)
    assert {j for j in jobs[:first1]} == {(pr, r, 0) for pr in "AB" for r in full.rows}
    sub = plan(full, protocols=["B"], rows=["base", "cross"], seeds=[0, 2])  # the older row name is an alias
    assert sub == [("B", "base", 0), ("B", "x-y", 0), ("B", "x-y", 2)]
    for kw, msg in [(dict(protocols=["C"]), "protocol 'C'"), (dict(rows=["hybrid-0.3"]), "row 'hybrid-0.3'"), (dict(seeds=[5]), "seed 5")]:
        with pytest.raises(ConfigError, match=msg): plan(full, **kw)
    with pytest.raises(ConfigError, match="max_minutes"): reproduce("smoke", max_minutes=-1)


@pytest.mark.slow  # two smoke-grid runs (~9 s CPU)
def test_subset_and_budget(tmp_path):
    out = tmp_path / "results"
    info = reproduce("smoke", out=out, rows=["base", "cross"], seeds=[1])
    assert [(j["row"], j["seed"], j["status"]) for j in info["jobs"]] == [("base", 0, "ran"), ("x-y", 1, "ran")]
    assert sorted(d.name for d in (out / "A").iterdir()) == ["base", "x-y-s1"]
    assert (info["finished"], info["total"]) == (2, 7) and len(info["remaining"]) == 5
    saved = json.loads((out / "reproduce_smoke.json").read_text())
    assert saved["remaining"] == info["remaining"] and saved["selection"]["seeds"] == [1]
    assert set(collect(out).row) == {"base", "x-y"}  # tables from what has finished
    info = reproduce("smoke", out=out, tables=False, max_minutes=0)  # a spent budget starts nothing
    assert [j["status"] for j in info["jobs"]] == ["existing"] + ["not started"] * 4 + ["existing", "not started"]
    assert sorted(d.name for d in (out / "A").iterdir()) == ["base", "x-y-s1"]


@pytest.mark.slow  # five `python -m hybrid_mlir.cli` processes (~15 s CPU)
def test_cli_subset(tmp_path):
    cli = [sys.executable, "-m", "hybrid_mlir.cli", "reproduce", "--preset", "smoke", "--out", str(tmp_path / "r")]
    r = subprocess.run(cli + ["--seeds", "9"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "seed 9 is not in preset 'smoke'" in r.stderr
    for bad in [["--seeds", "x"], ["--max-minutes", "-5"], ["--max-minutes", "nan"]]:
        r = subprocess.run(cli + bad, capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, bad
    r = subprocess.run(cli + ["--max-minutes", "0"], capture_output=True, text=True)
    assert r.returncode == 0 and "0 of 7 runs finished" in r.stdout and "A/x-x-mono-s1" in r.stdout
    assert not (tmp_path / "r" / "A").exists()


@pytest.mark.slow  # fixture smoke: the 7-run smoke grid (~50 s CPU)
def test_seed_differences(smoke):
    out, _ = smoke
    runs = collect(out); sd = seed_differences(runs)
    assert set(sd.against) == {"x-x-mono", "x-y"} and (sd.seeds == 2).all()  # smoke: seeds 0 and 1, no X-X row
    m = sd[(sd.against == "x-y") & (sd.setting == "multi") & (sd.metric == "map")].iloc[0]
    h = runs[(runs.row == "hybrid-0.5") & (runs.setting == "multi")].set_index("seed")["map"]
    b = runs[(runs.row == "x-y") & (runs.setting == "multi")].set_index("seed")["map"]
    d = (h - b).to_numpy()
    assert m["diff"] == pytest.approx(d.mean()) and m["std"] == pytest.approx(d.std(ddof=1))
    assert m["min"] == pytest.approx(d.min()) and m["same_sign"] == bool((np.sign(d) == np.sign(d.mean())).all())
    assert pd.read_csv(out / "seed_differences.csv").shape == sd.shape


@pytest.mark.slow  # fixture smoke: the 7-run smoke grid (~50 s CPU)
def test_claims(smoke):
    "Each of the paper's eight comparisons, verdict read off the seeds by hand; the paper's own difference beside it."
    out, _ = smoke
    runs = collect(out); c = claims(runs)
    assert len(c) == 8 and set(c.against) == {"x-x-mono", "x-y"} and set(c.data) == {"xquad-r"}  # protocol A evaluates XQuAD-R
    for r in c.to_dict("records"):
        h = runs[(runs.row == "hybrid-0.5") & (runs.setting == r["setting"])].set_index("seed")[r["metric"]]
        b = runs[(runs.row == r["against"]) & (runs.setting == r["setting"])].set_index("seed")[r["metric"]]
        g = (h - b).to_numpy() * (1 if r["metric"] == "map" else -1)  # positive: Hybrid better
        assert r["better"] == pytest.approx(g.mean()) and r["seeds"] == 2
        assert r["verdict"] == ("holds" if (g >= 0).all() else "fails" if (g < 0).all() else "split")
    m = c[(c.setting == "mono") & (c.against == "x-x-mono")].iloc[0]
    assert m["paper_xlmr"] == pytest.approx(.798 - .792) and m["paper_labse"] == pytest.approx(.817 - .808)
    rd = c[(c.metric == "rank_distance") & (c.against == "x-y")].iloc[0]
    assert rd["paper_xlmr"] == pytest.approx(286.6 - 295.4)
    assert pd.read_csv(out / "claims.csv").shape == c.shape
    assert claims(runs[runs.row != "hybrid-0.5"]).empty  # nothing to compare: an empty table, not an error


# --- recomputation and comparison with committed results (issue 18) ---
from hybrid_mlir.reproduce import (compare_runs, check_verdict, tolerance, run_folder, precision_training, PRECISION_TOL,
                                   SAME_PRECISION_TOL)


def _copy_runs(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


@pytest.mark.slow  # fixture smoke: the 7-run smoke grid (~50 s CPU)
def test_compare_identical_runs(smoke, tmp_path):
    out, _ = smoke
    chk = compare_runs(out, _copy_runs(out, tmp_path / "c"), "smoke")
    # every run of the preset x settings x metrics; rank distance only where it exists (multi)
    assert len(chk) == 7 * (3 * 3 + 1)
    assert chk.within_tolerance.all() and (chk["diff"] == 0).all()
    assert set(chk.metric) == {"map", "recall", "map@20", "rank_distance"}
    assert check_verdict(chk).startswith("REPRODUCED: all 70")


@pytest.mark.slow  # fixture smoke: the 7-run smoke grid (~50 s CPU)
def test_compare_flags_a_changed_number(smoke, tmp_path):
    out, _ = smoke
    com = _copy_runs(out, tmp_path / "c")
    f = com / "A" / "hybrid-0.5-s1" / "eval" / "summary.csv"
    s = pd.read_csv(f); s.loc[s.setting == "multi", "map"] += 0.01; s.to_csv(f, index=False)
    chk = compare_runs(out, com, "smoke")
    bad = chk[~chk.within_tolerance]
    assert list(zip(bad.row, bad.seed, bad.setting, bad.metric)) == [("hybrid-0.5", 1, "multi", "map")]
    assert bad["diff"].iloc[0] == pytest.approx(-0.01)
    v = check_verdict(chk)
    assert v.startswith("NOT REPRODUCED: 1 of 70") and "hybrid-0.5 multi map" in v


@pytest.mark.slow  # fixture smoke: the 7-run smoke grid (~50 s CPU)
def test_compare_refuses_other_settings(smoke, tmp_path):
    out, _ = smoke
    com = _copy_runs(out, tmp_path / "c")
    f = com / "A" / "x-y-s0" / "config.json"
    c = json.loads(f.read_text()); c["max_steps"] = 30; f.write_text(json.dumps(c))
    from hybrid_mlir.core import HybridMlirError
    with pytest.raises(HybridMlirError, match="max_steps 30 vs 3"): compare_runs(out, com, "smoke")


def test_tolerance_rules():
    # same precision: deterministic pipeline, only summation order may differ
    assert tolerance("map", 0.5, True) == pytest.approx(SAME_PRECISION_TOL, rel=1e-3)
    assert tolerance("rank_distance", 400.0, True) == pytest.approx(400 * SAME_PRECISION_TOL, rel=1e-3)
    # across precisions: the precision check's tolerance, widened to 2 x the seed std of the committed runs
    assert tolerance("map", 0.5, False) == PRECISION_TOL["map"]
    assert tolerance("map", 0.5, False, seed_std=0.004) == pytest.approx(0.008)
    assert tolerance("map", 0.5, False, seed_std=0.0005) == PRECISION_TOL["map"]
    assert tolerance("rank_distance", 400.0, False) == pytest.approx(4.0)
    assert tolerance("rank_distance", 400.0, False, seed_std=5.0) == pytest.approx(10.0)



def test_committed_main_job_compares(tmp_path):
    "The committed main-job runs load under the paper's row names; a rerun whose config says x-y matches one that says cross."
    import shutil
    from pathlib import Path
    committed = Path(__file__).resolve().parents[1] / "results"
    if not (committed / "A" / "x-y-s0" / "result.json").exists(): pytest.skip("no committed runs")
    for run in ["base", "x-x-mono-s0", "x-y-s0", "hybrid-0.5-s0"]: shutil.copytree(committed / "A" / run, tmp_path / "A" / run)
    f = tmp_path / "A" / "x-y-s0" / "config.json"
    c = json.loads(f.read_text()); assert c["strategy"] == "cross"; c["strategy"] = "x-y"; f.write_text(json.dumps(c))
    chk = compare_runs(tmp_path, committed, "default")
    assert len(chk) == 40 and (chk["diff"] == 0).all() and check_verdict(chk).startswith("REPRODUCED")

@pytest.mark.slow  # fixture smoke: the 7-run smoke grid (~50 s CPU)
def test_run_folder_and_reuse(smoke, tmp_path):
    out, _ = smoke
    a = run_folder("default", root=tmp_path)
    assert a.parent == tmp_path and a.name.startswith("default-2")
    assert run_folder("default", out="x/y") == __import__("pathlib").Path("x/y")
    (tmp_path / "default-20260101-000000").mkdir(); (tmp_path / "default-20260102-000000").mkdir()
    assert run_folder("default", reuse=True, root=tmp_path).name == "default-20260102-000000"
    # a folder with finished runs is only continued when reuse is asked for
    with pytest.raises(ConfigError, match="already holds 7 finished run"): reproduce("smoke", out=out, tables=False, reuse=False)


@pytest.mark.slow  # fixture smoke: the 7-run smoke grid (~50 s CPU)
def test_precision_training_table(smoke, tmp_path):
    out, _ = smoke
    fp, bf = tmp_path / "fp" / "A" / "hybrid-0.5-s0", tmp_path / "bf" / "A" / "hybrid-0.5-s0"
    for d, prec in ((fp, "fp32"), (bf, "bf16")):
        _copy_runs(out / "A" / "hybrid-0.5-s0", d)
        r = json.loads((d / "result.json").read_text()); r["precision"] = prec; (d / "result.json").write_text(json.dumps(r))
    t = precision_training(fp, bf, committed=out)
    assert (t["diff"] == 0).all() and t.within_seed_spread.all() and set(t.n_seeds) == {2}
    m = t[(t.setting == "multi") & (t.metric == "map")].iloc[0]
    runs = collect(out); want = runs[(runs.row == "hybrid-0.5") & (runs.setting == "multi")]["map"].std(ddof=1)
    assert m.seeds_std == pytest.approx(want)
    with pytest.raises(ConfigError, match="expected an fp32 and a bf16 run"): precision_training(bf, fp, committed=out)


@pytest.mark.slow  # fixture smoke: the 7-run smoke grid (~50 s CPU)
def test_cli_reproduce_compares(smoke, tmp_path):
    out, _ = smoke
    com = _copy_runs(out, tmp_path / "c")
    (com / "reproduce_smoke.json").write_text("{}")
    r = subprocess.run([sys.executable, "-m", "hybrid_mlir.cli", "reproduce", "--preset", "smoke", "--out", str(out), "--reuse",
                        "--compare", str(com)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "REPRODUCED: all 70 numbers within tolerance" in r.stdout
    assert (out / "reproduce_check.csv").exists()
    r = subprocess.run([sys.executable, "-m", "hybrid_mlir.cli", "reproduce", "--preset", "smoke", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--reuse" in r.stderr


@pytest.mark.slow  # the 6-run converged-smoke grid (~45 s CPU)
def test_converged_smoke_grid(tmp_path):
    "The converged preset's machinery on a tiny model: patience, exact alpha, the +jsd row, interpolation, bilingual results."
    from safetensors.torch import load_file
    out = tmp_path / "c"
    info = reproduce("converged-smoke", out=out, tables=False)
    assert info["finished"] == info["total"] == 6
    for row in ("x-x-mono", "x-y", "hybrid-0.5", "hybrid-0.5+jsd"):
        r = json.loads((out / "A" / f"{row}-s0" / "result.json").read_text())
        assert r["stopped"] in ("patience", "max_epochs") and 1 <= r["best_step"] <= r["steps"] and r["val_metric"] == "map"
        assert r["precision"] in ("fp32", "bf16")
        s = pd.read_csv(out / "A" / f"{row}-s0" / "eval" / "summary.csv")
        assert list(s.setting) == ["mono", "cross", "multi", "bilingual"] and s.max_rank.notna().sum() == 1
    h = json.loads((out / "A" / "hybrid-0.5-s0" / "result.json").read_text())
    # 9 batches an epoch here: exactly round(0.5 x 9) = 4 X-X-mono batches per whole epoch, the rest of a cut epoch in between
    assert abs(h["realised_alpha"] - 0.5) <= 1 / 9 + 1e-9
    cfg = json.loads((out / "A" / "hybrid-0.5+jsd-s0" / "config.json").read_text())
    assert (cfg["align"], cfg["align_weight"], cfg["false_negative_mask"], cfg["exact_alpha"]) == ("jsd", 0.2, True, True)
    assert any("parallel" in json.loads(l) for l in (out / "A" / "hybrid-0.5+jsd-s0" / "train_log.jsonl").read_text().splitlines())
    # interpolation: exactly the average of the same seed's X-X-mono and X-Y weights, evaluated like the others
    w = {r: load_file(out / "A" / f"{r}-s0" / "best" / "model.safetensors") for r in ("x-x-mono", "x-y", "interpolation")}
    for k, v in w["interpolation"].items():
        assert torch.allclose(v, (w["x-x-mono"][k] + w["x-y"][k]) / 2, atol=1e-6), k
    r = json.loads((out / "A" / "interpolation-s0" / "result.json").read_text())
    assert r["steps"] == 0 and len(r["parents"]) == 2
    assert (out / "A" / "interpolation-s0" / "eval" / "per_query.csv.gz").exists()


def test_interpolation_needs_its_parents(tmp_path):
    from hybrid_mlir.reproduce import run_interpolation
    from hybrid_mlir.core import HybridMlirError
    with pytest.raises(HybridMlirError, match="same sitting"): run_interpolation("A", 0, PRESETS["converged-smoke"], tmp_path)


def test_converged_plan():
    jobs = plan(PRESETS["converged"])
    assert len([j for j in jobs if j[0] == "A" and j[1] == "hybrid-0.5"]) == 5 and len([j for j in jobs if j[0] == "B" and j[1] == "hybrid-0.5"]) == 3
    # a seed's x-x-mono and x-y come before its interpolation (it needs their weights)
    a0 = [r for pr, r, s in jobs if pr == "A" and s == 0]
    assert a0.index("interpolation") > max(a0.index("x-x-mono"), a0.index("x-y"))
    assert PRESETS["converged"].extras_of("A") == ("mkqa-xquad",) and PRESETS["converged"].extras_of("B") == ()  # B trains on XQuAD-R


def test_interpolation_without_parents_is_skipped_not_fatal(tmp_path, caplog):
    "A sitting that lacks a seed's x-x-mono / x-y weights skips that interpolation, says why, and goes on."
    import logging
    from hybrid_mlir.reproduce import reproduce
    with caplog.at_level(logging.WARNING, logger="hybrid_mlir"):
        info = reproduce("converged-smoke", out=tmp_path/"r", rows=["interpolation"], tables=False)
    (job,) = info["jobs"]
    assert job["status"] == "skipped" and "interpolation needs the weights" in job["reason"]
    assert "skipped" in caplog.text and info["finished"] == 0


@pytest.mark.slow  # fixture smoke: the 7-run smoke grid (~50 s CPU)
def test_figures_skip_a_run_still_training(smoke, tmp_path):
    "A Hybrid folder still training (no result.json, no eval/ yet) sorts first but is not drawn: the heatmap uses a finished run."
    import shutil
    from hybrid_mlir.figures import write_figures
    out = tmp_path/"busy"; shutil.copytree(smoke[0], out)
    busy = out/"A"/"hybrid-0.5-s0"; (busy/"result.json").unlink(); shutil.rmtree(busy/"eval")
    written = write_figures(out)
    assert "cross_heatmap_A.png" in written and (out/"figures"/"cross_heatmap_A.png").stat().st_size > 0


@pytest.mark.slow  # fixture smoke: the 7-run smoke grid (~50 s CPU)
def test_folders_under_older_row_names_are_kept(smoke, tmp_path):
    "Finished runs in folders named before the paper's words (mono-s0, cross-s1) are renamed and kept, not retrained."
    import shutil
    out = tmp_path/"old"; shutil.copytree(smoke[0], out)
    (out/"A"/"x-x-mono-s0").rename(out/"A"/"mono-s0"); (out/"A"/"x-y-s1").rename(out/"A"/"cross-s1")
    info = reproduce("smoke", out=out, tables=False)
    assert all(j["status"] == "existing" for j in info["jobs"]) and info["finished"] == 7
    assert {d.name for d in (out/"A").iterdir()} == {d.name for d in (smoke[0]/"A").iterdir()}


def test_compare_refuses_runs_on_other_data():
    "Two committed runs that differ only in their training and evaluation sets (protocols A and B) are not the same experiment."
    from pathlib import Path
    from hybrid_mlir.core import HybridMlirError
    from hybrid_mlir.tables import _same_experiment
    root = Path(__file__).parents[1]/"results"
    with pytest.raises(HybridMlirError, match="train_sets .*eval_set"): _same_experiment(root/"A"/"x-y-s0", root/"B"/"x-y-s0", PRESETS["full"])
    _same_experiment(root/"A"/"x-y-s0", root/"A"/"x-y-s0", PRESETS["full"])   # itself: no error
