"The converged grid's tables: run facts, row intervals, the comparison family and its verdicts, the figures."
import json, logging
from pathlib import Path
import numpy as np, pandas as pd, pytest
from hybrid_mlir.core import ConfigError
from hybrid_mlir.grid import row_strategy
from hybrid_mlir.converged import (run_folders, synthetic_grid, run_facts, RunFiles, row_interval, row_table, significance,
                                   write_converged, format_table, MEASURES, PAIRS, validation_curves, same_step_gain, replay_patience,
                                   plot_validation_curves)

ROOT = Path(__file__).resolve().parents[1]/"results"/"converged"

@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    return synthetic_grid(tmp_path_factory.mktemp("g")/"converged", {"base": 0.0, "x-x-mono": 0.0, "x-y": 0.0, "hybrid-0.5": 0.1,
                                                                    "interpolation": 0.0})

def test_run_folders_skip_unfinished(grid, tmp_path):
    (grid/"A"/"x-y-s9").mkdir()  # a run that never finished: no result.json
    f = run_folders(grid, "A")
    assert "x-y-s9" not in {p.name for p in f.folder} and len(f) == 1 + 4 * 3
    assert run_folders(tmp_path, "A").empty

def test_run_facts_selection_and_alpha(grid):
    f = run_facts(grid, "A").set_index(["row", "seed"])
    assert f.loc[("base", 0), "steps"] == 0 and pd.isna(f.loc[("base", 0), "selected"])
    assert f.loc[("hybrid-0.5", 0), "selected"]  # best step 30 of 40 steps
    assert f.loc[("hybrid-0.5", 1), "stopped"] == "patience"
    assert f.loc[("hybrid-0.5", 0), "realised_alpha"] == 0.5 and f.loc[("hybrid-0.5", 0), "train_min"] == 10.0

def test_row_interval_is_the_macro_mean(grid):
    rf = RunFiles(grid, "A")
    fr = rf.frame("x-y", "eval", "cross", "map")
    iv = row_interval(fr, n_boot=300)
    direct = fr.groupby(["seed", "pool"]).value.mean().groupby(level=0).mean()  # macro over pools, per seed
    assert iv["mean"] == pytest.approx(direct.mean(), abs=1e-12)
    assert iv["seed_std"] == pytest.approx(direct.std(ddof=1), abs=1e-12)
    assert iv["ci_low"] < iv["mean"] < iv["ci_high"] and iv["n_seeds"] == 3
    base = row_interval(rf.frame("base", "eval", "mono", "map"), n_boot=300)
    assert base["n_seeds"] == 1 and np.isnan(base["seed_std"])

def test_significance_family_holm_and_verdicts(grid):
    s = significance(grid, "A", measures=MEASURES[:3], n_boot=500)
    assert set(s.comparison) == {"hybrid-0.5 vs x-x-mono", "hybrid-0.5 vs x-y", "hybrid-0.5 vs interpolation"}
    assert len(s) == 9 and (s.p_holm >= s.p).all()
    assert (s.verdict == "holds").all() and (s["diff"] > 0.05).all()  # the fake Hybrid is 0.1 better
    null = significance(grid, "A", pairs=[("x-y", "x-x-mono")], measures=MEASURES[:3], n_boot=500)
    assert (null.verdict == "inconclusive").all()  # no true difference: no verdict

def test_lower_is_better_direction_and_nboot_floor(grid):
    s = significance(grid, "A", pairs=[("hybrid-0.5", "x-y")], measures=[MEASURES[4]], n_boot=500)  # multi rank distance
    assert s.measure.iloc[0] == "multi rank_distance" and s["diff"].iloc[0] < 0 and s.verdict.iloc[0] == "holds"
    with pytest.raises(ConfigError, match="cannot reach a Holm p"):
        significance(grid, "A", measures=MEASURES[:5], n_boot=200)  # 15 comparisons: the smallest Holm p is 15 x 2/201

def test_single_seed_gets_no_verdict(tmp_path):
    g = synthetic_grid(tmp_path/"c", {"x-y": 0.0, "hybrid-0.5": 0.3}, seeds=(0,))
    s = significance(g, "A", measures=MEASURES[:2], n_boot=300)
    assert (s.verdict == "inconclusive").all() and s.note.str.contains("fewer than 2 seeds").all()

def test_missing_measures_are_logged_not_silent(grid, caplog):
    with caplog.at_level(logging.INFO, logger="hybrid_mlir"):
        t = row_table(grid, "A", measures=MEASURES, n_boot=200)
    assert "bilingual max_rank" in caplog.text  # the fake grid has no bilingual pools
    assert "bilingual map" not in set(t.measure) and "alignment recall@1" in set(t.measure)

