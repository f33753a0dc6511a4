"""``triage data merge-corrections``: fold reviewer corrections (``POST /v1/feedback``) into training data.

Rules, and why:

* A correction is matched to a labeled row by its text after ``normalize_text`` (what the model sees).
  A match updates only the corrected heads of that row; no match, and a correction with all three
  heads becomes a new row in ``complaints/corrections_merged.jsonl`` (id ``corr-<correction id>``,
  source ``correction:<correction id>``, split from ``split_for_id``).
* Rows of the test split are never edited unless ``--allow-test-edits``: the test split is the fixed
  yardstick ``triage promote`` compares models on; silently changing it would move the goalposts.
* Corrections of the same text that disagree are a conflict: none of them is applied (unless
  ``latest_wins``) and they are listed in the report until a reviewer settles them.
* A new text that ``triage data validate`` would flag as a near-duplicate of a labeled row is
  reported, not added: merging must never produce data that fails validation.
* Only trusted corrections are merged: a record must carry the API key that posted it (``key_id``) and
  that key's scope must be one the operator trusts (``trusted_scopes``: feedback and admin by
  default), and, when ``trusted_keys`` is given, the key must be one of them. Anything else (a record
  appended by hand, an untrusted key) is reported as ``untrusted`` and left pending, never merged.
  The report counts the merged corrections per key, for review.
* A correction that carries only a ``request_id`` is resolved through the serving request log when one
  is given (``request_lookup``, see ``serving/request_log.py``): the logged text when the operator stored
  text, else the labeled row whose normalised text has the logged SHA-256 (a relabel; a new complaint
  needs the text). A request id naming several different texts (a batch, a reused X-Request-ID) or none
  is reported as ``request_unresolved`` and left pending.
* Idempotent: merged correction ids go to ``corrections/merged_ids.jsonl``; a re-run merges nothing
  new. Even if that ledger were lost, re-applying a correction is a no-op (labels already equal).
* Never lose data: files are replaced atomically (temp file + fsync + rename) and every line this
  command does not change, parsable or not, is written back byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pydantic import ValidationError

from training.validate import NearDuplicateIndex
from triage_model.corrections import LABEL_FIELDS, Correction, append_line, read_corrections
from triage_model.labeled_data import LabeledRow, data_files, split_for_id
from triage_model.normalize import normalize_text
from triage_model.schema import HEADS

CORRECTIONS_SUBDIR = "corrections"
MERGED_DATA_FILE = "complaints/corrections_merged.jsonl"
LEDGER_FILE = "merged_ids.jsonl"
PREVIEW_CHARS = 40
DEFAULT_TRUSTED_SCOPES: tuple[str, ...] = ("feedback", "admin")

RequestLookup = Callable[[str], Sequence[Mapping[str, object]]]
"""request id → the logged items of that request, each with ``text`` (None unless the operator stored
text) and ``text_sha256`` (SHA-256 hex of ``normalize_text(text)``): ``serving.request_log`` provides one."""


@dataclass
class Issue:
    """A correction (or group of them) that was not applied, or was applied after a settled conflict."""

    # conflict | conflict_settled | test_split | incomplete | invalid | near_duplicate | unreadable | untrusted | request_unresolved
    kind: str
    correction_ids: list[str]
    detail: str
    text: str = ""
    row_id: str | None = None
    values: dict[str, list[dict[str, object]]] = field(default_factory=dict)


@dataclass
class MergeResult:
    updated: dict[str, list[str]] = field(default_factory=dict)  # row id → correction ids
    added: dict[str, list[str]] = field(default_factory=dict)
    unchanged: dict[str, list[str]] = field(default_factory=dict)  # labels already equal: recorded as merged
    already_merged: int = 0
    without_text: int = 0
    resolved_by_request: int = 0  # corrections without text whose text came from the request log
    issues: list[Issue] = field(default_factory=list)
    by_key: dict[str, int] = field(default_factory=dict)  # merged corrections per posting key id

    @property
    def conflicts(self) -> list[Issue]:
        return [i for i in self.issues if i.kind == "conflict"]

    def to_json(self) -> dict:
        counts = {
            "updated_rows": len(self.updated),
            "added_rows": len(self.added),
            "unchanged_rows": len(self.unchanged),
            "already_merged": self.already_merged,
            "without_text": self.without_text,
            "resolved_by_request": self.resolved_by_request,
        }
        for issue in self.issues:
            counts[issue.kind] = counts.get(issue.kind, 0) + 1
        return {
            "counts": counts,
            "merged_by_key": self.by_key,
            "updated": self.updated,
            "added": self.added,
            "issues": [asdict(i) for i in self.issues],
        }


@dataclass
class DataLine:
    """One line of a data file: its exact bytes, and its JSON object when it parses to one."""

    raw: str
    obj: dict | None


def _split_lines(text: str) -> list[str]:
    """Split on ``\\n`` only (``str.splitlines`` would also cut at U+2028 or \\x85 inside a JSON string)."""
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    return [*lines, parts[-1]] if parts[-1] else lines


def read_data_file(path: Path) -> list[DataLine]:
    out = []
    for raw in _split_lines(path.read_text(encoding="utf-8")):
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            obj = None
        out.append(DataLine(raw, obj if isinstance(obj, dict) else None))
    return out


def atomic_write(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, rename over ``path``: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _preview(text: str) -> str:
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…"


def _read_ledger(path: Path) -> set[str]:
    if not path.exists():
        return set()
    ids = set()
    for raw in _split_lines(path.read_text(encoding="utf-8")):
        try:
            ids.add(json.loads(raw)["correction_id"])
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a torn line: the correction will be re-checked, which is a no-op if applied
    return ids


def _conflicts(group: list[Correction], merged_ids: set[str]) -> dict[str, list[dict[str, object]]]:
    """Heads on which the pending corrections disagree with each other or with what is already merged.

    What is merged counts as one voice per head (the latest merged value), so a conflict settled
    once (``latest_wins``) stays settled when a later correction agrees with the settlement.
    """
    settled: dict[str, tuple[Correction, object]] = {}
    for c in group:
        if c.correction_id in merged_ids:
            settled.update({name: (c, v) for name, v in c.given().items()})
    out = {}
    for name in LABEL_FIELDS:
        said = [settled[name]] if name in settled else []
        said += [(c, c.given()[name]) for c in group if c.correction_id not in merged_ids and name in c.given()]
        if len({json.dumps(v) for _, v in said}) > 1:
            out[name] = [{"correction_id": c.correction_id, "reviewer": c.reviewer, "value": v} for c, v in said]
    return out


class _Merger:
    """One merge run: the data files in memory, the text index, and what changed."""

    def __init__(self, data_dir: Path, allow_test_edits: bool) -> None:
        self.allow_test_edits = allow_test_edits
        self.merged_path = data_dir / MERGED_DATA_FILE
        self.files = {p: read_data_file(p) for p in data_files(data_dir)}
        self.files.setdefault(self.merged_path, [])
        self.by_text: dict[str, tuple[Path, DataLine]] = {}
        for path, lines in self.files.items():
            for line in lines:
                if line.obj is not None and isinstance(line.obj.get("text"), str):
                    self.by_text.setdefault(normalize_text(line.obj["text"]), (path, line))
        self.changed: set[Path] = set()
        self._near: NearDuplicateIndex | None = None
        self._by_digest: dict[str, str] | None = None

    def update_row(self, key: str, labels: dict[str, object], ids: list[str], result: MergeResult) -> tuple[str, str] | None:
        """Relabel the row with this text; returns the ledger action, or None if it must wait."""
        path, line = self.by_text[key]
        row = line.obj
        row_id = str(row.get("id"))
        current = {**row, "triggers": sorted(set(row.get("triggers") or []))}
        changes = {k: v for k, v in labels.items() if current.get(k) != v}
        if not changes:
            result.unchanged[row_id] = ids
            return "unchanged", row_id
        if (row.get("split") or split_for_id(row_id)) == "test" and not self.allow_test_edits:
            result.issues.append(
                Issue("test_split", ids, f"row is in the test split; would change {changes}", _preview(row["text"]), row_id)
            )
            return None
        row.update(changes)
        line.raw = json.dumps(row, ensure_ascii=False) + "\n"
        self.changed.add(path)
        result.updated[row_id] = ids
        return "updated", row_id

    def add_row(
        self, key: str, group: list[Correction], labels: dict[str, object], ids: list[str], result: MergeResult
    ) -> tuple[str, str] | None:
        """Append a new row for a text no labeled row has; returns the ledger action, or None if it must wait."""
        first = group[0]
        text = first.text or ""
        missing = [h for h in HEADS if h not in labels]
        if missing:
            result.issues.append(Issue("incomplete", ids, f"new text needs every head; missing {missing}", _preview(text)))
            return None
        row_id = f"corr-{first.correction_id}"
        new_row = {
            "id": row_id,
            "text": text,
            **{h: labels[h] for h in HEADS},
            "triggers": labels.get("triggers", []),
            "source": f"correction:{first.correction_id}",
            "split": split_for_id(row_id),
            "notes": "reviewed by " + ", ".join(sorted({c.reviewer for c in group})),
        }
        try:
            LabeledRow.model_validate(new_row)
        except ValidationError as err:
            result.issues.append(Issue("invalid", ids, err.errors()[0]["msg"], _preview(text)))
            return None
        if self._near is None:
            self._near = NearDuplicateIndex()
            for _, line in self.by_text.values():
                self._near.add(str(line.obj.get("id")), line.obj["text"])
        near = self._near.find(text)
        if near is not None:
            detail = f"near-duplicate of row {near[0]} (5-gram Jaccard {near[1]:.2f}): correct that row, or add this text by hand"
            result.issues.append(Issue("near_duplicate", ids, detail, _preview(text), near[0]))
            return None
        lines = self.files[self.merged_path]
        if lines and not lines[-1].raw.endswith("\n"):
            lines[-1].raw += "\n"
        lines.append(DataLine(json.dumps(new_row, ensure_ascii=False) + "\n", new_row))
        self.by_text[key] = (self.merged_path, lines[-1])
        self._near.add(row_id, text)
        self.changed.add(self.merged_path)
        result.added[row_id] = ids
        return "added", row_id

    def text_for_digest(self, digest: str) -> str | None:
        """The labeled text whose normalised form has this SHA-256 (as the request log stores it), or None."""
        if self._by_digest is None:
            self._by_digest = {hashlib.sha256(key.encode("utf-8")).hexdigest(): key for key in self.by_text}
        key = self._by_digest.get(digest)
        return self.by_text[key][1].obj["text"] if key is not None else None

    def write(self) -> None:
        for path in sorted(self.changed):
            atomic_write(path, "".join(line.raw for line in self.files[path]))


def _trusted(c: Correction, trusted_scopes: Collection[str], trusted_keys: Collection[str] | None) -> bool:
    return c.key_id is not None and c.key_scope in trusted_scopes and (trusted_keys is None or c.key_id in trusted_keys)


def _resolve_request(c: Correction, lookup: RequestLookup, merger: _Merger, result: MergeResult, pending: bool) -> Correction | None:
    """The correction with the text its request was logged with, or None (for a pending one an issue
    says why; one merged before is resolved only so that it keeps its voice in conflict checks)."""
    items = list(lookup(str(c.request_id)))
    digests = {str(item["text_sha256"]) for item in items}
    why = None
    if not items:
        why = "request id not in the request log (not logged, or past its retention)"
    elif len(digests) > 1:
        why = f"request id names {len(digests)} different texts (a batch or a reused X-Request-ID): send the text with the correction"
    else:
        stored = next((item["text"] for item in items if item.get("text")), None)
        text = stored if isinstance(stored, str) else merger.text_for_digest(digests.pop())
        if text is None:
            why = "logged without text and no labeled row has that text: a new complaint needs TRIAGE_REQUEST_LOG_STORE_TEXT or the text"
        else:
            result.resolved_by_request += pending
            return c.model_copy(update={"text": text})
    if pending:
        result.issues.append(Issue("request_unresolved", [c.correction_id], f"request {c.request_id}: {why}"))
    return None


def _read_groups(
    corrections_dir: Path,
    result: MergeResult,
    merged_ids: set[str],
    trusted_scopes: Collection[str],
    trusted_keys: Collection[str] | None,
    request_lookup: RequestLookup | None = None,
    merger: _Merger | None = None,
) -> dict[str, list[Correction]]:
    """Trusted corrections that carry text (or whose request id resolves to one), grouped by normalised
    text, in arrival order."""
    groups: dict[str, list[Correction]] = {}
    for stored in read_corrections(corrections_dir):
        if stored.correction is None:
            result.issues.append(Issue("unreadable", [], f"{stored.file}:{stored.line}: {stored.error}"))
        elif not _trusted(stored.correction, trusted_scopes, trusted_keys) and stored.correction.correction_id not in merged_ids:
            c = stored.correction
            who = f"key {c.key_id!r} (scope {c.key_scope})" if c.key_id else "no authenticated key"
            detail = f"posted by {who}; merged are only keys of scopes {sorted(trusted_scopes)}"
            if trusted_keys is not None:
                detail += f" among {sorted(trusted_keys)}"
            result.issues.append(Issue("untrusted", [c.correction_id], detail, _preview(c.text or "")))
        elif not stored.correction.text or not normalize_text(stored.correction.text):
            c = stored.correction
            pending = c.correction_id not in merged_ids
            if request_lookup is None or merger is None or not c.request_id:
                result.without_text += 1
            elif (resolved := _resolve_request(c, request_lookup, merger, result, pending)) is not None:
                groups.setdefault(normalize_text(resolved.text or ""), []).append(resolved)
            elif not pending:
                result.already_merged += 1  # merged through its request id before; the log has since let it go
        else:
            groups.setdefault(normalize_text(stored.correction.text), []).append(stored.correction)
    return groups


def merge_corrections(
    data_dir: Path,
    allow_test_edits: bool = False,
    latest_wins: bool = False,
    trusted_scopes: Collection[str] = DEFAULT_TRUSTED_SCOPES,
    trusted_keys: Collection[str] | None = None,
    request_lookup: RequestLookup | None = None,
) -> MergeResult:
    """Apply every not-yet-merged trusted correction that carries text, or, with ``request_lookup``, whose
    request id resolves to one; see the module docstring for the rules."""
    data_dir = Path(data_dir)
    corrections_dir = data_dir / CORRECTIONS_SUBDIR
    ledger_path = corrections_dir / LEDGER_FILE
    merged_ids = _read_ledger(ledger_path)
    result = MergeResult()
    merger = _Merger(data_dir, allow_test_edits)
    groups = _read_groups(corrections_dir, result, merged_ids, trusted_scopes, trusted_keys, request_lookup, merger)
    ledger: list[dict[str, str]] = []
    for key, group in groups.items():
        pending = [c for c in group if c.correction_id not in merged_ids]
        result.already_merged += len(group) - len(pending)
        if not pending:
            continue
        ids = [c.correction_id for c in pending]
        text = _preview(group[0].text or "")
        conflict = _conflicts(group, merged_ids)
        if conflict and not latest_wins:
            result.issues.append(Issue("conflict", ids, f"corrections disagree on {', '.join(conflict)}", text, values=conflict))
            continue
        labels: dict[str, object] = {}
        for c in group:  # arrival order: with latest_wins a later correction overrides an earlier one
            labels.update(c.given())
        if conflict:
            result.issues.append(Issue("conflict_settled", ids, f"settled by the latest correction: {labels}", text, values=conflict))
        known = key in merger.by_text
        action = merger.update_row(key, labels, ids, result) if known else merger.add_row(key, group, labels, ids, result)
        if action is not None:
            kind, row_id = action
            ledger += [{"correction_id": i, "action": kind, "row_id": row_id} for i in ids]
            for c in pending:
                result.by_key[c.key_id or "?"] = result.by_key.get(c.key_id or "?", 0) + 1
    merger.write()
    if ledger:  # after the data files: a crash in between only means a no-op re-check next time
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        corrections_dir.mkdir(parents=True, exist_ok=True)
        append_line(ledger_path, "".join(json.dumps({**r, "merged_at": now}, ensure_ascii=False) + "\n" for r in ledger).encode("utf-8"))
    return result


def write_report(result: MergeResult, path: Path, data_dir: Path, allow_test_edits: bool) -> Path:
    report = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data_dir": str(data_dir),
        "allow_test_edits": allow_test_edits,
        **result.to_json(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    return path
