"""Holds the served predictor and swaps it atomically on reload; decides which directories may load.

Why a holder: a request takes one reference to the predictor at its start and finishes on it, so a
reload never changes the model under a running request; the old model is freed when the last
request using it returns. A candidate is swapped in only after it passed the pinned canary set
(``serving.canary``).

What may load: the configured model directory, and on POST /v1/admin/reload only directories inside
the configured models root (the resolved path, symlinks followed, must stay inside it). Inside a
model directory every file the predictor opens, ``onnx_file`` of ``triage_config.json`` included,
must resolve inside that directory (``"onnx_file": "../../elsewhere.onnx"`` is refused).
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from serving.canary import CanaryReport, check_canary
from serving.run_plan import RunPlan, plan_runs
from serving.settings import usable_cores
from triage_model.model_dir import METRICS_FILE, TOKENIZER_FILE, ModelLoadError, read_meta, resolve_model_dir
from triage_model.predictor import TriagePredictor


class OutsideModelsRoot(ModelLoadError):
    """The requested directory is not inside the configured models root (or no root is configured)."""


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def resolve_reload_target(requested: str | None, models_root: Path | None) -> Path:
    """The directory an admin asked to load, checked against the models root (relative paths are
    read under the root). Raises ``OutsideModelsRoot`` with a message that names no absolute path."""
    if models_root is None:
        raise OutsideModelsRoot(
            "loading a directory by path is off: configure TRIAGE_MODELS_ROOT (reloads of the configured model still work)"
        )
    root = Path(models_root).resolve()
    given = Path(requested or "")
    target = (given if given.is_absolute() else root / given).resolve()
    if not _inside(target, root) or target == root:
        raise OutsideModelsRoot("model_dir must name a directory inside the models root")
    return target


def check_files_inside(model_dir: Path) -> None:
    """Every file the predictor may open resolves inside ``model_dir`` (no ``../`` or symlink escape)."""
    folder = Path(model_dir).resolve()
    meta = read_meta(folder)
    names = [TOKENIZER_FILE, METRICS_FILE, "model.int8.onnx", "model.onnx", *([meta.onnx_file] if meta.onnx_file else [])]
    for name in names:
        if Path(name).is_absolute() or not _inside((folder / name).resolve(), folder):
            raise ModelLoadError(f"{name!r} resolves outside the model directory")


_ABSOLUTE_PATH = re.compile(r"(?<![\w.~>-])/(?:[^\s/:'\",)\]]+/)*[^\s/:'\",)\]]*")


def redact_paths(message: str, labels: dict[Path, str]) -> str:
    """``message`` without absolute paths: known folders become their labels, any other path ``<path>``."""
    for folder, label in sorted(labels.items(), key=lambda kv: -len(str(kv[0]))):
        for form in {str(folder), str(Path(folder).resolve())}:
            message = message.replace(form, label)
    return _ABSOLUTE_PATH.sub("<path>", message)


SPINNING = "session.intra_op.allow_spinning"


def apply_session_config(predictor: TriagePredictor, entries: dict[str, str]) -> None:
    """Re-create ``predictor``'s onnxruntime session from the same file with the same options plus the
    session config ``entries`` (0.15 s for the shipped model). ``TriagePredictor.from_pretrained`` has no
    parameter for config entries; this is the serving side's way to set them until it has one."""
    if not entries:
        return
    import onnxruntime as ort

    old = predictor.session
    path = getattr(old, "_model_path", None)
    if not path:  # an onnxruntime without the attribute: keep the session as loaded
        return
    options = old.get_session_options()
    for key, value in entries.items():
        options.add_session_config_entry(key, value)
    predictor.session = ort.InferenceSession(path, options, providers=old.get_providers())


class ModelHolder:
    def __init__(
        self,
        threads: int | None = None,
        canary_min_accuracy: float = 0.5,
        canary_min_critical_recall: float = 0.6,
        allow_spinning: bool | None = None,
        concurrent_runs: int | Literal["auto"] = 1,
        batching: bool = True,
    ) -> None:
        """``allow_spinning``: onnxruntime's intra-op threads busy-wait between parallel sections (its
        default, None) or sleep (False). ``concurrent_runs`` (a number or ``auto``) and ``threads`` (None: decided
        by the plan) become each loaded model's ``RunPlan`` (``serving.run_plan``), read by the dynamic batcher."""
        self._predictor: TriagePredictor | None = None
        self._lock = threading.Lock()
        self.threads = threads
        self.concurrent_runs = concurrent_runs
        self.batching = batching
        self.plan = RunPlan(1, threads)
        """The served model's runs and threads; swapped together with the predictor."""
        self.session_config = {} if allow_spinning is None else {SPINNING: "1" if allow_spinning else "0"}
        self.canary_min_accuracy = canary_min_accuracy
        self.canary_min_critical_recall = canary_min_critical_recall
        self.loaded_at: datetime | None = None
        self.canary: CanaryReport | None = None

    @property
    def predictor(self) -> TriagePredictor | None:
        return self._predictor

    def load(self, model_dir: Path | None) -> TriagePredictor:
        """Load, check, canary-test and swap in; on any failure the current model keeps serving."""
        with self._lock:
            folder = resolve_model_dir(model_dir)
            check_files_inside(folder)
            plan = plan_runs(read_meta(folder), self.concurrent_runs, self.threads, usable_cores(), self.batching)
            candidate = TriagePredictor.from_pretrained(folder, intra_op_threads=plan.threads)
            apply_session_config(candidate, self.session_config)
            report = check_canary(candidate, self.canary_min_accuracy, self.canary_min_critical_recall)
            self._predictor, self.plan = candidate, plan
            self.canary = report
            self.loaded_at = datetime.now(UTC)
            return candidate
