"""The report's comparison figures (matplotlib object API, Agg; never pyplot).

Each function takes analysed runs and returns a ``Figure``; only finished runs are drawn.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter

from wbclf.tracking.plots import display_name
from wbclf.reporting.analysis import (
    FACET,
    Param,
    StrategyRow,
    StudyAnalysis,
    aggregate,
    dataset_name,
    is_fraction_metric,
    per_class_f1,
    sizes_differ,
)
from wbclf.reporting.chance import chance_count
from wbclf.reporting.collect import RunRecord
from wbclf.reporting.costs import PARTS, Cost
from wbclf.reporting.intervals import interval

__all__ = [
    "heatmap_figure",
    "learning_curves_figure",
    "metric_vs_param_figure",
    "per_class_f1_figure",
    "png_bytes",
    "size_frontier_figure",
    "strategy_figure",
]

GRID = "#eaeef2"
BOOL_COLORS = {False: "#bf8700", True: "#0969da"}
STRATEGY_COLORS = {"scratch": "#bf8700", "frozen": "#1a7f37", "finetune": "#0969da"}
STYLES = ("-", "--", ":", "-.")
Facets = Sequence[tuple[str | None, Sequence[RunRecord]]]


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def level_colors(param: Param) -> dict[Any, Any]:
    """A colour per value: blue/amber for booleans, fixed colours for the strategies, viridis
    for numbers, tab10 otherwise."""
    if param.boolean:
        return {v: BOOL_COLORS[bool(v)] for v in param.values}
    if param.name == "strategy" and set(param.values) <= set(STRATEGY_COLORS):
        return {v: STRATEGY_COLORS[v] for v in param.values}
    if param.numeric and len(param.values) >= 3:
        cmap = colormaps["viridis"]
        steps = np.linspace(0.05, 0.85, len(param.values))
        return {v: cmap(s) for v, s in zip(param.values, steps)}
    cmap = colormaps["tab10"]
    return {v: cmap(i % 10) for i, v in enumerate(param.values)}


def _axes_grid(fig: Figure, count: int, cols: int = 3) -> list[Any]:
    cols = max(1, min(cols, count))
    rows = -(-count // cols)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[count:]:
        ax.set_axis_off()
    return axes[:count]


def _style(ax: Any) -> None:
    ax.grid(color=GRID, linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _chance(runs: Sequence[RunRecord]) -> float | None:
    classes = {len(per_class_f1(r)) for r in runs} - {0}
    return 1.0 / classes.pop() if len(classes) == 1 else None


def _facet_title(ax: Any, facet: str | None) -> None:
    if facet is not None:
        ax.set_title(f"{FACET}={facet}", fontsize=10)


def metric_vs_param_figure(an: StudyAnalysis, x: Param, line: Param | None, facets: Facets,
                           metric: str) -> Figure:
    """``metric`` against ``x``, one line per value of ``line``, mean ± std where n > 1.

    A continuous ``x`` (a random or Bayesian search) is drawn run by run instead.
    """
    fig = Figure(figsize=(min(5.2 * len(facets), 15.5), 3.9 + 3.4 * ((len(facets) - 1) // 3)),
                 layout="constrained")
    axes = _axes_grid(fig, len(facets))
    colors = level_colors(line) if line is not None and not line.continuous else {}
    levels = list(line.values) if colors else [None]
    categorical = not x.numeric
    most = 1
    for ax, (facet, runs) in zip(axes, facets):
        _style(ax)
        _facet_title(ax, facet)
        if x.continuous:
            for level in levels:
                chosen = [r for r in runs if level is None or r.config.get(line.name) == level]
                xs = [r.config.get(x.name) for r in chosen]
                ys = [r.value(metric) for r in chosen]
                ax.scatter(xs, ys, s=22, alpha=0.85, color=colors.get(level, "#0969da"),
                           label=line.label(level) if level is not None else None)
        else:
            cells = aggregate(runs, (line.name, x.name) if colors else (x.name,), metric)
            for k, level in enumerate(levels):
                points = [(key[-1], s) for key, s in cells.items()
                          if not colors or key[0] == level]
                if not points:
                    continue
                pos = [_x_position(x, v) for v, _ in points]
                if categorical and len(levels) > 1:  # dodge so the error bars stay apart
                    pos = [p + 0.08 * (k - (len(levels) - 1) / 2) for p in pos]
                means = [s.mean for _, s in points]
                stds = [s.std for _, s in points]
                most = max([most] + [s.n for _, s in points])
                ax.errorbar(pos, means, yerr=stds if any(stds) else None, marker="o",
                            markersize=5, capsize=3, linewidth=1.6,
                            color=colors.get(level, "#0969da"),
                            label=line.label(level) if level is not None else None)
        chance = _chance(runs) if metric.endswith("acc") else None
        lowest = min((v for r in runs if (v := r.value(metric)) is not None), default=None)
        if chance is not None and lowest is not None and lowest - chance > 0.15:
            chance = None  # far below the data: the line would only squash the plot
        if chance is not None:
            ax.axhline(chance, color="#8c959f", linestyle=":", linewidth=1,
                       label=f"chance ({chance:.2f})")
        if x.log:
            ax.set_xscale("log")
        if categorical:
            ax.set_xticks(range(len(x.values)), [x.fmt(v) for v in x.values])
            ax.set_xlim(-0.5, len(x.values) - 0.5)
        elif not x.continuous:
            ax.set_xticks(list(x.values), [x.fmt(v) for v in x.values])
            ax.minorticks_off()
        ax.set_xlabel(x.name)
        ax.set_ylabel(metric)
        if ax is axes[0] and (colors or chance is not None):
            ax.legend(fontsize=8, frameon=False)
    note = f"mean ± std over up to {most} runs per point" if most > 1 else "one run per point"
    if x.continuous:
        note = "one point per run"
    fig.suptitle(f"{metric} vs {x.name}" + (f", a line per {line.name}" if colors else "")
                 + f"  ({note})", fontsize=11)
    return fig


def _x_position(x: Param, value: Any) -> float:
    return float(x.values.index(value)) if not x.numeric else float(value)


def learning_curves_figure(an: StudyAnalysis, color: Param, style: Param | None,
                           facets: Facets, keys: tuple[str, str] = ("val/acc", "train/loss")
                           ) -> Figure:
    """Per-epoch curves of every finished run, coloured by ``color`` (dashes by ``style``)."""
    fig = Figure(figsize=(11.5, 3.3 * len(facets) + 0.6), layout="constrained")
    axes = fig.subplots(len(facets), len(keys), squeeze=False)
    continuous = color.continuous
    if continuous:
        values = [float(v) for v in color.values]
        norm = (LogNorm if color.log else Normalize)(min(values), max(values))
        cmap = colormaps["viridis"]
    else:
        colors = level_colors(color)
    styles = {v: STYLES[i % len(STYLES)] for i, v in enumerate(style.values)} if style else {}
    for row, (facet, runs) in enumerate(facets):
        for col, key in enumerate(keys):
            ax = axes[row][col]
            _style(ax)
            for run in runs:
                epochs = [h["epoch"] for h in run.history if isinstance(h.get(key), (int, float))]
                ys = [h[key] for h in run.history if isinstance(h.get(key), (int, float))]
                if not ys:
                    continue
                value = run.config.get(color.name)
                c = cmap(norm(float(value))) if continuous else colors.get(value, "#57606a")
                ls = styles.get(run.config.get(style.name), "-") if style else "-"
                ax.plot(epochs, ys, color=c, linestyle=ls, linewidth=1.5, alpha=0.9,
                        marker="o" if len(epochs) <= 3 else None, markersize=3)
            ax.set_xlabel("epoch")
            ax.set_ylabel(key)
            last = max((len(r.history) for r in runs), default=1)
            if last <= 12:  # one tick per epoch; a lone epoch stays a point at "1"
                ax.set_xticks(range(1, last + 1))
                ax.set_xlim(0.7, last + 0.3)
            else:
                ax.xaxis.get_major_locator().set_params(integer=True)
            title = key + (f"  ({FACET}={facet})" if facet is not None else "")
            ax.set_title(title, fontsize=10)
    if continuous:
        from matplotlib.cm import ScalarMappable

        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes[:, -1].tolist(),
                           fraction=0.04)
        bar.set_label(color.name)
        handles = []
    else:
        handles = [Line2D([], [], color=colors[v], linewidth=2, label=color.label(v))
                   for v in color.values]
    handles += [Line2D([], [], color="#57606a", linestyle=styles[v], label=style.label(v))
                for v in (style.values if style else ())]
    if handles:
        axes[0][-1].legend(handles=handles, fontsize=8, frameon=False, loc="best")
    fig.suptitle(f"Learning curves coloured by {color.name}"
                 + (f", dashes by {style.name}" if style else ""), fontsize=11)
    return fig


def heatmap_figure(an: StudyAnalysis, x: Param, y: Param, facets: Facets, metric: str
                   ) -> Figure:
    """Mean ``metric`` for each (``x``, ``y``) cell, e.g. width x depth.

    The colour scale spans at least the typical run's 95% interval of ``metric``: stretched
    from the lowest cell to the highest, three cells a point apart on 150 images would run
    from dark to bright and read as a gradient that is noise.
    """
    fig = Figure(figsize=(min(5.0 * len(facets), 15.5), 0.55 * len(y.values) + 2.6),
                 layout="constrained")
    axes = _axes_grid(fig, len(facets))
    for ax, (facet, runs) in zip(axes, facets):
        cells = aggregate(runs, (y.name, x.name), metric)
        grid = np.full((len(y.values), len(x.values)), np.nan)
        counts = np.zeros_like(grid, dtype=int)
        for (yv, xv), s in cells.items():
            if yv in y.values and xv in x.values:
                grid[y.values.index(yv), x.values.index(xv)] = s.mean
                counts[y.values.index(yv), x.values.index(xv)] = s.n
        finite = grid[np.isfinite(grid)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        widths = [ci[1] - ci[0] for r in runs if (ci := interval(r, metric)) is not None]
        noise = float(np.median(widths)) if widths else 0.0
        if hi - lo < noise:
            middle = (lo + hi) / 2
            lo, hi = middle - noise / 2, middle + noise / 2
        image = ax.imshow(grid, cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1e-9,
                          aspect="auto", origin="lower")
        for i in range(len(y.values)):
            for j in range(len(x.values)):
                if np.isfinite(grid[i, j]):
                    light = (grid[i, j] - lo) / (hi - lo) > 0.6 if hi > lo else True
                    text = f"{grid[i, j]:.3f}" + (f"\n(n={counts[i, j]})" if counts[i, j] > 1
                                                  else "")
                    ax.text(j, i, text, ha="center", va="center", fontsize=8,
                            color="black" if light else "white")
                else:
                    ax.text(j, i, "—", ha="center", va="center", color="#8c959f")
        ax.set_xticks(range(len(x.values)), [x.fmt(v) for v in x.values])
        ax.set_yticks(range(len(y.values)), [y.fmt(v) for v in y.values])
        ax.set_xlabel(x.name)
        ax.set_ylabel(y.name)
        _facet_title(ax, facet)
        fig.colorbar(image, ax=ax, fraction=0.05).set_label(f"mean {metric}")
    fig.suptitle(f"{metric} by {x.name} x {y.name}", fontsize=11)
    return fig


def pareto_front(points: Sequence[tuple[float, float]], maximize: bool = True
                 ) -> list[tuple[float, float]]:
    """The points no smaller model beats: sorted by size, each better than all before it."""
    front: list[tuple[float, float]] = []
    for size, score in sorted(points, key=lambda p: (p[0], -p[1] if maximize else p[1])):
        if not front or (score > front[-1][1] if maximize else score < front[-1][1]):
            front.append((size, score))
    return front


def size_frontier_figure(analyses: Sequence[StudyAnalysis], metric: str = "val/acc"
                         ) -> Figure | None:
    """``metric`` against parameter count for every finished run, per dataset, with the
    frontier of the best accuracy at each size. None when the models are about one size."""
    runs = [r for an in analyses for r in an.finished
            if r.value("model/params") is not None and r.value(metric) is not None]
    if not sizes_differ(runs):
        return None
    datasets = sorted({str(r.config.get(FACET)) for r in runs})
    studies = list(dict.fromkeys(r.study for r in runs))
    colors = {s: colormaps["tab10"](i % 10) for i, s in enumerate(studies)}
    fig = Figure(figsize=(min(5.4 * len(datasets), 15.5), 4.2), layout="constrained")
    axes = _axes_grid(fig, len(datasets))
    for ax, dataset in zip(axes, datasets):
        _style(ax)
        chosen = [r for r in runs if str(r.config.get(FACET)) == dataset]
        for study in studies:
            mine = [r for r in chosen if r.study == study]
            if mine:
                ax.scatter([r.value("model/params") for r in mine],
                           [r.value(metric) for r in mine], s=26, alpha=0.85,
                           color=colors[study], label=study if len(studies) > 1 else None)
        front = pareto_front([(r.value("model/params"), r.value(metric)) for r in chosen])
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="#1f2328",
                linewidth=1.2, linestyle="--", label="frontier")
        sizes = [r.value("model/params") for r in chosen]
        if max(sizes) / min(sizes) >= 10:
            ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _count(v)))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("parameters (model/params)")
        ax.set_ylabel(metric)
        if len(datasets) > 1:
            ax.set_title(f"{FACET}={dataset_name(dataset)}", fontsize=10)
        ax.legend(fontsize=8, frameon=False)
    fig.suptitle(f"{metric} vs model size: the best run at each size sits on the frontier",
                 fontsize=11)
    return fig


def _count(value: float) -> str:
    """``6746`` -> ``6.7k``, ``2.3e6`` -> ``2.3M``."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"{value / div:.3g}{unit}"
    return f"{value:.0f}"


