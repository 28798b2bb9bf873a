"""`wbclf report RUNS_DIR`: the local HTML/Markdown report, built from real runs on toy data.

The slow tests train tiny real runs (2 epochs at 32 px) into two studies -- batch_norm x lr
and width x depth -- and add hand-made failed, diverged and pruned trials; every number the
report prints is checked against the runs' summary.json.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import REPO, run_cli
from wbclf.reporting.main import main as report_main
from wbclf.reporting.main import write_local_report
from wbclf.reporting import analysis as A
from wbclf.reporting.collect import RunRecord, Study, collect_studies

TINY = {"image_size": 32, "width": 8, "depth": 3, "epochs": 2, "limit_per_class": 30,
        "wandb_mode": "disabled", "num_workers": "0", "log_samples": 8}
BN_GRID = [(bn, lr) for bn in (True, False) for lr in (3.0e-3, 1.0e-2)]
SIZE_GRID = [(w, d) for w in (4, 8) for d in (2, 3)]
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "area", "base", "source", "wbr"}


# --------------------------------------------------------------------------- helpers


class StrictParser(HTMLParser):
    """Fails on a closing tag that does not match the open one; collects what the tests read."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.headings: list[str] = []
        self.rows: dict[str, list[str]] = {}
        self.tables: list[list[str]] = []  # header cells of each table
        self.findings: list[str] = []
        self.srcs: list[str] = []  # every src/href
        self.images = 0
        self._text: list[str] | None = None
        self._row: str | None = None
        self._cell: list[str] | None = None
        self._in_findings = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attr = dict(attrs)
        if tag not in VOID:
            self.stack.append(tag)
        if tag in ("h1", "h2", "h3", "li", "th", "td"):
            self._text = []
        if "src" in attr or "href" in attr:
            self.srcs.append(attr.get("src") or attr.get("href") or "")
        self.images += tag == "img"
        if tag == "tr":
            self._row = attr.get("data-run")
            if self._row:
                self.rows[self._row] = []
        if tag == "thead":
            self.tables.append([])
        if tag == "ul" and attr.get("class") == "findings":
            self._in_findings = True

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1:]}>"
        self.stack.pop()
        text = "".join(self._text or [])
        if tag in ("h1", "h2", "h3"):
            self.headings.append(text)
        elif tag == "th":
            self.tables[-1].append(text)
        elif tag == "td" and self._row:
            self.rows[self._row].append(text)
        elif tag == "li" and self._in_findings:
            self.findings.append(text)
        elif tag == "ul":
            self._in_findings = False
        elif tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


def parse_html(path: Path) -> StrictParser:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    parser = StrictParser()
    parser.feed(text)
    parser.close()
    assert parser.stack == [], f"unclosed tags: {parser.stack}"
    return parser


def assert_self_contained(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"\b(?:src|href)\s*=\s*[\"'](?!data:image/png;base64,|#)", text)
    assert "<script" not in text and "@import" not in text and "url(" not in text


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _train_grid(dataset: Path, folder: Path, grid: list[dict]) -> None:
    from wbclf.config import build_config
    from wbclf.training.run import train_run

    for i, params in enumerate(grid):
        cfg = build_config({**TINY, "dataset": str(dataset), "out_dir": str(folder),
                            "run_name": f"trial-{i:04d}", **params})
        train_run(cfg)


def _hand_made_trial(folder: Path, name: str, template: Path, config: dict,
                     summary_data: dict | None, history: list[dict]) -> Path:
    """A trial directory written by hand: its config, its metrics so far, maybe a summary."""
    run = folder / name
    run.mkdir(parents=True)
    cfg = yaml.safe_load((template / "config.yaml").read_text())
    cfg.update(config, run_name=name)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    if summary_data is not None:
        (run / "summary.json").write_text(json.dumps(summary_data))
    return run


