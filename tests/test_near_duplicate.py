"""The built-in near_duplicate detector: datasketch-equal signatures, state rows, clusters, campaigns, known texts.

The state-level tests call ``observe`` on batches, write each returned table
as a real Parquet file and call ``finish`` on a fresh instance over them
(``finish_over_state``), as the runner does; the end-to-end tests go through
the real runner (worker processes, Parquet store, DuckDB views) or the real
CLI. No ../shared data is needed.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasketch import MinHash, MinHashLSH

import provenance
from provenance import exitcodes
from provenance.detectors import CorpusState, output_to_table
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


@pytest.mark.parametrize("ngram,num_perm,seed", [(5, 128, 1), (3, 64, 42), (1, 16, 7)])
def test_the_compiled_kernel_equals_the_numpy_reference(ngram, num_perm, seed):
    """Word signatures from the compiled kernel equal the vectorised numpy path's, value for value."""
    from provenance.plugins import _minhash_kernel

    assert _minhash_kernel.available()
    rng = random.Random(seed)
    texts = [prose(rng, rng.randint(0, 400)) for _ in range(200)]
    texts += [None, "", "   ", "Hi.", "one two", "snake_case under_score", "İstanbul ΣΊΣΥΦΟΣ straße ǅemal",
              "e\u0301t\u00e9 caf\u00e9 — 日本語のテキスト 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 😀 ١٢٣ ⅫⅣ ½", "x" * 5000, "a b " * 2000]
    array = pa.array(texts, pa.large_string())
    compiled, has = nd.signatures(array, "word", ngram, num_perm, seed)
    reference, reference_has = nd.signatures(array, "word", ngram, num_perm, seed, compiled=False)
    assert np.array_equal(has, reference_has)
    for i in range(len(texts)):
        assert np.array_equal(compiled[i], reference[i]), f"text {i}: {(texts[i] or '')[:60]!r}"
    sliced = array.slice(3, 50)  # an array that starts at an offset into its buffers
    assert np.array_equal(nd.signatures(sliced, "word", ngram, num_perm, seed)[0], reference[3:53])


@pytest.mark.parametrize("num_perm", [16, 128, 256])
def test_bands_and_rows_are_the_ones_datasketch_picks(num_perm):
    from datasketch.lsh import _optimal_param

    for threshold in (0.05, 0.2, 0.33, 0.5, 0.72, 0.8, 0.85, 0.95):
        for fp_weight, fn_weight in ((0.5, 0.5), (0.1, 0.9), (0.9, 0.1)):
            assert nd.lsh_bands.__wrapped__(threshold, num_perm, fp_weight, fn_weight) == \
                _optimal_param(threshold, num_perm, fp_weight, fn_weight), (threshold, fp_weight, fn_weight)


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
        assert (evidence["cluster_size"], evidence["n_domains"], evidence["n_registered_domains"]) == (
            (4, 4, 4) if big else (2, 2, 2))
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
    ("amplification_min_domains = 1", "amplification_min_domains must be at least 2"),
    ("amplification_new_share = 1.5", "amplification_new_share must be in [0, 1]"),
    ("reference_threshold = 0", "reference_threshold must be in (0, 1]"),
    ("memory_limit_mb = 8", "memory_limit_mb must be at least 64"),
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


# ----- state rows and finish over state files, as the runner drives them ---------------------------
def finish_over_state(tmp_path, batches, options=None, references=None, rows_per_file=None) -> pa.Table:
    """observe() every batch, each returned table written as a Parquet state file; then finish() of a fresh
    instance over those files (and ``references``: name -> list of texts or (ref_id, text) pairs)."""
    options = NearDuplicate.validate_options(options or {})
    observer = NearDuplicate(**options)
    state_dir, scratch = tmp_path / "state", tmp_path / "scratch"
    state_dir.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(exist_ok=True)
    files = []
    for i, batch in enumerate(batches):
        table = observer.observe(batch)
        assert table.schema == observer.state_schema()
        files.append(str(state_dir / f"state-{i:04d}.parquet"))
        pq.write_table(table, files[-1], row_group_size=rows_per_file)
    ref_files = {}
    for name, texts in (references or {}).items():
        rows = [t if isinstance(t, tuple) else (f"{name}-{k}", t) for k, t in enumerate(texts)]
        path = str(tmp_path / f"reference-{name}.parquet")
        pq.write_table(pa.table({"reference": [name] * len(rows), "ref_id": [r for r, _ in rows],
                                 "text": [t for _, t in rows]}), path)
        ref_files[name] = [path]
    fresh = NearDuplicate(**options)  # the instance that finishes may have observed nothing
    parts = [output_to_table(part, fresh) for part in fresh.finish(
        CorpusState(state_files=files, references=ref_files, scratch_dir=str(scratch)))]
    for part in parts:
        assert set(part.column_names) == {"doc_id", "tag", "score", "evidence", "category"}
    return pa.concat_tables(parts) if parts else output_to_table(None, fresh)


