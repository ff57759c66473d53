"""What a database URL says about where its data lives."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL


def sqlite_file(url: URL) -> Path | None:
    """The file a SQLite URL names; None for other databases and in-memory SQLite."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)