def _small_sweep_file(folder: Path, dataset: Path) -> Path:
    """sweeps/scratch_bn.yaml cut down to batch_norm x 2 learning rates on tiny toy runs."""
    spec = yaml.safe_load((REPO / "sweeps" / "scratch_bn.yaml").read_text())
    spec["parameters"] = {
        "batch_norm": {"values": [True, False]}, "lr": {"values": [3.0e-3, 1.0e-2]},
        "dataset": {"value": str(dataset)},
        **{k: {"value": v} for k, v in TINY.items()}}
    path = folder / "scratch_bn.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def studies_root(tmp_path_factory, toy_lesions) -> Path:
    """runs/bn: a real local sweep, batch_norm x lr, plus hand-made diverged, crashed and pruned
    trials; runs/size: width x depth runs of `wbclf train` (no sweep)."""
    base = tmp_path_factory.mktemp("report")
    root = base / "runs"
    bn = root / "bn"
    sweep_file = _small_sweep_file(base, toy_lesions)
    proc = run_cli("sweep", str(sweep_file), "--out", str(bn))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    template = bn / "trial-0000"
    _hand_made_trial(bn, "trial-0004", template, {"batch_norm": False, "lr": 10.0},
                     {"status": "diverged", "epochs_run": 1,
                      "error": "diverged at epoch 1, step 1 (lr=10): loss is NaN"},
                     [{"epoch": 1, "train/loss": 9.0, "val/acc": 0.5}])
    _hand_made_trial(bn, "trial-0005", template, {"batch_norm": True, "lr": 10.0}, None, [])
    _hand_made_trial(bn, "trial-0006", template, {"batch_norm": True, "lr": 1.0e-4},
                     {"status": "pruned", "stopped": "pruned", "epochs_run": 1, "val/acc": 0.5,
                      "test/acc": 0.5}, [{"epoch": 1, "train/loss": 0.7, "val/acc": 0.5}])
    _train_grid(toy_lesions, root / "size",
                [{"width": w, "depth": d, "epochs": 1} for w, d in SIZE_GRID])
    return root


# --------------------------------------------------------------------------- slow: real runs


@pytest.mark.slow
def test_sweep_report_sections_and_numbers_match_summaries(studies_root, tmp_path):
    bn = studies_root / "bn"
    out = tmp_path / "bn-report" / "report.html"
    assert report_main([str(bn), "-o", str(out)]) == 0
    page = parse_html(out)
    assert_self_contained(out)
    for heading in ("Study: scratch_bn", "Findings", "Runs, best first",
                    "Failed and pruned trials (not plotted)", "val/acc against each parameter",
                    "Learning curves", "Per-class F1"):
        assert heading in page.headings, heading
    assert any(h.startswith("Best run: trial-") for h in page.headings)

    runs = {f"trial-{i:04d}": summary(bn / f"trial-{i:04d}") for i in range(len(BN_GRID))}
    # the table: exactly the finished runs, best first, every number from summary.json
    header = page.tables[0]
    finished = [k for k in page.rows if k in runs]
    assert finished == sorted(runs, key=lambda k: (-runs[k]["val/acc"], k))
    for key, s in runs.items():
        row = dict(zip(header, page.rows[key]))
        for metric in ("val/acc", "test/acc", "test/macro_f1", "test/auc"):
            assert row[metric] == f"{s[metric]:.4f}", (key, metric)
        assert row["params"] == f"{s['model/params']:,}"
        assert row["train time (s)"] == f"{s['train/time_s']:.1f}"
    # failed, crashed and pruned trials: listed in their own table, never among the results
    failed_header = page.tables[1]
    for name, status in (("trial-0004", "diverged"), ("trial-0005", "incomplete"),
                         ("trial-0006", "pruned")):
        row = dict(zip(failed_header, page.rows[name]))
        assert row["status"] == status
    assert "diverged at epoch 1" in dict(zip(failed_header, page.rows["trial-0004"]))["why"]

    # the findings: best run and the batch-norm effect, recomputed here from the summaries
    best = finished[0]
    text = " ".join(page.findings)
    assert f"The best run is {best} " in text and f"val/acc {runs[best]['val/acc']:.3f}" in text
    config = {k: {p: yaml.safe_load((bn / k / "config.yaml").read_text())[p]
                  for p in ("batch_norm", "lr")} for k in runs}
    diffs = []
    for lr in (3.0e-3, 1.0e-2):
        on = [runs[k]["val/acc"] for k in runs if config[k] == {"batch_norm": True, "lr": lr}]
        off = [runs[k]["val/acc"] for k in runs if config[k] == {"batch_norm": False, "lr": lr}]
        diffs.append(np.mean(on) - np.mean(off))
    # the t interval over the 2 learning rates (1 degree of freedom: t = 12.706)
    mean, half = np.mean(diffs), 12.7062 * np.std(diffs, ddof=1) / np.sqrt(2)
    ci = f"(95% CI {100 * (mean - half):+.1f} to {100 * (mean + half):+.1f} points over them"
    if mean - half > 0 or mean + half < 0:
        verb = "raised" if mean > 0 else "lowered"
        expected = (f"Batch norm {verb} mean val/acc by {100 * abs(mean):.1f} points across 2 "
                    f"learning rates {ci}")
    else:
        expected = (f"Batch norm changed mean val/acc by {100 * mean:+.1f} points across 2 "
                    f"learning rates, within noise {ci}")
    assert expected in text
    assert "3 of 7 trials have no final figures" in text

    # the Markdown twin says the same and its pictures are there
    md = out.with_suffix(".md").read_text()
    assert "## Study: scratch_bn" in md and f"{runs[best]['val/acc']:.4f}" in md
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert pictures and all((out.parent / p).is_file() for p in pictures)
    assert len(pictures) == page.images


