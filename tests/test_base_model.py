"""The base encoder cache: built once, and safe when several processes build it at the same time (two training
jobs on a fresh machine, or a test run beside CI, share ``~/.cache``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")


@pytest.fixture
def slow_fake_conversion(monkeypatch):
    """The real conversion takes a minute and 470 MB; these fakes take 0.2 s each, long enough to overlap."""
    from training import base_model

    calls: list[str] = []

    def fake_convert(out_dir: Path) -> Path:
        calls.append("convert")
        time.sleep(0.2)
        (out_dir / "model.safetensors").write_bytes(b"full")
        return out_dir

    def fake_trim(src: Path, out_dir: Path) -> Path:
        assert (src / "model.safetensors").read_bytes() == b"full", "each builder reads its own intermediate"
        time.sleep(0.2)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "model.safetensors").write_bytes(b"trimmed")
        (out_dir / "tokenizer.json").write_text("{}", encoding="utf-8")
        return out_dir

    monkeypatch.setattr(base_model, "convert", fake_convert)
    monkeypatch.setattr(base_model, "trim_checkpoint", fake_trim)
    return calls


def test_builders_racing_for_the_same_cache_both_get_a_whole_encoder(tmp_path, slow_fake_conversion):
    from training.base_model import ensure_base_encoder

    target = tmp_path / "cache" / "e5-small-zh"
    results: list[Path] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            results.append(ensure_base_encoder(target))
        except BaseException as err:  # reported below: a thread would swallow it
            errors.append(err)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert results == [target] * 3
    assert (target / "model.safetensors").read_bytes() == b"trimmed" and (target / "tokenizer.json").exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["e5-small-zh"], "no temporary directory is left behind"
    built = len(slow_fake_conversion)
    assert ensure_base_encoder(target) == target and len(slow_fake_conversion) == built, "a ready cache is not rebuilt"


def test_a_broken_leftover_cache_is_rebuilt(tmp_path, slow_fake_conversion):
    from training.base_model import ensure_base_encoder

    target = tmp_path / "e5-small-zh"
    target.mkdir()
    (target / "tokenizer.json").write_text("{}", encoding="utf-8")  # killed before the weights were written
    assert ensure_base_encoder(target) == target
    assert (target / "model.safetensors").read_bytes() == b"trimmed"
