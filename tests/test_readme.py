"""The README's set-up and test commands are exactly what CI runs (a green CI proves the README)."""

from __future__ import annotations

import re

from tests.conftest import REPO


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_ci_runs_the_readme_setup_and_test_commands_verbatim():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    sections = {m.group(1): m.group(2) for m in re.finditer(r"^## (Set-up|Tests)[^\n]*\n(.*?)(?=^## )", readme, flags=re.S | re.M)}
    assert set(sections) == {"Set-up", "Tests"}
    for name, body in sections.items():
        [command] = _bash_blocks(body)
        assert command.strip() in ci, f"README {name} command is not in .ci/run"


def test_readme_shows_a_real_curl_output():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "PLACEHOLDER" not in readme
    assert '"model_version"' in readme and '"escalation"' in readme
