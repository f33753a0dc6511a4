"""Request and response bodies of the grading API (pydantic v2), with the OpenAPI examples."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from triage_model.escalation.models import check_year
from triage_model.normalize import normalize_text
from triage_model.results import TriageResult

_SURROGATE = re.compile("[\ud800-\udfff]")


def check_unicode(value: str | None) -> str | None:
    """JSON may carry ``"\\ud800"``, a lone UTF-16 surrogate: not a character, and text that cannot be
    encoded to UTF-8 can be neither scored nor stored. Refused with 422 before any inference."""
    if value is not None and _SURROGATE.search(value):
        raise ValueError("contains a lone UTF-16 surrogate (e.g. \\ud800), which is not valid Unicode")
    return value


EXAMPLE_CALM = {"text": "请问你们的会员可以开增值税专用发票吗？需要提供哪些资料？"}
EXAMPLE_FRAUD = {
    "text": "我的银行卡昨晚凌晨被莫名扣了3次共2980元，根本不是我本人操作的！客服一直推脱，再不处理我就报警并且去12315投诉！",
    "repeat_count": 1,
}
EXAMPLE_REPEAT = {
    "text": "这已经是我第四次打电话了，冰箱坏了一周还没人上门修，你们到底管不管？",
    "repeat_count": 4,
    "current_tier": "L2",
    "tier_entered_at": "2026-11-27T09:00:00+08:00",
    "received_at": "2026-11-29T07:30:00+08:00",
}

EXAMPLE_REPEAT_RESPONSE = {
    "category": {"label": "售后服务", "score": 0.91, "runner_up": "产品质量"},
    "severity": {"label": "二级", "score": 0.84, "runner_up": "三级"},
    "sentiment": {"label": "愤怒", "score": 0.72, "runner_up": "不满", "emotion_index": 86.4},
    "model_version": "triage-e5-20261129-ab12cd34",
    "truncated": False,
    "text_triggers": {
        "asks_superior": {"score": 0.03, "support": "against"},
        "repeated_contact": {"score": 0.97, "support": "certain"},
        "legal_media_risk": {"score": 0.01, "support": "against"},
    },
    "escalation": {
        "tier": "L3",
        "tier_name": "客户关系",
        "escalation_score": 0.7855,
        "triggers": [
            {
                "name": "repeated_contact",
                "weight": 0.4,
                "source": "text",
                "evidence": {"start": 5, "end": 8, "text": "第四次"},
                "model_score": 0.97,
            },
            {
                "name": "high_emotion",
                "weight": 0.35,
                "source": "heads",
                "evidence": {"field": "sentiment.emotion_index", "value": 86.4, "detail": ">= 80"},
            },
            {
                "name": "sla_near_breach",
                "weight": 0.45,
                "source": "context",
                "evidence": {
                    "field": "context.tier_entered_at",
                    "value": "2026-11-27T09:00:00+08:00",
                    "detail": "46.5 of 48 hours in L2 used (97%)",
                },
            },
        ],
        "needs_human_review": False,
        "review_reasons": [],
        "received_at": "2026-11-29T07:30:00+08:00",
        "first_response_due": "2026-11-29T09:30:00+08:00",
        "resolution_due": "2026-12-01T07:30:00+08:00",
        "tier_due": "2026-12-02T07:30:00+08:00",
        "policy_version": "2026.11.29-1",
    },
    "request_id": "5f1c2a9e8b7d4c3a",
}
"""The answer to EXAMPLE_REPEAT (heads illustrative; the escalation block is what the scorer gives
for them — a test keeps it so): 第四次 (confirmed by the trigger head) → repeated_contact, 愤怒 → high_emotion, 46.5 h of L2's 48 h →
sla_near_breach; two of {critical, repeated, emotion} → L3, and L2 + 1 → L3."""


class ComplaintContext(BaseModel):
    """Optional context the intake system knows about the complaint (feeds the escalation scorer).

    Field for field the same as ``triage_model.escalation.EscalationContext``, which the scorer
    converts it to (``EscalationContext.coerce``), so ``triage_model`` never imports ``serving``.
    """

    received_at: AwareDatetime | None = Field(None, description="ISO-8601 with timezone; default: now")
    repeat_count: int | None = Field(None, ge=0, le=10_000, description="times this customer raised this issue")
    current_tier: Literal["L1", "L2", "L3", "L4"] | None = Field(None, description="tier now handling it")
    tier_entered_at: AwareDatetime | None = Field(None, description="when it entered current_tier (ISO-8601 with tz)")
    customer_requested_escalation: bool = False

    _years = field_validator("received_at", "tier_entered_at")(check_year)


class TriageRequest(ComplaintContext):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_CALM, EXAMPLE_FRAUD, EXAMPLE_REPEAT]})

    text: str = Field(description="the complaint, any length up to 100,000 characters (over 4,000 is cut head + tail)")

    @field_validator("text")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        check_unicode(v)
        # blank = nothing left after normalisation; the start decides for almost every text, and no
        # more than the size limit's worth is ever normalised here (over it is the route's 413)
        blank = not v.strip() or (not normalize_text(v[:2000]) and (len(v) <= 2000 or not normalize_text(v[:100_000])))
        if blank:
            raise ValueError("text is empty or has only whitespace/control characters")
        return v


class BatchItem(TriageRequest):
    """One complaint of a batch, optionally with the caller's own ``id`` (echoed in its result)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"id": "T-1001", **EXAMPLE_CALM}]})

    id: str | None = Field(None, min_length=1, max_length=200, description="your id for this item; comes back on its result")

    _id_unicode = field_validator("id")(check_unicode)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[BatchItem] = Field(
        min_length=1, description="up to max_batch_items (64 by default) complaints; results come back in this order"
    )


class TriageResponse(TriageResult):
    """The heads, the escalation decision (tier, triggers with evidence, deadlines) and the request id."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_REPEAT_RESPONSE]})

    request_id: str


class BatchItemResult(TriageResult):
    id: str | None = Field(None, description="the item's id, as sent")


class BatchResponse(BaseModel):
    request_id: str
    model_version: str
    results: list[BatchItemResult]


class ErrorResponse(BaseModel):
    """Every error, 4xx or 5xx, has this shape."""

    error: str
    error_type: str
    request_id: str
    details: list[dict] | None = None


class HealthResponse(BaseModel):
    status: Literal["ok"]


class ReadyResponse(BaseModel):
    status: Literal["ready", "loading"]
    model_version: str | None = None
    canary: dict | None = Field(None, description="the loaded model's accuracy on the pinned canary set")
    calendar: dict | None = Field(None, description="working-day calendar coverage (official / provisional years)")
    warnings: list[str] = Field(default_factory=list, description="things an operator should fix; the service still serves")


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: str
    data_hash: str
    git_commit: str
    created_at: str
    labels: dict[str, list[str]]
    trigger_head: list[str] = Field(default_factory=list, description="text triggers the model scores (empty: lexicon only)")
    trigger_thresholds: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="per text trigger: the veto / rescue / alone points fusing the head with the lexicon"
    )
    metrics_summary: dict[str, dict[str, float]]
    loaded_at: datetime
    concurrent_runs: int = Field(1, description="onnxruntime runs this worker's dynamic batcher keeps in flight for this model")
    intra_op_threads: int | None = Field(None, description="onnxruntime intra-op threads per run (null: every core)")
    worker_pid: int = Field(
        description="the server process that answered: with several workers each one loads and reloads its own copy, "
        "so ask a few times to see every worker's model_version"
    )