@pytest.mark.slow
def test_failed_trials_are_not_plotted(studies_root):
    (study,) = collect_studies(studies_root / "bn")
    an = A.analyze(study)
    assert {r.short_name for r in an.not_plotted} == {"trial-0004", "trial-0005", "trial-0006"}
    assert all(r.finished for r in an.finished) and len(an.finished) == 4
    # lr=10 and lr=1e-4 exist only in failed/pruned trials: no point is drawn for them
    cells = A.aggregate(an.finished, ("lr",), "val/acc")
    assert set(cells) == {(3.0e-3,), (1.0e-2,)}


@pytest.mark.slow
def test_mixed_folder_has_both_studies_heatmap_and_frontier(studies_root, tmp_path):
    out = tmp_path / "all.html"
    result = write_local_report(studies_root, out)
    page = parse_html(out)
    assert_self_contained(out)
    assert "Study: scratch_bn" in page.headings and "Study: size" in page.headings
    assert "Width x depth" in page.headings
    assert "Size and accuracy" in page.headings
    # strategies did not vary: no strategy section
    assert "Scratch vs frozen vs fine-tune" not in page.headings
    size_runs = {f"size/trial-{i:04d}": summary(studies_root / "size" / f"trial-{i:04d}")
                 for i in range(len(SIZE_GRID))}
    header = next(t for t in page.tables if "width" in t and "depth" in t)
    assert header[:5] == ["#", "run", "width", "depth", "val/acc"]
    for key, s in size_runs.items():
        assert dict(zip(header, page.rows[key]))["val/acc"] == f"{s['val/acc']:.4f}"
    best = max(size_runs.values(), key=lambda s: s["val/acc"])
    assert f"best val/acc {best['val/acc']:.4f} in size" in result.best_line
    names = sorted(p.name for p in result.assets.glob("*.png"))
    assert "size-width-depth.png" in names and "size-frontier.png" in names


@pytest.mark.slow
def test_rewrite_removes_stale_pictures(studies_root, tmp_path):
    out = tmp_path / "r.html"
    write_local_report(studies_root, out)
    stale = out.parent / "r_files" / "old-figure.png"
    stale.write_bytes(b"x")
    result = write_local_report(studies_root / "size", out)
    assert not stale.exists()
    assert sorted(result.assets.iterdir())
    assert "Study: scratch_bn" not in out.read_text()


@pytest.mark.slow
def test_cli_report_of_the_sweep_folder(studies_root):
    """`wbclf report DIR -o DIR/report.html` as a user runs it (a subprocess)."""
    bn = studies_root / "bn"
    proc = run_cli("report", str(bn), "-o", str(bn / "report.html"))
    assert proc.returncode == 0, proc.stderr
    html = bn / "report.html"
    page = parse_html(html)
    assert_self_contained(html)
    assert "Study: scratch_bn" in page.headings
    assert "val/acc against each parameter" in page.headings
    best = max(summary(t)["val/acc"] for t in bn.glob("trial-000[0-3]"))
    assert f"best val/acc {best:.4f} in scratch_bn" in proc.stdout
    assert f"{best:.4f}" in html.read_text()
    assert (bn / "report.md").is_file() and (bn / "report_files").is_dir()
    # a report inside the folder is not mistaken for a run on the next pass
    assert len(collect_studies(bn)[0].runs) == 7


# --------------------------------------------------------------------------- fast


def _record(name: str, study: str = "s", status: str = "finished", **config) -> RunRecord:
    return RunRecord(name=name, path=None, study=study, config=config, status=status)


def test_varied_params_ignore_bookkeeping_and_order_by_sweep():
    runs = [_record("a", lr=1e-3, batch_norm=True, out_dir="x", run_name="a", seed=0),
            _record("b", lr=1e-2, batch_norm=False, out_dir="y", run_name="b", seed=1)]
    params = A.varied_params(runs, order=["batch_norm", "lr"])
    assert [p.name for p in params] == ["batch_norm", "lr", "seed"]
    lr = params[1]
    assert lr.log and lr.numeric and lr.fmt(1e-2) == "1.0e-2"
    assert params[0].boolean and not params[0].numeric


