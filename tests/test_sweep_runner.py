"""`wbclf sweep` scheduling on a fake trainer: exactly-once grids, resume after Ctrl-C and kill,
parallel workers, shared studies, hyperband pruning, failed trials, caps.

The fake program stands in for ``wbclf train`` with the same contract (agent arguments parsed
by the one config parser, ``out_dir/run_name/summary.json`` with a status, ``--resume``,
:func:`wbclf.sweeps.trial.callback_from_env` per epoch), so these tests check the sweep
machinery in seconds. tests/test_sweep_e2e.py runs real training.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

FAKE_TRAINER = textwrap.dedent('''
    """A stand-in for `wbclf train`: val/acc = 1 - dropout; lr 0.5 crashes, lr 0.25 diverges."""
    import json, os, sys, time
    from pathlib import Path

    sys.path.insert(0, {repo!r})
    from wbclf.config import parse_tokens
    from wbclf.sweeps.trial import callback_from_env

    parsed = parse_tokens(sys.argv[1:])
    cfg = parsed.config
    run_dir = Path(parsed.resume) if parsed.resume else Path(cfg.out_dir) / cfg.run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(json.dumps(cfg.to_dict()))
    progress = run_dir / "progress.json"
    start = json.loads(progress.read_text())["epoch"] + 1 if parsed.resume and progress.exists() \\
        else 1
    with open(run_dir / "calls.jsonl", "a") as f:
        f.write(json.dumps({{"argv": sys.argv[1:], "pid": os.getpid(), "start": start,
                            "t0": time.time(), "omp": os.environ.get("OMP_NUM_THREADS"),
                            "cpus": sorted(os.sched_getaffinity(0)),
                            "group": os.environ.get("WANDB_RUN_GROUP"),
                            "param_path": os.environ.get("WANDB_SWEEP_PARAM_PATH")}}) + "\\n")
    if os.environ.get("FAKE_CRASH_FILE") and Path(os.environ["FAKE_CRASH_FILE"]).exists():
        raise RuntimeError("boom: the fake was told to crash")
    if cfg.lr >= 0.5:
        raise RuntimeError(f"boom: lr={{cfg.lr}} is too high for the fake")
    if cfg.lr == 0.25:
        message = "diverged at epoch 1, step 3 (lr=0.25)"
        (run_dir / "summary.json").write_text(json.dumps({{"status": "diverged",
                                                          "error": message}}))
        print("wbclf: error: " + message, file=sys.stderr)
        sys.exit(3)
    callback = callback_from_env()
    seconds = float(os.environ.get("FAKE_EPOCH_S", "0"))
    status, epochs = "finished", []
    for epoch in range(start, cfg.epochs + 1):
        time.sleep(seconds)
        acc = round(1.0 - cfg.dropout, 4)
        epochs.append(epoch)
        progress.write_text(json.dumps({{"epoch": epoch}}))
        with open(run_dir / "epochs.jsonl", "a") as f:
            f.write(json.dumps({{"epoch": epoch, "val/acc": acc}}) + "\\n")
        if callback is not None and callback(epoch, {{"val/acc": acc, "train/loss": 0.1}}):
            status = "pruned"
            break
    summary = {{"status": status, "val/acc": round(1.0 - cfg.dropout, 4), "epochs_run": epochs}}
    (run_dir / "summary.json").write_text(json.dumps(summary))
''')


@pytest.fixture()
def fake(tmp_path: Path) -> Path:
    path = tmp_path / "fake_train.py"
    path.write_text(FAKE_TRAINER.format(repo=str(REPO)))
    return path


def write_sweep(tmp_path: Path, program: Path, parameters: dict, *, method: str = "grid",
                name: str = "fake", **extra) -> Path:
    doc = {"name": name, "program": str(program), "method": method,
           "metric": {"name": "val/acc", "goal": "maximize"}, "parameters": parameters, **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def sweep_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1",
           "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(REPO)}
    env.update(extra)
    return env


def start_sweep(sweep: Path, *args: str, cwd: Path, **env: str) -> subprocess.Popen:
    # its own process group, like a shell job: killpg(SIGINT) is a terminal's Ctrl-C
    return subprocess.Popen([sys.executable, "-m", "wbclf.cli", "sweep", str(sweep), *args],
                            cwd=cwd, env=sweep_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def run_sweep(sweep: Path, *args: str, cwd: Path, timeout: int = 180, **env: str):
    proc = start_sweep(sweep, *args, cwd=cwd, **env)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def study_trials(out: Path) -> list:
    import optuna

    storage = f"sqlite:///{out / 'study.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()


def finished_runs(out: Path) -> dict[str, dict]:
    """run name -> config of every run directory whose summary says finished."""
    runs = {}
    for summary in out.glob("*/summary.json"):
        if json.loads(summary.read_text())["status"] == "finished":
            runs[summary.parent.name] = json.loads((summary.parent / "config.yaml").read_text())
    return runs


def wait_for(predicate, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


GRID = {"dropout": {"values": [0.1, 0.2, 0.3]}, "seed": {"values": [0, 1]},
        "epochs": {"value": 2}}


def grid_combos(runs: dict[str, dict]) -> list[tuple]:
    return sorted((c["dropout"], c["seed"]) for c in runs.values())


def test_grid_runs_every_combination_once_and_rerun_adds_none(tmp_path, fake):
    sweep = write_sweep(tmp_path, fake, GRID)
    out = tmp_path / "out"
    result = run_sweep(sweep, "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    runs = finished_runs(out)
    assert grid_combos(runs) == [(d, s) for d in (0.1, 0.2, 0.3) for s in (0, 1)]
    assert len(list(out.glob("trial-*"))) == 6
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("[")]
    assert len(lines) == 6 and all("finished" in ln and "val/acc=" in ln for ln in lines)
    assert "[6/6]" in lines[-1]
    record = json.loads((out / "sweep.json").read_text())
    assert record["method"] == "grid" and record["name"] == "fake"
    calls = json.loads((out / "trial-0000" / "calls.jsonl").read_text().splitlines()[0])
    assert calls["group"] == "fake"  # W&B group = the sweep's name
    assert calls["param_path"].endswith("params/trial-0000.yaml")

    again = run_sweep(sweep, "--out", str(out), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(list(out.glob("trial-*"))) == 6
    assert not [ln for ln in again.stdout.splitlines() if ln.startswith("[")]
    assert "6 finished" in again.stdout


def test_count_limits_one_invocation(tmp_path, fake):
    sweep = write_sweep(tmp_path, fake, GRID)
    out = tmp_path / "out"
    assert run_sweep(sweep, "--out", str(out), "--count", "2", cwd=tmp_path).returncode == 0
    assert len(finished_runs(out)) == 2
    assert run_sweep(sweep, "--out", str(out), "--count", "3", cwd=tmp_path).returncode == 0
    assert len(finished_runs(out)) == 5
    assert run_sweep(sweep, "--out", str(out), cwd=tmp_path).returncode == 0
    assert grid_combos(finished_runs(out)) == [(d, s) for d in (0.1, 0.2, 0.3) for s in (0, 1)]


@pytest.mark.parametrize("how", ["ctrl-c", "sigkill"])
def test_interrupted_sweep_continues_without_loss_or_duplicates(tmp_path, fake, how):
    sweep = write_sweep(tmp_path, fake, {**GRID, "epochs": {"value": 4}})
    out = tmp_path / "out"
    proc = start_sweep(sweep, "--out", str(out), cwd=tmp_path, FAKE_EPOCH_S="0.4")
    # stop it in the middle of the second trial, after that trial's first epoch
    wait_for(lambda: (out / "trial-0001" / "progress.json").exists())
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == (130 if how == "ctrl-c" else -signal.SIGKILL)
    assert len(finished_runs(out)) == 1
    if sys.platform.startswith("linux"):  # the trial does not outlive its sweep process
        child = json.loads((out / "trial-0001" / "calls.jsonl").read_text())["pid"]
        wait_for(lambda: not Path(f"/proc/{child}").exists()
                 or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2], timeout=30)

    result = run_sweep(sweep, "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    runs = finished_runs(out)
    assert grid_combos(runs) == [(d, s) for d in (0.1, 0.2, 0.3) for s in (0, 1)]
    assert len(list(out.glob("trial-*"))) == 6
    # the interrupted trial continued its run directory: no epoch lost, none run twice
    calls = [json.loads(ln) for ln in (out / "trial-0001" / "calls.jsonl").read_text()
             .splitlines()]
    assert len(calls) == 2 and "--resume" in calls[1]["argv"] and calls[1]["start"] > 1
    epochs = [json.loads(ln)["epoch"] for ln in (out / "trial-0001" / "epochs.jsonl")
              .read_text().splitlines()]
    assert sorted(set(epochs)) == [1, 2, 3, 4] and epochs[-1] == 4
    from optuna.trial import TrialState

    trials = study_trials(out)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6
    assert len({t.user_attrs["grid_key"] for t in complete}) == 6
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.user_attrs.get("outcome") for t in interrupted] in (["interrupted"], [None])
    (retry,) = [t for t in complete if t.user_attrs.get("retry_of") is not None]
    assert retry.user_attrs["run_name"] == "trial-0001"


@pytest.mark.slow
def test_two_workers_run_in_parallel_without_duplicates(tmp_path, fake):
    sweep = write_sweep(tmp_path, fake, GRID)
    out = tmp_path / "out"
    result = run_sweep(sweep, "--out", str(out), "--workers", "2", cwd=tmp_path,
                       FAKE_EPOCH_S="0.3")
    assert result.returncode == 0, result.stderr
    assert grid_combos(finished_runs(out)) == [(d, s) for d in (0.1, 0.2, 0.3) for s in (0, 1)]
    calls = [json.loads((d / "calls.jsonl").read_text().splitlines()[0])
             for d in sorted(out.glob("trial-*"))]
    cores = len(os.sched_getaffinity(0))
    assert {c["omp"] for c in calls} == {str(max(1, cores // 2))}
    if cores >= 2:
        assert len({tuple(c["cpus"]) for c in calls}) == 2  # each slot has its own cores
    starts = sorted(c["t0"] for c in calls)
    assert starts[1] - starts[0] < 0.5  # the first two trials started together


@pytest.mark.slow
def test_two_sweep_processes_share_one_study(tmp_path, fake):
    sweep = write_sweep(tmp_path, fake, {**GRID, "seed": {"values": [0, 1, 2]}})
    out = tmp_path / "out"
    procs = [start_sweep(sweep, "--out", str(out), cwd=tmp_path, FAKE_EPOCH_S="0.2")
             for _ in range(2)]
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    runs = finished_runs(out)
    assert grid_combos(runs) == [(d, s) for d in (0.1, 0.2, 0.3) for s in (0, 1, 2)]
    assert len(list(out.glob("trial-*"))) == 9
    pids = {json.loads((out / name / "calls.jsonl").read_text())["pid"] for name in runs}
    assert len(pids) == 9
    ran = [sum(ln.startswith("[") for ln in out_.splitlines()) for out_, _ in results]
    assert sum(ran) == 9 and min(ran) >= 1  # both processes did part of the work


def test_hyperband_prunes_a_bad_trial(tmp_path, fake):
    # one bracket (epochs 2 < eta 3): the first rung is after epoch 1
    params = {"dropout": {"values": [0.1, 0.9]}, "epochs": {"value": 2}}
    sweep = write_sweep(tmp_path, fake, params,
                        early_terminate={"type": "hyperband", "min_iter": 1, "eta": 3})
    out = tmp_path / "out"
    result = run_sweep(sweep, "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    good = json.loads((out / "trial-0000" / "summary.json").read_text())
    bad = json.loads((out / "trial-0001" / "summary.json").read_text())
    assert good["status"] == "finished" and good["epochs_run"] == [1, 2]
    assert bad["status"] == "pruned" and bad["epochs_run"] == [1]
    assert "pruned" in result.stdout
    from optuna.trial import TrialState

    states = [t.state for t in study_trials(out)]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED]
    assert study_trials(out)[0].intermediate_values == {1: 0.9, 2: 0.9}
    assert "0 failed" in result.stdout and "1 pruned" in result.stdout


def test_failing_trials_are_recorded_and_the_sweep_carries_on(tmp_path, fake):
    params = {"lr": {"values": [1.0e-3, 0.5, 0.25, 2.0e-3]}, "epochs": {"value": 1}}
    sweep = write_sweep(tmp_path, fake, params)
    out = tmp_path / "out"
    result = run_sweep(sweep, "--out", str(out), cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # a crashed trial (README: exit codes)
    assert sorted(c["lr"] for c in finished_runs(out).values()) == [1.0e-3, 2.0e-3]
    by_lr = {t.params["lr"]: t for t in study_trials(out)}
    assert by_lr[0.5].user_attrs["outcome"] == "failed"
    assert "boom: lr=0.5" in by_lr[0.5].user_attrs["error"]
    assert by_lr[0.25].user_attrs["outcome"] == "diverged"
    assert "diverged at epoch 1" in by_lr[0.25].user_attrs["error"]
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("[")]
    assert any("failed" in ln and "boom" in ln and "logs/trial-0001.log" in ln for ln in lines)
    assert any("diverged" in ln for ln in lines)
    assert "2 finished, 0 pruned, 2 failed" in result.stdout
    # failures are results: a rerun does not repeat them
    again = run_sweep(sweep, "--out", str(out), cwd=tmp_path)
    assert again.returncode == 0 and len(study_trials(out)) == 4


def test_all_trials_failing_exits_1(tmp_path, fake):
    sweep = write_sweep(tmp_path, fake, {"lr": {"values": [0.5, 0.6]}})
    result = run_sweep(sweep, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 1
    assert "0 finished, 0 pruned, 2 failed" in result.stdout


def test_random_search_respects_run_cap_and_distributions(tmp_path, fake):
    params = {"lr": {"distribution": "log_uniform_values", "min": 1.0e-4, "max": 1.0e-2},
              "width": {"distribution": "q_uniform", "min": 8, "max": 64, "q": 8},
              "dropout": {"min": 0.0, "max": 0.5}, "epochs": {"value": 1}}
    sweep = write_sweep(tmp_path, fake, params, method="random", run_cap=5)
    out = tmp_path / "out"
    result = run_sweep(sweep, "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    configs = list(finished_runs(out).values())
    assert len(configs) == 5
    for c in configs:
        assert 1.0e-4 <= c["lr"] <= 1.0e-2 and 0.0 <= c["dropout"] <= 0.5
        assert c["width"] % 8 == 0 and 8 <= c["width"] <= 64
    assert run_sweep(sweep, "--out", str(out), cwd=tmp_path).returncode == 0
    assert len(finished_runs(out)) == 5  # the cap is the study's, not the invocation's


def test_bayes_with_count(tmp_path, fake):
    params = {"dropout": {"min": 0.0, "max": 0.9}, "epochs": {"value": 1}}
    sweep = write_sweep(tmp_path, fake, params, method="bayes")
    out = tmp_path / "out"
    result = run_sweep(sweep, "--out", str(out), "--count", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(finished_runs(out)) == 3 and "best val/acc=" in result.stdout


def test_metric_target_stops_new_trials(tmp_path, fake):
    sweep = write_sweep(tmp_path, fake, {"dropout": {"values": [0.5, 0.05, 0.4, 0.3]}},
                        metric={"name": "val/acc", "goal": "maximize", "target": 0.9})
    out = tmp_path / "out"
    result = run_sweep(sweep, "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0 and len(finished_runs(out)) == 2
    assert "reached the target" in result.stdout


def test_pins_set_parameters_and_fields_the_file_omits(tmp_path, fake):
    sweep = write_sweep(tmp_path, fake, GRID)
    out = tmp_path / "out"
    result = run_sweep(sweep, "--out", str(out), "--set", "seed=7", "--set", "width=8",
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    configs = list(finished_runs(out).values())
    assert sorted(c["dropout"] for c in configs) == [0.1, 0.2, 0.3]
    assert {(c["seed"], c["width"]) for c in configs} == {(7, 8)}
    record = json.loads((out / "sweep.json").read_text())
    assert record["pins"] == {"seed": 7, "width": 8}
    # the same folder with other pins is another study: refused, nothing runs
    other = run_sweep(sweep, "--out", str(out), "--set", "seed=8", cwd=tmp_path)
    assert other.returncode == 2 and "another --out" in other.stderr
    assert len(finished_runs(out)) == 3


def test_a_finished_run_of_a_lost_trial_is_adopted_not_rerun(tmp_path, fake):
    sweep = write_sweep(tmp_path, fake, {"dropout": {"values": [0.1, 0.2]}})
    out = tmp_path / "out"
    assert run_sweep(sweep, "--out", str(out), cwd=tmp_path).returncode == 0
    # simulate a sweep killed after its trial finished but before it recorded the result
    import optuna

    storage = f"sqlite:///{out / 'study.db'}"
    name = optuna.get_all_study_summaries(storage)[0].study_name
    optuna.delete_study(study_name=name, storage=storage)
    result = run_sweep(sweep, "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    calls = (out / "trial-0000" / "calls.jsonl").read_text().splitlines()
    assert len(calls) == 1  # not run again
    assert "2 finished" in result.stdout


def test_dry_run_lists_trials_and_changes_nothing(tmp_path, fake):
    sweep = write_sweep(tmp_path, fake, GRID)
    out = tmp_path / "out"
    result = run_sweep(sweep, "--out", str(out), "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "6 trial(s) to run" in result.stdout and "dropout=0.1  seed=0" in result.stdout
    assert "--dropout=0.1" in result.stdout and "--run_name=trial-0000" in result.stdout
    assert not out.exists()
    run_sweep(sweep, "--out", str(out), "--count", "4", cwd=tmp_path)
    result = run_sweep(sweep, "--out", str(out), "--dry-run", cwd=tmp_path)
    assert "2 trial(s) to run" in result.stdout


@pytest.mark.postgres
def test_shared_postgres_study_from_two_processes(postgres_url, tmp_path, fake):
    # postgres_url skips without a server, but fails in CI (CI=true): a CI whose database did
    # not start must not pass silently (tests/test_ci_guard.py checks that).
    url = postgres_url
    name = f"pg-{uuid.uuid4().hex[:8]}"
    sweep = write_sweep(tmp_path, fake, GRID, name=name)
    procs = [start_sweep(sweep, "--out", str(tmp_path / f"machine{i}"), "--storage", url,
                         cwd=tmp_path, FAKE_EPOCH_S="0.2") for i in range(2)]
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    runs = {**finished_runs(tmp_path / "machine0"), **finished_runs(tmp_path / "machine1")}
    assert grid_combos(runs) == [(d, s) for d in (0.1, 0.2, 0.3) for s in (0, 1)]
    assert len(runs) == 6
    import optuna

    from wbclf.sweeps.storage import normalize_url

    url = normalize_url(url)  # SQLAlchemy 2.1 reads postgresql:// as psycopg 3
    (study,) = [s for s in optuna.get_all_study_summaries(url)
                if s.study_name.startswith(name)]
    assert study.n_trials == 6
    for summary in optuna.get_all_study_summaries(url):
        if summary.study_name.startswith(name):
            optuna.delete_study(study_name=summary.study_name, storage=url)


def test_a_foreign_run_directory_is_never_adopted_or_resumed(tmp_path, fake):
    sweep = write_sweep(tmp_path, fake, {"dropout": {"values": [0.1, 0.2]}})
    out = tmp_path / "out"
    (out / "trial-0000").mkdir(parents=True)
    (out / "trial-0000" / "config.yaml").write_text('{"dropout": 0.7}')
    result = run_sweep(sweep, "--out", str(out), cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # that trial failed (README: exit codes)
    assert "holds another run (dropout=0.7; this trial has dropout=0.1)" in result.stdout
    assert list(finished_runs(out)) == ["trial-0001"]
