"""Encoder + character n-gram ensembles: the served blend (``triage blend``) and the ensemble teacher's
distillation targets (``triage distill-targets``).

Why: the fine-tuned encoder and the character n-gram model make different mistakes (one reads meaning,
the other exact wording), so their averaged probabilities beat either alone on dev (measured on the v1
data: category 0.723 / 0.739 → 0.765 macro-F1, severity 0.819 / 0.807 → 0.856). Serving such an
ensemble would need scikit-learn at request time; instead a small student learns from its soft labels
(``triage distill --targets``) and serves alone.

Targets are stored as *log-probabilities* per head (the student reads them like logits: softmax of
them at temperature 1 gives back the ensemble's distribution) plus the teachers' trigger-head logits
(the n-gram baseline has no trigger head).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from eval.baselines import NgramBaseline
from triage_model.calibration import fit_temperature
from triage_model.decision import decide, fit_fbeta_threshold, fit_paired_recall_threshold, fit_recall_threshold, recall_at, softmax
from triage_model.distill_targets import logits_with_progress
from triage_model.labeled_data import gold_ids, load_labeled
from triage_model.metrics import head_metrics
from triage_model.model_dir import CARD_FILE, METRICS_FILE, read_metrics, write_meta
from triage_model.ngram import NGRAM_FILE, CharNgramScorer, NgramHead, blend, write_ngram_scorer
from triage_model.predictor import TriagePredictor
from triage_model.schema import CRITICAL_SEVERITY, HEADS, TRIGGER_HEAD


def ensemble_targets(
    predictors: Sequence[TriagePredictor],
    texts: Sequence[str],
    baseline: NgramBaseline | None = None,
    baseline_weight: float = 0.4,
    batch_size: int = 32,
) -> dict[str, np.ndarray]:
    """Per head ``log(mean probability)`` of the models (calibrated) mixed with the baseline at
    ``baseline_weight``; the trigger head's averaged logits."""
    probs = {h: np.zeros((len(texts), len(labels)), dtype=np.float64) for h, labels in HEADS.items()}
    triggers = None
    for predictor in predictors:
        logits = logits_with_progress(predictor, texts, batch_size)
        for h in HEADS:
            probs[h] += softmax(logits[h], predictor.meta.temperatures.get(h, 1.0)) / len(predictors)
        if TRIGGER_HEAD in logits:
            triggers = (0 if triggers is None else triggers) + logits[TRIGGER_HEAD] / len(predictors)
    if baseline is not None:
        extra = baseline.predict_proba(texts)
        for h in HEADS:
            probs[h] = (1 - baseline_weight) * probs[h] + baseline_weight * extra[h]
    out = {h: np.log(np.clip(p, 1e-6, 1.0)).astype(np.float32) for h, p in probs.items()}
    if triggers is None:
        raise ValueError("no teacher has the trigger head")
    out[TRIGGER_HEAD] = triggers.astype(np.float32)
    return out


BLEND_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(17))
"""n-gram weights tried per head (0 … 0.8): 0 keeps the encoder alone when the n-gram adds nothing on dev."""


def export_ngram(baseline: NgramBaseline, path: Path) -> None:
    """Write a fitted baseline's arrays as the model directory's ``ngram.npz`` (no pickles)."""
    vec = baseline.vectorizer_
    heads = {head: NgramHead(clf.coef_, clf.intercept_, clf.classes_) for head, clf in baseline.classifiers_.items()}
    write_ngram_scorer(path, vec.vocabulary_, vec.idf_, vec.ngram_range, heads)


def _critical_threshold(probs: np.ndarray, gold: np.ndarray, beta: float | None) -> dict[str, float]:
    if beta is None:
        return {}
    return {CRITICAL_SEVERITY: fit_fbeta_threshold(probs, gold, HEADS["severity"].index(CRITICAL_SEVERITY), beta)}


