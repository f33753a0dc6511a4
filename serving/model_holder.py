"""Holds the served predictor and swaps it atomically on reload.

Why a holder: a request takes one reference to the predictor at its start and finishes on it, so a
reload never changes the model under a running request; the old model is freed when the last
request using it returns. A candidate is validated on a canary batch before it is swapped in.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

from triage_model.model_dir import ModelLoadError
from triage_model.predictor import TriagePredictor
from triage_model.schema import HEADS

CANARY_TEXTS = [
    "快递一周了还没送到，电话也打不通",
    "银行卡被盗刷了五千块，不是我本人操作！",
    "请问怎么修改收货地址？",
    "東西很好用，謝謝客服的耐心解答 👍",
    "x" * 5000,
]


def validate_canary(predictor: TriagePredictor) -> None:
    """The candidate must answer a canary batch with well-formed, finite, schema-shaped predictions."""
    try:
        results = predictor.predict(CANARY_TEXTS)
    except Exception as err:  # any failure here means the candidate must not serve
        raise ModelLoadError(f"canary batch failed: {err}") from err
    if len(results) != len(CANARY_TEXTS):
        raise ModelLoadError("canary batch returned the wrong number of results")
    for res in results:
        for head in HEADS:
            score = getattr(res, head).score
            if not 0.0 <= score <= 1.0:
                raise ModelLoadError(f"canary: {head} score {score} is not a probability")


class ModelHolder:
    def __init__(self, intra_op_threads: int | None = None) -> None:
        self._predictor: TriagePredictor | None = None
        self._lock = threading.Lock()
        self.intra_op_threads = intra_op_threads
        self.loaded_at: datetime | None = None

    @property
    def predictor(self) -> TriagePredictor | None:
        return self._predictor

    def load(self, model_dir: Path | None) -> TriagePredictor:
        """Load, canary-check and swap in; on any failure the current model keeps serving."""
        with self._lock:
            candidate = TriagePredictor.from_pretrained(model_dir, intra_op_threads=self.intra_op_threads)
            validate_canary(candidate)
            self._predictor = candidate
            self.loaded_at = datetime.now(UTC)
            return candidate
