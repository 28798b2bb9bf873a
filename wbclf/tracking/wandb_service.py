"""One W&B service process for all the trials of a local sweep.

Every ``wandb.init`` in a process without a service starts ``wandb-core`` and waits for it
(~0.2 s a trial). wandb's way for many processes is ``wandb.setup()`` in a parent: the
service's token goes into the environment and children connect to it. ``wbclf sweep`` keeps
its own process free of wandb's threads (it forks and starts trials), so a small *holder*
process does it (:class:`SharedService`): it calls ``wandb.setup()``, tells the sweep the
token, and calls ``wandb.teardown()`` when the sweep closes its stdin (the sweep ended, or
died). Trials get the token in :data:`SERVICE_ENV` and, as the mark of a sweep's own service,
in :data:`SHARED_ENV`.

A trial keeps an inherited token only when it is marked so and its holder is alive
(:func:`shared_service_usable`); any other inherited token is dropped, as before: a child
killed with SIGKILL leaves its run open in a shared service, and a later resume of that run
in the same service fails with "run ID ... is in use". A sweep never resumes a trial before
it has ended, and its next invocation has a service of its own. What sharing gives up: a
sweep killed with SIGKILL ends the service while its trials are still saving, so their W&B
runs miss their last records (their resume logs the missing epochs again).
"""

from __future__ import annotations

import os
import re
import select
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

SERVICE_ENV = "WANDB_SERVICE"  # where wandb keeps the token
SHARED_ENV = "WBCLF_SHARED_WANDB_SERVICE"  # the token a wbclf sweep started for its trials

# wandb's token: "<version>-<pid of the starting process>-unix-<socket path>" or
# "...-tcp-localhost-<port>" (the pid is read from any kind)
_TOKEN = re.compile(r"^\d+-(\d+)-(?:(unix|tcp)-(.+)$)?")


class SharedService:
    """The sweep's end of the holder process (start it with :meth:`spawn`)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.token: str | None = None
        self._buffer = b""

    @classmethod
    def spawn(cls, log_path: Path, env: Mapping[str, str] | None = None) -> SharedService:
        """Start the holder; it needs a second or two (importing wandb), which the sweep
        spends starting the warm worker; :meth:`env` then waits for its answer."""
        code = "import sys; from wbclf.tracking.wandb_service import hold; sys.exit(hold())"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        environ = {k: v for k, v in (os.environ if env is None else env).items()
                   if k not in (SERVICE_ENV, SHARED_ENV)}
        with open(log_path, "a", encoding="utf-8") as log:
            proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=log, env=environ,
                                    start_new_session=True)
        return cls(proc)

    def env(self, wait_s: float | None = 0.0) -> dict[str, str]:
        """What a trial started now adds to its environment: the token once the service is
        up, while the holder lives; else nothing.

        ``wait_s``: how long to wait for the holder's answer; None waits until it answers or
        exits (it gives up by itself after wandb's own service start timeout, 30 s).
        """
        while self.token is None and self.proc.stdout is not None:
            ready, _, _ = select.select([self.proc.stdout], [], [], wait_s)
            if not ready:
                break
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:  # the holder exited without a word
                self.token = ""
                break
            self._buffer += chunk
            line, newline, _ = self._buffer.partition(b"\n")
            if newline:
                self.token = line.decode().strip()
        if not self.token or self.proc.poll() is not None:
            return {}
        return {SERVICE_ENV: self.token, SHARED_ENV: self.token}

    def close(self) -> None:
        """End the service: EOF on the holder's stdin; it tears wandb down and exits."""
        self._close_pipes()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def abort(self) -> None:
        """End a holder whose service no trial used, at once (it may still be importing
        wandb; a wandb-core it started watches its pid and exits with it)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


def hold() -> int:
    """The holder process: start wandb's service, print its token, end it at EOF on stdin.

    The service inherits the holder's standard streams: stdout and stdin are moved aside
    first, so it never writes into the sweep's pipe or keeps it open.
    """
    token_out = os.fdopen(os.dup(1), "w")
    requests = os.dup(0)
    os.dup2(2, 1)  # wandb-core's output: the holder's log
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    token = ""
    try:
        if os.environ.get("WANDB_MODE", "").strip().lower() != "disabled":
            import wandb

            wandb.setup(wandb.Settings(silent=True))
            token = os.environ.get(SERVICE_ENV, "")
    except Exception as err:  # noqa: BLE001 -- no shared service: each trial starts one
        print(f"wbclf: no shared W&B service ({type(err).__name__}: {err})", file=sys.stderr)
    token_out.write(token + "\n")
    token_out.close()
    while os.read(requests, 4096):  # until the sweep closes stdin, or dies
        pass
    if token:
        import wandb

        wandb.teardown()
    return 0


def shared_service_usable(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the inherited token is a sweep's shared service that answers: its holder is
    alive and its socket takes a connection (a crashed service is never waited on)."""
    env = os.environ if environ is None else environ
    token = env.get(SERVICE_ENV, "")
    match = _TOKEN.match(token)
    if not token or token != env.get(SHARED_ENV) or match is None or not match.group(2):
        return False
    pid, kind, where = int(match.group(1)), match.group(2), match.group(3)
    try:
        os.kill(pid, 0)  # the holder is alive: it ends the service when it exits
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if kind == "unix":
        family, address = socket.AF_UNIX, where
    else:
        family, address = socket.AF_INET, ("127.0.0.1", int(where.rsplit("-", 1)[-1]))
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.settimeout(2.0)
            probe.connect(address)
    except (OSError, ValueError):
        return False
    return True


def drop_inherited_service() -> None:
    """Forget a ``WANDB_SERVICE`` that another process (a parent) started, unless it is the
    one a wbclf sweep started for its trials and it is still there
    (:meth:`SharedService.spawn`).

    wandb puts its service token in the environment, so child processes (``wbclf train`` run
    from a script or a test that used wandb) attach to the parent's wandb-core. A child killed
    with SIGKILL then leaves its run open in that shared core, and the resume fails with "run
    ID ... is in use". The token names the process that started the service: any other pid
    means it was inherited.
    """
    if shared_service_usable():
        return
    token = os.environ.get(SERVICE_ENV, "")
    match = _TOKEN.match(token)
    if token and (match is None or int(match.group(1)) != os.getpid()):
        os.environ.pop(SERVICE_ENV, None)
