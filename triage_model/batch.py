"""File-to-file triage for ``triage predict``: stream rows, predict in chunks, never stop on a bad row.

Every triaged row also gets an ``escalation`` object. A row's ticket context is read from a
``context`` object (JSONL), or from top-level / ``context.``-prefixed columns (CSV) named like
``EscalationContext``'s fields; rows without ``received_at`` are scored as received when the run
started (UTC).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError
from tqdm.auto import tqdm

from triage_model.escalation import EscalationContext, EscalationScorer, load_policy
from triage_model.escalation.models import CONTEXT_FIELDS
from triage_model.io import RecordWriter, file_format, read_records
from triage_model.pipeline import triage_texts
from triage_model.predictor import TriagePredictor

CHUNK_ROWS = 512


def row_context(rec: dict) -> EscalationContext:
    """The escalation context of one input row; raises ``ValueError`` naming the bad field."""
    values = dict(rec["context"]) if isinstance(rec.get("context"), dict) else {}
    for name in CONTEXT_FIELDS:
        for key in (name, f"context.{name}"):
            if rec.get(key) not in (None, ""):
                values.setdefault(name, rec[key])
    try:
        return EscalationContext.coerce(values)
    except ValidationError as err:
        first = err.errors()[0]
        raise ValueError(f"context.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None


def _row_error(rec: dict | None, parse_error: str | None, first_line_of_id: dict[str, int], lineno: int) -> str | None:
    if parse_error:
        return parse_error
    row_id = rec.get("id")
    if row_id in (None, ""):
        return "missing 'id': every input row needs an id to match results back"
    key = str(row_id)
    if key in first_line_of_id:
        return f"duplicate id {key!r} (first at line {first_line_of_id[key]})"
    first_line_of_id[key] = lineno
    text = rec.get("text")
    if not isinstance(text, str):
        return "missing or non-string 'text'"
    if not TriagePredictor.prepare(text).text:
        return "empty text after normalisation"
    try:
        row_context(rec)
    except ValueError as err:
        return f"bad context: {err}"
    return None


def count_records(input_path: Path) -> int:
    """Rows in the input (a cheap first pass), for the progress bar's total and ETA."""
    return sum(1 for _ in read_records(input_path))


def predict_file(
    input_path: Path, output_path: Path, model_dir: Path | None = None, batch_size: int = 32, policy_path: Path | None = None
) -> dict[str, int]:
    """Triage ``input_path`` into ``output_path``; input fields pass through, predictions and the
    escalation decision are added. Rows are scored in chunks of ``CHUNK_ROWS`` (length-sorted inside a
    chunk so batches pad little) and written in input order as each chunk finishes (JSONL streams; CSV
    needs every column before its header, so it is written at the end).

    Raises ``ValueError`` before any model is loaded for an unsupported file type, and when the input
    has no data rows (an empty file or a header-only CSV is almost always an upstream mistake).
    """
    file_format(input_path)
    file_format(output_path)
    total = count_records(input_path)
    if total == 0:
        raise ValueError(f"{input_path}: no data rows (empty file or header only)")
    predictor = TriagePredictor.from_pretrained(model_dir)
    scorer = EscalationScorer(load_policy(policy_path))
    started = datetime.now(UTC)
    stats = {"ok": 0, "errors": 0}
    first_line_of_id: dict[str, int] = {}
    chunk: list[dict] = []  # in input order; a good row is replaced by its result when the chunk is scored

    with RecordWriter(output_path) as writer, tqdm(total=total, desc="triage", unit="row", smoothing=0.1) as bar:

        def flush() -> None:
            todo = [i for i, rec in enumerate(chunk) if "error" not in rec]
            recs = [chunk[i] for i in todo]
            texts, contexts = [r["text"] for r in recs], [row_context(r) for r in recs]
            results = triage_texts(predictor, scorer, texts, contexts, now=started, batch_size=batch_size) if recs else []
            for i, scored in zip(todo, results, strict=True):
                chunk[i] = {**chunk[i], **scored.model_dump(mode="json", exclude_none=True)}
            stats["ok"] += len(todo)
            writer.write_all(chunk)
            bar.update(len(chunk))
            chunk.clear()

        for lineno, rec, parse_error in read_records(input_path):
            error = _row_error(rec, parse_error, first_line_of_id, lineno)
            if error:
                chunk.append({**(rec or {}), "line": lineno, "error": error})
                stats["errors"] += 1
            else:
                chunk.append(rec)
            if len(chunk) >= CHUNK_ROWS:
                flush()
        if chunk:
            flush()
    return stats
