"""Which exceptions are the user's to fix (one line, exit 2) and which mean a failed run.

Every error a user can fix by changing an input (a config value, a path, a file, an option)
derives from :class:`UserError`; the CLI prints its first line and exits 2. Anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys


class UserError(ValueError):
    """A mistake in the user's input; its message says what is wrong and what is allowed."""


class DivergedError(RuntimeError):
    """The loss became NaN or infinite; the message says where and at which lr."""


class RunError(UserError, RuntimeError):
    """A run cannot start or continue as asked (e.g. --resume of a finished run)."""


def exit_code_for(err: BaseException) -> int | None:
    """The exit code for an expected error, or None for a bug (let it raise)."""
    if isinstance(err, DivergedError):
        return 3
    if isinstance(err, (UserError, FileNotFoundError, FileExistsError)):
        return 2
    if isinstance(err, (PermissionError, OSError)) and getattr(err, "filename", None):
        return 2
    if _is_cuda_oom(err):
        return 2
    return None


def fail(message: str, code: int = 2) -> int:
    """Print ``wbclf: error: MESSAGE`` on stderr and return ``code`` (every command's way out)."""
    print(f"wbclf: error: {message}", file=sys.stderr)
    return code


def _is_cuda_oom(err: BaseException) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return isinstance(err, torch.cuda.OutOfMemoryError)


# Fault points: named places on the write path where a test can make the process die as if
# killed (os._exit skips every finally, flush and atexit handler, like SIGKILL). Armed with
# WBCLF_FAULT=<point> (every time the point is reached) or WBCLF_FAULT=<point>:<epoch>.
FAULT_ENV = "WBCLF_FAULT"
FAULT_POINTS = ("checkpoint-written", "log-line-written", "wandb-row-handed",
                "summary-written")


def fault_point(name: str, epoch: int | None = None) -> None:
    """Exit with code 137 right here when ``WBCLF_FAULT`` names this point (and epoch)."""
    armed = os.environ.get(FAULT_ENV, "")
    if not armed:
        return
    point, _, at = armed.partition(":")
    if point != name or (at and (epoch is None or str(epoch) != at)):
        return
    print(f"wbclf: fault point '{name}' reached; exiting with 137", file=sys.stderr, flush=True)
    os._exit(137)
