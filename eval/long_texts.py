"""A served model on the long rows of a split, read at its trained ``max_length`` and at longer ones.

Why: real complaints run longer than most labeled rows, and the model reads at most ``max_length`` tokens
(head + tail). Before paying for training at 256 tokens (twice the cost of the long rows per epoch), this
answers, without retraining, whether the cut hides the decisive fact: the same model, the same rows, more tokens.
A model trained at 128 tokens has seen its position embeddings beyond 128 only in pre-training, so a gain here
is a lower bound on what training at that length would give, and a loss says little.

    python -m eval.long_texts --model triage_model/default_model --split dev --lengths 128 256
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from eval.evaluate import split_rows
from triage_model.labeled_data import LabeledRow, gold_ids
from triage_model.metrics import head_metrics
from triage_model.predictor import TriagePredictor
from triage_model.schema import HEADS
from triage_model.tokenization import encode_texts_with_cuts


def read_in_part(predictor: TriagePredictor, texts: Sequence[str], max_length: int) -> list[bool]:
    """Per text, whether the model reading ``max_length`` tokens skips part of it: the predictor's own cut rule
    (``encode_texts_with_cuts``: prefix and special tokens counted), on the text as the predictor prepares it."""
    return encode_texts_with_cuts(predictor.tokenizer, [predictor.prepare(t).text for t in texts], max_length)[1]


def long_rows(predictor: TriagePredictor, rows: Sequence[LabeledRow], max_length: int) -> list[LabeledRow]:
    """The rows the model reads only in part at ``max_length`` tokens."""
    return [r for r, cut in zip(rows, read_in_part(predictor, [r.text for r in rows], max_length), strict=True) if cut]


def metrics_at_lengths(predictor: TriagePredictor, rows: Sequence[LabeledRow], lengths: Sequence[int]) -> dict[int, dict[str, dict]]:
    """Per length, per head: accuracy and macro-F1 as served (blend and 一级 threshold included).

    The predictor's ``max_length`` is restored afterwards, also when scoring fails."""
    gold = gold_ids(list(rows))
    texts = [r.text for r in rows]
    trained = predictor.meta.max_length
    out: dict[int, dict[str, dict]] = {}
    try:
        for length in lengths:
            predictor.meta.max_length = length
            probs = predictor.predict_proba(texts)
            out[length] = {
                h: head_metrics(probs[h], gold[h], labels, predictor.meta.decision_thresholds.get(h)) for h, labels in HEADS.items()
            }
    finally:
        predictor.meta.max_length = trained
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="exported model directory (default: the shipped one)")
    parser.add_argument("--data-dir", type=Path, default=Path("labeled_data"))
    parser.add_argument("--split", default="dev", help="dev (where choices are made) or test (to report)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256], help="max_length values to read the long rows at")
    args = parser.parse_args(argv)
    predictor = TriagePredictor.from_pretrained(args.model)
    rows = split_rows(args.data_dir, args.split)
    chosen = long_rows(predictor, rows, predictor.meta.max_length)
    print(f"{len(chosen)} of {len(rows)} {args.split} rows are longer than the trained {predictor.meta.max_length} tokens")
    if not chosen:
        return
    print("| read at | " + " | ".join(f"{h} acc / macro-F1" for h in HEADS) + " |")
    print("|---|" + "---|" * len(HEADS))
    for length, heads in metrics_at_lengths(predictor, chosen, args.lengths).items():
        cells = [f"{heads[h]['accuracy']:.3f} / {heads[h]['macro_f1']:.3f}" for h in HEADS]
        print(f"| {length} tokens | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
