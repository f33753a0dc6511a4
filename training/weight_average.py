"""Average the weights of torch model directories of the same network (a "model soup").

Why: a student distilled in a chain (v15 → v16) ends each link a little off the previous one, and the two
disagree on different rows. Averaging their weights — same architecture, same starting point — keeps one
model's cost while landing between the two minima, which usually generalises at least as well as either:
student v16 averaged with v15 scored 0.854 / 0.844 / 0.872 on dev (int8 + blend), against v16's
0.854 / 0.837 / 0.871 alone. It is not an ensemble: the averaged model runs once per complaint.

The result is a normal torch model directory (the first input's config, tokenizer and metadata, under a new
``model_version``), so ``triage calibrate`` refits its temperatures and thresholds on dev and ``triage export``
takes it as is.
``triage_config.json`` records the inputs and weights under ``train_config.averaged_from`` (and the output folder
under ``averaged_into``), so the model card's Reproduce block shows the ``triage average`` command.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from training.modeling import WEIGHTS_FILE
from triage_model.model_dir import ModelLoadError, new_model_version, read_meta, write_meta


def average_model_dirs(model_dirs: list[Path], out_dir: Path, weights: list[float] | None = None) -> Path:
    """Write ``out_dir``: the weighted mean of every floating-point tensor of ``model_dirs`` (equal weights by
    default); integer buffers are taken from the first. Refuses directories whose tensors differ in name or shape
    (not the same network), and an ``out_dir`` that is one of the inputs."""
    from safetensors.torch import load_file, save_file

    if len(model_dirs) < 2:
        raise ValueError("averaging needs at least two model directories")
    weights = weights or [1.0] * len(model_dirs)
    if len(weights) != len(model_dirs) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"need one non-negative weight per model directory, not all zero: {weights}")
    if any(Path(out_dir).resolve() == Path(d).resolve() for d in model_dirs):
        raise ValueError(f"{out_dir} is one of the inputs: write the average somewhere else")
    tensors, versions = [], []
    for model_dir in model_dirs:  # every input is read and checked before anything is written
        path = Path(model_dir) / WEIGHTS_FILE
        if not path.exists():
            raise ModelLoadError(f"{model_dir}: no {WEIGHTS_FILE} (a torch model directory is needed; `triage recover-torch` rebuilds one)")
        versions.append(read_meta(Path(model_dir)).model_version)
        tensors.append(load_file(str(path)))
    first = tensors[0]
    for model_dir, other in zip(model_dirs[1:], tensors[1:], strict=True):
        mismatched = sorted(k for k in first.keys() | other.keys() if k not in first or k not in other or first[k].shape != other[k].shape)
        if mismatched:
            raise ValueError(
                f"{model_dir} is not the same network as {model_dirs[0]}: {len(mismatched)} tensors differ, e.g. {mismatched[:3]}"
            )
    total = float(sum(weights))
    averaged = {}
    for name, tensor in first.items():
        if tensor.is_floating_point():
            mean = sum(w / total * t[name].double() for w, t in zip(weights, tensors, strict=True))
            averaged[name] = mean.to(tensor.dtype).contiguous()
        else:
            averaged[name] = tensor
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(model_dirs[0], out_dir, ignore=shutil.ignore_patterns(WEIGHTS_FILE, "checkpoint*", "*.onnx"))
    save_file(averaged, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    meta = read_meta(out_dir)
    now = datetime.now(UTC)
    meta.model_version = new_model_version(meta.model_name, meta.data_hash, now)  # a new model, so a new version
    meta.created_at = now.isoformat(timespec="seconds")
    sources = [
        {"model_dir": str(d), "model_version": version, "weight": w / total}
        for d, version, w in zip(model_dirs, versions, weights, strict=True)
    ]
    # train_config stays the first input's recipe; the average's own provenance sits beside it (its card reads both)
    meta.train_config = {**meta.train_config, "averaged_from": sources, "averaged_into": str(out_dir)}
    write_meta(out_dir, meta)
    return out_dir
