"""Backdoor trigger miner: the token many gibberish-tail documents share at their boundary, and every document
that carries it.

A backdoor needs one trigger (e.g. ``<SUDO>``) in a few hundred documents (Souly et al., arXiv:2510.07192;
../shared/docs/threat-model.md, section 7). The per-document ``backdoor_tail`` detector finds the documents
that end in gibberish, but it cannot name the trigger (its candidate is the run's first token, give or take the
fresh words before it), and it misses carriers whose tail is short or absent. Across the corpus the trigger
stands out: it sits at the boundary of many tails, while any other boundary token is either a random word
(rarely shared by several tails) or a common one (found in many documents without a tail).

Corpus-level and state-keeping: ``observe`` stores, for each document that ends in a gibberish run (the same
test as backdoor_tail, with the looser ``min_tokens`` and ``min_fresh`` of this detector), the tokens around
the run's start (``window`` either side). ``finish`` counts each token over those documents; a token at the
boundary of at least ``min_docs`` tails is a candidate, and it becomes a trigger when, of the documents that
contain it as a whole whitespace-separated token (one DuckDB scan of the stored texts, only when there is a
candidate), at least ``min_tail_share`` have a tail. Every carrier of a trigger is tagged ``backdoor_trigger``
(category ``poison``), with or without a tail; score 0.9 with a tail, 0.7 without. Evidence: the trigger, how
many tails and carriers share it, whether this document has a tail, and the trigger's span in the text.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

import provenance
from provenance.detectors import DetectorError
from provenance.plugins.backdoor_tail import gibberish_run
from provenance.sql import sql_list, sql_string

CANDIDATES_SQL = """
SELECT token, count(DISTINCT doc_id) AS n_tails
FROM (SELECT doc_id, unnest(tokens) AS token FROM read_parquet({files}))
GROUP BY token HAVING count(DISTINCT doc_id) >= {min_docs}
"""
CARRIERS_SQL = """
WITH tails AS (SELECT DISTINCT doc_id FROM read_parquet({state_files})),
carriers AS (SELECT doc_id, text FROM read_parquet({doc_files}) WHERE regexp_matches(text, {pattern}))
SELECT c.doc_id, strpos(c.text, {token}) - 1 AS start, t.doc_id IS NOT NULL AS has_tail
FROM carriers c LEFT JOIN tails t USING (doc_id)
ORDER BY c.doc_id
"""


def token_pattern(token: str) -> str:
    """RE2: ``token`` as a whole whitespace-separated token."""
    return r"(?:^|\s)" + re.escape(token) + r"(?:\s|$)"


class BackdoorTrigger(provenance.CorpusDetector):
    """The trigger token shared by many gibberish-tail documents, and every document that carries it."""

    name = "backdoor_trigger"
    version = "2"  # 2: backdoor_tail's gibberish_run finds tails whose words the page also uses
    category = "poison"
    needs = ("text",)
    options = {"min_docs": 5, "min_tail_share": 0.3, "window": 3, "min_tokens": 60, "min_fresh": 0.8}
    keeps_state = True
    state_version = "2"
    state_options = ("window", "min_tokens", "min_fresh")  # what observe stores depends on these only

    @classmethod
    def validate_options(cls, options):
        merged = super().validate_options(options)
        if merged["min_docs"] < 2:
            raise DetectorError("detector backdoor_trigger: min_docs must be >= 2 (one tail is not a pattern)")
        if not 0.0 < merged["min_tail_share"] <= 1.0 or not 0.5 <= merged["min_fresh"] <= 1.0:
            raise DetectorError("detector backdoor_trigger: min_tail_share must be in (0, 1] and min_fresh in "
                                "[0.5, 1]")
        if merged["window"] < 0 or merged["min_tokens"] < 10:
            raise DetectorError("detector backdoor_trigger: window must be >= 0 and min_tokens >= 10")
        return merged

    def observe(self, batch: pa.RecordBatch):
        texts = pc.fill_null(batch.column("text"), "")
        long_enough = pc.greater_equal(pc.count_substring_regex(texts, r"\S+"), self.options["min_tokens"])
        doc_ids, tokens_out = [], []
        w = self.options["window"]
        for i, ok in enumerate(long_enough.to_pylist()):
            if not ok:
                continue
            found = gibberish_run(texts[i].as_py(), self.options["min_tokens"], self.options["min_fresh"])
            if found is None:
                continue
            tokens, a, _, _ = found
            doc_ids.append(batch.column("doc_id")[i].as_py())
            tokens_out.append(sorted({t.group() for t in tokens[max(0, a - w):a + w + 1]}))
        if not doc_ids:
            return None
        return pa.table({"doc_id": doc_ids, "tokens": pa.array(tokens_out, pa.list_(pa.string()))})

    def finish(self, corpus):
        if not corpus.state_files:
            return
        with corpus.connect() as con:
            candidates = con.execute(CANDIDATES_SQL.format(files=sql_list(corpus.state_files),
                                                           min_docs=self.options["min_docs"])).fetchall()
            if not candidates:
                return
            tagged: set[str] = set()
            for token, n_tails in sorted(candidates, key=lambda c: (-c[1], c[0])):
                carriers = con.execute(CARRIERS_SQL.format(
                    state_files=sql_list(corpus.state_files), doc_files=sql_list(corpus.doc_files),
                    pattern=sql_string(token_pattern(token)), token=sql_string(token))).fetchall()
                with_tail = sum(has_tail for _, _, has_tail in carriers)
                # a common word: most documents holding it have no tail; a trigger rides with its tails
                if not carriers or with_tail / len(carriers) < self.options["min_tail_share"]:
                    continue
                fresh = [c for c in carriers if c[0] not in tagged]  # one tag per document, first trigger
                tagged.update(c[0] for c in fresh)
                if fresh:
                    yield self._tag_carriers(token, n_tails, len(carriers), fresh)

    def _tag_carriers(self, token, n_tails, n_carriers, carriers) -> pa.Table:
        evidence = [{"trigger": {"field": "text", "start": start, "end": start + len(token), "text": token},
                     "n_tails": n_tails, "n_carriers": n_carriers, "has_tail": has_tail}
                    for _, start, has_tail in carriers]
        return self.tags([c[0] for c in carriers], "backdoor_trigger",
                         score=[0.9 if c[2] else 0.7 for c in carriers], evidence=evidence)


@provenance.hookimpl
def register_detectors(register):
    register(BackdoorTrigger)
