"""The benchmark: FLOP counting, target checks, the child-process memory probe, encoding parity with
sentence-transformers, an end-to-end tiny run with both trainers, and the CLI's errors."""
import json
import numpy as np, pytest, torch
from hybrid_mlir.bench import (model_shape, forward_flops, check_targets, bench_table, bench_encode, peak_rss, peak_rss_gb,
                               run_bench, main_job_time, _random_model, TARGETS)
from hybrid_mlir.cli import main
from hybrid_mlir.data import load_lareqa
from hybrid_mlir.model import tiny_encoder, load_encoder


def test_flops_of_e5_shape():
    "The e5-small shape: 21.3 M non-embedding parameters, so about 42.6 MFLOP per token forward, plus attention."
    enc = tiny_encoder(0, hidden=384, layers=12, heads=12)
    sh = model_shape(enc.model)
    assert 21.0e6 < sh["non_embedding_params"] < 21.6e6 and sh["layers"] == 12 and sh["hidden"] == 384
    assert forward_flops(sh, [10]) == pytest.approx(2 * sh["non_embedding_params"] * 10 + 4 * 12 * 384 * 100)


def test_check_targets_met_and_missing():
    res = dict(train=dict(speedup=1.2, ours=dict(mfu=0.4)), encode=[dict(speedup=1.5, ours=dict(mfu=.7)), dict(speedup=0.9, ours=dict(mfu=.8))],
               rss=dict(b32=dict(peak_rss_gb=5.0), ratio_b256_gc=1.1), eval=dict(warm_s=7.0),
               main_job=dict(minutes=50.0, complete=True))
    t = {r["target"].split(" (")[0]: r for r in check_targets(res)}
    assert t["training pairs/s vs sentence-transformers"]["met"] is True
    assert t["encoding texts/s vs sentence-transformers"]["measured"] == 0.9 and t["encoding texts/s vs sentence-transformers"]["met"] is False
    assert t["training MFU"]["met"] is False and t["peak RSS at batch 32"]["met"] is True
    assert t["README main job"]["met"] is False and t["warm XQuAD-R evaluation"]["met"] is True
    res["main_job"]["complete"] = False  # a resumed/partial reproduce has no end-to-end time
    assert [r for r in check_targets(res) if r["target"].startswith("README")][0]["met"] is None
    assert "| no |" in bench_table(dict(targets=check_targets(res)))


def test_peak_rss_is_the_childs_own(tmp_path):
    "The child's peak, not the parent's: ru_maxrss would report this process's 1 GB ballast."
    ballast = np.ones(2**27, dtype=np.float64)  # 1.07 GB, touched
    assert peak_rss_gb() > 1.0
    folder = _random_model(tmp_path/"m", dict(hidden=32, layers=2, heads=2))
    r = peak_rss(folder, batch_size=4, steps=1)
    assert 0.1 < r["peak_rss_gb"] < peak_rss_gb() and r["steps"] == 1
    del ballast


def test_encode_parity_with_sentence_transformers(tmp_path):
    "The same embeddings from both libraries, truncation included (a query limit of 8 tokens cuts real questions)."
    from sentence_transformers import SentenceTransformer
    from hybrid_mlir.interop import export_sentence_transformers
    enc = tiny_encoder(1, max_len_query=8, max_len_passage=24)
    st = SentenceTransformer(str(export_sentence_transformers(enc, tmp_path/"st")), device="cpu")
    ds = load_lareqa("xquad-r", langs=["en", "zh"])
    for kind, texts in (("query", ds.questions.text.tolist()[:80]), ("passage", ds.candidates.text.tolist()[:80])):
        r = bench_encode(enc, texts, kind, st, batch_size=16, peak_gflops=100.0)
        assert r["max_abs_diff"] < 1e-5, (kind, r["max_abs_diff"])
        assert r["ours"]["texts_per_s"] > 0 and r["speedup"] > 0 and 0 < r["ours"]["mfu"]


def test_run_bench_tiny_end_to_end(tmp_path):
    "Every CPU part but the cold evaluation on a tiny model and real data; bench.json and bench.md written."
    res = run_bench(out=tmp_path, random_init=True, shape=dict(hidden=32, layers=2, heads=2), steps=3, batch_size=4,
                    encode_n=48, rss=True, cold_eval=False)
    saved = json.loads((tmp_path/"bench.json").read_text())
    assert saved["train"]["steps"] == 3 and saved["train"]["ours"]["steps_timed"] == 2
    assert saved["train"]["sentence_transformers"]["steps_timed"] == 2 and saved["train"]["speedup"] > 0
    assert saved["rss"]["b32"]["batch_size"] == 32 and saved["rss"]["b256_gc"]["grad_cache_chunk"] == 32
    assert len(saved["targets"]) == len(TARGETS) and "eval" not in saved  # no warm evaluation of a random model
    assert "training pairs/s" in (tmp_path/"bench.md").read_text()


def test_main_job_time(tmp_path):
    assert main_job_time(tmp_path/"nope.json") is None
    p = tmp_path/"r.json"
    p.write_text(json.dumps(dict(seconds=1800.0, jobs=[dict(seconds=10.0), dict(seconds=0.0)])))
    r = main_job_time(p); assert r["minutes"] == 30.0 and r["complete"] is False


def test_cli_errors(capsys):
    if not torch.cuda.is_available():
        assert main(["bench", "--device", "cuda", "--random-init", "--out", ""]) == 2
        assert "no GPU" in capsys.readouterr().err
    with pytest.raises(SystemExit): main(["bench", "--steps", "0"])
