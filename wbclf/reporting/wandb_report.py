"""The sweep comparison as a W&B Report (``wandb-workspaces``).

The panels follow from the sweep's parameters: those of the sweep file when one is given
(then nothing here touches the network), else those of the sweep read from the W&B API.
Building the report objects is offline; only :func:`save_report` talks to the server.

Panels refer to what the runs log (``wbclf.tracking.wandb_logger``): ``val/acc`` and
``train/loss`` per ``epoch``, the summary keys of docs/ARCHITECTURE.md, the
``test/confusion_matrix`` chart (its table ``test/confusion_matrix_table``) and the
``best_samples`` / ``test/worst_mistakes`` tables.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wbclf.errors import UserError
from wbclf.reporting.analysis import LOG_FIELDS, fmt_value

__all__ = ["ReportError", "SweepParams", "build_wandb_report", "outline", "save_report",
           "sweep_params_from_api", "sweep_params_from_file"]

CONFUSION_TABLE = "test/confusion_matrix_table"
CONFUSION_CHART = "wandb/confusion_matrix/v1"  # the Vega spec wandb.plot.confusion_matrix uses
SAMPLE_TABLES = ("best_samples", "test/worst_mistakes")
CONTINUOUS = ("uniform", "log_uniform", "log_uniform_values", "q_uniform", "q_log_uniform",
              "q_log_uniform_values", "int_uniform", "normal", "q_normal", "log_normal",
              "q_log_normal", "inv_log_uniform", "inv_log_uniform_values", "beta", "q_beta")


class ReportError(UserError):
    """A W&B report cannot be built or saved; the message is one line for the user."""


@dataclass
class SweepParams:
    """What a sweep varies, read from its configuration (file or API).

    Attributes:
        name: The sweep's name.
        swept: Parameters that take several values, in file order.
        log: The swept parameters drawn on a log axis.
        constants: Parameters with one value.
        metric: The sweep metric (``val/acc`` by default).
        goal: ``maximize`` or ``minimize``.
        method: ``grid``, ``random`` or ``bayes``.
        description: The file's description, if any.
    """

    name: str
    swept: list[str]
    log: set[str] = field(default_factory=set)
    constants: dict[str, Any] = field(default_factory=dict)
    metric: str = "val/acc"
    goal: str = "maximize"
    method: str = ""
    description: str = ""


def parse_sweep_config(config: dict[str, Any], name: str = "") -> SweepParams:
    """A W&B sweep configuration (the YAML's dict) -> :class:`SweepParams`."""
    params = config.get("parameters") or {}
    if not isinstance(params, dict) or not params:
        raise ReportError(f"sweep {name or '?'} has no parameters")
    swept: list[str] = []
    log: set[str] = set()
    constants: dict[str, Any] = {}
    for key, spec in params.items():
        if not isinstance(spec, dict):
            continue
        values = spec.get("values")
        if isinstance(values, list) and len(values) > 1:
            swept.append(key)
            numbers = [v for v in values if isinstance(v, (int, float))
                       and not isinstance(v, bool)]
            if key in LOG_FIELDS or (len(numbers) == len(values) and min(numbers) > 0
                                     and max(numbers) / min(numbers) >= 20):
                log.add(key)
        elif isinstance(values, list) and values:
            constants[key] = values[0]
        elif "value" in spec:
            constants[key] = spec["value"]
        elif spec.get("distribution") in CONTINUOUS or "min" in spec:
            swept.append(key)
            if "log" in str(spec.get("distribution", "")) or key in LOG_FIELDS:
                log.add(key)
    metric = config.get("metric") or {}
    return SweepParams(
        name=str(config.get("name") or name), swept=swept, log=log, constants=constants,
        metric=str(metric.get("name") or "val/acc"),
        goal="minimize" if metric.get("goal") == "minimize" else "maximize",
        method=str(config.get("method") or ""),
        description=str(config.get("description") or ""))


def sweep_params_from_file(path: str | Path) -> SweepParams:
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ReportError(f"cannot read sweep file {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise ReportError(f"sweep file {path} is not valid YAML: "
                          f"{str(err).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise ReportError(f"sweep file {path} is not a W&B sweep configuration (a mapping)")
    return parse_sweep_config(config, path.stem)


def sweep_params_from_api(entity: str, project: str, sweep_id: str) -> SweepParams:
    """Read the sweep's configuration from W&B (network)."""
    _check_online()
    try:
        import wandb

        sweep = wandb.Api(timeout=20).sweep(f"{entity}/{project}/{sweep_id}")
        config = dict(sweep.config)
    except Exception as err:  # noqa: BLE001 -- network, auth, not found: all one line
        raise ReportError(f"cannot read sweep {entity}/{project}/{sweep_id} from W&B "
                          f"({_first_line(err)}); pass --sweep-file to build the report "
                          "offline") from None
    return parse_sweep_config(config, sweep_id)


# --------------------------------------------------------------------------- building


def _runset(wr: Any, entity: str, project: str, sweep_id: str, sp: SweepParams,
            name: str) -> Any:
    return wr.Runset(entity=entity, project=project, name=name,
                     filters=f"Sweep = '{sweep_id}'",
                     order=[wr.OrderBy(wr.SummaryMetric(sp.metric),
                                       ascending=sp.goal == "minimize")])


# The time panel shows its parts: a frozen run's epochs take a second, but the run that built
# the feature store paid the backbone pass (time/features_s); the mean over a strategy's runs
# spreads that cost over them.
_STRATEGY_BARS = (
    ("test/acc by strategy", ("test/acc",)),
    ("test/macro_f1 by strategy", ("test/macro_f1",)),
    ("wall time per run by strategy (s): training, feature extraction (frozen, mean over runs), "
     "evaluation", ("time/train_s", "time/features_s", "time/eval_s")),
)
_STRATEGY_NOTE = (
    "Each bar is the mean (± std) over every run of a strategy in this sweep, whatever its "
    "other settings: a poor learning rate or a run at chance level pulls it down, and the bars "
    "are not tested against each other. The feature extraction is the backbone pass of the run "
    "that built a frozen feature store, spread over the strategy's runs here; a store built "
    "by an earlier sweep shows as 0. `wbclf report` on the same runs compares the best "
    "configuration of each strategy, with its cost and paired tests.")
_IMPORTANCE_NOTE = (
    "The parameter importance panel is W&B's estimate from these runs, without uncertainty; "
    "the tested differences are the claims to rely on.")
_FINDINGS_NOTE = (
    "From `wbclf report` on the same runs: p-values adjusted together per study, and the "
    "strategy comparison as a family of its own (Benjamini-Hochberg), intervals widened to "
    "match, so an interval excludes 0 exactly when its difference is significant. How to read "
    "these: docs/REPORTS.md in the wbclf repository.")


def build_wandb_report(entity: str, project: str, sweep_id: str, sp: SweepParams, *,
                       title: str | None = None, findings: Sequence[str] = ()) -> Any:
    """The report object (``wandb_workspaces.reports.v2.Report``); nothing is sent.

    ``findings``: the tested findings' sentences (``findings.json`` of the local report of
    the same runs), shown under "Tested differences" after the overview.
    """
    import wandb_workspaces.reports.v2 as wr

    metric = sp.metric
    swept = ", ".join(sp.swept) or "nothing"
    fixed = ", ".join(f"{k}={fmt_value(v, log=k in LOG_FIELDS)}" for k, v in
                      sp.constants.items())
    intro = (f"Sweep {sweep_id} ({sp.method or 'sweep'}) of {entity}/{project}: swept {swept}"
             + (f"; fixed {fixed}" if fixed else "") + f". Compared on {metric} ({sp.goal}).")
    blocks: list[Any] = [wr.TableOfContents(), wr.H1("Overview"), wr.P(intro),
                         wr.P(_IMPORTANCE_NOTE)]
    columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(p), log=p in sp.log or None)
               for p in sp.swept]
    columns += [wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(k))
                for k in dict.fromkeys([metric, "test/acc"])]
    blocks.append(wr.PanelGrid(
        runsets=[_runset(wr, entity, project, sweep_id, sp, f"sweep {sweep_id}")],
        panels=[
            wr.ParallelCoordinatesPlot(title=f"{swept} -> {metric}", columns=columns,
                                       layout=wr.Layout(x=0, y=0, w=24, h=9)),
            wr.ParameterImportancePlot(with_respect_to=metric,
                                       layout=wr.Layout(x=0, y=9, w=12, h=9)),
            wr.ScatterPlot(title=f"{metric} vs model size", x=wr.SummaryMetric("model/params"),
                           y=wr.SummaryMetric(metric), log_x=True,
                           layout=wr.Layout(x=12, y=9, w=12, h=9)),
        ]))
    if findings:
        blocks.append(wr.H1("Tested differences"))
        blocks += [wr.P(text) for text in findings] + [wr.P(_FINDINGS_NOTE)]
    blocks.append(wr.H1(f"{metric} by parameter"))
    for param in sp.swept:
        blocks += [wr.H2(f"{metric} by {param}"), wr.PanelGrid(
            runsets=[_runset(wr, entity, project, sweep_id, sp, f"sweep {sweep_id}")],
            panels=[
                wr.LinePlot(title=f"{metric} per epoch, grouped by {param}", x="epoch",
                            y=[metric], groupby=wr.Config(param), groupby_aggfunc="mean",
                            groupby_rangefunc="stddev", layout=wr.Layout(x=0, y=0, w=8, h=7)),
                wr.LinePlot(title=f"train/loss per epoch, grouped by {param}", x="epoch",
                            y=["train/loss"], groupby=wr.Config(param), groupby_aggfunc="mean",
                            groupby_rangefunc="stddev", layout=wr.Layout(x=8, y=0, w=8, h=7)),
                wr.ScatterPlot(title=f"{metric} vs {param}", x=wr.Config(param),
                               y=wr.SummaryMetric(metric), log_x=param in sp.log or None,
                               layout=wr.Layout(x=16, y=0, w=8, h=7)),
            ])]
    if "strategy" in sp.swept:
        blocks += [wr.H1("Scratch vs frozen vs fine-tune"), wr.P(_STRATEGY_NOTE), wr.PanelGrid(
            runsets=[_runset(wr, entity, project, sweep_id, sp, f"sweep {sweep_id}")],
            panels=[wr.BarPlot(title=title, metrics=[wr.SummaryMetric(k) for k in keys],
                               groupby=wr.Config("strategy"), groupby_aggfunc="mean",
                               groupby_rangefunc="stddev", orientation="v",
                               layout=wr.Layout(x=8 * i, y=0, w=8, h=7))
                    for i, (title, keys) in enumerate(_STRATEGY_BARS)])]
    blocks += [wr.H1("Best runs"), wr.P(
        f"The runs ordered by {metric}: the comparer shows how their settings and results "
        "differ; the confusion matrix and the sample predictions come from each run's best "
        "checkpoint."), wr.PanelGrid(
        runsets=[_runset(wr, entity, project, sweep_id, sp, f"best of sweep {sweep_id}")],
        panels=[
            wr.RunComparer(diff_only="split", layout=wr.Layout(x=0, y=0, w=24, h=10)),
            wr.CustomChart(query={"summaryTable": {"tableKey": CONFUSION_TABLE}},
                           chart_name=CONFUSION_CHART,
                           chart_fields={"Actual": "Actual", "Predicted": "Predicted",
                                         "nPredictions": "nPredictions"},
                           layout=wr.Layout(x=0, y=10, w=12, h=10)),
            wr.WeavePanelSummaryTable(table_name=SAMPLE_TABLES[0],
                                      layout=wr.Layout(x=12, y=10, w=12, h=10)),
            wr.WeavePanelSummaryTable(table_name=SAMPLE_TABLES[1],
                                      layout=wr.Layout(x=0, y=20, w=24, h=10)),
        ])]
    return wr.Report(entity=entity, project=project,
                     title=(title or f"{sp.name}: sweep {sweep_id}")[:128],
                     description=sp.description or f"wbclf sweep report of {sweep_id}",
                     blocks=blocks)


