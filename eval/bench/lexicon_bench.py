"""Escalation-lexicon scan time vs text length (issue 14, item 6): must grow linearly, then flatten at the cap.

    python -m eval.bench.lexicon_bench

Times ``TextTriggerDetector.detect_states`` (the lexicon half of the escalation scorer: normalisation,
clauses, jieba, every trigger pattern and cue window) on texts of 1k–100k characters of several kinds,
including the ones that used to be quadratic (every match dropped by a cue, a digit run). Texts over
the policy's ``max_scan_chars`` are read head + tail, so their time stops growing there. Writes
eval/bench/results/lexicon_bench.{json,md} with the CPU it ran on.
"""

from __future__ import annotations

import argparse
import time

from eval.bench.common import machine, machine_line, text_of_length, write_results
from triage_model.escalation import load_policy
from triage_model.escalation.triggers import TextTriggerDetector

LENGTHS = (1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000)
KINDS = {
    # every 报警 dropped by the reported-speech cue: the case that cost 7–12 s at 20k characters
    "reported 朋友说要报警 ×n": "朋友说要报警",
    "digit run": "1",
    "repeat contact 第三次打电话了，": "我第三次打电话了，",
    "agent turns 客服：好的": "客服：好的",
    "negated superior 不用找经理": "不用找经理",
}


def repeat_to(unit: str, n: int) -> str:
    return (unit * (n // len(unit) + 1))[:n]


def time_once(detector: TextTriggerDetector, text: str, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        detector.detect_states(text)
        best = min(best, time.perf_counter() - start)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell (the best is kept)")
    args = parser.parse_args()

    policy = load_policy()
    detector = TextTriggerDetector(policy)
    detector.detect_states("预热：叫你们经理来")  # jieba and its dictionary, outside the timings
    texts = {"realistic complaint": lambda n: text_of_length(n)} | {k: (lambda n, u=u: repeat_to(u, n)) for k, u in KINDS.items()}
    rows = []
    for kind, make in texts.items():
        row = {"kind": kind}
        for n in LENGTHS:
            row[str(n)] = round(time_once(detector, make(n), args.repeats), 1)
        rows.append(row)
        print(row, flush=True)
    info = machine()
    header = "| text | " + " | ".join(f"{n // 1000}k chars" for n in LENGTHS) + " |"
    lines = [
        f"Lexicon scan time (ms, best of {args.repeats}) vs text length; scan cap max_scan_chars = {policy.max_scan_chars} "
        f"(policy {policy.version}).",
        machine_line(info),
        "",
        header,
        "|---" * (len(LENGTHS) + 1) + "|",
    ]
    lines += ["| " + r["kind"] + " | " + " | ".join(str(r[str(n)]) for n in LENGTHS) + " |" for r in rows]
    table = "\n".join(lines)
    path = write_results("lexicon_bench", {"machine": info, "max_scan_chars": policy.max_scan_chars, "rows": rows}, table)
    print(table)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
