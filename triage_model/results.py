"""Pydantic models for what the predictor and the escalation scorer return; the API and the CLI
serialise these directly."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from triage_model.trigger_fusion import TriggerSignal

TriggerName = Literal["asks_superior", "repeated_contact", "legal_media_risk", "high_emotion", "sla_near_breach", "severity_critical"]
"""Spelled out for the OpenAPI enum; a test checks it equals ``schema.ALL_TRIGGERS``."""


class LabelScore(BaseModel):
    """One head's top label and its calibrated probability."""

    label: str
    score: float = Field(ge=0.0, le=1.0, description="calibrated probability of `label`")
    runner_up: str | None = Field(default=None, description="second most likely label")


class SentimentScore(LabelScore):
    emotion_index: float = Field(ge=0.0, le=100.0, description="intensity of negative emotion, 0 (calm/positive) … 100 (furious)")


class TextEvidence(BaseModel):
    """Where in the submitted text a text trigger fired: ``text == original[start:end]``."""

    start: int = Field(ge=0, description="character offset into the text as sent (inclusive)")
    end: int = Field(ge=0, description="character offset (exclusive)")
    text: str = Field(description="the matched words")


class FieldEvidence(BaseModel):
    """Which prediction or context field fired a trigger."""

    field: str = Field(description="e.g. severity.label, sentiment.emotion_index, context.repeat_count")
    value: str | int | float | bool = Field(description="the field's value")
    detail: str | None = Field(None, description="the rule it met, e.g. '>= 80' or '40.0 of 48 hours in L2 used (83%)'")


class FiredTrigger(BaseModel):
    name: TriggerName
    weight: float = Field(ge=0.0, le=1.0, description="the policy weight this trigger adds to escalation_score")
    source: Literal["text", "heads", "context"] = Field(description="text lexicon, model heads, or ticket context")
    evidence: TextEvidence | FieldEvidence
    model_score: float | None = Field(
        default=None, ge=0.0, le=1.0, description="the trigger head's score for a text trigger, when the model has one"
    )


class EscalationResult(BaseModel):
    """The escalation decision for one complaint (tier_policy.md), with the evidence behind it."""

    tier: Literal["L1", "L2", "L3", "L4"] = Field(description="handling tier: never below the context's current_tier")
    tier_name: str = Field(description="一线客服 / 专业支持 / 客户关系 / 管理层")
    escalation_score: float = Field(ge=0.0, le=1.0, description="1 − ∏(1 − weight) over the fired triggers (0 = none)")
    triggers: list[FiredTrigger] = Field(description="every trigger that fired, in schema order")
    needs_human_review: bool = Field(description="some head's calibrated score is below the policy threshold")
    review_reasons: list[str] = Field(default_factory=list)
    received_at: AwareDatetime = Field(description="context received_at, or the time the request was served")
    first_response_due: AwareDatetime = Field(description="received_at + the grade's first-response SLA (1 h / 2 h / 4 h)")
    resolution_due: AwareDatetime = Field(description="received_at + the grade's resolution SLA (24 h / 48 h / 72 h)")
    tier_due: AwareDatetime = Field(description="when the decided tier must resolve it: 24 h / 48 h / 72 h / 5 working days")
    policy_version: str


class TriageResult(BaseModel):
    """The three heads' predictions for one complaint, plus the escalation decision when scored."""

    model_config = ConfigDict(extra="allow")

    category: LabelScore
    severity: LabelScore
    sentiment: SentimentScore
    model_version: str
    truncated: bool = Field(
        default=False,
        description="the model did not read the whole text: it was over max_length tokens (128 for the shipped model) and only "
        "its head and tail were read, or over 4,000 characters after normalisation",
    )
    text_triggers: dict[str, TriggerSignal] | None = Field(
        default=None, description="the trigger head's score per text trigger (absent for models without the head)"
    )
    escalation: EscalationResult | None = Field(default=None, description="tier, triggers with evidence, SLA deadlines")
