"""Learning curve of the n-gram baseline: dev macro-F1 per head when it is fitted on growing shares of train.

Why: "is more labeled data still buying points?" decides whether the next session writes data or trains.
The baseline refits in a minute on 2 cores, so its curve can be redrawn after every data round; the
encoder's own curve costs a training run per point (``triage train --train-fraction``). The shares are
nested (one seeded shuffle, growing prefixes), so a rise between two points is the added rows, not a new draw.

    python -m eval.learning_curve --fractions 0.25 0.5 1.0
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from pathlib import Path

from eval.baselines import NgramBaseline
from triage_model.labeled_data import LabeledRow, load_labeled
from triage_model.schema import HEADS


def nested_shares(rows: Sequence[LabeledRow], fractions: Sequence[float], seed: int = 0) -> dict[float, list[LabeledRow]]:
    """For each fraction, the first ``fraction`` of one seeded shuffle of ``rows`` (smaller shares sit inside larger)."""
    if any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"fractions must lie in (0, 1], got {list(fractions)}")
    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    return {f: shuffled[: max(1, round(f * len(shuffled)))] for f in sorted(fractions)}


def learning_curve(
    train: Sequence[LabeledRow], dev: Sequence[LabeledRow], fractions: Sequence[float], seed: int = 0
) -> list[dict[str, object]]:
    """Per fraction: the train rows used and the baseline's dev macro-F1 per head (C chosen on dev, as always)."""
    out = []
    for fraction, rows in nested_shares(train, fractions, seed).items():
        heads = NgramBaseline(seed=seed).fit(rows, dev).evaluate(dev)
        out.append({"fraction": fraction, "train_rows": len(rows), **{h: round(heads[h]["macro_f1"], 4) for h in HEADS}})
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("labeled_data"))
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = load_labeled(args.data_dir).require_valid()  # read once; bad rows are reported, never skipped
    print(f"| share of train | rows | dev {' | dev '.join(HEADS)} |")
    print("|---|---|" + "---|" * len(HEADS))
    for point in learning_curve(data.split("train"), data.split("dev"), args.fractions, args.seed):
        cells = " | ".join(f"{point[h]:.3f}" for h in HEADS)
        print(f"| {point['fraction']:.0%} | {point['train_rows']} | {cells} |")


if __name__ == "__main__":
    main()
