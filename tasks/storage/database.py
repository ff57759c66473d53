"""What a database URL says about where its data lives, and a probe that proves the database is usable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from tasks.core.errors import LedgerError
from tasks.core.files import why_not_creatable

# Seconds a network database may take to accept a connection: a refused or unreachable server fails in this time
# instead of the driver's default (unbounded for libpq).
CONNECT_TIMEOUT_S = 10


def sqlite_file(url: URL) -> Path | None:
    """The file a SQLite URL names; None for other databases and in-memory SQLite."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    if url.query.get("uri") in ("true", "1") and url.database.startswith("file:"):  # file:path?mode=ro&uri=true
        return Path(url.database.removeprefix("file:"))
    return Path(url.database)


def parse_database_url(url: str) -> URL:
    """The parsed URL; LedgerError when `url` is not a database URL."""
    try:
        return make_url(url)
    except ArgumentError:
        raise LedgerError(
            f"ledger URL {url!r} is not a valid database URL (e.g. sqlite:///path/ledger.sqlite)."
        ) from None


def shown(url: str) -> str:
    """The URL as it may be printed: any password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def engine_options(url: URL) -> dict[str, Any]:
    """create_engine keyword arguments that bound how long a connection attempt may take."""
    if url.get_backend_name() in ("postgresql", "mysql", "mariadb"):
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    return {}


def first_line(exc: BaseException) -> str:
    """The driver's own first line of a database error, without SQLAlchemy's SQL echo and help links."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def probe_database(url: str) -> None:
    """Prove, creating nothing, that the ledger at `url` can be reached and written; LedgerError saying why not."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.pool import NullPool

    parsed = parse_database_url(url)
    database_file = sqlite_file(parsed)
    if database_file is not None and not database_file.exists():
        why = why_not_creatable(database_file.parent)
        if why is not None:
            raise LedgerError(
                f"the ledger {database_file} cannot be created: {why}; set ledger.url or work_dir in the policy to a "
                "folder you can write."
            )
        return
    engine = create_engine(parsed, poolclass=NullPool, **engine_options(parsed))
    try:
        with engine.connect() as connection:
            if database_file is not None:
                # A write rolled back: a read-only file, folder or connection fails here, not after minutes of work.
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    connection.exec_driver_sql("CREATE TABLE assetmint_write_probe (x INTEGER)")
                finally:
                    connection.exec_driver_sql("ROLLBACK")
            else:
                connection.exec_driver_sql("SELECT 1")
    except (SQLAlchemyError, OSError) as exc:
        reason = first_line(exc)
        where = f"the ledger file {database_file}" if database_file else f"the ledger database at {shown(url)}"
        remedy = (
            "check that the file and its folder are writable"
            if database_file
            else f"check that the server runs and accepts connections from here (waited up to {CONNECT_TIMEOUT_S} s), "
            "and the host, port, user and password in ledger.url"
        )
        raise LedgerError(f"cannot use {where}: {reason}. Nothing was run; {remedy}.") from None
    finally:
        engine.dispose()
