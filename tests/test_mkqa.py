"""MKQA loader on the 6-example test file, malformed input, alignment recall with oracle encoders,
answer normalisation/matching and the filtering counts of open-retrieval recall."""
import gzip, json
import numpy as np, pandas as pd, pytest
from hybrid_mlir.core import DataError, ConfigError
from hybrid_mlir.data import fetch, load_lareqa, subsample
from hybrid_mlir.mkqa import (MKQA, MKQA_LANGS, MKQA_TEST_FILE, load_mkqa, mkqa_from_lareqa, alignment_recall,
                              normalize_answer, answer_in_passage, answer_table, open_retrieval_recall)


@pytest.fixture(scope="module")
def mk(): return load_mkqa(fetch(MKQA_TEST_FILE))


def test_loader_fixture(mk):
    assert mk.langs == MKQA_LANGS and len(mk.langs) == 26 and {"zh_cn", "zh_hk", "zh_tw"} <= set(mk.langs)
    assert mk.queries.example_id.nunique() == 6 and len(mk.queries) == 156
    assert list(mk.queries.columns) == ["example_id", "lang", "text"]
    assert list(mk.answers.columns) == ["example_id", "lang", "type", "text", "aliases"]
    en = mk.answers[mk.answers.lang == "en"]
    assert en.type.value_counts().to_dict() == {"date": 2, "unanswerable": 2, "entity": 2, "long_answer": 1}
    assert mk.queries.set_index(["example_id", "lang"]).text[("7631360939705650347", "en")].startswith("who is the director")
    zh = mk.answers[(mk.answers.lang == "zh_cn") & (mk.answers.text == "大力士魔山")]
    assert zh.aliases.iloc[0] == []  # no 'aliases' key in the file
    assert mk.answers[mk.answers.type == "unanswerable"].text.isna().all()
    sub = load_mkqa(fetch(MKQA_TEST_FILE), langs="de")
    assert sub.langs == ("de",) and len(sub.queries) == 6 and set(sub.answers.lang) == {"de"}


def _gz(path, text: bytes): path.write_bytes(gzip.compress(text)); return path


def test_malformed(tmp_path):
    good = json.dumps(dict(example_id=1, query="q", queries={"en": "q"}, answers={"en": [{"type": "entity", "text": "x"}]}))
    p = _gz(tmp_path / "a.jsonl.gz", (good + "\n" + good[:-5] + "\n").encode())
    with pytest.raises(DataError, match=r"a\.jsonl\.gz: line 2: not valid JSON"): load_mkqa(p)
    p = _gz(tmp_path / "b.jsonl.gz", (good + "\n" + good + "\n").encode()); p.write_bytes(p.read_bytes()[:-12])
    with pytest.raises(DataError, match="b.jsonl.gz.*gzip"): load_mkqa(p)
    p = tmp_path / "c.jsonl.gz"; p.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="c.jsonl.gz: line 1"): load_mkqa(p)
    p = _gz(tmp_path / "d.jsonl.gz", json.dumps(dict(example_id=1, queries={"en": "q"})).encode())
    with pytest.raises(DataError, match="line 1: missing field 'answers'"): load_mkqa(p)
    p = _gz(tmp_path / "e.jsonl.gz", json.dumps(dict(example_id=1, queries={"en": "q"}, answers={"en": [{"text": "x"}]})).encode())
    with pytest.raises(DataError, match="without 'type'"): load_mkqa(p)
    p = _gz(tmp_path / "f.jsonl.gz", b"\n")
    with pytest.raises(DataError, match="no queries"): load_mkqa(p)
    (tmp_path / "plain.jsonl").write_text(good + "\n")
    assert len(load_mkqa(tmp_path / "plain.jsonl").queries) == 1  # an uncompressed copy reads too
    with pytest.raises(DataError, match="mkqa.jsonl.gz.*github.com/apple/ml-mkqa"): load_mkqa(root=tmp_path)
    with pytest.raises(ConfigError, match="unknown MKQA language"): load_mkqa(fetch(MKQA_TEST_FILE), langs=["en", "xx"])
    with pytest.raises(DataError, match="not found"): load_mkqa(tmp_path / "nope.jsonl.gz")


