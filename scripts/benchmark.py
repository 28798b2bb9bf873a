#!/usr/bin/env python
"""Side-by-side speed measurements of wbclf's data path and training loop (issue #7).

    python scripts/benchmark.py --quick --json   # every CPU case, sweep_frozen's real
                                                 # `wbclf sweep` runs included: ~6 min on 2 cores
    python scripts/benchmark.py                  # more repeats, whole epochs, a table
    python scripts/benchmark.py --cases gpu      # the CUDA case alone (skipped without CUDA)

Every case runs wbclf and its baseline in the same process, interleaved repeat by repeat
(A B B A ...) after a warm-up, and quotes the median of each side and their ratio: a machine
that is busy with something else slows both sides alike. ``--json`` prints one JSON object
(``loader_speedup``, ``epoch_speedup``, ``loop_efficiency``, ``frozen_study_speedup``,
``sweep_frozen_trial_speedup`` and the raw figures); docs/BENCHMARKS.md holds the figures and
what limits each case.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run from a checkout, `python scripts/benchmark.py` puts scripts/ (not the root) on sys.path.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Before torch loads OpenMP: threads that wait at a barrier sleep instead of spinning. On a
# machine shared with other programs a spinning thread holds the core its descheduled peer
# needs, and epochs here varied 4x from one repeat to the next; both sides get the setting.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

CASES = ("loader", "epoch", "augment", "loop", "frozen_study", "sweep_frozen", "gpu")
TARGETS = {"loader_speedup": 5.0, "epoch_speedup": 1.3, "loop_efficiency": 0.95,
           "frozen_study_speedup": 10.0, "sweep_frozen_trial_speedup": 10.0}
PLANT_TRAIN = ("New Plant Diseases Dataset(Augmented)", "New Plant Diseases Dataset(Augmented)",
               "train")


@dataclass(frozen=True)
class Settings:
    """How much to measure: ``--quick`` trades repeats and epoch length for time."""

    quick: bool
    repeats: int  # timed repeats per side (medians quoted)
    epoch_repeats: int
    workers: int  # loader processes on both sides of the loader case
    epoch_limit: int  # images per class in the epoch case (0 = the whole train split)
    loop_batches: int  # batches per timed pass of the loop case
    loop_repeats: int
    data_dir: Path
    work_dir: Path


# --------------------------------------------------------------------------- helpers


def machine() -> dict[str, Any]:
    """CPU model, usable cores, memory, GPU and library versions."""
    from wbclf.data.datasets import available_cores

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {"cpu": cpu, "cores": available_cores(),
                            "python": platform.python_version(), "torch": torch.__version__,
                            "torch_threads": torch.get_num_threads(),
                            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "")}
    with contextlib.suppress(ValueError, OSError, AttributeError):
        pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * page / 2**30, 1)
    with contextlib.suppress(OSError):
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


def interleaved(runs: dict[str, Callable[[], float]], repeats: int, warmup: int = 1
                ) -> dict[str, list[float]]:
    """Call every run ``warmup`` times, then ``repeats`` times each in A B B A order."""
    names = list(runs)
    for _ in range(warmup):
        for name in names:
            runs[name]()
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            out[name].append(runs[name]())
    return out


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def repeat_ratios(top: list[float], bottom: list[float]) -> list[float]:
    """``top[i] / bottom[i]`` for each repeat i (both sides timed in the same round)."""
    return [a / b for a, b in zip(top, bottom, strict=True)]


def paired_ratio(top: list[float], bottom: list[float]) -> float:
    """Median of the per-repeat ratios: robust to load that drifts during the run."""
    return median(repeat_ratios(top, bottom))


def ratio_interval(top: list[float], bottom: list[float]) -> list[float]:
    """``[low, high, coverage]``: where the median per-repeat ratio lies, distribution-free
    (:func:`wbclf.reporting.stats.median_interval`); a target is judged against it."""
    from wbclf.reporting.stats import median_interval

    return list(median_interval(repeat_ratios(top, bottom)))


def target_verdict(interval: list[float] | None, value: Any, target: float) -> bool | str | None:
    """True when the whole interval clears the target, False when none of it does, "unsure"
    when the target lies inside it (the run cannot tell); without an interval, the figure."""
    if interval is not None:
        low, high = interval[0], interval[1]
        return True if low >= target else False if high < target else "unsure"
    return value >= target if isinstance(value, float) else None


def toy_leaves(data_dir: Path) -> Path:
    """The toy-leaves dataset (128 px, >= 2,400 files), generated on first use."""
    from wbclf.data.sources import resolve_dataset

    return resolve_dataset("toy-leaves", data_dir)


def warm_files(paths: list[str]) -> None:
    """Read every file once, so both sides start with a warm page cache."""
    for path in paths:
        with open(path, "rb") as fh:
            while fh.read(1 << 20):
                pass


def torchvision_light(size: int, *, normalize: tuple | None = None):
    """torchvision v2 + PIL doing what wbclf's cache and ``light`` preset do.

    Resize the short side and centre-crop (what the cache stores), flip p=0.5, affine p=0.7
    (scale 0.9-1.1, shift 6%, rotation 15 degrees, bilinear), brightness/contrast 10% p=0.5.
    The borders are filled with zeros (PIL cannot reflect), a little cheaper than wbclf's
    reflected borders.
    """
    from torchvision.transforms import InterpolationMode, v2

    steps = [
        v2.Resize(size, antialias=True), v2.CenterCrop(size),
        v2.RandomHorizontalFlip(p=0.5),
        v2.RandomApply([v2.RandomAffine(degrees=15, translate=(0.06, 0.06), scale=(0.9, 1.1),
                                        interpolation=InterpolationMode.BILINEAR)], p=0.7),
        v2.RandomApply([v2.ColorJitter(brightness=0.1, contrast=0.1)], p=0.5),
    ]
    if normalize is None:
        steps.append(v2.PILToTensor())  # uint8, like wbclf's loader
    else:
        steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                  v2.Normalize(mean=list(normalize[0]), std=list(normalize[1]))]
    return v2.Compose(steps)


def drain(loader) -> tuple[float, int]:
    """Seconds to iterate ``loader`` once, and the images it delivered."""
    count = 0
    start = time.perf_counter()
    for _, labels in loader:
        count += len(labels)
    return time.perf_counter() - start, count


def _no_validation(epoch: int) -> dict[str, float]:
    # The baselines do not evaluate: neither side does (fit needs a val/acc to select on).
    return {"val/acc": 0.0}


# --------------------------------------------------------------------------- cases


def case_loader(s: Settings) -> dict[str, Any]:
    """images/s delivered: wbclf's loader vs torchvision ImageFolder + PIL + transforms v2.

    Measured at ``s.workers`` processes on both sides (the headline), and also in-process
    (0 workers) and, without ``--quick``, with a worker on every core.
    """
    from torchvision.datasets import ImageFolder

    from wbclf.data.cache import build_or_load
    from wbclf.data.datasets import ImageDataset, available_cores, make_train_loader
    from wbclf.data.transforms import resolve_augment

    size, batch = 128, 64
    train_dir = toy_leaves(s.data_dir).joinpath(*PLANT_TRAIN)
    folder = ImageFolder(str(train_dir))
    paths = [p for p, _ in folder.samples]
    labels = np.array([y for _, y in folder.samples], dtype=np.int64)
    warm_files(paths)
    start = time.perf_counter()
    cache = build_or_load(paths, size, s.work_dir / "cache", workers=min(4, os.cpu_count() or 1),
                          progress=False)
    build_s = time.perf_counter() - start
    dataset = ImageDataset(paths=paths, labels=labels, size=size, cache=cache,
                           rows=np.arange(len(paths)),
                           transform=resolve_augment("light", size).compose)
    plain = ImageDataset(paths=paths, labels=labels, size=size, cache=cache,
                         rows=np.arange(len(paths)))
    warm_files([str(cache.data_path)])
    epoch = [0]

    def measure(workers: int) -> dict[str, list[float]]:
        ours = make_train_loader(dataset, batch_size=batch, workers=workers, seed=0,
                                 channels_last=True)
        base = torch.utils.data.DataLoader(
            ImageFolder(str(train_dir), transform=torchvision_light(size)), batch_size=batch,
            shuffle=True, drop_last=True, num_workers=workers, persistent_workers=workers > 0,
            prefetch_factor=2 if workers else None)

        def run_ours() -> float:
            epoch[0] += 1
            ours.sampler.set_epoch(epoch[0])
            seconds, count = drain(ours)
            return count / seconds

        def run_base() -> float:
            seconds, count = drain(base)
            return count / seconds

        # the loaders (and their persistent workers) go when this returns
        return interleaved({"wbclf": run_ours, "torchvision": run_base}, s.repeats)

    def raw_gather() -> float:
        """The ceiling without augmentation: shuffled batches gathered from the memmap."""
        order = np.random.default_rng(epoch[0]).permutation(len(paths))
        start = time.perf_counter()
        for i in range(0, len(order) - batch + 1, batch):
            plain.read_batch(order[i:i + batch].tolist(), channels_last=True)
        return (len(order) // batch * batch) / (time.perf_counter() - start)

    def augment_in_process() -> float:
        """One process, no loader: read + augment + batch, in the calling thread."""
        order = np.random.default_rng(epoch[0]).permutation(len(paths))
        items = [(int(i), int(i) * 7919 + 1) for i in order]
        start = time.perf_counter()
        for i in range(0, len(items) - batch + 1, batch):
            dataset.read_batch(items[i:i + batch], channels_last=True)
        return (len(items) // batch * batch) / (time.perf_counter() - start)

    counts = [s.workers, 0] + ([] if s.quick else [available_cores()])
    by_workers: dict[str, Any] = {}
    for workers in dict.fromkeys(counts):  # in order, without repeats
        with _torch_threads(1):
            runs = measure(workers)
        by_workers[str(workers)] = {
            "speedup": median(runs["wbclf"]) / median(runs["torchvision"]),
            "wbclf_images_per_s": median(runs["wbclf"]),
            "torchvision_images_per_s": median(runs["torchvision"]),
            "wbclf_runs": runs["wbclf"], "torchvision_runs": runs["torchvision"]}
    raw = interleaved({"gather": raw_gather, "augment": augment_in_process},
                      max(2, s.repeats // 2))
    head = by_workers[str(s.workers)]
    ours_ips, base_ips = head["wbclf_images_per_s"], head["torchvision_images_per_s"]
    saved_per_epoch = len(paths) / base_ips - len(paths) / ours_ips
    return {
        "loader_speedup": head["speedup"],
        "paired_speedup": paired_ratio(head["wbclf_runs"], head["torchvision_runs"]),
        "loader_speedup_interval": ratio_interval(head["wbclf_runs"], head["torchvision_runs"]),
        "images": len(paths), "image_size": size, "batch_size": batch,
        "workers": s.workers, "wbclf_images_per_s": ours_ips, "torchvision_images_per_s": base_ips,
        "by_workers": by_workers,
        "in_process_augment_images_per_s": median(raw["augment"]),
        "in_process_memmap_gather_images_per_s": median(raw["gather"]),
        "cache_build_s": build_s,
        "cache_pays_off_after_epochs": build_s / saved_per_epoch if saved_per_epoch > 0 else None,
    }


def case_epoch(s: Settings) -> dict[str, Any]:
    """One training epoch of the scratch CNN: wbclf's fit vs a minimal PyTorch loop.

    Also timed, interleaved with both: the floor (wbclf's model stepping on one in-memory
    batch as often as an epoch has batches) and, without ``--quick``, wbclf with the model in
    NCHW (contiguous) layout, which separates the data path's share of the speedup from the
    memory format's.
    """
    from torchvision.datasets import ImageFolder

    from wbclf.config import build_config
    from wbclf.models import create_model

    root = toy_leaves(s.data_dir)
    repeats = s.epoch_repeats
    base_cfg = {
        "dataset": str(root), "image_size": 64, "width": 32, "depth": 4, "batch_size": 64,
        "epochs": repeats + 1, "limit_per_class": s.epoch_limit, "log_samples": 0,
        "wandb_mode": "disabled", "out_dir": str(s.work_dir), "seed": 0}
    cfg = build_config({**base_cfg, "run_name": "epoch-run"})
    run, run_ours = _timed_run(s, cfg)

    # The baseline reads the same files: wbclf's train split, straight from the JPEGs.
    train_files = {os.path.abspath(sample.path) for sample in run.data.splits["train"]}
    train_dir = root.joinpath(*PLANT_TRAIN)
    mean, std = run.plan.data_config["mean"], run.plan.data_config["std"]
    folder = ImageFolder(str(train_dir), transform=torchvision_light(64, normalize=(mean, std)),
                         is_valid_file=lambda p: os.path.abspath(p) in train_files)
    assert len(folder) == len(train_files), "the baseline must read the same files"
    warm_files(sorted(train_files))
    base_workers = s.workers
    loader = torch.utils.data.DataLoader(folder, batch_size=64, shuffle=True, drop_last=True,
                                         num_workers=base_workers,
                                         persistent_workers=base_workers > 0)
    torch.manual_seed(0)
    model = create_model("scratch", len(folder.classes), cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    criterion = torch.nn.CrossEntropyLoss()

    def run_base() -> float:
        start = time.perf_counter()
        model.train()
        for images, labels in loader:
            loss = criterion(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return time.perf_counter() - start

    floor_images = torch.randint(0, 256, (64, 3, 64, 64), dtype=torch.uint8)
    if run.hw.channels_last:
        floor_images = floor_images.contiguous(memory_format=torch.channels_last)
    floor_labels = torch.randint(0, len(run.data.classes), (64,))
    floor_model = create_model("scratch", len(folder.classes), cfg).to(
        memory_format=torch.channels_last if run.hw.channels_last else torch.contiguous_format)
    floor_optimizer = torch.optim.AdamW(floor_model.parameters(), lr=1e-3, weight_decay=1e-4)

    def run_floor() -> float:
        """wbclf's model and layout, one in-memory batch, as many steps as an epoch."""
        floor_model.train()
        start = time.perf_counter()
        for _ in range(len(run.plan.loader)):
            loss = criterion(floor_model(run.normalizer(floor_images)), floor_labels)
            floor_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            floor_optimizer.step()
        return time.perf_counter() - start

    timed = {"wbclf": run_ours, "baseline": run_base, "floor": run_floor}
    if not s.quick:
        _, timed["wbclf_nchw"] = _timed_run(
            s, build_config({**base_cfg, "run_name": "epoch-run-nchw"}), channels_last=False)
    runs = interleaved(timed, repeats)
    ours_s, base_s = median(runs["wbclf"]), median(runs["baseline"])
    figures = {
        "epoch_speedup": base_s / ours_s,
        "paired_speedup": paired_ratio(runs["baseline"], runs["wbclf"]),
        "epoch_speedup_interval": ratio_interval(runs["baseline"], runs["wbclf"]),
        "images_per_epoch": len(run.plan.loader) * cfg.batch_size, "image_size": 64,
        "batch_size": 64, "wbclf_epoch_s": ours_s, "baseline_epoch_s": base_s,
        "wbclf_runs": runs["wbclf"], "baseline_runs": runs["baseline"],
        "wbclf_workers": run.plan.workers, "baseline_workers": base_workers,
        "wbclf_channels_last": run.hw.channels_last,
        "forward_backward_only_s": median(runs["floor"]),
        "wbclf_vs_forward_backward": paired_ratio(runs["floor"], runs["wbclf"]),
    }
    if "wbclf_nchw" in runs:
        figures["wbclf_nchw_epoch_s"] = median(runs["wbclf_nchw"])
        figures["nchw_speedup"] = paired_ratio(runs["baseline"], runs["wbclf_nchw"])
    return figures


