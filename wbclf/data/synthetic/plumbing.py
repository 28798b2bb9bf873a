"""File-system plumbing of the toy datasets: jobs written as JPEG files into a temporary
folder that is renamed into place when complete, markers, and leftovers of killed runs."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MARKER = ".wbclf-synth.json"
JPEG_QUALITY = 90

Render = Callable[..., np.ndarray]  # (rng, size, *params) -> RGB image
Variants = Mapping[str, Callable[[np.ndarray], np.ndarray]]  # file suffix -> BGR transform


@dataclass(frozen=True)
class Job:
    """One source image to draw and the files it becomes (original first, then variants)."""

    kind: str  # "lesion" or "leaf"
    params: tuple
    key: tuple[int, ...]  # seeds the image's own Generator
    files: tuple[tuple[str, str], ...]  # (path relative to the root, augmentation suffix)


def read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None


def check_existing(out: Path, name: str, n: int | None, size: int | None, seed: int,
                   leak: float | None = None) -> bool:
    """True if `out` already holds this dataset; raise if it holds anything else."""
    if not out.exists():
        return False
    marker = read_marker(out)
    if marker is None:
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # an empty folder is fair game (rename cannot replace it on Windows)
            return False
        raise FileExistsError(f"{out} exists and is not a complete toy dataset "
                              f"(no {MARKER}); remove it or choose another folder")
    # n and size left as None accept whatever was generated (e.g. a quick small copy).
    wanted = {"name": name, "seed": seed, "n": n, "size": size, "leak": leak}
    clash = {k: v for k, v in wanted.items() if v is not None and marker.get(k) != v}
    if clash:
        have = ", ".join(f"{k}={marker.get(k)}" for k in wanted)
        raise FileExistsError(f"{out} holds a toy dataset with {have}, not the requested "
                              f"{clash}; remove it or choose another folder")
    return True


def remove_stale_partials(out: Path) -> None:
    """Delete temp folders left by killed runs on this host (their process is gone)."""
    host = socket.gethostname()
    for path in out.parent.glob(f".{glob.escape(out.name)}.partial.*"):
        parts = path.name[len(f".{out.name}.partial."):].rsplit(".", 2)
        if len(parts) == 3 and parts[0] == host and parts[1].isdigit():
            if not pid_alive(int(parts[1])):
                shutil.rmtree(path, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there
        return True
    try:
        os.kill(pid, 0)
    except PermissionError:  # exists, owned by another user
        return True
    except (ProcessLookupError, OverflowError):
        return False
    return True


def publish(tmp: Path, out: Path) -> None:
    """Rename the finished temp folder to `out`; a concurrent run may have won the race."""
    try:
        os.rename(tmp, out)
    except OSError:
        if read_marker(out) is None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def mirror_tree(src: Path, dst: Path) -> None:
    """Replicate `src` under `dst` with hard links (copies where links are not possible)."""
    if dst.exists():  # case-insensitive file system: the duplicate is the same folder
        return
    for dirpath, _, filenames in os.walk(src):
        target = dst / Path(dirpath).relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for fname in filenames:
            try:
                os.link(Path(dirpath) / fname, target / fname)
            except OSError:
                shutil.copy2(Path(dirpath) / fname, target / fname)


def run_jobs(root: Path, size: int, jobs: list[Job], render: Render, variants: Variants, *,
             progress: bool, desc: str) -> None:
    """Draw every job with ``render`` and write its files (``variants`` per suffix), in one
    process.

    Defaults take a few seconds, so no worker pool: forked workers proved fragile with
    OpenCV (a child calling cv2.setNumThreads after the parent had used OpenCV's threads
    hung on a futex), and spawned ones would re-import the caller's unguarded __main__.
    """
    for job in jobs:
        for rel, _ in job.files:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
    if progress:
        from tqdm import tqdm

        jobs = tqdm(jobs, desc=desc, unit="img")
    for job in jobs:
        write_job(root, size, job, render, variants)


def write_job(root: Path, size: int, job: Job, render: Render, variants: Variants) -> None:
    rng = np.random.default_rng(job.key)
    bgr = np.ascontiguousarray(render(rng, size, *job.params)[..., ::-1])
    for rel, suffix in job.files:
        ok, buf = cv2.imencode(".jpg", variants[suffix](bgr),
                               [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {rel}")
        (root / rel).write_bytes(buf.tobytes())
