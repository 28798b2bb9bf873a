"""Where a run's figures go: the Logger protocol and the loggers that need no W&B.

The training code talks to one injected :class:`Logger` (usually a :class:`MultiLogger` of
:class:`LocalRunLogger` and :class:`wbclf.tracking.wandb_logger.WandbLogger`). Importing this
module never imports wandb, torch or matplotlib.

Call order a run makes (see ``wbclf.training.run``)::

    start(cfg=..., run_dir=..., class_names=..., resume=..., start_epoch=...)
    log_config(values); log_augment_preview(grid, caption)   # a new run, log_samples > 0
    log_epoch(epoch, metrics)            # every epoch, epoch 1-based
    log_samples(epoch, samples, "val_samples")   # some epochs
    log_evaluation(val); log_evaluation(test)    # best model, after training
    log_samples(best_epoch, samples, "best_samples"); log_mistakes(samples)
    log_summary(summary)                 # may come more than once; later keys win
    finish(status)                       # always, also after an error
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from wbclf.atomic import write_bytes_atomic, write_text_atomic
from wbclf.errors import fault_point
from wbclf.metrics import confusion_matrix, json_safe, per_class_rows
from wbclf.tracking.predictions import write_predictions
from wbclf.tracking.records import FINISH_STATUSES, Evaluation, SamplePredictions, check_status

if TYPE_CHECKING:
    from wbclf.config import RunConfig

__all__ = [
    "FINISH_STATUSES",
    "LocalRunLogger",
    "default_loggers",
    "Logger",
    "MemoryLogger",
    "MultiLogger",
    "read_metrics",
    "write_text_atomic",
]

PER_CLASS_COLUMNS = ("split", "class", "key", "precision", "recall", "f1", "support")


@runtime_checkable
class Logger(Protocol):
    """What the training code reports, and when (see the module docstring for the order)."""

    def start(self, *, cfg: RunConfig, run_dir: Path, class_names: list[str], resume: bool,
              start_epoch: int) -> None:
        """Begin (or, with ``resume``, continue from ``start_epoch``) the run in ``run_dir``."""

    def log_config(self, values: dict[str, Any]) -> None:
        """Facts about the run known only once it is built (e.g. where the weights came from),
        kept beside the RunConfig fields so runs can be grouped and filtered by them."""

    def log_augment_preview(self, grid: np.ndarray, caption: str) -> None:
        """The training augmentation as a picture (HWC uint8 RGB), once when a run starts."""

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Scalars of one epoch (1-based): ``train/loss``, ``val/acc``, ``lr``, ``time_s``..."""

    def log_samples(self, epoch: int, samples: SamplePredictions, tag: str) -> None:
        """Sample predictions: ``val_samples`` while training, ``best_samples`` at the end."""

    def log_evaluation(self, evaluation: Evaluation) -> None:
        """A final evaluation of the best model on one split (``val`` or ``test``)."""

    def log_mistakes(self, samples: SamplePredictions) -> None:
        """The most confident mistakes on test."""

    def log_summary(self, summary: dict[str, Any]) -> None:
        """Final figures (flat dict; the summary keys of docs/ARCHITECTURE.md and more)."""

    def finish(self, status: str = "finished") -> None:
        """End the run: ``finished``, ``pruned``, ``failed``, ``diverged`` or ``interrupted``."""


def default_loggers(cfg: RunConfig, group: str | None = None, tags: Sequence[str] = ()
                    ) -> list[Logger]:
    """The run directory always; W&B unless ``wandb_mode=disabled`` (imported only then)."""
    loggers: list[Logger] = [LocalRunLogger()]
    if cfg.wandb_mode != "disabled":
        from wbclf.tracking.wandb_logger import WandbLogger

        loggers.append(WandbLogger(mode=cfg.wandb_mode, project=cfg.project, group=group,
                                   tags=tags))
    return loggers


# --------------------------------------------------------------------------- fan-out, memory


