"""Files that readers see whole or not at all.

- :func:`replacing`: write to a temporary path beside the target, rename it over the target
  when the block succeeds, remove it when it fails. Every other helper here uses it.
- :func:`write_bytes_atomic` / :func:`write_text_atomic`: small files in one call.
- :func:`build_once`: a cached artefact (decoded images, backbone features) built by one
  process while the others wait, with its metadata written last as the "complete" marker.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@contextmanager
def replacing(path: str | Path, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path that replaces ``path`` when the block ends without an error.

    A failed block (an exception, a full disk, Ctrl-C) removes the temporary file and leaves
    ``path`` as it was. ``fsync`` flushes the file to disk before the rename (checkpoints).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # pid and thread id: concurrent writers of the same file never share a temporary name
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes | memoryview) -> Path:
    """Write ``data`` so that readers see either the old file or the new one, never a torn one.

    A failed write (e.g. a full disk) removes the temporary file and leaves ``path`` untouched.
    """
    with replacing(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """:func:`write_bytes_atomic` for UTF-8 text (no newline translation)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def build_once(meta_path: str | Path, load: Callable[[dict[str, Any]], T | None],
               build: Callable[[], dict[str, Any]]) -> tuple[T, bool]:
    """The artefact described by ``meta_path``, built first if it is missing or incomplete.

    Args:
        meta_path: The artefact's metadata (JSON). It is written last, after ``build`` has put
            the data in place, so its presence means "complete": a build killed half-way is
            never read, and the next caller builds again.
        load: ``load(meta)`` returns the artefact when the metadata and the data on disk
            agree, else None (a stale or torn artefact counts as missing).
        build: Writes the data (with :func:`replacing`) and returns the metadata.

    Returns:
        ``(artefact, built)``: ``built`` is True when this call built it.

    Concurrent callers (sweep trials, loader processes) serialize on a file lock beside the
    metadata; whoever waited checks again and reuses what the first one built.
    """
    from filelock import FileLock

    meta_path = Path(meta_path)
    meta_path.parent.mkdir(parents=True, exist_ok=True)
    found = _load(meta_path, load)
    if found is not None:
        return found, False
    with FileLock(str(meta_path.with_suffix(".lock"))):
        found = _load(meta_path, load)  # built while we waited
        if found is not None:
            return found, False
        meta = build()
        write_text_atomic(meta_path, json.dumps(meta, indent=1))
    built = load(meta)
    if built is None:
        raise RuntimeError(f"{meta_path}: the artefact just built does not match its metadata")
    return built, True


def _load(meta_path: Path, load: Callable[[dict[str, Any]], T | None]) -> T | None:
    meta = _read_json(meta_path) if meta_path.is_file() else None
    return load(meta) if meta is not None else None
