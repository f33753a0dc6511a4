"""Reading and writing JSONL / CSV record files for ``triage predict`` and reports."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path


def file_format(path: Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    raise ValueError(f"{path}: unsupported file type {suffix!r}; use .jsonl or .csv")


def read_records(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """Yield (line number, record, error). A bad line yields an error instead of stopping the file."""
    path = Path(path)
    if file_format(path) == "csv":
        with path.open(encoding="utf-8-sig", newline="") as fh:
            delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
            for lineno, row in enumerate(csv.DictReader(fh, delimiter=delimiter), start=2):
                yield lineno, dict(row), None
        return
    yield from read_jsonl(path)


def read_jsonl(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """JSONL lines as (line number, object, error); undecodable files and bad lines become errors."""
    with Path(path).open(encoding="utf-8", errors="strict") as fh:
        try:
            lines = list(fh)
        except UnicodeDecodeError as err:
            yield 0, None, f"not UTF-8: {err}"
            return
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            yield lineno, None, f"invalid JSON: {err.msg}"
            continue
        if not isinstance(rec, dict):
            yield lineno, None, "row is not a JSON object"
            continue
        yield lineno, rec, None


def _flatten(rec: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in rec.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        elif isinstance(value, list):
            flat[name] = json.dumps(value, ensure_ascii=False)
        else:
            flat[name] = value
    return flat


def write_records(path: Path, records: Iterable[dict]) -> int:
    """Write JSONL, or CSV (UTF-8 with BOM so Excel shows Chinese; nested fields as dotted columns)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    if file_format(path) == "jsonl":
        with path.open("w", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1
        return n
    rows = [_flatten(r) for r in records]
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)
