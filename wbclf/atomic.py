"""Atomic file writes: a temporary file beside the target, fsync, then a rename over it."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def write_bytes_atomic(path: str | Path, data: bytes | memoryview) -> Path:
    """Write ``data`` so that readers see either the old file or the new one, never a torn one.

    A failed write (e.g. a full disk) removes the temporary file and leaves ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # pid and thread id: concurrent writers of the same file never share a temporary name
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """:func:`write_bytes_atomic` for UTF-8 text (no newline translation)."""
    return write_bytes_atomic(path, text.encode("utf-8"))
