"""The import direction of the house: a torch-free core at the bottom, training and eval beside each other
on top of it (never importing each other), serving on the core only, the CLI as the roof.

Read from the source with ``ast`` (imports inside functions count too), so a lazy import cannot sneak
a layer violation past the test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FORBIDDEN: dict[str, set[str]] = {
    "triage_model": {"training", "eval", "serving", "triage_cli", "torch", "transformers", "datasets", "safetensors", "sklearn"},
    "training": {"eval", "serving", "triage_cli"},
    "eval": {"training", "serving", "triage_cli", "torch", "transformers"},
    "serving": {"training", "eval", "triage_cli", "torch", "transformers"},
}


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_layer_never_imports_the_layers_above_or_beside_it(package: str) -> None:
    offences = [
        f"{path.relative_to(REPO)} imports {sorted(imported_top_levels(path) & FORBIDDEN[package])}"
        for path in sorted((REPO / package).rglob("*.py"))
        if imported_top_levels(path) & FORBIDDEN[package]
    ]
    assert not offences, "\n".join(offences)


def test_the_core_imports_without_torch_in_a_fresh_interpreter() -> None:
    """Importing the whole serving path must not load torch, even indirectly through a dependency."""
    import subprocess
    import sys

    code = (
        "import sys, triage_model, triage_model.predictor, triage_model.pipeline, triage_model.batch, "
        "triage_model.labeled_data, triage_model.metrics, triage_model.trigger_decisions, serving.app; "
        "bad = [m for m in ('torch', 'transformers', 'training', 'eval') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_detector_catches_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from training.train import train\n    import torch.nn as nn\n", encoding="utf-8")
    assert imported_top_levels(module) == {"training", "torch"}
