"""The report as a list of blocks (headings, text, tables, images) that HTML and Markdown render.

Assembling the content once and rendering it twice keeps the two files saying the same thing.
What appears follows from what varied: a figure is only built when it has something to show.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from wbclf.reporting import analysis as A
from wbclf.reporting import figures as F
from wbclf.reporting.chance import FLAG, at_chance, averaged_note, chance_count, chance_findings
from wbclf.reporting.claims import Claim, adjustment_note, strategy_claims, study_claims
from wbclf.reporting.collect import RunRecord, Study
from wbclf.reporting.costs import Cost, cost_note, run_costs
from wbclf.reporting.curves import crossings, efficiency_curves, efficiency_figure
from wbclf.reporting.intervals import interval, interval_text
from wbclf.reporting.leakage import leak_columns, leak_findings
from wbclf.reporting.pareto import SIZE_FIELDS, cost_figure, cost_findings

__all__ = ["Bullets", "Document", "Heading", "Image", "Table", "Text", "build_document"]

MAX_CURVE_FIGURES = 4
MAX_IMAGE_WIDTH = 1600  # px; a run's sample grid with Grad-CAM is ~2900 px wide
# what a "best run of each ..." figure shows: one run, picked for its val/acc
SELECTED = "one run each, the highest val/acc of its kind: single runs, not the settings"
BEST_RUN_FILES = (("confusion_matrix.png", "confusion matrix on test"),
                  ("reliability.png", "reliability diagram (calibration) on val and test"),
                  ("roc.png", "ROC and precision-recall on test"),
                  ("samples.png", "sample predictions on val (best epoch)"))


@dataclass
class Heading:
    level: int
    text: str
    anchor: str = ""


@dataclass
class Text:
    text: str
    kind: str = "p"  # "p", "question" (the study's question) or "note" (small print)


@dataclass
class Bullets:
    items: list[str]
    anchors: list[str] = field(default_factory=list)  # links, for a table of contents


@dataclass
class Table:
    """A table of text cells; ``numeric[i]``: right-align column i."""

    columns: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    row_ids: list[str] = field(default_factory=list)
    css_class: str = ""
    row_classes: list[str] = field(default_factory=list)  # a CSS class per row ("" = none)


@dataclass
class Image:
    """A PNG: ``name`` is its file name beside the Markdown file."""

    name: str
    png: bytes
    caption: str


Block = Heading | Text | Bullets | Table | Image


@dataclass
class Document:
    title: str
    blocks: list[Block]
    best_line: str = ""  # the best run of the report in one line (printed by the CLI)
    claims: list[Claim] = field(default_factory=list)  # the tested findings (findings.json)

    @property
    def images(self) -> list[Image]:
        return [b for b in self.blocks if isinstance(b, Image)]


def _fit_png(path: Path, max_width: int) -> bytes:
    """The PNG at ``path``, scaled down to ``max_width`` when wider: the page is ~1200 px
    wide, and a smaller file is what makes the HTML light enough to send by mail."""
    from PIL import Image as PILImage

    data = path.read_bytes()
    with PILImage.open(io.BytesIO(data)) as im:
        if im.width <= max_width:
            return data
        height = round(im.height * max_width / im.width)
        small = im.convert("RGB").resize((max_width, height), PILImage.LANCZOS)
    buf = io.BytesIO()
    small.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it: a report travels by
    mail, and the reader needs the study's folder, not the author's home directory."""
    try:
        return path.relative_to(Path.cwd()).as_posix() or "."
    except ValueError:
        return str(path)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "study"


def _fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "–"
    if kind == "frac":
        return f"{value:.4f}"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "s":
        return f"{value:.1f}"
    return f"{value:.4g}"


