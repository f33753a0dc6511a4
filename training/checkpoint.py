"""Epoch checkpoints, so a long run that is cut off resumes instead of starting over.

On 2 CPU cores a full ``triage train`` on today's data takes ~20 minutes per epoch (2-2.5 hours in all) and a
``triage distill`` epoch about as long; a developer session, a CI job or a preempted machine can end in the middle.
After every finished epoch the run writes the state it needs to go on — weights, optimizer and scheduler state,
the early-stopping record (with the best weights so far) and the torch RNG (dropout) — to
``<output_dir>/checkpoint/``; ``--resume`` picks it up and the continued run ends with the same weights as an
uninterrupted one. The finished model directory replaces the folder, checkpoint included.

A run of one long epoch (a distillation epoch over 60,000 texts takes 30–65 CPU-minutes) would lose all of it,
so ``triage distill`` also saves every ``checkpoint_every`` batches: the same state plus how many batches of the
epoch in progress are done. The batch order of an epoch is a pure function of its seed, so a resumed run skips
exactly those batches and goes on with the next.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from pydantic import BaseModel
from tqdm.auto import tqdm


class EarlyStopping(Protocol):
    """What a checkpoint needs of ``training.train.EarlyStopping`` (named here so this module imports nothing
    from the training loop that uses it)."""

    best_epoch: int
    best_state: dict | None

    def record(self) -> dict: ...

    def restore_record(self, record: dict, best_state: dict) -> None: ...


CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.pt"
# Knobs that do not change what is learned: a run may resume with other values.
_NOT_FINGERPRINTED = {"resume", "num_threads", "eval_batch_size", "checkpoint_every"}


@dataclass(frozen=True)
class Position:
    """Where a run starts: the epoch, and how many of its batches a mid-epoch checkpoint already trained."""

    epoch: int
    skip: int = 0


def run_fingerprint(cfg: BaseModel, data_hash: str) -> str:
    """What must match for a checkpoint to belong to this run: the training config and the data."""
    knobs = {k: v for k, v in json.loads(cfg.model_dump_json()).items() if k not in _NOT_FINGERPRINTED}
    return hashlib.sha256(json.dumps({"config": knobs, "data": data_hash}, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class EpochCheckpoint:
    """The checkpoint folder of one run (``<output_dir>/checkpoint``), tied to its config and data."""

    directory: Path
    fingerprint: str

    @classmethod
    def for_run(cls, cfg: BaseModel, data_hash: str) -> EpochCheckpoint:
        return cls(Path(cfg.output_dir) / CHECKPOINT_DIR, run_fingerprint(cfg, data_hash))

    @property
    def file(self) -> Path:
        return self.directory / STATE_FILE

    def save(
        self,
        epoch: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        stopper: EarlyStopping,
        step: int = 0,
    ) -> None:
        """Write the state after ``epoch`` (``step`` = 0), or after ``step`` batches of epoch ``epoch + 1``;
        written to a temporary file and renamed, so a run killed while saving keeps the previous checkpoint
        instead of a truncated one."""
        self.directory.mkdir(parents=True, exist_ok=True)
        current_is_best = step == 0 and stopper.best_epoch == epoch
        state = {
            "fingerprint": self.fingerprint,
            "epoch": epoch,
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "stopper": stopper.record(),
            # the best weights are the current ones when this epoch was the best: not stored twice
            "best_state": None if current_is_best else stopper.best_state,
            "current_is_best": current_is_best,
            "torch_rng": torch.get_rng_state(),
        }
        partial = self.file.with_suffix(".partial")
        torch.save(state, partial)
        os.replace(partial, self.file)

    def resume(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        stopper: EarlyStopping,
    ) -> Position:
        """Restore the saved state into freshly built objects; returns where the run goes on (epoch 1: none saved)."""
        if not self.file.exists():
            return Position(1)
        try:
            state = torch.load(self.file, map_location="cpu", weights_only=False)
        except Exception as exc:  # a truncated or foreign file: say which, do not guess
            raise ValueError(f"{self.file}: unreadable checkpoint ({exc}); delete it to start the run over") from exc
        if state.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"{self.file} was written by a run with a different config or data; resume with the same config and "
                "data, or delete the checkpoint folder to start over"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        best = state["best_state"]
        if best is None and state.get("current_is_best", state.get("step", 0) == 0):  # files from before mid-epoch saves
            best = {k: v.clone() for k, v in state["model"].items()}
        stopper.restore_record(state["stopper"], best)
        torch.set_rng_state(state["torch_rng"])
        return Position(int(state["epoch"]) + 1, int(state.get("step", 0)))

    def first_epoch(
        self,
        resume: bool,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        stopper: EarlyStopping,
    ) -> Position:
        """Where a run starts: epoch 1, or with ``resume`` where the last checkpoint left off."""
        position = self.resume(model, optimizer, scheduler, stopper) if resume else Position(1)
        if position.skip:
            tqdm.write(f"resumed from {self.file}: epoch {position.epoch}, after its first {position.skip} batches")
        elif position.epoch > 1:
            tqdm.write(f"resumed from {self.file} after epoch {position.epoch - 1} of the run")
        return position
