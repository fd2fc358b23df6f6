"""What a host's policy files say about one URL, as fetch-row columns (schemas/fetches.v2.json).

Two files per host, each fetched once per crawl by a downloader middleware
(middlewares.py) and evaluated here for every page fetched from that host:

- robots.txt, for every agent of ``[crawl] ai_agents``: would it be allowed to
  fetch this URL? Evaluated with the parser Scrapy obeys (Protego, through the
  RobotParser Scrapy's RobotsTxtMiddleware built from the robots.txt it fetched),
  so the answer for GPTBot is the one our own crawl's obedience rests on.
- ``/.well-known/tdmrep.json`` (W3C TDMRep community group): a JSON array of
  rules ``{"location", "tdm-reservation", "tdm-policy"}``; the first rule whose
  location pattern matches the URL's path applies. Patterns use the robots.txt
  syntax: a path prefix, ``*`` for any characters, ``$`` at the end anchors it.

Nothing here raises on what a site serves: a file that is not a JSON array is
``malformed``, a rule that breaks the format is skipped and named in the evidence.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

TDMREP_PATH = "/.well-known/tdmrep.json"
# The fetch-row columns this module fills (every fetch row carries all of them, null when not evaluated).
POLICY_COLUMNS = ("robots_status", "robots_sha256", "ai_agents_disallowed", "tdmrep_status", "tdmrep_sha256",
                  "tdm_reservation", "tdm_policy", "tdmrep_evidence")
# HTTP statuses that mean "the host has no such file" (no rules), as for robots.txt.
_NO_FILE = range(400, 500)


def robots_columns(parser, status: int | None, sha256: str | None, url: str, agents) -> dict:
    """Fetch-row columns from a host's robots.txt (``parser``: Scrapy's RobotParser; None: not available)."""
    if parser is None:
        return {}
    return {"robots_status": status, "robots_sha256": sha256,
            "ai_agents_disallowed": [a for a in agents if not parser.allowed(url, a)]}


def _location_regex(location: str) -> re.Pattern:
    anchored = location.endswith("$")
    body = location[:-1] if anchored else location
    return re.compile("".join(".*" if c == "*" else re.escape(c) for c in body) + ("$" if anchored else ""))


@dataclass
class TdmRepFile:
    """One host's tdmrep.json as fetched: its status, hash, valid rules (with their index) and problems."""

    status: str  # rules | none | malformed | robots_denied | error
    http_status: int | None = None
    sha256: str | None = None
    rules: list[tuple[int, dict, re.Pattern]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def from_response(cls, http_status: int, body: bytes) -> TdmRepFile:
        sha = hashlib.sha256(body).hexdigest()
        if http_status in _NO_FILE:
            return cls("none", http_status, sha)
        if http_status >= 500 or http_status < 200 or http_status >= 300:
            return cls("error", http_status, sha, problems=[f"HTTP {http_status}"])
        try:
            data = json.loads(body.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError) as exc:
            return cls("malformed", http_status, sha, problems=[f"not JSON: {exc}"[:300]])
        if not isinstance(data, list):
            return cls("malformed", http_status, sha, problems=[f"not a JSON array of rules but a {type(data).__name__}"])
        out = cls("rules", http_status, sha)
        for i, rule in enumerate(data):
            problem = _rule_problem(rule)
            if problem:
                out.problems.append(f"rule {i}: {problem}")
            else:
                out.rules.append((i, rule, _location_regex(rule["location"])))
        return out

    @classmethod
    def failed(cls, reason: str) -> TdmRepFile:
        return cls("error", problems=[reason[:300]])

    def columns(self, url: str) -> dict:
        """Fetch-row columns for ``url``: the first rule whose location matches its path (and query)."""
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        evidence: dict = {}
        out = {"tdmrep_status": self.status, "tdmrep_sha256": self.sha256}
        for i, rule, regex in self.rules:
            if regex.match(path):
                out["tdm_reservation"] = int(rule["tdm-reservation"])
                out["tdm_policy"] = rule.get("tdm-policy")
                evidence["rule"] = {**rule, "index": i}
                break
        if self.http_status is not None:
            evidence["http_status"] = self.http_status
        if self.problems:
            evidence["problems"] = self.problems
        out["tdmrep_evidence"] = json.dumps(evidence)
        return out


def _rule_problem(rule) -> str | None:
    if not isinstance(rule, dict):
        return "not an object"
    location = rule.get("location")
    if not isinstance(location, str) or not location:
        return "location must be a non-empty string"
    reservation = rule.get("tdm-reservation")
    if isinstance(reservation, bool) or reservation not in (0, 1):
        return "tdm-reservation must be 0 or 1"
    policy = rule.get("tdm-policy")
    if policy is not None:
        parts = urlsplit(policy) if isinstance(policy, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            return "tdm-policy must be an absolute http(s) URL"
    return None