class _Builder:
    def __init__(self, root: Path, analyses: Sequence[A.StudyAnalysis], dpi: int) -> None:
        self.root = root
        self.analyses = analyses
        self.dpi = dpi
        self.blocks: list[Block] = []
        self.names: set[str] = set()
        # every run of the report: frozen runs share their feature store's cost among these
        self.costs: dict[str, Cost] = run_costs(r for an in analyses for r in an.study.runs)
        self.claims: list[Claim] = []

    def add(self, block: Block) -> None:
        self.blocks.append(block)

    def figure(self, fig: F.Figure | None, name: str, caption: str) -> None:
        if fig is None:
            return
        self.add(Image(self._unique(name), F.png_bytes(fig, dpi=self.dpi), caption))

    def file_image(self, path: Path, name: str, caption: str) -> None:
        self.add(Image(self._unique(name), _fit_png(path, MAX_IMAGE_WIDTH), caption))

    def _unique(self, name: str) -> str:
        base, k = name, 2
        while name in self.names:
            name = f"{base.removesuffix('.png')}-{k}.png"
            k += 1
        self.names.add(name)
        return name


# --------------------------------------------------------------------------- tables


def runs_table(an: A.StudyAnalysis, costs: dict[str, Cost] | None = None) -> Table:
    """Finished runs, best first: varied values, the metrics, size, training time and (when
    the runs recorded it) the cost per run; chance-level runs get a note and a row class."""
    metric_cols = [an.metric] if an.metric != "val/acc" else []
    metric_cols += ["val/acc", "test/acc", "test/macro_f1"] + (["test/auc"] if an.binary else [])
    metric_cols += leak_columns(an.finished)
    params = [p for p in an.params]
    columns = ["#", "run", *[p.name for p in params], *metric_cols, "params", "train time (s)",
               "best epoch"]
    rows = []
    for rank, run in enumerate(an.finished, 1):
        values = [_fmt(run.value(k), "frac" if A.is_fraction_metric(k) else "g")
                  for k in metric_cols]
        rows.append([str(rank), run.short_name, *[p.fmt(run.config.get(p.name)) for p in params],
                     *values, _fmt(run.value("model/params"), "int"),
                     _fmt(run.value("train/time_s"), "s"), _fmt(run.value("best_epoch"), "int")])
    numeric = [True, False, *[p.numeric for p in params], *[True] * (len(metric_cols) + 3)]
    # 95% intervals in columns of their own, so every figure cell stays a plain number
    shown = ["val/acc", "test/acc"] + (["test/auc"] if an.binary else [])
    columns += [f"{k} 95% CI" for k in shown] + ["test/ece"]
    for run, row in zip(an.finished, rows):
        row += [interval_text(run, k) for k in shown] + [_fmt(run.value("test/ece"), "frac")]
    numeric += [True] * (len(shown) + 1)
    table = Table(columns, rows, numeric, [r.name for r in an.finished], css_class="runs")
    _add_cost_column(table, an.finished, costs or {}, after="train time (s)")
    _add_chance_column(table, an.finished)
    return table


def _has_split(costs: dict[str, Cost], runs: Sequence[RunRecord]) -> bool:
    """Whether the runs recorded the split of their time (runs before it have train only)."""
    return any(r.value("time/eval_s") is not None and r.name in costs for r in runs)


def _add_cost_column(table: Table, runs: Sequence[RunRecord], costs: dict[str, Cost], *,
                     after: str) -> None:
    if not _has_split(costs, runs):
        return
    at = table.columns.index(after) + 1
    table.columns.insert(at, "cost/run (s)")
    table.numeric.insert(at, True)
    for row, run in zip(table.rows, runs):
        cost = costs.get(run.name)
        row.insert(at, _fmt(cost.total_s if cost else None, "s"))


def _add_chance_column(table: Table, runs: Sequence[RunRecord]) -> None:
    if not chance_count(runs):
        return
    table.columns.append("note")
    table.numeric.append(False)
    for row, run in zip(table.rows, runs):
        row.append(FLAG if at_chance(run) else "")
    table.row_classes = ["chance" if at_chance(r) else "" for r in runs]


