"""Quantization-aware training: the encoder computes through the same int8 rounding its static ONNX graph will do.

Why: ``triage export --quantize static`` (``training/export.py``) writes ``QLinearMatMul`` for every encoder
``MatMul``: the input rounded per tensor to u8, the weight per output channel to 7 bits (``reduce_range``), the
product rounded to u8 again before the fp32 bias ``Add``. The two activation × activation products of attention
(query × key, softmax × value) are rounded the same way, and the embedding table is stored as u8. On the 4-layer
student that rounding cost about half a point of category macro-F1 against torch, about the margin by which
the students missed the selection rule. Training through it (fake quantization, with the straight-through
estimator for the gradient) lets the weights settle where the rounding hurts least.

The simulation follows onnxruntime's arithmetic, not torch.ao's defaults: symmetric per-channel weights with
``max|w| / 64`` as the scale, u8 activations whose range always includes 0, and ranges fixed as export's
``MinMax`` calibration fixes them (the fp32 network run over the same 128 train texts, one by one). On student
v18b it brought torch within 0.07 of the int8 graph's logits (mean |Δ| on 600 dev rows; fp32 torch: 0.26) and
to 99 % argmax agreement (fp32 torch: 97 %).

Nothing is registered on the model: the patch keeps its own state, leaves the ``state_dict`` keys as they
were, and :func:`fake_quantized` undoes it on exit, so a model saved afterwards is an ordinary fp32 model
that ``triage export`` quantizes as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.models.xlm_roberta.modeling_xlm_roberta import XLMRobertaSelfAttention

WEIGHT_LEVELS = 64
"""onnxruntime's symmetric int8 weights with ``reduce_range`` use -64…64 (7 bits)."""
ATTENTION_NAME = "triage_int8_sim"
_STATE = "_triage_int8_ranges"


class ActivationRange:
    """One tensor's u8 quantization range, fixed as onnxruntime's ``CalibrationMethod.MinMax`` fixes it: the
    smallest and largest value over the calibration texts, run one by one (no padding) through the fp32 network.

    Why not a moving average over training batches: padded batches would put pad positions into the range, and
    the point is to train through exactly the rounding the exported graph will do.
    """

    def __init__(self, simulation: Simulation) -> None:
        self.simulation = simulation
        self.low: float | None = None
        self.high: float | None = None
        simulation.ranges.append(self)

    def fake_quantize(self, x: torch.Tensor) -> torch.Tensor:
        if self.simulation.calibrating:
            low, high = float(x.detach().min()), float(x.detach().max())
            self.low = low if self.low is None else min(self.low, low)
            self.high = high if self.high is None else max(self.high, high)
            return x
        if self.low is None or self.high is None:
            raise RuntimeError("fake quantization needs Simulation.calibrate() first")
        low, high = min(self.low, 0.0), max(self.high, 0.0)
        scale = max((high - low) / 255.0, 1e-8)
        zero_point = int(min(max(round(-low / scale), 0), 255))
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255)


class Simulation:
    """The ranges of one patched model, and the calibration pass that fixes them."""

    def __init__(self, model: nn.Module, calibration_ids: Sequence[Sequence[int]]) -> None:
        if not calibration_ids:
            raise ValueError("quantization-aware training needs calibration texts (the train split is empty)")
        self.model = model
        self.calibration_ids = [list(x) for x in calibration_ids]
        self.ranges: list[ActivationRange] = []
        self.calibrating = False

    def calibrate(self) -> None:
        """Refit every range on the calibration texts with the current weights (fp32 pass, as export does)."""
        was_training = self.model.training
        for r in self.ranges:
            r.low = r.high = None
        self.calibrating = True
        self.model.eval()
        try:
            with torch.no_grad():
                for ids in self.calibration_ids:
                    self.model(torch.tensor([ids]), torch.ones((1, len(ids)), dtype=torch.long))
        finally:
            self.calibrating = False
            self.model.train(was_training)


def fake_quantize_weight(weight: torch.Tensor) -> torch.Tensor:
    """Round an ``nn.Linear`` weight (out × in) per output channel as onnxruntime's static int8 does."""
    scale = (weight.detach().abs().amax(dim=1) / WEIGHT_LEVELS).clamp(min=1e-8).float()
    zero_point = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero_point, 0, -WEIGHT_LEVELS, WEIGHT_LEVELS)


