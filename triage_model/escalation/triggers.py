"""Trigger detection: the three text triggers from the policy lexicon, and the three head/context ones.

Text triggers (asks_superior, repeated_contact, legal_media_risk) follow GUIDELINE §5: a lexicon
pattern proposes a candidate; it fires only if

1. its anchor is a jieba word of the sentence (not a piece of a longer word),
2. it is not inside an agent's turn of a "客服：… 客户：…" transcript,
3. a counted pattern ("第N次", "打了N遍") reaches the policy minimum (3), Chinese numerals included,
4. a required companion (a contact verb for "第三次") is a word in the same clause/sentence, and
5. none of the trigger's blocking cue sets is found in its window: negation (不用/不想/没必要),
   hypothetical (考虑/也许/本来想), past attempt (差点), counterfactual (要不是), conditional (如果/再不,
   for asks_superior only: a conditional threat *is* a legal risk), reported speech (朋友说/有人),
   dismissal after it (…算了/没必要), a company calling the customer, different issues.

Each fired trigger keeps the first surviving match as evidence: a [start, end) span into the original
text and the matched text. ``detect_states`` also keeps the first match that only a cue dropped: the
scorer weighs both against the model's trigger head (``triage_model.trigger_fusion``), which may veto
a match, rescue a cue-blocked one, or fire alone when it is certain. ``explain()`` returns every candidate with the reason it was kept or
dropped, for tests and for tuning on the dev set.

Context triggers: high_emotion (emotion_index ≥ threshold), severity_critical (grade 一级),
sla_near_breach (> 80 % of the current tier's time used), and the structured forms of
repeated_contact (repeat_count > 2) and asks_superior (customer_requested_escalation).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from triage_model.escalation.models import EscalationContext
from triage_model.escalation.policy import USER_DICT_PATH, CueSet, EscalationPolicy, PatternSpec
from triage_model.escalation.sla import TierClock
from triage_model.escalation.text import PreparedText
from triage_model.results import FieldEvidence, FiredTrigger, TextEvidence, TriageResult
from triage_model.schema import CRITICAL_SEVERITY
from triage_model.trigger_fusion import LexiconState

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_VAGUE_MARKS = set("几多数无好很许n")


def parse_count(token: str, vague: int) -> int | None:
    """'3' → 3, '十二' → 12, '二十' → 20, '三四' → 3 (a range: its lower end), '好几'/'无数' → ``vague``."""
    token = token.strip()
    if not token:
        return None
    if token.isdigit():
        return int(token)
    if any(ch in _VAGUE_MARKS for ch in token):
        return vague
    if "百" in token or "十" in token:
        total, num = 0, 0
        for ch in token:
            if ch in _CN_DIGITS:
                num = _CN_DIGITS[ch]
            elif ch == "十":
                total += (num or 1) * 10
                num = 0
            elif ch == "百":
                total += (num or 1) * 100
                num = 0
        return total + num
    digits = [_CN_DIGITS[ch] for ch in token if ch in _CN_DIGITS]
    return min(digits) if digits else None


@dataclass(frozen=True)
class Candidate:
    """One lexicon match and what became of it (``blocked`` is None when it fired)."""

    trigger: str
    pattern: str
    start: int
    end: int
    text: str
    blocked: str | None = None
    cue_blocked: bool = False
    """Dropped only by a negation/hypothetical/reported... cue — a reading judgement the trigger head may
    overrule. Structural drops (agent turn, part of a longer word, count below 3) are never overruled."""


@dataclass
class _Compiled:
    spec: PatternSpec
    regex: re.Pattern[str]
    require: re.Pattern[str] | None


_REGEX_SYNTAX = re.compile(r"\(\?<?[!=][^)]*\)|[()?:|\[\]*+\\]")


def _literal_len(pattern: str) -> int:
    """Length of a term without its regex syntax: "工商(?!银行)" sorts as 2 characters, after "工商部门"."""
    return len(_REGEX_SYNTAX.sub("", pattern))


def _alternation(words: list[str]) -> str:
    """Longest term first, so "律师函" is tried before "律师" at the same position."""
    return "(?:" + "|".join(sorted(words, key=_literal_len, reverse=True)) + ")"


def _expand(regex: str, terms: dict[str, list[str]], where: str) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in terms:
            raise ValueError(f"{where}: unknown term list {{{name}}}")
        return _alternation(terms[name])

    return _PLACEHOLDER.sub(sub, regex)


class TextTriggerDetector:
    """Compiled text-trigger lexicon of one policy. Stateless after construction: safe to share."""

    def __init__(self, policy: EscalationPolicy, user_dict: Path = USER_DICT_PATH) -> None:
        self.policy = policy
        self.user_dict = user_dict
        seg = policy.segmentation
        self.segmentation = {name: re.compile(getattr(seg, name)) for name in ("clause", "sentence", "agent_turn", "customer_turn")}
        self.cues: dict[str, tuple[CueSet, list[re.Pattern[str]], list[re.Pattern[str]], list[re.Pattern[str]]]] = {
            name: (
                cue,
                [re.compile(p) for p in cue.patterns],
                [re.compile(p) for p in cue.unless_after],
                [re.compile(p) for p in cue.unless_before],
            )
            for name, cue in policy.cues.items()
        }
        for name, (_, compiled_cues, _, _) in self.cues.items():
            for rx in compiled_cues:
                if rx.match("") is not None:  # the linear cue scan (``_cue_matches``) relies on this
                    raise ValueError(f"cues.{name}: pattern {rx.pattern!r} matches the empty string")
        self.patterns: dict[str, list[_Compiled]] = {}
        for trigger, spec in policy.triggers.items():
            terms = {**policy.shared_terms, **spec.terms}
            compiled = []
            for p in spec.patterns:
                where = f"{trigger}.{p.id}"
                try:
                    rx = re.compile(_expand(p.regex, terms, where))
                    req = re.compile(_expand(p.require.regex, terms, where)) if p.require else None
                except re.error as err:
                    raise ValueError(f"{where}: bad regex: {err}") from err
                if p.count_group and p.count_group not in rx.groupindex:
                    raise ValueError(f"{where}: count_group {p.count_group!r} is not a group of the regex")
                compiled.append(_Compiled(p, rx, req))
            self.patterns[trigger] = compiled

    def prepare(self, text: str) -> PreparedText:
        return PreparedText.build(text, self.segmentation, self.user_dict, self.policy.max_scan_chars)

    # -- candidate checks -------------------------------------------------------------------------

    def _cue_chain(self, doc: PreparedText, name: str, scope_s: int, scope_e: int) -> list[tuple[int, list[int], list[re.Match[str]]]]:
        """Per pattern of cue set ``name`` that matches in the segment [scope_s, scope_e): the matches
        ``finditer`` gives scanning the segment from its start, and their starts (for bisect).

        Scanned once per (cue set, segment) and memoised on ``doc``: this is what keeps the lexicon
        linear. (Before, every candidate re-scanned its whole clause for every cue pattern, so a
        20,000-character clause of "朋友说要报警" cost seconds.) A pattern without a match here is left
        out: nowhere in the segment can it match."""
        key = ("cue", name, scope_s, scope_e)
        chain = doc.cache.get(key)
        if chain is None:
            chain = []
            for i, rx in enumerate(self.cues[name][1]):
                found = list(rx.finditer(doc.norm, scope_s, scope_e))
                if found:
                    chain.append((i, [m.start() for m in found], found))
            doc.cache[key] = chain
        return chain

    @staticmethod
    def _cue_matches(
        doc: PreparedText, rx: re.Pattern[str], starts: list[int], found: list[re.Match[str]], lo: int, hi: int, scope_e: int
    ) -> Iterator[re.Match[str]]:
        """Exactly the matches of ``rx.finditer(doc.norm, lo, scope_e)`` that start before ``hi``, read
        from the segment's memoised matches.

        Scanning from the segment start and scanning from ``lo`` find the same matches from ``lo`` on
        unless a segment match straddles ``lo`` (starts before it, ends after it): every position where
        the pattern can match is either a match start of the segment scan or lies inside one of its
        matches. Only then are the positions of [lo, hi) tried one by one (at most the cue window).
        Cue patterns never match the empty string (checked when the detector is built)."""
        i = bisect.bisect_left(starts, lo)
        if i == 0 or found[i - 1].end() <= lo:
            for m in found[i:]:
                if m.start() >= hi:
                    return
                yield m
            return
        pos = lo
        while pos < hi:
            m = rx.match(doc.norm, pos, scope_e)
            if m is None:
                pos += 1
                continue
            yield m
            pos = m.end()

    def _cue_hit(self, doc: PreparedText, name: str, start: int, end: int) -> str | None:
        """The cue text if cue set ``name`` applies to the match [start, end), else None."""
        cue = self.cues[name][0]
        scope_s, scope_e = doc.scope_of(cue.scope, start if cue.direction != "after" else max(end - 1, start))
        if cue.direction == "before":
            lo, hi = max(scope_s, start - cue.window), start
        elif cue.direction == "after":
            lo, hi = end, min(scope_e, end + cue.window)
        elif cue.adjacent:
            lo, hi = scope_s, scope_e
        else:  # anywhere in the scope: the same answer for every match of the segment
            key = ("cue-any", name, scope_s, scope_e)
            if key not in doc.cache:
                doc.cache[key] = self._first_cue(doc, name, start, scope_s, scope_e, scope_s, scope_e)
            return doc.cache[key]
        if hi <= lo:
            return None
        return self._first_cue(doc, name, start, lo, hi, scope_s, scope_e)

    def _first_cue(self, doc: PreparedText, name: str, start: int, lo: int, hi: int, scope_s: int, scope_e: int) -> str | None:
        """The first cue (in the cue set's pattern order) found in [lo, hi) that passes the boundary and
        unless checks."""
        cue, patterns, unless_after, unless_before = self.cues[name]
        if cue.adjacent:
            # the cue must end exactly where the match starts: a window of a few characters, scanned directly
            per_pattern = (rx.finditer(doc.norm, lo, hi) for rx in patterns)
        else:
            # search the whole scope so a cue's lookahead can see past the window edge
            per_pattern = (
                self._cue_matches(doc, patterns[i], starts, found, lo, hi, scope_e)
                for i, starts, found in self._cue_chain(doc, name, scope_s, scope_e)
            )
        for matches in per_pattern:
            for m in matches:
                c_start, c_end = m.start(), m.end()
                if c_start >= hi:
                    break
                if c_end == c_start or (cue.direction == "before" and c_end > hi):
                    continue
                if cue.adjacent and c_end != start:
                    continue
                if not doc.is_boundary(c_start):
                    continue
                after = doc.norm[c_end : min(scope_e, c_end + 6)]
                if any(u.match(after) for u in unless_after):
                    continue
                before = doc.norm[max(scope_s, c_start - 10) : c_start]
                if any(u.search(before) for u in unless_before):
                    continue
                return m.group(0)
        return None

    def _requirement_met(self, doc: PreparedText, compiled: _Compiled, start: int, end: int) -> bool:
        """Whether the pattern's companion is a word of the match's clause/sentence: the same answer for
        every match of that segment, so it is worked out once per segment."""
        req = compiled.spec.require
        scope_s, scope_e = doc.scope_of(req.scope, start)
        key = ("require", id(compiled), scope_s, scope_e)
        if key not in doc.cache:
            matches = compiled.require.finditer(doc.norm, scope_s, scope_e)
            doc.cache[key] = any(m.end() > m.start() and doc.aligned(m.start(), m.end()) for m in matches)
        return doc.cache[key]

    def _check(self, doc: PreparedText, trigger: str, compiled: _Compiled, m: re.Match[str]) -> tuple[str | None, bool]:
        """Why the match does not fire (None: it fires), and whether a cue (not structure) dropped it."""
        spec = compiled.spec
        start, end = m.start(), m.end()
        a_start, a_end = (m.start("anchor"), m.end("anchor")) if "anchor" in m.re.groupindex and m.group("anchor") else (start, end)
        if doc.in_agent_turn(start):
            return "agent turn", False
        if not doc.aligned(a_start, a_end, (start, end)):
            return "not a whole word", False
        if spec.count_group:
            count = parse_count(m.group(spec.count_group), self.policy.thresholds.vague_count)
            if count is None or count + spec.count_offset < self.policy.thresholds.repeated_contact_min:
                return f"count {m.group(spec.count_group)!r} below {self.policy.thresholds.repeated_contact_min}", False
        if compiled.require is not None and not self._requirement_met(doc, compiled, start, end):
            return f"no {spec.require.scope} companion for {spec.id}", False
        for cue_name in [*self.policy.triggers[trigger].blocked_by, *spec.also_blocked_by]:
            hit = self._cue_hit(doc, cue_name, start, end)
            if hit is not None:
                return f"{cue_name}: {hit}", True
        return None, False

    # -- public API -------------------------------------------------------------------------------

    def _candidates(self, doc: PreparedText, trigger: str, compiled: _Compiled, first_only: bool) -> list[Candidate]:
        out: list[Candidate] = []
        for w_start, w_end in doc.windows or [(0, len(doc.norm))]:
            pos = w_start
            while (m := compiled.regex.search(doc.norm, pos, w_end)) is not None:
                if m.end() == m.start():
                    pos = m.start() + 1
                    continue
                reason, by_cue = self._check(doc, trigger, compiled, m)
                out.append(Candidate(trigger, compiled.spec.id, m.start(), m.end(), doc.original[m.start() : m.end()], reason, by_cue))
                if reason is None and first_only:
                    return out
                # a dropped match may hide an overlapping good one: retry one character later
                pos = m.end() if reason is None else m.start() + 1
        return out

    def explain(self, text: str, doc: PreparedText | None = None) -> list[Candidate]:
        """Every lexicon candidate in ``text`` with the reason it was dropped (None = fired)."""
        doc = doc or self.prepare(text)
        return [c for trig, pats in self.patterns.items() for p in pats for c in self._candidates(doc, trig, p, first_only=False)]

    def detect(self, text: str) -> dict[str, Candidate]:
        """The first (leftmost) firing candidate of each text trigger that fires (the lexicon alone)."""
        return {t: found.fired for t, found in self.detect_states(text).items() if found.fired is not None}

    def detect_states(self, text: str) -> dict[str, LexiconFinding]:
        """Per text trigger: the leftmost firing match and the leftmost cue-blocked one (either may be None).

        Each pattern stops at its first firing match, so a long text full of trigger words costs one
        pass per pattern, not one check per occurrence.
        """
        doc = self.prepare(text)
        found: dict[str, LexiconFinding] = {}
        for trigger, pats in self.patterns.items():
            fired: Candidate | None = None
            blocked: Candidate | None = None
            for p in pats:
                for cand in self._candidates(doc, trigger, p, first_only=True):
                    if cand.blocked is None and (fired is None or _earlier(cand, fired)):
                        fired = cand
                    elif cand.cue_blocked and (blocked is None or _earlier(cand, blocked)):
                        blocked = cand
            found[trigger] = LexiconFinding(fired, blocked)
        return found


def _earlier(a: Candidate, b: Candidate) -> bool:
    return (a.start, -a.end) < (b.start, -b.end)


@dataclass(frozen=True)
class LexiconFinding:
    """What the lexicon found for one trigger: a firing match, and a match only a cue dropped."""

    fired: Candidate | None
    blocked: Candidate | None

    @property
    def state(self) -> LexiconState:
        return "clean" if self.fired else "blocked" if self.blocked else "none"

    @property
    def evidence(self) -> Candidate | None:
        return self.fired or self.blocked


def context_triggers(
    result: TriageResult, context: EscalationContext, received_at: datetime, policy: EscalationPolicy, clock: TierClock
) -> dict[str, FieldEvidence]:
    """Triggers that come from the heads and the ticket context, with the field that fired them."""
    fired: dict[str, FieldEvidence] = {}
    th = policy.thresholds
    emotion = result.sentiment.emotion_index
    if emotion >= th.high_emotion:
        fired["high_emotion"] = FieldEvidence(field="sentiment.emotion_index", value=emotion, detail=f">= {th.high_emotion:g}")
    if result.severity.label == CRITICAL_SEVERITY:
        fired["severity_critical"] = FieldEvidence(field="severity.label", value=result.severity.label)
    if context.repeat_count is not None and context.repeat_count >= th.repeated_contact_min:
        fired["repeated_contact"] = FieldEvidence(
            field="context.repeat_count", value=context.repeat_count, detail=f"> {th.repeated_contact_min - 1}"
        )
    if context.customer_requested_escalation and policy.context.requested_escalation_fires_asks_superior:
        fired["asks_superior"] = FieldEvidence(field="context.customer_requested_escalation", value=True)
    if context.current_tier and context.tier_entered_at:
        usage = clock.usage(context.current_tier, context.tier_entered_at, received_at)
        if usage.fraction > th.sla_near_breach_fraction:
            fired["sla_near_breach"] = FieldEvidence(
                field="context.tier_entered_at",
                value=context.tier_entered_at.isoformat(),
                detail=f"{usage.used:.1f} of {usage.limit:g} {usage.unit} in {context.current_tier} used ({usage.fraction:.0%})",
            )
    return fired


def text_evidence(cand: Candidate) -> TextEvidence:
    return TextEvidence(start=cand.start, end=cand.end, text=cand.text)


def build_fired(name: str, weight: float, evidence: TextEvidence | FieldEvidence, model_score: float | None = None) -> FiredTrigger:
    if isinstance(evidence, TextEvidence):
        return FiredTrigger(name=name, weight=weight, source="text", evidence=evidence, model_score=model_score)
    source = "context" if evidence.field.startswith("context.") else "heads"
    return FiredTrigger(name=name, weight=weight, source=source, evidence=evidence, model_score=model_score)
