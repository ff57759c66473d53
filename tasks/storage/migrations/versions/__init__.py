"""Ledger schema revisions, oldest first by number; each file is one Alembic revision."""
