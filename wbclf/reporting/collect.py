"""Read run directories into studies: config, summary, metrics history and status of each run.

A *run directory* is any folder with a ``config.yaml`` or a ``summary.json`` (see
docs/ARCHITECTURE.md).
A *study* is the set of runs of one sweep folder (the nearest folder above the run that holds
a ``sweep.json``) or, for runs outside any sweep, of one parent folder. A sweep's trials that
never got a run directory (they failed before training started) are taken from the sweep's
``params/`` and ``logs/`` folders, so that they are listed too.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wbclf.config import AUGMENT_PRESETS
from wbclf.tracking.loggers import read_metrics

__all__ = ["RunRecord", "Study", "collect_studies", "read_run"]

SKIP_DIRS = frozenset({"checkpoints", "wandb", "params", "logs", "__pycache__"})
MAX_DEPTH = 6  # folders below RUNS_DIR that are searched for runs
NOT_FINISHED = "incomplete"  # no summary.json: crashed hard or still running


@dataclass
class RunRecord:
    """One run as the report sees it.

    Attributes:
        name: The run's path relative to RUNS_DIR (``scratch_bn/trial-0003``); unique.
        path: The run directory; None for a sweep trial that never got one.
        study: Name of the study the run belongs to.
        config: The resolved RunConfig fields (``config.yaml``; a trial's parameters otherwise).
        summary: ``summary.json`` ({} when missing).
        history: The rows of ``metrics.jsonl``, in epoch order.
        status: ``finished``, ``pruned``, ``failed``, ``diverged``, ``interrupted`` or
            ``incomplete`` (no summary.json).
        error: Why the run did not finish, when known.
    """

    name: str
    path: Path | None
    study: str
    config: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    status: str = "finished"
    error: str = ""

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def short_name(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    def value(self, key: str) -> float | None:
        """A numeric summary figure; None when missing, not a number, NaN or infinite."""
        value = self.summary.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value) if math.isfinite(value) else None

    def file(self, name: str) -> Path | None:
        """A file of the run directory, if it exists."""
        if self.path is None:
            return None
        path = self.path / name
        return path if path.is_file() else None


@dataclass
class Study:
    """The runs of one sweep folder (or one plain folder of runs).

    Attributes:
        name: The sweep's name, else the folder's path relative to RUNS_DIR.
        path: The folder.
        runs: Its runs, in name order.
        sweep: ``sweep.json`` when the folder is a local sweep.
        metric: The metric the study optimizes (``sweep.json``), ``val/acc`` by default.
        goal: ``maximize`` or ``minimize``.
        question: The sweep file's description and its ``# Question:`` comment, if found.
        parameter_order: Parameter names in the order of the sweep file (may be empty).
    """

    name: str
    path: Path
    runs: list[RunRecord]
    sweep: dict[str, Any] | None = None
    metric: str = "val/acc"
    goal: str = "maximize"
    question: str = ""
    parameter_order: list[str] = field(default_factory=list)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _unwrap(params: dict[str, Any]) -> dict[str, Any]:
    """``{"lr": {"value": 0.01}}`` (a W&B parameter file) -> ``{"lr": 0.01}``."""
    out = {}
    for key, value in params.items():
        if key.startswith("_") or key == "wandb_version":
            continue
        out[key] = value["value"] if isinstance(value, dict) and "value" in value else value
    return out


def _log_error(log: Path) -> str:
    """The most telling line of a trial's log: the last error line, else the last line."""
    try:
        lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace")
                 .splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if "error" in ln.lower()]
    line = (errors or lines or [""])[-1]
    return line[:240]


def read_run(path: Path, name: str, study: str) -> RunRecord:
    """Read one run directory."""
    config = pipeline_named(_read_yaml(path / "config.yaml"))
    summary_path = path / "summary.json"
    summary = _read_json(summary_path) if summary_path.is_file() else {}
    history = read_metrics(path / "metrics.jsonl")
    if summary_path.is_file():
        fallback = "finished" if "test/acc" in summary else NOT_FINISHED
        status = str(summary.get("status") or fallback)
    else:
        status = NOT_FINISHED
    error = str(summary.get("error") or "")
    if status == NOT_FINISHED and not error:
        error = "no summary.json: the run crashed or is still running"
    return RunRecord(name=name, path=path, study=study, config=config, summary=summary,
                     history=history, status=status, error=error)


def pipeline_named(config: dict[str, Any]) -> dict[str, Any]:
    """``augment`` as the report names it: a preset, or the pipeline file's name.

    A sweep over pipeline files gives each run a path; the tables, plots and findings show
    ``my_pipeline.yaml`` rather than where it lay on the machine that trained.
    """
    augment = config.get("augment")
    if isinstance(augment, str) and augment not in AUGMENT_PRESETS:
        config = {**config, "augment": Path(augment).name}
    return config


