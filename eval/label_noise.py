"""Label-noise diagnosis: cross-validated out-of-fold probabilities → confident learning (``cleanlab``).

Why out-of-fold: a model scoring rows it was trained on agrees with their labels, right or wrong. Each row
is scored by a model that never saw it (k folds of the n-gram baseline, which trains in seconds), and
``cleanlab.filter.find_label_issues`` lists rows whose given label the other rows contradict. The list is
for *re-reading* against ``labeled_data/GUIDELINE.md``: a flagged row is relabeled only when a careful
reader agrees, never automatically (that would make the labels measure the model).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eval.baselines import NgramBaseline
from triage_model.labeled_data import LabeledRow
from triage_model.schema import HEADS, label_to_id

OOF_C_GRID: tuple[float, ...] = (4.0, 8.0)
"""The dev-chosen C was 4–8 for every head on the full data: a short grid keeps k folds × 3 heads fast."""


@dataclass(frozen=True)
class LabelIssue:
    id: str
    head: str
    given: str
    suggested: str
    given_prob: float
    suggested_prob: float
    text: str


def out_of_fold_probs(rows: Sequence[LabeledRow], folds: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    """``[n, k]`` probabilities per head, each row scored by a baseline trained on the other folds
    (``C`` chosen on a slice of those folds: no row ever influences its own score)."""
    from sklearn.model_selection import KFold

    rows = list(rows)
    out = {h: np.zeros((len(rows), len(labels)), dtype=np.float32) for h, labels in HEADS.items()}
    for train_idx, held_idx in KFold(folds, shuffle=True, random_state=seed).split(rows):
        rng = np.random.default_rng(seed)
        shuffled = rng.permutation(train_idx)
        cut = max(1, len(shuffled) // 8)
        fit_rows = [rows[i] for i in shuffled[cut:]]
        pick_rows = [rows[i] for i in shuffled[:cut]]
        probs = NgramBaseline(c_grid=OOF_C_GRID, seed=seed).fit(fit_rows, pick_rows).predict_proba([rows[i].text for i in held_idx])
        for h in HEADS:
            out[h][held_idx] = probs[h]
    return out


def find_issues(rows: Sequence[LabeledRow], probs: dict[str, np.ndarray]) -> list[LabelIssue]:
    """Rows per head whose label confident learning doubts, most doubtful first."""
    from cleanlab.filter import find_label_issues

    issues: list[LabelIssue] = []
    for head, labels in HEADS.items():
        given = np.array([label_to_id(head, getattr(r, head)) for r in rows])
        present = np.unique(given)
        if len(present) < 2:
            continue  # one class only: nothing can contradict it
        # cleanlab wants labels 0..k-1 over the classes that occur: drop absent columns, renormalise
        sub_probs = probs[head][:, present]
        sub_probs = sub_probs / sub_probs.sum(1, keepdims=True)
        ranked = find_label_issues(np.searchsorted(present, given), sub_probs, return_indices_ranked_by="self_confidence")
        p = probs[head]
        for i in ranked:
            best = int(p[i].argmax())
            issues.append(
                LabelIssue(
                    rows[i].id,
                    head,
                    labels[given[i]],
                    labels[best],
                    round(float(p[i, given[i]]), 3),
                    round(float(p[i, best]), 3),
                    rows[i].text,
                )
            )
    return issues


def write_issues(issues: Sequence[LabelIssue], path: Path) -> Path:
    """CSV (UTF-8 with BOM for Excel) with an empty ``decision`` column for the re-reader."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "head", "given", "suggested", "given_prob", "suggested_prob", "text", "decision"])
        for it in issues:
            writer.writerow([it.id, it.head, it.given, it.suggested, it.given_prob, it.suggested_prob, it.text, ""])
    return path
