"""A character n-gram scorer that ships inside a model directory (``ngram.npz``) and runs on numpy alone.

Why it exists: the fine-tuned encoder and a character 1–3-gram TF-IDF + logistic regression make
different mistakes (one reads meaning, the other exact wording — brand names, 12315, "漏液"), and on
dev their averaged probabilities beat either alone by 3–5 points of macro-F1 per head (see the
MODEL_CARD). ``triage blend`` fits the n-gram side on the train split (scikit-learn, at build time)
and writes its learned arrays here; serving then needs neither scikit-learn nor pickles, only the
arrays: vocabulary, idf, and per head the weight matrix and intercepts.

``CharNgramScorer`` reproduces scikit-learn's ``TfidfVectorizer(analyzer="char", lowercase=True,
sublinear_tf=True, norm="l2")`` followed by a multinomial ``LogisticRegression.predict_proba`` exactly
(``tests/test_ngram.py`` checks it against scikit-learn to 1e-5). The cost, measured on 500 test-split
texts (median ~50 characters, AMD EPYC): ~0.3 ms per complaint, almost all of it building the n-gram
counts in Python — a tenth of what the 4-layer student's encoder spends, a fortieth of the teacher's.

The vocabulary is held as one sorted numpy string array (:class:`SortedVocabulary`), not a Python dict:
a dict of 200,000 n-gram strings took ~44 MB of every server process (the default 12-layer teacher's
server crossed the 500 MB RSS target by 5 MB), the array takes ~3 MB and looks a text's n-grams up in
one vectorised ``searchsorted``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from triage_model.decision import softmax
from triage_model.model_dir import ModelLoadError
from triage_model.schema import HEADS

NGRAM_FILE = "ngram.npz"
_WHITE_SPACES = re.compile(r"\s\s+")
"""scikit-learn's ``_white_spaces``: runs of two or more whitespace characters become one space."""


def char_ngrams(text: str, ngram_range: tuple[int, int]) -> list[str]:
    """scikit-learn's ``_char_ngrams`` after its default preprocessing (lowercase)."""
    text = _WHITE_SPACES.sub(" ", text.lower())
    min_n, max_n = ngram_range
    grams: list[str] = []
    if min_n == 1:
        grams.extend(text)
        min_n = 2
    for n in range(min_n, min(max_n + 1, len(text) + 1)):
        grams.extend(text[i : i + n] for i in range(len(text) - n + 1))
    return grams


