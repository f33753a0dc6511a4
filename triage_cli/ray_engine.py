"""Bulk scoring on Ray Data: ``triage predict --engine ray`` (install with ``pip install -e ".[scale]"``).

Why Ray Data, and why it is wired this way:

* **Read** — ``ray.data.read_datasource`` with a small ``FileBasedDatasource`` (Ray lists the file or
  directory and spreads the files over read tasks). Ray's own ``read_json`` / ``read_csv`` stop at the
  first bad line and drop line numbers; the local engine instead returns every bad row in place with an
  ``error`` field. So each file is parsed by the same reader
  (``triage_model.io.read_records``) and checked by the same row checks (``triage_model.batch``) as the
  local engine; Parquet rows go through the same checks.
* **Chunks, not rows, are the unit of work.** A file's rows are grouped into chunks of ``CHUNK_ROWS``
  (the local engine's chunk), one dataset row per chunk. Because a chunk is never split or merged, its
  good texts reach ``triage_texts`` as exactly the same list, hence the same length-sorted batches, as
  in the local engine, so the rows match the local engine's to the last digit; and a chunk is the unit
  of resume (the read merges a file's chunks into one block; a streaming repartition splits them again
  so that every actor gets work).
* **Score** — ``map_batches`` with :class:`ChunkScorer`, a callable class: Ray starts ``workers`` actors,
  each loading one ``TriagePredictor`` and one ``EscalationScorer`` once.
* **Write** — ``write_datasink`` with :class:`ChunkSink`: one output file per chunk,
  ``<output>/<input file>/part-<chunk>.jsonl`` (or ``.csv``), written to a temporary name and renamed,
  so a part either exists whole or not at all. ``resume=True`` skips the chunks whose part exists (their
  rows are still read, for line numbers and the duplicate-id check, but not scored). A manifest
  (``_triage_run.json``) records the inputs, model and policy; a resume against a changed input or
  model is refused instead of mixing two runs.

Ids must be unique within a file (the local engine's rule, applied per file of a directory). Every Ray
node needs the inputs and the output folder at the same paths (one machine, or NFS and the like) and
this package installed. The core (``triage_model``) never imports Ray: this module is the roof's.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

from triage_model.batch import CHUNK_ROWS, _row_error, row_context
from triage_model.escalation import EscalationPolicy, EscalationScorer, load_policy
from triage_model.io import read_records, write_records
from triage_model.model_dir import read_meta, resolve_model_dir
from triage_model.pipeline import triage_texts
from triage_model.predictor import TriagePredictor

try:  # optional: the base install (README set-up) has no Ray; only --engine ray needs it
    import ray
    from ray.data.block import BlockAccessor
    from ray.data.datasource import Datasink, FileBasedDatasource
except ImportError:  # pragma: no cover - exercised by the "ray missing" test through require_ray
    ray = None
    BlockAccessor = None
    Datasink = FileBasedDatasource = object

RAY_MISSING = 'the Ray engine needs Ray Data, which is not installed: pip install -e ".[scale]"  (or: pip install "ray[data]==2.60.0")'
INPUT_EXTENSIONS: tuple[str, ...] = ("jsonl", "ndjson", "json", "csv", "tsv", "parquet")
MANIFEST = "_triage_run.json"
OutputFormat = Literal["jsonl", "csv"]


class RayUnavailable(RuntimeError):
    """Ray Data is not installed (it is the optional ``scale`` extra)."""


def require_ray() -> None:
    """Raise :class:`RayUnavailable` with the install command when Ray Data cannot be imported."""
    if ray is None:
        raise RayUnavailable(RAY_MISSING)


def part_name(chunk: int, fmt: OutputFormat) -> str:
    return f"part-{chunk:06d}.{fmt}"


def _json_default(value: object) -> str:
    """Parquet cells JSON cannot hold (timestamps, dates, decimals) travel as ISO / plain strings."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


# -- read: one dataset row per chunk of a file ----------------------------------------------------


def _parquet_records(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """Parquet rows as ``read_records`` yields them; the row number (from 1) stands in for a line."""
    import pyarrow.parquet as pq

    lineno = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=CHUNK_ROWS):
        for rec in batch.to_pylist():
            lineno += 1
            yield lineno, json.loads(json.dumps(rec, ensure_ascii=False, default=_json_default)), None