def test_write_converged_and_errors(grid, tmp_path):
    paths = write_converged(grid, protocols=("A", "B"), n_boot=300)
    for k in ("runs", "rows", "significance", "alignment_A"): assert Path(paths[k]).exists()
    sig = pd.read_csv(paths["significance"])
    assert list(sig.columns[:9]) == ["protocol", "comparison", "measure", "diff", "ci_low", "ci_high", "p", "p_holm", "verdict"]
    w = format_table(pd.read_csv(paths["rows"]), measures=("mono map",))
    assert w.loc[w.row == "hybrid-0.5", "mono map"].iloc[0].endswith("(3)")
    with pytest.raises(ConfigError, match="no finished converged runs"): write_converged(tmp_path)
    with pytest.raises(ConfigError, match="no finished runs of row"): RunFiles(grid, "A").raw("x-x", "eval")

def _log(folder, vals, stale_step=None):
    "A train log with validation records; `stale_step`: that step is logged first with val_map 0 (a run resumed from before it)."
    recs = [dict(step=17 * (i + 1), val_map=v, val_map_mono=v, val_map_cross=v, val_map_multi=v) for i, v in enumerate(vals)]
    if stale_step is not None: recs.insert(0, dict(step=stale_step, val_map=0.0))
    (folder/"train_log.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")

def test_same_step_gain_pairs_seeds_and_reads_resumed_logs(tmp_path):
    g = synthetic_grid(tmp_path/"converged", {"x-y": 0.0, "x-y+jsd": 0.0}, seeds=(0, 1))
    _log(g/"A"/"x-y-s0", [0.70, 0.75, 0.74, 0.73], stale_step=34); _log(g/"A"/"x-y+jsd-s0", [0.72, 0.74, 0.76, 0.74, 0.73])
    _log(g/"A"/"x-y-s1", [0.60, 0.61])  # x-y+jsd-s1 has no log: no pair for seed 1
    assert len(validation_curves(g, "A")) == 4 + 5 + 2
    s = same_step_gain(g, "A")
    assert s.pair.tolist() == ["x-y+jsd vs x-y"] and s.seed.tolist() == [0]
    r = s.iloc[0]
    assert (r.best_step_a, r.best_step_b, r.steps_a, r.steps_b) == (51, 34, 85, 68)
    assert r.gain_best == pytest.approx(0.01) and r.gain_at_best_b == pytest.approx(-0.01)
    assert r.gain_same_step == pytest.approx(np.mean([0.02, -0.01, 0.02, 0.01]))
    assert plot_validation_curves(g, "A", pairs=(("hybrid-0.5+jsd", "hybrid-0.5"),)) is None  # no such rows: no figure
    paths = write_converged(g, protocols=("A",), n_boot=200)
    assert Path(paths["validation_A"]).exists() and pd.read_csv(paths["same_step_gain"]).protocol.tolist() == ["A"]

def test_replay_patience_on_the_committed_runs():
    "The real thing: min_delta 0 gives back every committed patience stop and best step; 0.001 stops the JSD seed-0 run early."
    for pr in ("A", "B"):
        r = replay_patience(ROOT, pr, 0.0)
        for x in r.itertuples():
            res = json.loads((ROOT/pr/f"{x.row}-s{x.seed}"/"result.json").read_text())
            assert (x.best_step, x.best_step_replay) == (res["best_step"], res["best_step"])
            if res["stopped"] == "patience": assert x.stop_replay == res["steps"]
            else: assert pd.isna(x.stop_replay)  # ran to its cap: patience never fired
    strict = replay_patience(ROOT, "A", 0.001).set_index(["row", "seed"]).loc[("hybrid-0.5+jsd", 0)]
    assert (strict.stop_replay, strict.best_step_replay) == (136, 119) and strict.best_val_replay < strict.best_val

def test_committed_logs_give_same_step_gains():
    "The real thing: the committed JSD runs pair with the same seed's plain runs, and the gains agree with their logs."
    s = same_step_gain(ROOT, "A").set_index(["pair", "seed"])
    r = s.loc[("hybrid-0.5+jsd vs hybrid-0.5", 0)]
    res = [json.loads((ROOT/"A"/d/"result.json").read_text()) for d in ("hybrid-0.5+jsd-s0", "hybrid-0.5-s0")]
    assert (r.best_step_a, r.best_step_b) == (res[0]["best_step"], res[1]["best_step"])
    assert r.gain_best == pytest.approx(res[0]["best_val_map"] - res[1]["best_val_map"], abs=1e-6)

@pytest.mark.slow
def test_committed_converged_runs_reload():
    "The real thing: the committed converged runs give a table with every LAReQA measure and the comparisons present."
    assert (ROOT/"A").is_dir(), "results/converged/A is committed"
    t = row_table(ROOT, "A", measures=MEASURES[:5], n_boot=200)
    assert {"base", "x-x-mono"} <= set(t.row) and t["mean"].between(0, 2000).all()
    f = run_facts(ROOT, "A")
    trained = f[f.steps > 0]
    assert len(trained) and trained.precision.isin(["fp32", "bf16"]).all()  # auto: bf16 only where the CPU has it natively
    alpha = trained.row.map(lambda r: row_strategy(r)[1])
    assert ((trained.realised_alpha - alpha).abs() <= 0.05).all()  # exact alpha per epoch
