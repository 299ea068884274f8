"""The training stage: exact resume, NaN stop, run lock, damaged checkpoints, early stopping, logs, CLI, torchrun, real model."""
import json, os, shutil, signal, socket, subprocess, sys, dataclasses, math
from pathlib import Path
import pytest
import torch
from safetensors.torch import load_file
import hybrid_mlir.train as T
from hybrid_mlir.core import CheckpointError, ConfigError, HybridMlirError
from hybrid_mlir.cli import main
from hybrid_mlir.loss import InfoNCELoss
from hybrid_mlir.model import load_encoder, tiny_encoder
from hybrid_mlir.train import TrainConfig, train, TrainingDiverged, RunLockedError, load_checkpoint, verify_checkpoint

STEPS = 6   # with 54 training ids and batches of 12: 4 steps per epoch, so the runs cross an epoch boundary

def tiny_cfg(out, **kw):
    base = dict(model="tiny:0", train_sets=["mlqa-r"], n_ids=60, val_frac=0.1, batch_size=12, max_steps=STEPS, val_every=2,
                lr=1e-3, eval_set=None, out=str(out), progress=False, threads=1)
    return TrainConfig(**(base | kw))

def weights(run, name="checkpoint"): return load_file(Path(run)/name/"model.safetensors")
def log_records(run): return [json.loads(l) for l in (Path(run)/"train_log.jsonl").read_text().splitlines()]
def losses(run): return [(r["step"], r["loss"]) for r in log_records(run) if "loss" in r]
def same_weights(a, b): return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    "An uninterrupted 6-step run (checkpoints at steps 2, 4, 6)."
    out = tmp_path_factory.mktemp("ref")/"run"
    res = train(tiny_cfg(out))
    return out, res

def test_config_and_log_written(ref):
    out, res = ref
    cfg = json.loads((out/"config.json").read_text())
    assert {k: cfg[k] for k in tiny_cfg(out).validate().to_dict()} == tiny_cfg(out).validate().to_dict()
    assert {"date", "torch", "python"} <= set(cfg["run_info"]) and cfg["data"]["total_steps"] == STEPS
    recs = log_records(out)
    assert [r["step"] for r in recs] == list(range(1, STEPS + 1)) and [r["epoch"] for r in recs] == [0]*4 + [1]*2
    for r in recs: assert {"step", "loss", "lr", "pairs_per_s", "elapsed", "batch"} <= set(r) and math.isfinite(r["loss"])
    assert [r["step"] for r in recs if "val_loss" in r] == [2, 4, 6]
    # best/ is picked by the held-out pools' mAP (val_metric "map"); the English validation loss stays in the log
    assert res["best_val_map"] == max(r["val_map"] for r in recs if "val_map" in r)
    assert res["best_val_loss"] == next(r["val_loss"] for r in recs if r["step"] == res["best_step"])
    assert cfg["data"]["val_pools"]["mlqa-r"]["ids"] == 6 and res["val_metric"] == "map"
    assert all({"val_map_mono", "val_map_cross", "val_map_multi", "masked"} <= set(r) for r in recs if "val_loss" in r)
    assert json.loads((out/"result.json").read_text())["steps"] == STEPS
    assert verify_checkpoint(out/"checkpoint")["step"] == STEPS and verify_checkpoint(out/"checkpoint.prev")["step"] == 4
    assert not (out/T.LOCK).exists()
    state = torch.load(out/"checkpoint"/"state.pt", weights_only=True)   # the state is weights_only-loadable
    assert {"optimizer", "scheduler", "sampler", "rng"} <= set(state)
    load_encoder(out/"best")

@pytest.mark.slow  # three training runs (a Ctrl-C, a crash, two resumes); the fast loop keeps the damaged-checkpoint resumes
def test_resume_after_ctrl_c_and_crash_gives_identical_weights(ref, tmp_path):
    out = tmp_path/"run"
    def sigint_at_2(step, rec):   # a real Ctrl-C: the run finishes the next step, checkpoints it, raises KeyboardInterrupt
        if step == 2: os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(KeyboardInterrupt): train(tiny_cfg(out), callback=sigint_at_2)
    assert verify_checkpoint(out/"checkpoint")["step"] == 3 and not (out/T.LOCK).exists()
    def crash_at_5(step, rec):    # a crash: nothing is saved, the checkpoint of step 4 stays
        if step == 5: raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"): train(tiny_cfg(out, resume=True), callback=crash_at_5)
    assert verify_checkpoint(out/"checkpoint")["step"] == 4
    res = train(tiny_cfg(out, resume=True))
    assert res["steps"] == STEPS and res["resumed_from"].endswith("checkpoint")
    assert same_weights(weights(out), weights(ref[0]))
    assert same_weights(weights(out, "best"), weights(ref[0], "best"))
    assert losses(out) == losses(ref[0])   # the replayed steps were dropped from the log, then redone identically