class Oracle:
    "One-hot of the example id; queries of `shift` point at the next example."
    def __init__(self, mk, shift=None):
        ids = sorted(mk.queries.example_id.unique()); ix = {x: i for i, x in enumerate(ids)}; self.n = len(ids)
        self.v = {t: (ix[e] + (l == shift)) % self.n for t, l, e in zip(mk.queries.text, mk.queries.lang, mk.queries.example_id)}
    def encode(self, texts, kind="query", **kw):
        v = np.zeros((len(texts), self.n), np.float32)  # exact 0/1 scores, so ties are exact
        for i, t in enumerate(texts): v[i, self.v[t]] = 1
        return v


def _toy_parallel(n_ex=12, langs=("en", "de", "fr", "ja")):
    q = pd.DataFrame([dict(example_id=str(e), lang=l, text=f"{l} question {e}") for e in range(n_ex) for l in langs])
    return MKQA("toy", q, pd.DataFrame(columns=["example_id", "lang", "type", "text", "aliases"]), tuple(langs))


def test_alignment_oracle_and_shift():
    mk = _toy_parallel()
    r = alignment_recall(Oracle(mk), mk, cache=False)
    s = r.summary.set_index(["task", "metric"]).value
    assert s["alignment", "recall@1"] == 1 and s["alignment", "map"] == 1 and s["alignment", "recall@10"] == 1
    assert s["alignment-pooled", "map"] == 1 and s["alignment-pooled", "rank_distance"] == 2  # 3 translations: ranks 1..3
    assert len(r.per_pair) == 12 and r.per_pair.n_skipped.sum() == 0
    r = alignment_recall(Oracle(mk, shift="de"), mk, cache=False).per_pair
    bad = (r.q_lang == "de") | (r.t_lang == "de")
    assert (r.loc[bad, "recall@1"] == 0).all() and (r.loc[~bad, "recall@1"] == 1).all()
    # en -> de: the right German query ties with 10 others below the wrong one: AP = 1/12 (sklearn tie rule)
    assert r.set_index(["q_lang", "t_lang"]).loc[("en", "de"), "map"] == pytest.approx(1 / 12)


def test_alignment_per_query_rows_average_to_the_tables():
    "Per-query alignment rows (keyed '<lang>:<example id>', so a cluster is one example in every language) give the per-pair and pooled means."
    mk = _toy_parallel()
    r = alignment_recall(Oracle(mk, shift="de"), mk, cache=False)
    q = r.per_query
    assert set(q.setting) == {"alignment", "alignment-pooled"} and q.qid.str.match(r"^[a-z]+:\d+$").all()
    pair = q[q.setting == "alignment"].groupby(["q_lang", "c_lang"]).ap.mean()
    pp = r.per_pair.set_index(["q_lang", "t_lang"])["map"]
    assert np.allclose(pair.sort_index().to_numpy(), pp.sort_index().to_numpy())
    pooled = q[q.setting == "alignment-pooled"].groupby("q_lang").rank_distance.mean()
    assert np.allclose(pooled.sort_index().to_numpy(), r.per_language.set_index("lang").pooled_rank_distance.sort_index().to_numpy())
    assert len(q[q.setting == "alignment"]) == 12 * 12  # 12 ordered pairs x 12 examples

def test_alignment_missing_translations_are_counted():
    mk = _toy_parallel(langs=("en", "de"))
    mk.queries = mk.queries[~((mk.queries.lang == "de") & mk.queries.example_id.isin(["0", "1", "2"]))]
    r = alignment_recall(Oracle(mk), mk, cache=False)
    pp = r.per_pair.set_index(["q_lang", "t_lang"])
    assert pp.loc[("en", "de"), "n_skipped"] == 3 and pp.loc[("en", "de"), "n_queries"] == 9 and pp.loc[("de", "en"), "n_skipped"] == 0
    assert r.info["n_pooled_skipped"] == 3 and (r.per_pair["recall@1"] == 1).all()