def batches_of(docs, size=7):
    batch = make_batch(docs, needs=NearDuplicate.needs)
    return [batch.slice(i, size) for i in range(0, batch.num_rows, size)]


def test_state_rows_one_per_document_with_signature_band_keys_and_shingle_sets():
    rng = random.Random(2)
    docs = [{"url": "https://www.news.example.co.uk/a", "text": prose(rng, 80)}, {"text": "..."}, {"text": "Hi."}]
    batch = make_batch(docs, needs=NearDuplicate.needs)
    exact = NearDuplicate(**NearDuplicate.validate_options({"verify": "exact"}))
    rows = exact.observe(batch)
    assert rows.column_names == ["doc_id", "fetched_at", "domain", "registered_domain", "signature", "band_keys",
                                 "shingle_set"]
    assert rows.column("doc_id").to_pylist() == batch.column("doc_id").to_pylist()
    assert rows.schema.field("signature").type == pa.list_(pa.uint32(), 128)
    assert rows.schema.field("band_keys").type == pa.list_(pa.uint64())
    assert rows.column("registered_domain")[0].as_py() == "example.co.uk"
    # The text without shingles has a row (domains' first-seen dates need it) but no signature.
    assert [s is None for s in rows.column("signature").to_pylist()] == [False, True, False]
    assert [k is None for k in rows.column("band_keys").to_pylist()] == [False, True, False]
    bands, rows_per_band = nd.lsh_bands(0.8, 128, 0.1, 0.9)
    sig = np.array(rows.column("signature")[0].as_py(), dtype=np.uint32)
    keys = rows.column("band_keys")[0].as_py()
    assert keys == nd.band_keys(sig[None, :], bands, rows_per_band)[0].tolist() and len(set(keys)) == bands
    expected = sorted({nd.shingle_hash(s) for s in nd.shingles(docs[0]["text"])})
    assert rows.column("shingle_set").to_pylist() == [expected, None, [nd.shingle_hash("hi")]]
    # The estimate mode keeps no shingle sets; the same band values in two bands give different keys.
    assert "shingle_set" not in NearDuplicate(**NearDuplicate.validate_options({})).observe(batch).column_names
    same = np.zeros((1, 4), np.uint32)
    assert len(set(nd.band_keys(same, 2, 2)[0].tolist())) == 2


def test_state_schema_is_the_same_for_batches_differing_in_nullability():
    """The runner may hand batches whose doc_id is 'not null' in one file and nullable in another."""
    rng = random.Random(4)
    base = prose(rng, 120)
    batch = make_batch([{"text": base}, {"text": edit(rng, base, 1)}], needs=NearDuplicate.needs)

    def with_doc_id_nullable(nullable):
        schema = batch.schema.set(0, batch.schema.field("doc_id").with_nullable(nullable))
        return pa.RecordBatch.from_arrays(batch.columns, schema=schema)

    detector = NearDuplicate(**NearDuplicate.validate_options({}))
    one, two = detector.observe(with_doc_id_nullable(False).slice(0, 1)), detector.observe(
        with_doc_id_nullable(True).slice(1, 1))
    assert one.schema == two.schema == detector.state_schema()