def choose_blend(
    encoder: dict[str, np.ndarray], ngram: dict[str, np.ndarray], gold: dict[str, np.ndarray], beta: float | None
) -> tuple[dict[str, float], dict[str, float], dict[str, dict[str, float]], dict[str, list[dict[str, float]]]]:
    """Per head the dev-best n-gram weight (ties go to the smaller weight), the temperature that re-calibrates
    that mixture, the 一级 threshold refitted on the calibrated blend, and the whole curve (weight → dev
    macro-F1) for the model card."""
    weights: dict[str, float] = {}
    temperatures: dict[str, float] = {}
    thresholds: dict[str, dict[str, float]] = {}
    curves: dict[str, list[dict[str, float]]] = {}
    for head, labels in HEADS.items():
        best = None
        curves[head] = []
        for w in BLEND_GRID:
            mix = (1 - w) * encoder[head] + w * ngram[head]
            t = fit_temperature(np.log(np.clip(mix, 1e-12, None)), gold[head])
            probs = blend({head: encoder[head]}, {head: ngram[head]}, {head: w}, {head: t})[head]
            th = _critical_threshold(probs, gold[head], beta) if head == "severity" else {}
            f1 = head_metrics(probs, gold[head], labels, th)["macro_f1"]
            curves[head].append({"weight": w, "dev_macro_f1": round(f1, 4)})
            if best is None or f1 > best[0] + 1e-3:
                best = (f1, w, t, th)
        _, weights[head], temperatures[head], th = best
        if th:
            thresholds[head] = th
    return weights, temperatures, thresholds, curves


def match_critical_recall(
    probs: np.ndarray,
    gold: np.ndarray,
    texts: Sequence[str],
    reference_dir: Path,
    fitted: float | None,
    confidence: float | None = None,
) -> dict[str, object]:
    """Lower the 一级 threshold until the model's dev recall reaches ``reference_dir``'s (as served, same rows).

    For a student that replaces its teacher: the selection rule says it may not miss more 一级 complaints,
    so its operating point is set on dev to the teacher's recall. The threshold is only ever lowered from
    the F2 fit (``fitted``), never raised: matching cannot cost recall the F2 rule already bought.
    With ``confidence`` (e.g. 0.9) the match must hold in that share of paired bootstrap resamples of the
    dev rows (``fit_paired_recall_threshold``), not only on the rows as drawn.
    """
    idx = HEADS["severity"].index(CRITICAL_SEVERITY)
    reference = TriagePredictor.from_pretrained(reference_dir)
    ref_probs = reference.predict_proba(list(texts))["severity"]
    ref_threshold = reference.meta.decision_thresholds.get("severity", {}).get(CRITICAL_SEVERITY, 1.0)
    ref_recall, ref_precision = recall_at(ref_probs, gold, idx, ref_threshold)
    share = None
    if confidence is None:
        matched = fit_recall_threshold(probs, gold, idx, ref_recall)
    else:
        ref_flagged = decide(ref_probs, HEADS["severity"], {CRITICAL_SEVERITY: ref_threshold}) == idx
        matched, share = fit_paired_recall_threshold(probs, gold, idx, ref_flagged, confidence)
    threshold = matched if fitted is None else min(fitted, matched)
    recall, precision = recall_at(probs, gold, idx, threshold)
    return {
        "reference": reference.version,
        "reference_dev_recall": round(ref_recall, 4),
        "reference_dev_precision": round(ref_precision, 4),
        "f2_threshold": fitted,
        "threshold": threshold,
        "dev_recall": round(recall, 4),
        "dev_precision": round(precision, 4),
        **({"confidence": confidence, "bootstrap_share_not_below": round(share, 4)} if confidence is not None else {}),
    }


BLEND_SECTION = "## Blended character n-gram scorer"


def write_blend_card_section(model_dir: Path, summary: dict) -> None:
    """Replace (or add) the card's blend section: weights, temperatures and the dev figures of each part."""
    dev = summary["dev"]
    rows = ["| head | n-gram weight | temperature | encoder alone | n-gram alone | blend (served) |", "|---|---|---|---|---|---|"]
    for head in HEADS:
        rows.append(
            f"| {head} | {summary['weights'][head]:.2f} | {summary['temperatures'][head]:.3f} | "
            + " | ".join(f"{dev[part][head]['macro_f1']:.3f} (ECE {dev[part][head]['ece']:.3f})" for part in ("encoder", "ngram", "blend"))
            + " |"
        )
    section = (
        f"{BLEND_SECTION}\n\n"
        "What is served is the encoder's calibrated probabilities mixed per head with a character 1–3-gram TF-IDF + "
        "logistic-regression scorer (`ngram.npz`, trained on the train split; numpy at serving time), then "
        "re-calibrated by one temperature per head. Weight, temperature and the 一级 threshold were chosen on the "
        f"{summary['dev_n']} dev rows (`triage blend`); macro-F1 on dev:\n\n" + "\n".join(rows) + "\n"
    )
    matched = summary.get("critical_recall_match")
    if matched:
        section += (
            f"\nThe 一级 threshold was matched to `{matched['reference']}` (`--match-recall-of`): its dev recall "
            f"{matched['reference_dev_recall']:.3f} (precision {matched['reference_dev_precision']:.3f}) is reached here at "
            f"threshold {matched['threshold']:.2f} (F2 fit: {matched['f2_threshold']}), dev recall {matched['dev_recall']:.3f}, "
            f"precision {matched['dev_precision']:.3f}.\n"
        )
    card_path = Path(model_dir) / CARD_FILE
    card = card_path.read_text(encoding="utf-8") if card_path.exists() else ""
    if BLEND_SECTION in card:
        head, _, rest = card.partition(BLEND_SECTION)
        _, nxt, tail = rest.partition("\n## ")
        card = head.rstrip() + "\n\n" + section + (("\n## " + tail) if nxt else "")
    else:
        card = card.rstrip() + "\n\n" + section
    card_path.write_text(card, encoding="utf-8")


