"""Inter-annotator agreement: Cohen's κ per head between the stored labels and a blind second labeling.

Why: κ is the ceiling a model can be held to. Where two careful readers of the guideline disagree, the
guideline (not the model) is what needs work; a head with κ 0.7 cannot be expected to score 0.9.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from triage_model.io import read_jsonl
from triage_model.labeled_data import load_labeled
from triage_model.schema import HEADS, TEXT_TRIGGERS


def cohen_kappa(a: list[str], b: list[str]) -> float:
    """Cohen's κ of two label lists over the same items (1 = perfect, 0 = chance agreement)."""
    from sklearn.metrics import cohen_kappa_score

    return float(cohen_kappa_score(a, b))


def agreement(data_dir: Path, second_labels: Path) -> dict:
    """κ and raw agreement per head (and per text trigger) on the rows both labelings have."""
    first = {r.id: r for r in load_labeled(data_dir).rows}
    second = {rec["id"]: rec for _, rec, err in read_jsonl(second_labels) if not err and rec.get("id") in first}
    ids = sorted(second)
    out: dict = {"n": len(ids), "heads": {}}
    for head in HEADS:
        a = [getattr(first[i], head) for i in ids]
        b = [second[i][head] for i in ids]
        confusions = Counter((x, y) for x, y in zip(a, b, strict=True) if x != y).most_common(8)
        out["heads"][head] = {
            "kappa": round(cohen_kappa(a, b), 3),
            "agreement": round(sum(x == y for x, y in zip(a, b, strict=True)) / len(ids), 3),
            "top_disagreements": [{"stored": x, "second": y, "count": n} for (x, y), n in confusions],
        }
    for trig in TEXT_TRIGGERS:
        a = [str(trig in first[i].triggers) for i in ids]
        b = [str(trig in (second[i].get("triggers") or [])) for i in ids]
        out["heads"][f"trigger:{trig}"] = {
            "kappa": round(cohen_kappa(a, b), 3),
            "agreement": round(sum(x == y for x, y in zip(a, b, strict=True)) / len(ids), 3),
        }
    return out
