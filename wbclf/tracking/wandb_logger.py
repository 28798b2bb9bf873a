"""The W&B adapter: the only module of wbclf that imports ``wandb`` (lazily, in methods).

History layout: every call is one history row, committed at once (a row left open would
be lost with the process on a kill -9), except ``log_samples`` for an epoch not logged yet,
which shares the row that the epoch's ``log_epoch`` then commits. Rows carry ``epoch``, the
x-axis of every chart (``define_metric("*", step_metric="epoch")``): ``log_epoch`` rows hold
the scalars, sample tables logged during training name their epoch, and the end-of-run rows
(evaluations, best samples, mistakes) get the last epoch from wandb's ``step_sync``. So the
rows holding ``val/acc`` are exactly one per epoch.

``_step`` is passed explicitly and keeps growing across a resume: an offline segment would
otherwise restart at step 0, and ``wandb sync`` of the second segment would collide with the
first. An epoch the W&B run already has (logged, then a crash before its checkpoint, then a
resume from the earlier epoch) is not logged twice.
"""

from __future__ import annotations

import configparser
import hashlib
import math
import netrc
import os
import secrets
import string
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from wbclf.errors import RunError, fault_point
from wbclf.tracking.records import check_status
from wbclf.tracking.wandb_service import drop_inherited_service
from wbclf.metrics import json_safe, per_class_rows, pr_points, roc_points
from wbclf.tracking.records import Evaluation, SamplePredictions

if TYPE_CHECKING:
    from wbclf.config import RunConfig

__all__ = ["RUN_ID_FILE", "WandbLogger", "api_key_configured", "resolve_wandb_mode"]

RUN_ID_FILE = "wandb_run_id.txt"
DEFAULT_BASE_URL = "https://api.wandb.ai"
MODES = ("auto", "online", "offline", "disabled")
# wandb's legacy spellings of the modes.
_MODE_ALIASES = {"dryrun": "offline", "run": "online"}
_MAX_TAG_LEN = 64  # W&B rejects longer tags
_MAX_CURVE_POINTS = 2000


# --------------------------------------------------------------------------- mode


def _global_settings() -> configparser.ConfigParser:
    config_dir = os.environ.get("WANDB_CONFIG_DIR") or os.path.join("~", ".config", "wandb")
    parser = configparser.ConfigParser()
    try:
        parser.read(Path(config_dir).expanduser() / "settings")
    except configparser.Error:
        pass  # wandb itself treats an unreadable settings file as empty
    return parser


def _base_url() -> str:
    env = os.environ.get("WANDB_BASE_URL")
    if env:
        return env
    return _global_settings().get("default", "base_url", fallback=DEFAULT_BASE_URL)


def _netrc_path() -> Path:
    # The order wandb 0.31 uses (wandb/sdk/lib/wbauth/wbnetrc.py): $NETRC, ~/.netrc, ~/_netrc.
    env = os.environ.get("NETRC")
    if env:
        return Path(env).expanduser()
    unix = Path("~/.netrc").expanduser()
    windows = Path("~/_netrc").expanduser()
    return windows if not unix.exists() and windows.exists() else unix


def api_key_configured() -> bool:
    """Whether wandb would find credentials without prompting, checked without any network.

    Mirrors wandb 0.31's lookup (``wbauth.authenticate._use_system_auth``): the
    ``WANDB_API_KEY`` or ``WANDB_IDENTITY_TOKEN_FILE`` environment variable, then a netrc entry
    (``$NETRC``, ``~/.netrc``, ``~/_netrc``) for the host of ``WANDB_BASE_URL`` or of the
    ``base_url`` in the global settings file (default ``api.wandb.ai``).
    """
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(_base_url()).netloc
    if not host:
        return False
    try:
        creds = netrc.netrc(_netrc_path()).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(creds and creds[2])


