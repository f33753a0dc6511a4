"""``triage data suggest``: which unlabeled complaints to label next, and whether that beats random.

Why these signals (each a number in [0, 1], summed with the weights below):

* **Uncertainty** — per head, ``0.5 × (1 − margin) + 0.5 × normalised entropy`` of the served model's
  calibrated probabilities, averaged over the three heads: a row the model cannot separate teaches it most.
* **一级 near its threshold** — ``1 − |p(一级) − threshold| / CRITICAL_BAND`` (0 outside the band): the
  1-hour emergencies are decided by a tuned threshold, and rows near it move that decision; weighted
  highest so they come first.
* **Disagreement with the n-gram baseline** (``eval.baselines``) — share of heads whose labels differ:
  two different learners disagreeing points at ambiguous or mislabeled regions.

**Diversity**: 200 near-copies of one confusing template teach one thing. The best-scored
``POOL_FACTOR × k`` candidates are clustered (k-means on the baseline's char n-gram TF-IDF vectors,
reduced by SVD) into ``k`` clusters; each cluster gives its best-scored row, and no suggestion has a
TF-IDF cosine above ``NEAR_DUPLICATE_COSINE`` with another one (or is a text already labeled).

The output is ready for labelers: one row per suggestion with the current model labels as a pre-fill
(``category``, ``severity``, ``sentiment``, ``triggers``: a reviewer corrects rather than types; pre-fill
anchors judgement, so the GUIDELINE stays the authority), the baseline's labels, and a plain ``why``.

:func:`simulate_round` is the honest check: a small seed set of train rows plays "labeled", the dev
split "unlabeled" (the model never trained on it); the n-gram baseline (a cheap stand-in for the model, whose retraining is too
expensive for a test) is retrained on seed + the suggested ``k`` and on seed + ``k`` random rows, and
both are scored on the fixed test split.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eval.baselines import NgramBaseline
from triage_model.decision import decide
from triage_model.labeled_data import LabeledRow, load_labeled
from triage_model.normalize import normalize_text
from triage_model.predictor import TriagePredictor
from triage_model.schema import HEADS, TEXT_TRIGGERS, TRIGGER_HEAD

CRITICAL = "一级"
CRITICAL_BAND = 0.15
WEIGHTS = {"critical": 1.5, "uncertainty": 1.0, "disagreement": 1.0}
POOL_FACTOR = 5
NEAR_DUPLICATE_COSINE = 0.8
SVD_DIMS = 100
TRIGGER_PREFILL = 0.5


@dataclass
class Scores:
    """Per-row signals (arrays of length n) and the labels both learners give."""

    uncertainty: np.ndarray
    critical: np.ndarray
    disagreement: np.ndarray
    model_labels: dict[str, list[str]]
    baseline_labels: dict[str, list[str]]
    p_critical: np.ndarray

    @property
    def total(self) -> np.ndarray:
        return WEIGHTS["uncertainty"] * self.uncertainty + WEIGHTS["critical"] * self.critical + WEIGHTS["disagreement"] * self.disagreement


def head_uncertainty(probs: np.ndarray) -> np.ndarray:
    """``0.5 × (1 − top-2 margin) + 0.5 × entropy / log(k)`` per row: 0 = certain, 1 = a coin toss."""
    top = np.sort(probs, axis=1)[:, ::-1]
    margin = top[:, 0] - top[:, 1]
    p = np.clip(probs, 1e-12, 1.0)
    entropy = -(p * np.log(p)).sum(axis=1) / np.log(probs.shape[1])
    return 0.5 * (1.0 - margin) + 0.5 * entropy


def score_rows(model_probs: dict[str, np.ndarray], baseline_probs: dict[str, np.ndarray], critical_threshold: float | None) -> Scores:
    """Combine the three signals. ``model_probs`` are calibrated per head (``predict_proba``); model labels
    use the model's own 一级 threshold, as the served answer does."""
    p_crit = model_probs["severity"][:, list(HEADS["severity"]).index(CRITICAL)]
    threshold = 0.5 if critical_threshold is None else critical_threshold
    model_labels, baseline_labels = {}, {}
    for head, labels in HEADS.items():
        chosen = decide(model_probs[head], labels, {CRITICAL: critical_threshold} if head == "severity" and critical_threshold else None)
        model_labels[head] = [labels[i] for i in chosen]
        baseline_labels[head] = [labels[i] for i in baseline_probs[head].argmax(axis=1)]
    n = len(p_crit)
    disagreement = np.array([sum(model_labels[h][i] != baseline_labels[h][i] for h in HEADS) / len(HEADS) for i in range(n)])
    return Scores(
        uncertainty=np.mean([head_uncertainty(model_probs[h]) for h in HEADS], axis=0),
        critical=np.clip(1.0 - np.abs(p_crit - threshold) / CRITICAL_BAND, 0.0, 1.0),
        disagreement=disagreement,
        model_labels=model_labels,
        baseline_labels=baseline_labels,
        p_critical=p_crit,
    )


