"""Load and validate the versioned escalation policy (``triage_model/policy/escalation_policy.yaml``).

Why a typed model over the YAML: a typo in a trigger name, a tier or a cue-set name should fail when
the service starts, not silently never fire. Regexes are compiled (and so checked) by the detector.
"""

from __future__ import annotations

import threading
from datetime import date
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from triage_model.escalation.models import TierName
from triage_model.schema import ALL_TRIGGERS, TEXT_TRIGGERS, TIERS

POLICY_DIR = Path(__file__).resolve().parents[1] / "policy"
DEFAULT_POLICY_PATH = POLICY_DIR / "escalation_policy.yaml"
USER_DICT_PATH = POLICY_DIR / "user_dict.txt"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Thresholds(_Strict):
    high_emotion: float = Field(ge=0, le=100)
    sla_near_breach_fraction: float = Field(gt=0, le=1)
    needs_human_review_below: float = Field(ge=0, le=1)
    repeated_contact_min: int = Field(ge=2)
    vague_count: int = Field(ge=1)


class TierLimit(_Strict):
    """A tier's resolution time: clock hours, or working days (weekends and holidays excluded)."""

    hours: float | None = Field(None, gt=0)
    working_days: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> TierLimit:
        if (self.hours is None) == (self.working_days is None):
            raise ValueError("a tier limit has exactly one of hours / working_days")
        return self


class TierRules(_Strict):
    default: TierName
    at_least_L2_any: list[str]
    at_least_L3_any: list[str]
    at_least_L3_two_of: list[str]
    L4_pairs: list[tuple[str, str]]
    L4_min_triggers: int = Field(ge=1)
    sla_near_breach_steps: int = Field(ge=0)

    @model_validator(mode="after")
    def _known_triggers(self) -> TierRules:
        named = [*self.at_least_L2_any, *self.at_least_L3_any, *self.at_least_L3_two_of, *(t for p in self.L4_pairs for t in p)]
        unknown = sorted(set(named) - set(ALL_TRIGGERS))
        if unknown:
            raise ValueError(f"tier_rules name unknown triggers {unknown}; known: {list(ALL_TRIGGERS)}")
        return self


class ContextPolicy(_Strict):
    requested_escalation_fires_asks_superior: bool = True


class YearSchedule(_Strict):
    """One year's State Council holiday schedule (放假调休安排): days off and 调休 make-up working days."""

    status: Literal["official", "provisional"] = Field(
        description="official: copied from the State Council notice; provisional: estimated before the notice (warned about)"
    )
    source: str = Field(min_length=1, description="the notice (or the reasoning behind an estimate)")
    holidays: list[date] = Field(description="days off (weekend days inside a holiday run may be listed too)")
    workdays: list[date] = Field(default_factory=list, description="weekend days that are working days (调休)")


class CalendarPolicy(_Strict):
    fallback_fixed_holidays: list[str] = Field(default_factory=list, description="MM-DD, every year")
    extra_holidays: list[date] = Field(default_factory=list)
    extra_workdays: list[date] = Field(default_factory=list)
    schedules: dict[int, YearSchedule] = Field(default_factory=dict, description="per year, for years chinese_calendar lacks")

    @model_validator(mode="after")
    def _dates_in_their_year(self) -> CalendarPolicy:
        for year, sched in self.schedules.items():
            wrong = sorted(d.isoformat() for d in [*sched.holidays, *sched.workdays] if d.year != year)
            if wrong:
                raise ValueError(f"calendar.schedules.{year} lists dates of another year: {wrong}")
            both = sorted(d.isoformat() for d in set(sched.holidays) & set(sched.workdays))
            if both:
                raise ValueError(f"calendar.schedules.{year}: {both} are both holidays and workdays")
        return self


class Segmentation(_Strict):
    clause: str
    sentence: str
    agent_turn: str
    customer_turn: str


class CueSet(_Strict):
    """Words that, near a match, make it negated / hypothetical / reported (see the YAML header)."""

    scope: Literal["clause", "sentence", "sentence_and_next"] = "clause"
    direction: Literal["before", "after", "any"] = "before"
    window: int = Field(10, ge=1)
    adjacent: bool = False
    patterns: list[str]
    unless_after: list[str] = Field(default_factory=list)
    unless_before: list[str] = Field(default_factory=list)


class Requirement(_Strict):
    scope: Literal["clause", "sentence"] = "clause"
    regex: str


class PatternSpec(_Strict):
    id: str
    regex: str
    count_group: str | None = None
    count_offset: int = 0
    require: Requirement | None = None
    also_blocked_by: list[str] = Field(default_factory=list, description="cue sets for this pattern only")


class TextTriggerSpec(_Strict):
    blocked_by: list[str] = Field(default_factory=list)
    terms: dict[str, list[str]] = Field(default_factory=dict)
    patterns: list[PatternSpec]


class EscalationPolicy(_Strict):
    version: str
    timezone: str = "Asia/Shanghai"
    max_scan_chars: int | None = Field(None, ge=100, description="longer texts: only head 2/3 + tail 1/3 are scanned")
    thresholds: Thresholds
    weights: dict[str, float]
    tier_limits: dict[TierName, TierLimit]
    tier_rules: TierRules
    context: ContextPolicy = ContextPolicy()
    calendar: CalendarPolicy = CalendarPolicy()
    segmentation: Segmentation
    cues: dict[str, CueSet]
    shared_terms: dict[str, list[str]] = Field(default_factory=dict)
    triggers: dict[str, TextTriggerSpec]
    source: str = Field("", description="where this policy was read from (set by load_policy)")

    @model_validator(mode="after")
    def _consistent(self) -> EscalationPolicy:
        if set(self.weights) != set(ALL_TRIGGERS):
            raise ValueError(f"weights must name exactly {list(ALL_TRIGGERS)}, got {sorted(self.weights)}")
        if any(not 0 <= w < 1 for w in self.weights.values()):
            raise ValueError("trigger weights must be in [0, 1)")
        if set(self.tier_limits) != set(TIERS):
            raise ValueError(f"tier_limits must name exactly {list(TIERS)}")
        if set(self.triggers) != set(TEXT_TRIGGERS):
            raise ValueError(f"triggers must define exactly the text triggers {list(TEXT_TRIGGERS)}, got {sorted(self.triggers)}")
        for name, spec in self.triggers.items():
            named = set(spec.blocked_by).union(*(p.also_blocked_by for p in spec.patterns))
            missing = sorted(named - set(self.cues))
            if missing:
                raise ValueError(f"{name}.blocked_by names undefined cue sets {missing}")
        return self


_CACHE: dict[Path, EscalationPolicy] = {}
_LOCK = threading.Lock()


def load_policy(path: str | Path | None = None) -> EscalationPolicy:
    """Read and validate a policy file (default: the packaged one); cached per path."""
    path = Path(path or DEFAULT_POLICY_PATH).resolve()
    with _LOCK:
        if path not in _CACHE:
            try:
                raw = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError) as err:
                raise ValueError(f"{path}: cannot read escalation policy: {err}") from err
            if not isinstance(raw, dict):
                raise ValueError(f"{path}: escalation policy must be a YAML mapping")
            _CACHE[path] = EscalationPolicy.model_validate({**raw, "source": str(path)})
        return _CACHE[path]
