"""Doorway pages: many pages of one registered domain that are one template with a few slots (city, service).

../shared/docs/threat-model.md, section 9: an SEO spammer (or a poisoner amplifying a claim) publishes the same
text under many URLs of a host, changing only a city or service name per page. Per-document repetition
statistics cannot tell stuffing from real tables (Reuters' earnings reports repeat as much as moderate
stuffing), so this detector reads the cross-document signal: the pages of a host that agree token for token
except at a few short places, where each page puts its own value.

Corpus-level and state-keeping: ``observe`` keeps per document its registered domain, its token count and a
MinHash signature (``num_perm`` values) of its set of words, lower-cased with outer punctuation stripped (words,
not shingles: a slot changes one word of the set but every shingle across it). ``finish`` groups the signatures
per domain in DuckDB (only domains with ``min_pages`` or more), joins pages that share a band of the signature
(candidates: word-set Jaccard above about 0.6), then verifies each candidate group on the texts of its pages only
(one DuckDB scan of the document files per chunk of groups): every page is aligned token by token with the
group's most central page (most band collisions; ``difflib``), and the pages that did not fit are tried again
around the next central page (pages whose signature is close to its own). A page is aligned when at least
``min_template_share`` of its tokens align, every differing place is at most ``max_slot_tokens`` tokens long, at
most ``max_slot_values`` distinct values fill them and one holds a letter (pages differing only in numbers and
dates are a listing or an archive). The group's *slots* are then the places of the central page where over 20%
of the aligned pages differ (``SLOT_AGREEMENT``); none may be longer than ``max_slot_tokens``. A page fits the
template when its values at the slots are short (``max_slot_tokens``), few (``max_slot_values``) and one word
value (letters, no digits) fills two slots or more: a doorway names its city or service again and again, while
product pages differing in their fields, thin pages under much boilerplate, or earnings tables put a different
value at every place. A group with ``min_pages`` or more fitting pages, each filling the slots differently, is
tagged ``doorway_page`` (category ``poison``) on every fitting page; score 0.9. A template that names its city
once per page is not caught.
Evidence: the domain, the group size, the template (slots written ``{}``, shortened), this page's slot values and
a sample of other pages' values, the central page's doc_id.

Pages that share only boilerplate (navigation, a documentation header, a shop's footer) differ in one long
run, not in short slots; the same wire story on many hosts is one page per host. Neither is tagged.
"""

from __future__ import annotations

import difflib
import re
import zlib
from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import provenance
from provenance.arrays import unique_sorted
from provenance.detectors import DetectorError
from provenance.sql import sql_list

_STRIP = "\"'()[]{}<>.,;:!?«»“”‘’*-–—|/"
_PRIME = (1 << 61) - 1
_LETTER = re.compile(r"[^\W\d_]")
MAX_ALIGN_TOKENS = 3000  # alignment cost grows with length; a doorway's template shows in its first pages' worth
TEMPLATE_CHARS = 300
SLOT_AGREEMENT = 0.8  # a template word: the same on this share of the pages; elsewhere a slot
MIN_SIGNATURE_MATCH = 0.5  # signature values equal to the central page's for a page to be aligned
TEXTS_PER_CHUNK = 50_000  # candidate pages whose texts are read in one scan of the document files
MAX_ROUNDS = 20  # templates looked for per candidate group: each round aligns the group's pages once
SAMPLE_VALUES = 10  # other pages' slot values shown in the evidence
PAGES_PER_PART = 50_000  # signature rows read from DuckDB at a time; one domain's pages in memory, not all
DUCKDB_MEMORY_MB = 512  # beyond it DuckDB's sort spills to the scratch directory

# The pages of every domain with min_pages or more, a domain's pages together in doc_id order. A sort, which
# DuckDB spills, not list() per domain, which it does not: the lists of 1M pages held 1.4 GB at once
HOSTS_SQL = """
WITH s AS (SELECT registered_domain, doc_id, sig FROM read_parquet({files})),
big AS (SELECT registered_domain FROM s GROUP BY registered_domain HAVING count(*) >= {min_pages})
SELECT registered_domain, doc_id, sig FROM s SEMI JOIN big USING (registered_domain)
ORDER BY registered_domain, doc_id
"""


