"""Which exceptions are the user's to fix (one line, exit 2) and which mean a failed run."""

from __future__ import annotations


class DivergedError(RuntimeError):
    """The loss became NaN or infinite; the message says where and at which lr."""


class RunError(RuntimeError):
    """A run cannot start or continue as asked (e.g. --resume of a finished run)."""


def exit_code_for(err: BaseException) -> int | None:
    """The exit code for an expected error, or None for a bug (let it raise)."""
    from wbclf.config import ConfigError
    from wbclf.data.layouts import DatasetError

    if isinstance(err, DivergedError):
        return 3
    if isinstance(err, (ConfigError, DatasetError, RunError, FileNotFoundError,
                        FileExistsError)):
        return 2
    if isinstance(err, ValueError) and type(err).__module__.startswith("wbclf"):
        return 2
    if isinstance(err, (PermissionError, OSError)) and getattr(err, "filename", None):
        return 2
    if type(err).__name__ in ("WeightsNotFoundError", "PackagedWeightsError"):
        return 2
    if _is_cuda_oom(err):
        return 2
    return None


def _is_cuda_oom(err: BaseException) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return isinstance(err, torch.cuda.OutOfMemoryError)