def test_seeds_give_mean_and_std_and_a_noise_finding():
    runs = []
    for bn, base in ((True, 0.80), (False, 0.70)):
        for seed, noise in enumerate((-0.01, 0.0, 0.01)):
            run = _record(f"{bn}-{seed}", batch_norm=bn, seed=seed, lr=1e-3)
            run.summary = {"val/acc": base + noise, "status": "finished"}
            runs.append(run)
    an = A.analyze(Study("s", Path("."), runs))
    cells = A.aggregate(an.finished, ("batch_norm",), "val/acc")
    assert cells[(True,)].mean == pytest.approx(0.80)
    assert cells[(True,)].std == pytest.approx(0.01)
    assert cells[(True,)].n == 3
    text = " ".join(A.findings(an))
    # Welch: 0.10 +- t(0.975, 4) * sqrt(2 * 0.01^2 / 3)
    assert ("Batch norm raised mean val/acc from 0.700 to 0.800 (+10.0 points; 3 vs 3 runs; "
            "95% CI +7.7 to +12.3 points)") in text
    assert "3 seeds" in text and "averaged 1.0 points" in text
    # t(0.975, 4) * 0.01 * sqrt(2 / 3): the half-width of an unpaired 95% interval
    assert "with 3 seeds a difference between two settings below about 2.3 points cannot" in text
    # one point apart with two points of spread between seeds: no direction is claimed
    for run in runs:  # batch norm 0.78, 0.80, 0.82; without 0.77, 0.79, 0.81
        base = 0.78 if run.config["batch_norm"] else 0.77
        run.summary["val/acc"] = base + 0.02 * run.config["seed"]
    text = " ".join(A.findings(A.analyze(Study("s", Path("."), runs))))
    assert ("Batch norm changed mean val/acc from 0.790 to 0.800 (+1.0 points, within noise; "
            "3 vs 3 runs; 95% CI -3.5 to +5.5 points)") in text


def _findings_of(cells: dict[tuple, float]) -> str:
    runs = []
    for i, ((bn, lr), acc) in enumerate(cells.items()):
        run = _record(f"r{i}", batch_norm=bn, lr=lr)
        run.summary = {"val/acc": acc, "status": "finished"}
        runs.append(run)
    return " ".join(A.findings(A.analyze(Study("s", Path("."), runs))))


def test_a_factor_effect_across_settings_carries_its_interval():
    lrs = (3e-4, 1e-3, 3e-3, 1e-2)
    # the demo's shape: two cells nearly equal, two far apart; the mean says +4.3 points.
    # differences 0.7, -0.7, 7.9, 9.3: sd 5.03, se 2.52, t(0.975, 3) = 3.182
    noisy = _findings_of({**{(False, lr): a for lr, a in zip(lrs, (0.629, 0.649, 0.656, 0.629))},
                          **{(True, lr): a for lr, a in zip(lrs, (0.636, 0.642, 0.735, 0.722))}})
    assert ("Batch norm changed mean val/acc by +4.3 points across 4 learning rates, within "
            "noise (95% CI -3.7 to +12.3 points over them; higher at 3, lower at 1; per "
            "learning rate: see the tested differences)") in noisy
    assert "raised" not in noisy and "largest" not in noisy
    # the best run's val/acc is a maximum over the runs: the sentence says it flatters
    assert "val/acc 0.735 (the highest of 8 runs, so biased upward)." in noisy
    steady = _findings_of({**{(False, lr): a for lr, a in zip(lrs, (0.60, 0.62, 0.64, 0.61))},
                           **{(True, lr): a for lr, a in zip(lrs, (0.65, 0.68, 0.695, 0.675))}})
    # differences 5.0, 6.0, 5.5, 6.5: mean 5.75, sd 0.645, t(0.975, 3) = 3.182
    assert ("Batch norm raised mean val/acc by 5.8 points across 4 learning rates (95% CI +4.7 "
            "to +6.8 points over them; higher at 4, lower at 0)") in steady
    single = _findings_of({(False, 1e-3): 0.60, (True, 1e-3): 0.70})
    assert ("Lr" not in single and "Batch norm changed mean val/acc from 0.600 to 0.700 "
            "(+10.0 points; 1 vs 1 runs, too few for an interval: see the tested differences)"
            ) in single


