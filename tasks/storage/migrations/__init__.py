"""Ledger schema migrations (Alembic), shipped in the package and driven from code: no alembic.ini is needed.

`upgrade_to_head(engine)` brings any ledger to the newest revision this release knows:
- an empty database is built by running every revision (never `create_all`);
- a ledger made by 0.1.0 (its tables, no alembic_version) is stamped as the baseline, then upgraded in place;
- a ledger already at head is only read;
- a ledger at a revision this release does not know (a newer release wrote it) is refused with a LedgerError.

Upgrades hold a lock of the database itself, so two processes opening the same new ledger do not both migrate: on a
SQLite file the write lock (`BEGIN IMMEDIATE`; SQLite's DDL is transactional, so tables and version stamp commit
together), on PostgreSQL `pg_advisory_xact_lock(MIGRATION_LOCK_KEY)`. The second process waits, then finds head.

A new revision: change the models in tasks/storage/ledger.py, run `python -m tasks.storage.migrations "what changed"`
(autogenerates versions/NNNN_*.py against a scratch ledger at head), tidy it, and set HEAD to its id.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from tasks.core.errors import LedgerError
from tasks.storage.database import sqlite_file

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

MIGRATIONS_DIR = Path(__file__).resolve().parent
BASELINE = "0001_baseline"
HEAD = "0003_final_size_fingerprint"
VERSION_TABLE = "alembic_version"
# Every table of a 0.1.0 ledger: a database holding them without a version table is stamped as the baseline.
BASELINE_TABLES = frozenset({"runs", "jobs", "candidates", "embeddings", "history", "assets", "audits"})
MIGRATION_LOCK_KEY = int.from_bytes(b"AssetMin", "big")  # a fixed pg_advisory_lock key for schema upgrades

# Alembic's `context` and `op` are module-level proxies: one migration at a time per process.
_ALEMBIC = threading.Lock()


def upgrade_to_head(engine: Engine) -> None:
    """Bring the ledger behind `engine` to HEAD (create, stamp or upgrade as needed); LedgerError when impossible."""
    with engine.connect() as connection:
        if _versions(connection) == [HEAD]:
            return
    where = engine.url.render_as_string(hide_password=True)
    from alembic.util import CommandError

    try:
        with _locked(engine) as connection, _ALEMBIC:
            _migrate(connection, where)
    except CommandError as exc:
        raise LedgerError(f"cannot migrate the ledger at {where}: {exc}.") from None


def current_revisions(engine: Engine) -> list[str]:
    """The schema revisions a ledger is stamped with (empty before any migration)."""
    with engine.connect() as connection:
        return _versions(connection)


def alembic_config(connection: Connection) -> Config:
    """An Alembic configuration for the package's migrations that runs on `connection`."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    return config


@cache
def script_directory() -> ScriptDirectory:
    """The package's revisions, read once per process."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS_DIR))


def _versions(connection: Connection) -> list[str]:
    if not inspect(connection).has_table(VERSION_TABLE):
        return []
    return sorted(connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())


def _migrate(connection: Connection, where: str) -> None:
    from alembic import command

    versions = _versions(connection)
    known = {script.revision for script in script_directory().walk_revisions()}
    unknown = [version for version in versions if version not in known]
    if unknown:
        raise LedgerError(
            f"the ledger at {where} has schema revision {', '.join(unknown)}, which this AssetMint does not know "
            f"(newest known: {HEAD}); a newer release of AssetMint wrote it: upgrade AssetMint to open it."
        )
    config = alembic_config(connection)
    if not versions:
        tables = set(inspect(connection).get_table_names())
        if tables & BASELINE_TABLES:
            missing = sorted(BASELINE_TABLES - tables)
            if missing:
                raise LedgerError(
                    f"the database at {where} has ledger tables but lacks {', '.join(missing)} and has no schema "
                    "revision: it was not made by AssetMint 0.1.0 or later, so it cannot be upgraded."
                )
            command.stamp(config, BASELINE)
    command.upgrade(config, "head")


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the database's schema-upgrade lock; commits on success."""
    url = engine.url
    if sqlite_file(url) is not None:
        locking = create_engine(url, poolclass=NullPool)
        event.listen(locking, "connect", _sqlite_autocommit)
        event.listen(locking, "begin", _sqlite_begin_immediate)
        try:
            with locking.begin() as connection:
                yield connection
        finally:
            locking.dispose()
        return
    with engine.begin() as connection:
        if url.get_backend_name() == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        yield connection


def _sqlite_autocommit(dbapi_connection: Any, _record: Any) -> None:
    # The driver must not open transactions on its own, so that BEGIN IMMEDIATE below is the one that counts.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def _sqlite_begin_immediate(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")
