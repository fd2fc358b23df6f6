"""Resumable crawls: Scrapy's JOBDIR plus a journal that survives SIGKILL.

Scrapy's JOBDIR (``STORE/_jobs/<crawl_id>/``) persists the request queue and
the seen-request fingerprints, but only on a *graceful* stop (Ctrl-C once,
SIGTERM): the queue's index is written when the spider closes. After a
SIGKILL or a power cut it is stale, and requests popped for download whose
results were not yet committed are gone from it.

So the spider also appends to ``frontier.jsonl`` in the same directory:

  {"spider": name}                    once, when the job starts
  {"run": run_id}                     each run that works on the job
  {"s": url, "k": kind, "d": depth}   before a request is handed to Scrapy
  {"c": [url, ...]}                   after a store commit that holds those URLs' fetch rows
  {"v": url, "d": depth, "doc": doc_id, "prev": doc_id}
                                      a confirmation fetch planned (the page was found changed: doc
                                      replaced prev; [crawl] confirm_after_s)
  {"vc": [url, ...]}                  after a store commit that holds those URLs' confirmation fetch rows

Resuming then means:
  * graceful stop (a ``paused`` marker was written): Scrapy restores its own
    queue; the journal only tells the spider what it already requested/finished;
  * anything else: Scrapy's queue files are discarded and every URL requested
    but not committed is requested again. Pages committed before the kill are
    not fetched again: a kill can land between a commit and its ``c`` line, so
    the store's fetch rows of the job's runs count as committed too
    (``reconcile``); a page fetched twice would be stored once anyway, because
    DocumentSink drops doc_ids the store already has.

Confirmations planned but not fetched when a run stopped (killed or stopped
gracefully) are planned again by the next run of the job, with a new random
delay, for each page whose own fetch row was committed (``pending_confirmations``):
its changed document is in the store, and the confirmation compares with it. A
page whose fetch was not committed is requested again anyway, and plans its own
confirmation if it is still changed. A crawl only finishes once its
confirmations are answered, so a finished job leaves none behind.

A crawl that finishes (reason 'finished') deletes its job directory, so the
next crawl of the same crawl_id is a fresh, incremental re-crawl.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from w3lib.url import canonicalize_url

JOURNAL = "frontier.jsonl"
PAUSED = "paused"
# Scrapy's own JOBDIR files (scheduler queue, dupefilter, spider state).
SCRAPY_STATE = ("requests.queue", "requests.seen", "spider.state")


def url_key(url: str) -> str:
    """The identity of a URL for 'already requested': what Scrapy's fingerprints use (no fragment, sorted query)."""
    return canonicalize_url(url)


@dataclass
class Pending:
    url: str
    kind: str  # 'page' or 'sitemap'
    depth: int


@dataclass
class PendingConfirmation:
    url: str
    depth: int
    doc_id: str | None  # the changed version the page's fetch found
    previous_doc_id: str | None  # the version it replaced


