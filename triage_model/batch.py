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
from triage_model.io import read_records, write_records
from triage_model.pipeline import triage_texts
from triage_model.predictor import TriagePredictor

CHUNK_ROWS = 256


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


def _row_error(rec: dict | None, parse_error: str | None) -> str | None:
    if parse_error:
        return parse_error
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


def predict_file(
    input_path: Path, output_path: Path, model_dir: Path | None = None, batch_size: int = 32, policy_path: Path | None = None
) -> dict[str, int]:
    """Triage ``input_path`` into ``output_path``; input fields pass through, predictions and the
    escalation decision are added."""
    predictor = TriagePredictor.from_pretrained(model_dir)
    scorer = EscalationScorer(load_policy(policy_path))
    started = datetime.now(UTC)
    out: list[dict] = []  # in input order; pending rows hold their slot until their chunk is predicted
    stats = {"ok": 0, "errors": 0}
    pending: list[tuple[int, dict]] = []

    def flush() -> None:
        recs = [rec for _, rec in pending]
        texts, contexts = [r["text"] for r in recs], [row_context(r) for r in recs]
        results = triage_texts(predictor, scorer, texts, contexts, now=started, batch_size=batch_size)
        for (slot, rec), scored in zip(pending, results, strict=True):
            out[slot] = {**rec, **scored.model_dump(mode="json", exclude_none=True)}
        stats["ok"] += len(pending)
        pending.clear()

    for lineno, rec, parse_error in tqdm(read_records(input_path), desc="triage", unit="row"):
        error = _row_error(rec, parse_error)
        if error:
            out.append({**(rec or {}), "line": lineno, "error": error})
            stats["errors"] += 1
            continue
        pending.append((len(out), rec))
        out.append(rec)
        if len(pending) >= CHUNK_ROWS:
            flush()
    if pending:
        flush()
    write_records(output_path, out)
    return stats
