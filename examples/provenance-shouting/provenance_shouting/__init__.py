"""provenance-shouting: an example Provenance Guard plugin, written as a third party would write one.

It implements two hooks:

* ``register_detectors``: one per-document detector, ``shouting``, that scores
  each document by the fraction of its letters that are upper case and tags
  those above ``min_fraction`` (category ``quality``). Everything is computed
  with pyarrow.compute over the whole batch: no Python loop over rows.
* ``register_commands``: ``provenance shouting-score TEXT`` prints the score
  the detector would give TEXT (handy when choosing ``min_fraction``).
"""

from __future__ import annotations

import click
import pyarrow as pa
import pyarrow.compute as pc

import provenance


def upper_fraction(text: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(fraction of letters that are upper case, number of letters) per string; 0 letters gives 0.0."""
    letters = pc.utf8_length(pc.replace_substring_regex(pc.fill_null(text, ""), r"[^\p{L}]", ""))
    upper = pc.utf8_length(pc.replace_substring_regex(pc.fill_null(text, ""), r"[^\p{Lu}]", ""))
    fraction = pc.divide(pc.cast(upper, pa.float64()), pc.max_element_wise(pc.cast(letters, pa.float64()), 1.0))
    return fraction, letters


class Shouting(provenance.Detector):
    """Documents written mostly in capital letters (spam, scraped banners, forum noise)."""

    name = "shouting"
    version = "1"
    category = "quality"
    needs = ("text",)
    options = {"min_fraction": 0.6, "min_letters": 12}

    @classmethod
    def validate_options(cls, options):
        merged = super().validate_options(options)
        if not 0.0 < merged["min_fraction"] <= 1.0:
            raise provenance.detectors.DetectorError(
                f"detector shouting: min_fraction must be in (0, 1], got {merged['min_fraction']}")
        return merged

    def tag_batch(self, batch: pa.RecordBatch):
        fraction, letters = upper_fraction(batch.column("text"))
        hit = pc.and_(pc.greater_equal(fraction, self.options["min_fraction"]),
                      pc.greater_equal(letters, self.options["min_letters"]))
        score = pc.round(fraction.filter(hit), 3)
        evidence = pc.binary_join_element_wise(
            '{"upper_fraction": ', pc.cast(score, pa.string()),
            ', "letters": ', pc.cast(letters.filter(hit), pa.string()), "}", "")
        return self.tags(batch.column("doc_id").filter(hit), "shouting", score=score, evidence=evidence)


@provenance.hookimpl
def register_detectors(register):
    register(Shouting)


@provenance.hookimpl
def register_commands(cli):
    @cli.command(name="shouting-score")
    @click.argument("text")
    def shouting_score(text):
        """Print the upper-case fraction the shouting detector computes for TEXT."""
        fraction, letters = upper_fraction(pa.array([text]))
        click.echo(f"{fraction[0].as_py():.3f} ({letters[0].as_py()} letters)")
