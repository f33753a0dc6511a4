"""The n-gram baseline every evaluation prints beside the model: character 1–3-gram TF-IDF + logistic
regression per head (scikit-learn), trained on the same train split, ``C`` chosen on dev.

Why: a fine-tuned encoder that is only a few points above a bag of character n-grams is not pulling its
weight. Printing both side by side in ``triage evaluate`` / ``report`` / ``promote`` and the MODEL_CARD
keeps that gap visible, and ``triage promote`` refuses a model that is not ahead of it on every head.

The baseline reads the same normalised text the model reads (``normalize_text``) and is decided by plain
argmax (it has no calibrated 一级 threshold). Because the served model lowers its 一级 threshold to buy recall
(and pays for it in 一级 precision, hence in severity macro-F1), ``severity_at_recall`` also scores the
baseline at the model's own 一级 recall: the comparison at one operating point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from triage_model.decision import fit_recall_threshold, recall_at
from triage_model.labeled_data import LabeledRow, load_labeled
from triage_model.metrics import head_metrics
from triage_model.normalize import normalize_text
from triage_model.schema import CRITICAL_SEVERITY, HEADS, label_to_id

C_GRID: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
NGRAM_RANGE = (1, 3)


def _vectorizer():
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer="char", ngram_range=NGRAM_RANGE, min_df=2, sublinear_tf=True, max_features=200_000)


def _labels(rows: Sequence[LabeledRow], head: str) -> np.ndarray:
    return np.array([label_to_id(head, getattr(r, head)) for r in rows])


def _full_proba(clf, x, n_classes: int) -> np.ndarray:
    """``predict_proba`` widened to every schema class (a class absent from train gets probability 0)."""
    out = np.zeros((x.shape[0], n_classes), dtype=np.float32)
    out[:, clf.classes_] = clf.predict_proba(x)
    return out


@dataclass
class NgramBaseline:
    """``fit(train, dev)`` then ``predict_proba(texts)``; learned state ends with ``_`` (scikit-learn style)."""

    c_grid: tuple[float, ...] = C_GRID
    seed: int = 0
    vectorizer_: object | None = None
    classifiers_: dict[str, object] = field(default_factory=dict)
    chosen_c_: dict[str, float] = field(default_factory=dict)

    def fit(self, train: Sequence[LabeledRow], dev: Sequence[LabeledRow]) -> NgramBaseline:
        from sklearn.linear_model import LogisticRegression

        self.vectorizer_ = _vectorizer()
        x_train = self.vectorizer_.fit_transform([normalize_text(r.text) for r in train])
        x_dev = self.vectorizer_.transform([normalize_text(r.text) for r in dev])
        for head, labels in HEADS.items():
            y_train, y_dev = _labels(train, head), _labels(dev, head)
            best = None
            for c in self.c_grid:
                clf = LogisticRegression(C=c, max_iter=2000, class_weight="balanced", random_state=self.seed)
                clf.fit(x_train, y_train)
                f1 = head_metrics(_full_proba(clf, x_dev, len(labels)), y_dev, labels)["macro_f1"]
                if best is None or f1 > best[0] + 1e-9:
                    best = (f1, c, clf)
            _, self.chosen_c_[head], self.classifiers_[head] = best
        return self

    def predict_proba(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        if self.vectorizer_ is None:
            raise RuntimeError("NgramBaseline is not fitted: call fit(train, dev) first")
        x = self.vectorizer_.transform([normalize_text(t) for t in texts])
        return {head: _full_proba(self.classifiers_[head], x, len(HEADS[head])) for head in HEADS}

    def evaluate(self, rows: Sequence[LabeledRow]) -> dict[str, dict]:
        return heads_metrics(self.predict_proba([r.text for r in rows]), rows)


def heads_metrics(probs: dict[str, np.ndarray], rows: Sequence[LabeledRow]) -> dict[str, dict]:
    """Per head: argmax metrics of the baseline's ``probs`` against ``rows``' gold labels."""
    return {head: head_metrics(probs[head], _labels(rows, head), HEADS[head]) for head in HEADS}


def fit_baseline(data_dir, seed: int = 0) -> NgramBaseline:
    """The baseline trained on ``data_dir``'s train split with ``C`` picked on its dev split."""
    data = load_labeled(data_dir).require_valid()
    return NgramBaseline(seed=seed).fit(data.split("train"), data.split("dev"))


