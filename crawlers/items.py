"""The item a provenance spider yields for every page response: the body plus everything known about its fetch."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class FetchedPage:
    url: str  # as requested: the first URL of a redirect chain
    final_url: str  # after redirects
    redirect_chain: list[str]  # URLs before final_url, in order ([] without redirects)
    status: int
    headers: list[tuple[str, str]]  # as received, repeats kept
    body: bytes = field(repr=False)  # after transfer/content decoding; repr=False keeps bodies out of logs
    fetched_at: datetime
    resolved_ip: str | None
    depth: int = 0
    expected_sha256: str | None = None  # URL lists: the hash the body should have
    policy: dict | None = None  # what the host's robots.txt and tdmrep.json say about the URL (fetch-row columns)
    confirmation: bool = False  # the confirmation fetch of a page this crawl found changed ([crawl] confirm_after_s)