def case_augment(s: Settings) -> dict[str, Any]:
    """What augmentation costs a training epoch at the demo's settings (issue 18).

    The scratch CNN of the epoch case (64 px, batch 64; ``--quick``: 1,024 images) trained
    with ``augment`` none, light and strong, interleaved. ``light_share`` is the part of a
    ``light`` epoch that augmentation takes, (light - none) / light per repeat: no faster
    implementation of the preset can save more than that.
    """
    from wbclf.config import build_config

    root = toy_leaves(s.data_dir)
    timed: dict[str, Callable[[], float]] = {}
    images = 0
    for preset in ("none", "light", "strong"):
        cfg = build_config({
            "dataset": str(root), "image_size": 64, "width": 32, "depth": 4,
            "batch_size": 64, "epochs": s.epoch_repeats + 2, "limit_per_class": s.epoch_limit,
            "log_samples": 0, "wandb_mode": "disabled", "out_dir": str(s.work_dir),
            "seed": 0, "augment": preset, "run_name": f"augment-{preset}"})
        run, timed[preset] = _timed_run(s, cfg)
        images = len(run.plan.loader) * cfg.batch_size
    runs = interleaved(timed, s.epoch_repeats)
    shares = [(light - none) / light for light, none in zip(runs["light"], runs["none"])]
    figures: dict[str, Any] = {"images_per_epoch": images, "image_size": 64, "batch_size": 64,
                               "light_share": median(shares)}
    for preset, times in runs.items():
        figures[f"{preset}_epoch_s"] = median(times)
        figures[f"{preset}_runs"] = times
    return figures


