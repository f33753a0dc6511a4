"""``triage data relabel``: apply a reviewed list of label changes to the labeled data, and log each one.

Why a command and not a one-off script: a relabel pass (a guideline clarification, a cleanlab review, a
second reader's corrections) is read and decided by people, row by row; what remains is bookkeeping that
must be right every time and that the next pass must be able to repeat:

* each change names the row id, the head, the label it expects to find (``old``) and the new one; a row
  whose current label is not ``old`` is *stale* (someone changed it since the review) and is reported,
  not overwritten — the reviewer decided against a label that is no longer there;
* a change already in the data (current == ``new``) is a no-op, so running the same file twice is safe;
* new labels must be in the schema (``triage_model.schema``): a typo never reaches the training data;
* rows of the fixed test split change only with ``allow_test_edits`` (as in ``merge-corrections``): a
  guideline clarification applies to every split, but moving the yardstick must be a visible decision;
* every applied change is appended to ``relabel_log.jsonl`` with its task and reason, so the metrics of a
  model trained before the pass can be explained row by row;
* files are replaced atomically and every line not changed is written back byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from training.merge_corrections import DataLine, atomic_write, read_data_file
from triage_model.labeled_data import data_files, split_for_id
from triage_model.schema import HEADS, TEXT_TRIGGERS

RELABEL_LOG = "relabel_log.jsonl"
TRIGGERS_FIELD = "triggers"
RELABEL_FIELDS: tuple[str, ...] = (*HEADS, TRIGGERS_FIELD)


@dataclass(frozen=True)
class LabelChange:
    """One reviewed decision: row ``id``'s ``head`` goes from ``old`` to ``new``, because ``reason``."""

    id: str
    head: str
    old: str | list[str]
    new: str | list[str]
    task: str
    reason: str

    @classmethod
    def from_json(cls, obj: dict) -> LabelChange:
        missing = [k for k in ("id", "head", "old", "new", "task", "reason") if k not in obj]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        return cls(str(obj["id"]), str(obj["head"]), obj["old"], obj["new"], str(obj["task"]), str(obj["reason"]))

    def log_line(self) -> str:
        record = {"id": self.id, "head": self.head, "old": self.old, "new": self.new, "task": self.task, "reason": self.reason}
        return json.dumps(record, ensure_ascii=False) + "\n"


@dataclass
class RelabelResult:
    """What a pass did: applied changes, no-ops, and the changes it refused with why."""

    applied: list[LabelChange] = field(default_factory=list)
    already: list[LabelChange] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (change as given, why)
    splits: dict[str, int] = field(default_factory=dict)  # rows changed per split

    def counts(self) -> dict[str, int]:
        return {"applied": len(self.applied), "already in the data": len(self.already), "refused": len(self.refused)}


def _canonical(head: str, value: object) -> str | list[str]:
    """The stored form of a label: a string, or the sorted trigger list; raises on anything the schema lacks."""
    if head == TRIGGERS_FIELD:
        if not isinstance(value, list) or any(t not in TEXT_TRIGGERS for t in value):
            raise ValueError(f"triggers must be a list drawn from {', '.join(TEXT_TRIGGERS)}, got {value!r}")
        return sorted(set(value))
    if value not in HEADS[head]:
        raise ValueError(f"{value!r} is not a {head} label ({', '.join(HEADS[head])})")
    return str(value)


def read_changes(path: Path) -> tuple[list[LabelChange], list[tuple[str, str]]]:
    """Parse a changes file (JSONL, the relabel-log format); malformed lines are returned, not raised."""
    changes: list[LabelChange] = []
    bad: list[tuple[str, str]] = []
    for n, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            change = LabelChange.from_json(obj)
            if change.head not in RELABEL_FIELDS:
                raise ValueError(f"head must be one of {', '.join(RELABEL_FIELDS)}")
            _canonical(change.head, change.new)
        except (ValueError, json.JSONDecodeError) as err:
            bad.append((f"{path}:{n}", str(err)))
            continue
        changes.append(change)
    return changes, bad


def apply_relabels(data_dir: Path, changes: Iterable[LabelChange], allow_test_edits: bool = False) -> RelabelResult:
    """Apply ``changes`` to ``data_dir``'s rows and append the applied ones to its relabel log."""
    data_dir = Path(data_dir)
    files: dict[Path, list[DataLine]] = {p: read_data_file(p) for p in data_files(data_dir)}
    by_id: dict[str, tuple[Path, DataLine]] = {}
    for path, lines in files.items():
        for line in lines:
            if line.obj is not None and "id" in line.obj:
                by_id.setdefault(str(line.obj["id"]), (path, line))
    result = RelabelResult()
    changed_files: set[Path] = set()
    changed_rows: dict[str, str] = {}
    for change in changes:
        label = f"{change.id} {change.head} {change.old!r} → {change.new!r}"
        if change.id not in by_id:
            result.refused.append((label, "no row with this id"))
            continue
        path, line = by_id[change.id]
        row = line.obj
        split = row.get("split") or split_for_id(change.id)
        try:
            new = _canonical(change.head, change.new)
            current = _canonical(change.head, row.get(change.head, [] if change.head == TRIGGERS_FIELD else None))
        except ValueError as err:
            result.refused.append((label, str(err)))
            continue
        if current == new:
            result.already.append(change)
            continue
        old = sorted(set(change.old)) if isinstance(change.old, list) else change.old
        if current != old:
            result.refused.append((label, f"stale: the row now says {current!r}, the review expected {change.old!r}"))
            continue
        if split == "test" and not allow_test_edits:
            result.refused.append((label, "row is in the fixed test split (pass --allow-test-edits to change it)"))
            continue
        row[change.head] = new
        line.raw = json.dumps(row, ensure_ascii=False) + "\n"
        changed_files.add(path)
        changed_rows[change.id] = split
        result.applied.append(change)
    for path in sorted(changed_files):
        atomic_write(path, "".join(line.raw for line in files[path]))
    if result.applied:
        log = data_dir / RELABEL_LOG
        existing = log.read_text(encoding="utf-8") if log.exists() else ""
        sep = "" if not existing or existing.endswith("\n") else "\n"
        atomic_write(log, existing + sep + "".join(c.log_line() for c in result.applied))
    for split in changed_rows.values():
        result.splits[split] = result.splits.get(split, 0) + 1
    return result
