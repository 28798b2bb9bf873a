"""`wbclf lr-find` and lr=auto: the range test on a run's own model and data."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import run_cli
from wbclf.config import ConfigError, build_config, coerce
from wbclf.errors import DivergedError
from wbclf.tracking.wandb_offline import read_offline_run
from wbclf.training.lr_find import RangeTest, suggest
from wbclf.training.run import train_run

TINY = ["--image_size=32", "--width=8", "--depth=3", "--batch_size=16",
        "--limit_per_class=60", "--num_workers=0", "--seed=0"]


def _fields(args: list[str]) -> dict:
    return dict(a[2:].split("=", 1) for a in args)


def test_lr_auto_parses_and_bad_values_say_what_is_allowed():
    assert coerce("lr", "auto") == "auto" and coerce("lr", "AUTO") == "auto"
    assert build_config({"lr": "auto"}).lr == "auto"
    assert coerce("lr", "3e-4") == pytest.approx(3e-4)
    with pytest.raises(ConfigError, match="or auto"):
        coerce("lr", "fast")
    with pytest.raises(ConfigError, match="not a number"):
        coerce("weight_decay", "auto")  # only lr takes auto


def test_suggestion_is_a_tenth_of_the_minimum():
    lrs = list(np.geomspace(1e-6, 1.0, 60))
    # a valley at lr = 1e-2: the loss falls, then climbs
    losses = [1.0 + 0.5 * (np.log10(lr) + 2) ** 2 / 16 for lr in lrs]
    result = RangeTest(lrs=lrs, losses=losses, smoothed=losses)
    suggest(result)
    assert result.min_loss_lr == pytest.approx(1e-2, rel=0.3)
    assert result.suggestion == pytest.approx(result.min_loss_lr / 10)
    with pytest.raises(DivergedError):
        suggest(RangeTest(lrs=lrs[:3], losses=losses[:3], smoothed=losses[:3]))


@pytest.mark.slow
def test_cli_suggestion_trains_better_than_100x_it(toy_lesions, tmp_path):
    plot = tmp_path / "lr.png"
    proc = run_cli("lr-find", f"--dataset={toy_lesions}", *TINY, f"--out_dir={tmp_path}",
                   "--wandb_mode=offline", "--steps=60", f"--plot={plot}", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rule"] == "min/10" and result["steps"] == len(result["lrs"]) >= 10
    assert result["suggested_lr"] == pytest.approx(result["min_loss_lr"] / 10)
    assert 1e-7 <= result["suggested_lr"] <= 1.0
    assert plot.is_file() and plot.stat().st_size > 10_000
    # the curve and the suggestion in W&B, read back from the offline run
    wb = read_offline_run(next(tmp_path.glob("lr-find-*/")))
    assert wb.summary["lr_find/suggested_lr"] == pytest.approx(result["suggested_lr"])
    assert len(wb.rows_with("lr_find/smoothed_loss")) == result["steps"]

    # "beats" on the best val loss: the val split of this small set has ~20 images, so its
    # accuracy moves in 5-point steps and ties are common; the loss tells them apart
    figures = {}
    for name, lr in (("suggested", result["suggested_lr"]),
                     ("100x", 100 * result["suggested_lr"])):
        cfg = build_config({**_fields(TINY), "dataset": str(toy_lesions), "epochs": 3,
                            "lr": lr, "out_dir": str(tmp_path), "run_name": name,
                            "wandb_mode": "disabled", "log_samples": 0})
        try:
            train_run(cfg)
            epochs = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
            figures[name] = min(json.loads(line)["val/loss"] for line in epochs)
        except DivergedError:
            figures[name] = float("inf")
    assert figures["suggested"] < figures["100x"], figures


@pytest.mark.slow
def test_lr_auto_runs_the_range_test_and_records_the_choice(toy_lesions, tmp_path):
    cfg = build_config({**_fields(TINY), "dataset": str(toy_lesions), "epochs": 1,
                        "lr": "auto", "out_dir": str(tmp_path), "run_name": "auto",
                        "wandb_mode": "offline", "log_samples": 0, "scheduler": "none"})
    summary = train_run(cfg)
    chosen = summary["lr_find/lr"]
    assert summary["lr_find/rule"] == "min/10" and 1e-7 < chosen < 10
    assert summary["lr_find/lr"] == pytest.approx(summary["lr_find/min_loss_lr"] / 10)
    epoch = json.loads((tmp_path / "auto" / "metrics.jsonl").read_text().splitlines()[0])
    assert epoch["lr"] == pytest.approx(chosen)  # the run trained at the chosen lr
    wb = read_offline_run(tmp_path / "auto")
    assert wb.config["lr"] == pytest.approx(chosen)
    assert wb.summary["lr_find/lr"] == pytest.approx(chosen)


def test_bad_range_is_one_line():
    proc = run_cli("lr-find", "--steps=3")
    assert proc.returncode == 2 and "steps >= 10" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_resumed_lr_auto_run_keeps_the_lr_it_chose(toy_lesions, tmp_path, capsys):
    from wbclf.training.run import resume_run

    cfg = build_config({**_fields(TINY), "dataset": str(toy_lesions), "epochs": 2,
                        "lr": "auto", "out_dir": str(tmp_path), "run_name": "auto",
                        "wandb_mode": "disabled", "log_samples": 0})

    def stop_after_first_epoch(epoch, figures):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, epoch_callback=stop_after_first_epoch)
    first = capsys.readouterr().out
    chosen = float(first.split("suggests lr=")[1].split()[0])
    summary = resume_run(tmp_path / "auto")
    assert "range test" not in capsys.readouterr().out  # not tested again
    assert summary["lr_find/lr"] == pytest.approx(chosen, rel=1e-2)
    assert summary["epochs_run"] == 2
