"""An opt-in, bounded log of served triage requests, so a correction that names only a ``request_id``
can still be merged into the training data (``triage data merge-corrections --request-log``).

Why each rule:

* **Off by default** (``TRIAGE_REQUEST_LOG_ENABLED``): a log of requests is a new store of data about
  customers; the operator decides to keep one.
* **Text only when asked** (``TRIAGE_REQUEST_LOG_STORE_TEXT``): complaint text is personal data. Without
  it the log keeps the SHA-256 of the normalised text (``normalize_text``, what the model reads), which
  still resolves a correction of a complaint that is already in the labeled data (a relabel), but not a
  new one. A digest of a short text can be guessed by hashing candidates: it is pseudonymous, not
  anonymous.
* **Bounded**: rows older than ``TRIAGE_REQUEST_LOG_RETENTION_DAYS`` are deleted, and when the live data
  passes ``TRIAGE_REQUEST_LOG_MAX_MB`` the oldest rows go first; freed pages go back to the file system
  (incremental auto-vacuum), and the WAL is capped. Pruning runs at most once a minute per process.
* **SQLite**: one file, no server, safe with several worker processes writing (WAL, busy timeout).
* **Never fails a request**: a log error is logged and counted in ``errors``; the triage answer is sent.

The settings live in their own ``BaseSettings`` (``TRIAGE_REQUEST_LOG_*``) beside ``serving.settings`` so
this module stays one self-contained piece; the API reaches it through :func:`log_triage`, one call
per triage route.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from fastapi import Request
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving.errors import request_id_of
from triage_model.normalize import normalize_text
from triage_model.results import TriageResult

log = logging.getLogger("serving")

PRUNE_EVERY_S = 60.0
SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id    TEXT NOT NULL,
    item          INTEGER NOT NULL,
    item_id       TEXT,
    logged_at     REAL NOT NULL,
    model_version TEXT,
    text_sha256   TEXT NOT NULL,
    text          TEXT,
    category      TEXT,
    severity      TEXT,
    sentiment     TEXT,
    tier          TEXT
);
CREATE INDEX IF NOT EXISTS requests_by_id ON requests (request_id);
CREATE INDEX IF NOT EXISTS requests_by_time ON requests (logged_at);
"""


class RequestLogSettings(BaseSettings):
    """``TRIAGE_REQUEST_LOG_ENABLED=1``, ``..._PATH``, ``..._STORE_TEXT``, ``..._RETENTION_DAYS``, ``..._MAX_MB``."""

    model_config = SettingsConfigDict(env_prefix="TRIAGE_REQUEST_LOG_", extra="ignore")

    enabled: bool = Field(False, description="keep the request log at all (opt-in)")
    path: Path = Field(Path("runs/request_log.sqlite3"), description="the SQLite file; every worker of a host may share it")
    store_text: bool = Field(False, description="also store the complaint text (personal data); off: only its SHA-256")
    retention_days: float = Field(30.0, gt=0, description="rows older than this are deleted")
    max_mb: float = Field(256.0, gt=0, description="live data above this: the oldest rows are deleted first")


def text_digest(text: str) -> str:
    """SHA-256 (hex) of the normalised text. ``training.merge_corrections`` computes the same digest of
    labeled texts to resolve a correction whose request was logged without text; keep the two equal."""
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()


