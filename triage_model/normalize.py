"""Text normalisation shared by training and serving.

Why one function: the model only sees text after this step, so training and serving must apply the
identical transformation or the served model sees a distribution it was never trained on.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_WHITESPACE = re.compile(r"\s+")
_SURROGATES = re.compile(r"[\ud800-\udfff]")


@lru_cache(maxsize=1)
def _t2s():
    import opencc

    return opencc.OpenCC("t2s")


def _drop_control(text: str) -> str:
    # Cc (control), Cf (format: zero-width, BOM, bidi marks), Co (private use), Cs (lone surrogates)
    return "".join(ch if unicodedata.category(ch)[0] != "C" or ch in "\n\t " else " " for ch in text)


def normalize_text(text: str) -> str:
    """NFKC (full-width → half-width), strip control chars, 繁体 → 简体, collapse whitespace.

    Never raises on odd input: lone surrogates and control characters are replaced by spaces.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    text = _SURROGATES.sub(" ", text)
    text = unicodedata.normalize("NFKC", text)
    text = _drop_control(text)
    text = _t2s().convert(text)
    return _WHITESPACE.sub(" ", text).strip()


def truncate_head_tail(text: str, max_chars: int) -> tuple[str, bool]:
    """Keep the start and the end of an over-long text (complaints state the problem first and the
    demand last), returning the text and whether it was cut."""
    if len(text) <= max_chars:
        return text, False
    head = max_chars * 2 // 3
    tail = max_chars - head
    return text[:head] + text[-tail:], True
