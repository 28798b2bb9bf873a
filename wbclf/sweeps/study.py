"""The study in Optuna's storage: which trial runs next, and what became of each.

Every sweep process (one per machine, however many workers it runs) claims trials through
:meth:`SweepStudy.claim`, under a lock shared through the database, so that:

- a grid point is claimed once: each grid trial is enqueued with all its parameters fixed and a
  ``grid_key`` user attribute, and a point is taken only if no trial holds it (Optuna's
  GridSampler would re-run RUNNING points once all are taken and never re-run failed ones);
- an *interrupted* trial (its sweep process was stopped or killed, or another machine stopped
  sending heartbeats) is marked FAIL with ``outcome=interrupted`` and enqueued again with the
  same parameters and run name (``retry_of`` = its number), so the rerun resumes its run
  directory; a trial that *failed* (crashed, diverged) is recorded with its error and is not
  retried, unless ``--retry-failed`` marks the crashed (and skipped) ones for a rerun (their
  numbers in the study's ``retry_failed`` user attribute, as Optuna keeps a finished trial's
  attributes fixed): they are then enqueued like interrupted ones (``retry_failed`` set on
  the new trial);
- ``run_cap`` counts every trial except interrupted and retried ones (their retry takes their
  place).

User attributes of a trial: ``run_name``, ``owner`` (host, boot id, pid, start time of the
sweep process running it), ``grid_key``, ``retry_of``, ``args`` (the values it got),
``outcome`` (finished | pruned | failed | diverged | skipped | interrupted), ``error``,
``run_dir``, ``seconds``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wbclf.sweeps.spec import SweepSpec
from wbclf.sweeps.space import grid_key, grid_points, search_space
from wbclf.sweeps.storage import GRACE_S, StudyLock, open_storage

FINAL = ("finished", "pruned", "failed", "diverged")
RETRYABLE = ("failed", "skipped")  # crashed, or not run for a missing input: never a result
RETRY_ATTR = "retry_failed"  # study user attribute: trial numbers replaced by a rerun


def fingerprint(spec: SweepSpec) -> str:
    """What makes two invocations the same study (pins included; counts and caps not)."""
    data = {"method": spec.method, "metric": spec.metric, "goal": spec.goal,
            "parameters": {k: p.config for k, p in spec.parameters.items()
                           if k not in ("out_dir", "run_name")},
            "early_terminate": spec.early_terminate}
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def study_name(spec: SweepSpec) -> str:
    return f"{spec.name}-{fingerprint(spec)}"


# ---------------------------------------------------------------------- process identity

def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> str:
    """When ``pid`` started (clock ticks since boot; tells a reused pid apart)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]


def process_identity(pid: int | None = None) -> dict[str, Any]:
    pid = os.getpid() if pid is None else pid
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid": pid,
            "start": _start_ticks(pid)}


def owner_gone(owner: Any) -> bool | None:
    """True if the sweep process ``owner`` no longer runs; None when this host cannot tell."""
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return None
    boot = _boot_id()
    if owner.get("boot") and boot and owner["boot"] != boot:
        return True  # the machine rebooted since
    pid = int(owner.get("pid", 0))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's: compare start times below
    start = _start_ticks(pid)
    return bool(owner.get("start") and start and start != owner["start"])


# ---------------------------------------------------------------------- the study

@dataclass(frozen=True)
class Claim:
    """A trial this process is to run."""

    number: int
    trial_id: int
    run_name: str
    params: dict[str, Any]  # the varying parameters' values (constants not included)
    retry_of: int | None = None
    retry_failed: bool = False  # a --retry-failed rerun: its run directory's failure is old


@dataclass(frozen=True)
class Outcome:
    """What became of a trial."""

    status: str  # finished | pruned | failed | diverged | skipped | interrupted
    value: float | None = None
    error: str = ""


def is_interrupted(trial: Any) -> bool:
    """A FAIL that was not the trial's own doing (Optuna's heartbeat check sets no outcome)."""
    from optuna.trial import TrialState

    outcome = trial.user_attrs.get("outcome")
    return trial.state == TrialState.FAIL and outcome in (None, "interrupted")


def is_replaced(trial: Any, marked: set[int]) -> bool:
    """A trial whose retry takes its place: interrupted, or ``marked`` by ``--retry-failed``."""
    return is_interrupted(trial) or trial.number in marked


def _sampler(method: str) -> Any:
    import optuna

    if method == "bayes":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # constant_liar: parallel workers do not all propose the same point
            return optuna.samplers.TPESampler(multivariate=True, constant_liar=True)
    # grid trials are all enqueued with fixed parameters; the sampler never draws for them
    return optuna.samplers.RandomSampler()


