"""Read back what an offline W&B run wrote, without a server.

wandb 0.31 keeps an offline run's history, summary and config only in
``wandb/offline-run-<time>-<id>/run-<id>.wandb``: a LevelDB-log-style file of
``wandb.proto.wandb_internal_pb2.Record`` messages. The installed wandb has no reader for it
any more (``sdk/internal/datastore.py`` is gone), so the block format is parsed here:

* a 7-byte file header: ``":W&B"``, magic ``0xBEE1`` (little-endian) and a version byte;
* 32 KiB blocks (the header counts towards the first one); a block tail shorter than a
  record header is zero padding;
* records of ``crc32 (4 bytes, LE) | length (2, LE) | type (1) | data``, where the CRC is the
  plain IEEE CRC-32 of the type byte followed by the data, and a message longer than a block
  is split into FIRST, MIDDLE..., LAST fragments (FULL when it fits).

Tables and images land as files under ``files/media/``. A resumed offline run writes a second
folder with the same run id; :func:`read_offline_run` merges all of them in start-time order.
"""

from __future__ import annotations

import json
import math
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wbclf.errors import UserError

__all__ = [
    "OfflineRun",
    "OfflineRunError",
    "iter_records",
    "read_offline_run",
    "segment_complete",
    "wait_for_segment",
]

_HEADER_IDENT = b":W&B"
_HEADER_MAGIC = 0xBEE1
_HEADER = struct.Struct("<4sHB")
_RECORD = struct.Struct("<IHB")
_BLOCK_SIZE = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


class OfflineRunError(UserError):
    """A folder or file is not a readable offline W&B run."""


@dataclass
class OfflineRun:
    """What one offline W&B run (all its segments) logged.

    Attributes:
        run_id: The W&B run id.
        history: One dict per logged step, in order; nested keys become nested dicts.
        summary: The final run summary.
        config: The run config (wandb's own ``_wandb`` entry included).
        files: Paths of the files under each segment's ``files/`` folder.
        exit_code: Exit code of the last segment, None if it never finished.
        segments: The ``offline-run-*`` folders read, oldest first.
        artifacts: Logged artifacts: ``{"name", "type", "entries": {path: local_path}}``;
            tables with their images live in these (staged outside the run folder).
        project: The project name given to ``wandb.init``.
        group: The run group.
        tags: The run tags.
        display_name: The run name shown in the UI.
        metrics: ``define_metric`` definitions as dicts (protobuf JSON form).
    """

    run_id: str
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    exit_code: int | None = None
    segments: list[Path] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    project: str = ""
    group: str = ""
    tags: list[str] = field(default_factory=list)
    display_name: str = ""
    metrics: list[dict[str, Any]] = field(default_factory=list)

    def rows_with(self, key: str) -> list[dict[str, Any]]:
        """The history rows that logged ``key`` (e.g. ``val/acc``: one row per epoch)."""
        return [row for row in self.history if key in row]


# --------------------------------------------------------------------------- the log file


def iter_records(path: str | Path) -> Iterator[Any]:
    """Yield the ``Record`` messages of one ``.wandb`` file, in order.

    A file cut short (the process was killed mid-write, or wandb-core is still writing it)
    ends the iteration quietly at the last complete record; a corrupt record (bad CRC, unknown
    type) raises ``OfflineRunError``.
    """
    from wandb.proto import wandb_internal_pb2

    for data in _iter_payloads(Path(path)):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        yield record


def _iter_payloads(path: Path) -> Iterator[bytes]:
    raw = path.read_bytes()
    if len(raw) < _HEADER.size:
        if _HEADER_IDENT.startswith(raw[:4]):
            return  # wandb-core has not written (all of) the header yet: no records
        raise OfflineRunError(f"{path} is not a W&B run file (bad header)")
    ident, magic, _version = _HEADER.unpack_from(raw)
    if ident != _HEADER_IDENT or magic != _HEADER_MAGIC:
        raise OfflineRunError(f"{path} is not a W&B run file (bad header)")
    pos = _HEADER.size
    pending: list[bytes] | None = None
    while True:
        left_in_block = _BLOCK_SIZE - pos % _BLOCK_SIZE
        if left_in_block < _RECORD.size:
            pos += left_in_block  # zero padding at the end of a block
            continue
        if pos + _RECORD.size > len(raw):
            return
        crc, length, kind = _RECORD.unpack_from(raw, pos)
        if kind == 0 and length == 0:
            # Zeroed space (preallocated or padded): nothing more in this block.
            pos += left_in_block
            continue
        start = pos + _RECORD.size
        end = start + length
        if end > len(raw):
            return  # truncated last record
        data = raw[start:end]
        if zlib.crc32(data, zlib.crc32(bytes([kind]))) != crc:
            raise OfflineRunError(f"{path}: bad checksum in the record at byte {pos}")
        pos = end
        if kind == _FULL:
            pending = None
            yield data
        elif kind == _FIRST:
            pending = [data]
        elif kind == _MIDDLE and pending is not None:
            pending.append(data)
        elif kind == _LAST and pending is not None:
            pending.append(data)
            yield b"".join(pending)
            pending = None
        elif kind in (_MIDDLE, _LAST):
            raise OfflineRunError(f"{path}: fragment without a start at byte {pos}")
        else:
            raise OfflineRunError(f"{path}: unknown record type {kind} at byte {pos}")