def domain_pages(reader):
    """(domain, [doc_id, ...], signatures as one uint32 row per page) per domain, from the sorted rows of
    HOSTS_SQL in Arrow batches (a domain's pages may span batches)."""
    current, doc_ids, sigs = None, [], []
    for part in reader:
        domains = part.column(0).to_pylist()
        ids = part.column(1).to_pylist()
        pages = part.column(2)
        start = 0
        for k in range(1, len(domains) + 1):
            if k < len(domains) and domains[k] == domains[start]:
                continue
            if domains[start] != current:
                if current is not None:
                    yield current, doc_ids, np.concatenate(sigs)
                current, doc_ids, sigs = domains[start], [], []
            run = pages.slice(start, k - start)
            doc_ids.extend(ids[start:k])
            sigs.append(run.flatten().to_numpy(zero_copy_only=False).astype(np.uint32).reshape(k - start, -1))
            start = k
    if current is not None:
        yield current, doc_ids, np.concatenate(sigs)


def _permutations(num_perm: int):
    rng = np.random.RandomState(1)  # fixed: stored signatures must stay comparable across runs
    return (rng.randint(1, 1 << 31, num_perm).astype(np.uint64),
            rng.randint(0, 1 << 31, num_perm).astype(np.uint64))


def words(text: str) -> list[str]:
    """Comparison keys of the whitespace tokens of ``text``: lower-cased, outer punctuation stripped."""
    return [t.strip(_STRIP) for t in text.lower().split()]


