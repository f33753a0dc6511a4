"""``triage evaluate``: measure an exported (ONNX) model on a labeled split, as it is served."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eval.baselines import NgramBaseline, baseline_summary, side_by_side
from eval.escalation_eval import evaluate_escalation
from triage_model.labeled_data import ESCALATION_SET_IN_DATA, LabeledRow, gold_ids, load_labeled
from triage_model.metrics import head_metrics, multilabel_metrics
from triage_model.predictor import TriagePredictor
from triage_model.schema import HEADS, TEXT_TRIGGERS, TRIGGER_HEAD
from triage_model.trigger_decisions import decide_rows


def split_rows(data_dir: Path, split: str) -> list[LabeledRow]:
    rows = load_labeled(data_dir).require_valid().split(split)
    if not rows:
        raise ValueError(f"no rows in split {split!r} under {data_dir}")
    return rows


def predict_rows(predictor: TriagePredictor, rows: list[LabeledRow]) -> dict[str, np.ndarray]:
    return predictor.predict_proba([r.text for r in rows])


def evaluate_split(
    model_dir: Path | None, data_dir: Path, split: str = "test", escalation: bool = True, baseline: NgramBaseline | None = None
) -> dict:
    """Head metrics on ``split``; plus, when ``<data_dir>/escalation/escalation_eval.jsonl`` exists, the
    escalation scorer's metrics on that fixed set (it has no splits) with gold and with model heads.

    With a fitted ``baseline`` (``eval.baselines.fit_baseline``), its metrics on the same rows and the
    model-vs-baseline gap per head are added under ``baseline`` and ``vs_baseline``."""
    predictor = TriagePredictor.from_pretrained(model_dir)
    rows = split_rows(data_dir, split)
    probs = predict_rows(predictor, rows)
    thresholds = predictor.meta.decision_thresholds
    gold = gold_ids(rows)
    heads = {h: head_metrics(probs[h], gold[h], HEADS[h], thresholds.get(h)) for h in HEADS}
    if TRIGGER_HEAD in probs:
        decisions = decide_rows(probs[TRIGGER_HEAD], rows, predictor.meta.trigger_thresholds)
        heads[TRIGGER_HEAD] = multilabel_metrics(decisions.probs, decisions.gold, TEXT_TRIGGERS)
        heads["trigger_fusion"] = decisions.report()
    metrics = {"model_version": predictor.version, "split": split, "n": len(rows), "heads": heads}
    if baseline is not None:
        metrics["baseline"] = baseline_summary(baseline, rows, heads)
        metrics["vs_baseline"] = side_by_side(heads, metrics["baseline"]["heads"], metrics["baseline"]["severity_at_model_recall"])
    esc_path = Path(data_dir) / ESCALATION_SET_IN_DATA
    if escalation and esc_path.exists():
        metrics["escalation"] = evaluate_escalation(esc_path, predictor=predictor)
    return metrics
