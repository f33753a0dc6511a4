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
    """Yield (line number, record, error). A bad line yields an error instead of stopping the file.

    JSONL and CSV behave alike: each physical line is decoded on its own, so a line that is not UTF-8
    becomes an error naming the file and line while every other row is still read.
    """
    path = Path(path)
    if file_format(path) == "csv":
        yield from _read_csv(path)
        return
    yield from read_jsonl(path)


def _decoded_lines(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """(line number, text, error) per physical line; undecodable bytes are replaced and reported."""
    with Path(path).open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield lineno, raw.decode("utf-8"), None
            except UnicodeDecodeError as err:
                bad = f"{path.name} line {lineno} is not UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start}); save the file as UTF-8"
                yield lineno, raw.decode("utf-8", errors="replace"), bad


def _read_csv(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    errors: dict[int, str] = {}

    def lines() -> Iterator[str]:
        for lineno, text, error in _decoded_lines(path):
            if error:
                errors[lineno] = error
            yield text

    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.DictReader(lines(), delimiter=delimiter)
    if reader.fieldnames is None:  # empty file
        return
    if 1 in errors:
        raise ValueError(f"{path}: the header line is not UTF-8; save the file as UTF-8")
    last = reader.line_num
    for row in reader:
        first, last = last + 1, reader.line_num
        bad = next((errors[n] for n in range(first, last + 1) if n in errors), None)
        yield first, (None if bad else dict(row)), bad


def read_jsonl(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """JSONL lines as (line number, object, error); undecodable lines and bad JSON become errors."""
    for lineno, line, error in _decoded_lines(path):
        if error:
            yield lineno, None, error
            continue
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


class RecordWriter:
    """Write records as they come: JSONL line by line (a crash keeps what was written), CSV at close
    (its header needs every column, and nested fields become dotted columns)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.fmt = file_format(self.path)
        self._rows: list[dict] = []
        self._fh = None

    def __enter__(self) -> RecordWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.fmt == "jsonl":
            self._fh = self.path.open("w", encoding="utf-8")
        return self

    def write_all(self, records: Iterable[dict]) -> None:
        if self._fh is not None:
            self._fh.writelines(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records)
            self._fh.flush()
        else:
            self._rows.extend(records)

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()
        else:
            write_records(self.path, self._rows)


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
