"""The card's "Reproduce" command must rebuild the model it describes, not the default recipe."""

from __future__ import annotations

from training.config import load_config, parse_overrides
from training.model_card import DEFAULT_TRAIN_CONFIG, _train_flags


def test_a_default_run_needs_no_flags_and_where_it_ran_is_not_part_of_the_recipe() -> None:
    cfg = load_config(DEFAULT_TRAIN_CONFIG).model_dump(mode="json")
    assert _train_flags(cfg) == ""
    assert _train_flags({**cfg, "output_dir": "runs/elsewhere", "num_threads": 2, "resume": True}) == ""


def test_the_flags_a_warm_started_run_was_given_round_trip_through_the_cli_parser() -> None:
    cfg = load_config(DEFAULT_TRAIN_CONFIG).model_dump(mode="json")
    given = {"init_from": "runs/v7-teacher", "epochs": 2, "freeze_layers": 0, "layerwise_lr_decay": 0.85, "train_fraction": None}
    flags = _train_flags({**cfg, **given})
    assert "--init-from runs/v7-teacher" in flags and "--freeze-layers 0" in flags and "--train-fraction" not in flags
    parsed = parse_overrides([part.strip("'") for part in flags.split()])
    assert parsed == {k: v for k, v in given.items() if v is not None}


def test_a_students_flags_are_read_against_the_distill_config_and_round_trip() -> None:
    from training.config import DistillConfig
    from training.model_card import DEFAULT_DISTILL_CONFIG

    cfg = load_config(DEFAULT_DISTILL_CONFIG, DistillConfig).model_dump(mode="json")
    assert _train_flags(cfg) == ""
    given = {
        "teacher_dirs": ["runs/v8m-onnx"],
        "init_from": "runs/student-v11",
        "epochs": 1,
        "targets_file": "runs/targets-v8.npz",
        "head_loss_weights": {"category": 1.0, "severity": 1.5, "sentiment": 1.0},
    }
    flags = _train_flags({**cfg, **given})
    assert "--targets-file runs/targets-v8.npz" in flags and "--alpha" not in flags
    parsed = parse_overrides([part.strip("'") for part in flags.split()], DistillConfig)
    assert parsed == given
