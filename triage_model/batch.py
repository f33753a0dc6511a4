"""File-to-file triage for ``triage predict``: stream rows, predict in chunks, never stop on a bad row."""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from triage_model.io import read_records, write_records
from triage_model.predictor import TriagePredictor

CHUNK_ROWS = 256


def _row_error(rec: dict | None, parse_error: str | None) -> str | None:
    if parse_error:
        return parse_error
    text = rec.get("text")
    if not isinstance(text, str):
        return "missing or non-string 'text'"
    if not TriagePredictor.prepare(text).text:
        return "empty text after normalisation"
    return None


def predict_file(input_path: Path, output_path: Path, model_dir: Path | None = None, batch_size: int = 32) -> dict[str, int]:
    """Triage ``input_path`` into ``output_path``; input fields pass through, predictions are added."""
    predictor = TriagePredictor.from_pretrained(model_dir)
    out: list[dict] = []  # in input order; pending rows hold their slot until their chunk is predicted
    stats = {"ok": 0, "errors": 0}
    pending: list[tuple[int, dict]] = []

    def flush() -> None:
        results = predictor.predict([rec["text"] for _, rec in pending], batch_size)
        for (slot, rec), res in zip(pending, results, strict=True):
            out[slot] = {**rec, **res.model_dump(exclude_none=True)}
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
