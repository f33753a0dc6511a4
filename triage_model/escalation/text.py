"""Text plumbing for trigger detection: offset-preserving normalisation, clauses, sentences, jieba tokens.

Why offset-preserving: evidence spans must point into the text the caller sent (an agent's UI
highlights them), so the matcher works on a copy where every character maps to exactly one original
character (full-width → half-width, 繁 → 简, lower case), never on ``normalize_text``'s output, which
collapses whitespace and may change length.

Why jieba: a lexicon hit only counts when it is a word of the sentence, not a substring of a longer
word: "报警" in "烟雾报警器", "经理" in "客户经理", "12315" inside an order number. jieba (with the
domain user dictionary) is loaded once, lazily, behind a lock, and only for sentences that hold a
candidate match, so calm texts never pay for it.
"""

from __future__ import annotations

import bisect
import logging
import re
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from triage_model.escalation.policy import USER_DICT_PATH
from triage_model.normalize import _t2s

_TOKENIZERS: dict[Path, object] = {}
_TOKENIZER_LOCK = threading.Lock()


def get_tokenizer(user_dict: Path = USER_DICT_PATH):
    """A private ``jieba.Tokenizer`` with the domain dictionary: built once per process, thread-safe.

    A private instance (not ``jieba.dt``) so the user dictionary never leaks into other code's jieba.
    """
    user_dict = Path(user_dict)
    tok = _TOKENIZERS.get(user_dict)
    if tok is not None:
        return tok
    with _TOKENIZER_LOCK:
        tok = _TOKENIZERS.get(user_dict)
        if tok is None:
            import jieba

            jieba.setLogLevel(logging.WARNING)
            tok = jieba.Tokenizer()
            tok.initialize()
            if user_dict.exists():
                tok.load_userdict(str(user_dict))
            _TOKENIZERS[user_dict] = tok
    return tok


def _fold_char(ch: str) -> str:
    folded = unicodedata.normalize("NFKC", ch)
    return folded.lower() if len(folded) == 1 else ch


_SURROGATE = re.compile("[\ud800-\udfff]")


def normalize_aligned(text: str) -> str:
    """Same length as ``text``; position i of the result stands for position i of the input.

    A lone UTF-16 surrogate (JSON allows ``"\\ud800"``; it is not a character) becomes U+FFFD first:
    OpenCC needs encodable text, and a surrogate made it raise after inference had been paid for."""
    text = _SURROGATE.sub("\ufffd", text)
    folded = "".join(_fold_char(ch) for ch in text)
    converted = _t2s().convert(folded)
    if len(converted) == len(folded):
        return converted
    # a phrase conversion changed the length: convert character by character instead
    out = []
    for ch in folded:
        c = _t2s().convert(ch)
        out.append(c if len(c) == 1 else ch)
    return "".join(out)


def _segments(text: str, delimiters: re.Pattern[str]) -> list[tuple[int, int]]:
    """Half-open spans between delimiters (a delimiter belongs to the segment it ends)."""
    spans, start = [], 0
    for m in delimiters.finditer(text):
        if m.end() > start:
            spans.append((start, m.end()))
        start = m.end()
    if start < len(text) or not spans:
        spans.append((start, len(text)))
    return spans


