"""How sure is a difference between two models on the same split? A paired bootstrap of the served predictions.

    python -m eval.paired_bootstrap --model triage_model/default_model --model triage_model/student_model

Why: the selection rule of the fast student (macro-F1 within 1.0 point of the teacher, 一级 recall not lower)
and the promotion gate read differences of a few tenths of a point on 1,873 test rows. Resampling the rows
with replacement (the same rows for both models, so their shared difficulty cancels) gives the spread of
each difference: where the 95 % interval spans both sides of a margin, the split cannot tell whether the
margin is met, and a model chosen because it passed by 0.001 was chosen by the draw of the test rows.
Predictions follow the served decision rule (int8 + blend, argmax + the 一级 threshold).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from eval.evaluate import predict_rows, split_rows
from triage_model.decision import decide
from triage_model.labeled_data import LabeledRow, gold_ids
from triage_model.predictor import TriagePredictor
from triage_model.schema import CRITICAL_SEVERITY, HEADS


def served_predictions(model_dir: Path, rows: Sequence[LabeledRow]) -> dict[str, np.ndarray]:
    """Label ids per head as the model serves them (blend, calibration and thresholds included)."""
    predictor = TriagePredictor.from_pretrained(model_dir)
    probs = predict_rows(predictor, list(rows))
    return {h: decide(probs[h], labels, predictor.meta.decision_thresholds.get(h)) for h, labels in HEADS.items()}


def _figures(gold: dict[str, np.ndarray], pred: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, float]:
    out = {}
    for head, labels in HEADS.items():
        out[f"{head}_macro_f1"] = f1_score(gold[head][idx], pred[head][idx], labels=range(len(labels)), average="macro", zero_division=0)
    critical = HEADS["severity"].index(CRITICAL_SEVERITY)
    is_critical = gold["severity"][idx] == critical
    out["critical_recall"] = float((pred["severity"][idx][is_critical] == critical).mean()) if is_critical.any() else float("nan")
    return out


def paired_bootstrap(
    gold: dict[str, np.ndarray], pred_a: dict[str, np.ndarray], pred_b: dict[str, np.ndarray], n: int = 2000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Per figure: A, B, the observed difference B − A, and the 2.5 / 97.5 % bootstrap quantiles of that difference."""
    rows = len(gold["category"])
    everything = np.arange(rows)
    a, b = _figures(gold, pred_a, everything), _figures(gold, pred_b, everything)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in a}
    for _ in range(n):
        idx = rng.integers(0, rows, rows)
        fa, fb = _figures(gold, pred_a, idx), _figures(gold, pred_b, idx)
        for k in draws:
            draws[k].append(fb[k] - fa[k])
    return {
        k: {
            "a": round(a[k], 4),
            "b": round(b[k], 4),
            "delta": round(b[k] - a[k], 4),
            "ci_low": round(float(np.nanquantile(draws[k], 0.025)), 4),
            "ci_high": round(float(np.nanquantile(draws[k], 0.975)), 4),
        }
        for k in a
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, action="append", required=True, help="exactly two model directories: A (reference), B")
    parser.add_argument("--data-dir", type=Path, default=Path("labeled_data"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    if len(args.model) != 2:
        parser.error("give --model twice: the reference, then the candidate")
    rows = split_rows(args.data_dir, args.split)
    gold = gold_ids(rows)
    pred_a, pred_b = (served_predictions(m, rows) for m in args.model)
    result = paired_bootstrap(gold, pred_a, pred_b, args.n, args.seed)
    print(f"A = {args.model[0]}, B = {args.model[1]}, {args.split} split, {len(rows)} rows, {args.n} paired resamples")
    print("| figure | A | B | B − A | 95 % interval |\n|---|---|---|---|---|")
    for k, r in result.items():
        print(f"| {k} | {r['a']:.3f} | {r['b']:.3f} | {r['delta']:+.3f} | {r['ci_low']:+.3f} … {r['ci_high']:+.3f} |")
    if args.out:
        args.out.write_text(json.dumps({"a": str(args.model[0]), "b": str(args.model[1]), "figures": result}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
