"""Accuracy against cost: the Pareto-optimal runs by parameters, FLOPs and measured latency.

For studies that vary the model's size (width, depth, blocks, backbone): a run is
Pareto-optimal for a cost when no run that costs no more scores better. Each cost gets a
panel (log x; the front drawn through its runs) and a finding naming the runs on the front.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from wbclf.reporting.collect import RunRecord

COSTS: tuple[tuple[str, str], ...] = (("model/params", "parameters"),
                                      ("model/flops", "FLOPs"),
                                      ("model/latency_ms", "latency at batch 1 (ms)"))
SIZE_FIELDS = ("width", "depth", "blocks_per_stage", "model", "head_hidden")


def pareto_runs(runs: Sequence[RunRecord], cost: str, metric: str) -> list[RunRecord]:
    """Runs no cheaper-or-equal run beats on ``metric``, cheapest first."""
    scored = [r for r in runs if r.value(cost) is not None and r.value(metric) is not None
              and r.value(cost) > 0]
    scored.sort(key=lambda r: (r.value(cost), -r.value(metric)))
    front: list[RunRecord] = []
    for run in scored:
        if not front or run.value(metric) > front[-1].value(metric):
            front.append(run)
    return front


def measured_costs(runs: Sequence[RunRecord], metric: str) -> list[tuple[str, str]]:
    """The costs at least two runs have a figure for."""
    return [(key, label) for key, label in COSTS
            if len(pareto_runs(runs, key, metric)) and sum(
                1 for r in runs if r.value(key)) >= 2]


def cost_findings(runs: Sequence[RunRecord], metric: str) -> list[str]:
    """One sentence per cost naming its Pareto-optimal runs."""
    sentences = []
    for key, label in measured_costs(runs, metric):
        front = pareto_runs(runs, key, metric)
        named = ", ".join(f"{r.short_name} ({metric} {r.value(metric):.3f} at "
                          f"{_amount(r.value(key), key)})" for r in front)
        sentences.append(f"Pareto-optimal on {metric} against {label}: {named}.")
    return sentences


def _amount(value: float, key: str) -> str:
    if key == "model/latency_ms":
        return f"{value:.2f} ms"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.3g}"


def cost_figure(runs: Sequence[RunRecord], metric: str) -> Figure | None:
    """One panel per measured cost: every run, and the Pareto front through its runs."""
    costs = measured_costs(runs, metric)
    if not costs:
        return None
    fig = Figure(figsize=(4.4 * len(costs), 3.8), layout="constrained")
    for k, (key, label) in enumerate(costs):
        ax = fig.add_subplot(1, len(costs), k + 1)
        chosen = [r for r in runs if r.value(key) and r.value(metric) is not None]
        ax.scatter([r.value(key) for r in chosen], [r.value(metric) for r in chosen], s=22,
                   color="0.6", label="runs")
        front = pareto_runs(runs, key, metric)
        ax.plot([r.value(key) for r in front], [r.value(metric) for r in front], marker="o",
                color="C3", label="Pareto-optimal")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(metric)
        ax.grid(True, which="both", alpha=0.3)
        if k == 0:
            ax.legend(fontsize=8)
    return fig