def _timed_run(s: Settings, cfg, *, channels_last: bool | None = None
               ) -> tuple[Any, Callable[[], float]]:
    """A wbclf Run for ``cfg`` and a function timing one more epoch of it through ``fit``.

    ``channels_last`` overrides the device's choice of memory format.
    """
    import dataclasses
    from unittest import mock

    from wbclf.device import resolve_hardware
    from wbclf.training.engine import fit
    from wbclf.tracking.loggers import LocalRunLogger
    from wbclf.training.run import Run

    def hardware(device: str, precision: str):
        hw = resolve_hardware(device, precision)
        return hw if channels_last is None else dataclasses.replace(hw, channels_last=channels_last)

    run_dir = s.work_dir / cfg.run_name
    logger = LocalRunLogger()
    with _cache_dir(s.work_dir / "cache"), \
            mock.patch("wbclf.training.run.resolve_hardware", hardware):
        run = Run(cfg, run_dir, logger)
    logger.start(cfg=cfg, run_dir=run_dir, class_names=run.data.classes, resume=False,
                 start_epoch=1)

    def one_epoch() -> float:
        start = time.perf_counter()
        fit(epochs=run.state.epoch + 1, state=run.state, run_epoch=run.run_epoch,
            validate=_no_validation,
            on_epoch_end=lambda epoch, metrics, improved: logger.log_epoch(epoch, metrics))
        return time.perf_counter() - start

    return run, one_epoch