def _records(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    return _parquet_records(path) if path.suffix.lower() == ".parquet" else read_records(path)


def file_chunks(path: Path, source: str, chunk_rows: int, done: frozenset[int] = frozenset()) -> Iterator[dict[str, Any]]:
    """The chunks of one input file as dataset rows: ``payload`` holds the chunk's records as JSON, bad
    rows already replaced by ``{**row, "line", "error"}`` exactly as the local engine writes them.

    A chunk in ``done`` (its part exists: resume) keeps its counts but carries no payload. An empty
    file yields nothing; the caller reports a run with no rows at all."""
    first_line_of_id: dict[str, int] = {}
    chunk: list[dict] = []
    errors = 0
    index = 0

    def emit() -> dict[str, Any]:
        skip = index in done
        payload = "" if skip else json.dumps(chunk, ensure_ascii=False)
        return {"source": source, "chunk": index, "rows": len(chunk), "errors": errors, "done": skip, "payload": payload}

    for lineno, rec, parse_error in _records(path):
        error = _row_error(rec, parse_error, first_line_of_id, lineno)
        if error:
            chunk.append({**(rec or {}), "line": lineno, "error": error})
            errors += 1
        else:
            chunk.append(rec)
        if len(chunk) >= chunk_rows:
            yield emit()
            chunk, errors, index = [], 0, index + 1
    if chunk:
        yield emit()


def source_key(path: str, root: str) -> str:
    """The name a file's parts are written under: its path relative to the input root (a file input: its name)."""
    rel = os.path.relpath(path, root) if root != path else os.path.basename(path)
    return rel.replace(os.sep, "/")


class ChunkDatasource(FileBasedDatasource):
    """Ray's file listing and read tasks, the local engine's parser and row checks (see module docstring)."""

    def __init__(self, paths: str, root: str, chunk_rows: int, done: dict[str, frozenset[int]], **kwargs: Any) -> None:
        super().__init__(paths, file_extensions=list(INPUT_EXTENSIONS), **kwargs)
        self.root = root
        self.chunk_rows = chunk_rows
        self.done = done

    def _read_stream(self, f: Any, path: str) -> Iterator[Any]:
        import pyarrow as pa

        source = source_key(path, self.root)
        done = self.done.get(source, frozenset())
        local = Path(path)
        if not local.is_file():
            raise FileNotFoundError(f"{path}: not on this Ray node; every node must see the inputs at the same path (NFS or similar)")
        for row in file_chunks(local, source, self.chunk_rows, done):  # streamed: a big file is never held whole
            yield pa.Table.from_pylist([row])  # one block per chunk: Ray may merge blocks, never split a row


# -- score: one predictor per actor ---------------------------------------------------------------


class ChunkScorer:
    """The ``map_batches`` callable: loads the model once per actor, scores whole chunks.

    The good rows of a chunk go through ``triage_texts`` together, in input order, exactly as in
    ``triage_model.batch.predict_file``, and each is replaced by ``{**row, **result}``."""

    def __init__(self, model_dir: str | None, policy: EscalationPolicy, started: str, batch_size: int, threads: int | None) -> None:
        self.predictor = TriagePredictor.from_pretrained(model_dir, intra_op_threads=threads)
        self.scorer = EscalationScorer(policy)
        self.started = datetime.fromisoformat(started)
        self.batch_size = batch_size

    def score_chunk(self, chunk: list[dict]) -> list[dict]:
        todo = [i for i, rec in enumerate(chunk) if "error" not in rec]
        recs = [chunk[i] for i in todo]
        texts, contexts = [r["text"] for r in recs], [row_context(r) for r in recs]
        results = triage_texts(self.predictor, self.scorer, texts, contexts, now=self.started, batch_size=self.batch_size) if recs else []
        out = list(chunk)
        for i, scored in zip(todo, results, strict=True):
            out[i] = {**chunk[i], **scored.model_dump(mode="json", exclude_none=True)}
        return out

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        payloads = []
        for done, payload in zip(batch["done"], batch["payload"], strict=True):
            payloads.append("" if done else json.dumps(self.score_chunk(json.loads(payload)), ensure_ascii=False))
        return {**{k: batch[k] for k in ("source", "chunk", "rows", "errors", "done")}, "payload": payloads}


# -- write: one part per chunk, atomically --------------------------------------------------------


class ChunkSink(Datasink):
    """Writes each scored chunk to ``<out>/<source>/part-<chunk>.<fmt>`` (temp name + rename)."""

    def __init__(self, out_dir: str, fmt: OutputFormat) -> None:
        self.out_dir = out_dir
        self.fmt = fmt
        self.stats: dict[str, int] = {}

    def write(self, blocks: Iterable[Any], ctx: Any) -> dict[str, int]:
        stats = {"ok": 0, "errors": 0, "chunks_written": 0, "chunks_skipped": 0}
        for block in blocks:
            for row in BlockAccessor.for_block(block).to_arrow().to_pylist():
                stats["ok"] += row["rows"] - row["errors"]
                stats["errors"] += row["errors"]
                if row["done"]:
                    stats["chunks_skipped"] += 1
                    continue
                target = Path(self.out_dir) / row["source"] / part_name(row["chunk"], self.fmt)
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".tmp-{os.getpid()}-{target.name}")  # keeps the suffix write_records reads
                write_records(tmp, json.loads(row["payload"]))
                os.replace(tmp, target)
                stats["chunks_written"] += 1
        return stats

    def on_write_complete(self, write_result: Any) -> None:
        totals: dict[str, int] = {}
        for part in write_result.write_returns:
            for key, value in part.items():
                totals[key] = totals.get(key, 0) + value
        self.stats = totals


