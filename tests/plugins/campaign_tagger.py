"""A test plugin for the campaigns: one tag per document, its score a function of the text.

Environment (not detector options, so no provenance.toml is needed): CAMPAIGN_TAGGER_SLEEP_S per
batch (so a kill can land mid-run) and CAMPAIGN_TAGGER_EVIDENCE_BYTES of hard-to-compress evidence
per tag (so tags take real disk space in the disk-full campaign).
"""

import hashlib
import os
import time

import provenance

__version__ = "1.0"


class CampaignTagger(provenance.Detector):
    name = "campaign_tagger"
    version = "1"
    category = "quality"
    needs = ("text_sha256",)

    def tag_batch(self, batch):
        time.sleep(float(os.environ.get("CAMPAIGN_TAGGER_SLEEP_S", 0)))
        evidence_bytes = int(os.environ.get("CAMPAIGN_TAGGER_EVIDENCE_BYTES", 0))
        ids = batch.column("doc_id").to_pylist()
        shas = batch.column("text_sha256").to_pylist()
        scores = [int((sha or "0")[:4], 16) / 0xFFFF for sha in shas]
        evidence = None
        if evidence_bytes:
            evidence = [{"padding": _noise(doc_id, evidence_bytes)} for doc_id in ids]
        return self.tags(ids, "seen", score=scores, evidence=evidence)


def _noise(seed: str, size: int) -> str:
    out, block = [], seed.encode()
    while sum(map(len, out)) < size:
        block = hashlib.sha512(block).digest()
        out.append(block.hex())
    return "".join(out)[:size]


@provenance.hookimpl
def register_detectors(register):
    register(CampaignTagger)
