"""Pydantic models for what the predictor returns; the API and the CLI serialise these directly."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LabelScore(BaseModel):
    """One head's top label and its calibrated probability."""

    label: str
    score: float = Field(ge=0.0, le=1.0, description="calibrated probability of `label`")
    runner_up: str | None = Field(default=None, description="second most likely label")


class SentimentScore(LabelScore):
    emotion_index: float = Field(ge=0.0, le=100.0, description="intensity of negative emotion, 0 (calm/positive) … 100 (furious)")


class TriageResult(BaseModel):
    """The three heads' predictions for one complaint (escalation is added on top by the scorer)."""

    model_config = ConfigDict(extra="allow")

    category: LabelScore
    severity: LabelScore
    sentiment: SentimentScore
    model_version: str
    truncated: bool = Field(default=False, description="text was longer than the limit and cut head+tail")
