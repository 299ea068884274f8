"""Reliability and safety: SIGKILL at random moments, damaged checkpoints and caches, cut-off downloads,
fuzzed loaders (hypothesis), bad CLI input, and untrusted files (pickles, remote code).

Complements tests/test_train.py (resume after Ctrl-C/crash, lock, one corrupt checkpoint, NaN),
tests/test_data.py (truncated LAReQA files, download failure), tests/test_eval.py (truncated cache shard)
and tests/test_model.py (a .bin-only folder)."""
import contextlib, gzip, http.client, io, json, multiprocessing as mp, os, pickle, random, shutil, signal, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings, strategies as st
from safetensors.torch import load_file
import hybrid_mlir.train as T
from hybrid_mlir.core import CheckpointError, ConfigError, DataError, data_dir, sha256_file
from hybrid_mlir.data import SHA256, fetch, load_lareqa, parse_lareqa_file
from hybrid_mlir.eval import encode_cached
from hybrid_mlir.mkqa import load_mkqa
from hybrid_mlir.beir import iter_corpus, load_beir, read_jsonl
from hybrid_mlir.model import load_encoder, tiny_encoder
from hybrid_mlir.train import TrainConfig, load_checkpoint, train, verify_checkpoint


def same_weights(a, b): return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
def log_records(run): return [json.loads(l) for l in (Path(run)/"train_log.jsonl").read_text().splitlines() if l.strip()]
def trajectory(run): return [(r["step"], r["batch"], r["loss"], r.get("val_loss")) for r in log_records(run) if "loss" in r]

class Payload:
    "A pickle that, when unpickled, creates `marker` (what a malicious state.pt / .bin / .npy would do)."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (exec, (f"open({self.marker!r}, 'w').close()",))

def rewrite_manifest(folder):
    "Make a checkpoint's manifest match its (tampered) files: the attacker controls the whole folder."
    man = json.loads((folder/T.MANIFEST).read_text())
    for name in man["files"]: man["files"][name] = dict(size=(folder/name).stat().st_size, sha256=sha256_file(folder/name))
    (folder/T.MANIFEST).write_text(json.dumps(man))

@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    "A finished 2-step in-process run: checkpoint/ (step 2), checkpoint.prev/ (step 1), best/."
    out = tmp_path_factory.mktemp("small")/"run"
    cfg = TrainConfig(model="tiny:0", n_ids=40, batch_size=4, max_steps=2, save_every=1, val_every=2, eval_set=None,
                      out=str(out), progress=False, threads=1)
    train(cfg)
    return out, cfg

# ---------------------------------------------------------------------------------------------------------------
# 1. SIGKILL at random moments, then resume: the same weights and log as an uninterrupted run
# ---------------------------------------------------------------------------------------------------------------
TRAIN_ARGS = ["train", "--model", "tiny", "--n-ids", "40", "--batch-size", "4", "--max-steps", "12", "--save-every", "1",
              "--val-every", "4", "--eval", "none", "--no-progress", "--threads", "1"]
KILL_SEED, N_KILLS = 20240611, 5

