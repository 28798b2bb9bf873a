"""One run end to end: data, model, fit, final evaluation on the best checkpoint, summary.

``train_run`` starts a run; ``resume_run`` continues one from ``checkpoints/last.pt`` into the
same run directory and the same W&B run.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from wbclf import metrics as M
from wbclf.atomic import write_text_atomic
from wbclf.checkpoint import load_checkpoint, model_state, rng_state, save_atomic, set_rng_state
from wbclf.config import RunConfig, build_config
from wbclf.data.datasets import DataBundle, prepare_data
from wbclf.data.splits import class_balanced_picks, save_splits
from wbclf.data.preview import pick_images, preview_grid, preview_title
from wbclf.data.transforms import (AugmentPipeline, DeviceNormalizer, pipeline_difference,
                                   resolve_augment)
from wbclf.device import Hardware, resolve_hardware
from wbclf.training.calibration import apply_temperature, fit_temperature
from wbclf.training.chance import chance_verdict
from wbclf.training.engine import FitState, fit, progress_enabled
from wbclf.errors import DivergedError, RunError, fault_point
from wbclf.tracking.loggers import Logger, MultiLogger, default_loggers
from wbclf.training.leakage import leak_views
from wbclf.training.lr_find import range_test
from wbclf.training.speed import model_speed
from wbclf.training.optim import build_optimizer, build_scheduler, current_lrs
from wbclf.tracking.records import Evaluation, SamplePredictions
from wbclf.training.plans.base import TrainingPlan
from wbclf.training.plans.factory import build_plan

EpochCallback = Callable[[int, dict[str, float]], bool]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_run_name(cfg: RunConfig) -> str:
    dataset = Path(cfg.dataset).name if "/" in cfg.dataset else cfg.dataset
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{dataset}-{cfg.model}-{cfg.strategy}-{stamp}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _new_run_dir(cfg: RunConfig) -> Path:
    name = cfg.run_name or default_run_name(cfg)
    run_dir = Path(cfg.out_dir) / name
    if (run_dir / "checkpoints").exists() or (run_dir / "summary.json").exists():
        raise RunError(f"run directory {run_dir} already holds a run; continue it with "
                       f"`wbclf train --resume {run_dir}` or choose another run_name")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise RunError(f"cannot write the run directory {run_dir} ({err.strerror or err}); "
                       "choose a writable out_dir") from None
    return run_dir


def _write_yaml(path: Path, data: dict) -> None:
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))


def pick_sample_indices(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """A fixed, seeded, class-balanced subset of positions (round-robin over classes)."""
    chosen = class_balanced_picks(labels, count, np.random.default_rng([seed, 7]))
    return np.array(sorted(chosen), dtype=np.int64)


class Run:
    """The state of one run while it trains (built by :func:`train_run` / :func:`resume_run`)."""

    def __init__(self, cfg: RunConfig, run_dir: Path, logger: Logger, *,
                 epoch_callback: EpochCallback | None = None,
                 augment: AugmentPipeline | None = None) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.logger = logger
        self.epoch_callback = epoch_callback
        self.progress = progress_enabled()
        self.started = time.perf_counter()
        self.eval_s = 0.0  # wall time in evaluate_split, this process
        self.hw: Hardware = resolve_hardware(cfg.device, cfg.precision)
        seed_everything(cfg.seed)
        # before the data: a broken pipeline file fails in a second, not after the cache
        self.augment = augment or resolve_augment(cfg.augment, cfg.image_size)
        self.data: DataBundle = prepare_data(cfg, progress=self.progress)
        self.data_s = time.perf_counter() - self.started
        self.plan: TrainingPlan = build_plan(cfg, self.data, self.hw, progress=self.progress,
                                             augment=self.augment)
        self.model = self.plan.model
        mean, std = self.plan.data_config["mean"], self.plan.data_config["std"]
        self.normalizer = DeviceNormalizer(mean, std, channels_last=self.hw.channels_last
                                           ).to(self.hw.device)
        self.criterion = self._criterion()
        self.lr_find: dict[str, Any] = {}  # the range test's figures when lr=auto
        if cfg.lr == "auto":
            cfg = self._choose_lr()
        self.optimizer = build_optimizer(cfg.optimizer, self.plan.param_groups, cfg.lr,
                                         cfg.weight_decay)
        steps = cfg.epochs * self.plan.steps_per_epoch
        warmup = cfg.warmup_epochs * self.plan.steps_per_epoch
        self.scheduler = build_scheduler(cfg.scheduler, self.optimizer, total_steps=steps,
                                         warmup_steps=warmup)
        self.scaler = torch.amp.GradScaler("cuda") \
            if self.hw.autocast_dtype == torch.float16 else None
        self.state = FitState()
        self.temperature: float | None = None  # set by final_summary when calibrate=true
        # split -> (loss, labels, probs) of the best model, while final_summary evaluates it
        self._best_outputs: dict[str, tuple[float, np.ndarray, np.ndarray]] | None = None
        self._last_val: Evaluation | None = None  # the latest epoch's val pass, and its epoch
        self._last_val_epoch = 0
        val_labels = self.data.labels("val")
        self.sample_rows = pick_sample_indices(val_labels, cfg.log_samples, cfg.seed)

    def _choose_lr(self) -> RunConfig:
        """lr=auto: the range test on this run's model and data; training then starts from
        the same initial weights at the suggested lr."""
        found = range_test(self.plan, self.cfg, self.criterion, self.normalizer)
        self.lr_find = {"lr_find/lr": found.suggestion, "lr_find/rule": found.rule,
                        "lr_find/min_loss_lr": found.min_loss_lr,
                        "lr_find/steps": len(found.lrs)}
        print(f"lr=auto: the range test suggests lr={found.suggestion:.3g} (rule "
              f"{found.rule}, {len(found.lrs)} steps)", flush=True)
        self.cfg = self.plan.cfg = self.cfg.replace(lr=found.suggestion)
        return self.cfg

    def _criterion(self) -> torch.nn.Module:
        weight = None
        if self.cfg.class_weighting == "balanced":
            counts = self.data.class_counts("train").astype(np.float64)
            # inverse frequency, scaled so the mean weight over the training images is 1
            # (the same loss scale as unweighted)
            inv = np.where(counts > 0, counts.sum() / (len(counts) * np.maximum(counts, 1)), 0)
            weight = torch.tensor(inv, dtype=torch.float32, device=self.hw.device)
        return torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=self.cfg.label_smoothing)

    # ----------------------------------------------------------------- checkpoints

    def checkpoint(self) -> dict[str, Any]:
        return {
            "model": model_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "fit_state": vars(self.state).copy(),
            "rng": rng_state(),
            "class_names": self.data.classes,
            "config": self.cfg.to_dict(),
            "data_config": self.plan.data_config,
            "weights": self.plan.weight_source,
            "format": 1,
            "lr_find": self.lr_find,
        }

    def restore(self, ckpt: dict[str, Any]) -> None:
        if ckpt["class_names"] != self.data.classes:
            raise RunError(f"checkpoint classes {ckpt['class_names'][:4]}... do not match the "
                           f"dataset's {self.data.classes[:4]}...; it belongs to another dataset")
        try:
            self.plan.load_model_state(ckpt["model"])
        except RuntimeError as err:
            first = str(err).splitlines()[0]
            raise RunError(f"checkpoint does not fit model '{self.cfg.model}': {first}") from None
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = FitState(**ckpt["fit_state"])
        set_rng_state(ckpt["rng"])

    # ----------------------------------------------------------------- per epoch

    def run_epoch(self, epoch: int) -> dict[str, float]:
        self.plan.before_epoch(epoch, self.optimizer)
        figures = self.plan.train_epoch(
            epoch, optimizer=self.optimizer, scheduler=self.scheduler,
            criterion=self.criterion, normalizer=self.normalizer, scaler=self.scaler)
        figures.update(current_lrs(self.optimizer))
        return figures

    def evaluate_split(self, split: str, threshold: float | None = None, *,
                       epoch: int | None = None) -> Evaluation:
        kept = self._best_outputs
        if kept is not None and split in kept:
            # the model has not changed: another threshold or temperature needs no new pass
            loss, labels, probs = kept[split]
        else:
            start = time.perf_counter()
            loss, labels, probs = self.plan.evaluate(split, criterion=self.criterion,
                                                     normalizer=self.normalizer)
            self.eval_s += time.perf_counter() - start
            if kept is not None:
                kept[split] = _shared(loss, labels, probs)
        if not (np.isfinite(loss) and np.isfinite(probs).all()):
            # finite training loss, yet weights so large that the logits overflow
            lr = current_lrs(self.optimizer).get("lr", float("nan"))
            where = f"epoch {epoch}, step {self.plan.steps_per_epoch}" if epoch else "the end"
            raise DivergedError(f"diverged at {where} (lr={lr:.3g}): {split} outputs are "
                                "NaN/inf; lower lr or enable batch_norm")
        if self.temperature is not None:
            probs = apply_temperature(probs, self.temperature)
        metrics = M.compute_metrics(labels, probs, self.data.classes, threshold=threshold)
        metrics["loss"] = loss
        paths = [s.path for s in self.data.splits[split]]
        return Evaluation(split=split, labels=labels, probs=probs, loss=loss, metrics=metrics,
                          class_names=self.data.classes, threshold=threshold, paths=paths)

    def validate(self, epoch: int) -> dict[str, float]:
        before = self.eval_s
        ev = self.evaluate_split("val", epoch=epoch)
        self._last_val, self._last_val_epoch = ev, epoch
        figures = M.prefixed(_overall(ev.metrics), "val/")
        figures["val/time_s"] = self.eval_s - before  # kept in the history: resumes add up
        return figures

    def samples(self, ev: Evaluation, rows: np.ndarray, *, cams: bool = True
                ) -> SamplePredictions:
        dataset = self.data.dataset(ev.split)
        images = np.stack([np.asarray(dataset.image(int(i))) for i in rows]) if len(rows) \
            else np.zeros((0, self.cfg.image_size, self.cfg.image_size, 3), np.uint8)
        preds = ev.preds[rows]
        return SamplePredictions(
            images=images, labels=ev.labels[rows], preds=preds,
            confidences=ev.probs[rows, preds] if len(rows) else np.zeros(0),
            class_names=self.data.classes, paths=[ev.paths[i] for i in rows],
            cams=self.plan.cams(images, preds) if cams and len(rows) else None)

    def on_epoch_end(self, epoch: int, figures: dict[str, float], improved: bool) -> bool:
        # Checkpoint first (best before last), then log: a kill in between leaves an epoch
        # that is saved but not logged, which the resume re-logs from the checkpoint's
        # history; the reverse order would log an epoch twice.
        folder = self.run_dir / "checkpoints"
        targets = [folder / "best.pt"] if improved else []
        save_atomic(self.checkpoint(), *targets, folder / "last.pt")
        fault_point("checkpoint-written", epoch)
        self.logger.log_epoch(epoch, figures)
        every = max(1, self.cfg.epochs // 4)
        if self.cfg.log_samples and (epoch % every == 0 or epoch == self.cfg.epochs):
            # Grad-CAM costs a backbone pass: once mid-run here, and for the best model
            cam = epoch == cam_epoch(self.cfg.epochs)
            self.logger.log_samples(epoch, self.samples(self._last_val, self.sample_rows,
                                                        cams=cam), "val_samples")
        line = (f"epoch {epoch}/{self.cfg.epochs}  train/loss {figures['train/loss']:.4f}  "
                f"val/acc {figures['val/acc']:.4f}  {figures['time_s']:.1f}s")
        print(line + ("  *" if improved else ""), flush=True)
        if self.epoch_callback is not None:
            return bool(self.epoch_callback(epoch, figures))
        return False

    # ----------------------------------------------------------------- the end

    def _calibrate(self, val: Evaluation, summary: dict[str, Any]) -> Evaluation:
        """Fit the temperature on val; later evaluations use it. Records ECE before/after."""
        test = self.evaluate_split("test")
        summary["val/ece_uncalibrated"] = M.expected_calibration_error(val.labels, val.probs)
        summary["test/ece_uncalibrated"] = M.expected_calibration_error(test.labels,
                                                                        test.probs)
        self.temperature = fit_temperature(val.labels, val.probs)
        summary["calibration/temperature"] = self.temperature
        return self.evaluate_split("val")

    def final_summary(self) -> dict[str, Any]:
        best = load_checkpoint(self.run_dir / "checkpoints" / "best.pt", self.hw.device)
        self.plan.load_model_state(best["model"])
        # The best model stays as loaded from here on: each split passes through it once
        # (val at the argmax, at the threshold and calibrated share one pass; test likewise).
        self._best_outputs = {}
        last = self._last_val
        if last is not None and self._last_val_epoch == self.state.best_epoch:
            # The best epoch was the last one validated in this process: the weights just
            # loaded are the ones that pass ran (best.pt is written after it), in eval mode.
            self._best_outputs["val"] = _shared(last.loss, last.labels, last.probs)
        try:
            return self._final_summary()
        finally:
            self._best_outputs = None

    def _final_summary(self) -> dict[str, Any]:
        binary = len(self.data.classes) == 2
        final_eval_start = self.eval_s
        val = self.evaluate_split("val")
        summary: dict[str, Any] = M.prefixed(_overall(val.metrics), "val/")
        summary["val/acc"] = self.state.best_acc  # the best epoch's figure (= the sweep metric)
        if self.cfg.calibrate:
            val = self._calibrate(val, summary)
        # val intervals on the argmax evaluation, the one val/acc (the sweep metric) comes from
        summary.update(M.prefixed(_intervals(val, self.cfg.seed, decision=False), "val/"))
        threshold = None
        if binary:
            # The decision threshold is chosen on val (Youden's J), then applied to test.
            threshold = M.choose_threshold(val.labels, val.probs[:, 1])
            val = self.evaluate_split("val", threshold)
            for key in ("sensitivity", "specificity", "threshold"):
                summary[f"val/{key}"] = val.metrics[key]
        test, leak_figures = leak_views(self.evaluate_split("test", threshold),
                                        self.data.leaked_test, self.cfg.test_dedup)
        final_eval_s = self.eval_s - final_eval_start
        summary.update(M.prefixed(test.metrics, "test/"))
        summary.update(leak_figures)
        summary.update(self._chance(test))
        summary.update(M.prefixed(_intervals(test, self.cfg.seed), "test/"))
        # Timed before the figures: their PNGs are encoded on a background thread, which
        # would share the cores with the timing (and a remembered figure serves later runs).
        speed = model_speed(self.plan.model, self.cfg.image_size, self.hw)
        self.logger.log_evaluation(val)
        self.logger.log_evaluation(test)
        if self.cfg.log_samples:
            self.logger.log_samples(self.state.best_epoch, self.samples(val, self.sample_rows),
                                    "best_samples")
            self.logger.log_mistakes(self.samples(test, worst_mistakes(test, 16)))
        total, trainable = self.plan.param_counts()
        summary.update({
            "best_epoch": self.state.best_epoch,
            "epochs_run": self.state.epoch,
            "stopped": self.state.stopped or "completed",
            "model/params": total,
            "model/trainable_params": trainable,
            "model/flops": self.plan.flops(),
            "train/time_s": self.state.train_time_s,
            "train/images_per_s": self.state.train_images / self.state.train_time_s
            if self.state.train_time_s > 0 else 0.0,
            "data/train_images": len(self.data.splits["train"]),
            "data/val_images": len(self.data.splits["val"]),
            "data/test_images": len(test.labels),
            "data/skipped": len(self.data.skipped),
            "data/skipped_files": self.data.skipped,
            "data/warnings": self.data.warnings,
            "weights/source": self.plan.weight_source.get("kind", "random"),
            "weights/detail": self.plan.weight_source.get("detail", ""),
            "device": str(self.hw.device),
        })
        summary.update(self.plan.extra_summary())
        summary.update(self.lr_find)
        summary.update(speed)
        summary.update(self._times(final_eval_s))
        return summary

    def _chance(self, test: Evaluation) -> dict[str, Any]:
        """The chance-level verdict on test (see :mod:`wbclf.training.chance`)."""
        supports = np.bincount(test.labels, minlength=len(self.data.classes)).tolist()
        verdict = chance_verdict(test.metrics["balanced_acc"], supports,
                                 test.metrics.get("auc"))
        if verdict.at_chance:
            print(f"note: this run did not beat the majority-class baseline ({verdict.reason}); "
                  "summary.json marks it status_note=chance_level", flush=True)
        return verdict.summary_keys()

    def _times(self, final_eval_s: float) -> dict[str, float]:
        """Where the run's wall time went: data, feature extraction, training, evaluation.

        Training and per-epoch validation add up over resumed segments (they live in the
        checkpoint); data preparation, feature extraction and the total are this process's.
        """
        val_s = sum(float(h.get("val/time_s", 0.0)) for h in self.state.history)
        return {"time/data_s": self.data_s,
                "time/features_s": float(self.plan.features_s),
                "time/train_s": self.state.train_time_s,
                "time/eval_s": val_s + final_eval_s,
                "time/total_s": time.perf_counter() - self.started}


def _intervals(ev: Evaluation, seed: int, decision: bool = True) -> dict[str, float]:
    """95% intervals and ECE of one evaluation (``acc_ci_low``, ..., ``ece``).

    ``decision=False`` leaves out sensitivity/specificity, whose summary figures are taken at
    the threshold, not at the argmax this evaluation used.
    """
    figures = M.interval_figures(ev.labels, ev.probs, threshold=ev.threshold, seed=seed)
    figures.pop("n")  # the split sizes are already data/val_images, data/test_images
    if not decision:
        figures = {k: v for k, v in figures.items() if not k.startswith(("sens", "spec"))}
    return figures


def cam_epoch(epochs: int) -> int:
    """The one training epoch whose sample table gets Grad-CAM: the logged one nearest the
    middle of the run (samples are logged every ``max(1, epochs // 4)`` epochs)."""
    every = max(1, epochs // 4)
    return max(every, (epochs // 2) // every * every)


def _shared(loss: float, labels: np.ndarray, probs: np.ndarray
            ) -> tuple[float, np.ndarray, np.ndarray]:
    """A split's outputs, made read-only: several evaluations share the same arrays."""
    for array in (labels, probs):
        array.setflags(write=False)
    return loss, labels, probs


def _overall(metrics: dict[str, float]) -> dict[str, float]:
    """The split-level figures of a metrics dict (no per-class or threshold keys)."""
    keep = ("acc", "balanced_acc", "macro_f1", "loss", "auc")
    return {k: v for k, v in metrics.items() if k in keep}


def worst_mistakes(ev: Evaluation, k: int) -> np.ndarray:
    """Positions of the ``k`` most confident wrong predictions."""
    preds = ev.preds
    wrong = np.flatnonzero(preds != ev.labels)
    confidence = ev.probs[wrong, preds[wrong]]
    return wrong[np.argsort(-confidence)[:k]]


def oom_message(cfg: RunConfig) -> str:
    """What to do when a batch does not fit on the GPU."""
    return (f"CUDA out of memory with batch_size={cfg.batch_size} at image_size="
            f"{cfg.image_size} (model {cfg.model}); lower batch_size (e.g. "
            f"{max(1, cfg.batch_size // 2)}) or image_size, or use precision=bf16")


def _start_run(cfg: RunConfig, run_dir: Path, logger: Logger,
               epoch_callback: EpochCallback | None, augment: AugmentPipeline | None = None
               ) -> Run:
    """Build the run; a CUDA OOM while it is built (frozen: the backbone's feature pass) is
    the same one-line error as one during training."""
    try:
        return Run(cfg, run_dir, logger, epoch_callback=epoch_callback, augment=augment)
    except torch.cuda.OutOfMemoryError:
        raise RunError(oom_message(cfg)) from None


def _relog_unlogged_epochs(run: Run) -> None:
    """Hand every epoch the checkpoint holds to the loggers again after a resume.

    A kill can land between a checkpoint and its log line, or before W&B flushed what it was
    given; each logger keeps what it already has (W&B skips epochs its run holds, the run
    directory replaces a line with the same epoch), so this fills gaps without doubling.
    """
    for figures in run.state.history:
        run.logger.log_epoch(int(figures["epoch"]), dict(figures))


def _execute(run: Run, *, resume: bool) -> dict[str, Any]:
    """Fit, evaluate and summarize; every way out leaves the loggers finished."""
    cfg = run.cfg
    status = "failed"
    try:
        run.logger.start(cfg=cfg, run_dir=run.run_dir, class_names=run.data.classes,
                         resume=resume, start_epoch=run.state.epoch + 1)
        run.logger.log_config({"weights_source": run.plan.weight_source.get("kind", ""),
                               "weights_detail": run.plan.weight_source.get("detail", ""),
                               "augment_name": run.augment.name,
                               "augment_pipeline": run.augment.serialized})
        if resume:
            _relog_unlogged_epochs(run)
        if cfg.log_samples and not resume:
            _log_augment_preview(run)
        if run.data.skipped:
            print(f"skipped {len(run.data.skipped)} unreadable file(s); listed in summary.json "
                  "under data/skipped_files", flush=True)
        fit(epochs=cfg.epochs, state=run.state, run_epoch=run.run_epoch, validate=run.validate,
            on_epoch_end=run.on_epoch_end, early_stopping=cfg.early_stopping)
        summary = run.final_summary()
        # The status reaches summary.json with finish(), not here: a kill between the two
        # leaves a summary without a status, which --resume completes (and W&B gets anew).
        # A logger that fails here (a figure that could not be written) fails the run.
        run.logger.log_summary(summary)
        status = "pruned" if run.state.stopped == "pruned" else "finished"
        fault_point("summary-written")
        summary["status"] = status
        return summary
    except DivergedError as err:
        status = "diverged"
        run.logger.log_summary({"status": status, "error": str(err),
                                "epochs_run": run.state.epoch})
        raise
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except torch.cuda.OutOfMemoryError:
        run.logger.log_summary({"status": status, "error": oom_message(cfg)})
        raise RunError(oom_message(cfg)) from None
    except Exception as err:
        run.logger.log_summary({"status": status, "error": f"{type(err).__name__}: {err}"})
        raise
    finally:
        run.logger.finish(status)


PREVIEW_IMAGES, PREVIEW_VIEWS = 8, 6


def _log_augment_preview(run: Run) -> None:
    """The grid of ``wbclf data preview`` for this run's pipeline and train images."""
    images = pick_images(run.data, PREVIEW_IMAGES, run.cfg.seed)
    grid = preview_grid(images, run.augment, PREVIEW_VIEWS, run.cfg.seed)
    dataset = Path(run.cfg.dataset).name
    run.logger.log_augment_preview(grid, preview_title(run.augment, dataset, PREVIEW_VIEWS))


def check_augment_unchanged(run_dir: Path, augment: AugmentPipeline) -> None:
    """A resumed run must augment as it did: compare with its ``augment.yaml``."""
    saved = run_dir / "augment.yaml"
    if not saved.is_file():
        return  # a run from before augment.yaml existed: nothing to compare with
    difference = pipeline_difference(saved.read_text(), augment)
    if difference:
        raise RunError(f"augment={augment.spec} is not the pipeline this run started with "
                       f"({difference}); restore it, or start a new run "
                       f"(the original is {saved})")


def train_run(cfg: RunConfig, *, epoch_callback: EpochCallback | None = None,
              group: str | None = None, tags: Sequence[str] = (),
              loggers: Sequence[Logger] | None = None) -> dict[str, Any]:
    """Train a new run described by ``cfg``; returns its summary."""
    resolve_hardware(cfg.device, cfg.precision)  # a device this machine lacks: before any file
    run_dir = _new_run_dir(cfg)
    _write_yaml(run_dir / "config.yaml", cfg.to_dict())
    logger = MultiLogger(list(loggers) if loggers is not None
                         else default_loggers(cfg, group, tags))
    start = time.perf_counter()
    run = _start_run(cfg, run_dir, logger, epoch_callback)
    write_text_atomic(run_dir / "augment.yaml", run.augment.to_yaml())
    save_splits(run_dir / "splits.json", run.data.splits, _IndexView(run.data))
    summary = _execute(run, resume=False)
    print(f"run finished in {time.perf_counter() - start:.1f}s: val/acc "
          f"{summary['val/acc']:.4f}, test/acc {summary['test/acc']:.4f} -> {run_dir}")
    return summary


def resume_run(run_dir: str | Path, *, overrides: dict[str, Any] | None = None,
               epoch_callback: EpochCallback | None = None, group: str | None = None,
               tags: Sequence[str] = (), loggers: Sequence[Logger] | None = None
               ) -> dict[str, Any]:
    """Continue the run in ``run_dir`` from ``checkpoints/last.pt``."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise RunError(f"nothing to resume in '{run_dir}': no config.yaml (is it a run "
                       "directory?)")
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        import json

        status = json.loads(summary_path.read_text()).get("status")
        if status in ("finished", "pruned"):
            raise RunError(f"run '{run_dir}' already {status}; nothing to resume")
    saved = yaml.safe_load(config_path.read_text())
    cfg = resume_config(saved, overrides or {}, run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    lr_find: dict[str, Any] = {}
    if cfg.lr == "auto" and last.is_file():
        # keep the lr the range test chose when the run started; do not test again
        ckpt = load_checkpoint(last, "cpu")
        cfg, lr_find = cfg.replace(lr=ckpt["config"]["lr"]), ckpt.get("lr_find") or {}
    logger = MultiLogger(list(loggers) if loggers is not None
                         else default_loggers(cfg, group, tags))
    augment = resolve_augment(cfg.augment, cfg.image_size)
    check_augment_unchanged(run_dir, augment)
    run = _start_run(cfg, run_dir, logger, epoch_callback, augment=augment)
    run.lr_find = run.lr_find or lr_find
    if last.is_file():
        run.restore(load_checkpoint(last, run.hw.device))
        print(f"resuming {run_dir} after epoch {run.state.epoch}", flush=True)
    else:
        print(f"no checkpoint in {run_dir}; starting it from epoch 1", flush=True)
    if not (run_dir / "splits.json").is_file():  # it crashed before writing them (a retry)
        save_splits(run_dir / "splits.json", run.data.splits, _IndexView(run.data))
    return _execute(run, resume=True)


# Fields that change where or how fast a run computes, not what it computes: a resume may
# change them. Anything else (epochs, lr, the schedule, the data...) would make the
# checkpoint's optimizer, scheduler and history describe another run than the one continued.
RESUMABLE_FIELDS = ("device", "num_workers", "wandb_mode", "precision", "log_samples",
                    "compile")


def resume_config(saved: dict[str, Any], overrides: dict[str, Any], run_dir: Path
                  ) -> RunConfig:
    """The saved config with the command line's changes, refusing what a resume cannot change.

    ``out_dir``/``run_name`` may be repeated (the sweep runner does) when they name
    ``run_dir``. Values equal to the saved ones are not changes.
    """
    before = build_config(saved)
    after = build_config(saved, overrides)
    changed = [k for k in overrides if getattr(after, k) != getattr(before, k)]
    if after.run_name and (Path(after.out_dir) / after.run_name).resolve() == run_dir.resolve():
        changed = [k for k in changed if k not in ("out_dir", "run_name")]
    refused = [k for k in changed if k not in RESUMABLE_FIELDS]
    if refused:
        shown = ", ".join(f"{k}={getattr(after, k)} (the run has {getattr(before, k)})"
                          for k in refused)
        raise RunError(f"--resume continues a run as it was configured and cannot change "
                       f"{shown}; it may change only {', '.join(RESUMABLE_FIELDS)} "
                       "(to train longer or differently, start a new run)")
    return after


class _IndexView:
    """What :func:`save_splits` needs from a dataset index, taken from a DataBundle."""

    def __init__(self, data: DataBundle) -> None:
        self.root = data.root
        self.layout = data.layout
        self.classes = data.classes
