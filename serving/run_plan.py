"""How a served model uses the cores: onnxruntime runs in flight at once, and intra-op threads per run.

Why per model: measured on 2 cores (README, "Two onnxruntime runs side by side"), two single-threaded runs
side by side serve the 4-layer student 18–27 % more complaints/s under 32 clients than one run on both
cores (its operators are too small to split in two), while the 12-layer teacher's lone request loses
(p50 19 → 27 ms) because it no longer gets both cores. ``TRIAGE_BATCH_CONCURRENT_RUNS=auto`` therefore
decides at every model load (start-up, hot reload, SIGHUP), from the model itself, instead of once per process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from triage_model.model_dir import ModelMeta

BASE_ENCODER_LAYERS = 12
"""multilingual-e5-small's depth: every model here starts from it; a distilled student records its own."""

SHALLOW_LAYERS = 6
"""Models of at most this many encoder layers get two runs under ``auto`` (measured on the 4-layer student)."""

AUTO: Literal["auto"] = "auto"


@dataclass(frozen=True)
class RunPlan:
    runs: int
    """onnxruntime runs the dynamic batcher keeps in flight at once."""
    threads: int | None
    """intra-op threads of the model's session (None: onnxruntime's default, every core)."""


def encoder_layers(meta: ModelMeta) -> int:
    """The served encoder's depth, from its training config (``student_layers`` for a distilled student)."""
    return int(meta.train_config.get("student_layers") or BASE_ENCODER_LAYERS)


def plan_runs(meta: ModelMeta, concurrent_runs: int | Literal["auto"], threads: int | None, cores: int, batching: bool = True) -> RunPlan:
    """Runs and threads for this model. An explicit ``threads`` always wins; otherwise the runs share the
    cores (``cores // runs`` each) when there is more than one, so they do not each claim every core."""
    if not batching:
        return RunPlan(1, threads)
    shallow = cores >= 2 and encoder_layers(meta) <= SHALLOW_LAYERS
    runs = (2 if shallow else 1) if concurrent_runs == AUTO else int(concurrent_runs)
    if threads is None and runs > 1:
        threads = max(1, cores // runs)
    return RunPlan(runs, threads)
