"""How the trigger head's score and the escalation lexicon's evidence combine into one decision.

Why two signals: the lexicon gives exact, explainable evidence (a character span) and handles counts
("第三次" vs "第二次") well, but its negation / hypothetical / reported-speech cue lists keep missing new
phrasings in both directions. The trigger head reads the whole complaint and scores how likely a careful
reader (GUIDELINE §5) would mark each text trigger. Neither alone is as good as both:

==================  ==========================================================
lexicon says        the trigger fires when the head's score p is
==================  ==========================================================
clean match         p ≥ ``veto``   (the head can overrule a match it finds implausible)
cue-blocked match   p ≥ ``rescue`` (the head can overrule a negation/hypothetical cue)
nothing             p ≥ ``alone``  (the head alone, at a high bar; evidence is the score)
==================  ==========================================================

The three operating points per trigger are fitted on the dev data (``training.trigger_fit``) and stored
in the model's ``triage_config.json``: they belong to one model's scores. With no thresholds (older
models, or a model without the head) the decision is the lexicon's alone: veto 0, rescue/alone never.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, Field

Support = Literal["against", "neutral", "strong", "certain"]
LexiconState = Literal["clean", "blocked", "none"]

NEVER = 1.01
"""A threshold no probability reaches."""

LEXICON_ONLY: dict[str, float] = {"veto": 0.0, "rescue": NEVER, "alone": NEVER}


class TriggerSignal(BaseModel):
    """The trigger head's view of one text trigger."""

    score: float = Field(ge=0.0, le=1.0, description="trigger head probability that a reader would mark this trigger")
    support: Support = Field(
        description="against: below the veto point (a lexicon match is dropped); strong: rescues a cue-blocked "
        "match; certain: fires even without a lexicon match; neutral otherwise"
    )


def support_level(score: float, thresholds: Mapping[str, float] | None) -> Support:
    """Place ``score`` among a trigger's fitted operating points."""
    t = {**LEXICON_ONLY, **(thresholds or {})}
    if score >= t["alone"]:
        return "certain"
    if score >= t["rescue"]:
        return "strong"
    if score < t["veto"]:
        return "against"
    return "neutral"


def fuse(state: LexiconState, support: Support | None) -> bool:
    """Whether a text trigger fires, from the lexicon state and (if the model has the head) its support."""
    if support is None:
        return state == "clean"
    if state == "clean":
        return support != "against"
    if state == "blocked":
        return support in ("strong", "certain")
    return support == "certain"
