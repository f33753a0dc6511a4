"""What does averaging several trained models add? Served probabilities of each, averaged, scored on a split.

    python -m eval.model_ensemble --model triage_model/default_model --model runs/v4-teacher-onnx

Why: issue 12 asks how much an ensemble teacher (seeds, folds or recipes of the same encoder) adds before
anyone pays for serving or distilling from one. Each model's served probabilities (int8, calibrated, with
its own n-gram blend) are averaged per head; the 一级 threshold of the average is fitted on the **dev** split
(F2, as ``triage train`` does) and applied unchanged to the reported split, so the test split is never
tuned on. Each member is scored by its own served rule beside the average.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from eval.evaluate import predict_rows, split_rows
from triage_model.decision import fit_fbeta_threshold
from triage_model.labeled_data import gold_ids
from triage_model.metrics import head_metrics
from triage_model.predictor import TriagePredictor
from triage_model.schema import CRITICAL_SEVERITY, HEADS

CRITICAL = HEADS["severity"].index(CRITICAL_SEVERITY)


def figures(probs: dict[str, np.ndarray], gold: dict[str, np.ndarray], critical_threshold: float | None) -> dict[str, float]:
    """Macro-F1 per head, severity accuracy and 一级 recall / precision under the served decision rule, computed
    as ``triage evaluate`` computes them (``head_metrics``)."""
    out: dict[str, float] = {}
    for head, labels in HEADS.items():
        thresholds = {CRITICAL_SEVERITY: critical_threshold} if head == "severity" and critical_threshold is not None else None
        metrics = head_metrics(probs[head], gold[head], labels, thresholds)
        out[f"{head}_macro_f1"] = round(metrics["macro_f1"], 4)
        if head == "severity":
            critical = metrics["per_class"][CRITICAL_SEVERITY]
            out["severity_accuracy"] = round(metrics["accuracy"], 4)
            out["critical_recall"], out["critical_precision"] = round(critical["recall"], 4), round(critical["precision"], 4)
    return out


def average(probs: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-head mean of several models' probabilities (each row still sums to 1)."""
    return {head: np.mean([p[head] for p in probs], axis=0) for head in HEADS}


def compare(model_dirs: Sequence[Path], data_dir: Path, split: str = "test") -> dict[str, object]:
    """Each model alone (its own threshold) and their average (threshold fitted on dev), on ``split``."""
    dev_rows, rows = split_rows(data_dir, "dev"), split_rows(data_dir, split)
    dev_gold, gold = gold_ids(dev_rows), gold_ids(rows)
    members, dev_probs, probs = [], [], []
    for model_dir in model_dirs:
        predictor = TriagePredictor.from_pretrained(model_dir)
        dev_probs.append(predict_rows(predictor, dev_rows))
        probs.append(predict_rows(predictor, rows))
        own = predictor.meta.decision_thresholds.get("severity", {}).get(CRITICAL_SEVERITY)
        members.append({"model": str(model_dir), "version": predictor.version, **figures(probs[-1], gold, own)})
    threshold = fit_fbeta_threshold(average(dev_probs)["severity"], dev_gold["severity"], CRITICAL)
    mean = {"models": len(model_dirs), "critical_threshold": threshold, **figures(average(probs), gold, threshold)}
    mean["dev"] = figures(average(dev_probs), dev_gold, threshold)
    return {"split": split, "rows": len(rows), "members": members, "average": mean}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, action="append", required=True, help="exported model directory (repeat, ≥ 2)")
    parser.add_argument("--data-dir", type=Path, default=Path("labeled_data"))
    parser.add_argument("--split", default="test", choices=["dev", "test"], help="split reported (the threshold is always fitted on dev)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures here as JSON")
    args = parser.parse_args()
    if len(args.model) < 2:
        parser.error("give at least two --model directories")
    result = compare(args.model, args.data_dir, args.split)
    text = json.dumps(result, ensure_ascii=False, indent=2)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