# -- the run --------------------------------------------------------------------------------------


@dataclass
class RayRunConfig:
    """Everything ``triage predict --engine ray`` needs; defaults match the local engine."""

    input_path: Path
    output_dir: Path
    model_dir: Path | None = None
    policy_path: Path | None = None
    batch_size: int = 32
    address: str | None = None
    workers: int = 1
    cpus_per_worker: int = 1
    output_format: OutputFormat = "jsonl"
    resume: bool = False
    chunk_rows: int = CHUNK_ROWS
    progress: bool = True
    ray_init_kwargs: dict[str, Any] = field(default_factory=dict)


def _file_fingerprints(input_path: Path) -> list[dict[str, object]]:
    """Input files (as Ray lists them: supported extensions, no ``_``/``.`` names) with size and mtime."""
    if input_path.is_file():
        files = [input_path]
    else:
        files = sorted(
            p
            for p in input_path.rglob("*")
            if p.is_file()
            and p.suffix.lower().lstrip(".") in INPUT_EXTENSIONS
            and not any(part.startswith(("_", ".")) for part in p.relative_to(input_path).parts)
        )
    return [{"file": source_key(str(p), str(input_path)), "bytes": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in files]


def _policy_digest(policy: EscalationPolicy) -> str:
    return hashlib.sha256(policy.model_dump_json().encode("utf-8")).hexdigest()[:16]


def plan_run(cfg: RayRunConfig, model_version: str, policy: EscalationPolicy) -> tuple[dict[str, object], dict[str, frozenset[int]]]:
    """The run's manifest and, when resuming, the chunks already written per input file.

    Raises ``ValueError`` when the output folder holds something else (no ``--resume``), or when a
    resume would mix runs: other inputs, model, policy, chunk size or output format."""
    inputs = _file_fingerprints(cfg.input_path)
    if not inputs:
        raise ValueError(f"{cfg.input_path}: no .jsonl/.csv/.parquet files to score")
    manifest: dict[str, object] = {
        "inputs": inputs,
        "model_version": model_version,
        "policy": _policy_digest(policy),
        "chunk_rows": cfg.chunk_rows,
        "output_format": cfg.output_format,
        "started": datetime.now(UTC).isoformat(),
    }
    path = cfg.output_dir / MANIFEST
    occupied = cfg.output_dir.exists() and any(cfg.output_dir.iterdir())
    if not cfg.resume:
        if occupied:
            raise ValueError(f"{cfg.output_dir} is not empty: pass --resume to finish an interrupted run there, or pick a new --output")
        return manifest, {}
    if not path.exists():
        if occupied:
            raise ValueError(f"{cfg.output_dir} holds no {MANIFEST}: it is not the output of an interrupted run")
        return manifest, {}
    before = json.loads(path.read_text(encoding="utf-8"))
    changed = [k for k in ("inputs", "model_version", "policy", "chunk_rows", "output_format") if before.get(k) != manifest[k]]
    if changed:
        raise ValueError(f"cannot resume in {cfg.output_dir}: {', '.join(changed)} changed since that run; pick a new --output")
    manifest["started"] = before["started"]  # rows without received_at keep one clock across the resumed run
    done: dict[str, frozenset[int]] = {}
    for entry in inputs:
        folder = cfg.output_dir / str(entry["file"])
        parts = folder.glob(f"part-*.{cfg.output_format}") if folder.is_dir() else []
        done[str(entry["file"])] = frozenset(int(p.name.split("-")[1].split(".")[0]) for p in parts)
    return manifest, done


def predict_with_ray(cfg: RayRunConfig) -> dict[str, int]:
    """Score ``cfg.input_path`` (a file or a folder) into part files under ``cfg.output_dir``.

    Returns the local engine's counts (``ok``, ``errors``) plus ``chunks_written`` and
    ``chunks_skipped``. Raises ``RayUnavailable`` without Ray, ``ModelLoadError`` / ``ValueError`` for a
    bad model, policy, input or output folder before any work starts, and ``ValueError`` for an input
    without data rows. Joins a running Ray (``ray.init`` already called), a cluster (``address``), or
    starts a local one for the run."""
    require_ray()
    import ray.data

    model_version = read_meta(resolve_model_dir(cfg.model_dir)).model_version
    policy = load_policy(cfg.policy_path)
    manifest, done = plan_run(cfg, model_version, policy)
    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if cfg.address:
            kwargs["address"] = cfg.address
        else:  # one logical CPU more than the scorers take, for the light read and write tasks (else they starve)
            kwargs["num_cpus"] = max(os.cpu_count() or 1, cfg.workers * cfg.cpus_per_worker) + 1
        ray.init(**{**kwargs, **cfg.ray_init_kwargs})
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = cfg.progress
        cfg.output_dir.mkdir(parents=True, exist_ok=True)
        (cfg.output_dir / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
        root = str(cfg.input_path.resolve())
        source = ChunkDatasource(root, root=root, chunk_rows=cfg.chunk_rows, done=done)
        sink = ChunkSink(str(cfg.output_dir.resolve()), cfg.output_format)
        (
            ray.data.read_datasource(source, num_cpus=0.25)
            .repartition(target_num_rows_per_block=1)  # the read merges a file's chunks into one block: split them for the actors
            .map_batches(
                ChunkScorer,
                batch_size=1,  # one chunk per call: a chunk is already ~CHUNK_ROWS texts
                compute=ray.data.ActorPoolStrategy(size=cfg.workers),
                num_cpus=cfg.cpus_per_worker,
                fn_constructor_kwargs={
                    "model_dir": str(cfg.model_dir) if cfg.model_dir else None,
                    "policy": policy,
                    "started": str(manifest["started"]),
                    "batch_size": cfg.batch_size,
                    "threads": cfg.cpus_per_worker,
                },
            )
            .write_datasink(sink, ray_remote_args={"num_cpus": 0.25})
        )
    finally:
        if started_here:
            ray.shutdown()
    stats = {"ok": 0, "errors": 0, "chunks_written": 0, "chunks_skipped": 0, **sink.stats}
    if stats["ok"] + stats["errors"] == 0:
        raise ValueError(f"{cfg.input_path}: no data rows (empty files or header only)")
    return stats


def read_output_rows(output_dir: Path) -> list[dict]:
    """Every row of a finished run, file by file and chunk by chunk: the local engine's order."""
    from triage_model.io import read_jsonl

    rows: list[dict] = []
    for folder in sorted({p.parent for p in Path(output_dir).rglob("part-*.jsonl")}):
        for part in sorted(folder.glob("part-*.jsonl")):
            rows += [rec for _, rec, _ in read_jsonl(part) if rec is not None]
    return rows
