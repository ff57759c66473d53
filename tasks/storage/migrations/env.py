"""Alembic environment of the ledger: runs on the connection that tasks.storage.migrations hands over."""

from __future__ import annotations

from alembic import context

from tasks.storage.ledger import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("ledger migrations run through tasks.storage.migrations, which supplies the connection.")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    compare_type=True,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters a table by copying it
)
with context.begin_transaction():  # a no-op inside the caller's transaction, which commits or rolls back all of it
    context.run_migrations()
