"""``triage data validate``: the checks that keep labeled data honest.

Schema and label errors come from ``data.load_labeled``; this module adds the corpus-level checks:
exact and near-duplicates (character 5-gram Jaccard), over-used opening/closing phrases (the mark of
template-generated text), split leakage, stored-split drift, per-class minimum counts, and leakage into
the escalation eval set (a test set: no training-side text may near-duplicate one of its rows).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from triage_model.io import read_jsonl
from triage_model.labeled_data import ESCALATION_SET_IN_DATA, LabeledRow, LoadedData, Problem, label_counts, load_labeled, split_for_id
from triage_model.normalize import normalize_text
from triage_model.schema import CRITICAL_SEVERITY

NEAR_DUP_JACCARD = 0.6
NGRAM = 5
PHRASE_CHARS = 5
PHRASE_MAX_SHARE = 0.02
PHRASE_MIN_ROWS = 200  # below this many rows a 2 % share is a handful of rows: the check would be noise
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


@dataclass(frozen=True)
class Minimums:
    """Per-class minimum counts the data set must meet (the issue's targets by default)."""

    total: int = 3000
    per_category: int = 150
    severity: dict[str, int] = field(default_factory=lambda: {CRITICAL_SEVERITY: 400})
    per_sentiment: int = 300


@dataclass
class Report:
    problems: list[Problem]
    warnings: list[str]
    counts: dict[str, Counter]
    n_rows: int

    @property
    def ok(self) -> bool:
        return not self.problems


def char_ngrams(text: str, n: int = NGRAM) -> set[str]:
    t = _NON_WORD.sub("", normalize_text(text))
    if len(t) <= n:
        return {t} if t else set()
    return {t[i : i + n] for i in range(len(t) - n + 1)}


class NearDuplicateIndex:
    """Character 5-gram inverted index of texts: which stored texts a new one near-duplicates
    (Jaccard > ``threshold``), far below O(n²) in practice. Used by validation, the escalation-eval
    leak check and ``merge-corrections``."""

    def __init__(self, threshold: float = NEAR_DUP_JACCARD) -> None:
        self.threshold = threshold
        self.ids: list[str] = []
        self.grams: list[set[str]] = []
        self.index: dict[str, list[int]] = defaultdict(list)

    def add(self, row_id: str, text: str) -> None:
        self._add(row_id, char_ngrams(text))

    def _add(self, row_id: str, grams: set[str]) -> None:
        self.ids.append(row_id)
        self.grams.append(grams)
        for g in grams:
            self.index[g].append(len(self.ids) - 1)

    def _matches(self, grams: set[str]) -> list[tuple[int, float]]:
        """(position, jaccard) of stored texts above the threshold, most shared 5-grams first."""
        shared = Counter(i for g in grams for i in self.index.get(g, ()))
        out = []
        for i, inter in shared.most_common():
            union = len(grams) + len(self.grams[i]) - inter
            if union and inter / union > self.threshold:
                out.append((i, inter / union))
        return out

    def find(self, text: str) -> tuple[str, float] | None:
        """The first stored near-duplicate of ``text`` (id, jaccard), or None."""
        matches = self._matches(char_ngrams(text))
        return (self.ids[matches[0][0]], matches[0][1]) if matches else None


def near_duplicates(rows: list[LabeledRow], threshold: float = NEAR_DUP_JACCARD) -> list[tuple[int, int, float]]:
    """Pairs (i, j, jaccard) with i < j above ``threshold``: each row is checked against the rows before it."""
    index = NearDuplicateIndex(threshold)
    pairs = []
    for j, row in enumerate(rows):
        grams = char_ngrams(row.text)
        pairs += [(i, j, jac) for i, jac in index._matches(grams)] if grams else []
        index._add(row.id, grams)
    return pairs


def _phrase(text: str, at_start: bool) -> str:
    t = _NON_WORD.sub("", normalize_text(text))
    return t[:PHRASE_CHARS] if at_start else t[-PHRASE_CHARS:]


def overused_phrases(rows: list[LabeledRow], max_share: float = PHRASE_MAX_SHARE) -> list[tuple[str, str, int]]:
    """(where, phrase, count) for opening/closing phrases shared by more than ``max_share`` of rows."""
    if len(rows) < PHRASE_MIN_ROWS:
        return []
    limit = max_share * len(rows)
    out = []
    for where, at_start in (("opening", True), ("closing", False)):
        counts = Counter(p for p in (_phrase(r.text, at_start) for r in rows) if len(p) == PHRASE_CHARS)
        out += [(where, phrase, n) for phrase, n in counts.most_common() if n > limit]
    return out


def validate(data: LoadedData, minimums: Minimums | None = None) -> Report:
    problems = list(data.problems)
    warnings: list[str] = []
    rows = data.rows
    loc = data.locations

    def at(row: LabeledRow) -> tuple[str, int]:
        return loc.get(row.id, ("?", 0))

    for row in rows:
        expected = split_for_id(row.id)
        if row.split is not None and row.split != expected:
            problems.append(Problem(*at(row), f"split {row.split!r} differs from the id hash split {expected!r}"))

    by_text: dict[str, LabeledRow] = {}
    for row in rows:
        key = normalize_text(row.text)
        if key in by_text:
            first = by_text[key]
            problems.append(Problem(*at(row), f"duplicate text of {first.id!r} ({at(first)[0]}:{at(first)[1]})"))
        else:
            by_text[key] = row

    for i, j, jac in near_duplicates(rows):
        a, b = rows[i], rows[j]
        leak = " across splits (leakage)" if split_for_id(a.id) != split_for_id(b.id) else ""
        problems.append(Problem(*at(b), f"near-duplicate of {a.id!r}{leak}: 5-gram Jaccard {jac:.2f} > {NEAR_DUP_JACCARD}"))

    for where, phrase, n in overused_phrases(rows):
        problems.append(Problem("labeled_data", 0, f"{where} phrase {phrase!r} used by {n} rows (> {PHRASE_MAX_SHARE:.0%} of {len(rows)})"))

    counts = label_counts(rows)
    if minimums is not None:
        if len(rows) < minimums.total:
            problems.append(Problem("labeled_data", 0, f"{len(rows)} rows, fewer than {minimums.total}"))
        for label, n in sorted(counts["category"].items()):
            if n < minimums.per_category:
                problems.append(Problem("labeled_data", 0, f"category {label}: {n} rows < {minimums.per_category}"))
        for label, need in minimums.severity.items():
            if counts["severity"][label] < need:
                problems.append(Problem("labeled_data", 0, f"severity {label}: {counts['severity'][label]} rows < {need}"))
        for label, n in sorted(counts["sentiment"].items()):
            if n < minimums.per_sentiment:
                problems.append(Problem("labeled_data", 0, f"sentiment {label}: {n} rows < {minimums.per_sentiment}"))
    if not any(r.split for r in rows):
        warnings.append("no row stores its split; run `triage data assign-splits`")
    return Report(problems, warnings, counts, len(rows))


ESCALATION_TRAINING_SIDE = (Path("escalation") / "escalation_dev.jsonl",)


def _escalation_texts(path: Path) -> list[tuple[str, str, tuple[str, int]]]:
    """(id, text, (file, line)) of an escalation-set file; malformed lines are the escalation loaders' to report."""
    if not path.exists():
        return []
    return [
        (r["id"], r["text"], (str(path), lineno))
        for lineno, r, error in read_jsonl(path)
        if not error and isinstance(r.get("id"), str) and isinstance(r.get("text"), str)
    ]


def escalation_eval_leaks(data_dir: Path, rows: list[LabeledRow], loc: dict[str, tuple[str, int]]) -> list[Problem]:
    """Training-side texts (complaints of any split, the escalation dev file) that near-duplicate an
    escalation eval row: the eval set measures the trigger head, so it must stay unseen. Only the small
    eval set is indexed; each training-side text is looked up in it once."""
    held_out = NearDuplicateIndex()
    for row_id, text, _ in _escalation_texts(Path(data_dir) / ESCALATION_SET_IN_DATA):
        held_out.add(row_id, text)
    if not held_out.ids:
        return []
    side = [(r.id, r.text, loc.get(r.id, ("?", 0))) for r in rows]
    for rel in ESCALATION_TRAINING_SIDE:
        side += _escalation_texts(Path(data_dir) / rel)
    problems = []
    for _, text, where in side:
        for i, jac in held_out._matches(char_ngrams(text)):
            problems.append(
                Problem(*where, f"near-duplicate of escalation eval row {held_out.ids[i]!r} (leakage): 5-gram Jaccard {jac:.2f}")
            )
    return problems


def validate_dir(data_dir: Path, minimums: Minimums | None = Minimums()) -> Report:
    data = load_labeled(data_dir)
    report = validate(data, minimums)
    report.problems += escalation_eval_leaks(data_dir, data.rows, data.locations)
    return report