class SweepStudy:
    """One sweep's Optuna study and the claim / record protocol around it."""

    def __init__(self, spec: SweepSpec, storage_url: str) -> None:
        import optuna

        self.spec = spec
        self.url = storage_url
        self.name = study_name(spec)
        self.storage = open_storage(storage_url, heartbeat=True)
        self.lock = StudyLock(storage_url, f"wbclf-sweep:{self.name}")
        direction = "maximize" if spec.goal == "maximize" else "minimize"
        with self.lock:
            self.study = optuna.create_study(study_name=self.name, storage=self.storage,
                                             direction=direction, sampler=_sampler(spec.method),
                                             load_if_exists=True)
            if "wbclf" not in self.study.user_attrs:
                self.study.set_user_attr("wbclf", {"sweep": spec.name, "file": str(spec.path),
                                                   "fingerprint": fingerprint(spec),
                                                   "method": spec.method})
        self.study_id = self.storage.get_study_id_from_name(self.name)
        self.dimensions = search_space(spec)
        self.distributions = {k: d.distribution for k, d in self.dimensions.items()}
        self.grid = list(grid_points(spec.varying.values())) if spec.method == "grid" else None

    # ------------------------------------------------------------------ reading

    def trials(self) -> list[Any]:
        return self.study.get_trials(deepcopy=False)

    def counts(self) -> dict[str, int]:
        """Trials by outcome (interrupted ones that were retried are not counted)."""
        out = {"finished": 0, "pruned": 0, "failed": 0, "skipped": 0, "running": 0,
               "waiting": 0}
        from optuna.trial import TrialState

        marked = self.marked_for_retry()
        for t in self.trials():
            if t.number in marked:
                continue  # its rerun is the trial's result
            if t.state == TrialState.COMPLETE:
                out["finished"] += 1
            elif t.state == TrialState.PRUNED:
                out["pruned"] += 1
            elif t.state == TrialState.FAIL and t.user_attrs.get("outcome") == "skipped":
                out["skipped"] += 1
            elif t.state == TrialState.FAIL and not is_interrupted(t):
                out["failed"] += 1
            elif t.state == TrialState.RUNNING:
                out["running"] += 1
            elif t.state == TrialState.WAITING:
                out["waiting"] += 1
        return out

    def done(self) -> int:
        c = self.counts()
        return c["finished"] + c["pruned"] + c["failed"] + c["skipped"]

    def total(self) -> int | None:
        """How many trials the study has in all, when that is known."""
        if self.grid is not None:
            return len(self.grid) if self.spec.run_cap is None \
                else min(len(self.grid), self.spec.run_cap)
        return self.spec.run_cap

    def remaining_grid(self) -> list[dict[str, Any]]:
        """Grid points no trial holds (nor will after retries)."""
        marked = self.marked_for_retry()
        held = {t.user_attrs.get("grid_key") for t in self.trials()
                if not is_replaced(t, marked)}
        return [p for p in self.grid or [] if grid_key(p) not in held]

    def best(self) -> Any | None:
        try:
            return self.study.best_trial
        except ValueError:
            return None

    # ------------------------------------------------------------------ claiming

    def claim(self, owner: dict[str, Any]) -> Claim | None:
        """The next trial for this process to run, or None when the study has no more."""
        from optuna.trial import TrialState

        with self.lock:
            self._expire_stale()
            self._enqueue_retries()
            trials = self.trials()
            if not any(t.state == TrialState.WAITING for t in trials):
                marked = self.marked_for_retry()
                live = [t for t in trials if not is_replaced(t, marked)]
                if self.spec.run_cap is not None and len(live) >= self.spec.run_cap:
                    return None
                if self.grid is not None:
                    held = {t.user_attrs.get("grid_key") for t in live}
                    point = next((p for p in self.grid if grid_key(p) not in held), None)
                    if point is None:
                        return None
                    self.study.enqueue_trial(point, user_attrs={"grid_key": grid_key(point)})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # fixed values equal to grid values
                trial = self.study.ask(self.distributions)
            attrs = trial.user_attrs
            run_name = attrs.get("run_name") or f"trial-{trial.number:04d}"
            params = {k: self.dimensions[k].render(v) for k, v in trial.params.items()}
            trial.set_user_attr("run_name", run_name)
            trial.set_user_attr("owner", owner)
            trial.set_user_attr("args", params)
            trial_id = self._trial_id(trial.number)
            self.storage.record_heartbeat(trial_id)
            return Claim(number=trial.number, trial_id=trial_id, run_name=run_name,
                         params=params, retry_of=attrs.get("retry_of"),
                         retry_failed=bool(attrs.get("retry_failed")))

    def _trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def _expire_stale(self) -> None:
        """Mark RUNNING trials whose sweep process is gone as interrupted."""
        import optuna
        from optuna.trial import TrialState

        now = time.time()
        for t in self.trials():
            if t.state != TrialState.RUNNING:
                continue
            owner = t.user_attrs.get("owner")
            gone = owner_gone(owner)
            if owner is None and t.datetime_start is not None:
                gone = now - t.datetime_start.timestamp() > GRACE_S  # died while claiming
            if gone and owner_gone(t.user_attrs.get("child")) is False:
                continue  # its trial process still runs (and will end: see orphans())
            if gone:
                self.record(t.number, self._trial_id(t.number), Outcome(
                    "interrupted", error="its sweep process ended before the trial did"))
        # other machines: no heartbeat for GRACE_S (Optuna fails them without an outcome)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)

    def _enqueue_retries(self) -> None:
        trials = self.trials()
        retried = {t.user_attrs.get("retry_of") for t in trials}
        marked = self.marked_for_retry()
        for t in trials:
            if is_replaced(t, marked) and t.number not in retried:
                attrs = {"retry_of": t.number, "run_name": t.user_attrs.get("run_name")
                         or f"trial-{t.number:04d}"}
                if t.number in marked:
                    attrs["retry_failed"] = True
                if "grid_key" in t.user_attrs:
                    attrs["grid_key"] = t.user_attrs["grid_key"]
                self.study.enqueue_trial(dict(t.params), user_attrs=attrs)

    def retry_failed(self) -> list[str]:
        """Mark every crashed or skipped trial for a rerun; their run names, in trial order.

        Each is enqueued again (same parameters and run name) at the next claim, before any new
        trial, and stops counting as a result: the rerun's outcome replaces it.
        """
        from optuna.trial import TrialState

        names = []
        with self.lock:
            trials = self.trials()
            marked = self.marked_for_retry()
            for t in trials:
                if t.state == TrialState.FAIL and t.user_attrs.get("outcome") in RETRYABLE \
                        and t.number not in marked:
                    marked.add(t.number)
                    names.append(t.user_attrs.get("run_name") or f"trial-{t.number:04d}")
            self.study.set_user_attr(RETRY_ATTR, sorted(marked))
        return names

    def marked_for_retry(self) -> set[int]:
        """Numbers of the trials ``--retry-failed`` replaced by a rerun (read afresh)."""
        attrs = self.storage.get_study_user_attrs(self.study_id)
        return {int(n) for n in attrs.get(RETRY_ATTR, [])}

    # ------------------------------------------------------------------ recording

    def orphans(self) -> int:
        """RUNNING trials on this host whose sweep process died but whose trial still runs.

        A trial ends when its sweep process dies (PR_SET_PDEATHSIG on Linux) or runs to its
        end; until then it is not retried, so two processes never write one run directory.
        """
        from optuna.trial import TrialState

        return sum(1 for t in self.trials() if t.state == TrialState.RUNNING
                   and owner_gone(t.user_attrs.get("owner"))
                   and owner_gone(t.user_attrs.get("child")) is False)

    def set_child(self, claim: Claim, pid: int) -> None:
        """Remember the trial's process (see :meth:`orphans`)."""
        self.storage.set_trial_user_attr(claim.trial_id, "child", process_identity(pid))

    def heartbeat(self, claims: list[Claim]) -> None:
        for claim in claims:
            self.storage.record_heartbeat(claim.trial_id)

    def record(self, number: int, trial_id: int, outcome: Outcome, **attrs: Any) -> bool:
        """Store ``outcome`` for a RUNNING trial; False if it was already finished elsewhere."""
        import optuna
        from optuna.trial import TrialState

        status, value = outcome.status, outcome.value
        if status == "finished" and (value is None or not math.isfinite(value)):
            status = "failed"
            outcome = Outcome(status, error=outcome.error or
                              f"the run's summary.json has no {self.spec.metric}")
        try:
            for key, item in {"outcome": status, "error": outcome.error, **attrs}.items():
                self.storage.set_trial_user_attr(trial_id, key, item)
            if status == "finished":
                self.study.tell(number, value)
            elif status == "pruned":
                self.study.tell(number, state=TrialState.PRUNED)
            else:
                self.study.tell(number, state=TrialState.FAIL)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
            return False  # another process recorded it first (e.g. found it stale)
        return True
