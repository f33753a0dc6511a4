"""``triage promote``: replace the served (champion) model with a challenger only if it is not worse.

The gate, on the fixed test split: no head's macro-F1 and not the 一级 recall may drop by more than
``tolerance`` (``triage_cli/configs/promote.yaml``), and every head's macro-F1 must be ahead of the character
n-gram TF-IDF + LR baseline (``eval.baselines``) trained on the same train split. A refusal writes the
challenger-vs-champion report (``eval.report``) so a reviewer sees which complaints broke. Promotion copies
only the serving files (int8 ONNX, tokenizer, config, metrics, card; never the fp32 ``model.onnx``) into a
staging folder next to the champion, checks that it loads, then swaps it in by rename: the champion folder is
always either the old model or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from eval.evaluate import evaluate_split
from eval.report import metric_deltas
from triage_model.model_dir import CARD_FILE, META_FILE, METRICS_FILE, ONNX_INT8_FILE, TOKENIZER_FILE, TORCH_REFERENCE_FILE
from triage_model.ngram import NGRAM_FILE
from triage_model.schema import CRITICAL_SEVERITY, HEADS

SERVING_FILES: tuple[str, ...] = (ONNX_INT8_FILE, TOKENIZER_FILE, META_FILE, METRICS_FILE, CARD_FILE)
OPTIONAL_FILES: tuple[str, ...] = (TORCH_REFERENCE_FILE, NGRAM_FILE)
"""Installed with the model when present: the torch side of the int8 parity tests, and the n-gram scorer that
``triage blend`` adds (the model's ``triage_config.json`` says whether it is used)."""
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "promote.yaml"
DECISION_FILE = "promote_decision.json"
_EPS = 1e-9  # float noise: an equal score is never a drop


class PromoteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tolerance: float = Field(0.01, ge=0.0, le=1.0, description="largest allowed drop (absolute) of any head's macro-F1 and of 一级 recall")
    champion: Path = Field(Path("triage_model/default_model"), description="the served model directory to replace")
    data_dir: Path = Field(Path("labeled_data"), description="labeled data holding the fixed test split")
    split: str = "test"
    report_dir: Path = Field(Path("runs/promote-report"), description="where the comparison report goes")
    beat_baseline: bool = Field(True, description="refuse a challenger that is not ahead of the n-gram baseline on every head")
    baseline_margin: float = Field(0.0, ge=0.0, description="macro-F1 the challenger must be ahead of the baseline by (absolute)")


def load_promote_config(path: Path | None = DEFAULT_CONFIG, **overrides: object) -> PromoteConfig:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) if path and Path(path).exists() else {}
    return PromoteConfig.model_validate({**(data or {}), **{k: v for k, v in overrides.items() if v is not None}})


@dataclass
class Check:
    head: str
    metric: str
    champion: float
    challenger: float
    delta: float
    ok: bool


@dataclass
class Decision:
    promote: bool
    tolerance: float
    challenger_version: str = ""
    champion_version: str | None = None
    checks: list[Check] = field(default_factory=list)
    note: str = ""
    report_dir: str | None = None

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


def decide(champion_heads: dict[str, dict], challenger_heads: dict[str, dict], tolerance: float) -> list[Check]:
    """One check per head's macro-F1 plus 一级 recall; each passes if it dropped at most ``tolerance``."""
    deltas = metric_deltas(champion_heads, challenger_heads)
    gated = [(head, "macro_f1") for head in HEADS] + [("severity", f"recall_{CRITICAL_SEVERITY}")]
    return [
        Check(head, metric, d["champion"], d["challenger"], d["delta"], d["delta"] >= -tolerance - _EPS)
        for head, metric in gated
        for d in [deltas[head][metric]]
    ]