def not_plotted_table(an: A.StudyAnalysis) -> Table:
    """Failed, diverged, pruned and incomplete runs with what is known about them."""
    columns = ["run", "status", *[p.name for p in an.params], "epochs run",
               f"best {an.metric} so far", "why"]
    rows = []
    for run in an.not_plotted:
        seen = [h[an.metric] for h in run.history if isinstance(h.get(an.metric), (int, float))]
        epochs = run.summary.get("epochs_run", len(run.history))
        rows.append([run.short_name, run.status,
                     *[p.fmt(run.config.get(p.name)) for p in an.params], str(epochs),
                     _fmt(max(seen) if seen else None, "frac"),
                     run.error or ("stopped early by the pruner" if run.status == "pruned"
                                   else "")])
    numeric = [False, False, *[p.numeric for p in an.params], True, True, False]
    return Table(columns, rows, numeric, [r.name for r in an.not_plotted], css_class="failed")


def _seed_interval(s: A.Stat | None) -> str:
    """The t interval of a mean over seeds (``–`` for fewer than two seeds)."""
    if s is None or s.n < 2:
        return "–"
    from scipy.stats import t

    half = float(t.ppf(0.975, s.n - 1)) * s.std / s.n ** 0.5
    # an accuracy cannot leave [0, 1], however few the seeds
    return f"[{max(0.0, s.mean - half):.3f}, {min(1.0, s.mean + half):.3f}]"


def strategy_table(rows: Sequence[A.StrategyRow], costs: dict[str, Cost] | None = None
                   ) -> Table:
    binary = any("test/auc" in r.stats for r in rows)
    keys = ["test/acc", "test/macro_f1"] + (["test/auc"] if binary else [])
    columns = ["dataset", "strategy", "best configuration", "chosen from", "seeds", *keys,
               "train time (s)", "trainable params"]
    out = []
    for row in rows:
        cells = []
        for key in (*keys, "train/time_s"):
            s = row.stats.get(key)
            kind = "frac" if A.is_fraction_metric(key) else "s"
            cells.append("–" if s is None else _fmt(s.mean, kind) + (
                f" ± {_fmt(s.std, kind)}" if s.n > 1 else ""))
        trainable = row.stats.get("model/trainable_params")
        chosen_from = f"{row.configs} of {row.tried}" if row.configs < row.tried \
            else str(row.tried)
        out.append([row.dataset, row.strategy, row.label, chosen_from, str(len(row.runs)),
                    *cells,
                    _fmt(trainable.mean if trainable else None, "int"),
                    _seed_interval(row.stats.get("test/acc"))])
    columns.append("test/acc 95% CI over seeds")
    numeric = [False, False, False, True, True, *[True] * (len(keys) + 3)]
    ids = [f"strategy:{r.dataset}:{r.strategy}" for r in rows]
    table = Table(columns, out, numeric, ids, css_class="strategies")
    _strategy_extras(table, rows, costs or {})
    return table


def _strategy_extras(table: Table, rows: Sequence[A.StrategyRow], costs: dict[str, Cost]
                     ) -> None:
    """The cost per run (mean ± std over the seeds) and how many seeds sat at chance."""
    if _has_split(costs, [r for row in rows for r in row.runs]):
        at = table.columns.index("train time (s)") + 1
        table.columns.insert(at, "cost/run (s)")
        table.numeric.insert(at, True)
        for cells, row in zip(table.rows, rows):
            totals = [costs[r.name].total_s for r in row.runs if r.name in costs]
            cells.insert(at, _mean_std(totals))
    if any(chance_count(row.runs) for row in rows):
        table.columns.append("at chance")
        table.numeric.append(True)
        for cells, row in zip(table.rows, rows):
            n = chance_count(row.runs)
            cells.append(f"{n} of {len(row.runs)}" if n else "0")
        table.row_classes = ["chance" if chance_count(r.runs) else "" for r in rows]


def _mean_std(values: Sequence[float]) -> str:
    if not values:
        return "–"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return _fmt(mean, "s")
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{_fmt(mean, 's')} ± {_fmt(std, 's')}"


# --------------------------------------------------------------------------- sections


def _line_factor(an: A.StudyAnalysis, x: A.Param) -> A.Param | None:
    """The factor drawn as separate lines: few values, boolean or categorical first."""
    others = [p for p in an.factors if p.name != x.name and not p.continuous]
    others.sort(key=lambda p: (not (p.boolean or not p.numeric), len(p.values)))
    return next((p for p in others if len(p.values) <= A.MAX_LEVELS), None)


