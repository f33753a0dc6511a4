"""PNG charts for the QA report, drawn with matplotlib's object API (no pyplot, no global state).

Why a CJK font matters: the labels are Chinese (物流配送, 一级 …); matplotlib's default DejaVu Sans has
no CJK glyphs and would draw empty boxes. ``cjk_font()`` finds Noto Sans CJK (Debian ``fonts-noto-cjk``)
or another CJK family; without one the charts still render, with a logged warning.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache

import numpy as np

log = logging.getLogger(__name__)

CJK_FAMILIES: tuple[str, ...] = (
    "Noto Sans CJK SC",
    "Noto Sans CJK",
    "Noto Sans CJK JP",
    "Noto Sans CJK TC",
    "Source Han Sans SC",
    "Source Han Sans CN",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Droid Sans Fallback",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
)
"""Preferred first: Simplified-Chinese glyph shapes, then other CJK families that cover the labels."""

CJK_FILE_HINTS: tuple[str, ...] = ("notosanscjk", "sourcehansans", "wqy", "droidsansfallback", "simhei", "msyh")

CORRECT_COLOR = "#2e7d32"
WRONG_COLOR = "#c62828"
MAIN_COLOR = "#1565c0"
SECOND_COLOR = "#9e9e9e"


@lru_cache(maxsize=1)
def cjk_font() -> str | None:
    """Name of an installed CJK font family, registering system font files the cache has not seen yet."""
    from matplotlib import font_manager

    def installed() -> str | None:
        names = {f.name for f in font_manager.fontManager.ttflist}
        return next((family for family in CJK_FAMILIES if family in names), None)

    found = installed()
    if found is None:
        # Fonts installed after matplotlib built its font cache are not listed: register them now.
        for path in font_manager.findSystemFonts():
            if any(hint in path.lower().replace("-", "").replace("_", "") for hint in CJK_FILE_HINTS):
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError) as err:
                    log.debug("cannot register font %s: %s", path, err)
        found = installed()
    if found is None:
        log.warning("no CJK font found (install the Debian package fonts-noto-cjk): Chinese labels in charts will show as boxes")
    return found


@contextmanager
def _style() -> Iterator[None]:
    import matplotlib

    font = cjk_font()
    rc = {"font.size": 10, "axes.unicode_minus": False, "figure.dpi": 100, "savefig.dpi": 100}
    if font:
        rc["font.sans-serif"] = [font, "DejaVu Sans"]
        rc["font.family"] = "sans-serif"
    with matplotlib.rc_context(rc), warnings.catch_warnings():
        if not font:
            warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        yield


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def confusion_heatmap(confusion: Sequence[Sequence[int]], labels: Sequence[str], title: str) -> bytes:
    """Rows = gold label, columns = prediction; colour is the share of the gold row, text the count."""
    counts = np.asarray(confusion, dtype=float)
    row_sums = counts.sum(1, keepdims=True)
    share = np.divide(counts, row_sums, out=np.zeros_like(counts), where=row_sums > 0)
    k = len(labels)
    with _style():
        fig = _figure(1.2 + 0.62 * k, 0.9 + 0.52 * k)
        ax = fig.add_subplot()
        image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(k), labels, rotation=45, ha="right")
        ax.set_yticks(range(k), labels)
        ax.set_xlabel("模型预测 (prediction)")
        ax.set_ylabel("人工标注 (gold)")
        ax.set_title(title)
        for i in range(k):
            for j in range(k):
                if counts[i, j]:
                    ax.text(
                        j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=8, color="white" if share[i, j] > 0.55 else "black"
                    )
        fig.colorbar(image, ax=ax, shrink=0.8, label="占该行比例 (share of gold row)")
        return _png(fig)


def per_class_bars(per_class: dict[str, dict[str, float]], title: str) -> bytes:
    """Precision, recall and F1 side by side for every label."""
    labels = list(per_class)
    x = np.arange(len(labels))
    width = 0.27
    with _style():
        fig = _figure(max(5.0, 0.75 * len(labels) + 1.5), 3.4)
        ax = fig.add_subplot()
        for offset, key, name, color in (
            (-width, "precision", "精确率 precision", "#90caf9"),
            (0.0, "recall", "召回率 recall", "#1e88e5"),
            (width, "f1", "F1", "#0d47a1"),
        ):
            ax.bar(x + offset, [per_class[lb][key] for lb in labels], width, label=name, color=color)
        ax.set_xticks(
            x,
            [f"{lb}\n(n={per_class[lb]['support']})" for lb in labels],
            rotation=30 if len(labels) > 5 else 0,
            ha="right" if len(labels) > 5 else "center",
        )
        ax.set_ylim(0, 1.2)  # headroom: the legend sits above bars that reach 1.0
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_title(title)
        ax.legend(loc="upper right", fontsize=8, ncols=3)
        ax.grid(axis="y", alpha=0.3)
        return _png(fig)


def _confidence_axes(ax, ylabel: str, title: str) -> None:
    """Shared frame of the per-head calibration charts: confidence 0–1 on x."""
    ax.set_xlim(0, 1)
    ax.set_xlabel("模型置信度 confidence")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=7)


def reliability_diagram(bins_by_head: dict[str, list[dict[str, float]]], titles: dict[str, str]) -> bytes:
    """Accuracy vs confidence per bin: a calibrated model's bars touch the diagonal."""
    heads = list(bins_by_head)
    with _style():
        fig = _figure(3.6 * len(heads), 3.6)
        axes = fig.subplots(1, len(heads), squeeze=False)[0]
        for ax, head in zip(axes, heads, strict=True):
            bins = bins_by_head[head]
            centers = [(b["lo"] + b["hi"]) / 2 for b in bins]
            acc = [b["accuracy"] if b["count"] else 0.0 for b in bins]
            ax.bar(centers, acc, width=0.09, color=MAIN_COLOR, alpha=0.8, label="实际准确率 accuracy")
            ax.plot([0, 1], [0, 1], "--", color=SECOND_COLOR, label="完美校准 perfect")
            for c, a, b in zip(centers, acc, bins, strict=True):
                if b["count"]:
                    ax.text(c, a + 0.02, str(b["count"]), ha="center", fontsize=7)
            ax.set_ylim(0, 1.08)
            _confidence_axes(ax, "准确率 accuracy", titles.get(head, head))
        return _png(fig)