class MultiLogger:
    """Sends every call to several loggers, in order.

    ``finish`` reaches every logger even when one of them raises (the first error is raised
    afterwards), so that a failing logger never leaves another one's run open.
    """

    def __init__(self, loggers: Sequence[Logger]) -> None:
        self.loggers = list(loggers)

    def start(self, *, cfg: RunConfig, run_dir: Path, class_names: list[str], resume: bool,
              start_epoch: int) -> None:
        for logger in self.loggers:
            logger.start(cfg=cfg, run_dir=run_dir, class_names=class_names, resume=resume,
                         start_epoch=start_epoch)

    def log_config(self, values: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.log_config(values)

    def log_augment_preview(self, grid: np.ndarray, caption: str) -> None:
        for logger in self.loggers:
            logger.log_augment_preview(grid, caption)

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        for logger in self.loggers:
            logger.log_epoch(epoch, metrics)

    def log_samples(self, epoch: int, samples: SamplePredictions, tag: str) -> None:
        for logger in self.loggers:
            logger.log_samples(epoch, samples, tag)

    def log_evaluation(self, evaluation: Evaluation) -> None:
        for logger in self.loggers:
            logger.log_evaluation(evaluation)

    def log_mistakes(self, samples: SamplePredictions) -> None:
        for logger in self.loggers:
            logger.log_mistakes(samples)

    def log_summary(self, summary: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.log_summary(summary)

    def finish(self, status: str = "finished") -> None:
        first: BaseException | None = None
        for logger in self.loggers:
            try:
                logger.finish(status)
            except BaseException as err:  # noqa: BLE001 - every logger must get its finish,
                first = first or err  # also after Ctrl-C while one of them was waiting
        if first is not None:
            raise first


class MemoryLogger:
    """Keeps everything it is given, for tests.

    Attributes:
        started: The keyword arguments of the last ``start``.
        epochs: ``{epoch: metrics}``; an epoch logged again replaces the earlier one.
        samples: ``(epoch, tag, samples)`` in call order.
        evaluations: ``{split: Evaluation}``.
        mistakes: The ``log_mistakes`` arguments in call order.
        summary: Every ``log_summary`` merged (later keys win), plus ``status`` at finish.
        config: Every ``log_config`` merged.
        status: The ``finish`` status, None until then.
        calls: Method names in call order.
    """

    def __init__(self) -> None:
        self.started: dict[str, Any] = {}
        self.epochs: dict[int, dict[str, float]] = {}
        self.samples: list[tuple[int, str, SamplePredictions]] = []
        self.evaluations: dict[str, Evaluation] = {}
        self.mistakes: list[SamplePredictions] = []
        self.summary: dict[str, Any] = {}
        self.config: dict[str, Any] = {}
        self.previews: list[tuple[np.ndarray, str]] = []
        self.status: str | None = None
        self.calls: list[str] = []

    @property
    def history(self) -> list[dict[str, Any]]:
        """The epochs as rows ``{"epoch": E, ...metrics}``, in epoch order."""
        return [{"epoch": e, **self.epochs[e]} for e in sorted(self.epochs)]

    def start(self, *, cfg: RunConfig, run_dir: Path, class_names: list[str], resume: bool,
              start_epoch: int) -> None:
        self.calls.append("start")
        self.started = {"cfg": cfg, "run_dir": Path(run_dir), "class_names": list(class_names),
                        "resume": resume, "start_epoch": start_epoch}
        if resume:
            self.epochs = {e: m for e, m in self.epochs.items() if e < start_epoch}
        self.status = None

    def log_config(self, values: dict[str, Any]) -> None:
        self.calls.append("log_config")
        self.config.update(values)

    def log_augment_preview(self, grid: np.ndarray, caption: str) -> None:
        self.calls.append("log_augment_preview")
        self.previews.append((grid, caption))

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.calls.append("log_epoch")
        self.epochs[int(epoch)] = dict(metrics)

    def log_samples(self, epoch: int, samples: SamplePredictions, tag: str) -> None:
        self.calls.append("log_samples")
        self.samples.append((int(epoch), tag, samples))

    def log_evaluation(self, evaluation: Evaluation) -> None:
        self.calls.append("log_evaluation")
        self.evaluations[evaluation.split] = evaluation

    def log_mistakes(self, samples: SamplePredictions) -> None:
        self.calls.append("log_mistakes")
        self.mistakes.append(samples)

    def log_summary(self, summary: dict[str, Any]) -> None:
        self.calls.append("log_summary")
        self.summary.update(summary)

    def finish(self, status: str = "finished") -> None:
        self.calls.append("finish")
        self.status = check_status(status)
        self.summary["status"] = status


# --------------------------------------------------------------------------- run directory


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl``; lines that do not parse or lack an int epoch are skipped.

    Skipping rather than failing keeps a run resumable after a hand-edited or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("epoch"), int):
            rows.append(row)
    return rows


class LocalRunLogger:
    """Writes the run directory (docs/ARCHITECTURE.md); always on.

    Files, each written atomically (temporary file + ``os.replace``):

    * ``metrics.jsonl``: one ``{"epoch": E, ...metrics}`` per epoch, in epoch order. On a
      resume from ``start_epoch=k`` the rows with ``epoch >= k`` are dropped (they belong to
      epochs that will run again), so every epoch appears exactly once.
    * ``per_class.csv``: ``split,class,key,precision,recall,f1,support`` for each evaluation.
    * ``predictions_val.npz``, ``predictions_test.npz``: per-image predictions
      (``wbclf.tracking.predictions``).
    * ``reliability.png``: the reliability diagram of val and test (calibration), drawn once
      when the test evaluation arrives, or at ``finish`` when a run ended before it.
    * ``confusion_matrix.png`` (test) and ``confusion_matrix_val.png``.
    * ``roc.png``: ROC and PR curves on test, binary tasks only.
    * ``samples.png``: the ``best_samples`` grid (Grad-CAM beside each image when given);
      ``val_samples`` logged during training are left to W&B (a PNG per epoch is not worth it).
    * ``mistakes.png``: the most confident mistakes on test.
    * ``summary.json``: every ``log_summary`` merged, plus ``status`` at finish; JSON-safe
      (NaN becomes null), sorted keys.

    The figures are drawn when their data arrives and encoded and written on a background
    thread (:class:`~wbclf.tracking.figure_writer.FigureWriter`), overlapping what the run
    does next; ``finish`` returns once every one is in place, and writes the status last.

    Args:
        dpi: Resolution of the PNG files.
    """

    def __init__(self, *, dpi: int = 110) -> None:
        self.dpi = dpi
        self.run_dir: Path | None = None
        self.class_names: list[str] = []
        self._rows: list[dict[str, Any]] = []
        self._per_class: dict[str, list[dict[str, Any]]] = {}
        self._evaluations: dict[str, Evaluation] = {}
        self._reliability_stale = False  # evaluations arrived that reliability.png lacks
        self._summary: dict[str, Any] = {}
        self._figures: Any = None  # a FigureWriter, made at the first figure (see _save)

    def _dir(self) -> Path:
        if self.run_dir is None:
            raise RuntimeError("LocalRunLogger: call start() before logging")
        return self.run_dir

    def _save(self, fig: Any, name: str, *, chart: bool) -> None:
        """Save a figure into the run directory; its PNG is encoded and written in the
        background (:class:`wbclf.tracking.figure_writer.FigureWriter`), in place by the end
        of :meth:`finish`."""
        if self._figures is None:
            from wbclf.tracking.figure_writer import FigureWriter

            self._figures = FigureWriter()
        self._figures.save(fig, self._dir() / name, dpi=self.dpi, chart=chart)

    def start(self, *, cfg: RunConfig, run_dir: Path, class_names: list[str], resume: bool,
              start_epoch: int) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.class_names = list(class_names)
        path = self.run_dir / "metrics.jsonl"
        self._rows = [r for r in read_metrics(path) if r["epoch"] < start_epoch] if resume else []
        self._write_metrics()
        self._per_class = {}
        self._evaluations = {}
        self._reliability_stale = False
        # A resumed run starts its summary afresh: keys of an earlier failed attempt (such as
        # "error") must not survive into the new summary.json, which replaces the old one.
        self._summary = {}

    def log_config(self, values: dict[str, Any]) -> None:
        """Nothing to write: ``config.yaml`` is the RunConfig alone, and the facts logged here
        (the weight source) reach ``summary.json`` with the summary."""

    def log_augment_preview(self, grid: np.ndarray, caption: str) -> None:
        """``augment_preview.png``: the grid as is (no figure, so it costs milliseconds)."""
        import cv2

        ok, png = cv2.imencode(".png", np.ascontiguousarray(grid[..., ::-1]))
        if ok:
            write_bytes_atomic(self._dir() / "augment_preview.png", png.tobytes())

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        row = json_safe({"epoch": int(epoch), **metrics})
        self._rows = [r for r in self._rows if r["epoch"] != row["epoch"]] + [row]
        self._rows.sort(key=lambda r: r["epoch"])
        self._write_metrics()
        fault_point("log-line-written", row["epoch"])

    def _write_metrics(self) -> None:
        text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in self._rows)
        write_text_atomic(self._dir() / "metrics.jsonl", text)

    def log_samples(self, epoch: int, samples: SamplePredictions, tag: str) -> None:
        if tag != "best_samples":
            return
        from wbclf.tracking.plots import samples_grid

        fig = samples_grid(samples, title=f"Best model (epoch {epoch}): sample predictions")
        self._save(fig, "samples.png", chart=False)

    def log_evaluation(self, evaluation: Evaluation) -> None:
        from wbclf.tracking.plots import confusion_matrix_figure, roc_figure

        ev = evaluation
        write_predictions(self._dir(), ev)  # per-image predictions: the report's raw material
        self._evaluations[ev.split] = ev
        self._reliability_stale = True
        # One figure shows val and test: drawn when test (which comes last) arrives, not once
        # per evaluation; finish() draws it for a run that stopped before test.
        if ev.split == "test":
            self._write_reliability()
        self._per_class[ev.split] = per_class_rows(ev.labels, ev.probs, ev.class_names,
                                                   threshold=ev.threshold)
        self._write_per_class()
        cm = confusion_matrix(ev.labels, ev.preds, len(ev.class_names))
        name = "confusion_matrix.png" if ev.split == "test" else f"confusion_matrix_{ev.split}.png"
        fig = confusion_matrix_figure(cm, ev.class_names, title=f"Confusion matrix ({ev.split})")
        self._save(fig, name, chart=True)
        if len(ev.class_names) == 2 and ev.split == "test":
            fig = roc_figure(ev.labels, ev.probs[:, 1], positive_name=ev.class_names[1],
                             threshold=ev.threshold,
                             title=f"{ev.class_names[1]} on {ev.split} (n={len(ev.labels)})")
            self._save(fig, "roc.png", chart=True)

    def _write_reliability(self) -> None:
        from wbclf.tracking.reliability import reliability_figure

        shown = [self._evaluations[s] for s in ("val", "test") if s in self._evaluations]
        if shown:
            self._save(reliability_figure(shown), "reliability.png", chart=True)
        self._reliability_stale = False

    def _write_per_class(self) -> None:
        order = {"train": 0, "val": 1, "test": 2}
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=PER_CLASS_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for split in sorted(self._per_class, key=lambda s: (order.get(s, 3), s)):
            for row in self._per_class[split]:
                writer.writerow({"split": split, **row})
        write_text_atomic(self._dir() / "per_class.csv", buf.getvalue())

    def log_mistakes(self, samples: SamplePredictions) -> None:
        from wbclf.tracking.plots import samples_grid

        fig = samples_grid(samples, title="Worst mistakes on test (most confident errors)")
        self._save(fig, "mistakes.png", chart=False)

    def log_summary(self, summary: dict[str, Any]) -> None:
        self._summary.update(summary)
        try:
            # the figures so far are in place: one that failed fails the run (its status
            # comes later, with finish), as a failed write did when figures were synchronous
            if self._figures is not None:
                self._figures.wait()
        finally:
            self._write_summary()

    def finish(self, status: str = "finished") -> None:
        self._summary["status"] = check_status(status)
        try:
            try:
                if self._reliability_stale:
                    self._write_reliability()
            finally:  # every figure in place before the status says the run ended
                figures, self._figures = self._figures, None
                if figures is not None:
                    figures.close()
        finally:  # the status is written even when a figure fails
            self._write_summary()

    def _write_summary(self) -> None:
        text = json.dumps(json_safe(self._summary), indent=2, sort_keys=True, allow_nan=False)
        write_text_atomic(self._dir() / "summary.json", text + "\n")