def datasketch_clusters(batch: pa.RecordBatch, threshold=0.8) -> dict:
    """The in-memory answer, independently: datasketch's MinHashLSH over our signatures, pairs verified by
    MinHash.jaccard, union-find, the earliest (fetched_at, doc_id) kept. {tagged doc_id: (kept doc_id, jaccard)}."""
    sig, has = nd.signatures(batch.column("text"))
    lsh = MinHashLSH(threshold=threshold, num_perm=128, weights=(0.1, 0.9))
    parent = list(range(len(sig)))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    sketches = {}
    for i in np.flatnonzero(has).tolist():
        m = MinHash(hashvalues=sig[i], scheme="affine32")
        for j in lsh.query(m):
            if m.jaccard(sketches[j]) >= threshold:
                parent[find(i)] = find(j)
        lsh.insert(i, m)
        sketches[i] = m
    key = list(zip(batch.column("fetched_at").to_pylist(), batch.column("doc_id").to_pylist()))
    groups = {}
    for i in range(len(sig)):
        groups.setdefault(find(i), []).append(i)
    out = {}
    for members in groups.values():
        kept = min(members, key=lambda i: key[i])
        for i in members:
            if i != kept:
                out[key[i][1]] = (key[kept][1], sketches[i].jaccard(sketches[kept]))
    return out


def test_finish_over_state_files_equals_the_in_memory_answer(tmp_path):
    docs, expect = corpus()
    rng = random.Random(7)
    for c in range(30):  # more clusters, of varied size and edit distance
        base = prose(rng, 200)
        docs += [{"url": f"https://c{c}-{k}.example/", "text": edit(rng, base, rng.randint(0, 6)),
                  "fetched_at": f"2024-05-{1 + (c + k) % 28:02d}T00:00:00Z"} for k in range(rng.randint(2, 5))]
    batch = make_batch(docs, needs=NearDuplicate.needs)
    want = datasketch_clusters(batch)
    assert len(want) > 30
    tags = finish_over_state(tmp_path, batches_of(docs, 13), rows_per_file=5).to_pylist()
    got = {t["doc_id"]: (json.loads(t["evidence"])["cluster_id"], t["score"]) for t in tags
           if t["tag"] == "near_duplicate"}
    assert got.keys() == want.keys()
    for doc_id, (kept, jaccard) in want.items():
        assert got[doc_id][0] == kept and got[doc_id][1] == pytest.approx(jaccard)
    assert {t["category"] for t in tags if t["tag"] == "near_duplicate"} == {"duplicate"}
    # Five-domain clusters fetched over four days on domains never seen before look like campaigns.
    assert {t["tag"] for t in tags} == {"near_duplicate", "amplification"}


def test_finish_spills_candidates_to_the_scratch_dir_under_a_small_memory_limit(tmp_path):
    rng = random.Random(8)
    base = prose(rng, 300)
    docs = [{"text": edit(rng, base, 1)} for _ in range(3)] + [{"text": prose(rng, 100)} for _ in range(20)]
    tags = finish_over_state(tmp_path, batches_of(docs), {"memory_limit_mb": 64})
    assert tags.num_rows == 2
    spilled = pq.read_table(tmp_path / "scratch" / "candidates.parquet")
    assert spilled.column_names == ["a", "b"] and spilled.num_rows >= 2
    con = nd.duckdb_connection(str(tmp_path / "scratch"), 64)
    assert con.execute("SELECT current_setting('temp_directory'), current_setting('memory_limit')").fetchone()[0] \
        == str(tmp_path / "scratch")


def test_no_state_files_or_no_pairs_make_no_tags(tmp_path):
    detector = NearDuplicate(**NearDuplicate.validate_options({}))
    assert list(detector.finish(CorpusState(state_files=[], scratch_dir=str(tmp_path)))) == []
    assert finish_over_state(tmp_path, batches_of(DEFAULT_DOCS[3:])).num_rows == 0


# ----- amplification ------------------------------------------------------------------------------
T0 = datetime(2024, 6, 1, tzinfo=timezone.utc)


def campaign_docs(rng, text, n_domains, spread_hours, prefix, start=T0):
    return [{"url": f"https://www.{prefix}{k}.com/story", "text": edit(rng, text, rng.randint(0, 2)),
             "fetched_at": start + timedelta(hours=spread_hours * k / max(n_domains - 1, 1))}
            for k in range(n_domains)]