def _averaged_over(an: A.StudyAnalysis, shown: Sequence[str]) -> list[str]:
    """The varied parameters a figure of ``shown`` averages over (datasets never are)."""
    return [p.name for p in an.params if p.name not in shown and p.name != A.FACET]


def _averaged_note(an: A.StudyAnalysis, shown: Sequence[str]) -> str:
    rest = _averaged_over(an, shown)
    if not rest:
        return ""
    return "Each point averages over " + ", ".join(rest) + " (error bars: ±1 std)."


def _study_section(b: _Builder, an: A.StudyAnalysis) -> None:
    study = an.study
    key = slug(study.name)
    b.add(Heading(2, f"Study: {study.name}", key))
    if study.question:
        b.add(Text(study.question[:1].upper() + study.question[1:], "question"))
    where = study.path.relative_to(b.root).as_posix() if study.path != b.root \
        else _shown_path(study.path)
    fixed = ", ".join(f"{k}={A.dataset_name(v)}" if k == A.FACET
                      else f"{k}={A.fmt_value(v, log=k in A.LOG_FIELDS)}"
                      for k, v in an.constants.items())
    b.add(Text(f"Folder {where}; compared on {an.metric} ({an.goal})"
               + (f"; fixed: {fixed}" if fixed else "") + ".", "note"))
    b.add(Heading(3, "Findings", f"{key}-findings"))
    b.add(Bullets(A.findings(an, b.costs) + chance_findings(an) + leak_findings(an.finished)))
    claims = study_claims(an)
    b.claims += claims
    if claims:
        b.add(Heading(3, "Tested differences", f"{key}-tests"))
        b.add(Bullets([c.text for c in claims]))  # word for word as in findings.json
        b.add(Text(adjustment_note(claims) + " How to read these: docs/REPORTS.md.", "note"))
    if an.finished:
        b.add(Heading(3, "Runs, best first", f"{key}-runs"))
        b.add(runs_table(an, b.costs))
        if _has_split(b.costs, an.finished):
            b.add(Text(cost_note(b.costs[r.name] for r in an.finished if r.name in b.costs),
                       "note"))
    if an.not_plotted:
        b.add(Heading(3, "Failed and pruned trials (not plotted)", f"{key}-failed"))
        b.add(not_plotted_table(an))
    if not an.finished:
        return
    facets = an.dataset_groups()
    facets = [(d, runs) for d, runs in facets if runs]
    if an.factors:
        b.add(Heading(3, f"{an.metric} against each parameter", f"{key}-params"))
        for x in an.factors:
            line = _line_factor(an, x)
            if x.continuous:
                note = "One point per run" + (f", coloured by {line.name}." if line else ".")
            else:
                note = _averaged_note(an, [x.name] + ([line.name] if line else [])) \
                    or f"{an.metric} against {x.name}."
            b.figure(F.metric_vs_param_figure(an, x, line, facets, an.metric),
                     f"{key}-{slug(an.metric)}-vs-{x.name}.png",
                     note + averaged_note(an.finished))
        b.add(Heading(3, "Learning curves", f"{key}-curves"))
        for color in an.factors[:MAX_CURVE_FIGURES]:
            style = next((p for p in an.factors if p.name != color.name and not p.continuous
                          and len(p.values) <= len(F.STYLES)), None)
            b.figure(F.learning_curves_figure(an, color, style, facets),
                     f"{key}-curves-{color.name}.png",
                     f"val/acc and train/loss per epoch, coloured by {color.name}.")
    names = {p.name: p for p in an.factors}
    if "width" in names and "depth" in names:
        b.add(Heading(3, "Width x depth", f"{key}-heatmap"))
        b.figure(F.heatmap_figure(an, names["width"], names["depth"], facets, an.metric),
                 f"{key}-width-depth.png", f"Mean {an.metric} in each width x depth cell"
                 + (", over " + ", ".join(rest) if (rest := _averaged_over(
                     an, ("width", "depth"))) else "") + "."
                 + (" The colour scale spans at least a run's typical 95% interval, so cells "
                    "within noise of each other look alike." if any(
                        interval(r, an.metric) for r in an.finished) else "")
                 + averaged_note(an.finished))
    if "train_size" in names:
        _efficiency_section(b, an, key)
    if any(name in names for name in SIZE_FIELDS):
        _cost_section(b, an, key)
    _per_class_section(b, an, key, facets)
    _best_run_section(b, an, key)