def test_the_best_level_per_setting_is_never_a_claim():
    lrs = (1e-3, 3e-3, 1e-2)
    text = _findings_of({**{(False, lr): a for lr, a in zip(lrs, (0.70, 0.66, 0.60))},
                         **{(True, lr): a for lr, a in zip(lrs, (0.66, 0.71, 0.62))}})
    assert ("the learning rate with the highest mean differed between batch-norm settings: "
            "1.0e-3 with batch_norm=False, 3.0e-3 with batch_norm=True (untested here; see the "
            "tested differences)") in text
    assert "depended" not in text


def test_a_trend_is_named_only_when_it_is_significant():
    def trend(accs):
        runs = []
        for i, acc in enumerate(accs):
            run = _record(f"r{i}", dropout=round(0.05 * i + 0.013 * (i % 3), 4))
            run.summary = {"val/acc": acc, "status": "finished"}
            runs.append(run)
        return " ".join(A.findings(A.analyze(Study("s", Path("."), runs))))

    many = list(range(12))
    rising = trend([0.60 + 0.01 * i for i in many])
    assert "val/acc rose with dropout (Spearman ρ = +1.00, p = " in rising
    # a rank correlation of +0.49 over 12 runs: what noise gives one time in ten
    noisy = trend([0.60, 0.62, 0.58, 0.66, 0.61, 0.59, 0.64, 0.67, 0.63, 0.60, 0.68, 0.65])
    assert ("val/acc showed no significant trend with dropout (Spearman ρ = +0.49, p = 0.1)"
            in noisy)


def test_strategy_rows_pick_best_config_per_dataset():
    runs = []
    for dataset in ("melanoma", "plant-disease"):
        for strategy, acc in (("scratch", 0.6), ("frozen", 0.7), ("finetune", 0.9)):
            for lr, bonus in ((1e-3, 0.0), (1e-2, -0.1)):
                for seed in (0, 1):
                    run = _record(f"{dataset}-{strategy}-{lr}-{seed}", dataset=dataset,
                                  strategy=strategy, lr=lr, seed=seed, model="m")
                    run.summary = {"val/acc": acc + bonus + seed / 100,
                                   "test/acc": acc + bonus, "train/time_s": 10.0 + seed}
                    runs.append(run)
    an = A.analyze(Study("s", Path("."), runs))
    rows = A.strategy_rows([an])
    assert [(r.dataset, r.strategy) for r in rows][:3] == [
        ("melanoma", "scratch"), ("melanoma", "frozen"), ("melanoma", "finetune")]
    finetune = rows[2]
    assert {r.config["lr"] for r in finetune.runs} == {1e-3} and len(finetune.runs) == 2
    assert finetune.stats["test/acc"].mean == pytest.approx(0.9)
    assert finetune.stats["train/time_s"].std == pytest.approx(np.std([10, 11], ddof=1))


def _write_run(folder: Path, config: dict, summary_data: dict, history: list[dict]) -> None:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "summary.json").write_text(json.dumps(summary_data))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))


