"""Measure the escalation scorer on the labeled escalation set (``labeled_data/escalation/*.jsonl``).

Two modes, because they answer different questions:

* **gold heads** — severity/sentiment come from the labels (愤怒 → emotion 90, others by
  ``NEGATIVE_EMOTION_WEIGHTS``), so the numbers measure only the trigger decisions and the tier rules.
  With a model that has the trigger head, its scores are fused with the lexicon as in production;
  ``lexicon_gold_heads`` shows the lexicon alone for comparison.
* **model heads** — a ``TriagePredictor`` supplies the heads, as in production; the gap to gold heads
  is what head errors (mostly severity 一级 and sentiment 愤怒) cost the tier decision.

Reported: per-trigger precision/recall/F1, tier accuracy and confusion, the false escalation rate
(gold L1/L2 predicted L3/L4, over gold L1/L2 rows), and the trap false-fire rate (trap rows where a
text trigger fires that the gold does not have).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from triage_model.escalation import EscalationScorer
from triage_model.labeled_data import DEFAULT_ESCALATION_SET, EscalationRow, load_escalation_rows
from triage_model.metrics import prf_from_counts
from triage_model.results import EscalationResult, LabelScore, SentimentScore, TriageResult
from triage_model.schema import ALL_TRIGGERS, NEGATIVE_EMOTION_WEIGHTS, TEXT_TRIGGERS, TIERS

GOLD_EMOTION = {label: (90.0 if label == "愤怒" else round(100.0 * w, 1)) for label, w in NEGATIVE_EMOTION_WEIGHTS.items()}
"""Emotion index a gold sentiment stands for: 愤怒 is clearly furious (≥ 80), the rest stay below."""


def gold_heads(row: EscalationRow) -> TriageResult:
    """A TriageResult carrying the labeled heads with full confidence."""
    return TriageResult(
        category=LabelScore(label=row.category, score=1.0),
        severity=LabelScore(label=row.severity, score=1.0),
        sentiment=SentimentScore(label=row.sentiment, score=1.0, emotion_index=GOLD_EMOTION[row.sentiment]),
        model_version="gold-labels",
    )


def _prf(tp: int, fp: int, fn: int) -> dict[str, float | int]:
    m = prf_from_counts(tp, fp, fn)
    return {**{k: round(m[k], 4) for k in ("precision", "recall", "f1")}, "support": m["support"], "tp": tp, "fp": fp, "fn": fn}


def escalation_metrics(rows: Sequence[EscalationRow], predictions: Sequence[EscalationResult]) -> dict:
    """Per-trigger P/R/F1, tier accuracy/confusion, false escalation and trap false-fire rates."""
    per_trigger = {}
    fired_sets = [frozenset(t.name for t in p.triggers) for p in predictions]
    for name in ALL_TRIGGERS:
        tp = sum(1 for r, f in zip(rows, fired_sets, strict=True) if name in f and name in r.gold_triggers)
        fp = sum(1 for r, f in zip(rows, fired_sets, strict=True) if name in f and name not in r.gold_triggers)
        fn = sum(1 for r, f in zip(rows, fired_sets, strict=True) if name not in f and name in r.gold_triggers)
        per_trigger[name] = _prf(tp, fp, fn)
    confusion = {g: dict.fromkeys(TIERS, 0) for g in TIERS}
    for r, p in zip(rows, predictions, strict=True):
        confusion[r.gold_tier][p.tier] += 1
    low = [(r, p) for r, p in zip(rows, predictions, strict=True) if r.gold_tier in ("L1", "L2")]
    false_esc = sum(1 for _, p in low if p.tier in ("L3", "L4"))
    traps = [(r, f) for r, f in zip(rows, fired_sets, strict=True) if r.trap]
    trap_fires = sum(1 for r, f in traps if (f - r.gold_triggers) & set(TEXT_TRIGGERS))
    tier_correct = sum(1 for r, p in zip(rows, predictions, strict=True) if r.gold_tier == p.tier)
    under = sum(1 for r, p in zip(rows, predictions, strict=True) if TIERS.index(p.tier) < TIERS.index(r.gold_tier))
    f1s = [m["f1"] for m in per_trigger.values() if m["support"]]
    return {
        "n": len(rows),
        "per_trigger": per_trigger,
        "min_trigger_f1": round(min(f1s), 4) if f1s else 0.0,
        "tier_accuracy": round(tier_correct / len(rows), 4),
        "tier_confusion": confusion,
        "under_escalation_rate": round(under / len(rows), 4),
        "false_escalation_l3_l4": round(false_esc / len(low), 4) if low else 0.0,
        "false_escalation_count": false_esc,
        "gold_l1_l2": len(low),
        "trap_rows": len(traps),
        "trap_false_fire_rate": round(trap_fires / len(traps), 4) if traps else 0.0,
        "trap_false_fires": trap_fires,
        "needs_human_review_rate": round(sum(p.needs_human_review for p in predictions) / len(rows), 4),
    }


def score_rows(rows: Sequence[EscalationRow], heads: Sequence[TriageResult], scorer: EscalationScorer) -> list[EscalationResult]:
    return [scorer.score(h, r.text, r.context) for r, h in zip(rows, heads, strict=True)]


def summary_of(metrics: dict) -> dict:
    """The few numbers a reviewer reads first (printed by ``triage evaluate``)."""
    return {
        "n": metrics["n"],
        "tier_accuracy": metrics["tier_accuracy"],
        "false_escalation_l3_l4": metrics["false_escalation_l3_l4"],
        "trap_false_fire_rate": metrics["trap_false_fire_rate"],
        "min_trigger_f1": metrics["min_trigger_f1"],
        "trigger_f1": {k: v["f1"] for k, v in metrics["per_trigger"].items()},
    }


def evaluate_escalation(
    data_path: Path = DEFAULT_ESCALATION_SET,
    predictor=None,
    scorer: EscalationScorer | None = None,
    modes: Sequence[str] = ("lexicon_gold_heads", "gold_heads", "model_heads"),
) -> dict:
    """Run the scorer on ``data_path`` in each mode (``model_heads`` needs ``predictor``).

    Returns ``{"policy_version", "data", "summary": {mode: ...}, mode: full metrics, ...}``.
    """
    rows = load_escalation_rows(data_path)
    scorer = scorer or EscalationScorer()
    out: dict = {"policy_version": scorer.policy.version, "data": str(data_path), "summary": {}}
    predicted = predictor.predict([r.text for r in rows]) if predictor is not None else None
    if predictor is not None:
        out["model_version"] = predictor.version
    has_signals = predicted is not None and all(p.text_triggers for p in predicted)
    for mode in modes:
        if mode == "lexicon_gold_heads":
            if not has_signals:
                continue  # without trigger-head scores gold_heads already is the lexicon alone
            heads = [gold_heads(r) for r in rows]
        elif mode == "gold_heads":
            heads = [gold_heads(r) for r in rows]
            if has_signals:
                heads = [h.model_copy(update={"text_triggers": p.text_triggers}) for h, p in zip(heads, predicted, strict=True)]
        elif mode == "model_heads":
            if predicted is None:
                continue
            heads = predicted
        else:
            raise ValueError(f"unknown mode {mode!r}; use lexicon_gold_heads, gold_heads or model_heads")
        metrics = escalation_metrics(rows, score_rows(rows, heads, scorer))
        out[mode] = metrics
        out["summary"][mode] = summary_of(metrics)
    return out
