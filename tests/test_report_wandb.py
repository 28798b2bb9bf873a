"""`wbclf report --wandb`: the W&B Report of a sweep, checked on the object, offline."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from wbclf.reporting.main import main as report_main
from wbclf.reporting import wandb_report as W

SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))


def _panels(report) -> list:
    return [p for b in report.blocks if type(b).__name__ == "PanelGrid" for p in b.panels]


def _kinds(report) -> list[str]:
    return [type(p).__name__ for p in _panels(report)]


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_scratch_bn_report_blocks_and_panels(no_network):
    params = W.sweep_params_from_file(REPO / "sweeps" / "scratch_bn.yaml")
    assert params.swept == ["dataset", "batch_norm", "lr"] and params.log == {"lr"}
    assert params.constants["width"] == 32 and params.metric == "val/acc"
    report = W.build_wandb_report("someone", "wbclf", "abc", params)
    assert (report.entity, report.project) == ("someone", "wbclf")
    panels = _panels(report)
    (pc,) = [p for p in panels if type(p).__name__ == "ParallelCoordinatesPlot"]
    columns = [(type(c.metric).__name__, c.metric.name, c.log) for c in pc.columns]
    assert columns[:3] == [("Config", "dataset", None), ("Config", "batch_norm", None),
                           ("Config", "lr", True)]
    assert ("SummaryMetric", "val/acc", None) in columns
    (imp,) = [p for p in panels if type(p).__name__ == "ParameterImportancePlot"]
    assert imp.with_respect_to == "val/acc"
    lines = [p for p in panels if type(p).__name__ == "LinePlot" and p.y == ["val/acc"]]
    assert sorted(p.groupby.name for p in lines) == ["batch_norm", "dataset", "lr"]
    assert all(p.x == "epoch" and p.groupby_aggfunc == "mean" for p in lines)
    scatters = [p for p in panels if type(p).__name__ == "ScatterPlot"]
    assert any(p.x.name == "model/params" and p.y.name == "val/acc" and p.log_x
               for p in scatters)
    assert "RunComparer" in _kinds(report)
    (cm,) = [p for p in panels if type(p).__name__ == "CustomChart"]
    assert cm.query == {"summaryTable": {"tableKey": "test/confusion_matrix_table"}}
    assert cm.chart_name == "wandb/confusion_matrix/v1"
    tables = {p.table_name for p in panels if type(p).__name__ == "WeavePanelSummaryTable"}
    assert tables == {"best_samples", "test/worst_mistakes"}
    # every run set is the sweep's runs, best first
    runsets = [rs for b in report.blocks if type(b).__name__ == "PanelGrid" for rs in b.runsets]
    assert runsets and all(rs.filters == "Sweep = 'abc'" for rs in runsets)
    assert all(rs.order[0].name.name == "val/acc" and not rs.order[0].ascending
               for rs in runsets)
    headings = [b.text for b in report.blocks if type(b).__name__ in ("H1", "H2")]
    assert headings[:2] == ["Overview", "val/acc by parameter"] and "Best runs" in headings


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_every_sweep_file_builds_a_report(path: Path, no_network):
    config = yaml.safe_load(path.read_text())
    params = W.sweep_params_from_file(path)
    multi = [k for k, v in config["parameters"].items()
             if len(v.get("values", [])) > 1 or "distribution" in v or "min" in v]
    assert params.swept == multi
    report = W.build_wandb_report("team", "wbclf", "s1", params)
    kinds = _kinds(report)
    assert {"ParallelCoordinatesPlot", "ParameterImportancePlot", "RunComparer"} <= set(kinds)
    assert kinds.count("LinePlot") == 2 * len(multi)
    assert ("BarPlot" in kinds) == ("strategy" in multi)
    # the panels serialize without a server (runsets need one: they look up the project id)
    for panel in _panels(report):
        panel._to_model()


def test_cli_dry_run_prints_outline_without_network(capsys, no_network):
    code = report_main(["--wandb", "someone/wbclf", "--sweep", "abc", "--sweep-file",
                        str(REPO / "sweeps" / "scratch_bn.yaml"), "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert 'W&B report "scratch_bn: sweep abc" in someone/wbclf' in out
    assert "ParallelCoordinatesPlot: config.dataset, config.batch_norm, config.lr (log)" in out
    assert "ParameterImportancePlot: with respect to val/acc" in out
    assert "filter Sweep = 'abc'" in out
    assert "dry run: the report was built, not saved" in out


def test_saving_offline_is_a_one_line_error(capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    code = report_main(["--wandb", "someone/wbclf", "--sweep", "abc", "--sweep-file",
                        str(REPO / "sweeps" / "scratch_bn.yaml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("wbclf: error: ")
    assert "--dry-run" in err[0]


def test_save_without_api_key_is_a_one_line_error(monkeypatch, tmp_path, no_network):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))  # no stored credentials either
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    params = W.sweep_params_from_file(REPO / "sweeps" / "scratch_bn.yaml")
    report = W.build_wandb_report("someone", "wbclf", "abc", params)
    with pytest.raises(W.ReportError, match="could not save the W&B report"):
        W.save_report(report)


def test_sweep_from_api_offline_suggests_sweep_file(capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert report_main(["--wandb", "someone/wbclf", "--sweep", "abc", "--dry-run"]) == 2
    assert "--sweep-file" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--wandb", "someone", "--sweep", "abc"], "ENTITY/PROJECT"),
    (["--wandb", "someone/wbclf"], "--sweep"),
    (["--wandb", "a/b", "--sweep", "x", "--sweep-file", "/nonexistent.yaml"], "cannot read"),
])
def test_wandb_usage_errors(argv, message, capsys):
    assert report_main(argv) == 2
    assert message in capsys.readouterr().err


def test_parse_continuous_parameters():
    params = W.parse_sweep_config({
        "name": "b", "method": "bayes", "metric": {"name": "val/loss", "goal": "minimize"},
        "parameters": {"lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1},
                       "width": {"distribution": "q_uniform", "min": 8, "max": 64, "q": 8},
                       "depth": {"values": [3]}, "model": {"value": "scratch"}}})
    assert params.swept == ["lr", "width"] and params.log == {"lr"}
    assert params.constants == {"depth": 3, "model": "scratch"}
    assert (params.metric, params.goal) == ("val/loss", "minimize")
    report = W.build_wandb_report("e", "p", "s", params)
    runsets = [rs for b in report.blocks if type(b).__name__ == "PanelGrid" for rs in b.runsets]
    assert all(rs.order[0].ascending for rs in runsets)  # minimize: lowest first


def test_strategy_time_panel_shows_the_feature_extraction(no_network):
    path = next(p for p in SWEEPS if p.stem == "compare_strategies")
    report = W.build_wandb_report("team", "wbclf", "s1", W.sweep_params_from_file(path))
    bars = [p for p in _panels(report) if type(p).__name__ == "BarPlot"]
    timed = [b for b in bars if "wall time" in b.title]
    assert len(timed) == 1
    names = [m.name for m in timed[0].metrics]
    assert names == ["time/train_s", "time/features_s", "time/eval_s"]
    # the bars average every run of a strategy: the report says so above them
    texts = [str(getattr(b, "text", "")) for b in report.blocks]
    assert any("mean (± std) over every run of a strategy" in t and "not tested" in t
               for t in texts), texts
    assert all("train/time_s" not in [m.name for m in b.metrics] for b in bars)


def test_dry_run_carries_the_tested_findings(tmp_path, capsys, no_network):
    claims = [{"text": "no significant difference between lr=1.0e-3 and lr=3.0e-3 on test "
                       "accuracy (+1.2 points, 95% CI -3.0 to +5.4 points, p = 0.61, "
                       "adjusted 0.61; McNemar's exact test on 150 test images)."}]
    path = tmp_path / "findings.json"
    path.write_text(json.dumps(claims))
    code = report_main(["--wandb", "someone/wbclf", "--sweep", "abc", "--sweep-file",
                        str(REPO / "sweeps" / "scratch_bn.yaml"), "--findings", str(path),
                        "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert "H1 Tested differences" in out
    assert f"P  {claims[0]['text']}" in out
    # how the sentences were adjusted travels with them, and the importance panel is
    # said to be an untested estimate
    assert "P  From `wbclf report` on the same runs: p-values adjusted together" in out
    assert "importance panel is W&B's estimate from these runs, without uncertainty" in out
    path.write_text('{"not": "a list"}')
    code = report_main(["--wandb", "someone/wbclf", "--sweep", "abc", "--sweep-file",
                        str(REPO / "sweeps" / "scratch_bn.yaml"), "--findings", str(path),
                        "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "findings.json" in err[0]