# --------------------------------------------------------------------------- outline


def _metric_name(metric: Any) -> str:
    kind = type(metric).__name__
    name = getattr(metric, "name", metric)
    return {"Config": f"config.{name}", "SummaryMetric": f"summary.{name}"}.get(kind, str(name))


def _panel_line(panel: Any) -> str:
    kind = type(panel).__name__
    if kind == "ParallelCoordinatesPlot":
        cols = ", ".join(_metric_name(c.metric) + (" (log)" if c.log else "")
                         for c in panel.columns)
        return f"{kind}: {cols}"
    if kind == "ParameterImportancePlot":
        return f"{kind}: with respect to {panel.with_respect_to}"
    if kind == "LinePlot":
        return (f"{kind}: {', '.join(map(_metric_name, panel.y))} vs {panel.x}, grouped by "
                f"{_metric_name(panel.groupby)} ({panel.groupby_aggfunc} ± "
                f"{panel.groupby_rangefunc})")
    if kind == "ScatterPlot":
        return (f"{kind}: {_metric_name(panel.y)} vs {_metric_name(panel.x)}"
                + (" (log x)" if panel.log_x else ""))
    if kind == "BarPlot":
        return (f"{kind}: {', '.join(map(_metric_name, panel.metrics))} grouped by "
                f"{_metric_name(panel.groupby)}")
    if kind == "RunComparer":
        return f"{kind}: diff_only={panel.diff_only}"
    if kind == "CustomChart":
        table = panel.query.get("summaryTable", {}).get("tableKey")
        return f"{kind}: {panel.chart_name} from table {table}"
    if kind == "WeavePanelSummaryTable":
        return f"{kind}: table {panel.table_name}"
    if kind == "MediaBrowser":
        return f"{kind}: {', '.join(panel.media_keys)}"
    return kind


