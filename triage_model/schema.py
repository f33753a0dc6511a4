"""The label schema: the one place that defines every head's labels and the SLA each grade implies.

Everything else (data validation, training, export, serving, escalation, reports) imports these
names, so adding or renaming a label is a change in one file plus a retrain.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Final

CATEGORIES: Final[tuple[str, ...]] = (
    "物流配送",
    "产品质量",
    "售后服务",
    "订单交易",
    "支付与资金安全",
    "账户与隐私",
    "系统故障",
    "服务态度",
    "营销宣传",
    "咨询建议",
)

SEVERITIES: Final[tuple[str, ...]] = ("一级", "二级", "三级")
CRITICAL_SEVERITY: Final[str] = SEVERITIES[0]
"""一级/紧急: the grade whose misses cost most (recall is gated, the decision has its own threshold)."""

SENTIMENTS: Final[tuple[str, ...]] = ("愤怒", "不满", "中性", "正面")

CHANNELS: Final[tuple[str, ...]] = ("app", "phone", "web", "email", "wechat", "weibo", "review", "store", "chat", "letter")
"""Where a labeled complaint came in (optional on a row; the QA report slices by it). GUIDELINE §7.1 lists the same."""

TEXT_TRIGGERS: Final[tuple[str, ...]] = ("asks_superior", "repeated_contact", "legal_media_risk")
"""Triggers a reader can see in the text itself; labeled on every data row."""

ALL_TRIGGERS: Final[tuple[str, ...]] = (
    *TEXT_TRIGGERS,
    "high_emotion",
    "sla_near_breach",
    "severity_critical",
)

TIERS: Final[tuple[str, ...]] = ("L1", "L2", "L3", "L4")
TIER_NAMES: Final[dict[str, str]] = {"L1": "一线客服", "L2": "专业支持", "L3": "客户关系", "L4": "管理层"}

HEADS: Final[dict[str, tuple[str, ...]]] = {
    "category": CATEGORIES,
    "severity": SEVERITIES,
    "sentiment": SENTIMENTS,
}
"""Head name → ordered labels (single-label, softmax). The order is the logits order of the model's outputs."""

TRIGGER_HEAD: Final[str] = "text_triggers"
"""The multi-label head: one sigmoid score per entry of ``TEXT_TRIGGERS``. It is a scored signal the
escalation scorer weighs against the lexicon's evidence (GUIDELINE §5 is a reading judgement — negation,
hypotheticals, reported speech — that a keyword list alone keeps getting wrong on new phrasings)."""

SEVERITY_DESCRIPTIONS: Final[dict[str, str]] = {
    "一级": "紧急: 人身安全/健康受损或有风险; 资金被盗、未授权扣款、诈骗; 账户被盗或数据泄露; 大面积支付中断",
    "二级": "重要: 一般经济损失, 订单或功能受阻",
    "三级": "常规: 态度问题、无损失的延迟、咨询与建议",
}


@dataclass(frozen=True)
class GradeSLA:
    """Response and resolution deadlines that follow from a severity grade."""

    first_response: timedelta
    resolution: timedelta


GRADE_SLA: Final[dict[str, GradeSLA]] = {
    "一级": GradeSLA(timedelta(hours=1), timedelta(hours=24)),
    "二级": GradeSLA(timedelta(hours=2), timedelta(hours=48)),
    "三级": GradeSLA(timedelta(hours=4), timedelta(hours=72)),
}

NEGATIVE_EMOTION_WEIGHTS: Final[dict[str, float]] = {"愤怒": 1.0, "不满": 0.6, "中性": 0.15, "正面": 0.0}
"""How much each sentiment contributes to ``emotion_index`` (0–100 intensity of negative emotion)."""


def label_to_id(head: str, label: str) -> int:
    """Index of ``label`` in ``head``'s logits; raises ``KeyError`` with the allowed labels."""
    labels = HEADS[head]
    try:
        return labels.index(label)
    except ValueError:
        raise KeyError(f"{label!r} is not a {head} label; expected one of {list(labels)}") from None


def schema_dict() -> dict[str, object]:
    """Serializable schema, written into every model directory so a model carries its labels."""
    return {
        "heads": {head: list(labels) for head, labels in HEADS.items()},
        "triggers": list(ALL_TRIGGERS),
        "trigger_head": list(TEXT_TRIGGERS),
        "tiers": {tier: TIER_NAMES[tier] for tier in TIERS},
    }


def check_schema_compatible(saved: dict[str, object]) -> None:
    """Refuse a model whose label schema differs from this code's: its logits would be mislabeled."""
    heads = saved.get("heads") if isinstance(saved, dict) else None
    expected = schema_dict()["heads"]
    if heads != expected:
        raise ValueError(f"model label schema {heads!r} does not match this code's schema {expected!r}")
