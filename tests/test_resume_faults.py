"""Kill-and-resume at each named fault point of the write path (docs/RELIABILITY.md).

``WBCLF_FAULT=<point>:<epoch>`` makes ``wbclf train`` exit with 137 (``os._exit``, nothing
flushed or finished, as after ``kill -9``) at that point; the test then resumes the run and
checks that every epoch reached ``metrics.jsonl`` and the W&B history exactly once and that
the summaries are final. No sleeps: the kill lands at the same instant every time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from wbclf.errors import FAULT_ENV, FAULT_POINTS
from wbclf.tracking.wandb_offline import read_offline_run

EPOCHS = 3
FAST = ["--image_size=32", "--width=8", "--depth=3", "--limit_per_class=20",
        "--num_workers=0", "--batch_size=16", "--log_samples=0", "--wandb_mode=offline"]


def _metrics_epochs(run_dir: Path) -> list[int]:
    return [json.loads(line)["epoch"]
            for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]


@pytest.mark.slow
@pytest.mark.parametrize("point", FAULT_POINTS)
def test_kill_at_fault_point_then_resume_loses_nothing(point, toy_lesions, tmp_path):
    run_dir = tmp_path / "run"
    at = "" if point == "summary-written" else ":2"
    killed = run_cli("train", f"--dataset={toy_lesions}", *FAST, f"--epochs={EPOCHS}",
                     f"--out_dir={tmp_path}", "--run_name=run",
                     env={FAULT_ENV: point + at})
    assert killed.returncode == 137, killed.stderr
    assert f"fault point '{point}'" in killed.stderr
    before = _metrics_epochs(run_dir)
    if point == "checkpoint-written":
        assert before == [1]  # the window: epoch 2 is in last.pt but not in metrics.jsonl

    resumed = run_cli("train", "--resume", str(run_dir), env={FAULT_ENV: ""})
    assert resumed.returncode == 0, resumed.stderr

    assert _metrics_epochs(run_dir) == list(range(1, EPOCHS + 1))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_run"] == EPOCHS
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert summary["val/acc"] == pytest.approx(max(r["val/acc"] for r in rows))

    wb = read_offline_run(run_dir)
    assert [r["epoch"] for r in wb.rows_with("val/acc")] == list(range(1, EPOCHS + 1))
    assert wb.summary["status"] == "finished"
    assert wb.summary["test/acc"] == pytest.approx(summary["test/acc"])
