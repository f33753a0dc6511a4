"""投诉分诊 model package: schema, normalisation, ONNX predictor and escalation scorer.

from triage_model import TriagePredictor
predictor = TriagePredictor.from_pretrained()          # the shipped default model
[result] = predictor.predict(["快递一周没到，客服也不回"])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["TriagePredictor", "TriageResult", "normalize_text"]

if TYPE_CHECKING:
    from triage_model.normalize import normalize_text
    from triage_model.predictor import TriagePredictor
    from triage_model.results import TriageResult


def __getattr__(name: str):
    # Lazy: importing the schema from training code should not load onnxruntime.
    if name == "TriagePredictor":
        from triage_model.predictor import TriagePredictor

        return TriagePredictor
    if name == "TriageResult":
        from triage_model.results import TriageResult

        return TriageResult
    if name == "normalize_text":
        from triage_model.normalize import normalize_text

        return normalize_text
    raise AttributeError(name)