class RequestLog:
    """Append served results; look them up by request id. Thread-safe; one connection per process."""

    def __init__(self, settings: RequestLogSettings) -> None:
        self.settings = settings
        self.path = Path(settings.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=2.0, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # takes effect only on a new file: set before any table
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")  # a crash may lose the last few rows, never corrupt the file
        self._conn.execute(f"PRAGMA journal_size_limit = {4 * 1024 * 1024}")
        self._conn.executescript(SCHEMA)
        self._last_prune = 0.0
        self.errors = 0

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def append(
        self,
        request_id: str,
        texts: Sequence[str],
        results: Sequence[TriageResult],
        item_ids: Sequence[str | None] | None = None,
        now: float | None = None,
    ) -> None:
        """One row per item of the request; the text itself only when ``store_text``."""
        now = time.time() if now is None else now
        ids = item_ids if item_ids is not None else [None] * len(texts)
        rows = [
            (
                request_id,
                i,
                item_id,
                now,
                res.model_version,
                text_digest(text),
                text if self.settings.store_text else None,
                res.category.label,
                res.severity.label,
                res.sentiment.label,
                res.escalation.tier if res.escalation is not None else None,
            )
            for i, (text, res, item_id) in enumerate(zip(texts, results, ids, strict=True))
        ]
        with self._lock:
            self._conn.executemany("INSERT INTO requests VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            if now - self._last_prune >= PRUNE_EVERY_S:
                self._last_prune = now
                self._prune(now)

    def prune(self, now: float | None = None) -> int:
        """Apply retention and the size cap now; returns the rows deleted."""
        with self._lock:
            return self._prune(time.time() if now is None else now)

    def _live_bytes(self) -> int:
        page_size, pages, free = (self._conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_size", "page_count", "freelist_count"))
        return (pages - free) * page_size

    def _prune(self, now: float) -> int:
        deleted = self._conn.execute("DELETE FROM requests WHERE logged_at < ?", (now - self.settings.retention_days * 86_400,)).rowcount
        cap = self.settings.max_mb * 1024 * 1024
        while self._live_bytes() > cap:
            (total,) = self._conn.execute("SELECT COUNT(*) FROM requests").fetchone()
            if total == 0:
                break
            batch = max(1, total // 10)  # the oldest tenth, until under the cap
            deleted += self._conn.execute(
                "DELETE FROM requests WHERE rowid IN (SELECT rowid FROM requests ORDER BY logged_at LIMIT ?)", (batch,)
            ).rowcount
        if deleted:
            self._conn.execute("PRAGMA incremental_vacuum")
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return deleted

    def lookup(self, request_id: str) -> list[dict[str, object]]:
        """The logged items of a request, in item order: ``text`` (None unless stored), ``text_sha256``,
        ``item_id``, ``model_version``, the predicted labels and ``logged_at`` (Unix seconds).

        A client may send its own X-Request-ID, so one id can name several requests: all are returned."""
        with self._lock:
            return _lookup(self._conn, request_id)


def _lookup(conn: sqlite3.Connection, request_id: str) -> list[dict[str, object]]:
    cur = conn.execute("SELECT * FROM requests WHERE request_id = ? ORDER BY logged_at, item", (request_id,))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def read_only_lookup(path: Path) -> Callable[[str], list[dict[str, object]]]:
    """``RequestLog.lookup`` over an existing log opened read-only: what ``triage data merge-corrections``
    uses, so reading corrections can neither create a log nor prune one. Raises ``FileNotFoundError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no request log there (TRIAGE_REQUEST_LOG_ENABLED was never on, or another path)")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    return lambda request_id: _lookup(conn, request_id)


def request_log_of(app_state: object) -> RequestLog | None:
    """The process's request log, opened on first use from ``TRIAGE_REQUEST_LOG_*``; None when disabled
    or when it cannot be opened (logged once). Tests or embedding code may set ``app.state.request_log``
    to a ``RequestLog`` or ``None`` first."""
    if not hasattr(app_state, "request_log"):
        settings = RequestLogSettings()
        opened = None
        if settings.enabled:
            try:
                opened = RequestLog(settings)
            except (sqlite3.Error, OSError) as err:
                log.error(f"request log: cannot open {settings.path}: {err}; requests are not logged")
        app_state.request_log = opened
    return app_state.request_log


def log_triage(
    request: Request, texts: Sequence[str], results: Sequence[TriageResult], item_ids: Sequence[str | None] | None = None
) -> None:
    """The hook the triage routes call after computing an answer: log it if the operator opted in.
    A failure is logged and counted, never raised: the log must not cost a customer their answer."""
    request_log = request_log_of(request.app.state)
    if request_log is None:
        return
    try:
        request_log.append(request_id_of(request), texts, results, item_ids)
    except (sqlite3.Error, OSError) as err:
        request_log.errors += 1
        log.warning(f"request log: cannot record the request: {err}")
