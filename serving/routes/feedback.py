"""``POST /v1/feedback``: a reviewer's corrected labels, appended to the corrections log.

This is the path into the training data (``triage data merge-corrections``), so it is guarded:

* only keys with the ``feedback`` scope (or ``admin``) may post; with no such key configured the
  endpoint is off (403);
* the record carries the authenticated key's id as ``reviewer`` (and ``key_id``, ``key_scope``); a
  ``reviewer`` name in the body is kept only as ``declared_reviewer``, for information;
* size limits (body ``feedback_max_body_bytes``, text ``feedback_max_text_chars``) and a per-key rate
  (``feedback_per_minute``, ``feedback_burst``: 429 with Retry-After).

Thin: validation is pydantic's (labels against the schema), storage is ``triage_model.corrections``.
The handler is a plain ``def`` so the blocking append + fsync runs in the thread pool, not on the loop.
"""

from __future__ import annotations

import logging
import math

from fastapi import APIRouter, Body, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serving.auth import ApiKey
from serving.deps import get_holder, get_settings, require_feedback
from serving.errors import ApiError, request_id_of
from serving.model_holder import ModelHolder
from serving.schemas import ErrorResponse, check_unicode
from serving.settings import Settings
from triage_model.corrections import CorrectedLabels, append_correction

log = logging.getLogger("serving")

ERRORS = {code: {"model": ErrorResponse} for code in (401, 403, 413, 415, 422, 429, 507)}
router = APIRouter(prefix="/v1", tags=["feedback"], responses=ERRORS)

EXAMPLE_FEEDBACK = {
    "request_id": "3f2a9c0d1b7e4f65a8c2d9e0f1a2b3c4",
    "text": "我的银行卡昨晚凌晨被莫名扣了3次共2980元，根本不是我本人操作的！",
    "category": "支付与资金安全",
    "severity": "一级",
    "comment": "未授权扣款应为一级",
}


class FeedbackRequest(CorrectedLabels):
    """Corrected labels for any subset of heads, for a served request and/or a complaint text."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_FEEDBACK]})

    request_id: str | None = Field(None, min_length=1, max_length=128, description="X-Request-ID of the triage call being corrected")
    text: str | None = Field(None, max_length=100_000, description="the complaint text (needed to fold the correction into training data)")
    reviewer: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="optional display name, stored as declared_reviewer; the record's reviewer is your key's id",
    )
    comment: str | None = Field(None, max_length=2000)

    _unicode = field_validator("request_id", "text", "reviewer", "comment")(check_unicode)

    @field_validator("reviewer")
    @classmethod
    def _reviewer_not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("reviewer is blank")
        return v.strip() if v else v

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("text is blank")
        return v

    @model_validator(mode="after")
    def _identifies_complaint(self) -> FeedbackRequest:
        if self.request_id is None and self.text is None:
            raise ValueError("give request_id, text or both, to say which complaint is corrected")
        return self


class FeedbackResponse(BaseModel):
    correction_id: str
    received_at: str
    request_id: str
    reviewer: str = Field(description="the authenticated key id the correction is recorded under")


@router.post("/feedback", status_code=201, response_model=FeedbackResponse, summary="record a reviewer's corrected labels")
def feedback(
    request: Request,
    body: FeedbackRequest = Body(openapi_examples={"correction": {"summary": "a severity and category fix", "value": EXAMPLE_FEEDBACK}}),
    key: ApiKey = Depends(require_feedback),
    settings: Settings = Depends(get_settings),
    holder: ModelHolder = Depends(get_holder),
) -> FeedbackResponse:
    if body.text is not None and len(body.text) > settings.feedback_max_text_chars:
        raise ApiError(413, "text_too_large", f"text has {len(body.text)} characters; at most {settings.feedback_max_text_chars}")
    wait = request.app.state.feedback_limiter.take(key.key_id)
    if wait > 0:
        raise ApiError(
            429, "rate_limited", "too many corrections from this key; retry later", headers={"Retry-After": str(math.ceil(wait))}
        )
    served = holder.predictor
    given = body.model_dump(exclude_none=True, exclude={"reviewer"})
    fields = {
        **given,
        "reviewer": key.key_id,
        "key_id": key.key_id,
        "key_scope": "feedback" if "feedback" in key.scopes else "admin",
        "declared_reviewer": body.reviewer,
        "model_version": served.version if served else None,
    }
    try:
        record = append_correction(settings.corrections_dir, fields)
    except OSError as err:
        log.error(f"cannot store correction: {err}", extra={"request_id": request_id_of(request)})
        raise ApiError(507, "storage_error", "the correction could not be stored; try again") from err
    return FeedbackResponse(
        correction_id=record.correction_id, received_at=record.received_at, request_id=request_id_of(request), reviewer=key.key_id
    )
