"""Text → token ids, shared by training and serving so both see exactly the same input ids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer

E5_PREFIX = "query: "
"""multilingual-e5 was trained with a ``query: `` / ``passage: `` prefix; classification uses ``query: ``."""


def load_tokenizer(path: Path) -> Tokenizer:
    tok = Tokenizer.from_file(str(path))
    tok.no_truncation()
    tok.no_padding()
    return tok


def encode_texts(tokenizer: Tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Encode already-normalised texts; an over-long text keeps its head and its tail.

    Complaints state the problem first and the demand (refund, 12315, manager) last, so cutting only
    the tail would drop exactly the escalation cues.
    """
    return encode_texts_with_cuts(tokenizer, texts, max_length)[0]


def encode_texts_with_cuts(tokenizer: Tokenizer, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], list[bool]]:
    """``encode_texts`` plus, per text, whether tokens were cut: the model then read only the first
    ``max_length // 2`` and the last ``max_length - max_length // 2`` tokens (the middle was skipped)."""
    encodings = tokenizer.encode_batch([E5_PREFIX + t for t in texts], add_special_tokens=True)
    out: list[list[int]] = []
    cut: list[bool] = []
    for enc in encodings:
        ids = enc.ids
        cut.append(len(ids) > max_length)
        if len(ids) > max_length:
            head = max_length // 2
            tail = max_length - head
            ids = ids[:head] + ids[-tail:]
        out.append(ids)
    return out, cut


def pad_batch(batch: Sequence[Sequence[int]], pad_id: int) -> tuple[list[list[int]], list[list[int]]]:
    """Right-pad to the longest row; returns (input_ids, attention_mask)."""
    width = max((len(ids) for ids in batch), default=1)
    input_ids = [list(ids) + [pad_id] * (width - len(ids)) for ids in batch]
    mask = [[1] * len(ids) + [0] * (width - len(ids)) for ids in batch]
    return input_ids, mask
