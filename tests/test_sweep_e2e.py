"""Local sweeps with real training: the acceptance command, resume of a real run, the agent's
run, W&B grouping, and pruning hooked into ``wbclf train``. All tiny and marked slow."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow

TINY = ["--set", "epochs=1", "--set", "image_size=32", "--set", "limit_per_class=10",
        "--set", "width=8", "--set", "log_samples=0"]


def run_dirs(out: Path) -> dict[str, dict]:
    """run name -> summary of every run directory under ``out``."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/summary.json"))}


def write_sweep(tmp_path: Path, name: str, parameters: dict, **extra) -> Path:
    doc = {"name": name, "program": "scripts/train.py", "method": "grid",
           "metric": {"name": "val/acc", "goal": "maximize"}, "parameters": parameters,
           **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_done_when_scratch_bn_on_toy_data(tmp_path):
    """The issue's acceptance command: one finished run per grid point; a rerun adds none."""
    out = tmp_path / "bn"
    args = ["sweep", "sweeps/scratch_bn.yaml", "--set", "dataset=toy-lesions", "--set",
            "epochs=1", "--set", "image_size=32", "--set", "limit_per_class=30", "--out",
            str(out)]
    start = time.perf_counter()
    result = run_cli(*args)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-3000:]
    runs = run_dirs(out)
    assert len(runs) == 8 and {s["status"] for s in runs.values()} == {"finished"}
    configs = [yaml.safe_load((out / name / "config.yaml").read_text()) for name in runs]
    assert sorted((c["batch_norm"], c["lr"]) for c in configs) == sorted(
        (bn, lr) for bn in (True, False) for lr in (3.0e-4, 1.0e-3, 3.0e-3, 1.0e-2))
    assert {(c["dataset"], c["epochs"], c["image_size"], c["limit_per_class"])
            for c in configs} == {("toy-lesions", 1, 32, 30)}
    assert all("val/acc" in s and "test/acc" in s for s in runs.values())
    assert result.stdout.count(" finished ") == 8
    print(f"scratch_bn acceptance sweep: {elapsed:.0f}s")

    from wbclf.tracking.wandb_offline import read_offline_run

    run = read_offline_run(out / "trial-0000")
    assert run.group == "scratch_bn"  # a W&B run grouped under the sweep's name
    assert run.config["lr"] == 3.0e-4 and run.summary["val/acc"] == runs["trial-0000"]["val/acc"]

    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert run_dirs(out) == runs and "8 finished" in again.stdout


def test_missing_dataset_is_caught_before_any_trial_then_skipped(tmp_path, toy_lesions):
    sweep = write_sweep(tmp_path, "crash", {
        "dataset": {"values": [str(toy_lesions), str(tmp_path / "no-such-dataset")]}})
    out = tmp_path / "out"
    result = run_cli("sweep", str(sweep), *TINY, "--out", str(out))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "1 missing input; no trial ran" in result.stderr and "no-such-dataset" in result.stderr
    assert not out.exists()

    result = run_cli("sweep", str(sweep), *TINY, "--out", str(out), "--skip-missing")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [s["status"] for s in run_dirs(out).values()] == ["finished"]
    skipped = [ln for ln in result.stdout.splitlines() if "skipped" in ln and ln.startswith("[")]
    assert len(skipped) == 1 and "no-such-dataset" in skipped[0]


def test_crashed_real_trials_stop_the_sweep_and_retry_failed_finishes_it(tmp_path, toy_lesions):
    # class folders of empty files: the pre-flight sees a layout, every trial then crashes
    broken = tmp_path / "data"
    for cls in ("a", "b"):
        (broken / cls).mkdir(parents=True)
        (broken / cls / "0.jpg").write_bytes(b"")
    sweep = write_sweep(tmp_path, "crashes", {"lr": {"values": [1e-3, 2e-3, 3e-3, 4e-3]},
                                              "dataset": {"value": str(broken)}})
    out = tmp_path / "out"
    result = run_cli("sweep", str(sweep), *TINY, "--out", str(out))
    assert result.returncode == 1, result.stderr[-3000:]
    assert "stopping: 3 trials in a row crashed" in result.stdout
    assert "no usable images" in result.stdout
    assert sorted(p.name for p in out.glob("trial-*")) == [f"trial-{i:04d}" for i in range(3)]

    shutil.rmtree(broken)
    shutil.copytree(toy_lesions, broken)  # the cause is fixed
    result = run_cli("sweep", str(sweep), *TINY, "--out", str(out), "--retry-failed")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = run_dirs(out)
    assert len(runs) == 4 and {"trial-0000", "trial-0001", "trial-0002"} <= set(runs)
    assert all(s["status"] == "finished" for s in runs.values())
    lrs = [yaml.safe_load((out / name / "config.yaml").read_text())["lr"] for name in runs]
    assert sorted(lrs) == [1e-3, 2e-3, 3e-3, 4e-3]  # one run per grid point
    assert all((out / name / "splits.json").is_file() for name in runs)
    assert "4 finished, 0 pruned, 0 failed" in result.stdout