def _cost_section(b: _Builder, an: A.StudyAnalysis, key: str) -> None:
    """The metric against parameters, FLOPs and latency; the Pareto-optimal runs named."""
    groups = [(dataset, runs) for dataset, runs in an.dataset_groups() if runs]
    fig = cost_figure(groups, an.metric, an.goal)
    if fig is None:
        return
    b.add(Heading(3, "Accuracy against cost", f"{key}-cost"))
    b.add(Bullets(cost_findings(groups, an.metric, an.goal)))
    b.figure(fig, f"{key}-cost.png", f"{an.metric} against parameters, FLOPs and measured "
             "inference latency (log x); the line joins the Pareto-optimal runs"
             + (" of each dataset" if len(groups) > 1 else "") + ".")


def _efficiency_section(b: _Builder, an: A.StudyAnalysis, key: str) -> None:
    """Metric against training images per strategy, and where the curves cross."""
    for facet, runs in an.dataset_groups():
        curves = efficiency_curves(runs, an.metric)
        if not curves:
            continue
        where = f" ({facet})" if facet else ""
        b.add(Heading(3, f"Data efficiency{where}", f"{key}-efficiency{slug(facet or '')}"))
        b.add(Bullets(crossings(curves, an.metric) or ["Too few sizes to compare."]))
        b.figure(efficiency_figure(curves, an.metric),
                 f"{key}-efficiency{('-' + slug(facet)) if facet else ''}.png",
                 f"{an.metric} against training images per strategy (log x; mean and ± 1 "
                 "std over its runs at each size"
                 + (", whatever their " + ", ".join(others) if (others := _averaged_over(
                     an, ("strategy", "train_size", A.REPLICATE))) else "") + ")."
                 + averaged_note(runs))


def _per_class_section(b: _Builder, an: A.StudyAnalysis, key: str,
                       facets: Sequence[tuple[str | None, Sequence[RunRecord]]]) -> None:
    setting = next((p for p in an.factors if p.name == "strategy"), None) or next(
        (p for p in an.factors if not p.continuous and len(p.values) <= 6), None)
    added = False
    for dataset, runs in facets:
        if setting is not None:
            best = A.best_runs(runs, setting.name, an.metric, an.goal)
            chosen = {f"{setting.label(v)} ({r.short_name})": r for v, r in best.items()}
            palette = F.level_colors(setting)
            colors = [palette.get(v, "#57606a") for v in best]
            title = f"Test F1 per class: the best run of each {setting.name}"
        else:
            top = A.rank_runs(runs, an.metric, an.goal)[0]
            chosen = {top.short_name: top}
            colors = None
            title = "Test F1 per class of the best run"
        if dataset is not None:
            title += f" ({A.FACET}={dataset})"
        fig = F.per_class_f1_figure(chosen, title, colors)
        if fig is not None and not added:
            b.add(Heading(3, "Per-class F1", f"{key}-per-class"))
            added = True
        b.figure(fig, f"{key}-per-class-f1{'-' + slug(dataset) if dataset else ''}.png",
                 title + f" ({SELECTED}).")


def _best_run_section(b: _Builder, an: A.StudyAnalysis, key: str) -> None:
    best = an.best
    if best is None:
        return
    files = [(best.file(name), name, what) for name, what in BEST_RUN_FILES]
    files = [(p, n, w) for p, n, w in files if p is not None]
    b.add(Heading(3, f"Best run: {best.short_name}", f"{key}-best"))
    b.add(Text(f"{best.name} ({an.label(best)}): {an.metric} "
               f"{_fmt(best.value(an.metric), 'frac')}, test/acc "
               f"{_fmt(best.value('test/acc'), 'frac')} (95% CI "
               f"{interval_text(best, 'test/acc')}), best epoch "
               f"{_fmt(best.value('best_epoch'), 'int')}.", "note"))
    for path, name, what in files:
        b.file_image(path, f"{key}-best-{name}", f"{best.short_name}: {what}.")