def test_amplification_tags_a_campaign_on_new_domains_and_not_syndication_by_old_ones(tmp_path):
    rng = random.Random(11)
    campaign = campaign_docs(rng, prose(rng, 200), 8, 48, "fresh")
    syndicated = campaign_docs(rng, prose(rng, 200), 8, 48, "paper")
    # The papers have published for a year; each fresh site's only other page is from a week before.
    history = [{"url": f"https://www.paper{k}.com/old", "text": prose(rng, 100), "fetched_at": T0 - timedelta(days=365)}
               for k in range(8)]
    history += [{"url": f"https://fresh{k}.com/about", "text": prose(rng, 100), "fetched_at": T0 - timedelta(days=7)}
                for k in range(8)]
    small = campaign_docs(rng, prose(rng, 200), 4, 24, "tiny")  # below amplification_min_domains
    slow = campaign_docs(rng, prose(rng, 200), 8, 24 * 20, "slow")  # spread over 20 days
    docs = campaign + syndicated + history + small + slow
    tags = finish_over_state(tmp_path, batches_of(docs, 9))
    amplified = [t for t in tags.to_pylist() if t["tag"] == "amplification"]
    ids = make_batch(docs, needs=NearDuplicate.needs).column("doc_id").to_pylist()
    assert sorted(t["doc_id"] for t in amplified) == sorted(ids[:8])  # every member, the earliest too
    evidence = json.loads(amplified[0]["evidence"])
    assert set(evidence) == {"cluster_id", "n_registered_domains", "domains", "first_seen", "last_seen",
                             "span_hours", "new_domain_share"}
    assert evidence["cluster_id"] == ids[0] and evidence["n_registered_domains"] == 8
    assert evidence["domains"] == sorted(f"fresh{k}.com" for k in range(8))
    assert evidence["first_seen"] == "2024-06-01T00:00:00Z" and evidence["span_hours"] == 48
    assert evidence["new_domain_share"] == 1.0
    assert {t["category"] for t in amplified} == {"poison"} and {t["score"] for t in amplified} == {1.0}
    # The other clusters are near duplicates all the same.
    assert sum(t["tag"] == "near_duplicate" for t in tags.to_pylist()) == 7 + 7 + 3 + 7

    # Looser options reach the small and the slow campaigns.
    loose = finish_over_state(tmp_path / "loose", batches_of(docs, 9),
                              {"amplification_min_domains": 4, "amplification_window_days": 21.0})
    assert sum(t["tag"] == "amplification" for t in loose.to_pylist()) == 8 + 4 + 8


def test_amplification_new_share_and_new_domain_days(tmp_path):
    rng = random.Random(12)
    docs = campaign_docs(rng, prose(rng, 200), 6, 10, "mixed")
    # Three of the six sites were first seen 40 days before the campaign, three 10 days before.
    docs += [{"url": f"https://mixed{k}.com/", "text": prose(rng, 80),
              "fetched_at": T0 - timedelta(days=40 if k < 3 else 10)} for k in range(6)]
    shares = {}
    for share, days in ((0.5, 30.0), (0.6, 30.0), (0.6, 45.0)):
        tags = finish_over_state(tmp_path / f"{share}-{days}", batches_of(docs),
                                 {"amplification_new_share": share, "amplification_new_domain_days": days})
        shares[share, days] = [t["score"] for t in tags.to_pylist() if t["tag"] == "amplification"]
    assert shares[0.5, 30.0] == [0.5] * 6 and shares[0.6, 30.0] == [] and shares[0.6, 45.0] == [1.0] * 6


# ----- known LLM text ------------------------------------------------------------------------------
def replace_share(rng, text, share):
    words = text.split()
    for i in rng.sample(range(len(words)), round(share * len(words))):
        words[i] = rng.choice(VOCAB).upper() + "x"
    return " ".join(words)