def blend_model_dir(
    model_dir: Path, data_dir: Path, seed: int = 0, match_recall_of: Path | None = None, recall_confidence: float | None = None
) -> dict[str, object]:
    """Fit the n-gram scorer on ``data_dir``'s train split, pick per-head weights and the 一级 threshold on its
    dev split, and write ``ngram.npz`` + the weights into the exported model directory in place.

    Returns the dev figures (encoder alone, n-gram alone, blended) that ``metrics.json`` and the card record.
    The test split is not read here: ``triage evaluate`` measures the blended model as served.
    ``match_recall_of`` (a student's teacher): lower the 一级 threshold to that model's dev recall
    (``match_critical_recall``), with ``recall_confidence`` in paired bootstrap resamples of dev when given.
    """
    model_dir = Path(model_dir)
    data = load_labeled(data_dir).require_valid()
    train, dev = data.split("train"), data.split("dev")
    baseline = NgramBaseline(seed=seed).fit(train, dev)
    export_ngram(baseline, model_dir / NGRAM_FILE)
    scorer = CharNgramScorer.load(model_dir / NGRAM_FILE)
    predictor = TriagePredictor.from_pretrained(model_dir)
    texts = [r.text for r in dev]
    encoder = predictor.encoder_proba(texts)
    ngram = scorer.predict_proba([predictor.prepare(t).text for t in texts])
    gold = gold_ids(dev)
    meta = predictor.meta
    beta = meta.train_config.get("critical_threshold_beta", 2.0)
    weights, temperatures, thresholds, curves = choose_blend(encoder, ngram, gold, beta)
    blended = blend(encoder, ngram, weights, temperatures)
    matched = None
    if match_recall_of is not None:
        fitted = thresholds.get("severity", {}).get(CRITICAL_SEVERITY)
        matched = match_critical_recall(blended["severity"], gold["severity"], texts, Path(match_recall_of), fitted, recall_confidence)
        thresholds["severity"] = {**thresholds.get("severity", {}), CRITICAL_SEVERITY: matched["threshold"]}

    def dev_figures(probs: dict[str, np.ndarray], th: dict) -> dict[str, dict[str, float]]:
        out = {}
        for h in HEADS:
            m = head_metrics(probs[h], gold[h], HEADS[h], th.get(h))
            out[h] = {"macro_f1": round(m["macro_f1"], 4), "accuracy": round(m["accuracy"], 4), "ece": round(m["ece"], 4)}
        return out

    summary = {
        "ngram": "char 1-3-gram TF-IDF + logistic regression (ngram.npz), trained on the train split",
        "chosen_c": dict(baseline.chosen_c_),
        "weights": weights,
        "temperatures": temperatures,
        "dev_n": len(dev),
        "dev": {
            "encoder": dev_figures(encoder, meta.decision_thresholds),
            "ngram": dev_figures(ngram, {}),
            "blend": dev_figures(blended, thresholds),
        },
        "curves": curves,
        **({"critical_recall_match": matched} if matched else {}),
    }
    meta.ngram_weights = weights
    meta.ngram_temperatures = temperatures
    meta.decision_thresholds = {**meta.decision_thresholds, **thresholds}
    write_meta(model_dir, meta)
    write_blend_card_section(model_dir, summary)
    metrics = read_metrics(model_dir)
    metrics["blend"] = summary
    (model_dir / METRICS_FILE).write_text(json.dumps(metrics, ensure_ascii=False, indent=2), encoding="utf-8")
    return summary
