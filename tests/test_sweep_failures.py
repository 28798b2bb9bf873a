"""`wbclf sweep` when trials cannot succeed: pre-flight, the failure guard, --retry-failed,
--skip-missing and the exit codes (README: exit codes), on the fake trainer of
tests/test_sweep_runner.py (tests/test_sweep_e2e.py has the same with real training)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_sweep_runner import (
    FAKE_TRAINER,
    finished_runs,
    run_sweep,
    study_trials,
    write_sweep,
)

FIVE = {"dropout": {"values": [0.1, 0.2, 0.3, 0.4, 0.5]}, "epochs": {"value": 1}}


@pytest.fixture()
def fake(tmp_path: Path) -> Path:
    path = tmp_path / "fake_train.py"
    path.write_text(FAKE_TRAINER.format(repo=str(REPO)))
    return path


@pytest.fixture
def crash(tmp_path: Path) -> Path:
    """While this file exists the fake trial program crashes (FAKE_CRASH_FILE)."""
    path = tmp_path / "crash"
    path.touch()
    return path


def _class_folders(root: Path) -> Path:
    """A dataset folder with a readable layout (the fake trainer never opens the images)."""
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        (root / cls / "0.jpg").write_bytes(b"")
    return root


def test_missing_dataset_stops_before_any_trial(tmp_path, fake):
    params = {"dataset": {"values": ["plant-disease", str(tmp_path / "nowhere")]},
              "epochs": {"value": 1}}
    sweep = write_sweep(tmp_path, fake, params)
    out = tmp_path / "out"
    result = run_sweep(sweep, "--out", str(out), cwd=tmp_path,
                       WBCLF_DATA_DIR=str(tmp_path / "no-data"))
    assert result.returncode == 2, result.stderr
    assert "2 missing inputs; no trial ran" in result.stderr
    assert "dataset=plant-disease:" in result.stderr
    assert "wbclf data download plant-disease" in result.stderr
    assert f"dataset={tmp_path / 'nowhere'}:" in result.stderr
    assert not out.exists()  # no study, no trial directory


def test_pretrained_model_without_weights_stops_before_any_trial(tmp_path, fake):
    params = {"model": {"value": "resnet18"}, "strategy": {"value": "frozen"},
              "pretrained_file": {"value": str(tmp_path / "no-weights.pth")},
              "epochs": {"value": 1}}
    sweep = write_sweep(tmp_path, fake, params)
    result = run_sweep(sweep, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "model=resnet18, strategy=frozen, pretrained_file=" in result.stderr
    assert "no-weights.pth" in result.stderr
    assert "pretrained_file cannot be loaded (FileNotFoundError: no such file" in result.stderr
    assert not (tmp_path / "out").exists()


def test_skip_missing_runs_the_rest_and_records_the_skipped(tmp_path, fake):
    here = _class_folders(tmp_path / "here")
    params = {"dataset": {"values": [str(here), str(tmp_path / "nowhere")]},
              "epochs": {"value": 1}}
    sweep = write_sweep(tmp_path, fake, params)
    out = tmp_path / "out"
    result = run_sweep(sweep, "--out", str(out), "--skip-missing", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [c["dataset"] for c in finished_runs(out).values()] == [str(here)]
    outcomes = sorted(t.user_attrs["outcome"] for t in study_trials(out))
    assert outcomes == ["finished", "skipped"]
    assert not (out / "trial-0001").exists()
    assert "1 finished, 0 pruned, 0 failed, 1 skipped" in result.stdout


def test_crash_loop_stops_after_max_failures(tmp_path, fake, crash):
    sweep = write_sweep(tmp_path, fake, FIVE)
    out = tmp_path / "out"
    result = run_sweep(sweep, "--out", str(out), cwd=tmp_path, FAKE_CRASH_FILE=str(crash))
    assert result.returncode == 1, result.stderr
    assert len(study_trials(out)) == 3  # the 4th and 5th never started
    assert result.stdout.count("stopping: 3 trials in a row crashed") == 1
    assert "boom: the fake was told to crash" in result.stdout
    assert "logs/trial-0002.log" in result.stdout

    once = run_sweep(sweep, "--out", str(tmp_path / "out1"), "--max-failures", "1",
                     cwd=tmp_path, FAKE_CRASH_FILE=str(crash))
    assert once.returncode == 1 and len(study_trials(tmp_path / "out1")) == 1


def test_diverged_trials_are_results_not_crashes(tmp_path, fake):
    sweep = write_sweep(tmp_path, fake, {**FIVE, "lr": {"value": 0.25}})  # the fake diverges
    out = tmp_path / "out"
    result = run_sweep(sweep, "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [t.user_attrs["outcome"] for t in study_trials(out)] == ["diverged"] * 5
    assert "stopping" not in result.stdout


def test_retry_failed_finishes_the_grid_once_per_point(tmp_path, fake, crash):
    sweep = write_sweep(tmp_path, fake, FIVE)
    out = tmp_path / "out"
    first = run_sweep(sweep, "--out", str(out), cwd=tmp_path, FAKE_CRASH_FILE=str(crash))
    assert first.returncode == 1
    plain = run_sweep(sweep, "--out", str(out), cwd=tmp_path)
    assert plain.returncode == 0 and len(finished_runs(out)) == 2  # the crashed stay crashed

    crash.unlink()  # the cause is fixed
    again = run_sweep(sweep, "--out", str(out), "--retry-failed", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "3 crashed or skipped trial(s) to run again first" in again.stdout
    runs = finished_runs(out)
    assert sorted(runs) == [f"trial-{i:04d}" for i in range(5)]
    assert sorted(c["dropout"] for c in runs.values()) == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert "5 finished, 0 pruned, 0 failed" in again.stdout
    # the retries ran before anything new, under their own trial names
    reported = [ln.split()[1] for ln in again.stdout.splitlines() if ln.startswith("[")]
    assert reported == ["trial-0000", "trial-0001", "trial-0002"]
    assert run_sweep(sweep, "--out", str(out), "--retry-failed", cwd=tmp_path).returncode == 0
    assert len(finished_runs(out)) == 5


def test_retried_trials_count_once_against_run_cap(tmp_path, fake, crash):
    sweep = write_sweep(tmp_path, fake, FIVE, run_cap=3)
    out = tmp_path / "out"
    first = run_sweep(sweep, "--out", str(out), "--count", "2", cwd=tmp_path,
                      FAKE_CRASH_FILE=str(crash))
    assert first.returncode == 1 and len(study_trials(out)) == 2
    crash.unlink()
    again = run_sweep(sweep, "--out", str(out), "--retry-failed", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    # the two reruns take their trials' places under the cap of 3: one new point runs too
    runs = finished_runs(out)
    assert len(runs) == 3 and {"trial-0000", "trial-0001"} <= set(runs)
    assert "3 finished, 0 pruned, 0 failed" in again.stdout