def _forkserver():
    """`hmlir train` children forked from a server that has imported torch/transformers once (a fresh
    `python -m hybrid_mlir.cli` spends ~10 s importing; 7 of them would not fit the time budget). Each child
    runs `hybrid_mlir.cli.main(argv)`, the `hmlir` entry point, in its own process, and is killed with SIGKILL."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["hybrid_mlir.cli", "hybrid_mlir.train", "hybrid_mlir.reproduce", "hybrid_mlir.model",
                                "hybrid_mlir.data", "hybrid_mlir.sampler", "hybrid_mlir.loss", "datasets",
                                "transformers.models.bert.modeling_bert", "transformers.models.auto.tokenization_auto"])
    return ctx

def _max_step(out):
    try: return max((r["step"] for r in log_records(out) if "loss" in r), default=0)
    except (OSError, ValueError): return 0   # not written yet, or a line being written

@pytest.mark.slow  # SIGKILL: seven `hmlir train` processes killed and resumed
def test_sigkill_at_random_points_then_resume_equals_uninterrupted(tmp_path, monkeypatch):
    from hybrid_mlir.cli import main
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ctx = _forkserver()
    # the uninterrupted reference runs meanwhile; it checkpoints only at the end (saving does not touch the trajectory)
    ref = tmp_path/"ref"; args = TRAIN_ARGS.copy(); args[args.index("--save-every") + 1] = "12"
    ref_p = ctx.Process(target=main, args=(args + ["--out", str(ref)],)); ref_p.start()
    rng = random.Random(KILL_SEED)
    # kill points: one at a random moment of start-up (data loading, model building), then after random steps,
    # each followed by a random delay of up to about one step (forward, update, validation, log or checkpoint write)
    points = [("startup", None, rng.uniform(0.3, 3.0))] + [("step", s, rng.uniform(0, 0.6)) for s in sorted(rng.sample(range(1, 12), N_KILLS - 1))]
    out, kills, notes = tmp_path/"run", 0, []
    for i, (kind, step, delay) in enumerate(points):
        argv = TRAIN_ARGS + ["--out", str(out)] + (["--resume"] if i else [])
        p = ctx.Process(target=main, args=(argv,)); p.start(); t = time.time()
        if kind == "step":
            while p.is_alive() and _max_step(out) < step and time.time() - t < 120: time.sleep(0.005)
        time.sleep(delay)
        if p.is_alive(): os.kill(p.pid, signal.SIGKILL)
        p.join(60)
        if p.exitcode == -signal.SIGKILL:
            kills += 1
            ck = load_checkpoint(out)   # never "no usable checkpoint": at worst the previous one, or none yet
            notes.append((kind, step, round(delay, 2), _max_step(out), None if ck is None else ck["step"]))
        else: notes.append((kind, step, round(delay, 2), "finished", p.exitcode))
    p = ctx.Process(target=main, args=(TRAIN_ARGS + ["--out", str(out), "--resume"],)); p.start(); p.join(300)
    ref_p.join(300)
    assert p.exitcode == 0 and ref_p.exitcode == 0, notes
    assert json.loads((ref/"result.json").read_text())["steps"] == 12
    res = json.loads((out/"result.json").read_text())
    assert res["steps"] == 12 and res["stopped"] == "max_steps"
    assert same_weights(load_file(out/"checkpoint"/"model.safetensors"), load_file(ref/"checkpoint"/"model.safetensors")), notes
    assert same_weights(load_file(out/"best"/"model.safetensors"), load_file(ref/"best"/"model.safetensors")), notes
    assert torch.equal(torch.load(out/"checkpoint"/"state.pt", weights_only=True)["rng"][0]["torch"],
                       torch.load(ref/"checkpoint"/"state.pt", weights_only=True)["rng"][0]["torch"])
    assert trajectory(out) == trajectory(ref), notes   # losses, validation losses and batch types of every step
    leftovers = [f.name for f in out.iterdir() if f.name.startswith(".") or f.name == T.LOCK]
    assert not leftovers, leftovers   # no temp folders of interrupted saves, no stale lock
    assert kills >= N_KILLS - 1, notes   # the step points are before the last step, so (nearly) all land
    print(f"\nSIGKILL: {kills}/{len(points)} kill points landed and were survived; {notes}")

# ---------------------------------------------------------------------------------------------------------------
# 2. damaged checkpoints, model folders and embedding caches: detected, with the file named
# ---------------------------------------------------------------------------------------------------------------
def test_damaged_checkpoint_manifest_and_files(small_run, tmp_path):
    src, cfg = small_run
    def fresh():
        d = tmp_path/f"ck{len(list(tmp_path.iterdir()))}"; shutil.copytree(src/"checkpoint", d); return d
    d = fresh(); (d/T.MANIFEST).write_text('{"format": 1, "step": 2, "fi')           # manifest cut off mid-write
    with pytest.raises(CheckpointError, match=r"manifest.json: unreadable"): verify_checkpoint(d)
    d = fresh(); (d/T.MANIFEST).write_text(json.dumps({"format": 1, "files": {"state.pt": {}}}))
    with pytest.raises(CheckpointError, match="malformed"): verify_checkpoint(d)
    d = fresh(); (d/"model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model.safetensors: missing"): verify_checkpoint(d)
    d = fresh(); f = d/"model.safetensors"; f.write_bytes(f.read_bytes()[:len(f.read_bytes()) // 2])
    with pytest.raises(CheckpointError, match=r"model.safetensors: size .* \(truncated\?\)"): verify_checkpoint(d)
    # weights of another model, with a consistent manifest: refused when loaded into the model
    run = tmp_path/"other"; shutil.copytree(src, run); shutil.rmtree(run/T.PREV_CHECKPOINT)
    from safetensors.torch import save_model
    save_model(tiny_encoder(0, hidden=16).model, str(run/"checkpoint"/"model.safetensors")); rewrite_manifest(run/"checkpoint")
    with pytest.raises(CheckpointError, match=r"no usable checkpoint: .*model.safetensors: does not fit the model"):
        load_checkpoint(run, tiny_encoder(0).model)
    # a save cut short by a kill between "checkpoint -> checkpoint.prev" and "tmp -> checkpoint", with its temp folder left over
    run = tmp_path/"midsave"; shutil.copytree(src, run); shutil.rmtree(run/T.PREV_CHECKPOINT)
    os.replace(run/"checkpoint", run/T.PREV_CHECKPOINT); (run/".checkpoint.abc.tmp").mkdir(); (run/".best.xyz.tmp").mkdir()
    res = train(TrainConfig(**(cfg.to_dict() | dict(out=str(run), resume=True))))
    assert res["resumed_from"].endswith(T.PREV_CHECKPOINT) and res["steps"] == 2
    assert not (run/".checkpoint.abc.tmp").exists() and not (run/".best.xyz.tmp").exists()

def test_damaged_model_folder(small_run, tmp_path):
    best = tmp_path/"best"; shutil.copytree(small_run[0]/"best", best)
    f = best/"model.safetensors"; good = f.read_bytes()
    for bad in (good[:-1000], good[:100], b"\0" * 64, bytes(b ^ 0xFF for b in good[:4096]) + good[4096:]):
        f.write_bytes(bad)
        with pytest.raises(CheckpointError, match=str(best)): load_encoder(best, device="cpu")
    f.write_bytes(good); (best/"hybrid_mlir.json").write_text('{"format": 1, "pooling": "me')
    with pytest.raises(CheckpointError, match=r"hybrid_mlir.json: not valid JSON"): load_encoder(best, device="cpu")

class CountingEncoder:
    fingerprint = "fp-rel"
    def __init__(self): self.calls = []
    def encode(self, texts, kind="query", **kw):
        self.calls.append(len(texts)); return np.eye(8, dtype=np.float32)[[len(t) % 8 for t in texts]]

def _shard_and_manifest(root):
    "The query shard the cache's manifest lists, and the manifest."
    man = root/CountingEncoder.fingerprint/"manifest.json"
    (name,) = [k for k, v in json.loads(man.read_text()).items() if v["kind"] == "query"]
    return man.parent/name, man

def test_damaged_embedding_cache_rebuilt(tmp_path, caplog):
    texts = ["a", "bb", "ccc", "dddd"]
    enc = CountingEncoder(); want = encode_cached(enc, texts, root=tmp_path)
    def again(): return encode_cached(enc, texts, root=tmp_path)
    shard, man = _shard_and_manifest(tmp_path)
    # a byte flipped inside the shard, same size: the sha256 catches it
    b = bytearray(shard.read_bytes()); b[len(b) // 2] ^= 0x01; shard.write_bytes(bytes(b))
    assert np.array_equal(again(), want) and enc.calls == [4, 4] and "embedding cache shard missing or corrupt" in caplog.text and str(shard) in caplog.text
    # the manifest cut off, then valid JSON of the wrong shape, then entries lacking fields: rebuilt, with a warning
    for bad in ('{"query-1.npz": {"kind": "qu', "[1, 2]", '{"x.npz": {"kind": "query"}}', "null"):
        man.write_text(bad); caplog.clear()
        assert np.array_equal(again(), want) and "corrupt manifest" in caplog.text
    assert enc.calls == [4, 4, 4, 4, 4, 4]
    # the shard deleted behind the manifest's back
    shard, man = _shard_and_manifest(tmp_path); shard.unlink(); caplog.clear()
    assert np.array_equal(again(), want) and "missing or corrupt" in caplog.text and enc.calls[-1] == 4
    # a shard that is not a zip at all but matches its manifest entry (size and hash updated)
    shard, man = _shard_and_manifest(tmp_path); shard.write_bytes(b"PK\x03\x04 this is not a zip")
    m = json.loads(man.read_text()); m[shard.name].update(size=shard.stat().st_size, sha256=sha256_file(shard)); man.write_text(json.dumps(m))
    caplog.clear(); assert np.array_equal(again(), want) and "unreadable" in caplog.text and not shard.exists()

# ---------------------------------------------------------------------------------------------------------------
# 3. downloads cut off or garbled: retried, and a partial file never passes as good
# ---------------------------------------------------------------------------------------------------------------
REL = "lareqa/xquad-r/en.json"

class FakeResponse:
    "What urlopen returns: `body` in chunks, then optionally an exception (a connection cut mid-body)."
    def __init__(self, body, fail=None): self.buf, self.fail = io.BytesIO(body), fail
    def read(self, n=-1):
        b = self.buf.read(min(n, 65536) if n and n > 0 else -1)
        if not b and self.fail is not None: raise self.fail
        return b
    def __enter__(self): return self
    def __exit__(self, *a): return False

@pytest.fixture
def downloads(monkeypatch, tmp_path):
    "Patch urlopen to serve a queue of responses; returns (queue, calls, root, good bytes)."
    import urllib.request
    good = (data_dir()/REL).read_bytes(); assert sha256_file(data_dir()/REL) == SHA256[REL]
    queue, calls = [], []
    def fake_urlopen(url, timeout=None):
        calls.append(url); r = queue.pop(0)
        if isinstance(r, BaseException): raise r
        return r
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    monkeypatch.setattr("hybrid_mlir.data.time.sleep", lambda s: None)
    return queue, calls, tmp_path/"root", good

def _files(root): return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []

def test_download_truncated_then_garbled_then_good(downloads):
    queue, calls, root, good = downloads
    garbled = bytearray(good); garbled[1000:1010] = b"XXXXXXXXXX"
    queue += [FakeResponse(good[:len(good) // 3]), FakeResponse(bytes(garbled)), FakeResponse(good)]
    p = fetch(REL, root=root)
    assert len(calls) == 3 and p.read_bytes() == good and _files(root) == [REL]

def test_download_connection_cut_mid_body_is_retried(downloads):
    queue, calls, root, good = downloads
    queue += [FakeResponse(good[:5000], fail=http.client.IncompleteRead(good[:5000], len(good) - 5000)),
              FakeResponse(good[:7000], fail=ConnectionResetError("connection reset by peer")),
              FakeResponse(good)]
    assert fetch(REL, root=root).read_bytes() == good and len(calls) == 3 and _files(root) == [REL]

def test_download_always_bad_leaves_nothing(downloads):
    queue, calls, root, good = downloads
    queue += [FakeResponse(good[:-1]), FakeResponse(good + b"\n"), FakeResponse(good[:10], fail=http.client.IncompleteRead(b"", 5))]
    with pytest.raises(DataError, match=r"en.json: could not download .* after 3 attempts"): fetch(REL, root=root)
    assert len(calls) == 3 and _files(root) == []   # no file under the final name, no .part left
    # interrupted (Ctrl-C) mid-body: the partial file is removed too, and the next call downloads afresh
    queue += [FakeResponse(good[:4000], fail=KeyboardInterrupt())]
    with pytest.raises(KeyboardInterrupt): fetch(REL, root=root)
    assert _files(root) == []
    queue += [FakeResponse(good)]; assert fetch(REL, root=root).read_bytes() == good

# ---------------------------------------------------------------------------------------------------------------
# 4. property-based: malformed files make the loaders raise DataError/ConfigError naming the file, nothing else
# ---------------------------------------------------------------------------------------------------------------
FUZZ = settings(max_examples=300, deadline=3000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
# how many inputs each fuzz test tried: `pytest --hypothesis-show-statistics tests/test_reliability.py -k fuzz`

def examples(*rows):
    "Each row an explicit hypothesis `example`: always tried, before the generated inputs."
    def deco(f):
        for r in rows: f = example(*r)(f)
        return f
    return deco

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=4), max_leaves=12)

@contextlib.contextmanager
def time_limit(seconds=10):
    "A hang fails the example (hypothesis' deadline only measures examples that return)."
    def boom(*a): raise TimeoutError(f"loader still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, boom); signal.alarm(seconds)
    try: yield
    finally: signal.alarm(0); signal.signal(signal.SIGALRM, old)

def expect_clean(fn, named):
    "`fn()` returns, or raises DataError/ConfigError whose message names `named`; anything else fails the test."
    try:
        with time_limit(): fn()
    except (DataError, ConfigError) as e: assert named in str(e), f"error does not name {named}: {e}"

def paths_of(obj, path=()):
    "Every path into a JSON object (dict keys and list indices)."
    yield path
    if isinstance(obj, dict):
        for k, v in obj.items(): yield from paths_of(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj): yield from paths_of(v, path + (i,))

def mutate(obj, path, new, delete=False):
    "A copy of `obj` with the value at `path` replaced by `new` (or deleted)."
    obj = json.loads(json.dumps(obj))
    if not path: return new
    parent = obj
    for k in path[:-1]: parent = parent[k]
    if delete: del parent[path[-1]]
    else: parent[path[-1]] = new
    return obj

LAREQA_DOC = {"version": "1.1", "data": [{"title": "t", "paragraphs": [
    {"context": "A b. C d.", "sentences": ["A b.", "C d."], "sentence_breaks": [[0, 4], [5, 9]],
     "qas": [{"id": "q1", "question": "What?", "answers": [{"answer_start": 6, "text": "d"}]},
             {"id": "q2", "question": "Who?", "answers": [{"answer_start": 0, "text": "A"}]}]}]}]}
LAREQA_PATHS = list(paths_of(LAREQA_DOC))
NASTY = [b"", b"\xef\xbb\xbf{}", b"[" * 100_000, b"1" * 5000, b'{"data": [' + b"9" * 5000 + b"]}", b"\xff\xfe\x00{",
         json.dumps({"data": [{"paragraphs": [dict(LAREQA_DOC["data"][0]["paragraphs"][0], sentence_breaks=[[float("inf"), 4], [5, 9]])]}]}).encode(),
         json.dumps({"data": [{"paragraphs": [dict(LAREQA_DOC["data"][0]["paragraphs"][0], sentence_breaks=[[float("nan"), 4], [5, 9]])]}]}).encode()]

def lareqa_inputs():
    "Arbitrary bytes, a valid file cut or with bytes overwritten, arbitrary JSON, and the valid document with one value replaced or removed."
    good = json.dumps(LAREQA_DOC).encode()
    return st.one_of(
        st.binary(max_size=400),
        st.integers(0, len(good) - 1).map(lambda n: good[:n]),
        st.tuples(st.integers(0, len(good) - 1), st.binary(min_size=1, max_size=8)).map(lambda t: good[:t[0]] + t[1] + good[t[0] + len(t[1]):]),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.tuples(st.sampled_from(LAREQA_PATHS), json_values, st.booleans()).map(
            lambda t: json.dumps(mutate(LAREQA_DOC, t[0], t[1], delete=t[2] and bool(t[0]))).encode()))

@pytest.mark.slow  # hypothesis: 300 generated files (~2 s CPU)
@FUZZ
@given(lareqa_inputs())
@example(json.dumps(LAREQA_DOC).encode())
@examples(*[(b,) for b in NASTY])
def test_fuzz_lareqa_file_and_folder(raw):
    with tempfile.TemporaryDirectory() as d:
        f = Path(d)/"en.json"; f.write_bytes(raw)
        expect_clean(lambda: parse_lareqa_file(f, "en"), str(f))
        expect_clean(lambda: load_lareqa(d), str(f))

MKQA_EX = {"example_id": 7, "query": "who wrote faust", "queries": {"en": "who wrote faust", "de": "wer schrieb faust", "ja": None},
           "answers": {"en": [{"type": "entity", "text": "Goethe", "aliases": ["J. W. Goethe"]}],
                       "de": [{"type": "entity", "text": "Goethe"}], "ja": [{"type": "unanswerable", "text": None}]}}
MKQA_PATHS = list(paths_of(MKQA_EX))

def jsonl_inputs(example_obj, paths):
    "JSON-lines bytes: arbitrary bytes/text, lines of arbitrary JSON, lines of the valid object with one value replaced or removed, cut."
    line = st.one_of(json_values.map(json.dumps), st.text(max_size=40),
                     st.tuples(st.sampled_from(paths), json_values, st.booleans()).map(
                         lambda t: json.dumps(mutate(example_obj, t[0], t[1], delete=t[2] and bool(t[0])))),
                     st.just(json.dumps(example_obj)))
    doc = st.lists(line, min_size=0, max_size=4).map(lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass"))
    return st.one_of(st.binary(max_size=300), doc, st.tuples(doc, st.integers(0, 400)).map(lambda t: t[0][:t[1]]))

def gz_variants(raw):
    "The bytes gzipped, gzipped and cut, gzipped with a byte flipped, or not gzipped at all (under a .gz name)."
    z = gzip.compress(raw, mtime=0)
    return [z, z[:len(z) // 2], z[:-4], z[:10] + bytes([z[10] ^ 0xFF]) + z[11:], raw]

JSONL_NASTY = [b"[" * 100_000, b"1" * 5000, b'{"a": ' + b"9" * 5000 + b"}", b"\xef\xbb\xbf{}", b"NaN", b'"\\ud800"']
MKQA_NASTY = JSONL_NASTY + [json.dumps(mutate(MKQA_EX, p, v)).encode() for p, v in [
    (("answers", "en", 0, "aliases"), 5), (("answers", "en", 0, "aliases"), [None]), (("answers", "en", 0, "type"), ["x"]),
    (("answers", "en", 0, "text"), {"a": 1}), (("answers", "en"), [7]), (("queries", "de"), 3), (("queries",), [])]]

@pytest.mark.slow  # hypothesis: 300 generated files (~2 s CPU)
@FUZZ
@given(jsonl_inputs(MKQA_EX, MKQA_PATHS), st.integers(0, 4))
@example((json.dumps(MKQA_EX) + "\n").encode(), 0)
@examples(*[(b, 0) for b in MKQA_NASTY])
def test_fuzz_mkqa(raw, gz_kind):
    with tempfile.TemporaryDirectory() as d:
        f = Path(d)/"mkqa.jsonl"; f.write_bytes(raw)
        expect_clean(lambda: load_mkqa(f), str(f))
        g = Path(d)/"mkqa.jsonl.gz"; g.write_bytes(gz_variants(raw)[gz_kind])
        expect_clean(lambda: load_mkqa(g), str(g))

BEIR_Q = {"_id": "q1", "text": "who wrote faust", "metadata": {}}

@pytest.mark.slow  # hypothesis: 300 generated files (~2 s CPU)
@FUZZ
@given(jsonl_inputs(BEIR_Q, list(paths_of(BEIR_Q))), st.one_of(st.binary(max_size=120), st.text(max_size=80).map(lambda s: s.encode("utf-8", "surrogatepass")),
       st.lists(st.tuples(st.sampled_from(["q1", "qx", ""]), st.sampled_from(["d1", "Q0"]), st.sampled_from(["1", "0", "-1", "2.5", "nan", "inf", "1e400", "x", ""])), max_size=3)
       .map(lambda rows: ("query-id\tcorpus-id\tscore\n" + "".join("\t".join(r) + "\n" for r in rows)).encode())), st.integers(0, 4))
@example(b"[" * 100_000, b"q1\td1\t\xff\n", 0)
@example(b'{"_id": ' + b"1" * 5000 + b', "text": "t"}', b"q1\td1\tinf\n", 1)
@example(b'{"_id": "q1", "text": ["t"]}', b"q1\td1\t1e400\n", 2)
def test_fuzz_beir(queries, qrels, gz_kind):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d); (d/"qrels").mkdir()
        good_q = (json.dumps(BEIR_Q) + "\n").encode(); good_qrels = b"query-id\tcorpus-id\tscore\nq1\td1\t1\n"
        (d/"corpus.jsonl").write_bytes(queries.replace(b"q1", b"d1"))   # a fuzzed corpus too (read by iter_corpus)
        # fuzzed queries, good qrels
        (d/"queries.jsonl").write_bytes(queries); (d/"qrels"/"test.tsv").write_bytes(good_qrels)
        expect_clean(lambda: list(read_jsonl(d/"queries.jsonl")), str(d/"queries.jsonl"))
        expect_clean(lambda: load_beir(d), str(d/"queries.jsonl"))
        expect_clean(lambda: list(iter_corpus(d)), str(d/"corpus.jsonl"))
        # good queries, fuzzed qrels
        (d/"queries.jsonl").write_bytes(good_q); (d/"qrels"/"test.tsv").write_bytes(qrels)
        expect_clean(lambda: load_beir(d), str(d/"qrels"/"test.tsv"))
        # gzipped queries, damaged in one of several ways
        (d/"queries.jsonl").unlink(); (d/"queries.jsonl.gz").write_bytes(gz_variants(queries)[gz_kind])
        (d/"qrels"/"test.tsv").write_bytes(good_qrels)
        expect_clean(lambda: list(read_jsonl(d/"queries.jsonl.gz")), str(d/"queries.jsonl.gz"))
        expect_clean(lambda: load_beir(d), str(d/"queries.jsonl.gz"))

# ---------------------------------------------------------------------------------------------------------------
# 5. CLI: bad input -> one line on stderr, exit 2, nothing written (a real `python -m hybrid_mlir.cli` each)
# ---------------------------------------------------------------------------------------------------------------
MISSING = "/nonexistent/hmlir-test/path"
CLI_CASES = [
    (["train", "--model", "tiny", "--batch-size", "four"], "positive integer"),                       # wrong type
    (["train", "--model", "tiny", "--strategy", "X-Z"], "invalid choice"),                            # unknown strategy
    (["train", "--model", "tiny", "--alpha", "-0.25"], "alpha must be in [0, 1]"),                   # alpha outside [0, 1]
    (["train", "--model", "tiny", "--eval", "xquad-r", "--eval-langs", "en,xx"], "['xx']"),         # unknown language (eval)
    (["train", "--model", MISSING, "--eval", "none"], "does not exist"),                             # missing model folder
    (["train", "--model", "tiny", "--train", MISSING], "neither a known set"),                       # missing data folder
    (["eval", "--model", "tiny", "--data", MISSING], "not a known set"),                             # missing data folder
    (["eval", "--data", "xquad-r", "--langs", "en,xx"], "unknown language"),                         # unknown language
    (["eval", "--data", "xquad-r", "--langs", "en", "--n-ids", "5", "--model", MISSING], "does not exist"),  # missing model
    (["eval", "--settings", "mono,sideways", "--batch-size", "many"], "positive integer"),         # wrong type
    (["reproduce", "--steps", "-3"], "positive integer"),
]

@pytest.mark.slow  # eleven `python -m hybrid_mlir.cli` processes (~35 s CPU)
def test_cli_bad_input_one_line_exit_2_nothing_written(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    def run(i, argv):
        cwd = tmp_path/f"case{i}"; cwd.mkdir()   # default output folders (results/...) would land here
        r = subprocess.run([sys.executable, "-m", "hybrid_mlir.cli", *argv, "--out", str(cwd/"out")], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=120)
        return r, cwd
    with ThreadPoolExecutor(2) as ex: results = list(ex.map(lambda a: run(*a), enumerate(c[0] for c in CLI_CASES)))
    for (argv, msg), (r, cwd) in zip(CLI_CASES, results):
        assert r.returncode == 2, (argv, r.returncode, r.stderr[-2000:])
        assert r.stderr.startswith("hmlir: error:") and r.stderr.count("\n") == 1 and msg in r.stderr, (argv, r.stderr)
        assert r.stdout == "" and list(cwd.iterdir()) == [], (argv, list(cwd.iterdir()))   # no out folder, nothing at all

# ---------------------------------------------------------------------------------------------------------------
# 6. untrusted files: pickles are never unpickled, remote code never runs
# ---------------------------------------------------------------------------------------------------------------
def test_payload_is_live(tmp_path):
    "The payload used below does run when unpickled the unsafe way (so its absence of effect below means something)."
    marker = tmp_path/"ran"; torch.save(Payload(marker), tmp_path/"p.pt")
    torch.load(tmp_path/"p.pt", weights_only=False); assert marker.exists()

def test_pickled_state_pt_refused_on_resume(small_run, tmp_path):
    src, cfg = small_run
    run = tmp_path/"run"; shutil.copytree(src, run); marker = tmp_path/"state_pt_ran"
    for name in (T.CHECKPOINT, T.PREV_CHECKPOINT):   # both checkpoints poisoned, manifests made to match
        torch.save({"step": 2, "optimizer": Payload(marker)}, run/name/"state.pt"); rewrite_manifest(run/name)
        assert verify_checkpoint(run/name)   # the manifest check passes: only weights_only loading stands in the way
    with pytest.raises(CheckpointError, match=r"no usable checkpoint: .*checkpoint/state.pt: cannot be loaded safely .*GLOBAL exec.*"
                                              r"checkpoint.prev/state.pt: cannot be loaded safely") as e:
        train(TrainConfig(**(cfg.to_dict() | dict(out=str(run), resume=True))))
    assert "\n" not in str(e.value) and "\x1b" not in str(e.value)   # the CLI prints it as its one line
    assert not marker.exists() and not (run/T.LOCK).exists()
    # only the latest poisoned: refused too, and the run resumes from the previous checkpoint
    run2 = tmp_path/"run2"; shutil.copytree(src, run2)
    torch.save(Payload(marker), run2/T.CHECKPOINT/"state.pt"); rewrite_manifest(run2/T.CHECKPOINT)
    res = train(TrainConfig(**(cfg.to_dict() | dict(out=str(run2), resume=True))))
    assert res["resumed_from"].endswith(T.PREV_CHECKPOINT) and res["steps"] == 2 and not marker.exists()
    # a raw (non-zip, legacy) pickle as state.pt: refused as well
    ck = tmp_path/"ck"; shutil.copytree(src/T.CHECKPOINT, ck)
    (ck/"state.pt").write_bytes(pickle.dumps(Payload(marker))); rewrite_manifest(ck)
    run3 = tmp_path/"run3"; run3.mkdir(); shutil.copytree(ck, run3/T.CHECKPOINT)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"): load_checkpoint(run3)
    assert not marker.exists()

def test_pickle_weights_refused_by_load_encoder(small_run, tmp_path):
    folder = tmp_path/"enc"; shutil.copytree(small_run[0]/"best", folder); marker = tmp_path/"bin_ran"
    (folder/"model.safetensors").unlink()
    torch.save({"embeddings.word_embeddings.weight": Payload(marker)}, folder/"pytorch_model.bin")
    with pytest.raises(CheckpointError, match="only safetensors"): load_encoder(folder, device="cpu")
    assert not marker.exists()

def test_object_array_cache_shard_refused_and_rebuilt(tmp_path, caplog):
    enc, marker = CountingEncoder(), tmp_path/"npz_ran"
    want = encode_cached(enc, ["a", "bb"], root=tmp_path/"c")
    shard, man = _shard_and_manifest(tmp_path/"c")
    np.savez(shard, keys=np.array([Payload(marker), "x"], dtype=object), emb=np.zeros((2, 8), np.float32))
    m = json.loads(man.read_text()); m[shard.name].update(size=shard.stat().st_size, sha256=sha256_file(shard)); man.write_text(json.dumps(m))
    got = encode_cached(enc, ["a", "bb"], root=tmp_path/"c")
    assert np.array_equal(got, want) and enc.calls == [2, 2] and not marker.exists()
    assert "Object arrays cannot be loaded when allow_pickle=False" in caplog.text and not shard.exists()

@pytest.mark.slow  # five model loads (~6 s CPU)
def test_trust_remote_code_off(small_run, tmp_path, monkeypatch):
    import inspect, transformers
    from hybrid_mlir.cli import build_parser
    assert inspect.signature(load_encoder).parameters["trust_remote_code"].default is False
    assert not any("trust" in a for sp in build_parser()._subparsers._group_actions[0].choices.values()
                   for act in sp._actions for a in act.option_strings)   # no CLI switch turns it on
    # a model folder that ships code (config.json and tokenizer_config.json point at evil.py): the code never runs
    folder = tmp_path/"evil"; shutil.copytree(small_run[0]/"best", folder); marker = tmp_path/"remote_code_ran"
    (folder/"evil.py").write_text(f"open({str(marker)!r}, 'w').close()\nfrom transformers import BertConfig, BertModel, PreTrainedTokenizerFast\n"
                                  "class EvilConfig(BertConfig): model_type = 'evil'\nclass EvilModel(BertModel): config_class = EvilConfig\n"
                                  "class EvilTokenizer(PreTrainedTokenizerFast): pass\n")
    c = json.loads((folder/"config.json").read_text())
    (folder/"config.json").write_text(json.dumps(c | {"auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}}))
    tc = json.loads((folder/"tokenizer_config.json").read_text())
    (folder/"tokenizer_config.json").write_text(json.dumps(tc | {"auto_map": {"AutoTokenizer": [None, "evil.EvilTokenizer"]}}))
    seen = []
    orig_m, orig_t = transformers.AutoModel.from_pretrained, transformers.AutoTokenizer.from_pretrained
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", lambda *a, **k: (seen.append(("model", k.get("trust_remote_code"), k.get("use_safetensors"))), orig_m(*a, **k))[1])
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: (seen.append(("tokenizer", k.get("trust_remote_code"), None)), orig_t(*a, **k))[1])
    try: load_encoder(folder, device="cpu")   # the built-in BERT classes may be used instead; or a clear refusal
    except CheckpointError as e: assert "custom code" in str(e) or "trust_remote_code" in str(e)
    c["model_type"] = "evil"; (folder/"config.json").write_text(json.dumps(c | {"auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}}))
    with pytest.raises(CheckpointError): load_encoder(folder, device="cpu")   # only custom code could load it: refused
    T.build_encoder(TrainConfig(model=str(small_run[0]/"best")))             # the training path goes through load_encoder too
    assert not marker.exists() and seen and all(t is False for _, t, _ in seen) and all(s is True for k, _, s in seen if k == "model"), seen
