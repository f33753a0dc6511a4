"""Classification metrics for every head: accuracy, macro-F1, per-class P/R/F1, confusion, ECE.

One implementation used by training (early stopping, metrics.json), ``triage evaluate`` and the QA
reports, so the numbers a reviewer reads are the numbers the trainer optimised.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np

from triage_model.decision import decide

ECE_BINS = 15


def expected_calibration_error(probs: np.ndarray, gold: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE with equal-width confidence bins."""
    if len(gold) == 0:
        return 0.0
    conf = probs.max(1)
    correct = (probs.argmax(1) == gold).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(ece)


def reliability_bins(probs: np.ndarray, gold: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    conf = probs.max(1)
    correct = probs.argmax(1) == gold
    edges = np.linspace(0.0, 1.0, bins + 1)
    out = []
    for lo, hi in itertools.pairwise(edges):
        in_bin = (conf > lo) & (conf <= hi)
        n = int(in_bin.sum())
        out.append(
            {
                "lo": float(lo),
                "hi": float(hi),
                "count": n,
                "accuracy": float(correct[in_bin].mean()) if n else 0.0,
                "confidence": float(conf[in_bin].mean()) if n else 0.0,
            }
        )
    return out


def head_metrics(
    probs: np.ndarray, gold: Sequence[int], labels: Sequence[str], thresholds: Mapping[str, float] | None = None
) -> dict[str, object]:
    """Metrics for one head from calibrated probabilities ``[n, k]`` and gold label ids.

    Predictions follow the served decision rule (argmax + any label thresholds); ECE is measured on
    the top-probability label, which is what a calibrated score promises.
    """
    gold_arr = np.asarray(gold, dtype=int)
    pred = decide(probs, labels, thresholds) if len(gold_arr) else np.zeros(0, dtype=int)
    k = len(labels)
    confusion = np.zeros((k, k), dtype=int)
    for g, p in zip(gold_arr, pred, strict=True):
        confusion[g, p] += 1
    per_class = {}
    f1s = []
    for i, label in enumerate(labels):
        tp = int(confusion[i, i])
        per_class[label] = prf_from_counts(tp, int(confusion[:, i].sum()) - tp, int(confusion[i, :].sum()) - tp)
        if per_class[label]["support"]:
            f1s.append(per_class[label]["f1"])
    return {
        "n": len(gold_arr),
        "accuracy": float((pred == gold_arr).mean()) if len(gold_arr) else 0.0,
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "ece": expected_calibration_error(probs, gold_arr),
        "per_class": per_class,
        "labels": list(labels),
        "confusion": confusion.tolist(),
    }


def prf_from_counts(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision, recall, F1 and support (tp + fn) from counts; an empty denominator gives 0."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1), "support": int(tp + fn)}


def binary_prf(pred: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Precision, recall, F1 and support of one binary decision (no positives predicted → precision 0)."""
    pred, gold = np.asarray(pred, dtype=bool), np.asarray(gold, dtype=bool)
    tp = int((pred & gold).sum())
    return prf_from_counts(tp, int(pred.sum()) - tp, int(gold.sum()) - tp)


def roc_auc(scores: np.ndarray, gold: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann–Whitney, ties count half); None without both classes."""
    scores, gold = np.asarray(scores, dtype=float), np.asarray(gold, dtype=bool)
    n_pos, n_neg = int(gold.sum()), int((~gold).sum())
    if not n_pos or not n_neg:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[gold].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def multilabel_metrics(probs: np.ndarray, gold: np.ndarray, labels: Sequence[str], threshold: float = 0.5) -> dict[str, object]:
    """Per-label P/R/F1 of a multi-label (sigmoid) head at ``threshold``; macro-F1 over labels with support."""
    probs, gold = np.asarray(probs), np.asarray(gold) > 0.5
    per_class = {}
    for j, label in enumerate(labels):
        per_class[label] = binary_prf(probs[:, j] >= threshold, gold[:, j]) if len(gold) else binary_prf(np.zeros(0), np.zeros(0))
        per_class[label]["auc"] = roc_auc(probs[:, j], gold[:, j]) if len(gold) else None
    f1s = [m["f1"] for m in per_class.values() if m["support"]]
    aucs = [m["auc"] for m in per_class.values() if m["auc"] is not None]
    return {
        "n": len(gold),
        "threshold": threshold,
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "macro_auc": float(np.mean(aucs)) if aucs else None,
        "per_class": per_class,
        "labels": list(labels),
    }