def fake_quantize_table(weight: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Embedding rows as onnxruntime's int8 ``Gather`` stores them: u8 with one scale for the whole table."""
    low, high = min(float(weight.detach().min()), 0.0), max(float(weight.detach().max()), 0.0)
    scale = max((high - low) / 255.0, 1e-8)
    return torch.fake_quantize_per_tensor_affine(rows, scale, int(min(max(round(-low / scale), 0), 255)), 0, 255)


def _linear_forward(linear: nn.Linear, simulation: Simulation) -> Callable[[torch.Tensor], torch.Tensor]:
    """``QLinearMatMul``: u8 input × 7-bit weight → u8 output, then the fp32 bias ``Add``."""
    into, out = ActivationRange(simulation), ActivationRange(simulation)

    def forward(x: torch.Tensor) -> torch.Tensor:
        weight = linear.weight if simulation.calibrating else fake_quantize_weight(linear.weight)
        product = out.fake_quantize(nn.functional.linear(into.fake_quantize(x), weight))
        return product if linear.bias is None else product + linear.bias

    return forward


def _embedding_forward(embedding: nn.Embedding, simulation: Simulation) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(ids: torch.Tensor) -> torch.Tensor:
        rows = nn.functional.embedding(ids, embedding.weight, embedding.padding_idx)
        return rows if simulation.calibrating else fake_quantize_table(embedding.weight, rows)

    return forward


def _int8_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask, **kwargs):
    """Eager attention with both of its products' inputs rounded to u8, as the static graph computes them."""
    ranges: dict[str, ActivationRange] = module.__dict__[_STATE]
    query = ranges["query"].fake_quantize(query)
    key = ranges["key"].fake_quantize(key)
    value = ranges["value"].fake_quantize(value)
    scaling = kwargs.pop("scaling", None) or query.size(-1) ** -0.5
    scores = ranges["scores"].fake_quantize(torch.matmul(query, key.transpose(2, 3)) * scaling)
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = nn.functional.softmax(scores, dim=-1)
    probs = nn.functional.dropout(probs, p=kwargs.get("dropout", 0.0), training=module.training)
    probs = ranges["probs"].fake_quantize(probs)
    context = ranges["context"].fake_quantize(torch.matmul(probs, value))
    return context.transpose(1, 2).contiguous(), probs


AttentionInterface.register(ATTENTION_NAME, _int8_attention)
AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)  # additive float masks, as eager attention reads them


@contextmanager
def fake_quantized(model: nn.Module, calibration_ids: Sequence[Sequence[int]]) -> Iterator[Simulation]:
    """Within the block, ``model``'s encoder computes as its static int8 graph will (the heads stay fp32, as they
    do in the graph), with ranges calibrated on ``calibration_ids`` (token ids of single texts, unpadded) on entry;
    call ``calibrate()`` on the yielded simulation again after the weights have moved. On exit the model is an
    ordinary fp32 model again, with the weights as trained."""
    encoder = model.encoder if hasattr(model, "encoder") else model
    simulation = Simulation(model, calibration_ids)
    linears = [m for m in encoder.modules() if isinstance(m, nn.Linear)]
    embeddings = [m for m in encoder.modules() if isinstance(m, nn.Embedding)]
    attentions = [m for m in encoder.modules() if isinstance(m, XLMRobertaSelfAttention)]
    previous = encoder.config._attn_implementation
    for linear in linears:
        linear.forward = _linear_forward(linear, simulation)  # type: ignore[method-assign]
    for embedding in embeddings:
        embedding.forward = _embedding_forward(embedding, simulation)  # type: ignore[method-assign]
    for attention in attentions:
        attention.__dict__[_STATE] = {n: ActivationRange(simulation) for n in ("query", "key", "value", "scores", "probs", "context")}
    encoder.config._attn_implementation = ATTENTION_NAME
    try:
        simulation.calibrate()
        yield simulation
    finally:
        encoder.config._attn_implementation = previous
        for module in (*linears, *embeddings):
            del module.forward
        for attention in attentions:
            attention.__dict__.pop(_STATE, None)