@dataclass
class PreparedText:
    """One text ready for matching: the aligned copy, its clauses and sentences, agent turns, tokens."""

    original: str
    norm: str
    clauses: list[tuple[int, int]]
    sentences: list[tuple[int, int]]
    agent_spans: list[tuple[int, int]]
    user_dict: Path = USER_DICT_PATH
    windows: list[tuple[int, int]] = field(default_factory=list)
    """The [start, end) spans that were read (the whole text, or its head and tail): lexicon patterns
    search only these, never the blanked middle of an over-long text."""
    _tokens: dict[tuple[int, int], list[tuple[int, int]]] = field(default_factory=dict, repr=False)
    _token_starts: dict[tuple[int, int], list[int]] = field(default_factory=dict, repr=False)
    cache: dict[tuple, object] = field(default_factory=dict, repr=False)
    """Per-text memo of the detector: cue matches per (cue set, scope segment), companion checks per
    (pattern, segment). Each segment is scanned once per pattern, so the whole scan stays linear in the
    text length however many candidates a segment holds (see ``TextTriggerDetector._cue_hit``)."""

    def __post_init__(self) -> None:
        # bisect keys, built once: lookups stay O(log n) on 100k-character texts
        self._clause_starts = [s for s, _ in self.clauses]
        self._sentence_starts = [s for s, _ in self.sentences]
        self._agent_starts = [s for s, _ in self.agent_spans]

    @classmethod
    def build(
        cls,
        text: str,
        compiled: dict[str, re.Pattern[str]],
        user_dict: Path = USER_DICT_PATH,
        max_chars: int | None = None,
    ) -> PreparedText:
        """Over ``max_chars``, only the head (2/3) and tail (1/3) are read, like the model's cut; the
        middle is blanked so offsets still index the original text. The blank starts and ends with a
        line break: head and tail are never one sentence, and jieba never reads the blank."""
        windows = [(0, len(text))]
        if max_chars and len(text) > max_chars:
            head = max_chars * 2 // 3
            tail = max_chars - head
            gap = len(text) - head - tail
            norm = normalize_aligned(text[:head]) + "\n" + " " * (gap - 2) + "\n" + normalize_aligned(text[-tail:])
            windows = [(0, head + 1), (len(text) - tail - 1, len(text))]
        else:
            norm = normalize_aligned(text)
        return cls(
            original=text,
            windows=windows,
            norm=norm,
            clauses=_segments(norm, compiled["clause"]),
            sentences=_segments(norm, compiled["sentence"]),
            agent_spans=_agent_spans(norm, compiled["agent_turn"], compiled["customer_turn"]),
            user_dict=user_dict,
        )

    @staticmethod
    def _containing(spans: list[tuple[int, int]], starts: list[int], pos: int) -> tuple[int, int]:
        i = bisect.bisect_right(starts, pos) - 1
        return spans[max(i, 0)]

    def clause_of(self, pos: int) -> tuple[int, int]:
        return self._containing(self.clauses, self._clause_starts, pos)

    def sentence_of(self, pos: int) -> tuple[int, int]:
        return self._containing(self.sentences, self._sentence_starts, pos)

    def scope_of(self, scope: str, pos: int) -> tuple[int, int]:
        """clause, sentence, or sentence_and_next ("打12315？那倒不至于": the dismissal is the reply)."""
        if scope == "clause":
            return self.clause_of(pos)
        start, end = self.sentence_of(pos)
        if scope == "sentence_and_next" and end < len(self.norm):
            end = self.sentence_of(end)[1]
        return start, end

    def in_agent_turn(self, pos: int) -> bool:
        """Agent spans are sorted and disjoint: one bisect, not a walk over every turn of a transcript."""
        i = bisect.bisect_right(self._agent_starts, pos) - 1
        return i >= 0 and self.agent_spans[i][0] <= pos < self.agent_spans[i][1]

    def tokens_around(self, pos: int) -> list[tuple[int, int]]:
        """jieba token spans (absolute offsets) of the sentence holding ``pos``; cached per sentence."""
        sent = self.sentence_of(pos)
        if sent not in self._tokens:
            s, e = sent
            tok = get_tokenizer(self.user_dict)
            self._tokens[sent] = [(s + a, s + b) for _, a, b in tok.tokenize(self.norm[s:e], HMM=False)]
            self._token_starts[sent] = [a for a, _ in self._tokens[sent]]
        return self._tokens[sent]

    def _token_at(self, pos: int) -> tuple[int, int] | None:
        tokens = self.tokens_around(pos)
        i = bisect.bisect_right(self._token_starts[self.sentence_of(pos)], pos) - 1
        if 0 <= i < len(tokens) and tokens[i][0] <= pos < tokens[i][1]:
            return tokens[i]
        return None

    def is_boundary(self, pos: int) -> bool:
        """True at the start/end of the text and between two jieba tokens."""
        if pos <= 0 or pos >= len(self.norm):
            return True
        tok = self._token_at(pos)
        return tok is None or tok[0] == pos

    def aligned(self, start: int, end: int, outer: tuple[int, int] | None = None) -> bool:
        """Does [start, end) sit on word boundaries? A word that straddles an edge is tolerated only if
        it stays inside ``outer`` (the whole regex match): "找领导" is one jieba word, and the anchor
        "领导" of the match "找领导" is still a real word of the sentence."""
        outer_s, outer_e = outer or (start, end)
        if not self.is_boundary(start):
            tok = self._token_at(start)
            if tok is None or tok[0] < outer_s:
                return False
        if not self.is_boundary(end):
            tok = self._token_at(end - 1)
            if tok is None or tok[1] > outer_e:
                return False
        return True


def _agent_spans(norm: str, agent: re.Pattern[str], customer: re.Pattern[str]) -> list[tuple[int, int]]:
    """Spans spoken by the agent in a "客服：… 客户：…" transcript (GUIDELINE §1.3: only the customer's
    words carry triggers)."""
    marks = sorted(
        [(m.start(), m.end(), "agent") for m in agent.finditer(norm)] + [(m.start(), m.end(), "customer") for m in customer.finditer(norm)]
    )
    spans = []
    for i, (_, end, who) in enumerate(marks):
        if who == "agent":
            nxt = marks[i + 1][0] if i + 1 < len(marks) else len(norm)
            spans.append((end, nxt))
    return spans