def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    orig, calls = InfoNCELoss.forward, {"n": 0}
    def nan_on_4th_training_step(self, q, p, n=None, mask=None):
        loss = orig(self, q, p, n, mask=mask)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 4: return loss * float("nan")
        return loss
    monkeypatch.setattr(InfoNCELoss, "forward", nan_on_4th_training_step)
    out = tmp_path/"run"
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 4.*step 2"): train(tiny_cfg(out))
    assert verify_checkpoint(out/"checkpoint")["step"] == 2 and not (out/"checkpoint.prev").exists()
    assert [r["step"] for r in log_records(out)] == [1, 2, 3] and not (out/T.LOCK).exists()
    assert issubclass(TrainingDiverged, HybridMlirError)

def test_lock_refuses_second_run(tmp_path, capsys):
    out = tmp_path/"run"; out.mkdir()
    (out/T.LOCK).write_text(json.dumps(dict(pid=os.getpid(), host=socket.gethostname(), since="now")))
    with pytest.raises(RunLockedError, match="in use by another training run"): train(tiny_cfg(out))
    rc = main(["train", "--model", "tiny:0", "--eval", "none", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "in use by another training run" in err and err.count("\n") == 1
    assert (out/T.LOCK).exists() and not (out/"config.json").exists()   # the other run's lock is left alone

@pytest.mark.slow  # two resumed runs (~4 s CPU)
def test_corrupt_checkpoint_detected_and_previous_used(ref, tmp_path):
    out = tmp_path/"run"; shutil.copytree(ref[0], out)
    f = out/"checkpoint"/"model.safetensors"; b = bytearray(f.read_bytes()); b[-100] ^= 0xFF; f.write_bytes(bytes(b))
    with pytest.raises(CheckpointError, match="sha256"): verify_checkpoint(out/"checkpoint")
    res = train(tiny_cfg(out, resume=True))   # falls back to the step-4 checkpoint and redoes steps 5 and 6
    assert res["resumed_from"].endswith("checkpoint.prev") and res["steps"] == STEPS
    assert same_weights(weights(out), weights(ref[0])) and losses(out) == losses(ref[0])
    for name in ("checkpoint", "checkpoint.prev"):   # now damage both: a clear error, no training
        (out/name/"state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="no usable checkpoint"): train(tiny_cfg(out, resume=True))

def test_truncated_or_incomplete_checkpoint(ref, tmp_path):
    out = tmp_path/"ck"; shutil.copytree(ref[0]/"checkpoint", out)
    f = out/"state.pt"; f.write_bytes(f.read_bytes()[:-7])
    with pytest.raises(CheckpointError, match="size"): verify_checkpoint(out)
    (out/"manifest.json").unlink()
    with pytest.raises(CheckpointError, match="incomplete"): verify_checkpoint(out)

def test_early_stopping_keeps_best_step(tmp_path, monkeypatch):
    vals = iter([5.0, 4.0, 4.5, 4.2, 3.0, 2.0])
    monkeypatch.setattr(T, "validation_loss", lambda *a, **k: next(vals))
    enc, snaps = tiny_encoder(0), {}
    def snapshot(step, rec): snaps[step] = {k: v.detach().clone() for k, v in enc.model.state_dict().items()}
    out = tmp_path/"run"
    res = train(tiny_cfg(out, max_steps=10, val_every=1, patience=2, save_every=0, val_metric="loss"), encoder=enc, callback=snapshot)
    assert (res["stopped"], res["steps"], res["best_step"], res["best_val_loss"]) == ("patience", 4, 2, 4.0)
    best = load_encoder(out/"best").model.state_dict()
    assert same_weights({k: v for k, v in best.items()}, snaps[2]) and not same_weights(best, snaps[4])
    assert [r.get("val_loss") for r in log_records(out)] == [5.0, 4.0, 4.5, 4.2]

def test_new_run_refuses_existing_folder_and_resume_checks_config(ref):
    with pytest.raises(ConfigError, match="already holds a training run"): train(tiny_cfg(ref[0]))
    with pytest.raises(ConfigError, match="lr"): train(tiny_cfg(ref[0], resume=True, lr=1e-2))

@pytest.mark.parametrize("argv,msg", [
    (["--alpha", "1.5"], "alpha must be in [0, 1]"), (["--alpha", "x"], "alpha must be a number"),
    (["--strategy", "zigzag"], "invalid choice"), (["--batch-size", "0"], "positive integer"),
    (["--lr", "-1"], "lr must be"), (["--warmup", "1"], "warmup must be"), (["--train", "nowhere"], "neither a known set"),
    (["--patience", "2", "--val-every", "0"], "patience"), (["--loss-variant", "paper", "--no-hard-negatives"], "paper"),
    (["--min-delta", "0.01"], "set patience"), (["--min-delta", "-0.01", "--patience", "2"], "min_delta must be"),
])
def test_cli_errors_exit_2_before_work(argv, msg, tmp_path, capsys):
    out = tmp_path/"run"
    try: rc = main(["train", "--model", "tiny:0", "--out", str(out), *argv])
    except SystemExit as e: rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and err.count("\n") == 1 and err.startswith("hmlir: error:"), err
    assert not out.exists()

def test_cli_data_errors_exit_2(tmp_path, capsys):
    rc = main(["train", "--model", "tiny:0", "--langs", "en,xx", "--eval", "none", "--out", str(tmp_path/"r")])
    err = capsys.readouterr().err
    assert rc == 2 and "xx" in err and err.count("\n") == 1
    rc = main(["train", "--model", "tiny:0", "--n-ids", "60", "--batch-size", "64", "--eval", "none", "--out", str(tmp_path/"r2")])
    assert rc == 2 and "larger than" in capsys.readouterr().err

@pytest.mark.slow  # four `hmlir train` runs (~6 s CPU)
def test_cli_run(tmp_path, capsys):
    out = tmp_path/"run"
    argv = ["train", "--model", "tiny:0", "--strategy", "X-Y", "--n-ids", "60", "--val-frac", "0.1", "--batch-size", "4",
            "--max-steps", "2", "--val-every", "1", "--grad-cache-chunk", "2", "--eval", "none", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    assert "2 steps" in capsys.readouterr().out
    assert json.loads((out/"config.json").read_text())["strategy"] == "x-y"   # the paper's name, canonical
    assert {r["batch"] for r in log_records(out)} == {"x-y"}                  # the batch kind the log writes
    assert main(argv) == 2 and "--resume" in capsys.readouterr().err
    assert main(argv + ["--resume"]) == 0   # already complete: nothing to do
    assert main(argv + ["--resume", "--drop-checkpoints"]) == 0
    assert not (out/"checkpoint").exists() and not (out/"checkpoint.prev").exists() and (out/"best").exists()

@pytest.mark.slow  # torchrun: two processes
def test_torchrun_two_processes_match_one_process_on_the_global_batch(tmp_path):
    "2 ranks x batch 4 (gloo) = 1 process x batch 8: same batches, loss and gradient norm (all-gathered negatives, averaged grads)."
    common = ["--model", "tiny:0", "--n-ids", "60", "--val-frac", "0.1", "--max-steps", "2", "--val-every", "2", "--lr", "1e-3",
              "--dropout", "0", "--eval", "none", "--no-progress", "--threads", "1"]
    one = tmp_path/"one"
    assert main(["train", *common, "--batch-size", "8", "--out", str(one)]) == 0
    two = tmp_path/"two"
    hmlir = Path(sys.executable).parent/"hmlir"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(hmlir), "train", *common, "--batch-size", "4", "--out", str(two)],
                       capture_output=True, text=True, env=env, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    a, b = log_records(one), log_records(two)
    assert [r["step"] for r in b] == [1, 2] and json.loads((two/"config.json").read_text())["data"]["world_size"] == 2
    assert [r["batch"] for r in a] == [r["batch"] for r in b]
    assert a[0]["loss"] == pytest.approx(b[0]["loss"], rel=1e-5)
    assert a[0]["grad_norm"] == pytest.approx(b[0]["grad_norm"], rel=1e-4)
    assert a[1]["loss"] == pytest.approx(b[1]["loss"], rel=1e-3)
    assert a[1]["val_loss"] == pytest.approx(b[1]["val_loss"], rel=1e-3)
    assert verify_checkpoint(two/"checkpoint")["step"] == 2 and len(torch.load(two/"checkpoint"/"state.pt", weights_only=True)["rng"]) == 2

@pytest.mark.slow  # loads the real 470 MB offline model
def test_real_model_few_steps(tmp_path):
    "The real stage: multilingual-e5-small (offline build), batch 4, short inputs, 2 steps, best model saved and loadable."
    try: from hybrid_mlir.offline import build_offline_e5; build_offline_e5()
    except ConfigError as e: pytest.skip(f"offline model unavailable: {e}")
    out = tmp_path/"e5"
    cfg = TrainConfig(model="offline:multilingual-e5-small", train_sets=["mlqa-r"], n_ids=60, val_frac=0.1, batch_size=4, max_steps=2,
                      val_every=2, save_every=0, max_len_query=24, max_len_passage=48, eval_set=None, out=str(out), progress=False)
    res = train(cfg)
    recs = log_records(out)
    assert res["steps"] == 2 and all(math.isfinite(r["loss"]) for r in recs) and res["best_step"] == 2
    assert res["checkpoint"] is None and not (out/"checkpoint").exists()
    saved = json.loads((out/"best"/"hybrid_mlir.json").read_text())   # load_encoder(out/"best") is tested on the tiny model
    assert saved["max_len_query"] == 24 and (out/"best"/"model.safetensors").stat().st_size > 400e6

@pytest.mark.parametrize("chunk", [None, pytest.param(3, marks=pytest.mark.slow)])   # GradCache chunks: ~5 s CPU
def test_packed_forward_gives_the_same_loss_and_gradients(chunk):
    "Length-sorted groups (max_tokens) change only the padding: loss and every gradient as with one padded batch per list."
    import numpy as np
    from hybrid_mlir.data import load_lareqa, subsample, training_pairs
    rows = training_pairs(subsample(load_lareqa("mlqa-r"), 20, seed=1)).select(range(9)).to_dict()
    enc = tiny_encoder(3); lf = InfoNCELoss(0.05, gather=False)   # eval mode: no dropout, so the passes are comparable
    def grads(**kw):
        enc.zero_grad(); loss = T.batch_loss(enc, lf, rows["query"], rows["passage"], rows["negative"], chunk=chunk, **kw)
        return float(loss), torch.cat([p.grad.flatten() for p in enc.parameters()])
    l0, g0 = grads(max_tokens=0)
    for mt in (16, 64, 4096):
        l1, g1 = grads(max_tokens=mt)
        assert l1 == pytest.approx(l0, rel=1e-5) and torch.allclose(g1, g0, atol=1e-6, rtol=1e-4)

def test_max_tokens_config():
    assert TrainConfig(max_tokens=0).validate().max_tokens == 0
    with pytest.raises(ConfigError, match="max_tokens"): TrainConfig(max_tokens=-1).validate()


def test_precision_setting(tmp_path):
    "precision auto resolves to a concrete value that config.json and result.json record; old configs read as fp32."
    from hybrid_mlir.core import resolve_precision
    cfg = TrainConfig(out=str(tmp_path / "r")).validate()
    assert cfg.precision == resolve_precision("auto", "cuda" if torch.cuda.is_available() else "cpu")
    assert TrainConfig(precision="fp32", out="x").validate().precision == "fp32"
    assert TrainConfig(bf16=False, out="x").validate().precision == "fp32"  # the older switch
    with pytest.raises(ConfigError, match="precision must be one of"): TrainConfig(precision="fp16", out="x").validate()
    old = dict(TrainConfig(out="x").to_dict(), run_info={"cuda": None}); old.pop("precision"); old["bf16"] = True
    assert TrainConfig.from_dict(old).validate().precision == "fp32"  # saved before precisions existed: CPU runs were fp32
    old["run_info"] = {"cuda": "NVIDIA H100"}
    assert TrainConfig.from_dict(old).precision == "bf16"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_train_records_precision(tmp_path, precision):
    cfg = TrainConfig(model="tiny", train_sets=["mlqa-r"], eval_set=None, n_ids=12, batch_size=4, max_steps=2, val_every=2,
                      max_len_query=16, max_len_passage=24, progress=False, out=str(tmp_path / "r"), precision=precision)
    res = train(cfg)
    assert res["precision"] == precision
    assert json.loads((tmp_path / "r" / "config.json").read_text())["precision"] == precision
    assert json.loads((tmp_path / "r" / "result.json").read_text())["precision"] == precision
    log = [json.loads(l) for l in (tmp_path / "r" / "train_log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in log)


def test_bf16_autocast_keeps_fp32_weights_and_loss():
    enc = tiny_encoder(0)  # eval mode: no dropout, so the two precisions see the same network
    loss_fn = InfoNCELoss(0.05)
    q, p, n = ["a b c", "what is it", "x"], ["the answer is here", "no", "maybe this one"], ["neg one", "neg two", "neg three"]
    l16 = T.batch_loss(enc, loss_fn, q, p, n, bf16=True, backward=False)
    l32 = T.batch_loss(enc, loss_fn, q, p, n, bf16=False, backward=False)
    assert l16.dtype == torch.float32 and abs(float(l16) - float(l32)) < 0.05 * abs(float(l32)) + 1e-3
    assert all(p.dtype == torch.float32 for p in enc.parameters())


def test_validation_map_picks_best_and_patience_stops(tmp_path, monkeypatch):
    "val_metric 'map': the held-out pools' mAP (higher is better) picks best/ and drives patience."
    vals = iter([0.30, 0.35, 0.34, 0.33, 0.50])
    monkeypatch.setattr(T, "validation_map", lambda enc, pools: dict(val_map=next(vals)))
    out = tmp_path/"run"
    res = train(tiny_cfg(out, max_steps=10, val_every=1, patience=2, save_every=0))
    assert (res["stopped"], res["steps"], res["best_step"], res["best_val_map"]) == ("patience", 4, 2, 0.35)
    assert [r.get("best_val_map") for r in log_records(out)] == [0.30, 0.35, 0.35, 0.35]

def test_min_delta_patience_in_training(tmp_path, monkeypatch):
    "min_delta: gains below it are kept in best/ but do not reset patience, so the run stops where min_delta 0 goes on."
    seq = [0.30, 0.302, 0.304, 0.306, 0.308, 0.31]
    def run(min_delta, name):
        vals = iter(seq)
        monkeypatch.setattr(T, "validation_map", lambda enc, pools: dict(val_map=next(vals)))
        return train(tiny_cfg(tmp_path/name, max_steps=6, val_every=1, patience=2, save_every=0, min_delta=min_delta))
    strict, loose = run(0.005, "strict"), run(0.0, "loose")
    assert (strict["stopped"], strict["steps"], strict["best_step"], strict["best_val_map"]) == ("patience", 3, 3, 0.304)
    assert (loose["stopped"], loose["steps"], loose["best_step"], loose["best_val_map"]) == ("max_steps", 6, 6, 0.31)
    assert json.loads((tmp_path/"strict"/"config.json").read_text())["min_delta"] == 0.005


def test_validation_pools_hold_out_ids_in_every_language():
    from hybrid_mlir.data import load_lareqa, subsample
    cfg = tiny_cfg("x", n_ids=60, val_frac=0.1).validate()
    sets = T.training_sets(cfg); tr, va, info = T.training_data(cfg, sets)
    pools = T.held_out_pools(sets, tr)
    p = pools["mlqa-r"]; held = set(p.questions.xling_id)
    assert len(held) == 6 and not held & set(tr["xling_id"]) and set(va["xling_id"]) <= held
    assert set(p.questions.lang) == set(sets["mlqa-r"].langs)  # every training language, not English only
    assert all(set(x) <= held for x in p.candidates.xling_ids)
    r = T.validation_map(tiny_encoder(0), pools)
    assert set(r) == {"val_map", "val_map_mono", "val_map_cross", "val_map_multi"}
    assert r["val_map"] == pytest.approx((r["val_map_mono"] + r["val_map_cross"] + r["val_map_multi"]) / 3)


def test_warmup_starts_above_zero():
    p = torch.nn.Parameter(torch.zeros(1)); opt = torch.optim.SGD([p], lr=1.0)
    sched = T.linear_schedule(opt, 4, 10); lrs = []
    for _ in range(10): lrs.append(sched.get_last_lr()[0]); opt.step(); sched.step()
    assert lrs[:5] == [0.25, 0.5, 0.75, 1.0, 1.0] and lrs[-1] == pytest.approx(1 / 6)
    opt = torch.optim.SGD([p], lr=1.0); sched = T.linear_schedule(opt, 4, 10, from_zero=True)
    assert sched.get_last_lr()[0] == 0.0  # the 30-step presets' schedule


@pytest.mark.slow  # two 8-step runs (~5 s CPU)
def test_exact_alpha_and_keyed_streams_in_training(tmp_path):
    res = train(tiny_cfg(tmp_path/"a", max_steps=8, val_every=0, alpha=0.5))
    kinds = [r["batch"] for r in log_records(tmp_path/"a")]
    assert kinds[:4].count("x-x-mono") == 2 and kinds[4:].count("x-x-mono") == 2  # 4 batches an epoch: exactly 2 X-X-mono each
    assert res["realised_alpha"] == 0.5
    b = train(tiny_cfg(tmp_path/"b", max_steps=8, val_every=0, alpha=0.5, train_sets=["mlqa-r", "xquad-r"]))
    assert abs(b["realised_alpha"] - 0.5) <= 0.5 / 8 + 1e-9


@pytest.mark.slow  # two runs at batch 32 (~8 s CPU)
def test_false_negative_mask_in_training(tmp_path):
    "XQuAD-R: many questions share their answer sentence (or a paragraph whose other sentence is a row's negative): masked."
    kw = dict(train_sets=["xquad-r"], n_ids=240, batch_size=32, strategy="cross", max_steps=4, val_every=0)
    res = train(tiny_cfg(tmp_path/"m", **kw))
    recs = log_records(tmp_path/"m")
    assert all("masked" in r for r in recs) and sum(r["masked"] for r in recs) > 0
    assert res["masked_per_step"] == pytest.approx(sum(r["masked"] for r in recs) / 4)
    off = train(tiny_cfg(tmp_path/"o", false_negative_mask=False, **kw))
    assert all("masked" not in r for r in log_records(tmp_path/"o"))
    assert [r["loss"] for r in recs] != [r["loss"] for r in log_records(tmp_path/"o")]


def test_row_tables_and_parallel_queries():
    import numpy as np
    cfg = tiny_cfg("x", n_ids=30).validate()
    sets = T.training_sets(cfg); tr, _, _ = T.training_data(cfg, sets)
    t = T.row_tables(tr, sets)
    c = tr.to_pandas()
    for i in range(0, len(c), 37):
        assert c.xling_id[i] in t.pos_ids[i]
        ds = sets["mlqa-r"].candidates
        hit = ds[(ds.lang == c.p_lang[i]) & (ds.text == c.negative[i])]
        assert set(t.neg_ids[i]) == set(x for xs in hit.xling_ids for x in xs)
    rows = np.arange(0, 40)
    texts, valid = T.parallel_queries(t, rows, c.q_lang.to_numpy()[rows], c.p_lang.to_numpy()[rows], np.random.default_rng(0))
    for r, q, v in zip(rows, texts, valid.tolist()):
        a, b = c.q_lang[r], c.p_lang[r]
        if v and a != b: assert q == t.query_by[(c.xling_id[r], b)]
        if v and a == b: assert q != c["query"][r] and q in {t.query_by[(c.xling_id[r], l)] for l in t.langs_of[c.xling_id[r]]}


@pytest.mark.parametrize("chunk", [None, 3])
def test_mask_and_alignment_in_batch_loss(chunk):
    "The masked + aligned loss equals its direct computation; GradCache gives the same loss and gradients; lambda 0 is InfoNCE."
    from hybrid_mlir.data import load_lareqa, subsample, training_pairs
    from hybrid_mlir.loss import false_negative_mask, alignment_loss
    rows = training_pairs(subsample(load_lareqa("mlqa-r"), 20, seed=1)).select(range(9)).to_dict()
    enc = tiny_encoder(3); lf = InfoNCELoss(0.05, gather=False)
    q, p, n = rows["query"], rows["passage"], rows["negative"]
    par = q[1:] + q[:1]
    mask = false_negative_mask(rows["xling_id"], [[x] for x in rows["xling_id"]], [[] for _ in q])
    valid = torch.tensor([True] * 8 + [False])
    align = dict(kind="jsd", weight=0.5, valid=valid, offset=0)
    def grads(**kw):
        enc.zero_grad(); loss = T.batch_loss(enc, lf, q, p, n, **kw)
        return float(loss), torch.cat([x.grad.flatten() for x in enc.parameters()])
    l_ref, g_ref = grads(mask=mask, parallel=par, align=align)
    with torch.no_grad():
        eq, ep, en, epar = (enc.embed(t, k) for t, k in ((q, "query"), (p, "passage"), (n, "passage"), (par, "query")))
        want = lf(eq, ep, en, mask=mask) + 0.5 * alignment_loss(eq, epar, lf.candidates(ep, en), mask, 0.05, "jsd", valid=valid)
    assert l_ref == pytest.approx(float(want), rel=1e-5)
    if chunk:
        l1, g1 = grads(mask=mask, parallel=par, align=align, chunk=chunk)
        assert l1 == pytest.approx(l_ref, rel=1e-5) and torch.allclose(g1, g_ref, atol=1e-5, rtol=1e-3)  # float32 noise of another grouping
    l0, g0 = grads(mask=mask, chunk=chunk)
    lz, gz = grads(mask=mask, chunk=chunk, parallel=par, align=dict(align, weight=0.0))
    assert lz == pytest.approx(l0, rel=1e-6) and torch.allclose(gz, g0, atol=1e-7)


@pytest.mark.slow  # two runs (~4 s CPU)
def test_alignment_in_training(tmp_path):
    res = train(tiny_cfg(tmp_path/"j", max_steps=3, val_every=0, align="jsd", align_weight=0.2))
    recs = log_records(tmp_path/"j")
    assert all(r["parallel"] > 0 for r in recs) and all(math.isfinite(r["loss"]) for r in recs)
    a = train(tiny_cfg(tmp_path/"z", max_steps=3, val_every=0, align="jsd", align_weight=0.0))
    b = train(tiny_cfg(tmp_path/"n", max_steps=3, val_every=0))
    assert losses(tmp_path/"z") == losses(tmp_path/"n") and same_weights(weights(tmp_path/"z", "best"), weights(tmp_path/"n", "best"))
    with pytest.raises(ConfigError, match="align must be"): tiny_cfg("x", align="cos").validate()
    with pytest.raises(ConfigError, match="align_weight"): tiny_cfg("x", align_weight=-1).validate()


@pytest.mark.slow  # a crashed run resumed twice
def test_run_saved_under_old_strategy_name_resumes(tmp_path):
    "A run whose config.json and sampler state say 'mono' and 'train' (saved before the renames) resumes, under either name."
    from hybrid_mlir.core import write_manifest
    out = tmp_path/"run"
    def crash_at_3(step, rec):
        if step == 3: raise RuntimeError("boom")
    with pytest.raises(RuntimeError): train(tiny_cfg(out, strategy="x-x-mono", max_steps=4), callback=crash_at_3)
    cfg = json.loads((out/"config.json").read_text()); assert cfg["strategy"] == "x-x-mono"
    old_names = {{"train_sets": "train", "eval_set": "eval"}.get(k, k): v for k, v in cfg.items()}  # and the older setting names
    (out/"config.json").write_text(json.dumps(dict(old_names, strategy="mono")))
    ck = out/"checkpoint"; state = torch.load(ck/"state.pt", weights_only=True)
    assert state["sampler"]["strategy"] == "x-x-mono"
    torch.save(dict(state, sampler=dict(state["sampler"], strategy="mono")), ck/"state.pt")
    write_manifest(ck, ["model.safetensors", "state.pt"], to="manifest.json", format=1, step=state["step"])
    for name in ("mono", "x-x-mono"):
        res = train(tiny_cfg(out, strategy=name, max_steps=4, resume=True))
        assert res["resumed_from"].endswith("checkpoint") and res["steps"] == 4
    assert T.TrainConfig.from_dict(json.loads((out/"config.json").read_text())).strategy == "x-x-mono"


def test_committed_run_configs_load_under_the_current_names():
    "Every committed training config.json (saved with `train`/`eval`, the older names) loads as `train_sets`/`eval_set`."
    files = [f for f in sorted((Path(__file__).parents[1]/"results").glob("**/config.json")) if "strategy" in json.loads(f.read_text())]
    assert len(files) >= 36
    for f in files:
        d = json.loads(f.read_text()); c = TrainConfig.from_dict(d)
        assert (c.train_sets, c.eval_set) == (d.get("train_sets", d.get("train")), d.get("eval_set", d.get("eval"))), f
        assert c.train == c.train_sets and "train" not in c.to_dict()