def baseline_checks(baseline_heads: dict[str, dict], challenger_heads: dict[str, dict], margin: float) -> list[Check]:
    """One check per head: the challenger's macro-F1 must exceed the n-gram baseline's by more than ``margin``."""
    out = []
    for head in HEADS:
        b, c = baseline_heads[head]["macro_f1"], challenger_heads[head]["macro_f1"]
        out.append(Check(head, "macro_f1_vs_ngram_baseline", b, c, c - b, c - b > margin + _EPS))
    return out


def measure_baseline(data_dir: Path, split: str, model_heads: dict[str, dict] | None = None) -> dict[str, object]:
    """The n-gram baseline (train split, C on dev) measured on ``split``: what the challenger must beat. Its
    per-head metrics are under ``heads``; with the challenger's ``model_heads``, its severity at the
    challenger's 一级 recall is under ``severity_at_model_recall``."""
    from eval.baselines import baseline_summary, fit_baseline
    from eval.evaluate import split_rows

    return baseline_summary(fit_baseline(data_dir), split_rows(data_dir, split), model_heads)


def record_baseline(model_dir: Path, model_eval: dict, baseline: dict[str, object], split: str, gated: bool = True) -> None:
    """Write the as-served metrics beside the n-gram baseline into the installed card and metrics.json."""
    from eval.baselines import matched_cell, side_by_side

    rows = [
        "| head | model macro-F1 (int8, as served) | n-gram baseline macro-F1 | gap (points) | baseline at the model's 一级 recall (gap) |",
        "|---|---|---|---|---|",
    ]
    for r in side_by_side(model_eval["heads"], baseline["heads"], baseline.get("severity_at_model_recall")):
        cells = (r["head"], f"{r['model_macro_f1']:.3f}", f"{r['baseline_macro_f1']:.3f}", f"{r['gap_points']:+.1f}", matched_cell(r))
        rows.append("| " + " | ".join(cells) + " |")
    gate = (
        ""
        if gated
        else (
            "\n\n**The baseline gate was off for this promotion** (`triage promote --no-beat-baseline`): see the card's "
            "notes for why it was installed although it is not ahead of the baseline on every head.\n"
        )
    )
    section = (
        f"\n\n## Against the n-gram baseline ({split} split, measured at promotion)\n\n"
        "Baseline: character 1–3-gram TF-IDF + logistic regression, trained on the same train split, C chosen on dev "
        "(`eval/baselines.py`), decided by argmax. The model column is the model as served (`triage evaluate`): the int8 "
        "ONNX graph, blended with its n-gram scorer where the model has one (see the blend section), not torch, with its "
        "一级 threshold lowered for recall. The last column gives the baseline the same 一级 recall as the model (its "
        "threshold fitted on these very rows, which flatters it): the comparison at one operating point.\n\n"
        + "\n".join(rows)
        + "\n"
        + gate
    )
    card = Path(model_dir) / CARD_FILE
    card.write_text(card.read_text(encoding="utf-8").rstrip() + section, encoding="utf-8")
    metrics_path = Path(model_dir) / METRICS_FILE
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    metrics[f"{split}_as_served"] = {h: model_eval["heads"][h] for h in HEADS}
    metrics[f"{split}_ngram_baseline"] = baseline["heads"]
    if baseline.get("severity_at_model_recall"):
        metrics[f"{split}_ngram_baseline_severity_at_model_recall"] = baseline["severity_at_model_recall"]
    metrics_path.write_text(json.dumps(metrics, ensure_ascii=False, indent=2), encoding="utf-8")


def check_serving_files(model_dir: Path) -> None:
    missing = [name for name in SERVING_FILES if not (Path(model_dir) / name).is_file()]
    if missing:
        raise ValueError(f"{model_dir}: not an exported model directory, missing {missing} (run `triage export`)")


def is_model_dir(path: Path) -> bool:
    return (Path(path) / META_FILE).is_file()


