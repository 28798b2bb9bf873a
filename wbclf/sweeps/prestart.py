"""The warm worker and the shared W&B service, started before the sweep checks its inputs.

Both import torch, timm or wandb for seconds; so does the pre-flight's check of the model's
weights, in the sweep's own process. Started first, they import on another core while the
check runs, instead of after it. The runner adopts them at its first trial
(:meth:`Prestarted.take`); whatever it does not adopt (a failed check, nothing left to run,
Ctrl-C) is ended by :meth:`Prestarted.abort`, which also removes the log files they opened
in an output folder that did not exist before.
"""

from __future__ import annotations

import os
from pathlib import Path

from wbclf.sweeps.command import render_command
from wbclf.sweeps.spec import SweepSpec
from wbclf.sweeps.warm import WarmWorker, warm_enabled, warm_program
from wbclf.tracking.wandb_service import SharedService

WORKER_LOG = Path("logs") / "warm-worker.log"
SERVICE_LOG = Path("logs") / "wandb-service.log"


def uses_wandb(spec: SweepSpec) -> bool:
    """Whether a trial may log to W&B (``wandb_mode`` not ``disabled`` everywhere)."""
    if os.environ.get("WANDB_MODE", "").strip().lower() == "disabled":
        return False
    modes = spec.field_values("wandb_mode") or []
    return any(str(mode).strip().lower() != "disabled" for mode in modes)


def listed_seeds(spec: SweepSpec) -> list[int]:
    """The seeds the trials run with, where the sweep lists them (else the default)."""
    listed = spec.field_values("seed") or []
    return [s for s in listed if isinstance(s, int) and not isinstance(s, bool) and s >= 0]


def spawn_worker(spec: SweepSpec, out: Path) -> WarmWorker:
    """The sweep's warm worker, started (not yet ready): it reads the packaged weights of the
    sweep's models and builds them for its listed seeds."""
    return WarmWorker.spawn(out / WORKER_LOG, models=[str(m) for m in spec.choices("model")],
                            seeds=listed_seeds(spec))


def spawn_service(out: Path) -> SharedService:
    """The holder of the sweep's one W&B service, started."""
    return SharedService.spawn(out / SERVICE_LOG)


def runs_warm(spec: SweepSpec, program: str) -> bool:
    """Whether the sweep's trials can be forks of a warm worker."""
    return warm_enabled() and warm_program(render_command(spec.command, program=program,
                                                          params={})) is not None


class Prestarted:
    """A warm worker (and W&B service) started ahead of the runner, until it takes them."""

    def __init__(self, worker: WarmWorker | None, service: SharedService | None,
                 created: list[Path]) -> None:
        self.worker = worker
        self.service = service
        self._created = created  # files and folders that did not exist before
        self.taken = False

    @classmethod
    def begin(cls, spec: SweepSpec, program: str, out: Path) -> Prestarted | None:
        """Start them when the trials can run warm; None otherwise (or if they cannot
        start: the runner then tries again and says why)."""
        if not runs_warm(spec, program):
            return None
        created = _missing_paths(out, out / "logs", out / WORKER_LOG, out / SERVICE_LOG)
        service = None
        try:
            if uses_wandb(spec):
                service = spawn_service(out)
            worker = spawn_worker(spec, out)
        except OSError:
            cls(None, service, created).abort()
            return None
        return cls(worker, service, created)

    def take(self) -> tuple[WarmWorker | None, SharedService | None]:
        """Hand both to the runner, which ends them from now on."""
        self.taken = True
        return self.worker, self.service

    def abort(self) -> None:
        """End what was not taken, and remove the files and folders made only for it."""
        if self.taken:
            return
        self.taken = True
        if self.worker is not None:
            self.worker.abort()
        if self.service is not None:
            self.service.abort()
        for path in reversed(self._created):  # files first, then their folders if empty
            if path.is_symlink():  # never ours: made by someone else meanwhile
                continue
            try:
                path.rmdir() if path.is_dir() else path.unlink(missing_ok=True)
            except OSError:  # a folder something else wrote into stays
                pass


def _missing_paths(out: Path, *inside: Path) -> list[Path]:
    """The folders above and at ``out`` and the paths ``inside`` it that do not exist yet
    (a dangling symlink exists), outermost first."""
    above = []
    folder = out
    while not os.path.lexists(folder) and folder != folder.parent:
        above.append(folder)
        folder = folder.parent
    return [*reversed(above), *(p for p in inside if not os.path.lexists(p))]
