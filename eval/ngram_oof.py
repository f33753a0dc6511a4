"""Out-of-fold n-gram probabilities for distillation texts: what the served n-gram scorer would say about a text
it has never seen, for blend-aware distilling (``training.distill``, ``blend_aware_file``).

Why out of fold: the served n-gram scorer is fitted on the train split, so on a train row (and on the cuts and
crops made from it) it is nearly always right — it has memorised the row. A student trained to complement it
would then learn that the n-gram never errs. Each train row is given a fold (a stable hash of its id); a text made
from rows of one fold is scored by an n-gram fitted on the other folds, a text from no train row (an unlabeled
review) by the n-gram fitted on all of them, like the served one. A text joined from rows of two folds has no
honest score and is marked unavailable (it trains as plain distillation).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from eval.baselines import C_GRID, NgramBaseline
from triage_model.labeled_data import LabeledRow
from triage_model.schema import HEADS

UNLABELED = -1
"""The fold of a text made from no train row: scored by the n-gram fitted on every train row."""
MIXED = -2
"""The fold of a text made from rows of different folds: no honest score."""


def fold_of(row_id: str, folds: int) -> int:
    """A train row's fold: a stable hash of its id, so adding rows never moves the old ones."""
    return int(hashlib.sha256(row_id.encode("utf-8")).hexdigest()[:8], 16) % folds


def text_fold(row_ids: Sequence[str], folds: int) -> int:
    """The fold of a text made from ``row_ids`` (its source train rows): theirs, ``UNLABELED`` or ``MIXED``."""
    found = {fold_of(r, folds) for r in row_ids}
    if not found:
        return UNLABELED
    return found.pop() if len(found) == 1 else MIXED


def out_of_fold_ngram_probs(
    texts: Sequence[str],
    row_ids: Sequence[Sequence[str]],
    train_rows: Sequence[LabeledRow],
    dev_rows: Sequence[LabeledRow],
    folds: int = 4,
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """Per-head n-gram probabilities for ``texts`` (``row_ids[i]``: the train rows text ``i`` was made from), the mask
    of rows that have one, and the provenance (folds, the ``C`` each fit chose on dev, the count per fold)."""
    if folds < 2:
        raise ValueError("out-of-fold scoring needs at least 2 folds")
    assigned = np.array([text_fold(ids, folds) for ids in row_ids])
    probs = {h: np.zeros((len(texts), len(labels)), dtype=np.float32) for h, labels in HEADS.items()}
    chosen: dict[str, dict[str, float]] = {}
    row_folds = [fold_of(r.id, folds) for r in train_rows]
    c_grid = C_GRID
    for fold in tqdm([UNLABELED, *range(folds)], desc="n-gram folds", unit="fit"):
        fit_on = [r for r, f in zip(train_rows, row_folds, strict=True) if f != fold]  # UNLABELED: every row
        baseline = NgramBaseline(c_grid=c_grid, seed=seed).fit(fit_on, dev_rows)
        if fold == UNLABELED:  # the folds only choose among the C values the full fit chose (a 6-fold saving)
            c_grid = tuple(sorted(set(baseline.chosen_c_.values())))
        rows = np.flatnonzero(assigned == fold)
        if not len(rows):
            continue
        chosen["all" if fold == UNLABELED else f"fold{fold}"] = dict(baseline.chosen_c_)
        scored = baseline.predict_proba([texts[i] for i in rows])
        for h in HEADS:
            probs[h][rows] = scored[h]
    provenance = {
        "ngram": "char 1-3-gram TF-IDF + LR, out of fold",
        "folds": folds,
        "chosen_c": chosen,
        "texts_per_fold": {str(int(f)): int((assigned == f).sum()) for f in np.unique(assigned)},
    }
    return probs, assigned != MIXED, provenance