def segment_complete(folder: str | Path) -> bool:
    """Whether an ``offline-run-*`` folder's log holds the run's exit record yet."""
    files = sorted(Path(folder).glob("run-*.wandb"))
    if not files:
        return False
    try:
        return any(r.WhichOneof("record_type") == "exit" for r in iter_records(files[0]))
    except OfflineRunError:
        return False  # e.g. not even the header is on disk yet


def wait_until_quiet(folder: str | Path, *, quiet_s: float = 2.5,
                     timeout_s: float = 15.0) -> None:
    """Wait until an unfinished segment's log stops growing (its writer may outlive a kill).

    After ``kill -9`` of a training process, wandb-core can still flush rows it had been given
    for a second or so; reading the segment before that would miss them and a resumed run
    would then reuse their steps.
    """
    files = sorted(Path(folder).glob("run-*.wandb"))
    if not files or segment_complete(folder):
        return
    deadline = time.monotonic() + timeout_s
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        current = files[0].stat().st_size
        if current != size:
            size, since = current, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.2)


def wait_for_segment(folder: str | Path, timeout_s: float = 30.0) -> bool:
    """Wait until wandb has written an offline run's log to the end.

    ``Run.finish()`` only *tells* wandb-core that the run is over; the core writes the
    buffered ``.wandb`` file afterwards, so a file read right after ``finish()`` may hold
    only its header.

    Returns:
        True when complete, False when ``timeout_s`` passed first.
    """
    deadline = time.monotonic() + timeout_s
    last_size = -1
    while True:
        files = sorted(Path(folder).glob("run-*.wandb"))
        size = files[0].stat().st_size if files else -1
        if size != last_size and segment_complete(folder):  # parse only what changed
            return True
        last_size = size
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


# --------------------------------------------------------------------------- decoding


def _item_path(item: Any) -> list[str]:
    """The key of a history/summary/config item as a path (``nested_key`` wins over ``key``)."""
    if item.nested_key:
        return list(item.nested_key)
    return [item.key]


def _item_value(item: Any) -> Any:
    """Decode an item's value: ``value_json`` normally, typed fields in some history items."""
    if item.value_json:
        return json.loads(item.value_json)
    # HistoryItem has typed alternatives (none/boolean/integer/number/text/json) that newer
    # writers may use instead of value_json.
    for name in ("json", "text", "number", "integer", "boolean", "none"):
        if _has_field(item, name):
            value = getattr(item, name)
            if name == "json":
                return json.loads(value)
            return None if name == "none" else value
    return None


def _has_field(message: Any, name: str) -> bool:
    if name not in message.DESCRIPTOR.fields_by_name:
        return False
    try:
        return message.HasField(name)
    except ValueError:  # a plain proto3 scalar: present when not the default
        return bool(getattr(message, name))


def _set_path(target: dict[str, Any], path: list[str], value: Any) -> None:
    node = target
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = value


def _remove_path(target: dict[str, Any], path: list[str]) -> None:
    node: Any = target
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(path[-1], None)


def _apply_updates(target: dict[str, Any], record: Any) -> None:
    """Apply a SummaryRecord/ConfigRecord (``update`` and ``remove`` items) to ``target``."""
    for item in record.update:
        _set_path(target, _item_path(item), _item_value(item))
    for item in record.remove:
        _remove_path(target, _item_path(item))


@dataclass
class _Segment:
    folder: Path
    run_id: str = ""
    # No run record yet (wandb-core has not flushed it): the segment being written, the newest.
    start_time: float = math.inf
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    project: str = ""
    group: str = ""
    tags: list[str] = field(default_factory=list)
    display_name: str = ""
    metrics: list[dict[str, Any]] = field(default_factory=list)


