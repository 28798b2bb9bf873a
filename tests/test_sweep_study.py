"""The study protocol in-process: claims, stale trials (dead process, lost heartbeat), retries,
and the trial-side pruning hook."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from wbclf.sweeps import trial as sweep_hooks
from wbclf.sweeps.schema import check_sweep
from wbclf.sweeps.storage import sqlite_url
from wbclf.sweeps.study import Outcome, SweepStudy, owner_gone, process_identity

BASE = {"program": "train.py", "method": "grid", "metric": {"name": "val/acc",
                                                            "goal": "maximize"}}


def make_study(tmp_path, parameters=None, **top) -> SweepStudy:
    raw = {**BASE, **top, "parameters": parameters or {"seed": {"values": [0, 1, 2]}}}
    return SweepStudy(check_sweep(raw, tmp_path / "s.yaml"), sqlite_url(tmp_path / "study.db"))


def dead_process_identity() -> dict:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return process_identity(proc.pid) | {"start": "1"}


def test_owner_gone():
    assert owner_gone(process_identity()) is False
    assert owner_gone(dead_process_identity()) is True
    assert owner_gone({"host": "elsewhere", "pid": 1}) is None
    assert owner_gone(None) is None
    reused = process_identity() | {"start": "12345"}  # same pid, other start: pid reused
    assert owner_gone(reused) is True


def test_grid_claims_each_point_once_then_none(tmp_path):
    study = make_study(tmp_path)
    me = process_identity()
    claims = [study.claim(me) for _ in range(3)]
    assert sorted(c.params["seed"] for c in claims) == [0, 1, 2]
    assert [c.run_name for c in claims] == ["trial-0000", "trial-0001", "trial-0002"]
    assert study.claim(me) is None  # all held by live (running) trials: nothing to duplicate
    for c in claims:
        study.record(c.number, c.trial_id, Outcome("finished", 0.5))
    assert study.claim(me) is None and study.counts()["finished"] == 3


def test_trial_of_a_dead_process_is_retried_under_its_run_name(tmp_path):
    study = make_study(tmp_path)
    first = study.claim(dead_process_identity())
    again = study.claim(process_identity())
    assert again.retry_of == first.number and again.run_name == first.run_name
    assert again.params == first.params
    (failed,) = [t for t in study.trials() if t.number == first.number]
    assert failed.user_attrs["outcome"] == "interrupted"
    rest = [study.claim(process_identity()) for _ in range(3)]
    assert sorted(c.params["seed"] for c in rest[:2]) == sorted({0, 1, 2} - {first.params[
        "seed"]})
    assert rest[2] is None


def test_trial_whose_process_still_runs_is_not_retried(tmp_path):
    study = make_study(tmp_path, {"seed": {"values": [0]}})
    claim = study.claim(dead_process_identity())
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        study.set_child(claim, sleeper.pid)
        assert study.claim(process_identity()) is None
        assert study.orphans() == 1
    finally:
        sleeper.kill()
        sleeper.wait()
    assert study.orphans() == 0
    assert study.claim(process_identity()).retry_of == claim.number


def test_trial_without_heartbeat_from_another_machine_is_retried(tmp_path):
    study = make_study(tmp_path, {"seed": {"values": [0]}})
    elsewhere = {"host": f"not-{socket.gethostname()}", "boot": "", "pid": 1, "start": ""}
    claim = study.claim(elsewhere)
    assert study.claim(process_identity()) is None  # its heartbeat is fresh
    study.storage.grace_period = 1
    time.sleep(2.2)
    retry = study.claim(process_identity())
    assert retry is not None and retry.retry_of == claim.number
    assert retry.run_name == claim.run_name


def test_failures_are_final_and_run_cap_counts_them(tmp_path):
    study = make_study(tmp_path, {"seed": {"values": [0, 1, 2]}}, run_cap=2)
    me = process_identity()
    a = study.claim(me)
    study.record(a.number, a.trial_id, Outcome("failed", error="boom"))
    b = study.claim(me)
    study.record(b.number, b.trial_id, Outcome("finished", None))  # no metric: a failure
    assert study.claim(me) is None  # run_cap 2 reached
    trials = study.trials()
    assert [t.user_attrs["outcome"] for t in trials] == ["failed", "failed"]
    assert "has no val/acc" in trials[1].user_attrs["error"]


def test_random_study_samples_in_bounds(tmp_path):
    study = make_study(tmp_path, {"lr": {"distribution": "log_uniform_values", "min": 1.0e-4,
                                         "max": 1.0e-2},
                                  "width": {"distribution": "q_uniform", "min": 8, "max": 32,
                                            "q": 8}}, method="random")
    for _ in range(10):
        claim = study.claim(process_identity())
        assert 1.0e-4 <= claim.params["lr"] <= 1.0e-2
        assert claim.params["width"] in (8, 16, 24, 32)
        study.record(claim.number, claim.trial_id, Outcome("finished", 0.5))


def test_callback_from_env(tmp_path, capsys):
    assert sweep_hooks.callback_from_env({}) is None
    study = make_study(tmp_path, {"seed": {"values": [0, 1]}, "epochs": {"value": 2}},
                       early_terminate={"type": "hyperband", "min_iter": 1, "eta": 3})
    env = {sweep_hooks.ENV_STORAGE: study.url, sweep_hooks.ENV_STUDY: study.name,
           sweep_hooks.ENV_PRUNER: '{"min_resource": 1, "max_resource": 2, '
                                   '"reduction_factor": 3}',
           sweep_hooks.ENV_METRIC: "val/acc"}
    good = study.claim(process_identity())
    callback = sweep_hooks.callback_from_env({**env, sweep_hooks.ENV_TRIAL: str(good.number)})
    assert callback(1, {"val/acc": 0.9}) is False
    assert callback(2, {"val/acc": float("nan")}) is False  # not reported
    study.record(good.number, good.trial_id, Outcome("finished", 0.9))
    bad = study.claim(process_identity())
    callback = sweep_hooks.callback_from_env({**env, sweep_hooks.ENV_TRIAL: str(bad.number)})
    assert callback(1, {"val/acc": 0.1}) is True
    broken = sweep_hooks.callback_from_env({**env, sweep_hooks.ENV_TRIAL: "0",
                                            sweep_hooks.ENV_STUDY: "no-such-study"})
    assert broken is None and "will not be pruned" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux affinity")
def test_slots_split_cores(monkeypatch):
    from wbclf.sweeps import runner

    monkeypatch.setattr(runner, "visible_gpus", lambda: ["4", "5"])
    slots = runner.plan_slots(3)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["4", "5", "4"]
    cores = len(os.sched_getaffinity(0))
    assert {s.env["OMP_NUM_THREADS"] for s in slots} == {str(max(1, cores // 3))}
    assert runner.plan_slots(1)[0].env == {}