@dataclass
class Journal:
    """The frontier journal of one crawl_id. ``open()`` reads what a previous run left."""

    jobdir: Path
    spider: str
    requested: set[str] = field(default_factory=set)  # url_key of everything requested in this job
    committed: set[str] = field(default_factory=set)  # url_key of everything whose fetch row is committed
    resumed: str | None = None  # None (fresh), 'paused' (graceful stop) or 'killed'
    pending: list[Pending] = field(default_factory=list)  # to request again after a kill
    runs: list[str] = field(default_factory=list)  # the runs that worked on this job before this one
    # url_key -> confirmation planned by an earlier run of the job and not committed (see the module docstring)
    confirmations: dict[str, PendingConfirmation] = field(default_factory=dict)
    _fh: object = None
    # Called with the OSError of a line that could not be written (disk full): the session treats it as a failed
    # commit and stops the crawl, since what is not journaled cannot be resumed. Without it, the error is raised.
    on_failure: object = None
    failed: bool = False
    _asked: set[str] = field(default_factory=set)  # URLs (as given) should_request has answered in this run

    @classmethod
    def open(cls, jobdir: Path, spider: str, run_id: str | None = None) -> Journal:
        jobdir = Path(jobdir)
        journal = cls(jobdir, spider)
        path = jobdir / JOURNAL
        if path.exists():
            journal._load(path)
        if journal.resumed is None and jobdir.exists():
            shutil.rmtree(jobdir)  # leftovers of another spider kind, or Scrapy state without our journal
        jobdir.mkdir(parents=True, exist_ok=True)
        if journal.resumed == "killed":
            # Scrapy's queue index is stale after a kill; we re-request from the journal instead.
            for name in SCRAPY_STATE:
                target = jobdir / name
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)
        (jobdir / PAUSED).unlink(missing_ok=True)  # from now on, only a graceful close writes it again
        journal._fh = open(path, "a", buffering=1, encoding="utf-8")  # line-buffered: each line hits the OS
        if journal.resumed is None:
            journal._write({"spider": spider})
        if run_id:
            journal._write({"run": run_id})
        return journal

    def _load(self, path: Path) -> None:
        header, scheduled, planned, confirmed = None, {}, {}, set()
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by the kill
                if "spider" in entry:
                    header = header or entry
                elif "s" in entry:
                    scheduled.setdefault(url_key(entry["s"]), Pending(entry["s"], entry.get("k", "page"),
                                                                      int(entry.get("d", 0))))
                elif "c" in entry:
                    self.committed.update(url_key(u) for u in entry["c"])
                elif "run" in entry:
                    self.runs.append(entry["run"])
                elif "v" in entry:
                    planned[url_key(entry["v"])] = PendingConfirmation(entry["v"], int(entry.get("d", 0)),
                                                                       entry.get("doc"), entry.get("prev"))
                elif "vc" in entry:
                    confirmed.update(url_key(u) for u in entry["vc"])
        if header is None or header.get("spider") != self.spider:
            return  # not ours to resume
        self.requested = set(scheduled)
        self.confirmations = {key: p for key, p in planned.items() if key not in confirmed}
        self.resumed = "paused" if (path.parent / PAUSED).exists() else "killed"
        if self.resumed == "killed":
            self.pending = [p for key, p in scheduled.items() if key not in self.committed]

    def reconcile(self, committed_urls, confirmed_urls=()) -> None:
        """After a kill: URLs whose fetch rows the store holds from this job's runs are done, journaled or not;
        so are confirmations whose confirmation fetch rows it holds."""
        self.committed.update(url_key(u) for u in committed_urls)
        self.pending = [p for p in self.pending if url_key(p.url) not in self.committed]
        for url in confirmed_urls:
            self.confirmations.pop(url_key(url), None)

    def pending_confirmations(self) -> list[PendingConfirmation]:
        """Confirmations an earlier run planned and did not commit, of pages whose own fetch it committed."""
        return [p for key, p in self.confirmations.items() if key in self.committed]

    def confirmation_planned(self, url: str, depth: int, doc_id: str | None, previous_doc_id: str | None) -> None:
        self._write({"v": url, "d": depth, "doc": doc_id, "prev": previous_doc_id})

    def mark_confirmed(self, urls: list[str]) -> None:
        if urls:
            self._write({"vc": urls})

    def _write(self, entry: dict) -> None:
        if self.failed:
            return  # the run is failing: nothing after the first lost line (the next run trusts the store)
        try:
            self._fh.write(json.dumps(entry, separators=(",", ":")) + "\n")
        except OSError as exc:
            if self.on_failure is None:
                raise
            self.failed = True
            self.on_failure(exc)

    def should_request(self, url: str) -> bool:
        """True once per URL per job: False for anything already requested (in this run or before the stop)."""
        # Pages link to the same URLs over and over: a URL string met before needs no canonicalizing again.
        if url in self._asked:
            return False
        self._asked.add(url)
        key = url_key(url)
        if key in self.requested:
            return False
        self.requested.add(key)
        return True

    def scheduled(self, url: str, kind: str, depth: int) -> None:
        self._write({"s": url, "k": kind, "d": depth})

    def mark_committed(self, urls: list[str]) -> None:
        if urls:
            self._write({"c": urls})
            self.committed.update(url_key(u) for u in urls)

    def close(self, finish_reason: str | None) -> None:
        """'finished': the job is done, remove it. Graceful stop: leave a marker so the next run trusts Scrapy."""
        if self._fh is not None:
            with contextlib.suppress(OSError):  # a line still buffered on a full disk: the store is the truth
                self._fh.close()
            self._fh = None
        if finish_reason == "finished":
            shutil.rmtree(self.jobdir, ignore_errors=True)
        elif finish_reason == "shutdown":
            with contextlib.suppress(OSError):
                (self.jobdir / PAUSED).write_text("stopped gracefully; Scrapy's queue is valid\n")


class NoJournal:
    """Stands in when crawl.jobdir is false: no resume, dedup within the run only."""

    resumed = None
    pending: list = []
    committed: set = frozenset()
    confirmations: dict = {}

    def __init__(self):
        self.requested: set[str] = set()
        self._asked: set[str] = set()

    should_request = Journal.should_request  # the same once-per-URL rule, on this run's set only

    def scheduled(self, url, kind, depth) -> None:
        pass

    def mark_committed(self, urls) -> None:
        pass

    def pending_confirmations(self) -> list:
        return []

    def confirmation_planned(self, url, depth, doc_id, previous_doc_id) -> None:
        pass

    def mark_confirmed(self, urls) -> None:
        pass

    def close(self, finish_reason) -> None:
        pass