def _is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() or (path / "summary.json").is_file()


def _find_run_dirs(root: Path) -> tuple[list[Path], list[Path]]:
    """Run directories at or below ``root`` (not inside another run directory), and the
    folders that hold a ``sweep.json``."""
    runs: list[Path] = []
    sweeps: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        depth = len(here.relative_to(root).parts)
        if "sweep.json" in filenames:
            sweeps.append(here)
        if _is_run_dir(here):
            runs.append(here)
            dirnames[:] = []  # checkpoints/, wandb/ ... belong to the run
            continue
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS
                             and not d.startswith(".") and depth < MAX_DEPTH)
    return sorted(runs), sorted(sweeps)


def _sweep_root(run_dir: Path, root: Path) -> Path | None:
    """The nearest folder from the run's parent up to ``root`` that holds a sweep.json."""
    for folder in [run_dir, *run_dir.parents]:
        if folder != run_dir and (folder / "sweep.json").is_file():
            return folder
        if folder == root:
            break
    return None


def _question(sweep: dict[str, Any]) -> str:
    """The sweep file's ``# Question:`` comment and its description, when the file is found."""
    path = Path(str(sweep.get("file") or ""))
    if not path.is_file():
        return ""
    lines: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if not text or (lines and text.startswith(("In W&B", "Locally"))):
            if lines:
                break
            continue
        if lines or text.startswith("Question:"):
            lines.append(text)
    question = " ".join(lines).removeprefix("Question:").strip()
    # The file's grid arithmetic ("Grid: a x b = 16 runs") no longer holds once pinned.
    question = question.split(" Grid:")[0].strip()
    description = str(_read_yaml(path).get("description") or "").strip()
    return question or description


def _relative(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    return root.name if rel == "." else rel


def _missing_trials(folder: Path, present: set[str], study: str, root: Path) -> list[RunRecord]:
    """Trials of a sweep folder that have a parameter file but no run directory."""
    runs = []
    params_dir = folder / "params"
    if not params_dir.is_dir():
        return runs
    for params in sorted(params_dir.glob("trial-*")):
        name = params.name.split(".")[0]
        if name in present or params.suffix not in (".yaml", ".yml", ".json"):
            continue
        data = _read_json(params) if params.suffix == ".json" else _read_yaml(params)
        error = _log_error(folder / "logs" / f"{name}.log") or "no run directory"
        rel = _relative(folder / name, root)
        runs.append(RunRecord(name=rel, path=None, study=study, config=_unwrap(data),
                              status=NOT_FINISHED, error=error))
        present.add(name)
    return runs


def collect_studies(root: str | Path) -> list[Study]:
    """Every run under ``root``, grouped into studies (in folder order).

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise FileNotFoundError(2, "no such folder", str(root))
    groups: dict[Path, list[Path]] = {}
    sweeps: dict[Path, bool] = {}
    run_dirs, sweep_dirs = _find_run_dirs(root)
    for run_dir in run_dirs:
        sweep_dir = _sweep_root(run_dir, root)
        folder = sweep_dir or (run_dir.parent if run_dir != root else root)
        groups.setdefault(folder, []).append(run_dir)
        sweeps[folder] = sweep_dir is not None
    # Sweep folders whose trials all failed before creating a run directory still count.
    for sweep_dir in sweep_dirs:
        groups.setdefault(sweep_dir, [])
        sweeps[sweep_dir] = True

    studies: list[Study] = []
    names: dict[str, int] = {}
    for folder in sorted(groups):
        sweep = _read_json(folder / "sweep.json") if sweeps[folder] else None
        name = str(sweep.get("name")) if sweep and sweep.get("name") else _relative(folder, root)
        names[name] = names.get(name, 0) + 1
        studies.append(_build_study(folder, groups[folder], sweep, name, root))
    # Two sweeps of the same file (e.g. different --set pins) keep their folder in the name.
    for study in studies:
        if names[study.name] > 1:
            study.name = f"{study.name} ({_relative(study.path, root)})"
            for run in study.runs:
                run.study = study.name
    return [s for s in studies if s.runs]


def _build_study(folder: Path, run_dirs: list[Path], sweep: dict[str, Any] | None, name: str,
                 root: Path) -> Study:
    runs = [read_run(d, _relative(d, root), name) for d in run_dirs]
    if sweep is not None:
        runs += _missing_trials(folder, {d.name for d in run_dirs}, name, root)
    runs.sort(key=lambda r: r.name)
    study = Study(name=name, path=folder, runs=runs, sweep=sweep)
    if sweep:
        metric = sweep.get("metric") or {}
        study.metric = str(metric.get("name") or "val/acc")
        study.goal = "minimize" if metric.get("goal") == "minimize" else "maximize"
        study.parameter_order = list((sweep.get("parameters") or {}).keys())
        study.question = _question(sweep)
    return study