def test_interrupted_real_trial_resumes_its_run(tmp_path, toy_lesions):
    sweep = write_sweep(tmp_path, "resume", {"lr": {"values": [1.0e-3, 3.0e-3]}})
    out = tmp_path / "out"
    args = [sys.executable, "-m", "wbclf.cli", "sweep", str(sweep), *TINY, "--set",
            "epochs=3", "--set", f"dataset={toy_lesions}", "--out", str(out)]
    proc = subprocess.Popen(args, cwd=REPO, env={**os.environ}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = out / "trial-0001" / "metrics.jsonl"
    end = time.monotonic() + 300
    while not (metrics.exists() and metrics.read_text().strip()) and time.monotonic() < end:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert (out / "trial-0001" / "checkpoints" / "last.pt").is_file()

    result = run_cli(*args[3:], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = run_dirs(out)
    assert list(runs) == ["trial-0000", "trial-0001"]
    assert {s["status"] for s in runs.values()} == {"finished"}
    epochs = [json.loads(ln)["epoch"] for ln in metrics.read_text().splitlines()]
    assert sorted(set(epochs)) == [1, 2, 3]
    log = (out / "logs" / "trial-0001.log").read_text()
    assert "--resume" in log and "resuming" in log


def test_agent_run_joins_the_agents_wandb_run(tmp_path, toy_lesions):
    """scripts/train.py as `wandb agent` starts it: run id, sweep id and parameter file from
    the environment, ${args_no_boolean_flags} (False booleans only in the file)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args
    from wandb.sdk.lib.config_util import save_config_file_from_dict

    params = {"dataset": str(toy_lesions), "batch_norm": False, "lr": 3.0e-3, "epochs": 1,
              "image_size": 32, "limit_per_class": 10, "width": 8, "log_samples": 0,
              "out_dir": str(tmp_path / "runs"), "run_name": "agent-run"}
    param_file = tmp_path / "wandb" / "sweep-abc" / "config-r123.yaml"
    save_config_file_from_dict(str(param_file), {k: {"value": v} for k, v in params.items()})
    flags = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    argv = ["/usr/bin/env", sys.executable, "scripts/train.py",
            *flags["args_no_boolean_flags"]]
    assert not any(a.startswith("--batch_norm") for a in argv)
    env = {**os.environ, "WANDB_RUN_ID": "r123agent", "WANDB_SWEEP_ID": "abc",
           "WANDB_SWEEP_PARAM_PATH": str(param_file), "WANDB_MODE": "offline"}
    result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "agent-run"
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["batch_norm"] is False
    from wbclf.tracking.wandb_offline import read_offline_run

    run = read_offline_run(run_dir)
    assert run.run_id == "r123agent"
    assert run.config["batch_norm"] is False and run.config["lr"] == 3.0e-3


@pytest.mark.skipif("callback_from_env" not in (REPO / "wbclf" / "cli.py").read_text(),
                    reason="wbclf train does not call wbclf.sweeps.trial.callback_from_env yet")
def test_real_trials_report_each_epoch_to_hyperband(tmp_path, toy_lesions):
    sweep = write_sweep(tmp_path, "hb", {"lr": {"values": [3.0e-3, 1.0e-6]}},
                        early_terminate={"type": "hyperband", "min_iter": 1, "eta": 3})
    out = tmp_path / "out"
    result = run_cli("sweep", str(sweep), *TINY, "--set", "epochs=2", "--set",
                     f"dataset={toy_lesions}", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    import optuna

    storage = f"sqlite:///{out / 'study.db'}"
    name = optuna.get_all_study_summaries(storage)[0].study_name
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    assert trials[0].intermediate_values.keys() == {1, 2}
    assert 1 in trials[1].intermediate_values
    # One bracket (log_3(2/1) < 1), two trials at rung 1: only the better one may go on
    # (Optuna keeps the top max(1, 2 // 3) values). So the second trial must be pruned after
    # epoch 1 exactly when its val/acc there is below the first's. (On tiny data the two can
    # tie, and then pruning off passes too: test_sweep_runner.py::
    # test_hyperband_prunes_a_bad_trial checks the decision on values that cannot tie.)
    first, second = (t.intermediate_values[1] for t in trials[:2])
    expect_pruned = second < first
    assert (trials[1].state == optuna.trial.TrialState.PRUNED) == expect_pruned
    statuses = {name: s["status"] for name, s in run_dirs(out).items()}
    assert statuses["trial-0000"] == "finished"
    assert statuses["trial-0001"] == ("pruned" if expect_pruned else "finished")
    if expect_pruned:
        assert trials[1].intermediate_values.keys() == {1}  # stopped right after epoch 1