def test_normalize_and_match():
    assert normalize_answer("The Beatles!", "en") == "beatles"
    assert normalize_answer("Die Beatles", "de") == "beatles" and normalize_answer("Die Beatles", "en") == "die beatles"
    assert normalize_answer("ＡＢＣ　１２３") == "abc 123"
    assert normalize_answer("U.S.A.", "en") == "u s"  # the SQuAD/MKQA rule drops the article-like "a" too
    p = normalize_answer("In 1492, Columbus sailed; the U.S.A. was founded in 1776.", "en")
    assert answer_in_passage(normalize_answer("1776"), p) and answer_in_passage(normalize_answer("u.s.a.", "en"), p)
    assert not answer_in_passage("149", p) and not answer_in_passage("columbu", p)
    assert answer_in_passage(normalize_answer("北京"), normalize_answer("首都是北京市。"))
    assert answer_in_passage(normalize_answer("กรุงเทพ"), normalize_answer("เมืองหลวงคือกรุงเทพมหานคร"))
    assert answer_in_passage(normalize_answer("서울"), normalize_answer("서울에서 열렸다"))
    assert not answer_in_passage(normalize_answer("मर"), normalize_answer("भारत मरीना"))  # a vowel sign continues a word


def test_open_retrieval_filtering_counts():
    q = pd.DataFrame(dict(example_id=list("123456"), lang="en", text=[f"q{i}" for i in range(6)]))
    a = pd.DataFrame(dict(example_id=list("123456"), lang="en",
                          type=["unanswerable", "binary", "long_answer", "entity", "number", "entity"],
                          text=[None, "yes", None, "Ridley Scott", "42", "!!!"], aliases=[[], [], [], ["Sir Ridley Scott"], [], []]))
    corpus = pd.DataFrame(dict(_id=["p1", "p2", "p3"], title=["", "", "Gladiator"],
                               text=["The answer is 420.", "The answer is 42.", "Directed by Ridley Scott."]))
    mk = MKQA("toy", pd.concat([q, q.assign(lang="de")]), a, ("en", "de"), corpus)
    at = answer_table(mk)
    assert at[at.lang == "en"].reason.fillna("kept").tolist() == ["unanswerable", "binary", "long_answer", "kept", "kept", "no_answer_text"]
    assert at[at.lang == "de"].reason.fillna("kept").tolist() == at[at.lang == "en"].reason.fillna("kept").tolist()  # en types when de has none

    class Fixed:  # every query ranks p1, p2, p3 in that order
        def encode(self, texts, kind="query", **kw):
            return np.float32([[3, 2, 1] if kind == "query" else np.eye(3)[int(t[-1] == ".") and {"The answer is 420.": 0, "The answer is 42.": 1}.get(t, 2)] for t in texts])
    r = open_retrieval_recall(Fixed(), mk, ks=(1, 2, 3), cache=False)
    assert r.info["n_queries"] == 12 and r.info["n_kept"] == 4
    assert r.info["filtered"] == {"unanswerable": 2, "binary": 2, "long_answer": 2, "no_answer_text": 2}
    pq = r.per_query.set_index(["example_id", "lang"])
    assert pq.first_hit[("5", "en")] == 1 and pq.first_hit[("4", "en")] == 2  # "42" is not found in "420"
    pl = r.per_language.set_index("lang")
    assert pl.loc["en", "n_kept"] == 2 and pl.loc["en", "filtered_binary"] == 1 and pl.loc["en", "open_recall@2"] == .5
    s = r.summary.set_index("metric").value
    assert s["recall@3"] == 1 and s["filtered:long_answer"] == 2
    with pytest.raises(ConfigError, match="no corpus"): open_retrieval_recall(Fixed(), MKQA("x", q, a, ("en",)), cache=False)


def test_mkqa_from_xquad_answers_are_in_their_paragraphs():
    ds = subsample(load_lareqa("xquad-r"), 25, seed=3)
    mk = mkqa_from_lareqa(ds)
    assert len(mk.queries) == 25 * 11 and set(mk.answers.type) == {"span"} and mk.corpus._id.is_unique
    ctx = dict(zip(ds.questions.qid, ds.questions.pid)); para = dict(zip(ds.candidates.pid, ds.candidates.context))
    found = [answer_in_passage(normalize_answer(a, l), normalize_answer(para[ctx[f"{l}:{e}"]], l))
             for e, l, a in zip(mk.answers.example_id, mk.answers.lang, mk.answers.text)]
    assert np.mean(found) > 0.97, np.mean(found)
