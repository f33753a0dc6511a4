"""Reviewer corrections: the record format, the append-only monthly log, and reading it back.

Why its own module: the API writes corrections (``POST /v1/feedback``) and ``triage data
merge-corrections`` reads them; both must agree on one record shape and one file layout:
``<corrections_dir>/<YYYY-MM>.jsonl`` (UTC month), one JSON object per line, never rewritten.

Writers never interleave or lose lines: the whole line goes out on an ``O_APPEND`` descriptor while
holding an exclusive ``flock`` on the file (other processes) and a ``threading.Lock`` (other threads
of this process), then ``fsync``. A write that fails part-way (a full disk writes a prefix, then
refuses) is undone: the file is truncated back to its length before the write, so no torn line is
left for the next record to be glued onto, and the caller gets the error (the API answers 507).

Who wrote a record: ``key_id`` / ``key_scope`` are the API key that was authenticated (the API sets
``reviewer`` to the key id too); ``declared_reviewer`` is a name the caller typed, information only.
``triage data merge-corrections`` merges only records from scopes the operator trusts.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from triage_model.schema import HEADS, TEXT_TRIGGERS

CORRECTION_FILE_RE = re.compile(r"^\d{4}-\d{2}\.jsonl$")
LABEL_FIELDS: tuple[str, ...] = (*HEADS, "triggers")
RECORD_ORDER: tuple[str, ...] = ("correction_id", "received_at", "request_id", "reviewer", "key_id", "key_scope", *LABEL_FIELDS)

_write_lock = threading.Lock()


class CorrectedLabels(BaseModel):
    """Corrected labels for any subset of heads (at least one), checked against the label schema."""

    model_config = ConfigDict(extra="forbid")

    category: str | None = Field(None, description=f"one of {list(HEADS['category'])}")
    severity: str | None = Field(None, description=f"one of {list(HEADS['severity'])}")
    sentiment: str | None = Field(None, description=f"one of {list(HEADS['sentiment'])}")
    triggers: list[str] | None = Field(None, description=f"the full trigger set, each one of {list(TEXT_TRIGGERS)}")

    @field_validator("category", "severity", "sentiment")
    @classmethod
    def _in_schema(cls, v: str | None, info) -> str | None:
        if v is not None and v not in HEADS[info.field_name]:
            raise ValueError(f"{v!r} is not a {info.field_name} label; expected one of {list(HEADS[info.field_name])}")
        return v

    @field_validator("triggers")
    @classmethod
    def _triggers(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        bad = [t for t in v if t not in TEXT_TRIGGERS]
        if bad:
            raise ValueError(f"{bad} are not text triggers; expected any of {list(TEXT_TRIGGERS)}")
        return sorted(set(v))

    @model_validator(mode="after")
    def _has_labels(self) -> CorrectedLabels:
        if not self.given():
            raise ValueError("correct at least one of " + ", ".join(LABEL_FIELDS))
        return self

    def given(self) -> dict[str, object]:
        """Only the heads the reviewer corrected."""
        return {k: getattr(self, k) for k in LABEL_FIELDS if getattr(self, k) is not None}


class Correction(CorrectedLabels):
    """One stored correction line. ``text`` makes it mergeable into training data; ``request_id`` alone
    points at a served request (to be joined with logs that hold the text)."""

    correction_id: str
    received_at: str = Field(description="UTC, ISO-8601")
    request_id: str | None = None
    text: str | None = None
    reviewer: str
    key_id: str | None = Field(None, description="the authenticated API key that posted it (None: not written through the API)")
    key_scope: str | None = Field(None, description="the scope that allowed it: feedback or admin")
    declared_reviewer: str | None = Field(None, description="a reviewer name the caller typed (not authenticated)")
    comment: str | None = None
    model_version: str | None = Field(None, description="the model being served when the correction arrived")

    model_config = ConfigDict(extra="ignore", protected_namespaces=())


def new_correction_id() -> str:
    return uuid.uuid4().hex[:16]


def month_file(corrections_dir: Path, when: datetime) -> Path:
    return Path(corrections_dir) / f"{when.astimezone(timezone.utc):%Y-%m}.jsonl"


def append_correction(corrections_dir: Path, fields: dict[str, object], now: datetime | None = None) -> Correction:
    """Validate, stamp (id, UTC time) and append one correction; returns the stored record."""
    now = now or datetime.now(timezone.utc)
    record = Correction.model_validate(
        {**fields, "correction_id": new_correction_id(), "received_at": now.astimezone(timezone.utc).isoformat(timespec="milliseconds")}
    )
    stored = record.model_dump(exclude_none=True)
    ordered = {k: stored[k] for k in RECORD_ORDER if k in stored} | stored  # id and time first: easy to read and grep
    line = (json.dumps(ordered, ensure_ascii=False) + "\n").encode("utf-8")
    path = month_file(corrections_dir, now)
    path.parent.mkdir(parents=True, exist_ok=True)
    append_line(path, line)
    return record


def _write(fd: int, data: bytes) -> int:
    """``os.write``, behind a name the tests replace with a writer that fails part-way."""
    return os.write(fd, data)


def append_line(path: Path, line: bytes) -> None:
    """Append one complete line atomically with respect to other threads and processes, durably.

    All or nothing: if any part of the write or the fsync fails, the file is cut back to the length it
    had before (under the same lock), and the error is raised."""
    created = not path.exists()
    with _write_lock:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                before = os.fstat(fd).st_size
                try:
                    done = 0
                    while done < len(line):  # a short write (disk full) is retried once, then refused
                        written = _write(fd, line[done:])
                        if written <= 0:
                            raise OSError(errno.ENOSPC, f"{path.name}: short write ({done} of {len(line)} bytes)")
                        done += written
                    os.fsync(fd)
                except BaseException:
                    os.ftruncate(fd, before)  # no torn line: the next record starts on a clean line
                    os.fsync(fd)
                    raise
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    if created:  # make the new directory entry durable too
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@dataclass(frozen=True)
class StoredLine:
    file: Path
    line: int
    correction: Correction | None
    error: str | None = None


def correction_files(corrections_dir: Path) -> list[Path]:
    """Monthly logs in time order (file names sort chronologically)."""
    folder = Path(corrections_dir)
    return sorted(p for p in folder.glob("*.jsonl") if CORRECTION_FILE_RE.match(p.name)) if folder.is_dir() else []


def read_corrections(corrections_dir: Path) -> Iterator[StoredLine]:
    """Every stored line in arrival order; unreadable lines come back with ``error`` instead of vanishing."""
    for path in correction_files(corrections_dir):
        raw = path.read_bytes().decode("utf-8", errors="replace")
        for lineno, line in enumerate(raw.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                yield StoredLine(path, lineno, Correction.model_validate_json(line))
            except ValueError as err:
                yield StoredLine(path, lineno, None, str(err).splitlines()[0])
