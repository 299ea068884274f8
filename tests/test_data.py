"""Data loading: exact counts on the real files, checksums, malformed input, training pairs."""
import collections, json, shutil
from pathlib import Path
import pytest
from hybrid_mlir.core import DataError, ConfigError, data_dir
from hybrid_mlir.data import load_lareqa, training_pairs, train_val_split, subsample, fetch, parse_lareqa_file


@pytest.fixture(scope="module")
def xq(): return load_lareqa("xquad-r")

@pytest.fixture(scope="module")
def mq(): return load_lareqa("mlqa-r")


def test_xquad_r_counts(xq):
    assert len(xq.langs) == 11
    assert xq.questions.groupby("lang").size().eq(1190).all()
    assert len(xq.candidates) == 13014
    rel = xq.relevant()
    assert len(rel) == 1190
    for x, rows in rel.items():  # exactly one relevant sentence per language
        assert sorted(xq.candidates.lang.iloc[rows]) == sorted(xq.langs)


def test_mlqa_r_counts(mq):
    assert len(mq.langs) == 7 and len(mq.questions) == 4199 and len(mq.candidates) == 20534
    rel = mq.relevant()
    assert len(rel) == 1148
    assert collections.Counter(len(v) for v in rel.values()) == {4: 820, 3: 263, 2: 65}
    # a question id's relevant candidates are in exactly the languages the question exists in
    langs_of = mq.questions.groupby("xling_id").lang.apply(set).to_dict()
    for x, rows in rel.items(): assert set(mq.candidates.lang.iloc[rows]) == langs_of[x]


def test_langs_subset_and_unknown():
    ds = load_lareqa("xquad-r", langs=["en", "de"])
    assert ds.langs == ("en", "de") and len(ds.questions) == 2380
    with pytest.raises(ConfigError, match="unknown language"): load_lareqa("xquad-r", langs=["en", "klingon"])
    with pytest.raises(ConfigError, match="not a known set"): load_lareqa("no-such-set")


def _copy(tmp_path, lang="en"):
    d = tmp_path / "set"; d.mkdir()
    shutil.copy(data_dir() / f"lareqa/xquad-r/{lang}.json", d / f"{lang}.json")
    return d


def test_folder_of_files(tmp_path):
    d = _copy(tmp_path)
    ds = load_lareqa(str(d))
    assert ds.langs == ("en",) and len(ds.questions) == 1190 and len(ds.candidates) == 1180


@pytest.mark.parametrize("cut", [0, 1, 100, 50_000])
def test_truncated_file_names_file(tmp_path, cut):
    d = _copy(tmp_path); f = d / "en.json"
    f.write_bytes(f.read_bytes()[:cut])
    with pytest.raises(DataError, match="en.json"): load_lareqa(str(d))


def test_structural_errors(tmp_path):
    d = tmp_path / "s"; d.mkdir(); f = d / "en.json"
    para = {"context": "A b. C d.", "sentences": ["A b.", "C d."], "sentence_breaks": [[0, 4], [5, 9]],
            "qas": [{"id": "q1", "question": "?", "answers": [{"answer_start": 6, "text": "d"}]}]}
    f.write_text(json.dumps({"data": [{"paragraphs": [para]}]}))
    ds = load_lareqa(str(d)); assert ds.candidates.xling_ids.tolist() == [[], ["q1"]]
    bad = dict(para, qas=[{"id": "q1", "question": "?", "answers": [{"answer_start": 99}]}])
    f.write_text(json.dumps({"data": [{"paragraphs": [bad]}]}))
    with pytest.raises(DataError, match=r"en.json: .*answer_start=99"): load_lareqa(str(d))
    f.write_text(json.dumps({"data": [{"paragraphs": [dict(para, sentence_breaks=[[0, 4]])]}]}))
    with pytest.raises(DataError, match="sentence_breaks"): load_lareqa(str(d))
    f.write_text(json.dumps({"nodata": []}))
    with pytest.raises(DataError, match="missing field 'data'"): load_lareqa(str(d))


def test_checksum_mismatch_and_download_failure(tmp_path, monkeypatch):
    root = tmp_path / "root"; (root / "lareqa/xquad-r").mkdir(parents=True)
    (root / "lareqa/xquad-r/en.json").write_text("{}")
    with pytest.raises(DataError, match="sha256 mismatch"): fetch("lareqa/xquad-r/en.json", root=root)
    # a missing file with no network: a clear error naming the file, and no partial file left behind
    import urllib.request
    def boom(*a, **k): raise OSError("network unreachable")
    monkeypatch.setattr(urllib.request, "urlopen", boom)
    monkeypatch.setattr("hybrid_mlir.data.time.sleep", lambda s: None)
    with pytest.raises(DataError, match="de.json: could not download"): fetch("lareqa/xquad-r/de.json", root=root)
    assert sorted(p.name for p in (root / "lareqa/xquad-r").iterdir()) == ["en.json"]


def test_training_pairs(mq):
    tp = training_pairs(mq).to_pandas()
    assert len(tp) == 820 * 16 + 263 * 9 + 65 * 4
    assert list(tp.columns) == ["xling_id", "q_lang", "p_lang", "query", "passage", "negative", "source"]
    assert (tp.passage != tp.negative).all() and (tp.source == "mlqa-r").all()
    assert not tp.duplicated(["xling_id", "q_lang", "p_lang"]).any()
    # the positive is the relevant candidate of that id in p_lang, the negative a sentence of the same paragraph
    c = mq.candidates
    row = tp.iloc[123]
    pos = c[(c.lang == row.p_lang) & c.xling_ids.apply(lambda xs: row.xling_id in xs)]
    assert pos.text.tolist() == [row.passage]
    assert row.negative in c[c.pid == pos.pid.iloc[0]].text.tolist()
    # deterministic
    assert training_pairs(mq).to_pandas().equals(tp)
    tr, va = train_val_split(training_pairs(mq))
    assert not set(tr["xling_id"]) & set(va["xling_id"])
    assert set(va["q_lang"]) == {"en"} and set(va["p_lang"]) == {"en"}
    assert abs(len(set(va["xling_id"])) - 0.05 * 1148) <= 20  # ids without an English version hold no val row


def test_subsample(xq):
    s = subsample(xq, 10, seed=1)
    assert s.questions.xling_id.nunique() == 10 and len(s.questions) == 110
    assert set(s.candidates.pid) == set(s.questions.pid)
