"""``TriagePredictor``: the serving-side model — onnxruntime + tokenizers, never torch.

Data flows one way: raw text → ``normalize_text`` → head+tail cut → tokenize → ONNX (three softmax
heads + the multi-label trigger head) → temperature-calibrated softmax / sigmoid → ``TriageResult``.
Micro-batches are sorted by length so a batch of mixed lengths pads as little as possible; results
come back in input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from triage_model.decision import decide, sigmoid, softmax
from triage_model.model_dir import (
    INPUT_NAMES,
    META_FILE,
    ONNX_FP32_FILE,
    ONNX_INT8_FILE,
    OUTPUT_NAMES,
    OUTPUT_NAMES_WITH_TRIGGERS,
    TOKENIZER_FILE,
    TRIGGER_OUTPUT,
    ModelLoadError,
    ModelMeta,
    read_meta,
    read_metrics,
    resolve_model_dir,
)
from triage_model.ngram import NGRAM_FILE, CharNgramScorer, blend
from triage_model.normalize import normalize_text, truncate_head_tail
from triage_model.results import LabelScore, SentimentScore, TriageResult
from triage_model.schema import HEADS, NEGATIVE_EMOTION_WEIGHTS, TEXT_TRIGGERS, TRIGGER_HEAD
from triage_model.tokenization import encode_texts_with_cuts, load_tokenizer, pad_batch
from triage_model.trigger_fusion import TriggerSignal, support_level

MAX_TEXT_CHARS = 4000
"""Characters kept after normalisation before tokenizing (a bound on tokenizer work); the model itself reads
at most ``max_length`` tokens (head + tail, see ``tokenization.encode_texts``). Either cut sets ``truncated``."""


@dataclass(frozen=True)
class Prepared:
    """A text after normalisation and cutting, ready to tokenize."""

    text: str
    truncated: bool


class TriagePredictor:
    """Load with ``from_pretrained(dir)``; call ``predict(texts)``. Thread-safe for concurrent ``predict``."""

    def __init__(self, model_dir: Path, meta: ModelMeta, session, tokenizer, metrics: dict, ngram: CharNgramScorer | None = None) -> None:
        self.model_dir = model_dir
        self.ngram = ngram
        """The blended character n-gram scorer (``meta.ngram_weights``), or None: the encoder alone."""
        self.meta = meta
        self.session = session
        self.tokenizer = tokenizer
        self.metrics = metrics
        self.output_names = [o.name for o in session.get_outputs()]  # checked in from_pretrained
        self.has_trigger_head = TRIGGER_OUTPUT in self.output_names
        self.widths = {h: len(labels) for h, labels in HEADS.items()}
        """Probability columns per output, in ``output_names`` order."""
        if self.has_trigger_head:
            self.widths[TRIGGER_HEAD] = len(TEXT_TRIGGERS)
        self.emotion_weights = np.array([NEGATIVE_EMOTION_WEIGHTS[s] for s in HEADS["sentiment"]])

    @property
    def version(self) -> str:
        return self.meta.model_version

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path | None = None,
        onnx_file: str | None = None,
        intra_op_threads: int | None = None,
    ) -> TriagePredictor:
        """Load an exported model directory (default: the model shipped in this package).

        Raises ``ModelLoadError`` naming the file and the reason for any missing, corrupt or
        schema-incompatible part, so a bad directory never half-loads.
        """
        import onnxruntime as ort

        model_dir = resolve_model_dir(model_dir)
        meta = read_meta(model_dir)
        candidates = [onnx_file] if onnx_file else [meta.onnx_file, ONNX_INT8_FILE, ONNX_FP32_FILE]
        onnx_path = next((model_dir / c for c in candidates if c and (model_dir / c).exists()), None)
        if onnx_path is None:
            raise ModelLoadError(f"{model_dir}: no ONNX weights (looked for {[c for c in candidates if c]})")
        tok_path = model_dir / TOKENIZER_FILE
        try:
            tokenizer = load_tokenizer(tok_path)
        except Exception as err:  # tokenizers raises plain Exception subclasses
            raise ModelLoadError(f"{tok_path}: unreadable tokenizer: {err}") from err
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelLoadError(f"{onnx_path}: onnxruntime cannot load it: {err}") from err
        outputs = [o.name for o in session.get_outputs()]
        if outputs not in (OUTPUT_NAMES, OUTPUT_NAMES_WITH_TRIGGERS):
            raise ModelLoadError(f"{onnx_path}: outputs {outputs} != expected {OUTPUT_NAMES} (+ optional {TRIGGER_OUTPUT})")
        ngram = None
        if meta.ngram_weights:
            if not (model_dir / NGRAM_FILE).exists():
                raise ModelLoadError(f"{model_dir}: {META_FILE} blends an n-gram scorer but {NGRAM_FILE} is missing")
            ngram = CharNgramScorer.load(model_dir / NGRAM_FILE)
        predictor = cls(model_dir, meta, session, tokenizer, read_metrics(model_dir), ngram)
        predictor._check_output_shapes()
        return predictor

    def _check_output_shapes(self) -> None:
        probs = self._run(["测试"])
        for head, k in self.widths.items():
            if probs[head].shape != (1, k):
                raise ModelLoadError(f"{self.model_dir}: {head} head gives {probs[head].shape[1]} logits, schema has {k}")

    @staticmethod
    def prepare(text: str) -> Prepared:
        cut, truncated = truncate_head_tail(normalize_text(text), MAX_TEXT_CHARS)
        return Prepared(cut, truncated)

    def _run(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        return self._calibrated(self._logits_with_cuts(texts)[0])

    def _logits_with_cuts(self, texts: Sequence[str]) -> tuple[dict[str, np.ndarray], list[bool]]:
        """Raw logits per output name (HEADS, then the trigger head) of one batch of normalised texts."""
        ids, cut = encode_texts_with_cuts(self.tokenizer, texts, self.meta.max_length)
        input_ids, mask = pad_batch(ids, self.meta.pad_id)
        feeds = {INPUT_NAMES[0]: np.asarray(input_ids, dtype=np.int64), INPUT_NAMES[1]: np.asarray(mask, dtype=np.int64)}
        outputs = self.session.run(self.output_names, feeds)
        return dict(zip(self.widths, outputs, strict=True)), cut

    def _calibrated(self, logits: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Temperature-scaled softmax per head; sigmoid for the multi-label trigger head."""
        probs = {h: softmax(logits[h], self.meta.temperatures.get(h, 1.0)) for h in HEADS}
        if self.has_trigger_head:
            probs[TRIGGER_HEAD] = sigmoid(logits[TRIGGER_HEAD])
        return probs

    def _logits_prepared(self, texts: Sequence[str], batch_size: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Raw logits and token-cut flags for normalised texts, batched by length, in input order."""
        n = len(texts)
        out = {h: np.zeros((n, k), dtype=np.float32) for h, k in self.widths.items()}
        cut = np.zeros(n, dtype=bool)
        order = sorted(range(n), key=lambda i: len(texts[i]))
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            logits, flags = self._logits_with_cuts([texts[i] for i in idx])
            for h in self.widths:
                out[h][idx] = logits[h]
            cut[idx] = flags
        return out, cut

    def _proba_prepared(self, texts: Sequence[str], batch_size: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Served probabilities: the calibrated encoder, blended with the n-gram scorer where the model has one."""
        logits, cut = self._logits_prepared(texts, batch_size)
        probs = self._calibrated(logits)
        if self.ngram is not None:
            probs = blend(probs, self.ngram.predict_proba(texts), self.meta.ngram_weights, self.meta.ngram_temperatures)
        return probs, cut

    def encoder_proba(self, texts: Sequence[str], batch_size: int = 32) -> dict[str, np.ndarray]:
        """Calibrated probabilities of the encoder alone (no n-gram blend): what ``triage blend`` mixes."""
        self._check_texts(texts)
        return self._calibrated(self._logits_prepared([self.prepare(t).text for t in texts], batch_size)[0])

    def logits(self, texts: Sequence[str], batch_size: int = 32) -> dict[str, np.ndarray]:
        """Raw, uncalibrated logits per output for raw texts, in input order: what a distilled student
        learns from, and what an ensemble averages (before any temperature)."""
        self._check_texts(texts)
        return self._logits_prepared([self.prepare(t).text for t in texts], batch_size)[0]

    @staticmethod
    def _check_texts(texts: Sequence[str]) -> None:
        if isinstance(texts, str):
            raise TypeError("takes a list of texts; wrap a single text in a list")

    def predict_proba(self, texts: Sequence[str], batch_size: int = 32) -> dict[str, np.ndarray]:
        """Calibrated probabilities per head for raw texts (the same input as ``predict``), in input order."""
        self._check_texts(texts)
        return self._proba_prepared([self.prepare(t).text for t in texts], batch_size)[0]

    def predict(self, texts: Sequence[str], batch_size: int = 32) -> list[TriageResult]:
        """Predict every head for each raw text. Empty texts are the caller's to reject.

        ``truncated`` is true when the model did not read the whole text: over ``max_length`` tokens (it
        reads the head and the tail) or over ``MAX_TEXT_CHARS`` characters after normalisation."""
        self._check_texts(texts)
        prepared = [self.prepare(t) for t in texts]
        probs, cut = self._proba_prepared([p.text for p in prepared], batch_size)
        return [self._result(probs, i, p.truncated or bool(cut[i])) for i, p in enumerate(prepared)]

    def _label(self, head: str, p: np.ndarray) -> dict[str, object]:
        labels = HEADS[head]
        chosen = int(decide(p[None, :], labels, self.meta.decision_thresholds.get(head))[0])
        runner_up = next(int(i) for i in np.argsort(-p) if i != chosen)
        return {"label": labels[chosen], "score": round(float(p[chosen]), 4), "runner_up": labels[runner_up]}

    def _result(self, probs: dict[str, np.ndarray], i: int, truncated: bool) -> TriageResult:
        sentiment = probs["sentiment"][i]
        emotion = float(np.clip(100.0 * float(sentiment @ self.emotion_weights), 0.0, 100.0))
        return TriageResult(
            category=LabelScore(**self._label("category", probs["category"][i])),
            severity=LabelScore(**self._label("severity", probs["severity"][i])),
            sentiment=SentimentScore(**self._label("sentiment", sentiment), emotion_index=round(emotion, 1)),
            model_version=self.version,
            truncated=truncated,
            text_triggers=self._trigger_signals(probs[TRIGGER_HEAD][i]) if self.has_trigger_head else None,
        )

    def _trigger_signals(self, p: np.ndarray) -> dict[str, TriggerSignal]:
        fitted = self.meta.trigger_thresholds
        return {
            name: TriggerSignal(score=round(float(p[j]), 4), support=support_level(float(p[j]), fitted.get(name)))
            for j, name in enumerate(TEXT_TRIGGERS)
        }
