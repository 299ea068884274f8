"""sentence-transformers interop: exported folders embed exactly as Encoder.encode (tiny and real offline model), and
sentence-transformers' InformationRetrievalEvaluator agrees with this project's recall@k / nDCG@10. The real-model test
also runs MKQA-style alignment and open-retrieval recall on a small XQuAD-R slice."""
import numpy as np, pandas as pd, pytest
from hybrid_mlir.core import ConfigError
from hybrid_mlir.data import load_lareqa, subsample
from hybrid_mlir.model import tiny_encoder, load_encoder
from hybrid_mlir.interop import export_sentence_transformers
from hybrid_mlir.beir import write_beir, evaluate_beir
from hybrid_mlir.mkqa import mkqa_from_lareqa, alignment_recall, open_retrieval_recall

st = pytest.importorskip("sentence_transformers")
pytestmark = pytest.mark.slow   # sentence-transformers (import and export) and the real 470 MB model
TEXTS = ["Who wrote Faust?", "Wer schrieb den Faust?", "谁写了浮士德？", "Кто написал «Фауста»?", "ใครเขียนเฟาสต์",
         "Goethe schrieb den Faust in zwei Teilen, 1808 und 1832 veröffentlicht, " * 3]


def test_tiny_roundtrip(tmp_path):
    for pooling in ("mean", "cls"):
        enc = tiny_encoder(3, pooling=pooling, max_len_query=32, max_len_passage=48)
        m = st.SentenceTransformer(str(export_sentence_transformers(enc, tmp_path / pooling)), device="cpu")
        assert m.max_seq_length == 48 and m.default_prompt_name is None
        assert (m.prompts["query"], m.prompts["passage"], m.prompts["document"]) == ("query: ", "passage: ", "passage: ")
        short = TEXTS[:5]
        for kind in ("query", "passage"):
            diff = np.abs(m.encode(short, prompt_name=kind) - enc.encode(short, kind)).max()
            assert diff < 1e-5, (pooling, kind, diff)
        # the long text: passages agree (48 tokens both); queries differ (ST keeps 48 tokens, Encoder 32)
        assert np.abs(m.encode(TEXTS[5:], prompt_name="passage") - enc.encode(TEXTS[5:], "passage")).max() < 1e-5
        assert np.abs(m.encode(TEXTS[5:], prompt_name="query") - enc.encode(TEXTS[5:], "query")).max() > 1e-4
    with pytest.raises(ConfigError): export_sentence_transformers(enc, tmp_path / "n", max_seq_length=1)


def test_export_loads_without_missing_pooler_report(tmp_path, capfd):
    "The model has no pooler: sentence-transformers must not build one and report its weights as MISSING."
    enc = tiny_encoder(3)
    p = export_sentence_transformers(enc, tmp_path / "st")
    capfd.readouterr()
    m = st.SentenceTransformer(str(p), device="cpu")
    out = capfd.readouterr(); printed = out.out + out.err
    assert "MISSING" not in printed and "LOAD REPORT" not in printed, printed
    assert m[0].auto_model.pooler is None
    assert np.abs(m.encode(TEXTS[:3], prompt_name="query") - enc.encode(TEXTS[:3], "query")).max() < 1e-5


@pytest.fixture(scope="module")
def real():
    return load_encoder("offline:multilingual-e5-small", device="cpu", precision="fp32")  # exact equality with ST (fp32)


def test_real_model_st_equality_and_ir_evaluator(real, tmp_path):
    m = st.SentenceTransformer(str(export_sentence_transformers(real, tmp_path / "e5")), device="cpu")
    for kind in ("query", "passage"):
        diff = np.abs(m.encode(TEXTS, prompt_name=kind, batch_size=4) - real.encode(TEXTS, kind)).max()
        assert diff < 1e-5, (kind, diff)
    # IR evaluator vs evaluate_beir: English questions, en+de paragraphs, both paragraphs of a question relevant
    ds = subsample(load_lareqa("xquad-r", langs=["en", "de"]), 10, seed=5)
    paras = ds.candidates.drop_duplicates("pid")
    corpus = pd.DataFrame(dict(_id=paras.pid, title="", text=paras.context.str.strip()))
    Q = ds.questions[ds.questions.lang == "en"]
    rel = {q: {p, "de:" + p.split(":", 1)[1]} for q, p in zip(Q.qid, Q.pid)}
    write_beir(tmp_path / "b", corpus, pd.DataFrame(dict(_id=Q.qid, text=Q.text)), {q: {d: 1 for d in ds_} for q, ds_ in rel.items()})
    try: from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator  # ST >= 6
    except ImportError: from sentence_transformers.evaluation import InformationRetrievalEvaluator
    ev = InformationRetrievalEvaluator(dict(zip(Q.qid, Q.text)), dict(zip(corpus._id, corpus.text)), rel,
                                       precision_recall_at_k=[1, 5, 10], ndcg_at_k=[10], query_prompt_name="query",
                                       corpus_prompt_name="passage", write_csv=False, name="x")
    got = ev(m)
    r = evaluate_beir(real, tmp_path / "b", ndcg_k=(10,), recall_k=(1, 5, 10), cache=False)
    ours, info = r.summary.set_index("metric").value, r.info
    assert info["n_queries"] == len(Q)
    for k in (1, 5, 10):
        assert got[f"x_cosine_recall@{k}"] == pytest.approx(ours[f"recall@{k}"], abs=1e-9), k
    assert got["x_cosine_ndcg@10"] == pytest.approx(ours["ndcg@10"], abs=1e-6)
    assert ours["recall@10"] > 0.5


def test_real_model_mkqa_xquad_slice(real):
    mk = mkqa_from_lareqa(subsample(load_lareqa("xquad-r", langs=["en", "de", "zh"]), 12, seed=2))
    al = alignment_recall(real, mk).summary.set_index(["task", "metric"]).value
    assert al["alignment", "recall@1"] > 0.6 and al["alignment", "map"] > al["alignment", "recall@1"] - 1e-9
    assert al["alignment-pooled", "rank_distance"] >= 0 and al["alignment-pooled", "map"] > 0.5
    orr = open_retrieval_recall(real, mk, ks=(1, 20))
    assert orr.info["n_kept"] == 36 and orr.summary.set_index("metric").value["recall@20"] > 0.8
