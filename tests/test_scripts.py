"""The scripts run: scripts/benchmark.py (one CPU case, --json) and its case check."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def _script(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=timeout)


def test_benchmark_refuses_an_unknown_case():
    result = _script("scripts/benchmark.py", "--cases", "loop,nope")
    assert result.returncode == 2
    assert result.stderr.strip() == ("benchmark: unknown case(s) ['nope']; allowed: loader, "
                                     "epoch, augment, loop, frozen_study, sweep_frozen, gpu")


@pytest.mark.slow
def test_benchmark_loop_case_reports_json(tmp_path):
    result = _script("scripts/benchmark.py", "--quick", "--json", "--cases", "loop",
                     "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)  # stdout is the JSON alone
    loop = report["loop"]
    assert "error" not in loop, loop
    assert loop["device"] == "cpu" and loop["steps_per_epoch"] > 0
    assert report["loop_efficiency"] == loop["loop_efficiency"] > 0
    assert len(loop["wbclf_runs"]) == len(loop["bare_runs"]) == 41  # --quick repeats


def test_demo_script_describes_itself():
    result = _script("scripts/demo.py", "--help")
    assert result.returncode == 0 and "--epochs" in result.stdout and "--out" in result.stdout


def test_a_benchmark_target_is_judged_by_the_interval_not_the_figure(monkeypatch):
    """A ratio whose interval straddles its target is 'unsure', whichever side its median
    fell on; met and not met need the whole interval on one side."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmark", REPO / "scripts" / "benchmark.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "benchmark", bench)  # its dataclasses look it up there
    spec.loader.exec_module(bench)

    noisy = bench.ratio_interval([12.0, 8.0, 11.0], [1.0, 1.0, 1.0])  # ratios 8, 11, 12
    assert noisy == [8.0, 12.0, 0.75]
    assert bench.target_verdict(noisy, 11.0, 10.0) == "unsure"
    assert bench.target_verdict(noisy, 11.0, 7.5) is True
    assert bench.target_verdict(noisy, 11.0, 12.5) is False
    assert bench.target_verdict(None, 11.0, 10.0) is True  # no repeats: the figure alone
    assert bench.target_verdict(None, None, 10.0) is None  # the case did not run


@pytest.mark.slow
def test_the_sweep_benchmark_times_trials_unrounded(tmp_path, toy_lesions, monkeypatch):
    """bench_sweep's per-trial wall times are the study's records, not the 0.1 s figure the
    sweep prints (5 % of a 2 s trial)."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import bench_sweep

    sweep = bench_sweep._sweep_file(tmp_path, "tiny", {
        "lr": {"values": [1.0e-3, 1.0e-2]}, "dataset": {"value": str(toy_lesions)},
        "epochs": {"value": 1}, "image_size": {"value": 32}, "limit_per_class": {"value": 20},
        "width": {"value": 8}, "log_samples": {"value": 0}, "wandb_mode": {"value": "disabled"}})
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "WBCLF_CACHE_DIR": str(tmp_path / "cache")}
    trials = bench_sweep.run_sweep(sweep, out, env=env)
    recorded = bench_sweep.recorded_seconds(out)
    assert [t["run"] for t in trials] == ["trial-0000", "trial-0001"]
    assert [t["wall_s"] for t in trials] == [recorded[t["run"]] for t in trials]
    assert all(t["wall_s"] > t["fit_s"] > 0 for t in trials)
    assert any(t["wall_s"] != round(t["wall_s"], 1) for t in trials)  # not the printed figure