def test_strategy_section_from_run_directories(tmp_path):
    """Run directories of three strategies (written by hand): the comparison table and plot."""
    root = tmp_path / "runs"
    for i, (strategy, acc, took) in enumerate((("scratch", 0.61, 30.0), ("frozen", 0.72, 4.0),
                                               ("finetune", 0.91, 60.0))):
        for seed in (0, 1):
            config = {"dataset": "melanoma", "model": "tf_efficientnet_lite0",
                      "strategy": strategy, "lr": 1e-3, "seed": seed, "run_name": f"r{i}{seed}"}
            # the second seeds a little off each other's pattern: the seeds disagree on the
            # differences, so the t-test over them has a spread to work with
            wobble = {("scratch", 1): 0.005, ("frozen", 1): 0.01}.get((strategy, seed), 0.0)
            s = {"status": "finished", "val/acc": acc + seed / 100,
                 "test/acc": acc + seed / 50 + wobble,
                 "test/macro_f1": acc - 0.01, "test/auc": acc + 0.02, "train/time_s": took,
                 "model/params": 4_000_000, "model/trainable_params": 1281 if strategy ==
                 "frozen" else 4_000_000, "test/f1/Benign": acc, "test/f1/Malignant": acc - 0.02,
                 "best_epoch": 2}
            history = [{"epoch": e, "val/acc": acc - 0.1 / e, "train/loss": 1 / e}
                       for e in (1, 2)]
            _write_run(root / f"{strategy}-{seed}", config, s, history)
    out = tmp_path / "report.html"
    write_local_report(root, out)
    page = parse_html(out)
    assert "Scratch vs frozen vs fine-tune" in page.headings
    header = next(t for t in page.tables if "best configuration" in t)
    assert header[:5] == ["dataset", "strategy", "best configuration", "chosen from", "seeds"]
    row = dict(zip(header, page.rows["strategy:melanoma:finetune"]))
    assert row["chosen from"] == "1"
    accs = [0.91, 0.93]
    assert row["test/acc"] == f"{np.mean(accs):.4f} ± {np.std(accs, ddof=1):.4f}"
    assert row["seeds"] == "2" and row["trainable params"] == "4,000,000"
    # t interval over the 2 seeds: 0.92 ± 12.706 * 0.01414 / sqrt(2), capped at 1
    assert row["test/acc 95% CI over seeds"] == "[0.793, 1.000]"
    assert dict(zip(header, page.rows["strategy:melanoma:frozen"]))["trainable params"] == "1,281"
    assert (out.parent / "report_files" / "strategies.png").is_file()
    # each pair of strategies is tested (paired t over the 2 shared seeds), in findings.json;
    # the study itself already set its best (finetune) against the runner-up (frozen): that
    # pair is not tested a second time in the strategy section
    found = json.loads((tmp_path / "findings.json").read_text())
    claims = [c for c in found if c["kind"] == "strategy"]
    assert sorted((c["a"], c["b"]) for c in claims) == [
        ("melanoma finetune", "melanoma scratch"), ("melanoma frozen", "melanoma scratch")]
    assert all(c["test"] == "paired_t_over_seeds" and c["n_seeds"] == 2 for c in claims)
    assert [(c["a"], c["b"]) for c in found if c["kind"] == "best" and c["metric"] ==
            "test/acc"] == [("strategy=finetune", "strategy=frozen")]
    html = out.read_text()
    assert all(c["text"] in html for c in claims)


def test_the_strategy_row_is_a_replicated_configuration_labelled_with_its_budget(tmp_path):
    """A lucky single run does not outrank a mean over seeds, and settings that differ
    between the rows (epochs here) are in the labels."""
    root = tmp_path / "runs"
    runs = [("scratch", 1e-2, 15, 0, 0.90)]  # one lucky run of a swept lr
    runs += [("scratch", 1e-3, 15, seed, 0.80 + seed / 100) for seed in (0, 1, 2)]
    runs += [("frozen", 1e-3, 5, seed, 0.75 + seed / 100) for seed in (0, 1, 2)]
    for i, (strategy, lr, epochs, seed, acc) in enumerate(runs):
        config = {"dataset": "melanoma", "model": "scratch" if strategy == "scratch" else
                  "tf_efficientnet_lite0", "strategy": strategy, "lr": lr, "epochs": epochs,
                  "seed": seed, "run_name": f"r{i}"}
        if strategy == "frozen":
            config["augment"] = "light"  # a setting the scratch runs' configs do not have
        s = {"status": "finished", "val/acc": acc, "test/acc": acc - 0.02, "best_epoch": 1,
             "test/macro_f1": acc - 0.03, "train/time_s": 5.0}
        _write_run(root / f"r{i}", config, s, [{"epoch": 1, "val/acc": acc}])
    an = A.analyze(collect_studies(root)[0])
    rows = {r.strategy: r for r in A.strategy_rows([an])}
    scratch = rows["scratch"]
    assert {r.config["lr"] for r in scratch.runs} == {1e-3} and len(scratch.runs) == 3
    assert (scratch.configs, scratch.tried) == (1, 2)
    assert scratch.label.endswith("augment unset epochs=15")
    assert rows["frozen"].label.endswith("augment=light epochs=5")
    out = tmp_path / "r.html"
    write_local_report(root, out)
    page = parse_html(out)
    header = next(t for t in page.tables if "best configuration" in t)
    assert dict(zip(header, page.rows["strategy:melanoma:scratch"]))["chosen from"] == "1 of 2"