def severity_at_recall(probs: np.ndarray, gold: np.ndarray, recall: float) -> dict[str, float]:
    """The baseline's severity metrics with its 一级 threshold lowered until its 一级 recall on these rows
    reaches ``recall`` (the model's): macro-F1 at the same operating point as the model.

    The threshold is fitted on the very rows it is scored on, which flatters the baseline, so a model
    ahead of this figure is ahead for real. Where no threshold down to 0.05 reaches ``recall``, the
    reported recall is lower than asked."""
    threshold = fit_recall_threshold(probs, gold, label_to_id("severity", CRITICAL_SEVERITY), recall)
    at = severity_at_threshold(probs, gold, threshold)
    return {**at, "target_recall": round(float(recall), 4), "recall": round(at["recall"], 4), "precision": round(at["precision"], 4)}


def severity_at_threshold(probs: np.ndarray, gold: np.ndarray, threshold: float) -> dict[str, float]:
    """Severity macro-F1 and accuracy, and 一级 recall and precision, under the served rule at one 一级 threshold."""
    m = head_metrics(probs, gold, HEADS["severity"], {CRITICAL_SEVERITY: threshold})
    recall, precision = recall_at(probs, gold, label_to_id("severity", CRITICAL_SEVERITY), threshold)
    return {"threshold": threshold, "macro_f1": m["macro_f1"], "accuracy": m["accuracy"], "recall": recall, "precision": precision}


def baseline_summary(baseline: NgramBaseline, rows: Sequence[LabeledRow], model_heads: dict[str, dict] | None = None) -> dict[str, object]:
    """Per head: macro-F1 / accuracy of the baseline on ``rows`` (plus 一级 recall), and the chosen C; with the
    model's ``model_heads``, also the baseline's severity at the model's 一级 recall (``severity_at_model_recall``)."""
    probs = baseline.predict_proba([r.text for r in rows])
    out: dict[str, object] = {
        "model": "char 1-3-gram TF-IDF + logistic regression",
        "n": len(rows),
        "chosen_c": dict(baseline.chosen_c_),
        "heads": heads_metrics(probs, rows),
    }
    if model_heads is not None:
        model_recall = model_heads["severity"]["per_class"][CRITICAL_SEVERITY]["recall"]
        out["severity_at_model_recall"] = severity_at_recall(probs["severity"], _labels(rows, "severity"), model_recall)
    return out


def side_by_side(
    model_heads: dict[str, dict], baseline_heads: dict[str, dict], severity_matched: dict[str, float] | None = None
) -> list[dict[str, object]]:
    """Rows of (head, model macro-F1, baseline macro-F1, gap in points): the table every evaluation prints.
    With ``severity_matched`` (``severity_at_recall``), the severity row also carries the baseline at the
    model's 一级 recall and that gap."""
    out = []
    for head in HEADS:
        m, b = model_heads[head]["macro_f1"], baseline_heads[head]["macro_f1"]
        row: dict[str, object] = {
            "head": head,
            "model_macro_f1": round(m, 4),
            "baseline_macro_f1": round(b, 4),
            "gap_points": round(100 * (m - b), 1),
        }
        if head == "severity" and severity_matched is not None:
            row["baseline_macro_f1_at_model_recall"] = round(severity_matched["macro_f1"], 4)
            row["gap_points_at_model_recall"] = round(100 * (m - severity_matched["macro_f1"]), 1)
        out.append(row)
    return out


def matched_cell(row: dict[str, object]) -> str:
    """The 'baseline at the model's 一级 recall (gap)' cell of a side-by-side row; '—' for heads without one."""
    if "baseline_macro_f1_at_model_recall" not in row:
        return "—"
    return f"{row['baseline_macro_f1_at_model_recall']:.3f} ({row['gap_points_at_model_recall']:+.1f})"
