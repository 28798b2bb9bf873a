#!/usr/bin/env python
"""Benchmark case ``sweep_frozen``: trials as a user runs them, through ``wbclf sweep``.

A small frozen-backbone study (EfficientNet-Lite0, packaged weights, a grid over lr, 5 epochs,
W&B offline) runs twice with the real CLI in subprocesses, from an empty feature cache: with
the feature cache (the first trial builds it and is left out of the means) and with
``--set cache_images=false`` (every trial runs the backbone on every batch). Each trial's wall
time is the sweep's own figure (start of the trial's process to its exit), read from the
study, where the sweep records it unrounded (its printed line rounds to 0.1 s, 5 % of a
cached trial); its fit time is the sum of its epochs' ``time_s``. A small scratch study gives
``trial_overhead_s``: what a trial costs beyond its epochs (start-up, data, model, final
evaluation, figures, W&B).

    python scripts/bench_sweep.py [--quick]     # JSON on stdout
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from wbclf.reporting.stats import median_interval  # noqa: E402
TRIAL_LINE = re.compile(r"\] (trial-\d+)\s+(\w+)\s.*\(([\d.]+)s\)\s*$")
LRS = [1.0e-3, 3.0e-3, 1.0e-2, 3.0e-2, 1.0e-1]


def _sweep_file(folder: Path, name: str, parameters: dict[str, Any]) -> Path:
    doc = {"name": name, "program": str(ROOT / "scripts" / "train.py"), "method": "grid",
           "metric": {"name": "val/acc", "goal": "maximize"}, "parameters": parameters}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_sweep(sweep: Path, out: Path, *pins: str, env: dict[str, str]) -> list[dict[str, Any]]:
    """Run ``wbclf sweep`` in a subprocess; each trial's wall time, fit time and val/acc."""
    argv = [sys.executable, "-m", "wbclf.cli", "sweep", str(sweep), "--out", str(out)]
    for pin in pins:
        argv += ["--set", pin]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"wbclf sweep failed ({done.returncode}): {done.stdout[-1500:]}"
                           f"{done.stderr[-1500:]}")
    recorded = recorded_seconds(out)
    trials = []
    for line in done.stdout.splitlines():
        match = TRIAL_LINE.search(line)
        if not match:
            continue
        name, status = match.group(1), match.group(2)
        wall = recorded.get(name, float(match.group(3)))
        rows = [json.loads(r) for r in (out / name / "metrics.jsonl").read_text().splitlines()]
        summary = json.loads((out / name / "summary.json").read_text())
        fit = sum(r["time_s"] for r in rows)
        trials.append({"run": name, "status": status, "wall_s": wall, "fit_s": fit,
                       "overhead_s": wall - fit, "val_acc": summary.get("val/acc"),
                       "feature_build_s": summary.get("features/build_s", 0.0)})
    return trials


def recorded_seconds(out: Path) -> dict[str, float]:
    """Run name -> the trial's wall time in seconds, as the sweep recorded it in its study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = json.loads((out / "sweep.json").read_text())["study"]
    trials = optuna.load_study(study_name=study,
                               storage=f"sqlite:///{out / 'study.db'}").get_trials(deepcopy=False)
    return {t.user_attrs["run_name"]: float(t.user_attrs["seconds"]) for t in trials
            if "run_name" in t.user_attrs and "seconds" in t.user_attrs}


def _mean(trials: list[dict[str, Any]], key: str) -> float:
    return statistics.fmean(t[key] for t in trials)


def sweep_frozen(quick: bool) -> dict[str, Any]:
    """The frozen study twice through the CLI, and a scratch study for the trial overhead."""
    size, limit, count = (96, 128, 4) if quick else (128, 0, 5)
    with tempfile.TemporaryDirectory(prefix="wbclf-bench-sweep-") as tmp:
        folder = Path(tmp)
        env = {**os.environ, "WBCLF_CACHE_DIR": str(folder / "cache"), "WANDB_MODE": "offline",
               "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1", "WANDB_DIR": str(folder),
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        frozen = _sweep_file(folder, "frozen", {
            "lr": {"values": LRS[:count]}, "strategy": {"value": "frozen"},
            "model": {"value": "tf_efficientnet_lite0"}, "epochs": {"value": 5},
            "image_size": {"value": size}, "limit_per_class": {"value": limit},
            "wandb_mode": {"value": "offline"}})
        cached = run_sweep(frozen, folder / "cached", env=env)
        print(f"sweep_frozen cached: {[round(t['wall_s'], 1) for t in cached]}",
              file=sys.stderr, flush=True)
        uncached = run_sweep(frozen, folder / "uncached", "cache_images=false", env=env)
        print(f"sweep_frozen uncached: {[round(t['wall_s'], 1) for t in uncached]}",
              file=sys.stderr, flush=True)
        scratch = _sweep_file(folder, "scratch", {
            "lr": {"values": LRS[:3]}, "epochs": {"value": 2}, "image_size": {"value": 64},
            "limit_per_class": {"value": 64}, "wandb_mode": {"value": "offline"}})
        scratch_trials = run_sweep(scratch, folder / "scratch", env=env)
    reused, recomputed = cached[1:], uncached[1:]  # the first cached trial builds features
    return {
        "case": "sweep_frozen",
        "quick": quick,
        "image_size": size,
        "limit_per_class": limit,
        "epochs": 5,
        "warm_trials": os.environ.get("WBCLF_WARM_TRIALS", "1") != "0",
        "cached_trial_s": _mean(reused, "wall_s"),
        "cached_fit_s": _mean(reused, "fit_s"),
        "cached_overhead_s": _mean(reused, "overhead_s"),
        "cached_wall_over_fit": _mean(reused, "wall_s") / _mean(reused, "fit_s"),
        "uncached_trial_s": _mean(recomputed, "wall_s"),
        "sweep_frozen_trial_speedup": _mean(recomputed, "wall_s") / _mean(reused, "wall_s"),
        # the same grid point's uncached / cached trial, per point: how sure the ratio is
        "sweep_frozen_trial_speedup_interval": list(median_interval(
            [u["wall_s"] / c["wall_s"] for u, c in zip(recomputed, reused, strict=True)])),
        "feature_build_trial_s": cached[0]["wall_s"],
        "trial_overhead_s": _mean(scratch_trials[1:], "overhead_s"),
        "scratch_trial_s": _mean(scratch_trials[1:], "wall_s"),
        "cached_trials": cached,
        "uncached_trials": uncached,
        "scratch_trials": scratch_trials,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small images, few of them")
    args = parser.parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):
        result = sweep_frozen(args.quick)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