def resolve_wandb_mode(setting: str) -> tuple[str, str | None]:
    """Turn the ``wandb_mode`` setting into the mode to run W&B in, never prompting.

    ``auto`` is ``online`` when credentials are configured (see :func:`api_key_configured`),
    else ``offline`` with a one-line notice. ``disabled`` always wins. Otherwise the
    ``WANDB_MODE`` environment variable (and the legacy ``WANDB_DISABLED=true``) overrides the
    setting, the way it overrides everything in wandb: ``WANDB_MODE=offline`` keeps a test
    run or an air-gapped machine off the network whatever the config says.

    Args:
        setting: ``auto``, ``online``, ``offline`` or ``disabled``.

    Returns:
        ``(mode, notice)``: mode is ``online``, ``offline`` or ``disabled``; notice is a line
        to show the user, or None.
    """
    value = _MODE_ALIASES.get(setting.strip().lower(), setting.strip().lower())
    if value not in MODES:
        raise ValueError(f"wandb_mode={setting!r} is not allowed; allowed: {', '.join(MODES)}")
    if value == "disabled":
        return "disabled", None
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    env = _MODE_ALIASES.get(env, env)
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in ("true", "1"):
        env = "disabled"
    if env in ("online", "offline", "disabled"):
        if value in ("auto", env):
            return env, None
        return env, f"W&B: WANDB_MODE={env} overrides wandb_mode={value}"
    if value == "auto":
        if api_key_configured():
            return "online", None
        return "offline", ("W&B: no API key configured (WANDB_API_KEY or `wandb login`): "
                           "logging offline; upload later with `wandb sync RUN_DIR/wandb/"
                           "offline-run-*`")
    return value, None


# --------------------------------------------------------------------------- the logger


