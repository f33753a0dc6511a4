"""What the worker processes of one server share, set up once by the parent before they start
(``triage serve --workers N``).

* ``PROMETHEUS_MULTIPROC_DIR``: prometheus_client's multiprocess mode. Every worker writes its metric
  values to memory-mapped files there and ``/metrics`` merges them (``serving.observability``). It
  must be set before a worker imports prometheus_client, hence here, in the parent's environment,
  which the workers inherit. The directory is emptied of old metric files first: files of a previous
  run would add its counts to this one's.
* ``TRIAGE_RELOAD_MARKER``: the file through which a reload in one worker reaches the others
  (``serving.reload_marker``).

Nothing here imports prometheus_client: the parent process must not create metric files of its own.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
RELOAD_MARKER_ENV = "TRIAGE_RELOAD_MARKER"
PROMETHEUS_FILE_PREFIXES = ("counter_", "gauge_", "histogram_", "summary_")


def reset_multiproc_dir(folder: Path) -> Path:
    """Create ``folder`` or empty it of a previous run's metric files (prometheus_client's ``*.db``), so
    counters start at zero and no dead process's gauges linger. Other files are left alone."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for path in folder.glob("*.db"):
        if path.name.startswith(PROMETHEUS_FILE_PREFIXES):
            path.unlink(missing_ok=True)
    return folder


def prepare_workers(workers: int, metrics_dir: Path | None = None, environ: MutableMapping[str, str] | None = None) -> Path | None:
    """Set the shared-state variables in ``environ`` (default ``os.environ``) for ``workers`` processes.

    More than one worker: the metrics directory is ``metrics_dir``, else ``$PROMETHEUS_MULTIPROC_DIR``,
    else ``metrics/`` in a fresh temporary run directory; the reload marker is ``$TRIAGE_RELOAD_MARKER``,
    else ``reload.json`` in the run directory. One worker: nothing changes, except that a
    ``PROMETHEUS_MULTIPROC_DIR`` already set (prometheus_client then uses it anyway) is emptied.

    Returns the temporary run directory, to be removed when the server stops (None: none was made)."""
    environ = os.environ if environ is None else environ
    if workers <= 1:
        if environ.get(MULTIPROC_ENV):
            reset_multiproc_dir(Path(environ[MULTIPROC_ENV]))
        return None
    run_dir = Path(tempfile.mkdtemp(prefix="triage-serve-"))
    given = metrics_dir or (Path(environ[MULTIPROC_ENV]) if environ.get(MULTIPROC_ENV) else None)
    environ[MULTIPROC_ENV] = str(reset_multiproc_dir(given or run_dir / "metrics").resolve())
    if not environ.get(RELOAD_MARKER_ENV):
        environ[RELOAD_MARKER_ENV] = str(run_dir / "reload.json")
    return run_dir