def test_known_llm_text_matches_an_edited_copy_of_a_reference_text_and_not_a_human_text(tmp_path):
    rng = random.Random(13)
    generated = [prose(rng, 300) for _ in range(5)]
    docs = [{"text": replace_share(rng, generated[2], 0.1)}, {"text": generated[4]}, {"text": prose(rng, 300)},
            {"text": prose(rng, 300)}, {"text": "..."}]
    references = {"gpt": [(f"gen-{k}", t) for k, t in enumerate(generated)], "other": [prose(rng, 300)]}
    tags = finish_over_state(tmp_path, batches_of(docs, 2), references=references)
    ids = make_batch(docs, needs=NearDuplicate.needs).column("doc_id").to_pylist()
    rows = sorted(tags.to_pylist(), key=lambda t: ids.index(t["doc_id"]))
    assert [(t["doc_id"], t["tag"], t["category"]) for t in rows] == [
        (ids[0], "known_llm_text", "llm"), (ids[1], "known_llm_text", "llm")]
    first, second = (json.loads(t["evidence"]) for t in rows)
    assert (first["reference"], first["ref_id"]) == ("gpt", "gen-2") and 0.2 <= first["jaccard"] < 0.5
    assert (second["reference"], second["ref_id"], second["jaccard"]) == ("gpt", "gen-4", 1.0)
    assert rows[0]["score"] == pytest.approx(first["jaccard"], abs=1e-4)
    # A higher reference_threshold drops the edited copy.
    strict = finish_over_state(tmp_path / "strict", batches_of(docs, 2), {"reference_threshold": 0.6},
                               references=references)
    assert strict.column("doc_id").to_pylist() == [ids[1]]


def test_reference_index_returns_verified_pairs_for_a_batch_of_signatures():
    # The index known_llm_text and the LLM evaluation's contamination check share.
    rng = random.Random(17)
    refs = [prose(rng, 200) for _ in range(6)]
    texts = [replace_share(rng, refs[3], 0.1), prose(rng, 200), refs[5], refs[3]]
    # shares a band with refs[1] (an LSH candidate) but its Jaccard is under 0.2: verification drops it
    texts.append(replace_share(random.Random(24), refs[1], 0.27))
    ref_sig, _ = nd.signatures(pa.array(refs))
    sig, _ = nd.signatures(pa.array(texts))
    index = nd.ReferenceIndex(ref_sig, 0.2, 0.1, 0.9)
    doc, ref, jaccard = index.matches(sig)
    assert list(zip(doc.tolist(), ref.tolist())) == [(0, 3), (2, 5), (3, 3)]
    assert 0.2 <= jaccard[0] < 0.9 and jaccard[1] == jaccard[2] == 1.0
    assert jaccard.tolist() == nd.estimated_jaccard(sig, doc, ref, other=ref_sig).tolist()
    assert [len(a) for a in nd.ReferenceIndex(ref_sig, 0.95).matches(sig[:2])] == [0, 0, 0]
    lenient = nd.ReferenceIndex(ref_sig, 0.05, 0.1, 0.9)
    lenient.bands, lenient.rows, lenient.keys, lenient.owner = index.bands, index.rows, index.keys, index.owner
    assert (4, 1) in zip(*(a.tolist() for a in lenient.matches(sig)[:2]))  # it is a candidate


@pytest.mark.parametrize("verify", ["estimate", "exact"])
def test_verification_in_small_blocks_gives_the_same_tags_as_in_one(tmp_path, monkeypatch, verify):
    """finish reads the candidates' signatures (or shingle sets) back in blocks, two at a time: blocks of one
    document each give the same clusters, kept documents, scores and campaigns as one block for all."""
    docs, _ = corpus()
    rng = random.Random(11)
    for c in range(12):
        base = prose(rng, 150)
        docs += [{"url": f"https://b{c}-{k}.example/", "text": edit(rng, base, rng.randint(0, 5)),
                  "fetched_at": f"2024-06-{1 + (c * 3 + k) % 28:02d}T00:00:00Z"} for k in range(rng.randint(2, 6))]
    rng.shuffle(docs)  # members of a cluster far apart in the store's order: pairs span blocks

    def tags(where):
        table = finish_over_state(where, batches_of(docs, 11), {"verify": verify}, rows_per_file=4)
        return sorted(table.to_pylist(), key=lambda t: (t["tag"], t["doc_id"]))

    one = tags(tmp_path / "one")
    monkeypatch.setattr(nd, "VERIFY_BLOCK_BYTES", 1)
    small = tags(tmp_path / "small")
    blocks = pa.ipc.open_file(str(tmp_path / "small" / "scratch" / "candidate_values.arrow")).num_record_batches
    assert pa.ipc.open_file(str(tmp_path / "one" / "scratch" / "candidate_values.arrow")).num_record_batches == 1
    assert blocks > 20 and small == one
    assert sum(t["tag"] == "near_duplicate" for t in one) > 20