@contextlib.contextmanager
def _torch_threads(count: int):
    """Run with ``count`` intra-op threads.

    With one thread per core and another program busy, an OpenMP thread pool waits for its
    descheduled threads at every op: torchvision's in-process collation fell from 1,900 to
    130 images/s here. The loader case does no model math in the main process (and
    DataLoader workers use one thread anyway).
    """
    old = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def _cache_dir(path: Path):
    """Point wbclf's image cache at ``path`` for the duration (not the user's cache)."""
    old = os.environ.get("WBCLF_CACHE_DIR")
    os.environ["WBCLF_CACHE_DIR"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("WBCLF_CACHE_DIR", None)
        else:
            os.environ["WBCLF_CACHE_DIR"] = old


def case_loop(s: Settings) -> dict[str, Any]:
    """wbclf's loop (train_one_epoch inside fit, with a real LocalRunLogger) vs a bare loop."""
    from wbclf.config import build_config
    from wbclf.data.transforms import DeviceNormalizer
    from wbclf.device import resolve_hardware
    from wbclf.training.engine import FitState, fit, train_one_epoch
    from wbclf.tracking.loggers import LocalRunLogger
    from wbclf.models import create_model
    from wbclf.training.optim import build_optimizer, build_scheduler, param_groups

    size, batch, classes = 32, 64, 8
    hw = resolve_hardware("auto", "auto")
    cfg = build_config({"image_size": size, "width": 32, "depth": 4, "wandb_mode": "disabled",
                        "out_dir": str(s.work_dir), "run_name": "loop-run"})
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(s.loop_batches):
        images = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, generator=gen)
        images = images.permute(0, 3, 1, 2)  # what the loader delivers: NCHW view of NHWC
        if not hw.channels_last:
            images = images.contiguous()
        batches.append((images, torch.randint(0, classes, (batch,), generator=gen)))
    torch.manual_seed(0)
    template = create_model("scratch", classes, cfg)
    fmt = torch.channels_last if hw.channels_last else torch.contiguous_format

    def fresh_model() -> torch.nn.Module:
        model = create_model("scratch", classes, cfg)
        model.load_state_dict(template.state_dict())
        return model.to(hw.device, memory_format=fmt)

    normalizer = DeviceNormalizer((0.5,) * 3, (0.5,) * 3, channels_last=hw.channels_last
                                  ).to(hw.device)
    criterion = torch.nn.CrossEntropyLoss()
    total_epochs = s.loop_repeats + 2

    # ours: the engine as a run drives it, logging every epoch to a real run directory
    ours_model = fresh_model()
    optimizer = build_optimizer("adamw", param_groups(ours_model.named_parameters(), 1e-3, 1e-4),
                                1e-3, 1e-4)
    scheduler = build_scheduler("cosine", optimizer, total_steps=total_epochs * len(batches),
                                warmup_steps=0)
    logger = LocalRunLogger()
    run_dir = s.work_dir / "loop-run"
    run_dir.mkdir(parents=True, exist_ok=True)
    logger.start(cfg=cfg, run_dir=run_dir, class_names=[str(c) for c in range(classes)],
                 resume=False, start_epoch=1)
    state = FitState()

    def run_epoch(epoch: int) -> dict[str, float]:
        return train_one_epoch(ours_model, batches, optimizer=optimizer, scheduler=scheduler,
                               criterion=criterion, normalizer=normalizer, hw=hw, epoch=epoch,
                               grad_clip=0.0)

    cpu: dict[str, list[float]] = {"wbclf": [], "bare": []}

    def run_ours() -> float:
        start, start_cpu = time.perf_counter(), time.process_time()
        fit(epochs=state.epoch + 1, state=state, run_epoch=run_epoch, validate=_no_validation,
            on_epoch_end=lambda epoch, metrics, improved: logger.log_epoch(epoch, metrics))
        cpu["wbclf"].append(time.process_time() - start_cpu)
        return time.perf_counter() - start

    bare_model = fresh_model()
    bare_optimizer = torch.optim.AdamW(bare_model.parameters(), lr=1e-3, weight_decay=1e-4)

    def run_bare() -> float:
        start, start_cpu = time.perf_counter(), time.process_time()
        bare_model.train()
        for images, labels in batches:
            images = images.to(hw.device, non_blocking=True)
            labels = labels.to(hw.device, non_blocking=True)
            loss = criterion(bare_model(normalizer(images)), labels)
            bare_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            bare_optimizer.step()
        if hw.is_cuda:
            torch.cuda.synchronize()
        cpu["bare"].append(time.process_time() - start_cpu)
        return time.perf_counter() - start

    # One intra-op thread on both sides: the loop's own cost is Python per step, the same at
    # any thread count, while a 2-thread OpenMP pool on a shared 2-core machine turned
    # 1.3 s epochs into 15 s ones whenever another program ran (see _torch_threads).
    with _torch_threads(1):
        runs = interleaved({"wbclf": run_ours, "bare": run_bare}, s.loop_repeats)
    logger.finish("finished")
    ours_s, bare_s = median(runs["wbclf"]), median(runs["bare"])
    return {
        "loop_efficiency": paired_ratio(runs["bare"], runs["wbclf"]),
        "loop_efficiency_interval": ratio_interval(runs["bare"], runs["wbclf"]),
        "ratio_of_medians": bare_s / ours_s,
        "ratio_of_best": min(runs["bare"]) / min(runs["wbclf"]),
        "device": str(hw.device), "image_size": size, "batch_size": batch,
        "steps_per_epoch": len(batches), "wbclf_epoch_s": ours_s, "bare_epoch_s": bare_s,
        "wbclf_runs": runs["wbclf"], "bare_runs": runs["bare"],
        "overhead_ms_per_step": (ours_s - bare_s) / len(batches) * 1e3,
        "bare_ms_per_step": bare_s / len(batches) * 1e3, "torch_threads": 1,
        # CPU seconds of this process (the warm-up's dropped): what the loop computes,
        # blind to other programs' load, but also to the logger's fsync waits
        "cpu_time_efficiency": paired_ratio(cpu["bare"][1:], cpu["wbclf"][1:]),
    }


