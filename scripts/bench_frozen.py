#!/usr/bin/env python
"""Benchmark case ``frozen_study``: a frozen-backbone head study with and without the feature
cache, side by side in one process.

The study is 8 head configurations (head_hidden x lr x dropout) x 5 epochs of
EfficientNet-Lite0 (packaged weights, offline) on toy-lesions, each trial a real ``train_run``
(W&B disabled). "cached" trials use the feature cache (the first trial builds it, the others
reuse it); "recompute" trials run the frozen backbone on every batch of every epoch, pixels
read from the same image cache. Trials alternate (cached, recompute, cached, ...) so machine
load hits both alike; the image cache is built and one warm-up trial run before any timing,
and the feature cache starts empty (the first cached trial pays for the extraction). With
``augment=none`` (the default) both variants see the same batches and reach about the same
accuracies (float16 storage, and dropout masks drawn in another order), which the result
reports. Other processes on the machine change the timings: read ``pair_speedups`` (per head
configuration) next to the study's total ratio.

    python scripts/bench_frozen.py [--quick] [--augment none|light|strong]   # JSON on stdout
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# (head_hidden, lr, dropout): the 8 head configurations of the study
HEAD_CONFIGS = [(hidden, lr, dropout) for hidden in (0, 256) for lr in (1e-3, 3e-3)
                for dropout in (0.0, 0.2)]
EPOCHS = 5


def _settings(quick: bool) -> dict[str, Any]:
    # quick: about two minutes on 2 CPU cores; full (all of toy-lesions): under a minute on a
    # GPU, 10-20 minutes on 2 CPU cores
    if quick:
        return {"image_size": 96, "limit_per_class": 128, "batch_size": 32}
    return {"image_size": 128, "limit_per_class": 0, "batch_size": 64}


@contextlib.contextmanager
def _env(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _trial(cfg, cached: bool) -> dict[str, Any]:
    """One train_run; ``cached=False`` hides the feature cache so the backbone runs per batch."""
    from wbclf.training.plans import factory
    from wbclf.training.run import train_run

    epoch_s: list[float] = []

    def on_epoch(epoch: int, figures: dict[str, float]) -> bool:
        epoch_s.append(figures["time_s"])
        return False

    hide = contextlib.nullcontext() if cached else \
        mock.patch.object(factory, "supports_feature_cache", return_value=False)
    start = time.perf_counter()
    with hide:
        summary = train_run(cfg, epoch_callback=on_epoch)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "fit_s": sum(epoch_s), "val_acc": summary["val/acc"],
            "test_acc": summary["test/acc"],
            "feature_build_s": summary.get("features/build_s", 0.0),
            "backbone_images": summary.get("features/backbone_images"),
            "trainable_params": summary["model/trainable_params"]}


def frozen_study(quick: bool, *, augment: str = "none", dataset: str = "toy-lesions",
                 model: str = "tf_efficientnet_lite0") -> dict[str, Any]:
    """Time the 8 x 5-epoch head study with the feature cache and recomputing features.

    Args:
        quick: Small images and few of them (CPU-friendly) instead of the full case.
        augment: The study's augmentation preset (``none`` makes both variants exact twins).
        dataset: Dataset name or path.
        model: The frozen timm backbone.

    Returns:
        Raw timings per variant and trial, and ``frozen_study_speedup`` (recompute wall time /
        cached wall time for the whole study, the feature extraction included).
    """
    from wbclf.config import build_config
    from wbclf.data.datasets import prepare_data

    settings = _settings(quick)
    with tempfile.TemporaryDirectory(prefix="wbclf-bench-frozen-") as tmp, \
            _env(WBCLF_CACHE_DIR=str(Path(tmp) / "cache")):
        base = {"dataset": dataset, "model": model, "strategy": "frozen", "epochs": EPOCHS,
                "augment": augment, "wandb_mode": "disabled", "log_samples": 0,
                "out_dir": str(Path(tmp) / "runs"), **settings}
        data = prepare_data(build_config(base))  # the image cache: built here, never timed
        # One untimed 1-epoch trial first: lazy imports and first-use kernel set-up would
        # otherwise land on whichever variant runs first.
        _trial(build_config(base, {"epochs": 1, "run_name": "warm-up"}), cached=False)
        trials: dict[str, list[dict[str, Any]]] = {"cached": [], "recompute": []}
        for i, (hidden, lr, dropout) in enumerate(HEAD_CONFIGS):
            for variant in ("cached", "recompute"):
                cfg = build_config(base, {"head_hidden": hidden, "lr": lr, "dropout": dropout,
                                          "run_name": f"{variant}-{i}"})
                result = _trial(cfg, cached=variant == "cached")
                trials[variant].append({"head_hidden": hidden, "lr": lr, "dropout": dropout,
                                        **result})
                print(f"frozen_study {variant} {i + 1}/{len(HEAD_CONFIGS)}: "
                      f"{result['wall_s']:.1f}s", file=sys.stderr, flush=True)

    def total(variant: str, key: str) -> float:
        return sum(t[key] for t in trials[variant])

    cached_s, recompute_s = total("cached", "wall_s"), total("recompute", "wall_s")
    cached_fit = total("cached", "fit_s") + total("cached", "feature_build_s")
    recompute_fit = total("recompute", "fit_s")
    acc_gap = max(abs(a["val_acc"] - b["val_acc"])
                  for a, b in zip(trials["cached"], trials["recompute"]))
    import torch

    return {
        "case": "frozen_study",
        "quick": quick,
        "model": model,
        "dataset": dataset,
        "augment": augment,
        "configs": len(HEAD_CONFIGS),
        "epochs": EPOCHS,
        **settings,
        "train_images": len(data.splits["train"]),
        "val_images": len(data.splits["val"]),
        "test_images": len(data.splits["test"]),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cached_s": cached_s,
        "recompute_s": recompute_s,
        "frozen_study_speedup": recompute_s / cached_s,
        # the same, counting only the epochs (training + validation) and the one-off
        # feature extraction: what is left once per-run start-up and final evaluation are out
        "cached_fit_s": cached_fit,
        "recompute_fit_s": recompute_fit,
        "frozen_study_fit_speedup": recompute_fit / cached_fit,
        "pair_speedups": [b["wall_s"] / a["wall_s"]
                          for a, b in zip(trials["cached"], trials["recompute"])],
        "feature_build_s": total("cached", "feature_build_s"),
        "backbone_images_cached": total("cached", "backbone_images"),
        "val_acc_max_abs_diff": acc_gap,
        "trials": trials,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small images, few of them")
    parser.add_argument("--augment", default="none", choices=["none", "light", "strong"])
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # packaged weights; never wait on a network
    with contextlib.redirect_stdout(sys.stderr):  # run logs to stderr; stdout is the JSON
        result = frozen_study(args.quick, augment=args.augment)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
