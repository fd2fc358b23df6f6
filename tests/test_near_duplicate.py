"""The built-in near_duplicate detector: datasketch-equal signatures, clusters, tags, the clusters view.

Everything runs through the real runner (worker processes, Parquet store,
DuckDB views) or the real CLI; no ../shared data is needed.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pytest
from datasketch import MinHash, MinHashLSH

import provenance
from provenance import exitcodes
from provenance.plugins import near_duplicate as nd
from provenance.plugins.near_duplicate import NearDuplicate
from provenance.testing import DEFAULT_DOCS, make_batch, make_store, run_detectors

VOCAB = ("river mill trout summer bread flour water salt kitchen honey hive jar town hill market storm coast "
         "harbour noon quay fisherman boat net winter spring autumn garden apple pear cherry road bridge stone "
         "church bell tower school teacher lesson book page letter ink paper window door roof wall chimney smoke "
         "fire lamp night morning evening council mayor budget railway station platform ticket train engine "
         "coal iron steel factory worker wage strike union price rate bank loan interest export import grain "
         "wheat barley cattle sheep wool cloth mill-owner").split()


def prose(rng: random.Random, n_words: int) -> str:
    """Real-ish text: sentences with capitals, punctuation, digits and the odd non-ASCII word."""
    words, out = [], []
    for i in range(n_words):
        w = rng.choice(VOCAB)
        if rng.random() < 0.03:
            w = rng.choice(["café", "Übersee", "naïve", "東京", "1987", "3.5%", "O'Brien", "co-op"])
        words.append(w)
        if rng.random() < 0.1:
            out.append(" ".join(words).capitalize() + rng.choice([".", "!", "?", ";", ","]))
            words = []
    out.append(" ".join(words))
    return " ".join(out).strip()


def edit(rng: random.Random, text: str, n_edits: int) -> str:
    words = text.split()
    for _ in range(n_edits):
        words[rng.randrange(len(words))] = rng.choice(VOCAB).upper()
    return " ".join(words)


# ----- datasketch interoperability ----------------------------------------------------------------
@pytest.mark.parametrize("kind,ngram,num_perm,seed", [("word", 5, 128, 1), ("word", 3, 64, 42),
                                                      ("char", 5, 128, 1), ("char", 9, 256, 7)])
def test_signatures_equal_datasketch_hashvalues(kind, ngram, num_perm, seed):
    rng = random.Random(seed)
    texts = [prose(rng, rng.randint(1, 300)) for _ in range(60)] + [d.get("text") or "" for d in DEFAULT_DOCS]
    texts += ["", "   ", "Hi.", "one two", "Ünïcödé — tëxt, 日本語のテキスト\t123\n\nand   more"]
    sig, has = nd.signatures(pa.array(texts, pa.large_string()), kind, ngram, num_perm, seed)
    for i, text in enumerate(texts):
        grams = nd.shingles(text, kind, ngram)
        theirs = MinHash(num_perm=num_perm, seed=seed, hashfunc=nd.shingle_hashfunc(kind))
        theirs.update_batch(grams)
        assert has[i] == bool(grams)
        assert np.array_equal(sig[i], theirs.hashvalues), f"text {i}: {text[:60]!r}"


def test_signatures_load_into_datasketch_lsh():
    """Our signatures as datasketch MinHash objects: its MinHashLSH finds the same near duplicate."""
    rng = random.Random(3)
    base = prose(rng, 200)
    texts = [base, edit(rng, base, 1), prose(rng, 200)]
    sig, _ = nd.signatures(pa.array(texts, pa.large_string()))
    lsh = MinHashLSH(threshold=0.8, num_perm=128, weights=(0.1, 0.9))  # the detector's defaults
    assert (lsh.b, lsh.r) == nd.lsh_bands(0.8, 128, 0.1, 0.9)
    for i, row in enumerate(sig):
        lsh.insert(i, MinHash(hashvalues=row, scheme="affine32"))
    assert sorted(lsh.query(MinHash(hashvalues=sig[0], scheme="affine32"))) == [0, 1]


def test_shingles_of_short_and_empty_texts():
    assert nd.shingles("One, two; THREE!", "word", 5) == ["one two three"]
    assert nd.shingles("a b c d e f", "word", 5) == ["a b c d e", "b c d e f"]
    assert nd.shingles("  ...  ", "word", 5) == [] and nd.shingles(None) == []
    assert nd.shingles("Ab  C", "char", 3) == ["ab ", "b c"]


# ----- the detector through the real runner --------------------------------------------------------
def corpus():
    """Three near-duplicate clusters (one spread over three domains), unrelated texts, a short and an empty one."""
    rng = random.Random(12)
    docs, expect = [], {}  # expect: url -> url of the kept document of its cluster
    for c in range(3):
        base = prose(rng, 250)
        kept = f"https://origin{c}.example/a"
        # Fetched out of order: the kept one is the earliest fetched, not the first listed.
        docs.append({"url": f"https://copy{c}.example/b", "text": edit(rng, base, 2),
                     "fetched_at": f"2024-02-0{c + 2}T00:00:00Z"})
        docs.append({"url": kept, "text": base, "fetched_at": "2024-01-01T00:00:00Z"})
        expect[f"https://copy{c}.example/b"] = kept
        if c == 0:
            for k in range(2):
                url = f"https://mirror{k}.example/c"
                docs.append({"url": url, "text": edit(rng, base, 1), "fetched_at": "2024-03-01T00:00:00Z"})
                expect[url] = kept
    for i in range(20):
        docs.append({"url": f"https://other.example/{i}", "text": prose(rng, 250)})
    # Half of cluster 1's text followed by new text: related, but far below Jaccard 0.8.
    half = " ".join(docs[2]["text"].split()[:125]) + " " + prose(rng, 125)
    docs += [{"url": "https://half.example/", "text": half}, {"url": "https://short.example/", "text": "Hi."},
             {"url": "https://empty.example/", "text": "..."}]
    return docs, expect


def test_tags_every_cluster_member_but_the_earliest(tmp_path):
    docs, expect = corpus()
    store = make_store(tmp_path / "store", docs, rows_per_file=10)  # several document files and batches
    result = run_detectors([NearDuplicate], store, batch_size=7)
    con = provenance.connect(store)
    url = dict(con.execute("SELECT doc_id, url FROM documents").fetchall())
    tags = result.tags.to_pylist()
    assert {url[t["doc_id"]]: url[json.loads(t["evidence"])["cluster_id"]] for t in tags} == expect
    for t in tags:
        evidence = json.loads(t["evidence"])
        assert t["tag"] == "near_duplicate" and t["category"] == "duplicate"
        assert 0.8 <= t["score"] <= 1.0 and evidence["jaccard"] == pytest.approx(t["score"], abs=1e-4)
        big = url[t["doc_id"]].startswith("https://mirror") or url[t["doc_id"]] == "https://copy0.example/b"
        assert (evidence["cluster_size"], evidence["n_domains"]) == ((4, 4) if big else (2, 2))
    scores = dict(con.execute("SELECT doc_id, duplicate_score FROM doc_flags").fetchall())
    assert sum(s is not None for s in scores.values()) == len(expect)

    # The clusters view: every member, the kept one included, with the cluster's figures.
    rows = con.execute("SELECT d.url, c.cluster_id, c.cluster_size, c.n_domains, c.n_registered_domains, "
                       "c.first_seen, c.is_representative FROM clusters c JOIN documents d USING (doc_id)"
                       ).fetchall()
    assert {r[0] for r in rows} == set(expect) | set(expect.values())
    for member, cluster_id, size, n_domains, n_registered, first_seen, representative in rows:
        assert representative == (member in expect.values())
        assert url[cluster_id] == (member if representative else expect[member])
        assert (size, n_domains, n_registered) == ((4, 4, 4) if url[cluster_id] == "https://origin0.example/a"
                                                   else (2, 2, 2))
        assert first_seen.isoformat().startswith("2024-01-01T00:00:00")

    # Nothing new: the rerun does nothing and writes no tag rows.
    again = run_detectors([NearDuplicate], store, batch_size=7)
    assert again.summary.detectors["near_duplicate"].status == "up_to_date"
    assert again.tags.num_rows == result.tags.num_rows


def test_unrelated_texts_make_no_tags_and_an_empty_clusters_view(tmp_path):
    store = make_store(tmp_path / "store", DEFAULT_DOCS[3:])  # the default corpus without its duplicate pair
    assert run_detectors([NearDuplicate], store).tags.num_rows == 0
    assert provenance.connect(store).execute("SELECT count(*) FROM clusters").fetchone() == (0,)


def test_verify_off_keeps_unverified_candidates_and_threshold_changes_the_answer(tmp_path):
    rng = random.Random(5)
    base = prose(rng, 300)
    docs = [{"text": base}, {"text": edit(rng, base, 12)}]  # 5-gram Jaccard about 0.67
    loose = run_detectors([NearDuplicate], docs, {"near_duplicate": {"threshold": 0.5}})
    strict = run_detectors([NearDuplicate], docs)
    assert loose.tags.num_rows == 1 and strict.tags.num_rows == 0
    assert 0.5 <= loose.tags.column("score")[0].as_py() < 0.8


def test_char_shingles_see_through_typos_that_break_word_shingles():
    rng = random.Random(9)
    base = prose(rng, 150)
    words = base.split(" ")
    for i in range(5, 150, 15):  # ten typos: each breaks 5 word 5-grams but only a few character 5-grams
        words[i] = words[i][:-1] + "x"
    docs = [{"text": base}, {"text": " ".join(words)}, {"text": prose(rng, 150)}]
    assert run_detectors([NearDuplicate], docs).tags.num_rows == 0
    tags = run_detectors([NearDuplicate], docs, {"near_duplicate": {"shingle": "char", "ngram": 5}}).tags
    assert tags.num_rows == 1


@pytest.mark.parametrize("table,needle", [
    ("threshold = 1.5", "threshold must be in (0, 1]"),
    ('shingle = "sentence"', "shingle must be one of ['word', 'char']"),
    ("num_perm = 1", "num_perm must be in [2, 1024]"),
    ("fp_weight = 0.3", "fp_weight and fn_weight must be in [0, 1] and add up to 1"),
    ("ngram = 0", "ngram must be in [1, 64]"),
    ("verify = 1", "verify"),
    ('verify = "maybe"', "verify must be one of ['estimate', 'exact', 'none']"),
])
def test_bad_options_are_one_usage_error(cli, tmp_path, table, needle):
    store = make_store(tmp_path / "store", DEFAULT_DOCS).root
    path = tmp_path / "provenance.toml"
    path.write_text(f"[detectors.near_duplicate]\n{table}\n")
    proc = cli("tag", "--store", store, "--config", path)
    assert proc.returncode == exitcodes.USAGE, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("provenance: error: ") and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_exact_verification_scores_the_true_jaccard(tmp_path):
    docs, expect = corpus()
    store = make_store(tmp_path / "store", docs)
    tags = run_detectors([NearDuplicate], store, {"near_duplicate": {"verify": "exact"}}).tags
    con = provenance.connect(store)
    text = dict(con.execute("SELECT doc_id, text FROM documents").fetchall())
    url = dict(con.execute("SELECT doc_id, url FROM documents").fetchall())
    assert {url[d] for d in tags.column("doc_id").to_pylist()} == set(expect)
    for t in tags.to_pylist():
        a, b = set(nd.shingles(text[t["doc_id"]])), set(nd.shingles(text[json.loads(t["evidence"])["cluster_id"]]))
        assert t["score"] == pytest.approx(len(a & b) / len(a | b))  # exact (32-bit shingle hashes collide rarely)


def test_batches_differing_in_nullability_are_one_corpus():
    """The runner may hand batches whose doc_id is 'not null' in one file and nullable in another."""
    rng = random.Random(4)
    base = prose(rng, 120)
    batch = make_batch([{"text": base}, {"text": edit(rng, base, 1)}], needs=NearDuplicate.needs)
    def with_doc_id_nullable(nullable):
        schema = batch.schema.set(0, batch.schema.field("doc_id").with_nullable(nullable))
        return pa.RecordBatch.from_arrays(batch.columns, schema=schema)

    detector = NearDuplicate(**NearDuplicate.validate_options({}))
    detector.observe(with_doc_id_nullable(False).slice(0, 1))
    detector.observe(with_doc_id_nullable(True).slice(1, 1))
    assert detector.finish().column("doc_id").to_pylist() == [batch.column("doc_id")[1].as_py()]