def _read_segment(folder: Path) -> _Segment:
    from google.protobuf.json_format import MessageToDict

    files = sorted(folder.glob("run-*.wandb"))
    if not files:
        raise OfflineRunError(f"{folder} holds no run-*.wandb file")
    seg = _Segment(folder=folder, run_id=files[0].stem[len("run-"):])
    for record in iter_records(files[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            seg.run_id = run.run_id or seg.run_id
            seg.start_time = run.start_time.seconds + run.start_time.nanos * 1e-9
            seg.project, seg.group = run.project, run.run_group
            seg.tags, seg.display_name = list(run.tags), run.display_name
            _apply_updates(seg.config, run.config)
            _apply_updates(seg.summary, run.summary)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _set_path(row, _item_path(item), _item_value(item))
            seg.history.append(row)
        elif kind == "summary":
            _apply_updates(seg.summary, record.summary)
        elif kind == "config":
            _apply_updates(seg.config, record.config)
        elif kind == "exit":
            seg.exit_code = int(record.exit.exit_code)
        elif kind == "metric":
            seg.metrics.append(MessageToDict(record.metric))
        elif kind == "artifact":
            art = record.artifact
            entries = {e.path: e.local_path for e in art.manifest.contents}
            seg.artifacts.append({"name": art.name, "type": art.type, "entries": entries})
    return seg


def _wandb_dir(path: Path) -> Path:
    """The folder holding ``offline-run-*`` folders, given a run dir or a wandb dir."""
    for candidate in (path, path / "wandb"):
        if any(candidate.glob("offline-run-*/run-*.wandb")):
            return candidate
    raise OfflineRunError(f"no offline W&B run under {path}")


def _segment_folders(path: Path, run_id: str | None) -> list[Path]:
    if path.name.startswith("offline-run-") and path.is_dir():
        # One segment given: still merge its siblings of the same run (a resumed run).
        return _segment_folders(path.parent, run_id or _folder_run_id(path))
    # A folder without its .wandb file is a run that never got going: nothing to read.
    folders = sorted(p for p in _wandb_dir(path).glob("offline-run-*")
                     if p.is_dir() and any(p.glob("run-*.wandb")))
    ids = {_folder_run_id(p) for p in folders}
    if run_id is None:
        if len(ids) > 1:
            raise OfflineRunError(
                f"{path} holds several offline runs ({', '.join(sorted(ids))}); pass run_id"
            )
        run_id = ids.pop()
    chosen = [p for p in folders if _folder_run_id(p) == run_id]
    if not chosen:
        raise OfflineRunError(f"no offline W&B run with id {run_id!r} under {path}")
    return chosen


def _folder_run_id(folder: Path) -> str:
    # Not parsed from the folder name: wandb appends -1, -2 to it on a same-second clash.
    files = sorted(folder.glob("run-*.wandb"))
    if not files:
        raise OfflineRunError(f"{folder} holds no run-*.wandb file")
    return files[0].stem[len("run-"):]


def read_offline_run(path: str | Path, run_id: str | None = None) -> OfflineRun:
    """Read every segment of an offline W&B run and merge them.

    Args:
        path: A run directory (holding ``wandb/``), a wandb directory (holding
            ``offline-run-*``) or one ``offline-run-*`` folder.
        run_id: Which run, when the folder holds several.

    Returns:
        The merged run: history rows of all segments in start-time order, summary and config
        updated segment after segment (later values win), files of every segment.
    """
    folders = _segment_folders(Path(path), run_id)
    segments = [_read_segment(folder) for folder in folders]
    # Start time first; the folder name (wandb appends -1, -2 on a same-second clash) breaks
    # ties, compared by length first so that "-10" sorts after "-9".
    segments.sort(key=lambda s: (s.start_time, len(s.folder.name), s.folder.name))
    out = OfflineRun(run_id=segments[0].run_id)
    for seg in segments:
        out.segments.append(seg.folder)
        out.history.extend(seg.history)
        _deep_update(out.summary, seg.summary)
        _deep_update(out.config, seg.config)
        out.artifacts.extend(seg.artifacts)
        out.metrics.extend(seg.metrics)
        files_dir = seg.folder / "files"
        if files_dir.is_dir():
            out.files.extend(sorted(p for p in files_dir.rglob("*") if p.is_file()))
        out.exit_code = seg.exit_code
        out.project = seg.project or out.project
        out.group = seg.group or out.group
        out.tags = seg.tags or out.tags
        out.display_name = seg.display_name or out.display_name
    return out


def _deep_update(target: dict[str, Any], source: dict[str, Any]) -> None:
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value
