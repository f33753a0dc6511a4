"""Recover a trainable torch model directory from an exported ONNX model (fp32 or static int8).

Why: students are distilled in chains — each one continues the last (student v3 → v3b → … → v9) — but a
run's torch weights live in ``runs/``, which a fresh checkout does not have, and the 60 MB limit keeps fp32
weights out of the repository. The bundled ONNX file is the one checkpoint that survives. Its weights are all
there: fp32 ``MatMul`` initializers, or static-int8 ``QLinearMatMul`` weights and int8 embedding tables, which
dequantise to within int8 rounding of what was exported (``w = (q - zero_point) * scale``, per output channel).
That is close enough to continue training from; the next epoch trains the rounding away.

Weight-only ``MatMulNBits`` files (the format of teachers before v10) are not read: export the teacher's fp32
``model.onnx`` instead, or keep its torch directory. Teacher v10, the default since session 16, is static int8
and comes back like a student (``triage recover-torch -m triage_model/default_model``), so the teacher chain can go
on from the bundled default as well.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from transformers import XLMRobertaConfig

from training.modeling import ENCODER_CONFIG_FILE, MultiTaskTriageModel
from triage_model.model_dir import ONNX_INT8_FILE, TOKENIZER_FILE, read_meta

_MATMUL_SUFFIXES = ("/MatMul_quant", "/MatMul")  # the heads' "/<head>/Gemm_MatMul" nodes are not encoder Linears


def _module_path(node_name: str) -> str | None:
    """``/encoder/encoder/layer.0/attention/self/query/MatMul_quant`` → ``encoder.encoder.layer.0.attention.self.query``."""
    for suffix in _MATMUL_SUFFIXES:
        if node_name.endswith(suffix):
            return node_name[: -len(suffix)].strip("/").replace("/", ".")
    return None


def _dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    """Per-tensor (scalar) or per-output-channel ([out] against an [in, out] weight): broadcasting covers both."""
    return (q.astype(np.float32) - zero_point.astype(np.float32)) * scale


def recover_state_dict(onnx_path: Path) -> dict[str, np.ndarray]:
    """Torch parameter name → fp32 array, read from the ONNX graph's initializers.

    Linear weights are found through the node that consumes them (its name carries the torch module path);
    biases, LayerNorm parameters and embedding tables keep their torch names in the exported graph.
    """
    model = onnx.load(str(onnx_path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    unsupported = {n.op_type for n in model.graph.node} & {"MatMulNBits", "MatMulInteger", "DynamicQuantizeLinear"}
    if unsupported:
        raise ValueError(f"{onnx_path}: {', '.join(sorted(unsupported))} weights are not recoverable here; use the fp32 model.onnx")
    state: dict[str, np.ndarray] = {}
    for name, value in inits.items():  # fp32 parameters that kept their torch names
        if name.startswith(("encoder.", "heads.", "trigger_head.")) and value.dtype == np.float32:
            if name.endswith("_Transposed"):  # head weights folded into MatMul as [in, out]
                state[name.removesuffix("_Transposed")] = value.T
            elif not name.endswith(("_scale", "_zero_point")):
                state[name] = value
    for name, value in inits.items():  # int8 embedding tables (per-tensor scale)
        base = name.removesuffix("_quantized")
        if base != name and base.startswith("encoder.") and f"{base}_scale" in inits:
            state[base] = _dequantize(value, inits[f"{base}_scale"], inits[f"{base}_zero_point"])
    for node in model.graph.node:  # Linear weights: [in, out] in the graph, [out, in] in torch
        module = _module_path(node.name)
        if module is None:
            continue
        if node.op_type == "QLinearMatMul" and node.input[3] in inits:
            weight = _dequantize(inits[node.input[3]], inits[node.input[4]], inits[node.input[5]])
        elif node.op_type == "MatMul" and node.input[1] in inits:
            weight = inits[node.input[1]]
        else:
            continue  # activation × activation (attention scores)
        state[f"{module}.weight"] = weight.T
    return state


def recover_model_dir(onnx_dir: Path, out_dir: Path, base_encoder_dir: Path, onnx_file: str | None = None) -> Path:
    """Write a torch model directory (``MultiTaskTriageModel.load`` reads it) from an exported model directory.

    The encoder config is the base encoder's with the depth and vocabulary found in the graph, so a 4-layer
    student comes back as 4 layers. Every parameter must be recovered: a missing one is an error, never a
    silently random weight. ``onnx_file``: which graph of the directory (default: the one it serves).
    """
    onnx_dir, out_dir = Path(onnx_dir), Path(out_dir)
    meta = read_meta(onnx_dir)
    state = recover_state_dict(onnx_dir / (onnx_file or meta.onnx_file or ONNX_INT8_FILE))
    layers = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("encoder.encoder.layer."))
    config = json.loads((Path(base_encoder_dir) / ENCODER_CONFIG_FILE).read_text(encoding="utf-8"))
    config.update(num_hidden_layers=layers, vocab_size=int(state["encoder.embeddings.word_embeddings.weight"].shape[0]))
    model = MultiTaskTriageModel(XLMRobertaConfig(**config))
    missing = [name for name, _ in model.named_parameters() if name not in state]
    if missing:
        raise ValueError(f"{onnx_dir}: {len(missing)} parameters not found in the graph, first: {missing[:3]}")
    expected = model.state_dict()
    model.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items() if k in expected}, strict=False)
    model.save(out_dir)
    shutil.copyfile(onnx_dir / TOKENIZER_FILE, out_dir / TOKENIZER_FILE)
    (out_dir / "recovered_from.json").write_text(
        json.dumps({"onnx_dir": str(onnx_dir), "model_version": meta.model_version, "layers": layers}, indent=2),
        encoding="utf-8",
    )
    return out_dir
