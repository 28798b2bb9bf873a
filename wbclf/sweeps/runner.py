"""Run a study's trials as subprocesses, a few at a time, and report as they finish.

Each trial is the command ``wandb agent`` would run (see :mod:`.command`) plus
``--out_dir=<sweep out> --run_name=<trial name>``: an ordinary ``wbclf train`` run directory,
and a W&B run grouped under the sweep's name. A crashed trial is one failed trial, never a
failed sweep, unless ``max_failures`` trials in a row crash with the same error: then no new
trial starts (see :class:`FailureGuard`). With ``--workers N`` the trials run in N slots:
one GPU each (round robin over the visible GPUs) and an equal share of the CPU cores
(affinity and OMP/MKL threads).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from wbclf.sweeps import trial as sweep_hooks
from wbclf.config import coerce
from wbclf.sweeps.command import (
    render_command,
    shell_line,
    uses_args_json_file,
    write_args_json_file,
    write_param_file,
)
from wbclf.sweeps.preflight import Missing, trial_inputs
from wbclf.sweeps.prestart import Prestarted, spawn_service, spawn_worker, uses_wandb
from wbclf.sweeps.spec import SweepSpec
from wbclf.sweeps.space import pruner_settings
from wbclf.sweeps.storage import HEARTBEAT_S
from wbclf.sweeps.study import FINAL, Claim, Outcome, SweepStudy, process_identity
from wbclf.sweeps.warm import WarmTrial, WarmWorker, warm_enabled, warm_program
from wbclf.tracking.wandb_service import SharedService

POLL_S = 0.05
STOP_GRACE_S = 30  # after Ctrl-C, trials get this long to save and exit before they are killed
ORPHAN_POLL_S = 1.0


@dataclass
class Slot:
    """Where one trial at a time runs: its devices, and the trial running there."""

    index: int
    env: dict[str, str] = field(default_factory=dict)
    cpus: list[int] | None = None
    proc: subprocess.Popen | WarmTrial | None = None
    claim: Claim | None = None
    log: IO[str] | None = None
    started: float = 0.0


def visible_gpus() -> list[str]:
    """CUDA device ids this process may use (respecting CUDA_VISIBLE_DEVICES)."""
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 -- no torch / no driver: CPU
        return []
    if count == 0:
        return []
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
              if d.strip()]
    return (listed or [str(i) for i in range(count)])[:count]


def plan_slots(workers: int) -> list[Slot]:
    """``workers`` slots; with more than one, split GPUs and CPU cores between them."""
    if workers == 1:
        return [Slot(0)]
    gpus = visible_gpus()
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else list(range(os.cpu_count() or 1))
    share = max(1, len(cores) // workers)
    slots = []
    for i in range(workers):
        first = (i * share) % len(cores)
        cpus = cores[first:first + share]
        env = {"OMP_NUM_THREADS": str(share), "MKL_NUM_THREADS": str(share)}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        slots.append(Slot(i, env, cpus))
    return slots


def _child_setup(cpus: list[int] | None) -> Any:
    """A preexec_fn: pin the trial to its cores; make it stop if the sweep process dies."""
    if not sys.platform.startswith("linux"):
        return None

    def setup() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        try:
            import ctypes

            # PR_SET_PDEATHSIG: SIGINT when the sweep dies, so the trial ends like on Ctrl-C
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGINT)
        except OSError:
            pass

    return setup


def last_error(log_path: Path) -> str:
    """The error a failed trial printed: its ``wbclf: error:`` line or its last line."""
    try:
        lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln and not ln.startswith("# wbclf sweep:")]
    for line in reversed(lines):
        if line.startswith("wbclf: error:"):
            return line[len("wbclf: error:"):].strip()[:300]
    return lines[-1][:300] if lines else ""


@dataclass
class FailureGuard:
    """Counts crashed trials in a row with the same error; trips at ``limit`` (0 = never).

    Diverged and pruned trials are results, not crashes: they end a streak like a finished
    one. Interrupted and skipped trials neither count nor end it.
    """

    limit: int = 3
    streak: int = 0
    error: str = ""
    log: str = ""

    def add(self, status: str, error: str, log: str) -> bool:
        """Count one outcome; True when the guard trips with it."""
        if status == "failed":
            self.streak = self.streak + 1 if error == self.error else 1
            self.error, self.log = error, log
        elif status in ("finished", "pruned", "diverged"):
            self.streak, self.error = 0, ""
        return self.tripped

    @property
    def tripped(self) -> bool:
        return self.limit > 0 and self.streak >= self.limit


def read_summary(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class SweepRunner:
    """Runs one sweep process: claims trials, runs them in slots, records their outcomes."""

    def __init__(self, spec: SweepSpec, study: SweepStudy, *, out_dir: Path, program: str,
                 workers: int = 1, count: int | None = None, quiet_bar: bool = False,
                 max_failures: int = 3, skip: list[Missing] | None = None,
                 prestarted: Prestarted | None = None) -> None:
        self.spec = spec
        self.study = study
        self.out = out_dir
        self.program = program
        self.slots = plan_slots(workers)
        self.count = count
        self.owner = process_identity()
        self.pruner = pruner_settings(spec)
        self.launched = 0
        self.results: list[tuple[Claim, Outcome]] = []
        self.target_hit = False
        self.bar: Any = None
        self.quiet_bar = quiet_bar
        self._said: set[str] = set()
        self.guard = FailureGuard(max_failures)
        self.skip = list(skip or [])
        self.warm: WarmWorker | None = None
        self._warm_tried = False
        self.shared_wandb: SharedService | None = None
        self.prestarted = prestarted  # taken by the first warm trial, else ended by run()

    # ------------------------------------------------------------------ the loop

    def run(self) -> int:
        """Run until the study, ``--count`` or the target is done; 130 when interrupted."""
        self._open_bar()
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        previous_int = signal.getsignal(signal.SIGINT)
        try:
            self._loop()
        except KeyboardInterrupt:
            self._stop()
            self._say(f"interrupted: run the same command again to continue ("
                      f"{sum(1 for _, o in self.results if o.status == 'interrupted')} "
                      "trial(s) will run again)")
            return 130
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
            if self.bar is not None:
                self.bar.close()
            if self.prestarted is not None:  # no trial took them (nothing left to run)
                self.prestarted.abort()
            if self.warm is not None:
                self.warm.close()
            if self.shared_wandb is not None:  # after the trials: they finish their runs in it
                self.shared_wandb.close()
        return 1 if self.guard.tripped else 0

    def _open_warm(self, claim: Claim, argv: list[str]) -> None:
        """Start the warm worker trials fork from (see :mod:`.warm`) before the first trial
        that can use it, or adopt the one :mod:`.prestart` started; trials start cold when it
        is off or fails. The shared W&B service (:mod:`wbclf.tracking.wandb_service`) starts
        beside it, while it imports."""
        if self._warm_tried or not warm_enabled() or warm_program(argv) is None:
            return
        self._warm_tried = True
        worker, service = self.prestarted.take() if self.prestarted is not None else (None, None)
        if uses_wandb(self.spec):
            try:
                self.shared_wandb = service or spawn_service(self.out)
            except OSError as err:
                self._say(f"warning: each trial starts its own W&B service ({err})")
        try:
            worker = worker or spawn_worker(self.spec, self.out)
            self.warm = worker.ready()
        except (OSError, RuntimeError) as err:
            if worker is not None:
                worker.abort()
            self._say(f"warning: trials start cold: the warm trial worker failed ({err})")
        except KeyboardInterrupt:  # the claimed trial has no process yet: it runs next time
            if worker is not None:
                worker.abort()
            self._record(claim, Outcome("interrupted", error="the sweep was interrupted"),
                         seconds=0.0)
            raise

    def _loop(self) -> None:
        exhausted = False
        last_beat = next_claim = time.monotonic()
        while True:
            for slot in self.slots:
                if slot.proc is not None and slot.proc.poll() is not None:
                    self._finish(slot, stopping=False)
            while not exhausted and not self.target_hit and self._may_launch() \
                    and time.monotonic() >= next_claim:
                slot = next((s for s in self.slots if s.proc is None), None)
                if slot is None:
                    break
                with _signals_deferred():
                    claim = self.study.claim(self.owner)
                if claim is None:
                    orphans = self.study.orphans()
                    if orphans:  # a killed sweep's trials are still exiting: retry them after
                        self._say_once(f"waiting for {orphans} trial(s) of a stopped sweep "
                                       "to exit")
                        next_claim = time.monotonic() + ORPHAN_POLL_S
                    else:
                        exhausted = True
                    break
                if self._skip_missing(claim):
                    continue
                self.launched += 1
                if not self._adopt(claim):
                    self._start(slot, claim)
            idle = all(s.proc is None for s in self.slots)
            if idle and (exhausted or self.target_hit or not self._may_launch()):
                return
            if time.monotonic() - last_beat > HEARTBEAT_S:
                self._heartbeat()
                last_beat = time.monotonic()
            time.sleep(POLL_S)

    def _may_launch(self) -> bool:
        if self.guard.tripped:
            return False
        return self.count is None or self.launched < self.count

    def _skip_missing(self, claim: Claim) -> bool:
        """Record the trial as skipped when an input it needs is missing (--skip-missing)."""
        inputs = trial_inputs(self.spec, self._params(claim))
        missing = next((m for m in self.skip if m.matches(inputs)), None)
        if missing is None:
            return False
        self._record(claim, Outcome("skipped", error=missing.line()), seconds=0.0)
        return True

    def _heartbeat(self) -> None:
        try:
            self.study.heartbeat([s.claim for s in self.slots if s.claim is not None])
        except Exception as err:  # noqa: BLE001 -- a hiccup; the next beat may work
            self._say(f"warning: could not record a heartbeat ({err})")

    # ------------------------------------------------------------------ one trial

    def _params(self, claim: Claim) -> dict[str, Any]:
        """Every parameter value of a trial, in the file's order (what the agent passes)."""
        constants = self.spec.constants
        return {k: claim.params.get(k, constants.get(k)) for k in self.spec.parameters}

    def command(self, claim: Claim) -> list[str]:
        """The trial's argv: the agent's rendering plus where the run goes."""
        params = self._params(claim)
        run_dir = self.out / claim.run_name
        argv = render_command(self.spec.command, program=self.program, params=params,
                              args_json_file=str(self._param_path(claim, ".json")))
        argv += [f"--out_dir={self.out}", f"--run_name={claim.run_name}"]
        if self.spec.project and "project" not in params:
            argv.append(f"--project={self.spec.project}")
        if (run_dir / "config.yaml").is_file():
            argv += ["--resume", str(run_dir)]  # a retried trial continues its run directory
        return argv

    def _param_path(self, claim: Claim, suffix: str) -> Path:
        return self.out / "params" / f"{claim.run_name}{suffix}"

    def environment(self, slot: Slot, claim: Claim) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("WANDB_SWEEP_ID", "WANDB_RUN_ID")}  # never join a cloud run
        env.update(slot.env)
        env.update({
            "WANDB_SWEEP_PARAM_PATH": str(self._param_path(claim, ".yaml")),
            sweep_hooks.GROUP_ENV: self.spec.name,
            "PYTHONUNBUFFERED": "1",
        })
        if self.shared_wandb is not None:
            # waits for the holder's answer once (it is ready before the worker, as a rule):
            # every warm trial then joins the one service, whatever the machine's load
            env.update(self.shared_wandb.env(wait_s=None))
        if self.spec.entity:
            env["WANDB_ENTITY"] = self.spec.entity
        if self.pruner is not None:
            env.update({
                sweep_hooks.ENV_STORAGE: self.study.url,
                sweep_hooks.ENV_STUDY: self.study.name,
                sweep_hooks.ENV_TRIAL: str(claim.number),
                sweep_hooks.ENV_PRUNER: json.dumps(self.pruner),
                sweep_hooks.ENV_METRIC: self.spec.metric,
            })
        return env

    def _run_dir_conflict(self, claim: Claim) -> str:
        """Why the trial's run directory cannot be this trial's run ('' when it can)."""
        run_dir = self.out / claim.run_name
        try:
            saved = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        except FileNotFoundError:
            return ""
        except (OSError, yaml.YAMLError) as err:
            return f"{run_dir}/config.yaml is unreadable ({err})"
        for key, value in self._params(claim).items():
            if key in ("out_dir", "run_name", "project"):
                continue
            want = coerce(key, "None" if value is None else str(value))
            have = saved.get(key)
            same = math.isclose(want, have) if isinstance(want, float) \
                and isinstance(have, (int, float)) else want == have
            if not same:
                return (f"{run_dir} holds another run ({key}={have}; this trial has "
                        f"{key}={want}): move it away or use another --out")
        return ""

    def _adopt(self, claim: Claim) -> bool:
        """Settle a trial from its run directory without running it; False if it must run.

        The run may have ended after its sweep died and before it was recorded (its summary
        says so), or the directory may hold a different run (never resumed or overwritten).
        """
        conflict = self._run_dir_conflict(claim)
        if conflict:
            self._record(claim, Outcome("failed", error=conflict), seconds=0.0)
            return True
        summary = read_summary(self.out / claim.run_name)
        status = summary.get("status")
        if status not in FINAL or (claim.retry_failed and status == "failed"):
            return False  # to run (a --retry-failed rerun resumes the crashed run)
        outcome = Outcome(status, _number(summary.get(self.spec.metric)),
                          str(summary.get("error", "")))
        self._record(claim, outcome, seconds=0.0)
        return True

    def _start(self, slot: Slot, claim: Claim) -> None:
        params = self._params(claim)
        write_param_file(self._param_path(claim, ".yaml"), params)
        if uses_args_json_file(self.spec.command):
            write_args_json_file(self._param_path(claim, ".json"), params)
        argv = self.command(claim)
        self._open_warm(claim, argv)
        log_path = self.out / "logs" / f"{claim.run_name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 -- closed in _finish
        log.write(f"# wbclf sweep: trial {claim.number}: {shell_line(argv)}\n")
        log.flush()
        env = self.environment(slot, claim)
        try:
            # A fork of the warm worker when the command allows it, else a new process; either
            # way in its own session: a terminal's Ctrl-C reaches the sweep only, which then
            # asks each trial once to stop (a second SIGINT could cut its checkpointing short).
            slot.proc = self.warm.start(argv, env=env, log_path=log_path, cpus=slot.cpus) \
                if self.warm is not None else None
            if slot.proc is None:
                slot.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env=env,
                                             start_new_session=True,
                                             preexec_fn=_child_setup(slot.cpus))  # noqa: PLW1509
        except OSError as err:
            log.close()
            self._record(claim, Outcome("failed", error=f"cannot start {argv[0]}: {err}"),
                         seconds=0.0)
            return
        slot.claim, slot.log, slot.started = claim, log, time.monotonic()
        self.study.set_child(claim, slot.proc.pid)

    def _finish(self, slot: Slot, *, stopping: bool) -> None:
        assert slot.proc is not None and slot.claim is not None
        code = slot.proc.returncode
        claim = slot.claim
        if slot.log is not None:
            slot.log.close()
        outcome = self._outcome(claim, code, stopping=stopping)
        self._record(claim, outcome, seconds=time.monotonic() - slot.started, exit_code=code)
        slot.proc = slot.claim = slot.log = None

    def _outcome(self, claim: Claim, code: int | None, *, stopping: bool) -> Outcome:
        summary = read_summary(self.out / claim.run_name)
        status = summary.get("status")
        log_path = self.out / "logs" / f"{claim.run_name}.log"
        if status in ("finished", "pruned"):
            return Outcome(status, _number(summary.get(self.spec.metric)))
        if stopping:
            return Outcome("interrupted", error="the sweep was interrupted")
        error = str(summary.get("error") or last_error(log_path))
        if status in ("failed", "diverged"):
            return Outcome(status, error=error)
        if code is not None and code < 0:
            error = f"killed by signal {-code}" + (f"; {error}" if error else "")
        elif code == 0:
            error = "it exited without writing summary.json" + (f"; {error}" if error else "")
        elif code == 3:
            return Outcome("diverged", error=error)
        return Outcome("failed", error=error or f"exit code {code}")

    def _record(self, claim: Claim, outcome: Outcome, **attrs: Any) -> None:
        run_dir = self.out / claim.run_name
        with _signals_deferred():
            stored = self.study.record(claim.number, claim.trial_id, outcome,
                                       run_dir=str(run_dir), **attrs)
        if not stored:
            self._say(f"warning: {claim.run_name} was already recorded by another process")
        self.results.append((claim, outcome))
        if outcome.status != "interrupted":
            self._report(claim, outcome, attrs.get("seconds", 0.0))
        log = str(self.out / "logs" / f"{claim.run_name}.log")
        if not self.guard.tripped and self.guard.add(outcome.status, outcome.error, log):
            self._say(f"stopping: {self.guard.streak} trials in a row crashed with the same "
                      f"error: {self.guard.error}\n  log: {self.guard.log}\n  fix the cause, "
                      "then run the same command with --retry-failed")
        target = self.spec.target
        if target is not None and outcome.status == "finished" and outcome.value is not None:
            reached = outcome.value >= target if self.spec.goal == "maximize" \
                else outcome.value <= target
            if reached and not self.target_hit:
                self.target_hit = True
                self._say(f"{claim.run_name} reached the target {self.spec.metric}={target}: "
                          "no new trials")

    # ------------------------------------------------------------------ stopping

    def _stop(self) -> None:
        """Ctrl-C / SIGTERM: let running trials save and exit, then record them interrupted.

        A second Ctrl-C kills the trials at once (they are retried all the same).
        """
        busy = [s for s in self.slots if s.proc is not None]

        def hurry(signum: int, frame: Any) -> None:
            for slot in busy:
                if slot.proc.poll() is None:
                    slot.proc.kill()

        signal.signal(signal.SIGINT, hurry)
        signal.signal(signal.SIGTERM, hurry)
        for slot in busy:
            if slot.proc.poll() is None:
                try:
                    slot.proc.send_signal(signal.SIGINT)
                except OSError:
                    pass
        deadline = time.monotonic() + STOP_GRACE_S
        for slot in busy:
            try:
                slot.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                slot.proc.kill()
                slot.proc.wait()
        for slot in busy:
            self._finish(slot, stopping=True)

    # ------------------------------------------------------------------ output

    def _open_bar(self) -> None:
        if self.quiet_bar or not sys.stderr.isatty():
            return
        from tqdm import tqdm

        tqdm.monitor_interval = 0  # no monitor thread: trials start with a fork (preexec_fn)
        self.bar = tqdm(total=self.study.total(), initial=self.study.done(), unit="trial",
                        desc=self.spec.name, file=sys.stderr, dynamic_ncols=True)

    def _say_once(self, line: str) -> None:
        if line not in self._said:
            self._said.add(line)
            self._say(line)

    def _say(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def _report(self, claim: Claim, outcome: Outcome, seconds: float) -> None:
        done, total = self.study.done(), self.study.total()
        params = "  ".join(f"{k}={v}" for k, v in claim.params.items())
        if outcome.status in ("finished", "pruned") and outcome.value is not None:
            result = f"{self.spec.metric}={outcome.value:.4f}"
        else:
            result = outcome.error or outcome.status
            result += f"  (log: {self.out / 'logs' / (claim.run_name + '.log')})"
        width = len(str(total)) if total else 1
        line = (f"[{done:>{width}}/{total or '?'}] {claim.run_name}  {outcome.status:<8}  "
                f"{params}  {result}  ({seconds:.1f}s)")
        self._say(line)
        if self.bar is not None:
            self.bar.n = done
            self.bar.refresh()


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C / SIGTERM until a study update is complete (delivered right after)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
