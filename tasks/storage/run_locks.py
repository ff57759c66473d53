"""One writer per run: a file lock in the work directory, or a PostgreSQL advisory lock when the ledger is PostgreSQL.

A run's batch, finalize and publish each hold the run's lock while they write. With a SQLite ledger every writer
shares one machine and one work directory, so an `fcntl` lock on a file there is enough. With a PostgreSQL ledger the
writers may sit on different machines with different work directories; the database they all write is the one place
they share, so the lock is a session-level advisory lock on the ledger's server. It lives as long as the connection
that took it: a driver killed with SIGKILL loses its connection and the server frees the lock at once (on a lost
network, once the session's TCP keepalives give up, about a minute).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import socket
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from tasks.core.errors import LedgerError, RunLockedError
from tasks.storage.database import engine_options, first_line, parse_database_url, shown
from tasks.storage.workdir import ensure_writable

# The server gives up on a silent client after idle + interval * count seconds and frees its locks.
SERVER_KEEPALIVES = "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3"
APPLICATION_NAME_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1


class RunLocks(Protocol):
    """The one-writer-per-run rule of one ledger."""

    def hold(self, run_id: str) -> AbstractContextManager[None]:
        """Hold the run's lock for the duration of the block; RunLockedError at once if another process holds it."""
        ...

    def holder(self, run_id: str) -> str | None:
        """Who holds the run's lock now ('pid N on HOST'), or None when nobody does."""
        ...


def run_locks(ledger_url: str, work_dir: Path) -> RunLocks:
    """The lock for runs of this ledger: an advisory lock on a PostgreSQL ledger, a file in `work_dir` otherwise."""
    if parse_database_url(ledger_url).get_backend_name() == "postgresql":
        return PostgresRunLocks(ledger_url)
    return FileRunLocks(work_dir)


def refuse_if_locked(locks: RunLocks, run_id: str) -> None:
    """RunLockedError now when another process holds the run's lock; creates nothing."""
    holder = locks.holder(run_id)
    if holder is not None:
        raise _locked(run_id, holder)


def _locked(run_id: str, holder: str) -> RunLockedError:
    return RunLockedError(f"run {run_id} is already running ({holder}); wait for it to finish or stop it first.")


def _this_process() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


class FileRunLocks:
    """An exclusive `fcntl` lock on {work_dir}/locks/{run_id}.lock, which names its holder."""

    def __init__(self, work_dir: Path) -> None:
        self._work_dir = work_dir

    @contextmanager
    def hold(self, run_id: str) -> Iterator[None]:
        """Hold the run's lock for the duration of the block; RunLockedError at once if another process holds it."""
        path = ensure_writable(self._work_dir / "locks") / f"{run_id}.lock"
        handle = path.open("a+")
        try:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    handle.seek(0)
                    raise _locked(run_id, handle.read().strip() or "another process") from None
                raise
            handle.seek(0)
            handle.truncate()
            handle.write(_this_process())
            handle.flush()
            yield
        finally:
            handle.close()

    def holder(self, run_id: str) -> str | None:
        """Who holds the run's lock right now, or None when nobody does; takes and drops it to find out."""
        path = self._work_dir / "locks" / f"{run_id}.lock"
        if not path.exists():
            return None
        with path.open("r") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    return handle.read().strip() or "another process"
                raise
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return None


def advisory_key(run_id: str) -> int:
    """The run's signed 64-bit advisory lock key: a digest of the run id (apart from the migration lock's key)."""
    return int.from_bytes(hashlib.sha256(f"assetmint run lock {run_id}".encode()).digest()[:8], "big", signed=True)


# pg_locks shows a bigint advisory key as its high half (classid) and low half (objid), with objsubid 1.
_HOLDER_SQL = """
SELECT a.application_name, l.pid
FROM pg_locks AS l LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = CAST(:high AS oid) AND l.objid = CAST(:low AS oid)
"""


class PostgresRunLocks:
    """A session-level pg_try_advisory_lock per run on the ledger's own server, on a connection of its own."""

    def __init__(self, ledger_url: str) -> None:
        self._url = ledger_url

    def _engine(self, application_name: str) -> Any:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        parsed = parse_database_url(self._url)
        options = engine_options(parsed)
        given = parsed.query.get("options")
        user_options = given if isinstance(given, str) else " ".join(given or ())
        options["connect_args"] = {
            **options.get("connect_args", {}),
            "application_name": application_name.encode()[:APPLICATION_NAME_BYTES].decode(errors="ignore"),
            "options": f"{user_options} {SERVER_KEEPALIVES}".strip(),
        }
        return create_engine(parsed, poolclass=NullPool, isolation_level="AUTOCOMMIT", **options)

    def _failed(self, exc: BaseException, doing: str) -> LedgerError:
        return LedgerError(f"cannot {doing} on the ledger database at {shown(self._url)}: {first_line(exc)}.")

    @contextmanager
    def hold(self, run_id: str) -> Iterator[None]:
        """Hold the run's lock for the duration of the block; RunLockedError at once if another process holds it."""
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        key = advisory_key(run_id)
        engine = self._engine(f"assetmint {_this_process()}")
        try:
            connection = engine.connect()
        except SQLAlchemyError as exc:
            engine.dispose()
            raise self._failed(exc, f"take the lock of run {run_id}") from None
        try:
            try:
                taken = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar_one()
            except SQLAlchemyError as exc:
                raise self._failed(exc, f"take the lock of run {run_id}") from None
            if not taken:
                raise _locked(run_id, self._holder_on(connection, key) or "another process")
            try:
                yield
            finally:
                try:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                except SQLAlchemyError:
                    pass  # the connection is gone, and the server freed the lock with it
        finally:
            connection.close()
            engine.dispose()

    def holder(self, run_id: str) -> str | None:
        """Who holds the run's lock now ('pid N on HOST', from the holder's application_name), or None."""
        from sqlalchemy.exc import SQLAlchemyError

        engine = self._engine("assetmint lock check")
        try:
            with engine.connect() as connection:
                return self._holder_on(connection, advisory_key(run_id))
        except SQLAlchemyError as exc:
            raise self._failed(exc, f"read the lock of run {run_id}") from None
        finally:
            engine.dispose()

    @staticmethod
    def _holder_on(connection: Any, key: int) -> str | None:
        from sqlalchemy import text

        halves = {"high": (key >> 32) & 0xFFFFFFFF, "low": key & 0xFFFFFFFF}
        row = connection.execute(text(_HOLDER_SQL), halves).first()
        if row is None:
            return None
        name, backend_pid = row
        if name and str(name).startswith("assetmint "):
            return str(name).removeprefix("assetmint ")
        return f"another session, PostgreSQL backend pid {backend_pid}"