def select_diverse(scores: np.ndarray, vectors, k: int, seed: int = 0) -> list[int]:
    """Up to ``k`` row indices, best score first: one per k-means cluster of the best ``POOL_FACTOR × k``,
    topped up by score, never two with TF-IDF cosine above ``NEAR_DUPLICATE_COSINE``.

    ``vectors`` are L2-normalised sparse TF-IDF rows (cosine = dot product)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import TruncatedSVD

    order = np.argsort(-scores, kind="stable")
    top = order[: min(len(order), POOL_FACTOR * k)]
    picked: list[int] = []
    picked_vecs = None

    def far_enough(i: int) -> bool:
        if picked_vecs is None:
            return True
        return float((picked_vecs @ vectors[i].T).max()) <= NEAR_DUPLICATE_COSINE

    def take(i: int) -> None:
        nonlocal picked_vecs
        from scipy.sparse import vstack

        picked.append(int(i))
        picked_vecs = vectors[i] if picked_vecs is None else vstack([picked_vecs, vectors[i]]).tocsr()

    if len(top) > k:
        dims = max(2, min(SVD_DIMS, vectors.shape[1] - 1, len(top) - 1))
        dense = TruncatedSVD(n_components=dims, random_state=seed).fit_transform(vectors[top])
        dense /= np.linalg.norm(dense, axis=1, keepdims=True) + 1e-12
        cluster = KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(dense)
        seen: set[int] = set()
        for pos, i in enumerate(top):  # best first: each cluster's best row that is not a near-copy
            if cluster[pos] not in seen and far_enough(i):
                seen.add(int(cluster[pos]))
                take(i)
    for i in order:  # top up by score (few clusters, or many near-copies)
        if len(picked) >= k:
            break
        if int(i) not in picked and far_enough(i):
            take(i)
    picked = picked[:k]
    return sorted(picked, key=lambda i: -scores[i])


@dataclass
class Suggestions:
    rows: list[dict]
    skipped_labeled: int = 0
    skipped_bad: int = 0
    stats: dict[str, float] = field(default_factory=dict)


def _why(s: Scores, i: int, threshold: float | None) -> str:
    parts = []
    if s.critical[i] > 0:
        parts.append(f"p(一级)={s.p_critical[i]:.2f} near its threshold {threshold if threshold is not None else 0.5:.2f}")
    if s.uncertainty[i] >= 0.5:
        parts.append(f"uncertain (mean {s.uncertainty[i]:.2f})")
    differs = [f"{h}: baseline says {s.baseline_labels[h][i]}" for h in HEADS if s.model_labels[h][i] != s.baseline_labels[h][i]]
    return "; ".join(parts + differs) or "diversity pick"


def suggest(
    records: Sequence[dict],
    predictor: TriagePredictor,
    baseline: NgramBaseline,
    k: int = 200,
    labeled_texts: set[str] | None = None,
    seed: int = 0,
) -> Suggestions:
    """Rank ``records`` (dicts with ``id`` and ``text``) for labeling and return the ``k`` to label next,
    as labeler-ready rows (see the module docstring). Texts already labeled (normalised) are skipped."""
    labeled_texts = labeled_texts or set()
    out = Suggestions(rows=[])
    pool: list[dict] = []
    seen: set[str] = set()
    for rec in records:
        text = rec.get("text")
        norm = normalize_text(text) if isinstance(text, str) else ""
        if not norm or rec.get("id") in (None, ""):
            out.skipped_bad += 1
        elif norm in labeled_texts or norm in seen:
            out.skipped_labeled += 1
        else:
            seen.add(norm)
            pool.append(rec)
    if not pool:
        return out
    texts = [r["text"] for r in pool]
    model_probs = predictor.predict_proba(texts)
    threshold = predictor.meta.decision_thresholds.get("severity", {}).get(CRITICAL)
    scores = score_rows(model_probs, baseline.predict_proba(texts), threshold)
    vectors = baseline.vectorizer_.transform([normalize_text(t) for t in texts])
    chosen = select_diverse(scores.total, vectors, k, seed)
    for rank, i in enumerate(chosen, start=1):
        trigger_p = model_probs.get(TRIGGER_HEAD)
        triggers = [] if trigger_p is None else [t for t, p in zip(TEXT_TRIGGERS, trigger_p[i], strict=True) if p >= TRIGGER_PREFILL]
        out.rows.append(
            {
                "id": pool[i]["id"],
                "text": pool[i]["text"],
                "category": scores.model_labels["category"][i],
                "severity": scores.model_labels["severity"][i],
                "sentiment": scores.model_labels["sentiment"][i],
                "triggers": triggers,
                "source": f"suggest:{predictor.version}",
                "notes": "",
                "suggest": {
                    "rank": rank,
                    "score": round(float(scores.total[i]), 4),
                    "why": _why(scores, i, threshold),
                    "uncertainty": round(float(scores.uncertainty[i]), 4),
                    "critical": round(float(scores.critical[i]), 4),
                    "disagreement": round(float(scores.disagreement[i]), 4),
                    "model_scores": {h: round(float(model_probs[h][i].max()), 4) for h in HEADS},
                    "baseline": {h: scores.baseline_labels[h][i] for h in HEADS},
                },
            }
        )
    picked = np.array(chosen, dtype=int)
    out.stats = {
        "pool": len(pool),
        "mean_score_picked": round(float(scores.total[picked].mean()), 4) if len(picked) else 0.0,
        "mean_score_pool": round(float(scores.total.mean()), 4),
        "critical_band_picked": int((scores.critical[picked] > 0).sum()) if len(picked) else 0,
        "critical_band_pool": int((scores.critical > 0).sum()),
        "mean_uncertainty_picked": round(float(scores.uncertainty[picked].mean()), 4) if len(picked) else 0.0,
        "mean_uncertainty_pool": round(float(scores.uncertainty.mean()), 4),
        "disagreement_picked": round(float(scores.disagreement[picked].mean()), 4) if len(picked) else 0.0,
        "disagreement_pool": round(float(scores.disagreement.mean()), 4),
    }
    return out


# -- does it beat random? -------------------------------------------------------------------------


def _mean_f1(metrics: dict[str, dict]) -> float:
    return float(np.mean([metrics[h]["macro_f1"] for h in HEADS]))


def simulate_round(
    data_dir: Path,
    predictor: TriagePredictor,
    seed_size: int = 1000,
    c_rows: int = 600,
    k: int = 200,
    random_repeats: int = 3,
    seed: int = 0,
) -> dict[str, object]:
    """One simulated labeling round on the shipped data (see the module docstring): test-split macro-F1
    of the n-gram baseline retrained on seed + the suggested ``k`` vs seed + ``k`` random rows (several draws).

    The unlabeled pool is the **dev split**: the shipped model never trained on it (dev picked its stopping
    epoch and fitted its temperatures and 一级 threshold, a slight optimism), so its uncertainty on the
    pool is close to that of a real next round; on train rows it would be the model's memory. ``C`` is chosen on ``c_rows`` other train
    rows (not the dev pool), the test split is only scored."""
    data = load_labeled(data_dir)
    train, pool_rows, test = data.split("train"), data.split("dev"), data.split("test")
    shuffled = random.Random(seed).sample(train, len(train))
    seed_rows, c_select = shuffled[:seed_size], shuffled[seed_size : seed_size + c_rows]
    seed_model = NgramBaseline(seed=seed).fit(seed_rows, c_select)
    picked = suggest([{"id": r.id, "text": r.text} for r in pool_rows], predictor, seed_model, k, seed=seed)
    by_id = {r.id: r for r in pool_rows}
    suggested = [by_id[row["id"]] for row in picked.rows]
    # ablation: the learner's own uncertainty (what classic uncertainty sampling would use), same diversity step
    texts = [r.text for r in pool_rows]
    own = seed_model.predict_proba(texts)
    vectors = seed_model.vectorizer_.transform([normalize_text(t) for t in texts])
    own_pick = [pool_rows[i] for i in select_diverse(score_rows(own, own, None).total, vectors, k, seed)]

    def retrained(extra: list[LabeledRow]) -> dict[str, object]:
        metrics = NgramBaseline(seed=seed).fit(seed_rows + extra, c_select).evaluate(test)
        return {
            "mean_macro_f1": round(_mean_f1(metrics), 4),
            **{f"{h}_macro_f1": round(metrics[h]["macro_f1"], 4) for h in HEADS},
            "critical_recall": round(metrics["severity"]["per_class"][CRITICAL]["recall"], 4),
            "critical_share_added": round(sum(r.severity == CRITICAL for r in extra) / max(1, len(extra)), 3),
        }

    randoms = [retrained(random.Random(seed + 1 + j).sample(pool_rows, k)) for j in range(random_repeats)]
    active = retrained(suggested)
    learner_own = retrained(own_pick)
    random_means = [float(r["mean_macro_f1"]) for r in randoms]
    return {
        "seed_rows": len(seed_rows),
        "pool_rows": len(pool_rows),
        "k": k,
        "test_rows": len(test),
        "seed_only": round(_mean_f1(seed_model.evaluate(test)), 4),
        "suggested": active,
        "learner_own_uncertainty": learner_own,
        "random": randoms,
        "random_mean": round(float(np.mean(random_means)), 4),
        "random_max": round(float(np.max(random_means)), 4),
        "beats_random_mean": float(active["mean_macro_f1"]) > float(np.mean(random_means)),
        "beats_every_random_draw": float(active["mean_macro_f1"]) > float(np.max(random_means)),
        "suggest_stats": picked.stats,
        "learner": "char 1-3-gram TF-IDF + logistic regression (stand-in for the model)",
    }


def suggest_file(
    input_path: Path, output_path: Path, k: int = 200, model_dir: Path | None = None, data_dir: Path = Path("labeled_data"), seed: int = 0
) -> Suggestions:
    """``triage data suggest``: read the unlabeled file (JSONL/CSV, ``id`` + ``text``), fit the n-gram
    baseline on ``data_dir``'s train split, write the ``k`` suggestions to ``output_path`` (JSONL, or CSV
    with dotted columns). Raises ``ValueError`` for an unsupported file type or no usable rows."""
    from eval.baselines import fit_baseline
    from triage_model.io import file_format, read_records, write_records

    file_format(input_path)
    file_format(output_path)
    records = [rec for _, rec, error in read_records(input_path) if rec is not None and error is None]
    data = load_labeled(data_dir)
    labeled = {normalize_text(r.text) for r in data.rows}
    result = suggest(records, TriagePredictor.from_pretrained(model_dir), fit_baseline(data_dir, seed), k, labeled, seed)
    if not result.rows:
        raise ValueError(f"{input_path}: no unlabeled rows to suggest ({result.skipped_labeled} already labeled, {result.skipped_bad} bad)")
    write_records(output_path, result.rows)
    return result
