"""The context the escalation scorer reads, as a plain pydantic model.

Why here and not in ``serving``: the scorer must run from the CLI, the evaluation and notebooks without
importing the web service. ``serving.schemas.ComplaintContext`` has the same field names, so a request
converts with ``EscalationContext.coerce(request)``; so does a dict (a JSONL row's ``context``) or any
object with these attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

TierName = Literal["L1", "L2", "L3", "L4"]

YEARS_ACCEPTED = (1970, 2199)
"""Context dates outside these years are refused: deadline arithmetic on 9999-12-31 overflowed (a 500),
and no ticket is that old or that far ahead."""


def check_year(value: datetime | None) -> datetime | None:
    """A context date must fall in ``YEARS_ACCEPTED`` (shared with the API schema, so both say the same)."""
    if value is not None and not YEARS_ACCEPTED[0] <= value.year <= YEARS_ACCEPTED[1]:
        raise ValueError(f"year {value.year} is outside {YEARS_ACCEPTED[0]}-{YEARS_ACCEPTED[1]}")
    return value


CONTEXT_FIELDS: tuple[str, ...] = ("received_at", "repeat_count", "current_tier", "tier_entered_at", "customer_requested_escalation")


class EscalationContext(BaseModel):
    """What the intake system knows about a complaint beyond its text. Every field is optional.

    Naive datetimes are read in the policy's time zone (Asia/Shanghai) by the scorer; the API only
    accepts aware ones.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    received_at: datetime | None = Field(None, description="when this message arrived; default: now")
    repeat_count: int | None = Field(None, ge=0, description="times the customer raised this issue (> 2 fires repeated_contact)")
    current_tier: TierName | None = Field(None, description="tier handling it now; the decision never goes below it")
    tier_entered_at: datetime | None = Field(None, description="when it entered current_tier (for sla_near_breach)")
    customer_requested_escalation: bool = Field(False, description="the customer asked to escalate (structured asks_superior)")

    _years = field_validator("received_at", "tier_entered_at")(check_year)

    @classmethod
    def coerce(cls, context: object | None) -> EscalationContext:
        """Accept None, an ``EscalationContext``, a mapping (JSONL ``context``) or any object with the
        same attribute names (``serving.schemas.ComplaintContext``, a request body)."""
        if context is None:
            return cls()
        if isinstance(context, cls):
            return context
        if isinstance(context, Mapping):
            values = {k: context[k] for k in CONTEXT_FIELDS if k in context and context[k] not in (None, "")}
            return cls.model_validate(values)
        values = {k: getattr(context, k) for k in CONTEXT_FIELDS if getattr(context, k, None) is not None}
        return cls.model_validate(values)