def confidence_histogram(conf_by_head: dict[str, tuple[np.ndarray, np.ndarray]], titles: dict[str, str]) -> bytes:
    """Top-label confidence of correct vs wrong predictions: wrong answers should sit at low confidence."""
    heads = list(conf_by_head)
    edges = np.linspace(0.0, 1.0, 21)
    with _style():
        fig = _figure(3.6 * len(heads), 3.2)
        axes = fig.subplots(1, len(heads), squeeze=False)[0]
        for ax, head in zip(axes, heads, strict=True):
            conf, correct = conf_by_head[head]
            ax.hist(conf[correct], bins=edges, color=CORRECT_COLOR, alpha=0.65, label=f"正确 correct ({int(correct.sum())})")
            ax.hist(conf[~correct], bins=edges, color=WRONG_COLOR, alpha=0.65, label=f"错误 wrong ({int((~correct).sum())})")
            _confidence_axes(ax, "条数 count", titles.get(head, head))
        return _png(fig)


def compare_bars(champion: dict[str, float], challenger: dict[str, float], title: str) -> bytes:
    """Macro-F1 per head, champion next to challenger."""
    heads = list(challenger)
    x = np.arange(len(heads))
    with _style():
        fig = _figure(max(4.5, 1.4 * len(heads) + 1.5), 3.0)
        ax = fig.add_subplot()
        ax.bar(x - 0.2, [champion[h] for h in heads], 0.4, color=SECOND_COLOR, label="现用模型 champion")
        ax.bar(x + 0.2, [challenger[h] for h in heads], 0.4, color=MAIN_COLOR, label="候选模型 challenger")
        ax.set_xticks(x, heads)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("macro-F1")
        ax.set_title(title)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        return _png(fig)