def install_serving_files(challenger: Path, champion: Path) -> None:
    """Copy the serving files into a staging folder beside ``champion``, check it loads, swap by rename."""
    from triage_model.predictor import TriagePredictor

    champion = Path(champion)
    champion.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{champion.name}.new-", dir=champion.parent))
    try:
        staging.chmod(0o755)
        optional = [name for name in OPTIONAL_FILES if (Path(challenger) / name).is_file()]
        for name in (*SERVING_FILES, *optional):
            shutil.copyfile(Path(challenger) / name, staging / name)
            with (staging / name).open("rb") as fh:
                os.fsync(fh.fileno())
        TriagePredictor.from_pretrained(staging)  # never install a directory that does not load
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if champion.exists():
        old = champion.with_name(f".{champion.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(champion, old)
    os.rename(staging, champion)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recover_interrupted_swap(champion: Path) -> str | None:
    """Undo a swap cut between its two renames (champion moved aside, staging not yet in place).

    The serving folder must never stay missing: if ``champion`` is gone and a ``.<name>.old-*`` sibling
    holds a loadable model metadata file, the newest one is renamed back. Leftover backups beside a
    present champion are removed. Returns what was done, or None.
    """
    champion = Path(champion)
    if not champion.parent.exists():
        return None
    backups = sorted(champion.parent.glob(f".{champion.name}.old-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not champion.exists():
        restorable = [b for b in backups if is_model_dir(b)]
        if restorable:
            os.rename(restorable[0], champion)
            return f"restored {champion} from {restorable[0].name} (an earlier swap was interrupted)"
        return None
    for stale in backups:
        shutil.rmtree(stale, ignore_errors=True)
    return f"removed {len(backups)} stale backup folder(s)" if backups else None


def promote(challenger: Path, config: PromoteConfig, first: bool = False) -> Decision:
    """Evaluate both models, decide, and install or write the refusal report. Returns the decision.

    With ``first`` and no champion there is nothing to compare with, but the baseline gate still applies: a
    first model (or a second bundled one, such as the fast student) must be ahead of the n-gram baseline too."""
    check_serving_files(challenger)
    champion = config.champion
    recover_interrupted_swap(champion)
    report_dir = config.report_dir
    has_champion = is_model_dir(champion)
    if not has_champion and not first:
        raise ValueError(f"{champion}: no champion model there; pass --first to install the first one")
    # the gate reads only the heads: the escalation-set evaluation inside evaluate_split is not needed here
    challenger_eval = evaluate_split(challenger, config.data_dir, config.split, escalation=False)
    champion_eval = evaluate_split(champion, config.data_dir, config.split, escalation=False) if has_champion else None
    checks = decide(champion_eval["heads"], challenger_eval["heads"], config.tolerance) if champion_eval else []
    # measured even when the gate is off, so the installed card always carries the baseline beside the model
    baseline = measure_baseline(config.data_dir, config.split, challenger_eval["heads"])
    if config.beat_baseline:
        checks += baseline_checks(baseline["heads"], challenger_eval["heads"], config.baseline_margin)
    decision = Decision(
        all(c.ok for c in checks),
        config.tolerance,
        challenger_eval["model_version"],
        champion_eval["model_version"] if champion_eval else None,
        checks,
    )
    if decision.promote:
        install_serving_files(challenger, champion)
        record_baseline(champion, challenger_eval, baseline, config.split, gated=config.beat_baseline)
        decision.note = f"promoted into {champion}" if has_champion else f"no champion at {champion}: installed as the first model"
    else:
        from eval.report import build_report

        build_report(challenger, config.data_dir, report_dir, split=config.split, compare=champion if has_champion else None)
        decision.note = f"refused: {len(decision.failures)} check(s) failed (a drop over {config.tolerance}, or not ahead of the baseline)"
        decision.report_dir = str(report_dir)
    _write_decision(decision, report_dir)
    return decision


def _write_decision(decision: Decision, report_dir: Path) -> None:
    Path(report_dir).mkdir(parents=True, exist_ok=True)
    (Path(report_dir) / DECISION_FILE).write_text(json.dumps(asdict(decision), ensure_ascii=False, indent=2), encoding="utf-8")
