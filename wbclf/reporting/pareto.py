"""Accuracy against cost: the Pareto-optimal runs by parameters, FLOPs and measured latency.

For studies that vary the model's size (width, depth, blocks, backbone): a run is
Pareto-optimal for a cost when no run that costs no more scores better (higher, or lower for
a metric to minimize). Runs of different datasets never compete: each dataset has its own
front. Each cost gets a panel (log x; a front per dataset drawn through its runs) and a
finding naming the runs on the front; single runs on val, so the finding says it is untested.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from wbclf.reporting.collect import RunRecord

COSTS: tuple[tuple[str, str], ...] = (("model/params", "parameters"),
                                      ("model/flops", "FLOPs"),
                                      ("model/latency_ms", "latency at batch 1 (ms)"))
SIZE_FIELDS = ("width", "depth", "blocks_per_stage", "model", "head_hidden")


Groups = Sequence[tuple[str | None, Sequence[RunRecord]]]  # (dataset or None, its runs)


def pareto_runs(runs: Sequence[RunRecord], cost: str, metric: str, goal: str = "maximize"
                ) -> list[RunRecord]:
    """Runs no cheaper-or-equal run beats on ``metric``, cheapest first."""
    sign = 1.0 if goal == "maximize" else -1.0
    scored = [r for r in runs if r.value(cost) is not None and r.value(metric) is not None
              and r.value(cost) > 0]
    scored.sort(key=lambda r: (r.value(cost), -sign * r.value(metric)))
    front: list[RunRecord] = []
    for run in scored:
        if not front or sign * run.value(metric) > sign * front[-1].value(metric):
            front.append(run)
    return front


def measured_costs(groups: Groups, metric: str) -> list[tuple[str, str]]:
    """The costs at least two runs of one dataset have a figure for."""
    return [(key, label) for key, label in COSTS
            if any(sum(1 for r in runs if r.value(key) and r.value(metric) is not None) >= 2
                   for _, runs in groups)]


def cost_findings(groups: Groups, metric: str, goal: str = "maximize") -> list[str]:
    """One sentence per cost and dataset naming its Pareto-optimal runs."""
    sentences = []
    for key, label in measured_costs(groups, metric):
        for dataset, runs in groups:
            front = pareto_runs(runs, key, metric, goal)
            if not front:
                continue
            named = ", ".join(f"{r.short_name} ({metric} {r.value(metric):.3f} at "
                              f"{_amount(r.value(key), key)})" for r in front)
            where = f"On {dataset}: " if dataset is not None else ""
            # each run on its own, any margin: a run one image ahead is on the front
            sentences.append(f"{where}Pareto-optimal on {metric} against {label} (single runs, "
                             f"differences untested): {named}.")
    return sentences


def _amount(value: float, key: str) -> str:
    if key == "model/latency_ms":
        return f"{value:.2f} ms"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.3g}"


def cost_figure(groups: Groups, metric: str, goal: str = "maximize") -> Figure | None:
    """One panel per measured cost: every run, and a Pareto front per dataset."""
    costs = measured_costs(groups, metric)
    if not costs:
        return None
    fig = Figure(figsize=(4.4 * len(costs), 3.8), layout="constrained")
    for k, (key, label) in enumerate(costs):
        ax = fig.add_subplot(1, len(costs), k + 1)
        for g, (dataset, runs) in enumerate(groups):
            chosen = [r for r in runs if r.value(key) and r.value(metric) is not None]
            color = f"C{(g + 3) % 10}"
            ax.scatter([r.value(key) for r in chosen], [r.value(metric) for r in chosen], s=22,
                       color=color, alpha=0.45)
            front = pareto_runs(runs, key, metric, goal)
            ax.plot([r.value(key) for r in front], [r.value(metric) for r in front],
                    marker="o", color=color,
                    label=f"Pareto-optimal{f' ({dataset})' if dataset is not None else ''}")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(metric)
        ax.grid(True, which="both", alpha=0.3)
        if k == 0:
            ax.legend(fontsize=8)
    return fig