class WandbLogger:
    """Logs a run to W&B (online, offline or not at all, see :func:`resolve_wandb_mode`).

    The W&B run id is kept in ``run_dir/wandb_run_id.txt``: a resumed run continues the same
    W&B run (``resume="allow"``). Under ``wandb agent`` (``WANDB_SWEEP_ID`` set) the agent
    chooses the run and the project, so neither is passed; the id wandb gives is stored.

    Args:
        mode: ``auto``, ``online``, ``offline`` or ``disabled``.
        project: W&B project.
        group: W&B run group (e.g. the local sweep's name).
        tags: Tags added to the dataset, model and strategy tags.
        job_type: W&B job type.
    """

    def __init__(self, *, mode: str = "auto", project: str = "wbclf", group: str | None = None,
                 tags: Sequence[str] = (), job_type: str = "train") -> None:
        self.mode_setting = mode
        self.project = project
        self.group = group
        self.extra_tags = list(tags)
        self.job_type = job_type
        self.mode: str | None = None  # resolved at start
        self.run: Any = None  # the wandb Run, None when disabled or not started
        self.run_dir: Path | None = None
        self._step = 0  # the next history step
        self._last_epoch = 0  # the latest epoch this W&B run has a log_epoch row for
        self._best_val_acc = -math.inf
        self._summary_has_val_acc = False
        self._images: dict[str, Any] = {}  # wandb.Image per picture content, see _image
        self._media: tempfile.TemporaryDirectory | None = None  # their PNG files, see _png

    # ------------------------------------------------------------------ start / finish

    def start(self, *, cfg: RunConfig, run_dir: Path, class_names: list[str], resume: bool,
              start_epoch: int) -> None:
        self.run_dir = Path(run_dir)
        self.mode, notice = resolve_wandb_mode(self.mode_setting)
        if notice:
            print(notice, file=sys.stderr, flush=True)
        if self.mode == "disabled":
            return
        if self.mode == "online" and not api_key_configured():
            # wandb would show an interactive login prompt (or fail later on no TTY).
            raise RunError("wandb_mode=online but no W&B API key is configured; run `wandb "
                           "login`, set WANDB_API_KEY, or use wandb_mode=offline/auto")
        drop_inherited_service()
        import wandb

        in_sweep = bool(os.environ.get("WANDB_SWEEP_ID"))
        id_file = self.run_dir / RUN_ID_FILE
        run_id = None
        if not in_sweep:
            stored = id_file.read_text().strip() if resume and id_file.is_file() else ""
            run_id = stored or new_run_id()
        kwargs: dict[str, Any] = {
            "name": self.run_dir.name,
            "dir": str(self.run_dir),
            "config": cfg.to_dict(),
            "group": self.group,
            "tags": self._tags(cfg),
            "job_type": self.job_type,
            "mode": self.mode,
            "resume": "allow",
            # A new Run object per start: trials in threads of one process never share one.
            "reinit": "create_new",
            "settings": _settings(wandb),
        }
        if not in_sweep:
            # The agent fixes project and run id itself; passing them would only print warnings.
            kwargs.update(project=self.project, id=run_id)
        self.run = wandb.init(**kwargs)
        from wbclf.atomic import write_text_atomic

        write_text_atomic(id_file, f"{self.run.id}\n")
        self._define_metrics()
        self._step = int(self.run.step)
        self._last_epoch = 0
        self._best_val_acc = -math.inf
        self._summary_has_val_acc = False
        self._images = {}
        self._media = tempfile.TemporaryDirectory(prefix="wbclf-wandb-media-")
        if resume:
            self._load_earlier_segments()
        where = self.run.url if self.mode == "online" else self.run.settings.sync_dir
        print(f"W&B {self.mode}: {where}", file=sys.stderr, flush=True)

    def _tags(self, cfg: RunConfig) -> list[str]:
        dataset = Path(cfg.dataset).name if ("/" in cfg.dataset or os.sep in cfg.dataset) \
            else cfg.dataset
        tags: list[str] = []
        for tag in (dataset, cfg.model, cfg.strategy, *self.extra_tags):
            tag = str(tag)[:_MAX_TAG_LEN]
            if tag and tag not in tags:
                tags.append(tag)
        return tags

    def _define_metrics(self) -> None:
        run = self.run
        run.define_metric("epoch")
        run.define_metric("*", step_metric="epoch")
        # Specific definitions replace the glob's, so they repeat the step metric.
        run.define_metric("val/acc", step_metric="epoch", summary="max")
        run.define_metric("val/loss", step_metric="epoch", summary="min")
        run.define_metric("train/loss", step_metric="epoch", summary="min")

    def _load_earlier_segments(self) -> None:
        """Where a resumed run stands in W&B: its last step and epoch, its best ``val/acc``.

        Online, wandb restores the run's step (``run.step``) and summary. Offline, a resumed
        run is a new ``offline-run-*`` folder starting from nothing, so the earlier segments
        are read back.
        """
        summary = self.run.summary
        last = summary.get("epoch")
        if isinstance(last, (int, float)) and not isinstance(last, bool):
            self._last_epoch = int(last)
        previous = summary.get("val/acc")
        if isinstance(previous, dict):
            previous = previous.get("max")
        if isinstance(previous, (int, float)) and math.isfinite(previous):
            self._best_val_acc = float(previous)
        if self.mode == "offline":
            from wbclf.tracking.wandb_offline import (OfflineRunError, read_offline_run,
                                                      wait_until_quiet)

            sync_dir = Path(self.run.settings.sync_dir).resolve()
            for folder in sync_dir.parent.glob(f"offline-run-*-{self.run.id}*"):
                if folder.resolve() != sync_dir:
                    wait_until_quiet(folder)
            try:
                earlier = read_offline_run(sync_dir.parent, run_id=self.run.id)
            except (OfflineRunError, OSError, ValueError):
                earlier = None
            for row in earlier.history if earlier is not None else []:
                step = row.get("_step")
                if isinstance(step, int):
                    self._step = max(self._step, step + 1)
                acc = row.get("val/acc")
                epoch = row.get("epoch")
                if acc is not None and isinstance(epoch, int):
                    self._last_epoch = max(self._last_epoch, epoch)
                if isinstance(acc, (int, float)) and math.isfinite(acc):
                    self._best_val_acc = max(self._best_val_acc, float(acc))

    def finish(self, status: str = "finished") -> None:
        check_status(status)
        if self.run is None:
            return
        run = self.run
        try:
            update: dict[str, Any] = {"status": status}
            if not self._summary_has_val_acc and math.isfinite(self._best_val_acc):
                # A run that ends early (pruned, diverged, failed) still gets a plain number
                # for the sweep metric, not the {"max": ...} of define_metric.
                update["val/acc"] = self._best_val_acc
            run.summary.update(update)
        finally:
            self.run = None
            try:
                run.finish(exit_code=0 if status in ("finished", "pruned") else 1)
            finally:
                # wandb has copied every logged picture by now (run files, staged artifacts)
                if self._media is not None:
                    self._media.cleanup()
                    self._media = None
        if self.mode == "offline":
            # finish() returns before wandb-core has written the run's log; wait, so that the
            # run directory is complete (readable, resumable, syncable) when we return.
            from wbclf.tracking.wandb_offline import wait_for_segment

            if not wait_for_segment(run.settings.sync_dir, timeout_s=60.0):
                print(f"W&B: {run.settings.sync_dir} is still being written after 60 s",
                      file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ logging

    def _log(self, data: dict[str, Any], *, commit: bool = True) -> None:
        """Log into the row at the next step; commit it now, or leave it open for more."""
        step = max(self._step, int(self.run.step))
        self.run.log(data, step=step, commit=commit)
        if commit:
            self._step = step + 1

    def log_config(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.config.update(values, allow_val_change=True)

    def log_augment_preview(self, grid: np.ndarray, caption: str) -> None:
        if self.run is None:
            return
        import wandb

        # left open: the first epoch's log_epoch commits it, so no row without an epoch
        self._log({"augment/preview": wandb.Image(self._png(grid), caption=caption)},
                  commit=False)

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.run is None:
            return
        epoch = int(epoch)
        acc = metrics.get("val/acc")
        if isinstance(acc, (int, float)) and math.isfinite(acc):
            self._best_val_acc = max(self._best_val_acc, float(acc))
        if epoch <= self._last_epoch:
            return  # this W&B run already has the epoch (see the module docstring)
        self._log({**metrics, "epoch": epoch})
        self._last_epoch = epoch
        fault_point("wandb-row-handed", epoch)

    def log_samples(self, epoch: int, samples: SamplePredictions, tag: str) -> None:
        if self.run is None:
            return
        epoch = int(epoch)
        row: dict[str, Any] = {tag: self._samples_table(samples)}
        if epoch > self._last_epoch:
            # Before the epoch's log_epoch: one row for both; log_epoch commits it.
            self._log({**row, "epoch": epoch}, commit=False)
        elif epoch == self._last_epoch:
            self._log({**row, "epoch": epoch})
        else:
            # e.g. best_samples of an earlier epoch, logged after training: keeping the epoch
            # axis monotonic, the row takes the last epoch (step_sync).
            self._log(row)

    def log_evaluation(self, evaluation: Evaluation) -> None:
        if self.run is None:
            return
        import wandb

        ev = evaluation
        rows = per_class_rows(ev.labels, ev.probs, ev.class_names, threshold=ev.threshold)
        columns = ["class", "key", "precision", "recall", "f1", "support"]
        data: dict[str, Any] = {
            f"{ev.split}/per_class": wandb.Table(
                columns=columns, data=[[r[c] for c in columns] for r in rows]),
            f"{ev.split}/confusion_matrix": wandb.plot.confusion_matrix(
                y_true=ev.labels.astype(int).tolist(), preds=ev.preds.astype(int).tolist(),
                class_names=list(ev.class_names), title=f"Confusion matrix ({ev.split})"),
        }
        if len(ev.class_names) == 2:
            data.update(self._binary_curves(ev))
        data[f"{ev.split}/predictions"] = self._predictions_table(ev)
        self._log(data)

    @staticmethod
    def _predictions_table(ev: Evaluation) -> Any:
        """Per-image predictions (the columns of ``predictions_<split>.npz``) as a W&B table,
        so intervals and paired tests can be recomputed from a downloaded run."""
        import wandb

        paths = list(ev.paths) if len(ev.paths) == len(ev.labels) else [""] * len(ev.labels)
        preds = ev.preds
        columns = ["path", "label", "pred", *[f"p/{name}" for name in ev.class_names]]
        rows = [[paths[i], int(ev.labels[i]), int(preds[i]),
                 *[round(float(x), 6) for x in ev.probs[i]]] for i in range(len(ev.labels))]
        return wandb.Table(columns=columns, data=rows)

    def _binary_curves(self, ev: Evaluation) -> dict[str, Any]:
        """ROC and PR charts of the positive class.

        ``wandb.plot.roc_curve``/``pr_curve`` need pandas (not a wbclf dependency) and map
        classes through ``np.unique(y_true)``; the same charts (same Vega spec) are built here
        from ``wbclf.metrics``, so W&B shows exactly the curve behind ``test/auc``.
        """
        import wandb

        positive = ev.class_names[1]
        p = ev.probs[:, 1]
        fpr, tpr, _ = roc_points(ev.labels, p)
        precision, recall, _ = pr_points(ev.labels, p)
        charts: dict[str, Any] = {}
        for name, xs, ys, x_title, y_title in (
            ("roc_curve", fpr, tpr, "False positive rate", "True positive rate"),
            ("pr_curve", recall, precision, "Recall", "Precision"),
        ):
            if not len(xs):
                continue  # undefined on this split (one class only)
            keep = _thin(len(xs), _MAX_CURVE_POINTS)
            x_key, y_key = ("fpr", "tpr") if name == "roc_curve" else ("recall", "precision")
            table = wandb.Table(columns=["class", x_key, y_key],
                                data=[[positive, float(xs[i]), float(ys[i])] for i in keep])
            charts[f"{ev.split}/{name}"] = wandb.plot_table(
                "wandb/area-under-curve/v0", table,
                {"x": x_key, "y": y_key, "class": "class"},
                {"title": f"{'ROC' if name == 'roc_curve' else 'Precision-recall'} "
                          f"({ev.split}, {positive})",
                 "x-axis-title": x_title, "y-axis-title": y_title},
            )
        return charts

    def log_mistakes(self, samples: SamplePredictions) -> None:
        if self.run is None:
            return
        self._log({"test/worst_mistakes": self._samples_table(samples)})

    def log_summary(self, summary: dict[str, Any]) -> None:
        if self.run is None:
            return
        if isinstance(summary.get("val/acc"), (int, float)):
            self._summary_has_val_acc = True
        self.run.summary.update(json_safe(summary))

    def _samples_table(self, samples: SamplePredictions) -> Any:
        import wandb

        columns = ["image", "true", "pred", "confidence", "correct"]
        with_cam = samples.cams is not None
        if with_cam:
            from wbclf.tracking.plots import sample_overlay

            columns.append("cam")
        names = samples.class_names
        rows = []
        for k in range(len(samples.images)):
            row = [self._image(samples.images[k]), names[int(samples.labels[k])],
                   names[int(samples.preds[k])], float(samples.confidences[k]),
                   bool(samples.correct[k])]
            if with_cam:
                row.append(self._image(sample_overlay(samples, k)))
            rows.append(row)
        return wandb.Table(columns=columns, data=rows)

    def _image(self, picture: np.ndarray) -> Any:
        """The ``wandb.Image`` of a sample picture, made once per run.

        The sample table shows the same val images every logged epoch; a ``wandb.Image``
        copies its file each time it is logged, so reusing it saves an encode per image and
        epoch (~0.5 s of a short run).
        """
        import wandb

        pixels = np.ascontiguousarray(picture)
        key = f"{pixels.shape}-{pixels.dtype}-{hashlib.blake2b(pixels.tobytes()).hexdigest()}"
        if key not in self._images:
            self._images[key] = wandb.Image(self._png(pixels))
        return self._images[key]

    def _png(self, picture: np.ndarray) -> str:
        """``picture`` (uint8 gray, RGB or RGBA) as a PNG file of this run's media folder.

        ``wandb.Image`` of an array encodes it with PIL at zlib level 6 (~2.2 ms for a 96 px
        image); OpenCV at level 1 takes a third of that for the same pixels, and
        ``wandb.Image`` of a file only reads it back. The files live until :meth:`finish`:
        wandb copies them whenever an image is logged.
        """
        import cv2

        from wbclf.tracking.plots import encode_png

        pixels = np.ascontiguousarray(picture)
        if pixels.dtype != np.uint8:
            raise ValueError(f"W&B pictures must be uint8, got {pixels.dtype}")
        if pixels.ndim == 3 and pixels.shape[2] == 3:
            pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
        elif pixels.ndim == 3 and pixels.shape[2] == 4:
            pixels = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA)
        elif pixels.ndim != 2:
            raise ValueError(f"W&B pictures must be (H, W), (H, W, 3) or (H, W, 4), got "
                             f"shape {pixels.shape}")
        assert self._media is not None, "start() makes the media folder"
        data = encode_png(pixels, None)  # no dpi: a picture, not a figure
        path = Path(self._media.name) / f"{hashlib.blake2b(data, digest_size=16).hexdigest()}.png"
        path.write_bytes(data)
        return str(path)


def _settings(wandb: Any) -> Any:
    """Quiet, never-prompting settings; run data reaches the ``.wandb`` file within a second."""
    options: dict[str, Any] = {"silent": True, "console": "off"}
    # wandb-core buffers the run's log and flushes it every 15 s by default: a process killed
    # (OOM, kill -9, preemption) would lose up to 15 s of epochs from the offline run.
    if "x_transaction_log_flush_interval" in getattr(wandb.Settings, "model_fields", {}):
        options["x_transaction_log_flush_interval"] = 1.0
    # wbclf hands wandb its pictures as files of a per-run folder removed at finish: wandb
    # must copy them (its default), never link to them (WANDB_ALLOW_MEDIA_SYMLINK=true).
    if "allow_media_symlink" in getattr(wandb.Settings, "model_fields", {}):
        options["allow_media_symlink"] = False
    return wandb.Settings(**options)


def new_run_id(length: int = 8) -> str:
    """A fresh W&B-style run id (lowercase letters and digits)."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _thin(n: int, limit: int) -> list[int]:
    """Indices of at most ``limit`` evenly spaced points of ``n``, both ends kept."""
    if n <= limit:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, limit).round().astype(int).tolist()))