def test_collect_lists_sweep_trials_without_run_directory(tmp_path):
    sweep = tmp_path / "sw"
    (sweep / "params").mkdir(parents=True)
    (sweep / "logs").mkdir()
    (sweep / "sweep.json").write_text(json.dumps({"name": "scratch_bn"}))
    (sweep / "params" / "trial-0000.yaml").write_text(
        yaml.safe_dump({"wandb_version": 1, "lr": {"value": 0.1}, "batch_norm": {"value": True}}))
    (sweep / "logs" / "trial-0000.log").write_text("loading\nwbclf: error: dataset not found\n")
    (study,) = collect_studies(tmp_path)
    (run,) = study.runs
    assert study.name == "scratch_bn" and run.status == "incomplete"
    assert run.config == {"lr": 0.1, "batch_norm": True}
    assert run.error == "wbclf: error: dataset not found"


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert report_main([str(tmp_path / "missing")]) == 2
    assert report_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("wbclf: error: ") for line in err)
    assert "no run directories" in err[1]
    assert report_main([str(tmp_path), "--dry-run"]) == 2


def test_same_sweep_twice_keeps_names_apart(tmp_path):
    for name in ("a", "b"):
        folder = tmp_path / name
        done = {"status": "finished", "val/acc": 0.5, "test/acc": 0.5}
        _write_run(folder / "trial-0000", {"lr": 0.1}, done, [])
        (folder / "sweep.json").write_text(json.dumps({"name": "scratch_bn"}))
    names = [s.name for s in collect_studies(tmp_path)]
    assert names == ["scratch_bn (a)", "scratch_bn (b)"]


def test_pareto_front():
    from wbclf.reporting.figures import pareto_front

    points = [(10, 0.5), (20, 0.4), (30, 0.7), (30, 0.6), (40, 0.7), (50, 0.8)]
    assert pareto_front(points) == [(10, 0.5), (30, 0.7), (50, 0.8)]


def test_search_study_on_two_datasets_renders(tmp_path):
    """A Bayesian-style study (continuous lr and dropout) on two datasets with seeds: drawn run
    by run, faceted by dataset, never averaged across datasets."""
    rng = np.random.default_rng(0)
    root = tmp_path / "bayes"
    for i in range(24):
        dataset = ("melanoma", "plant-disease")[i % 2]
        lr = float(10 ** rng.uniform(-4, -1.5))
        width = int(rng.choice([8, 16, 32]))
        acc = float(np.clip(0.9 - abs(np.log10(lr) + 3) * 0.1 + rng.normal(0, 0.02), 0, 1))
        s = {"status": "finished", "val/acc": acc, "test/acc": acc - 0.02,
             "test/macro_f1": acc - 0.03, "model/params": width * 1000,
             "train/time_s": width / 4, "test/f1/a": acc, "test/f1/b": acc - 0.05}
        history = [{"epoch": e, "val/acc": acc - 0.05 / e, "train/loss": 1 / e} for e in (1, 2, 3)]
        config = {"dataset": dataset, "lr": lr, "width": width,
                  "dropout": float(rng.uniform(0, 0.5)), "seed": i % 3}
        _write_run(root / f"trial-{i:04d}", config, s, history)
    out = tmp_path / "r.html"
    write_local_report(root, out)
    page = parse_html(out)
    assert_self_contained(out)
    text = " ".join(page.findings)
    assert "On melanoma: The best run is" in text and "On plant-disease: The best run is" in text
    assert "Spearman ρ" in text
    an = A.analyze(collect_studies(root)[0])
    assert an.param("lr").continuous and an.dataset is not None
    best_melanoma = A.rank_runs([r for r in an.finished if r.config["dataset"] == "melanoma"],
                                "val/acc")[0]
    assert f"On melanoma: The best run is {best_melanoma.short_name} " in text
    assert "Size and accuracy" in page.headings


def test_averaged_figures_say_what_they_average_over(tmp_path):
    root = tmp_path / "runs"
    for width in (8, 16):
        for depth in (2, 3):
            for lr in (1e-3, 1e-2):
                name = f"w{width}-d{depth}-lr{lr}"
                acc = 0.6 + width / 100 + depth / 100 - (0.2 if lr == 1e-2 else 0)
                _write_run(root / name, {"dataset": "melanoma", "width": width, "depth": depth,
                                         "lr": lr, "run_name": name},
                           {"status": "finished", "val/acc": acc, "test/acc": acc,
                            "test/f1/Benign": acc, "test/f1/Malignant": acc - 0.02,
                            "best_epoch": 1}, [{"epoch": 1, "val/acc": acc}])
    out = tmp_path / "report.html"
    write_local_report(root, out)
    # a bad learning rate is in every cell's mean: the caption names what it averages over
    html = out.read_text()
    assert "Mean val/acc in each width x depth cell, over lr." in html
    # these runs carry no intervals: the caption does not claim a noise-wide colour scale
    assert "The colour scale spans" not in html
    # the per-class chart shows one run per setting, picked on val: its caption says so
    assert re.search(r"Test F1 per class: the best run of each (width|depth) \(one run each, "
                     r"the highest val/acc of its kind: single runs, not the settings\)\.", html)