def _spread(rows: Sequence[StrategyRow], key: str) -> float:
    values = [s.mean for r in rows if (s := r.stats.get(key)) is not None and s.mean > 0]
    return max(values) / min(values) if values else 1.0


COST = "cost"  # the time panel when runs recorded where their time went
PART_SHADES = {"train_s": 1.0, "eval_s": 0.55, "features_s": 0.3}  # opacity of each part


def strategy_figure(rows: Sequence[StrategyRow], costs: dict[str, Cost] | None = None
                    ) -> Figure:
    """Test accuracy, macro-F1, AUC (two-class datasets) and the time per strategy.

    With ``costs`` the time panel stacks the cost per run (training, evaluation, amortized
    feature extraction) and says so; without, it shows the training epochs alone. Bars that
    average chance-level runs are hatched and labelled.
    """
    keys = ["test/acc", "test/macro_f1"]
    if any("test/auc" in r.stats for r in rows):
        keys.append("test/auc")
    keys.append(COST if costs else "train/time_s")
    datasets = list(dict.fromkeys(r.dataset for r in rows))
    strategies = list(dict.fromkeys(r.strategy for r in rows))
    colors = {s: STRATEGY_COLORS.get(s, colormaps["tab10"](i % 10))
              for i, s in enumerate(strategies)}
    fig = Figure(figsize=(3.9 * len(keys), 3.9), layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    width = 0.8 / max(1, len(strategies))
    for ax, key in zip(axes, keys):
        _style(ax)
        for k, strategy in enumerate(strategies):
            for d, dataset in enumerate(datasets):
                row = next((r for r in rows if r.dataset == dataset and r.strategy == strategy),
                           None)
                pos = d + (k - (len(strategies) - 1) / 2) * width
                if key == COST:
                    if row is not None:
                        _cost_bar(ax, pos, width, row, costs, colors[strategy])
                    continue
                s = row.stats.get(key) if row else None
                if s is None:
                    continue
                ax.bar(pos, s.mean, width=width * 0.92, color=colors[strategy],
                       yerr=s.std if s.n > 1 else None, capsize=3,
                       label=strategy if d == 0 else None)
                text = f"{s.mean:.3f}" if is_fraction_metric(key) else f"{s.mean:.3g}"
                chance = chance_count(row.runs) if is_fraction_metric(key) else 0
                if chance:  # never averaged in silently
                    ax.bar(pos, s.mean, width=width * 0.92, fill=False, hatch="///",
                           edgecolor="#7d4e00", linewidth=0)
                    text += f"\n{chance}/{len(row.runs)} at chance"
                top = s.mean + (s.std if s.n > 1 else 0.0)  # above the error bar
                ax.annotate(text, (pos, top), ha="center", va="bottom", fontsize=7,
                            xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(range(len(datasets)), datasets)
        log = key == "train/time_s" and _spread(rows, key) > 50
        title = "cost per run: train + eval + features (amortized)" if key == COST \
            else key + (" (log scale)" if log else "")
        ax.set_title(title, fontsize=10 if key != COST else 9)
        if key == COST:
            ax.set_ylabel("seconds (wall time)")
            ax.set_ylim(0, ax.get_ylim()[1] * 1.45)  # headroom for the legend
            ax.legend(handles=[_part_patch(name, label) for name, label in PARTS],
                      fontsize=7, frameon=False, loc="upper left")
        if key == "train/time_s":
            ax.set_ylabel("seconds")
            if log:
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.yaxis.set_minor_formatter(NullFormatter())
        elif is_fraction_metric(key):
            ax.set_ylim(0, 1.08)
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=8, frameon=False,
               loc="outside lower center", ncols=len(strategies))
    fig.suptitle("Scratch vs frozen vs fine-tune: the best configuration of each "
                 "(mean ± std over seeds)", fontsize=11)
    return fig


def _cost_bar(ax: Any, pos: float, width: float, row: StrategyRow, costs: dict[str, Cost],
              color: Any) -> None:
    """One stacked bar: the mean of each cost part over the row's runs, total on top."""
    mine = [costs[r.name] for r in row.runs if r.name in costs]
    if not mine:
        return
    bottom = 0.0
    for name, _ in PARTS:
        part = float(np.mean([getattr(c, name) for c in mine]))
        ax.bar(pos, part, bottom=bottom, width=width * 0.92, color=color,
               alpha=PART_SHADES[name], edgecolor=color, linewidth=0.6)
        bottom += part
    ax.annotate(f"{bottom:.3g}", (pos, bottom), ha="center", va="bottom", fontsize=7,
                xytext=(0, 2), textcoords="offset points")


def _part_patch(name: str, label: str) -> Any:
    from matplotlib.patches import Patch

    return Patch(facecolor="#57606a", alpha=PART_SHADES[name], edgecolor="#57606a", label=label)


def per_class_f1_figure(runs: dict[str, RunRecord], title: str,
                        colors: Sequence[Any] | None = None) -> Figure | None:
    """Test F1 of every class for a few runs side by side (horizontal bars).

    Args:
        runs: ``{legend label: run}``.
        title: Figure title.
        colors: One colour per run (default: tab10).
    """
    scores = {label: per_class_f1(run) for label, run in runs.items()}
    scores = {k: v for k, v in scores.items() if v}
    if not scores:
        return None
    classes = list(dict.fromkeys(c for v in scores.values() for c in v))
    n = len(scores)
    height = 0.8 / n
    fig = Figure(figsize=(9.5, max(2.6, 0.22 * len(classes) * max(n, 2) + 1.4)),
                 layout="constrained")
    ax = fig.add_subplot()
    _style(ax)
    palette = list(colors) if colors and len(colors) == len(runs) else None
    for k, (label, f1) in enumerate(scores.items()):
        pos = [i + (k - (n - 1) / 2) * height for i in range(len(classes))]
        color = palette[list(runs).index(label)] if palette else colormaps["tab10"](k % 10)
        ax.barh(pos, [f1.get(c, np.nan) for c in classes], height=height * 0.92,
                color=color, label=label)
    ax.set_yticks(range(len(classes)), [display_name(c, 44) for c in classes],
                  fontsize=8 if len(classes) < 20 else 6.5)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("test F1")
    fig.legend(fontsize=8, frameon=False, loc="outside lower center", ncols=min(n, 3))
    ax.set_title(title, fontsize=11)
    return fig
