"""The pinned canary set: a model must get most of 50 labeled complaints right before it serves.

Why: a model directory can load, answer with finite probabilities and still be wrong everywhere (a
reload once accepted a model with negated temperatures that turned a fraud complaint from 一级/L4 into
三级/L3). So every load (start-up, SIGHUP, POST /v1/admin/reload) predicts these rows and refuses the
model when a head's accuracy is below ``canary_min_accuracy`` or its 一级 recall below
``canary_min_critical_recall`` (settings; 0.5 and 0.6 by default).

The rows live in ``triage_model/policy/canary_set.yaml`` (see its header for how they were chosen),
pinned here by SHA-256. The shipped model (triage-e5-small-zh-202611291155) gets 0.74 / 0.76 / 0.74
(category / severity / sentiment) and 14 of 17 一级; the negated-temperature model gets 0.00 / 0.04 /
0.02 and 2 of 17. The floors sit well between, so a retrained model passes and a broken one does not.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import yaml

from triage_model.model_dir import ModelLoadError
from triage_model.predictor import TriagePredictor
from triage_model.schema import CRITICAL_SEVERITY, HEADS

CANARY_PATH = Path(__file__).resolve().parents[1] / "triage_model" / "policy" / "canary_set.yaml"
CANARY_SHA256 = "80912327ca487f7172cdb5e8b17f5ada908210818a7117907e07367c3e0a9a64"

EDGE_TEXTS: tuple[str, ...] = (
    "東西很好用，謝謝客服的耐心解答 👍",  # traditional characters and an emoji
    "x" * 5000,  # long and not Chinese: the head + tail cut
)
"""Inputs a broken tokenizer or graph chokes on: they must be answered, labels not checked."""


class CanaryRow(NamedTuple):
    id: str
    category: str
    severity: str
    sentiment: str
    text: str


@lru_cache(maxsize=1)
def canary_set(path: Path = CANARY_PATH, sha256: str = CANARY_SHA256) -> tuple[CanaryRow, ...]:
    raw = path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise ValueError(f"{path.name} does not match its pinned SHA-256: the canary set was edited (update CANARY_SHA256 on purpose)")
    return tuple(CanaryRow(**row) for row in yaml.safe_load(raw.decode("utf-8")))


@dataclass(frozen=True)
class CanaryReport:
    accuracy: dict[str, float]
    critical_recall: float
    rows: int


def check_canary(predictor: TriagePredictor, min_accuracy: float, min_critical_recall: float) -> CanaryReport:
    """Raise ``ModelLoadError`` unless the candidate answers the edge inputs with probabilities and
    agrees with the gold labels of the canary set at least as well as the floors."""
    rows = canary_set()
    try:
        results = predictor.predict([r.text for r in rows] + list(EDGE_TEXTS))
    except Exception as err:  # any failure here means the candidate must not serve
        raise ModelLoadError(f"canary batch failed: {type(err).__name__}") from err
    if len(results) != len(rows) + len(EDGE_TEXTS):
        raise ModelLoadError("canary batch returned the wrong number of results")
    for res in results:
        for head in HEADS:
            score = getattr(res, head).score
            if not (math.isfinite(score) and 0.0 <= score <= 1.0):
                raise ModelLoadError(f"canary: {head} score {score} is not a probability")
    results = results[: len(rows)]
    pairs = list(zip(results, rows, strict=True))
    accuracy = {head: sum(getattr(res, head).label == getattr(row, head) for res, row in pairs) / len(rows) for head in HEADS}
    critical = [res.severity.label == CRITICAL_SEVERITY for res, row in pairs if row.severity == CRITICAL_SEVERITY]
    recall = sum(critical) / len(critical)
    low = {head: round(acc, 3) for head, acc in accuracy.items() if acc < min_accuracy}
    if low:
        raise ModelLoadError(f"canary: accuracy {low} on the {len(rows)} pinned canary complaints is below the floor {min_accuracy}")
    if recall < min_critical_recall:
        raise ModelLoadError(
            f"canary: found {sum(critical)} of {len(critical)} {CRITICAL_SEVERITY} canary complaints "
            f"(recall {recall:.2f} < floor {min_critical_recall})"
        )
    return CanaryReport({h: round(a, 3) for h, a in accuracy.items()}, round(recall, 3), len(rows))
