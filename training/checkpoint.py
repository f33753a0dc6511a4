"""Epoch checkpoints, so a long run that is cut off resumes instead of starting over.

On 2 CPU cores a full ``triage train`` on today's data takes ~20 minutes per epoch (2-2.5 hours in all) and a
``triage distill`` epoch about as long; a developer session, a CI job or a preempted machine can end in the middle.
After every finished epoch the run writes the state it needs to go on — weights, optimizer and scheduler state,
the early-stopping record (with the best weights so far) and the torch RNG (dropout) — to
``<output_dir>/checkpoint/``; ``--resume`` picks it up and the continued run ends with the same weights as an
uninterrupted one. The finished model directory replaces the folder, checkpoint included.
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
_NOT_FINGERPRINTED = {"resume", "num_threads", "eval_batch_size"}


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
    ) -> None:
        """Write the state after ``epoch``; written to a temporary file and renamed, so a run killed while
        saving keeps the previous epoch's checkpoint instead of a truncated one."""
        self.directory.mkdir(parents=True, exist_ok=True)
        state = {
            "fingerprint": self.fingerprint,
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "stopper": stopper.record(),
            # the best weights are the current ones when this epoch was the best: not stored twice
            "best_state": None if stopper.best_epoch == epoch else stopper.best_state,
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
    ) -> int:
        """Restore the saved state into freshly built objects; returns the last finished epoch (0: none saved)."""
        if not self.file.exists():
            return 0
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
        best = state["best_state"] if state["best_state"] is not None else {k: v.clone() for k, v in state["model"].items()}
        stopper.restore_record(state["stopper"], best)
        torch.set_rng_state(state["torch_rng"])
        return int(state["epoch"])

    def first_epoch(
        self,
        resume: bool,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        stopper: EarlyStopping,
    ) -> int:
        """The epoch a run starts at: 1, or with ``resume`` the one after the last saved epoch."""
        done = self.resume(model, optimizer, scheduler, stopper) if resume else 0
        if done:
            tqdm.write(f"resumed from {self.file} after epoch {done} of the run")
        return done + 1
