"""Labeled complaints: loading, validation, stable splits and the data hash.

Why so strict: a silently dropped or mislabeled row changes the metrics everyone trusts. Every problem
is reported with its file and line; nothing is skipped without being listed.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from triage_model.io import read_jsonl
from triage_model.normalize import normalize_text
from triage_model.schema import ALL_TRIGGERS, CHANNELS, HEADS, TEXT_TRIGGERS, TIERS, label_to_id

Split = Literal["train", "dev", "test"]
SPLIT_FRACTIONS: dict[str, float] = {"test": 0.20, "dev": 0.10}
"""test 20 %, dev 10 %, train the rest; decided by a hash of the id so appends never move old rows."""

MAX_TEXT_CHARS = 4000
MIN_TEXT_CHARS = 2
DATA_GLOB = "complaints/*.jsonl"

ESCALATION_SET_NAME = "escalation_eval.jsonl"
ESCALATION_SET_IN_DATA = Path("escalation") / ESCALATION_SET_NAME
"""Where the gold escalation set lives inside a labeled-data folder (a test set: it never trains a model)."""
DEFAULT_ESCALATION_SET = Path("labeled_data") / ESCALATION_SET_IN_DATA


class LabeledRow(BaseModel):
    """One labeled complaint, as stored in ``labeled_data/complaints/*.jsonl``."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=80)
    text: str
    category: str
    severity: str
    sentiment: str
    triggers: list[str] = Field(default_factory=list)
    source: str = Field(min_length=1)
    split: Split | None = None
    channel: str | None = None
    notes: str | None = None

    @field_validator("text")
    @classmethod
    def _text_length(cls, v: str) -> str:
        n = len(normalize_text(v))
        if n < MIN_TEXT_CHARS:
            raise ValueError(f"text is empty or shorter than {MIN_TEXT_CHARS} characters after normalisation")
        if n > MAX_TEXT_CHARS:
            raise ValueError(f"text has {n} characters, more than {MAX_TEXT_CHARS}")
        return v

    @field_validator("category", "severity", "sentiment")
    @classmethod
    def _label_in_schema(cls, v: str, info: ValidationInfo) -> str:
        return _one_of(v, HEADS[info.field_name], info.field_name)

    @field_validator("channel")
    @classmethod
    def _channel(cls, v: str | None) -> str | None:
        return v if v is None else _one_of(v, CHANNELS, "channel")

    @field_validator("triggers")
    @classmethod
    def _triggers(cls, v: list[str]) -> list[str]:
        for t in v:
            _one_of(t, TEXT_TRIGGERS, "trigger")
        return sorted(set(v))


class EscalationRow(LabeledRow):
    """A gold escalation-set row: a labeled complaint plus its ticket context and the gold decision.

    One row type for all labeled data: an escalation row *is* a labeled complaint (same heads, same
    checks); ``triggers`` holds the text-visible part of ``gold_triggers``.
    """

    source: str = Field("escalation", min_length=1)
    context: dict = Field(default_factory=dict)
    gold_triggers: frozenset[str]
    gold_tier: str
    trap: bool = False

    @model_validator(mode="before")
    @classmethod
    def _text_triggers_from_gold(cls, data: object) -> object:
        if isinstance(data, dict) and "triggers" not in data:
            data = {**data, "triggers": sorted(set(data.get("gold_triggers") or ()) & set(TEXT_TRIGGERS))}
        return data

    @field_validator("gold_triggers")
    @classmethod
    def _gold_triggers(cls, v: frozenset[str]) -> frozenset[str]:
        for t in v:
            _one_of(t, ALL_TRIGGERS, "trigger")
        return v

    @field_validator("gold_tier")
    @classmethod
    def _tier(cls, v: str) -> str:
        return _one_of(v, TIERS, "tier")


def _one_of(value: str, allowed: Iterable[str], what: str) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{value!r} is not a {what}; expected one of {list(allowed)}")
    return value


def trigger_targets(triggers: list[str]) -> list[float]:
    """The trigger head's multi-hot target, in ``TEXT_TRIGGERS`` order."""
    return [1.0 if t in triggers else 0.0 for t in TEXT_TRIGGERS]


def gold_ids(rows: Iterable[LabeledRow]) -> dict[str, np.ndarray]:
    """Per head the rows' gold label ids (schema order), as the metrics and threshold fits read them."""
    rows = list(rows)
    return {h: np.array([label_to_id(h, getattr(r, h)) for r in rows], dtype=int) for h in HEADS}


def split_for_id(row_id: str) -> str:
    """Deterministic split from the id alone, so appending rows never moves an existing row."""
    frac = int(hashlib.sha256(row_id.encode("utf-8")).hexdigest()[:8], 16) / 0x1_0000_0000
    if frac < SPLIT_FRACTIONS["test"]:
        return "test"
    if frac < SPLIT_FRACTIONS["test"] + SPLIT_FRACTIONS["dev"]:
        return "dev"
    return "train"


@dataclass(frozen=True)
class Problem:
    """A data problem pinned to where it is: fix it there."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class DataProblems(ValueError):
    """Labeled data with bad rows; the message says how many, shows the first and names the fixing command."""

    def __init__(self, problems: list[Problem], show: int = 1) -> None:
        self.problems = problems
        first = "\n".join(str(p) for p in problems[:show])
        super().__init__(f"{len(problems)} data problems; run `triage data validate`. First:\n{first}")


@dataclass
class LoadedData:
    rows: list[LabeledRow] = field(default_factory=list)
    locations: dict[str, tuple[str, int]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def split(self, name: str) -> list[LabeledRow]:
        return [r for r in self.rows if (r.split or split_for_id(r.id)) == name]

    def require_valid(self, show: int = 1) -> LoadedData:
        """``self`` if no row had a problem, else ``DataProblems`` naming the first ``show`` of them.

        Every job that fits or measures on labeled data calls this: a bad row is reported with its file and
        line, never skipped, because a silently dropped row changes the metrics without anyone noticing.
        """
        if self.problems:
            raise DataProblems(self.problems, show)
        return self


def data_files(data_dir: Path) -> list[Path]:
    return sorted(Path(data_dir).glob(DATA_GLOB))


def load_labeled(data_dir: Path) -> LoadedData:
    """Read every ``complaints/*.jsonl``; bad rows become ``problems`` with file and line, never vanish."""
    files = data_files(data_dir)
    if not files:
        out = LoadedData()
        out.problems.append(Problem(str(data_dir), 0, f"no files match {DATA_GLOB}"))
        return out
    return load_labeled_files(files)


def load_labeled_files(files: Iterable[Path]) -> LoadedData:
    """Read the given JSONL files with the same checks as ``load_labeled`` (used for a single QA file)."""
    out = LoadedData()
    for path in files:
        for lineno, raw, error in read_jsonl(Path(path)):
            if error:
                out.problems.append(Problem(str(path), lineno, error))
                continue
            try:
                row = LabeledRow.model_validate(raw)
            except ValidationError as err:
                out.problems.append(Problem(str(path), lineno, _validation_message(err)))
                continue
            if row.id in out.locations:
                first = out.locations[row.id]
                out.problems.append(Problem(str(path), lineno, f"duplicate id {row.id!r} (first at {first[0]}:{first[1]})"))
                continue
            out.locations[row.id] = (str(path), lineno)
            out.rows.append(row)
    return out


def _validation_message(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())


def load_escalation_rows(path: Path) -> list[EscalationRow]:
    """Every row of an escalation-set file; raises ``ValueError`` naming file and line of the first bad row."""
    rows = []
    for lineno, raw, error in read_jsonl(Path(path)):
        if error:
            raise ValueError(f"{path}:{lineno}: {error}")
        try:
            rows.append(EscalationRow.model_validate(raw))
        except ValidationError as err:
            raise ValueError(f"{path}:{lineno}: {_validation_message(err)}") from None
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def escalation_training_rows(path: Path) -> list[LabeledRow]:
    """An escalation-set file as plain training rows whose ``triggers`` are the text-visible gold triggers.

    Rows whose gold may come from the ticket context (repeat_count, customer_requested_escalation) are
    left out: their text alone does not say whether a reader would mark the trigger.
    """
    path = Path(path)
    if not path.exists():
        return []
    return [
        LabeledRow(
            id=r.id,
            text=r.text,
            category=r.category,
            severity=r.severity,
            sentiment=r.sentiment,
            triggers=sorted(r.triggers),
            source=f"escalation:{path.name}",
            split="train",
        )
        for r in load_escalation_rows(path)
        if r.context.get("repeat_count") is None and not r.context.get("customer_requested_escalation")
    ]


def data_hash(rows: Iterable[LabeledRow]) -> str:
    """Content hash of the labeled rows (order-independent): recorded in every trained model."""
    digest = hashlib.sha256()
    for line in sorted(r.model_dump_json() for r in rows):
        digest.update(line.encode("utf-8"))
    return digest.hexdigest()[:16]


def label_counts(rows: Iterable[LabeledRow]) -> dict[str, Counter]:
    rows = list(rows)
    return {
        "category": Counter(r.category for r in rows),
        "severity": Counter(r.severity for r in rows),
        "sentiment": Counter(r.sentiment for r in rows),
        "triggers": Counter(t for r in rows for t in r.triggers),
        "split": Counter(r.split or split_for_id(r.id) for r in rows),
    }


def assign_splits(data_dir: Path) -> int:
    """Write the hash split into every parsable row that lacks one; returns how many rows changed.

    Lines that do not parse are written back byte for byte (never lose labeled data); each file is
    replaced atomically so a crash mid-write leaves the old file intact.
    """
    import os

    changed = 0
    for path in data_files(data_dir):
        # split on "\n" only: str.splitlines() also breaks at U+2028/U+0085, which JSON strings may hold
        lines = path.read_text(encoding="utf-8").split("\n")
        lines = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
        out = []
        for line in lines:
            try:
                raw = json.loads(line)
            except json.JSONDecodeError:
                out.append(line)
                continue
            if isinstance(raw, dict) and isinstance(raw.get("id"), str) and not raw.get("split"):
                raw["split"] = split_for_id(raw["id"])
                changed += 1
                line = json.dumps(raw, ensure_ascii=False) + "\n"
            out.append(line)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text("".join(out), encoding="utf-8")
        os.replace(tmp, path)
    return changed
