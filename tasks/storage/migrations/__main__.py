"""Write a new ledger revision from the difference between the models and the schema at head.

Usage: python -m tasks.storage.migrations "what changed"   (then read and tidy the file, and set HEAD to its id)
"""

from __future__ import annotations

import re
import sys

from sqlalchemy import create_engine


def main(argv: list[str]) -> int:
    """Autogenerate versions/NNNN_<slug>.py against a scratch in-memory ledger at head; returns the exit code."""
    from alembic import command

    from tasks.storage.migrations import alembic_config, script_directory, upgrade_to_head

    if len(argv) != 1 or not argv[0].strip():
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    engine = create_engine("sqlite://")
    upgrade_to_head(engine)
    number = len(list(script_directory().walk_revisions())) + 1
    revision = f"{number:04d}_{re.sub(r'[^a-z0-9]+', '_', argv[0].lower()).strip('_')[:40]}"
    with engine.begin() as connection:
        config = alembic_config(connection)
        config.set_main_option("file_template", "%%(rev)s")
        command.revision(config, argv[0], autogenerate=True, rev_id=revision)
    print(f"Now set HEAD in tasks/storage/migrations/__init__.py to {revision!r}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