def outline(report: Any) -> str:
    """The report's blocks and panels as indented text (what ``--dry-run`` prints)."""
    lines = [f'W&B report "{report.title}" in {report.entity}/{report.project}',
             f"  description: {report.description}"]
    for block in report.blocks:
        kind = type(block).__name__
        if kind in ("H1", "H2", "H3"):
            lines.append(f"  {kind} {block.text}")
        elif kind == "P":
            lines.append(f"  P  {block.text}")
        elif kind == "PanelGrid":
            for rs in block.runsets:
                order = ", ".join(("+" if o.ascending else "-") + _metric_name(o.name)
                                  for o in rs.order)
                lines.append(f"  PanelGrid  runset {rs.name!r}: {rs.entity}/{rs.project}, "
                             f"filter {rs.filters}, order {order}")
            lines += [f"    {_panel_line(p)}" for p in block.panels]
        else:
            lines.append(f"  {kind}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- saving


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


def _check_online() -> None:
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        raise ReportError(f"W&B is set to {mode} (WANDB_MODE); reaching W&B needs the network "
                          "and an API key: unset WANDB_MODE, or use --dry-run with "
                          "--sweep-file")


def save_report(report: Any) -> str:
    """Save the report to W&B and return its URL; ReportError (one line) when it fails."""
    _check_online()
    try:
        import wandb

        wandb.Api(timeout=20)  # fails fast without an API key
        report.save()
        return str(report.url)
    except Exception as err:  # noqa: BLE001 -- offline, no key, no access: all one line
        raise ReportError(f"could not save the W&B report ({_first_line(err)}); check the "
                          "network and `wandb login`, or use --dry-run") from None
