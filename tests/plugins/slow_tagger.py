"""A test plugin: tags every document, slowly, so a test can kill a tag run mid-way."""

import time

import provenance

__version__ = "1.0"


class SlowTagger(provenance.Detector):
    name = "slow_tagger"
    version = "1"
    category = "quality"
    needs = ("text",)
    options = {"sleep_s": 0.15}

    def tag_batch(self, batch):
        time.sleep(self.options["sleep_s"])
        ids = batch.column("doc_id")
        return self.tags(ids, "seen", score=[0.5] * len(ids), evidence=[{"n": len(ids)}] * len(ids))


@provenance.hookimpl
def register_detectors(register):
    register(SlowTagger)