class SortedVocabulary(Mapping[str, int]):
    """n-gram → feature index, read-only, in ~15 bytes per entry: the n-grams as one sorted fixed-width
    numpy string array beside each one's feature index. :meth:`lookup` maps a whole text's n-grams at once."""

    def __init__(self, terms_in_feature_order: Sequence[str] | np.ndarray) -> None:
        terms = np.asarray(terms_in_feature_order, dtype=str)
        if terms.ndim != 1:
            raise ValueError("the vocabulary must be a 1-D array of n-grams")
        order = np.argsort(terms, kind="stable")
        self._terms = terms[order]
        if len(self._terms) > 1 and bool((self._terms[1:] == self._terms[:-1]).any()):
            raise ValueError("the vocabulary repeats an n-gram")
        self._ids = order.astype(np.int32)
        self._width = max(1, self._terms.dtype.itemsize // 4)  # characters per fixed-width entry

    def lookup(self, grams: Sequence[str]) -> np.ndarray:
        """Feature index of each of ``grams``, -1 where it is not in the vocabulary."""
        if not len(self._terms) or not grams:
            return np.full(len(grams), -1, dtype=np.int64)
        # the query shares the terms' fixed width (no copy of the terms per call); numpy truncates longer
        # strings and pads with NUL, so a gram longer than any term, or holding a NUL, is ruled out by hand
        width = self._width
        query = np.asarray(grams, dtype=self._terms.dtype)
        pos = np.minimum(np.searchsorted(self._terms, query), len(self._terms) - 1)
        fits = np.fromiter((len(g) <= width and "\0" not in g for g in grams), dtype=bool, count=len(grams))
        found = (self._terms[pos] == query) & fits
        return np.where(found, self._ids[pos], -1).astype(np.int64)

    def __getitem__(self, gram: str) -> int:
        index = int(self.lookup([gram])[0])
        if index < 0:
            raise KeyError(gram)
        return index

    def __contains__(self, gram: object) -> bool:
        return isinstance(gram, str) and int(self.lookup([gram])[0]) >= 0

    def __iter__(self) -> Iterator[str]:
        return iter(self._terms[np.argsort(self._ids)].tolist())  # feature order, as written

    def __len__(self) -> int:
        return len(self._terms)


@dataclass(frozen=True)
class NgramHead:
    """One head's multinomial logistic regression; ``classes`` are schema label ids the regression saw."""

    coef: np.ndarray  # [k_seen, n_features]
    intercept: np.ndarray  # [k_seen]
    classes: np.ndarray  # [k_seen] int, indices into HEADS[head]


@dataclass(frozen=True)
class CharNgramScorer:
    """``predict_proba(texts)`` per head over the full schema label set (unseen classes get 0)."""

    vocabulary: SortedVocabulary
    idf: np.ndarray
    ngram_range: tuple[int, int]
    heads: Mapping[str, NgramHead]

    def features(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Indices and l2-normalised sublinear TF-IDF values of the text's in-vocabulary n-grams."""
        found = self.vocabulary.lookup(char_ngrams(text, self.ngram_range))
        idx, tf = np.unique(found[found >= 0], return_counts=True)
        if not len(idx):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        values = (np.log(tf.astype(np.float64)) + 1.0) * self.idf[idx]
        return idx, (values / np.linalg.norm(values)).astype(np.float32)

    def predict_proba(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        feats = [self.features(t) for t in texts]
        out: dict[str, np.ndarray] = {}
        for head, model in self.heads.items():
            scores = np.stack([model.coef[:, idx] @ val for idx, val in feats]) if feats else np.zeros((0, len(model.classes)))
            scores = scores + model.intercept
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
            probs = np.zeros((len(texts), len(HEADS[head])), dtype=np.float32)
            probs[:, model.classes] = scores / scores.sum(axis=1, keepdims=True)
            out[head] = probs
        return out

    @classmethod
    def load(cls, path: Path) -> CharNgramScorer:
        """Read ``ngram.npz``; any missing, corrupt or schema-incompatible part raises ``ModelLoadError``."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError) as err:
            raise ModelLoadError(f"{path}: unreadable n-gram scorer: {err}") from err
        try:
            vocab = SortedVocabulary(arrays["vocabulary"])
        except KeyError as err:
            raise ModelLoadError(f"{path}: n-gram scorer lacks {err}") from err
        except ValueError as err:
            raise ModelLoadError(f"{path}: unusable n-gram vocabulary: {err}") from err
        try:
            idf = arrays["idf"].astype(np.float64)
            heads = {}
            for head, labels in HEADS.items():
                names = [str(x) for x in arrays[f"{head}__labels"]]
                if names != list(labels):
                    raise ModelLoadError(f"{path}: {head} labels {names} != schema {list(labels)}")
                coef = arrays[f"{head}__coef"].astype(np.float32)
                if coef.shape[1] != len(vocab):
                    raise ModelLoadError(f"{path}: {head} weights have {coef.shape[1]} features, vocabulary {len(vocab)}")
                heads[head] = NgramHead(coef, arrays[f"{head}__intercept"].astype(np.float32), arrays[f"{head}__classes"].astype(np.int64))
            lo, hi = (int(x) for x in arrays["ngram_range"])
        except KeyError as err:
            raise ModelLoadError(f"{path}: n-gram scorer lacks {err}") from err
        if len(idf) != len(vocab):
            raise ModelLoadError(f"{path}: idf has {len(idf)} entries, vocabulary {len(vocab)}")
        return cls(vocab, idf, (lo, hi), heads)


def write_ngram_scorer(
    path: Path, vocabulary: Mapping[str, int], idf: np.ndarray, ngram_range: tuple[int, int], heads: Mapping[str, NgramHead]
) -> None:
    """Write the arrays ``CharNgramScorer.load`` reads (weights as float32, compressed)."""
    ordered = sorted(vocabulary, key=vocabulary.__getitem__)
    arrays: dict[str, np.ndarray] = {
        "vocabulary": np.array(ordered, dtype=str),
        "idf": np.asarray(idf, dtype=np.float32),
        "ngram_range": np.array(ngram_range, dtype=np.int64),
    }
    for head, model in heads.items():
        arrays[f"{head}__labels"] = np.array(HEADS[head], dtype=str)
        arrays[f"{head}__coef"] = np.asarray(model.coef, dtype=np.float32)
        arrays[f"{head}__intercept"] = np.asarray(model.intercept, dtype=np.float32)
        arrays[f"{head}__classes"] = np.asarray(model.classes, dtype=np.int64)
    np.savez_compressed(path, **arrays)


def blend(
    encoder_probs: Mapping[str, np.ndarray],
    ngram_probs: Mapping[str, np.ndarray],
    weights: Mapping[str, float],
    temperatures: Mapping[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """Per head ``(1 − w) · encoder + w · n-gram``, then re-calibrated: ``softmax(log(mix) / T)``.

    Why the temperature: the n-gram regression is under-confident (dev ECE 0.13 on category), so the plain
    mixture is too; one temperature per head, fitted on dev, restores calibrated scores without moving any
    argmax. Heads without a weight (the trigger head) pass through unchanged."""
    out = dict(encoder_probs)
    for head, w in weights.items():
        mix = (1.0 - w) * encoder_probs[head] + w * ngram_probs[head]
        t = (temperatures or {}).get(head, 1.0)
        if t != 1.0:
            mix = softmax(np.log(np.clip(mix, 1e-12, None)), t)
        out[head] = mix.astype(np.float32)
    return out
