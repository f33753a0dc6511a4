"""Severity macro-F1, 一级 recall and precision of a model and of the n-gram baseline over a range of 一级 thresholds.

Why: the served model lowers its 一级 threshold to buy recall, which costs severity macro-F1; the baseline is decided
by argmax. Comparing the two at one figure each mixes ranking with operating point. This sweep shows both curves
side by side, so "is the model better at severity" is answered at equal thresholds or equal recall.

    python -m eval.severity_sweep --model triage_model/default_model --split dev
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from eval.baselines import fit_baseline, severity_at_threshold
from eval.evaluate import split_rows
from triage_model.labeled_data import gold_ids
from triage_model.predictor import TriagePredictor

THRESHOLDS: tuple[float, ...] = (0.15, 0.20, 0.24, 0.30, 0.35, 0.40, 0.50)


def sweep(probs: np.ndarray, gold: np.ndarray, thresholds: tuple[float, ...] = THRESHOLDS) -> list[dict[str, float]]:
    """Per threshold: severity macro-F1 and accuracy, and 一级 recall and precision under the served rule."""
    return [severity_at_threshold(probs, gold, t) for t in thresholds]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="exported model directory (default: the shipped one)")
    parser.add_argument("--data-dir", type=Path, default=Path("labeled_data"))
    parser.add_argument("--split", default="dev", help="dev (where choices are made) or test (to report)")
    args = parser.parse_args(argv)
    rows = split_rows(args.data_dir, args.split)
    texts = [r.text for r in rows]
    gold = gold_ids(rows)["severity"]
    curves = {
        "model": sweep(TriagePredictor.from_pretrained(args.model).predict_proba(texts)["severity"], gold),
        "baseline": sweep(fit_baseline(args.data_dir).predict_proba(texts)["severity"], gold),
    }
    print(f"| 一级 threshold | {args.split} model F1 / R / P | {args.split} baseline F1 / R / P |")
    print("|---|---|---|")
    for m, b in zip(curves["model"], curves["baseline"], strict=True):
        cells = [f"{c['macro_f1']:.3f} / {c['recall']:.3f} / {c['precision']:.3f}" for c in (m, b)]
        print(f"| {m['threshold']:.2f} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
