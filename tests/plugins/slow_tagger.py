"""A test plugin: tags every document, slowly, so a test can kill a tag run mid-way.

With ``hold_while`` set to a path, every batch also waits while that file exists: a test holds a tag run
open for exactly as long as its checks take, however slow the machine is.
"""

import os
import time

import provenance

__version__ = "1.0"


class SlowTagger(provenance.Detector):
    name = "slow_tagger"
    version = "1"
    category = "quality"
    needs = ("text",)
    options = {"sleep_s": 0.15, "hold_while": ""}

    def tag_batch(self, batch):
        time.sleep(self.options["sleep_s"])
        while self.options["hold_while"] and os.path.exists(self.options["hold_while"]):
            time.sleep(0.05)
        ids = batch.column("doc_id")
        return self.tags(ids, "seen", score=[0.5] * len(ids), evidence=[{"n": len(ids)}] * len(ids))


@provenance.hookimpl
def register_detectors(register):
    register(SlowTagger)
