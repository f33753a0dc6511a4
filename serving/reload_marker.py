"""A hot reload that reaches every worker: a small JSON file all workers of a server watch.

Why: with ``triage serve --workers N`` a ``POST /v1/admin/reload`` (or a SIGHUP sent to one worker)
lands in one process; the others would go on serving the old model. So the worker that reloaded
writes what it loaded to ``TRIAGE_RELOAD_MARKER``::

    {"token": "…", "model_dir": "/models/v7" or null, "model_version": "…", "pid": 1234, "written_at": "…"}

and every worker looks at the file every ``TRIAGE_RELOAD_POLL_S`` seconds (one ``stat``; the file is
read only when it changed). A worker that finds a token it has not acted on loads the same directory
with the same checks (inside the models root, the pinned canary set); ``null`` means the configured
``TRIAGE_MODEL_DIR``. A worker that refuses it keeps its model and logs why (``GET /v1/model`` tells
each worker's ``worker_pid`` and ``model_version``). A worker started later (the supervisor replaces a
dead one) follows the marker on its first look, so it serves what the others serve.

The file is replaced atomically (written beside it, then ``os.replace``), so a reader never sees half
of it. The last reload wins: two reloads at once in two workers end with every worker on the one
whose marker was written last.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path


class ReloadMarker:
    """One worker's view of the shared marker file: announce this worker's reloads, find the others'."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.seen: str | None = None  # the last token this worker acted on (or wrote)
        self._stamp: tuple[int, int, int] | None = None

    def announce(self, model_dir: Path | None, model_version: str) -> None:
        """Tell the other workers to load ``model_dir`` (None: the configured one), which this worker just loaded."""
        token = uuid.uuid4().hex
        self.seen = token
        payload = {
            "token": token,
            "model_dir": str(Path(model_dir).resolve()) if model_dir else None,
            "model_version": model_version,
            "pid": os.getpid(),
            "written_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(payload), encoding="utf-8")
        os.replace(tmp, self.path)

    def pending(self) -> dict | None:
        """The marker's content when it holds a reload this worker has not acted on yet, else None.
        Marks it as seen: a reload that then fails is not retried every poll."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # replaced while we read it, or not ours: look again next time
        self._stamp = stamp
        token = data.get("token") if isinstance(data, dict) else None
        if not isinstance(token, str) or token == self.seen:
            return None
        self.seen = token
        return data
