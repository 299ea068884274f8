"""BEIR metrics against hand-worked examples, the BEIR readers, chunked search, and a fixture folder built from XQuAD-R."""
import math, json
import numpy as np, pandas as pd, pytest
from hybrid_mlir.core import DataError, ConfigError
from hybrid_mlir.data import load_lareqa, subsample
from hybrid_mlir.beir import beir_metrics, load_beir, load_qrels, write_beir, evaluate_beir, dense_search, iter_corpus
from hybrid_mlir.mkqa import eval_extra, is_extra_data
from hybrid_mlir.model import tiny_encoder


def test_hand_worked_graded():
    # judgements d1=2, d2=1, d3=0; ranking d3 d1 d4 d2
    m = beir_metrics([["d3", "d1", "d4", "d2"]], [{"d1": 2, "d2": 1, "d3": 0}], ndcg_k=(10, 1, 3), recall_k=(1, 2, 4))
    dcg = 2 / math.log2(3) + 1 / math.log2(5); idcg = 2 + 1 / math.log2(3)
    assert m["ndcg@10"][0] == pytest.approx(dcg / idcg) == pytest.approx(0.643322, abs=1e-6)
    assert m["ndcg@1"][0] == 0 and m["ndcg@3"][0] == pytest.approx((2 / math.log2(3)) / idcg)
    assert (m["recall@1"][0], m["recall@2"][0], m["recall@4"][0]) == (0, .5, 1)
    # ideal DCG is cut at k too: 12 relevant docs, only 10 count for IDCG@10
    q = {f"r{i}": 1 for i in range(12)}
    m = beir_metrics([[f"r{i}" for i in range(10)]], [q], recall_k=(10,))
    assert m["ndcg@10"][0] == pytest.approx(1.0) and m["recall@10"][0] == pytest.approx(10 / 12)
    # padding '' and unjudged ids gain nothing; two queries at once
    m = beir_metrics([["x", "", ""], ["a", "b", "c"]], [{"x": 3}, {"c": 1, "z": 1}], ndcg_k=(3,), recall_k=(3,))
    assert m["ndcg@3"].tolist() == pytest.approx([1.0, (1 / 2) / (1 + 1 / math.log2(3))])
    assert m["recall@3"].tolist() == [1.0, 0.5]


def test_readers(tmp_path):
    (tmp_path / "q.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t2\nq2\td1\t0\n")
    assert load_qrels(tmp_path / "q.tsv") == {"q1": {"d1": 1, "d2": 2}, "q2": {"d1": 0}}
    (tmp_path / "trec.txt").write_text("q1 Q0 d1 1\nq1 Q0 d9 0\n")
    assert load_qrels(tmp_path / "trec.txt") == {"q1": {"d1": 1, "d9": 0}}
    (tmp_path / "bad.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\tone\n")
    with pytest.raises(DataError, match="bad.tsv: line 2"): load_qrels(tmp_path / "bad.tsv")
    (tmp_path / "c.jsonl").write_text('{"_id": "a", "text": "x"}\n{"docid": "b", "title": "T", "text": "y"}\n{"_id": "c"}\n')
    with pytest.raises(DataError, match="c.jsonl: line 3"): list(iter_corpus(tmp_path / "c.jsonl"))
    with pytest.raises(DataError, match="splits here: \\['test'\\]"):
        write_beir(tmp_path / "f", None, None, {"q": {"d": 1}}); load_beir(tmp_path / "f", "dev")
    with pytest.raises(DataError, match="not a folder"): load_beir(tmp_path / "nope")


@pytest.fixture(scope="module")
def xquad_beir(tmp_path_factory):
    "A BEIR folder from real XQuAD-R text: en+de questions, en/de/zh paragraphs; own-language paragraph 2, others 1."
    ds = subsample(load_lareqa("xquad-r", langs=["en", "de", "zh"]), 30, seed=0)
    paras = ds.candidates.drop_duplicates("pid")
    corpus = pd.DataFrame(dict(_id=paras.pid, title="", text=paras.context.str.strip()))
    Q = ds.questions[ds.questions.lang.isin(["en", "de"])]
    queries = pd.DataFrame(dict(_id=Q.qid, text=Q.text))
    qrels = {qid: {f"{l}:{pid.split(':', 1)[1]}": 2 if l == ql else 1 for l in ("en", "de", "zh")}
             for qid, ql, pid in zip(Q.qid, Q.lang, Q.pid)}
    folder = write_beir(tmp_path_factory.mktemp("beir") / "xquad-mini", corpus, queries, qrels)
    return folder, ds


