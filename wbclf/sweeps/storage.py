"""Optuna RDB storage for sweeps: opening it, and a lock shared by every sweep process.

The study lives in an SQLite file in the sweep's output folder by default, or in any database
SQLAlchemy reaches (``--storage postgresql://...``) so several machines share one study.
Claiming the next trial (read the study, pick a point, create the trial) must be atomic across
processes and machines; Optuna's own WAITING -> RUNNING pop is not on SQLite, and picking a
grid point is a read-then-write. :class:`StudyLock` serializes those few milliseconds: a file
lock next to an SQLite database, an advisory lock on PostgreSQL (``pg_advisory_lock``) or
MySQL (``GET_LOCK``); a server-side lock dies with its holder's connection, so a killed sweep
never leaves it held.
"""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path
from types import TracebackType
from typing import Any

from wbclf.errors import UserError

HEARTBEAT_S = 10  # a sweep process records a heartbeat for its running trials this often
GRACE_S = 120  # a RUNNING trial without a heartbeat for this long is stale (another machine)
LOCK_TIMEOUT_S = 600


class StorageError(UserError):
    """A storage URL that cannot hold a sweep; one line for the user."""


def backend(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).get_backend_name()
    except Exception as err:  # noqa: BLE001 -- sqlalchemy raises several types here
        raise StorageError(f"--storage {url!r} is not a database URL ({err}); e.g. "
                           "postgresql://user:pass@host/db or sqlite:///path/study.db") from None


def normalize_url(url: str) -> str:
    """``postgresql://`` with the driver that is installed (SQLAlchemy 2.1 assumes psycopg 3;
    psycopg2 is what many machines have)."""
    import importlib.util

    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
            if importlib.util.find_spec(module) is not None:
                return parsed.set(drivername=f"postgresql+{driver}").render_as_string(
                    hide_password=False)
    return url


def sqlite_path(url: str) -> Path | None:
    """The database file of an SQLite URL (None for other backends)."""
    from sqlalchemy.engine import make_url

    if backend(url) != "sqlite":
        return None
    database = make_url(url).database
    if not database or database == ":memory:":
        raise StorageError(f"--storage {url!r}: an in-memory SQLite database cannot be shared "
                           "with the trial processes; give a file, sqlite:///path/study.db")
    return Path(database)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def redact(url: str) -> str:
    """``url`` without its password (for sweep.json and messages)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return url


def _engine_kwargs(url: str) -> dict[str, Any]:
    if backend(url) == "sqlite":
        # trials report intermediate values while the sweep writes: wait instead of failing
        return {"connect_args": {"timeout": 120}}
    return {"pool_pre_ping": True}


def open_storage(url: str, *, heartbeat: bool = False) -> Any:
    """An ``optuna.storages.RDBStorage`` for ``url`` (created if new)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if heartbeat:
        kwargs = {"heartbeat_interval": HEARTBEAT_S, "grace_period": GRACE_S}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # two sweeps starting at once on a new database must not both create its tables
        with StudyLock(url, "wbclf-storage-init"):
            try:
                storage = optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url),
                                                     **kwargs)
            except ImportError as err:
                raise StorageError(f"--storage {redact(url)}: its database driver is not "
                                   f"installed ({err})") from None
            if path is not None:
                _tune_sqlite(storage.engine)
    return storage


def _tune_sqlite(engine: Any) -> None:
    """WAL (trials read while the sweep writes) without an fsync on every commit."""
    import sqlalchemy

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        # NORMAL is safe in WAL mode against crashes of any process; only a power cut can
        # lose the last commits (a trial would then run again)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")  # persists in the file
    sqlalchemy.event.listen(engine, "connect", on_connect)
    engine.dispose()  # pooled connections reconnect with the setting


class StudyLock:
    """A cross-process, cross-machine mutex named ``name`` in the database at ``url``."""

    def __init__(self, url: str, name: str, timeout: float = LOCK_TIMEOUT_S) -> None:
        self.url = url
        self.name = name
        self.timeout = timeout
        self._backend = backend(url)
        self._file_lock: Any = None
        self._engine: Any = None
        self._conn: Any = None
        path = sqlite_path(url)
        if path is not None:
            from filelock import FileLock

            path.parent.mkdir(parents=True, exist_ok=True)
            self._file_lock = FileLock(str(path) + ".lock", timeout=timeout)
        elif self._backend not in ("postgresql", "mysql", "mariadb"):
            raise StorageError(f"--storage {redact(url)}: {self._backend} is not supported; "
                               "use sqlite, postgresql or mysql")

    def _key(self) -> int:
        return zlib.crc32(self.name.encode())  # fits PostgreSQL's bigint key

    def __enter__(self) -> StudyLock:
        if self._file_lock is not None:
            self._file_lock.acquire()
            return self
        import sqlalchemy

        if self._engine is None:
            try:
                self._engine = sqlalchemy.create_engine(self.url, poolclass=sqlalchemy.NullPool)
            except ImportError as err:
                raise StorageError(f"--storage {redact(self.url)}: its database driver is not "
                                   f"installed ({err})") from None
        self._conn = self._engine.connect()
        if self._backend == "postgresql":
            self._conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self._key()})
        else:
            got = self._conn.execute(sqlalchemy.text("SELECT GET_LOCK(:n, :t)"),
                                     {"n": self.name[:64], "t": int(self.timeout)}).scalar()
            if got != 1:
                self._conn.close()
                raise TimeoutError(f"could not lock study {self.name} in {self.timeout}s")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._file_lock is not None:
            self._file_lock.release()
            return
        import sqlalchemy

        try:
            if self._backend == "postgresql":
                self._conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"),
                                   {"k": self._key()})
            else:
                self._conn.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:n)"),
                                   {"n": self.name[:64]})
        finally:
            self._conn.close()  # closing the session releases the lock in any case
            self._conn = None