def _strategy_section(b: _Builder) -> None:
    rows = A.strategy_rows(b.analyses)
    if not rows:
        return
    b.add(Heading(2, "Scratch vs frozen vs fine-tune", "strategies"))
    b.add(Text("For each dataset and strategy, the configuration with the best mean val/acc "
               "over all studies, among those run with the most seeds (\"chosen from\"); "
               "figures are on test, mean ± std over its seeds (one run: no ±). Settings "
               "that differ between the rows are in their labels.", "note"))
    b.add(strategy_table(rows, b.costs))
    claims = strategy_claims(rows, b.claims)
    if any(c.test != "unavailable" for c in claims):
        b.claims += claims
        b.add(Bullets([c.text for c in claims]))  # word for word as in findings.json
        b.add(Text(adjustment_note(claims) + " Pairs a study above already tested are not "
                   "repeated. How to read these: docs/REPORTS.md.", "note"))
    chosen = [r for row in rows for r in row.runs]
    split = _has_split(b.costs, chosen)
    if split:
        b.add(Text(cost_note(b.costs[r.name] for r in chosen if r.name in b.costs), "note"))
    b.figure(F.strategy_figure(rows, b.costs if split else None), "strategies.png",
             "Test accuracy, macro-F1 (and AUC), and "
             + ("the cost per run (training, evaluation, amortized feature extraction)"
                if split else "training time") + " per strategy and dataset."
             + averaged_note(chosen))
    for dataset in dict.fromkeys(r.dataset for r in rows):
        mine = [r for r in rows if r.dataset == dataset]
        best = [A.rank_runs(r.runs, "val/acc")[0] for r in mine]
        chosen = {f"{r.strategy} ({run.short_name})": run for r, run in zip(mine, best)}
        colors = [F.STRATEGY_COLORS.get(r.strategy, "#57606a") for r in mine]
        title = f"Test F1 per class, best run of each strategy ({A.FACET}={dataset})"
        b.figure(F.per_class_f1_figure(chosen, title, colors),
                 f"strategies-per-class-f1-{slug(dataset)}.png", title + f" ({SELECTED}).")


def _size_section(b: _Builder) -> None:
    fig = F.size_frontier_figure(b.analyses)
    if fig is None:
        return
    b.add(Heading(2, "Size and accuracy", "size"))
    b.figure(fig, "size-frontier.png",
             "val/acc against parameter count, every finished run of every study (their "
             "epochs and image sizes may differ); the dashed line joins the runs that no "
             "smaller model beats, by any margin (single runs, untested).")


def _overall_best(analyses: Sequence[A.StudyAnalysis]) -> str:
    lines = []
    for an in analyses:
        best = an.best
        if best is not None:
            lines.append(f"best {an.metric} {_fmt(best.value(an.metric), 'frac')} in "
                         f"{an.study.name} ({best.name}: {an.label(best)})")
        else:
            lines.append(f"{an.study.name}: no finished run")
    return "\n".join(lines)


def build_document(root: Path, studies: Sequence[Study], *, title: str | None = None,
                   dpi: int = 100) -> Document:
    """The whole report for the studies found under ``root``."""
    analyses = [A.analyze(s) for s in studies]
    b = _Builder(root, analyses, dpi)
    total = sum(len(s.runs) for s in studies)
    finished = sum(len(an.finished) for an in analyses)
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    b.add(Text(f"{total} runs ({finished} finished) in {len(studies)} "
               f"stud{'ies' if len(studies) != 1 else 'y'} under {_shown_path(root)}; "
               f"generated {stamp} by wbclf report.", "note"))
    for an in analyses:
        _study_section(b, an)
    _strategy_section(b)
    _size_section(b)
    sections = [blk for blk in b.blocks if isinstance(blk, Heading) and blk.level == 2]
    b.blocks.insert(1, Bullets([h.text for h in sections], [h.anchor for h in sections]))
    name = studies[0].name if len(studies) == 1 else root.name
    return Document(title or f"wbclf report: {name}", b.blocks, _overall_best(analyses),
                    b.claims)