class ParaOracle:
    "Questions -> one-hot of their paragraph's article:paragraph key, paragraphs -> the same key; own language a bit higher."
    def __init__(self, ds):
        self.q = {t: (p.split(":", 1)[1], l) for t, p, l in zip(ds.questions.text, ds.questions.pid, ds.questions.lang)}
        self.c = {c.strip(): (p.split(":", 1)[1], l) for c, p, l in zip(ds.candidates.context, ds.candidates.pid, ds.candidates.lang)}
        keys = sorted({k for k, _ in self.c.values()}); self.ix = {k: i for i, k in enumerate(keys)}
    def encode(self, texts, kind="query", **kw):
        v = np.zeros((len(texts), len(self.ix) + 3), np.float32)
        for i, t in enumerate(texts):
            k, l = (self.q if kind == "query" else self.c)[t]
            v[i, self.ix[k]] = 1; v[i, len(self.ix) + ["en", "de", "zh"].index(l)] = .1
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_fixture_oracle_is_perfect(xquad_beir):
    folder, ds = xquad_beir
    b = load_beir(folder); assert len(b.queries) == 60 and len(b.qrels) == 60
    r = evaluate_beir(ParaOracle(ds), folder, cache=False); pq, info = r.per_query, r.info
    assert info["n_queries"] == 60 and info["n_passages"] == ds.candidates.pid.nunique()
    np.testing.assert_allclose(pq["ndcg@10"], 1.0); np.testing.assert_allclose(pq["recall@100"], 1.0)


@pytest.mark.slow  # encodes the fixture corpus four times (~17 s CPU)
def test_chunked_search_equals_one_search(xquad_beir):
    folder, ds = xquad_beir
    enc = tiny_encoder(1)
    qe = enc.encode(load_beir(folder).queries.text.tolist())
    a = dense_search(enc, qe, folder, k=20, chunk_size=7, cache=False)
    b = dense_search(enc, qe, folder, k=20, chunk_size=1000, cache=False)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
    assert (a.ids == b.ids).mean() > 0.99  # identical but for float ties
    s1 = evaluate_beir(enc, folder, chunk_size=13, cache=False).summary
    s2 = evaluate_beir(enc, folder, chunk_size=1000, cache=False).summary
    np.testing.assert_allclose(s1.value, s2.value, atol=1e-9)


def test_eval_extra_beir(xquad_beir, tmp_path):
    folder, ds = xquad_beir
    assert is_extra_data(f"beir:{folder}") and not is_extra_data("xquad-r")
    summ, info = eval_extra(ParaOracle(ds), f"beir:{folder}:test", tmp_path / "out", cache=False)
    assert summ.set_index("metric").value.to_dict() == {"ndcg@10": 1.0, "recall@100": 1.0}
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"summary.csv", "per_query.csv.gz", "eval.json"}
    j = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert j["info"]["split"] == "test" and "machine" in j["info"] and j["info"]["wall_seconds"] >= 0
    with pytest.raises(ConfigError, match="unknown data"): eval_extra(ParaOracle(ds), "mlqa-r", tmp_path / "x")


def test_top_k_through_faiss_matches_the_full_sort():
    "A chunk of FAISS_MIN passages or more goes through faiss: the same top k as `search`, ties inside it ordered by column."
    from hybrid_mlir.beir import _top_k, FAISS_MIN
    from hybrid_mlir.eval import search
    g = np.random.default_rng(1); c = g.standard_normal((FAISS_MIN + 500, 8)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)   # unit vectors, as embeddings are
    c[[FAISS_MIN + 3, 11, FAISS_MIN + 1]] = c[7]   # three exact copies of passage 7, later and earlier columns
    q = np.vstack([c[7], g.standard_normal((4, 8)).astype(np.float32)])
    D, I = _top_k(q, c, 20)
    ref = list(search(q, c, 20)); rD, rI = np.concatenate([d for _, d, _ in ref]), np.concatenate([i for _, _, i in ref])
    assert I.shape == (5, 20) and I.dtype == np.int64 and np.allclose(D, rD, atol=1e-4)
    assert I[0, :4].tolist() == [7, 11, FAISS_MIN + 1, FAISS_MIN + 3] and I.tolist() == rI.tolist()
    small = _top_k(q, c[:FAISS_MIN - 1], 20)[1]   # below the threshold: the full sort itself
    assert small.tolist() == np.concatenate([i for _, _, i in search(q, c[:FAISS_MIN - 1], 20)]).tolist()


def test_top_k_through_faiss_edge_cases():
    "k = 0 and no queries give empty tables, as the full sort does; a NaN query is an error, not a silent ranking."
    from hybrid_mlir.beir import _top_k, FAISS_MIN
    c = np.eye(8, dtype=np.float32)[np.arange(FAISS_MIN) % 8]
    assert _top_k(c[:3], c, 0)[1].shape == (3, 0) and _top_k(c[:0], c, 5)[1].shape == (0, 5)
    q = c[:2].copy(); q[1, 0] = np.nan
    with pytest.raises(DataError, match="no ranking"): _top_k(q, c, 5)