def case_frozen_study(s: Settings) -> dict[str, Any]:
    """The transfer issue's frozen-backbone study (scripts/bench_frozen.py, its own helper)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from bench_frozen import frozen_study
    except ModuleNotFoundError as err:
        if err.name != "bench_frozen":
            raise
        return {"skipped": "scripts/bench_frozen.py is not there yet"}
    return dict(frozen_study(quick=s.quick))


def case_sweep_frozen(s: Settings) -> dict[str, Any]:
    """A frozen study and a scratch study through ``wbclf sweep`` (scripts/bench_sweep.py)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_sweep import sweep_frozen

    return dict(sweep_frozen(quick=s.quick))


GPU_MODELS = (("resnet18", 224, 128), ("tf_efficientnet_lite0", 224, 128), ("scratch", 128, 256))
GPU_VARIANTS = (("fp32", None, False, False), ("bf16_cl", torch.bfloat16, True, False),
                ("bf16_cl_compile", torch.bfloat16, True, True))
GPU_BUDGET_S = 420.0  # no new measurement starts after this: the case stays under 8 minutes


def train_throughput(name: str, size: int, batch: int, device: torch.device, *,
                     dtype: torch.dtype | None, channels_last: bool, compiled: bool,
                     steps: int, repeats: int = 3) -> tuple[float, float]:
    """Training images/s of model ``name`` on one in-memory uint8 batch, through wbclf's
    ``train_one_epoch``; and the warm-up seconds (cuDNN autotuning, compilation)."""
    import timm

    from wbclf.config import build_config
    from wbclf.data.transforms import DeviceNormalizer
    from wbclf.device import Hardware
    from wbclf.training.engine import train_one_epoch
    from wbclf.models import create_model

    torch.manual_seed(0)
    if name == "scratch":
        model = create_model("scratch", 38, build_config({"image_size": size}))
    else:
        model = timm.create_model(name, pretrained=False, num_classes=38)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=fmt)
    if compiled:
        model = torch.compile(model)
    hw = Hardware(device=device, autocast_dtype=dtype, channels_last=channels_last,
                  pin_memory=device.type == "cuda")
    normalizer = DeviceNormalizer((0.5,) * 3, (0.5,) * 3, channels_last=channels_last)
    images = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8)
    images = images.to(device).permute(0, 3, 1, 2)  # NCHW view of NHWC, as the loader's
    if not channels_last:
        images = images.contiguous()
    labels = torch.randint(0, 38, (batch,)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    criterion = torch.nn.CrossEntropyLoss()

    def epoch(n: int) -> float:
        out = train_one_epoch(model, [(images, labels)] * n, optimizer=optimizer,
                              scheduler=scheduler, criterion=criterion,
                              normalizer=normalizer.to(device), hw=hw, epoch=1)
        return out["train/epoch_images_per_s"]

    start = time.perf_counter()
    epoch(3)
    warmup_s = time.perf_counter() - start
    return median([epoch(steps) for _ in range(repeats)]), warmup_s


def pipeline_throughput(s: Settings, device: torch.device, batch: int) -> dict[str, Any]:
    """Training images/s of the scratch CNN at 128 px through the whole data path: wbclf's
    cached, augmented loader (``num_workers=auto``, pinned) feeding bf16 + channels_last."""
    from wbclf.config import build_config
    from wbclf.tracking.loggers import LocalRunLogger
    from wbclf.training.run import Run

    epochs = 3 if s.quick else 6
    cfg = build_config({
        "dataset": str(toy_leaves(s.data_dir)), "image_size": 128, "batch_size": batch,
        "epochs": epochs + 1, "log_samples": 0, "wandb_mode": "disabled",
        "out_dir": str(s.work_dir), "run_name": "gpu-pipeline", "device": str(device)})
    with _cache_dir(s.work_dir / "cache"):
        run = Run(cfg, s.work_dir / "gpu-pipeline", LocalRunLogger())
    run.run_epoch(1)  # warm-up: workers start, cuDNN autotunes
    figures = [run.run_epoch(e)["train/epoch_images_per_s"] for e in range(2, epochs + 2)]
    return {"images_per_s": median(figures), "workers": run.plan.workers,
            "images_per_epoch": len(run.plan.loader) * batch}


def case_gpu(s: Settings) -> dict[str, Any]:
    """Training images/s on CUDA: fp32 vs bf16 + channels_last, with and without compile."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    began = time.perf_counter()
    steps = 10 if s.quick else 30
    results: dict[str, Any] = {"device": torch.cuda.get_device_name(0)}
    for name, size, batch in GPU_MODELS:
        figures: dict[str, Any] = {"image_size": size, "batch_size": batch}
        for label, dtype, channels_last, compiled in GPU_VARIANTS:
            if time.perf_counter() - began > GPU_BUDGET_S:
                figures[label] = "skipped: time budget"
                continue
            figures[label], figures[f"{label}_warmup_s"] = train_throughput(
                name, size, batch, device, dtype=dtype, channels_last=channels_last,
                compiled=compiled, steps=steps)
            torch.cuda.empty_cache()
        for label in ("bf16_cl", "bf16_cl_compile"):
            if isinstance(figures.get(label), float) and isinstance(figures.get("fp32"), float):
                figures[f"{label}_speedup"] = figures[label] / figures["fp32"]
        results[name] = figures
    if time.perf_counter() - began < GPU_BUDGET_S:
        # the data path against the model alone (same model, precision, layout and batch)
        pipeline = pipeline_throughput(s, device, batch=256)
        alone = results["scratch"].get("bf16_cl")
        if isinstance(alone, float):
            pipeline["vs_model_alone"] = pipeline["images_per_s"] / alone
        results["scratch_pipeline"] = pipeline
    results["total_s"] = time.perf_counter() - began
    return results


RUNNERS: dict[str, Callable[[Settings], dict[str, Any]]] = {
    "loader": case_loader, "epoch": case_epoch, "loop": case_loop,
    "augment": case_augment, "frozen_study": case_frozen_study,
    "sweep_frozen": case_sweep_frozen, "gpu": case_gpu,
}
HEADLINES = {"loader": "loader_speedup", "epoch": "epoch_speedup", "loop": "loop_efficiency",
             "frozen_study": "frozen_study_speedup",
             "sweep_frozen": "sweep_frozen_trial_speedup"}


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats and shorter epochs (every CPU case < 5 min)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated subset of {', '.join(CASES)}")
    parser.add_argument("--workers", type=int, default=None,
                        help="loader processes on both sides of the loader and epoch cases "
                             "(default: all cores but one, as num_workers=auto on a GPU)")
    parser.add_argument("--data-dir", default=None,
                        help="where toy-leaves lives or is generated (default: wbclf's)")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace, work_dir: Path) -> Settings:
    from wbclf.config import default_data_dir
    from wbclf.data.datasets import available_cores

    return Settings(
        quick=args.quick, repeats=3 if args.quick else 5, epoch_repeats=5 if args.quick else 7,
        workers=args.workers if args.workers is not None else max(1, available_cores() - 1),
        epoch_limit=128 if args.quick else 0,
        loop_batches=8, loop_repeats=41 if args.quick else 81,
        data_dir=Path(args.data_dir or default_data_dir()), work_dir=work_dir)


def run_cases(cases: list[str], s: Settings) -> dict[str, Any]:
    """Every case's figures (or its error), with the headline ratios on top."""
    report: dict[str, Any] = {}
    for case in cases:
        start = time.perf_counter()
        print(f"[benchmark] {case} ...", file=sys.stderr, flush=True)
        try:
            figures = RUNNERS[case](s)
        except Exception as err:  # one broken case must not hide the others' figures
            traceback.print_exc(file=sys.stderr)
            figures = {"error": f"{type(err).__name__}: {err}"}
        figures["case_s"] = time.perf_counter() - start
        report[case] = figures
        if case in HEADLINES:
            for key in (HEADLINES[case], f"{HEADLINES[case]}_interval"):
                report[key] = figures.get(key)
    return report


def print_table(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, GPU: {m['gpu'] or 'none'}")
    print(f"command: {report['command']}")
    print(f"{'figure':<28}{'measured':>10}  {'interval (coverage)':<24}{'target':>8}  met")
    for key, target in TARGETS.items():
        value = report.get(key)
        shown = f"{value:.2f}" if isinstance(value, float) else "-"
        interval = report.get(f"{key}_interval")
        spread = f"{interval[0]:.2f}-{interval[1]:.2f} ({interval[2]:.0%})" if interval else "-"
        met = report["targets_met"].get(key)
        print(f"{key:<28}{shown:>10}  {spread:<24}{target:>8.2f}  {'' if met is None else met}")
    for case in CASES:
        if case in report:
            figures = {k: v for k, v in report[case].items() if not k.endswith("_runs")}
            print(f"\n[{case}]")
            for key, value in figures.items():
                print(f"  {key}: {round(value, 4) if isinstance(value, float) else value}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        print(f"benchmark: unknown case(s) {unknown}; allowed: {', '.join(CASES)}",
              file=sys.stderr)
        return 2
    work_dir = Path(tempfile.mkdtemp(prefix="wbclf-bench-"))
    began = time.perf_counter()
    try:
        s = settings_from(args, work_dir)
        # Everything the cases print goes to stderr: with --json, stdout is the JSON alone.
        with contextlib.redirect_stdout(sys.stderr):
            report = run_cases(cases, s)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    report["targets"] = TARGETS
    report["targets_met"] = {k: target_verdict(report.get(f"{k}_interval"), report.get(k), t)
                             for k, t in TARGETS.items()}
    report["machine"] = machine()
    report["command"] = "python scripts/benchmark.py " + " ".join(sys.argv[1:] if argv is None
                                                                  else argv)
    report["quick"] = args.quick
    report["total_s"] = time.perf_counter() - began
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        print_table(report)
    return 1 if any("error" in report.get(c, {}) for c in cases) else 0


if __name__ == "__main__":
    sys.exit(main())
