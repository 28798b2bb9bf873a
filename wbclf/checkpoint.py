"""Checkpoints: everything needed to continue a run exactly, written atomically."""

from __future__ import annotations

import io
import os
import random
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wbclf.atomic import write_bytes_atomic


def rng_state() -> dict[str, Any]:
    """The state of every random generator that training draws from."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: Any, path: str | Path, *more: str | Path) -> None:
    """``torch.save`` written atomically: a crash or a full disk leaves the previous file.

    Further paths get the same bytes, in the order given (``best.pt`` before ``last.pt``):
    the object is serialized and written once, and the other paths are hard links to that
    file (a copy where the filesystem has no hard links). Every later save replaces a path
    with a new file, so the paths never change together.
    """
    # Serialize in memory first: torch's zip writer turns a failed write (full disk) into an
    # opaque RuntimeError, while a plain file write raises the OSError that says why.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    first = Path(path)
    for target in (first, *map(Path, more)):
        try:
            if target is first or not _link_atomic(first, target):
                write_bytes_atomic(target, buffer.getbuffer())
        except OSError as err:
            from wbclf.errors import RunError

            kept = "the previous one is intact" if target.exists() else "no earlier copy exists"
            raise RunError(f"could not write {target} ({err.strerror or err}); {kept}") from err


def _link_atomic(source: Path, target: Path) -> bool:
    """Make ``target`` a hard link to ``source``, replacing it in one rename; False where
    hard links are not possible (another filesystem, or one without them)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-link-{os.getpid()}-{threading.get_ident()}")
    tmp.unlink(missing_ok=True)  # left by a killed process that had this pid
    try:
        os.link(source, tmp)
    except OSError:  # no hard links here (EXDEV, EPERM, ENOSYS, EACCES on FUSE/SMB...): copy
        return False
    try:
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_atomic` (our own files: full unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # a truncated or foreign file
        raise ValueError(f"checkpoint '{path}' cannot be read ({type(err).__name__}); it may "
                         "be truncated or not a wbclf checkpoint") from None


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict of the underlying model (unwraps ``torch.compile``)."""
    inner = getattr(model, "_orig_mod", model)
    return inner.state_dict()
