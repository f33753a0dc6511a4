"""training.weight_average: a model soup is the weighted mean of its inputs, and refuses what is not one network."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from training.weight_average import WEIGHTS_FILE, average_model_dirs
from triage_model.model_dir import DEFAULT_MODEL_DIR as BUNDLED
from triage_model.model_dir import META_FILE, TOKENIZER_FILE, ModelLoadError, read_meta


def _model_dir(root: Path, name: str, tensors: dict[str, torch.Tensor]) -> Path:
    """A torch model directory with real metadata and a tokenizer, and the given weights."""
    model_dir = root / name
    model_dir.mkdir()
    for file in (META_FILE, TOKENIZER_FILE):
        shutil.copy(BUNDLED / file, model_dir / file)
    save_file(tensors, str(model_dir / WEIGHTS_FILE))
    return model_dir


def test_the_average_is_the_weighted_mean_and_records_its_inputs(tmp_path: Path) -> None:
    a = _model_dir(tmp_path, "a", {"w": torch.tensor([1.0, 2.0, 3.0]), "ids": torch.tensor([1, 2])})
    b = _model_dir(tmp_path, "b", {"w": torch.tensor([3.0, 6.0, -3.0]), "ids": torch.tensor([7, 8])})

    equal = load_file(str(average_model_dirs([a, b], tmp_path / "soup") / WEIGHTS_FILE))
    assert torch.equal(equal["w"], torch.tensor([2.0, 4.0, 0.0]))
    assert torch.equal(equal["ids"], torch.tensor([1, 2]))  # integer buffers are not averaged

    weighted = load_file(str(average_model_dirs([a, b], tmp_path / "weighted", [3.0, 1.0]) / WEIGHTS_FILE))
    assert torch.allclose(weighted["w"], torch.tensor([1.5, 3.0, 1.5]))

    meta = read_meta(tmp_path / "weighted")
    assert meta.model_version != read_meta(a).model_version  # a new model gets a new version
    assert [(s["model_dir"], s["weight"]) for s in meta.train_config["averaged_from"]] == [(str(a), 0.75), (str(b), 0.25)]
    assert (tmp_path / "weighted" / TOKENIZER_FILE).exists()


def test_different_networks_and_bad_arguments_are_refused(tmp_path: Path) -> None:
    a = _model_dir(tmp_path, "a", {"w": torch.zeros(3)})
    wider = _model_dir(tmp_path, "wider", {"w": torch.zeros(4)})
    other = _model_dir(tmp_path, "other", {"v": torch.zeros(3)})
    for bad in (wider, other):
        with pytest.raises(ValueError, match="not the same network"):
            average_model_dirs([a, bad], tmp_path / "out")
    with pytest.raises(ValueError, match="at least two"):
        average_model_dirs([a], tmp_path / "out")
    with pytest.raises(ValueError, match="weight"):
        average_model_dirs([a, a], tmp_path / "out", [1.0])
    with pytest.raises(ValueError, match="one of the inputs"):
        average_model_dirs([a, wider], a)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=WEIGHTS_FILE):
        average_model_dirs([a, tmp_path / "empty"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert torch.equal(load_file(str(a / WEIGHTS_FILE))["w"], torch.zeros(3))  # inputs untouched


def test_the_average_s_card_reproduces_it_with_triage_average_not_its_first_input_s_recipe(tmp_path: Path) -> None:
    from training.model_card import _reproduce_commands

    a = _model_dir(tmp_path, "a", {"w": torch.zeros(3)})
    b = _model_dir(tmp_path, "b", {"w": torch.ones(3)})
    soup = average_model_dirs([a, b], tmp_path / "soup", [3.0, 1.0])
    commands = _reproduce_commands(read_meta(soup))
    assert f"triage average {a} {b} --weight 0.75 --weight 0.25 --out {soup}" in commands
    assert f"triage calibrate --model {soup}" in commands and f"triage export --model {soup} --out {soup}-onnx" in commands
    assert "triage train" not in commands and "triage distill" not in commands
