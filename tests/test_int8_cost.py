"""``python -m eval.int8_cost`` needs both graphs of an export and says so when one is missing."""

from __future__ import annotations

import pytest

from eval.int8_cost import int8_cost, main
from tests.conftest import LABELED
from triage_model.model_dir import DEFAULT_MODEL_DIR


def test_a_folder_without_the_fp32_graph_is_refused_with_what_is_missing() -> None:
    # the shipped default carries only its int8 graph
    with pytest.raises(FileNotFoundError, match=r"no model\.onnx"):
        int8_cost(DEFAULT_MODEL_DIR, LABELED, "dev")


def test_the_cli_explains_itself(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "fp32 graph" in capsys.readouterr().out