def signature(keys: list[str], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MinHash of the set of ``keys`` (32-bit values)."""
    # single words, not shingles: a slot changes one word of the set, but every shingle across it
    x = unique_sorted(np.fromiter((zlib.crc32(w.encode()) for w in keys), np.uint64, len(keys)))[:, None]
    # (a*x + b) mod 2^61-1 without overflow: x < 2^32, a < 2^31
    return (((a[None, :] * x + b[None, :]) % np.uint64(_PRIME)) & np.uint64(0xFFFFFFFF)).min(axis=0)


def fit(center: list[str], page: list[str], opts: dict):
    """``page`` aligned with the central page ``center`` (center index -> page index, None where they differ)
    and None; or None and why they differ too much."""
    sm = difflib.SequenceMatcher(None, center, page, autojunk=False)
    matched = sum(m.size for m in sm.get_matching_blocks())
    if matched < opts["min_template_share"] * max(len(center), len(page)):
        return None, "template_share"
    values = []
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "equal":
            continue
        if max(i2 - i1, j2 - j1) > opts["max_slot_tokens"]:
            return None, "long_difference"
        values.append(" ".join(page[j1:j2]))
    distinct = {v for v in values if v}
    if not values or len(distinct) > opts["max_slot_values"] or not any(_LETTER.search(v) for v in distinct):
        return None, "slot_values"
    aligned = [None] * len(center)  # center index -> page index, for the tokens the two share
    for m in sm.get_matching_blocks():
        for k in range(m.size):
            aligned[m.a + k] = m.b + k
    return aligned, None


def word_value(value: str) -> bool:
    """A city or service name: letters (3 or more), no digits."""
    return not any(ch.isdigit() for ch in value) and sum(ch.isalpha() for ch in value) >= 3


def slot_values(page: list[str], aligned: list, places, max_tokens: int, max_values: int):
    """The distinct values ``page`` puts at ``places`` (index ranges of the central page), in order; None when
    the page does not fill them as a doorway does: a value longer than ``max_tokens``, more than ``max_values``
    values, or no word value (letters, no digits) that fills two places or more (the city named again and
    again; pages differing in unrelated words or in numbers do not repeat them)."""
    values = []
    for i, j in places:
        left = next((aligned[k] for k in range(i - 1, -1, -1) if aligned[k] is not None), -1)
        right = next((aligned[k] for k in range(j, len(aligned)) if aligned[k] is not None), len(page))
        if right - left - 1 > max_tokens:
            return None
        values.append(" ".join(page[left + 1:right]))
    distinct = list(dict.fromkeys(v for v in values if v))
    if len(distinct) > max_values or not any(values.count(v) >= 2 and word_value(v) for v in distinct):
        return None
    return tuple(distinct)


def consensus_slots(alignments, n_center: int, page_lengths) -> list[tuple[int, int]]:
    """The places of the central page (index ranges; (i, i) for words the pages add before token i) where at
    least ``1 - SLOT_AGREEMENT`` of the other pages differ from it."""
    alignments = list(alignments)
    matched = np.zeros(n_center, int)
    inserted = np.zeros(n_center + 1, int)
    for aligned, length in zip(alignments, page_lengths):
        previous = -1
        for k, j in enumerate(aligned + [length]):
            if j is not None:
                if k < n_center:
                    matched[k] += 1
                if j > previous + 1:  # page words between this token and the last aligned one
                    inserted[k] += 1
                previous = j
    limit = (1 - SLOT_AGREEMENT) * len(alignments)
    slot = matched < SLOT_AGREEMENT * len(alignments)
    places, k = [], 0
    while k <= n_center:
        if k < n_center and slot[k]:
            start = k
            while k < n_center and slot[k]:
                k += 1
            places.append((start, k))
        else:
            if inserted[k] > limit and not (places and places[-1][1] == k):
                places.append((k, k))
            k += 1
    return places


class DoorwayPages(provenance.CorpusDetector):
    """Pages of one domain that are one template with a few slots filled differently (city, service)."""

    name = "doorway_pages"
    version = "1"
    category = "poison"
    needs = ("registered_domain", "text")
    options = {"min_pages": 5, "min_tokens": 20, "num_perm": 32, "bands": 8, "min_template_share": 0.6,
               "max_slot_tokens": 5, "max_slot_values": 6}
    keeps_state = True
    state_version = "1"
    state_options = ("min_tokens", "num_perm")

    @classmethod
    def validate_options(cls, options):
        merged = super().validate_options(options)
        if merged["min_pages"] < 2 or merged["min_tokens"] < 3:
            raise DetectorError("detector doorway_pages: min_pages must be >= 2 and min_tokens >= 3")
        if merged["bands"] < 1 or merged["num_perm"] % merged["bands"]:
            raise DetectorError("detector doorway_pages: bands must be >= 1 and divide num_perm")
        if not 0.0 < merged["min_template_share"] <= 1.0:
            raise DetectorError("detector doorway_pages: min_template_share must be in (0, 1]")
        if merged["max_slot_tokens"] < 1 or merged["max_slot_values"] < 1:
            raise DetectorError("detector doorway_pages: max_slot_tokens and max_slot_values must be >= 1")
        return merged

    def observe(self, batch: pa.RecordBatch):
        a, b = _permutations(self.options["num_perm"])
        doc_ids, domains, sigs = [], [], []
        for doc_id, domain, text in zip(batch.column("doc_id").to_pylist(),
                                        batch.column("registered_domain").to_pylist(),
                                        pc.fill_null(batch.column("text"), "").to_pylist()):
            keys = words(text)
            if domain is None or len(keys) < self.options["min_tokens"]:
                continue
            doc_ids.append(doc_id)
            domains.append(domain)
            sigs.append(signature(keys[:MAX_ALIGN_TOKENS], a, b).astype(np.uint32))
        if not doc_ids:
            return None
        flat = pa.array(np.concatenate(sigs), pa.uint32())
        return pa.table({"doc_id": doc_ids, "registered_domain": domains,
                         "sig": pa.FixedSizeListArray.from_arrays(flat, self.options["num_perm"]).cast(
                             pa.list_(pa.uint32()))})

    def finish(self, corpus):
        if not corpus.state_files:
            return
        opts = self.options
        with corpus.connect(DUCKDB_MEMORY_MB) as con:
            groups = []  # (domain, [doc_id, ...], {doc_id: number of band collisions}, signatures)
            reader = con.sql(HOSTS_SQL.format(files=sql_list(corpus.state_files),
                                              min_pages=opts["min_pages"])).to_arrow_reader(PAGES_PER_PART)
            # the signatures stay numpy (as Python lists, 32 ints a page, 1,000 domains took 1.6 GB at 1M)
            for domain, doc_ids, sigs in domain_pages(reader):
                groups.extend((domain, *found) for found in self._candidates(doc_ids, sigs))
            # the texts of candidate pages only, a chunk of groups at a time: memory bounded by the chunk
            chunk, size = [], 0
            for group in groups + [None]:
                if group is not None:
                    chunk.append(group)
                    size += len(group[1])
                if chunk and (group is None or size >= TEXTS_PER_CHUNK):
                    con.register("wanted", pa.table({"doc_id": [d for _, g, _, _ in chunk for d in g]}))
                    texts = dict(con.execute(f"SELECT doc_id, text FROM read_parquet({sql_list(corpus.doc_files)}) "
                                             "WHERE doc_id IN (SELECT doc_id FROM wanted)").fetchall())
                    for domain, doc_ids, collisions, sigs in chunk:
                        yield from self._templates(domain, doc_ids, collisions, sigs, texts)
                    chunk, size = [], 0

    def _templates(self, domain, doc_ids, collisions, sigs, texts):
        """The tags of every template found in one candidate group."""
        # a candidate group may hold several templates, or a template among pages it merely resembles:
        # take the most central page left, its fitting pages form one template; repeat on the rest
        order = sorted(range(len(doc_ids)), key=lambda i: (-collisions[i], doc_ids[i]))
        remaining = np.array(order)
        for _ in range(MAX_ROUNDS):
            if len(remaining) < self.options["min_pages"]:
                break
            # align only the pages whose signature is close to the central page's: a chain of look-alikes
            # in a large group costs a vectorised comparison, not an alignment each
            close = remaining[(sigs[remaining] == sigs[remaining[0]]).mean(axis=1) >= MIN_SIGNATURE_MATCH]
            found = self._verify(domain, [doc_ids[i] for i in close], texts)
            if found is None:
                remaining = remaining[1:]
            else:
                yield found
                tagged = set(found.column("doc_id").to_pylist())
                remaining = np.array([i for i in remaining[1:] if doc_ids[i] not in tagged], dtype=int)

    def _candidates(self, doc_ids, sigs: np.ndarray):
        """Groups of ``min_pages``+ pages of one domain joined by a shared signature band (union-find): their
        doc_ids, band collisions and signatures (``sigs``: one uint32 row per page)."""
        rows = sigs.shape[1] // self.options["bands"]
        parent = list(range(len(doc_ids)))

        def root(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        collisions = Counter()
        for band in range(self.options["bands"]):
            seen = {}
            # each page's band as bytes: equal bytes, equal values
            keys = np.ascontiguousarray(sigs[:, band * rows:(band + 1) * rows]).view(f"V{4 * rows}").ravel()
            for i, key in enumerate(keys.tolist()):
                j = seen.setdefault(key, i)
                if j != i:
                    parent[root(i)] = root(j)
                    collisions[i] += 1
                    collisions[j] += 1
        members = defaultdict(list)
        for i in range(len(doc_ids)):
            members[root(i)].append(i)
        for group in members.values():
            if len(group) >= self.options["min_pages"]:
                yield [doc_ids[i] for i in group], [collisions[i] for i in group], sigs[group]

    def _verify(self, domain, doc_ids, texts):
        """The tags of the pages of ``doc_ids`` that fit the template of the first one (the central page), or
        None."""
        opts = self.options
        tokens = {d: (texts.get(d) or "").split()[:MAX_ALIGN_TOKENS] for d in doc_ids}
        keys = {d: [t.strip(_STRIP).lower() for t in toks] for d, toks in tokens.items()}
        center = doc_ids[0]
        alignments = {}
        for d in doc_ids[1:]:
            aligned, _ = fit(keys[center], keys[d], opts)
            if aligned is not None:
                alignments[d] = aligned
        if len(alignments) + 1 < opts["min_pages"]:
            return None
        places = consensus_slots(alignments.values(), len(keys[center]), [len(keys[d]) for d in alignments])
        # a template's slots sit at the same few places on every page; pages that merely share boilerplate
        # differ at places of their own, which together make one long run
        if not places or max(j - i for i, j in places) > opts["max_slot_tokens"]:
            return None
        alignments[center] = list(range(len(keys[center])))
        fitting = {d: slot_values(keys[d], aligned, places, opts["max_slot_tokens"], opts["max_slot_values"])
                   for d, aligned in alignments.items()}
        fitting = {d: v for d, v in fitting.items() if v is not None}
        if len(fitting) < opts["min_pages"] or len(set(fitting.values())) < opts["min_pages"]:
            return None  # too few pages, or copies of one page (a duplicate, not a template)
        template = self._template(tokens[center], places)
        sample = sorted(set(fitting.values()))[:SAMPLE_VALUES]
        ids = sorted(fitting)
        evidence = [{"registered_domain": domain, "n_pages": len(ids), "template": template,
                     "slot_values": list(fitting[d]), "other_slot_values": [list(v) for v in sample],
                     "central_doc_id": center} for d in ids]
        return self.tags(ids, "doorway_page", score=0.9, evidence=evidence)

    @staticmethod
    def _template(center_tokens, places) -> str:
        """The central page's text with every differing place written ``{}``, cut for display."""
        slot = [False] * len(center_tokens)
        inserted = {i for i, j in places if i == j}  # other pages hold words before center token i
        for i, j in places:
            slot[i:j] = [True] * (j - i)
        out = []
        for k in range(len(center_tokens) + 1):
            if (k in inserted or (k < len(center_tokens) and slot[k])) and out[-1:] != ["{}"]:
                out.append("{}")
            if k < len(center_tokens) and not slot[k]:
                out.append(center_tokens[k])
        text = " ".join(out)
        return text if len(text) <= TEMPLATE_CHARS else text[:TEMPLATE_CHARS - 1] + "…"


@provenance.hookimpl
def register_detectors(register):
    register(DoorwayPages)
