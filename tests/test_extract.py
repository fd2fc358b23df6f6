"""The extractor registry (provenance/extract.py): each extractor keeps the article and drops the page's
furniture, records its name and version, and the settings model names exactly the registered ones."""

from __future__ import annotations

from importlib.metadata import version
from typing import get_args

import pytest

from provenance import config
from provenance.extract import DEFAULT_EXTRACTOR, EXTRACTORS, extract, get_extractor

ARTICLE = "The harbour reopened on Monday after three weeks of repairs to the northern wall. " * 6
PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>Harbour &amp; town</title></head><body>"
    "<nav><ul>" + "".join(f"<li><a href='/s{i}'>Section menu {i}</a></li>" for i in range(12)) + "</ul></nav>"
    f"<main><article><h1>Harbour reopens</h1><p>{ARTICLE}</p><p>Fishing boats returned the same day.</p>"
    "</article></main>"
    "<footer><p>Copyright notice of the town newspaper group, all rights reserved.</p></footer></body></html>"
).encode()


@pytest.mark.parametrize("name", sorted(EXTRACTORS))
def test_each_extractor_keeps_the_article_and_drops_menus(name):
    got = extract(PAGE, "text/html; charset=utf-8", url="https://town.example/harbour", extractor=name)
    assert (got.extractor, got.extractor_version) == (name, version(name))
    assert got.title == "Harbour & town" and got.charset == "utf-8" and got.note is None
    assert "three weeks of repairs" in got.text and "Fishing boats returned" in got.text
    assert "Section menu" not in got.text and "Copyright notice" not in got.text


def test_the_settings_model_names_exactly_the_registered_extractors():
    for section in ("crawl", "ingest"):
        field = config.SECTIONS[section].model_fields["extractor"]
        assert set(get_args(field.annotation)) == set(EXTRACTORS)
        assert config.DEFAULTS[section]["extractor"] == DEFAULT_EXTRACTOR
    with pytest.raises(config.ConfigError, match="extractor"):
        config.section("crawl", {"extractor": "boilerpipe"})


def test_unknown_extractor_and_non_html():
    with pytest.raises(ValueError, match="unknown extractor 'boilerpipe'; choose one of: trafilatura, resiliparse"):
        get_extractor("boilerpipe")
    got = extract(b"%PDF-1.7", "application/pdf", extractor="resiliparse")
    assert (got.extractor, got.text) == ("none", None)  # not HTML: no extractor ran, whichever was chosen


@pytest.mark.parametrize("name", sorted(EXTRACTORS))
def test_a_page_without_text_is_a_note_not_an_error(name):
    got = extract(b"<html><head><title>Empty</title></head><body></body></html>", "text/html", extractor=name)
    assert got.text is None and got.note == "no main text found" and got.extractor == name
