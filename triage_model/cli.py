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
data_app = typer.Typer(help="Labeled-data tools: validate, assign-splits.", no_args_is_help=True)
app.add_typer(data_app, name="data")

ModelOpt = Annotated[Path | None, typer.Option("--model", "-m", help="exported model directory (default: the shipped model)")]
DataDirOpt = Annotated[Path, typer.Option("--data-dir", help="labeled data folder (holds complaints/*.jsonl)")]


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.command()
def train(
    config: Annotated[Path, typer.Option("--config", "-c", help="training YAML", exists=True, dir_okay=False)] = Path(
        "training/configs/default.yaml"
    ),
    output_dir: Annotated[Path | None, typer.Option("--output-dir", "-o", help="override the config's output_dir")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="override the config's data_dir")] = None,
    epochs: Annotated[int | None, typer.Option(help="override the config's epochs")] = None,
) -> None:
    """Fine-tune the encoder and three heads; writes a torch model directory with metrics and card."""
    from training.config import load_config
    from training.train import train as run_train

    cfg = load_config(config, output_dir=output_dir, data_dir=data_dir, epochs=epochs)
    try:
        out = run_train(cfg)
    except ValueError as err:
        _fail(str(err))
    typer.echo(f"model written to {out}")
    _print_metrics(json.loads((out / "metrics.json").read_text(encoding="utf-8")).get("test", {}), "test")


@app.command()
def export(
    model: Annotated[Path, typer.Option("--model", "-m", help="trained torch model directory", exists=True, file_okay=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="where to write the ONNX model directory")],
    int8: Annotated[bool, typer.Option(help="also write the int8-quantized graph and serve it by default")] = True,
    reference_data: Annotated[
        Path | None, typer.Option(help="labeled data dir: record torch's test-split predictions for int8 parity checks")
    ] = Path("labeled_data"),
) -> None:
    """Export to ONNX (fp32 + int8) and check fp32 parity with torch."""
    from training.export import export as run_export

    try:
        report = run_export(model, out, int8=int8, reference_data=reference_data if reference_data and reference_data.exists() else None)
    except RuntimeError as err:
        _fail(str(err))
    typer.echo(f"ONNX written to {out}; fp32 max |Δlogit| = {report.fp32_max_abs_diff:.2e}")
    if report.int8_argmax_agreement:
        typer.echo("int8 argmax agreement with torch: " + ", ".join(f"{h} {v:.1%}" for h, v in report.int8_argmax_agreement.items()))


def _print_metrics(per_head: dict, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{title} metrics")
    for col in ("head", "n", "accuracy", "macro-F1", "ECE"):
        table.add_column(col)
    for head, m in per_head.items():
        if isinstance(m, dict) and "macro_f1" in m:
            table.add_row(head, str(m["n"]), f"{m['accuracy']:.3f}", f"{m['macro_f1']:.3f}", f"{m['ece']:.3f}")
    console.print(table)
    for head, m in per_head.items():
        if not (isinstance(m, dict) and "per_class" in m):
            continue
        t = Table(title=f"{title} · {head} per class")
        for col in ("label", "precision", "recall", "F1", "support"):
            t.add_column(col)
        for label, c in m["per_class"].items():
            t.add_row(label, f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", str(c["support"]))
        console.print(t)


@app.command()
def evaluate(
    model: ModelOpt = None,
    data_dir: DataDirOpt = Path("labeled_data"),
    split: Annotated[str, typer.Option(help="train, dev or test (the fixed test split is the honest one)")] = "test",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write metrics JSON here")] = None,
) -> None:
    """Measure an exported model on a labeled split, exactly as it is served (ONNX)."""
    from eval.evaluate import evaluate_split
    from triage_model.model_dir import ModelLoadError

    try:
        metrics = evaluate_split(model, data_dir, split)
    except (ModelLoadError, ValueError) as err:
        _fail(str(err))
    _print_metrics(metrics["heads"], f"{split} ({metrics['model_version']})")
    if "escalation" in metrics:
        typer.echo(json.dumps(metrics["escalation"]["summary"], ensure_ascii=False, indent=2))
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(metrics, ensure_ascii=False, indent=2), encoding="utf-8")
        typer.echo(f"metrics written to {output}")


@app.command()
def predict(
    input: Annotated[Path, typer.Option("--input", "-i", help=".jsonl or .csv with id and text columns", exists=True, dir_okay=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help=".jsonl or .csv to write")],
    model: ModelOpt = None,
    batch_size: Annotated[int, typer.Option(min=1, max=256)] = 32,
) -> None:
    """Triage every row of a file; extra input fields are passed through, bad rows get an ``error``."""
    from triage_model.batch import predict_file
    from triage_model.model_dir import ModelLoadError

    try:
        stats = predict_file(input, output, model, batch_size)
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
    workers: Annotated[int, typer.Option(help="uvicorn worker processes (state such as alerts is per process)")] = 1,
) -> None:
    """Start the FastAPI grading API (uvicorn) on the shipped model or ``--model``."""
    import os

    import uvicorn

    if model:
        os.environ["TRIAGE_MODEL_DIR"] = str(model)
    uvicorn.run("serving.app:create_app", factory=True, host=host, port=port, workers=workers, log_config=None)


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


@data_app.command("assign-splits")
def data_assign_splits(data_dir: DataDirOpt = Path("labeled_data")) -> None:
    """Store the id-hash split in every row that lacks one (idempotent; unparsable lines kept as they are)."""
    from training.data import assign_splits

    typer.echo(f"{assign_splits(data_dir)} rows got a split")


def main() -> None:  # pragma: no cover - console-script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