def test_unmatched_cells_are_not_averaged_as_if_they_matched():
    # batch norm off diverged at lr=1e-1 (no finished run): lr=1e-1 would be averaged over
    # the batch-norm-on run alone, and win for that reason
    text = _findings_of({(True, 1e-3): 0.70, (True, 1e-2): 0.72, (True, 1e-1): 0.74,
                         (False, 1e-3): 0.60, (False, 1e-2): 0.62})
    assert ("Across learning rates (over the batch-norm settings every learning rate ran "
            "with: True), val/acc was highest at lr=1.0e-1 (one run: 0.740)") in text
    # the two batch-norm levels share one learning rate: compared there only
    one = _findings_of({(True, 1e-3): 0.70, (True, 1e-2): 0.72, (False, 1e-3): 0.60})
    assert ("At lr=1.0e-3, the one learning rate both ran, batch norm changed mean val/acc "
            "from 0.600 to 0.700 (+10.0 points; 1 vs 1 runs, too few") in one
    # and none: no difference of means at all
    none = _findings_of({(True, 1e-3): 0.70, (False, 1e-2): 0.60})
    assert ("Batch norm: its levels ran at different learning rates, so their means are not "
            "compared.") in none


def test_the_smaller_model_sentence_says_it_compares_single_runs():
    runs = []
    for width, acc in ((8, 0.795), (16, 0.80), (32, 0.70)):
        run = _record(f"w{width}", width=width)
        run.summary = {"val/acc": acc, "status": "finished", "model/params": width * 1000}
        runs.append(run)
    text = " ".join(A.findings(A.analyze(Study("s", Path("."), runs))))
    assert ("The smallest model within 1.0 points of the best, w8 (width=8), has 8,000 "
            "parameters, 2.0x fewer than the best (val/acc 0.795; single runs, untested)."
            ) in text


def test_findings_without_spread_or_shared_settings_claim_nothing():
    # every learning rate moved val/acc by exactly 10 points: no spread to judge noise by
    same = _findings_of({(False, 1e-3): 0.6, (True, 1e-3): 0.7, (False, 1e-2): 0.5,
                         (True, 1e-2): 0.6})
    assert ("Batch norm changed mean val/acc by +10.0 points at each of 2 learning rates: no "
            "spread between them to judge noise by") in same and "95% CI" not in same
    # no batch-norm setting is shared by all three learning rates
    apart = _findings_of({(True, 1e-3): 0.7, (False, 1e-2): 0.6, (True, 1e-1): 0.65})
    assert ("The learning rates ran at different batch-norm settings (no batch norm is shared "
            "by all), so their means are not compared.") in apart
    assert ("Batch norm: its levels ran at different learning rates, so their means are not "
            "compared.") in apart


def test_the_best_run_of_a_metric_to_minimize_is_biased_downward():
    runs = []
    for i, loss in enumerate((0.5, 0.4, 0.6)):
        run = _record(f"r{i}", lr=10.0 ** -(i + 2))
        run.summary = {"val/loss": loss, "status": "finished"}
        runs.append(run)
    an = A.analyze(Study("s", Path("."), runs, metric="val/loss", goal="minimize"))
    text = " ".join(A.findings(an))
    assert "val/loss 0.4 (the lowest of 3 runs, so biased downward)" in text, text


def test_the_heatmap_colours_do_not_stretch_noise_into_a_gradient():
    from wbclf.reporting import figures as F

    runs = []
    for width in (8, 16):
        for depth in (2, 3):
            acc = 0.70 + 0.002 * width / 8 + 0.001 * depth  # cells within 0.5 points
            run = _record(f"w{width}d{depth}", width=width, depth=depth)
            run.summary = {"val/acc": acc, "status": "finished",
                           "val/acc_ci_low": acc - 0.07, "val/acc_ci_high": acc + 0.07}
            runs.append(run)
    an = A.analyze(Study("s", Path("."), runs))
    facets = [(d, r) for d, r in an.dataset_groups() if r]
    fig = F.heatmap_figure(an, an.param("width"), an.param("depth"), facets, "val/acc")
    low, high = fig.axes[0].images[0].get_clim()
    # the scale spans a run's 14-point interval, centred on the cells, not their 0.5 points
    assert high - low == pytest.approx(0.14)
    assert low < 0.70 + 0.002 + 0.002 < high
