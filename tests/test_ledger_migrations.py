"""Ledger schema migrations: a 0.1.0 ledger upgrades in place, migrations match the models, newer ledgers refuse."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from tasks.core.errors import LedgerError
from tasks.storage import migrations
from tasks.storage.ledger import Base, Ledger, sqlite_url, value_sha256
from tasks.storage.migrations import BASELINE, HEAD, MIGRATIONS_DIR, current_revisions

REPO = Path(__file__).resolve().parent.parent
LEDGER_0_1_0 = REPO / "tests" / "data" / "ledger-0.1.0.sqlite"
OLD_TABLES = ("runs", "jobs", "candidates", "embeddings", "history", "assets", "audits")
RUN = "run-0-1-0"


def _rows(
    path: Path, tables: tuple[str, ...] = OLD_TABLES, columns_of: Path | None = None
) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of `tables`; only the columns the ledger at `columns_of` has, when given (later revisions add some)."""
    columns = {table: "*" for table in tables}
    if columns_of is not None:
        with sqlite3.connect(columns_of) as connection:
            for table in tables:
                columns[table] = ", ".join(row[1] for row in connection.execute(f"PRAGMA table_info({table})"))
    with sqlite3.connect(path) as connection:
        return {
            table: sorted(connection.execute(f"SELECT {columns[table]} FROM {table}").fetchall(), key=repr)
            for table in tables
        }


def _schema(path: Path) -> dict[tuple[str, str], str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT type, name, sql FROM sqlite_master WHERE tbl_name != 'alembic_version'")
        return {(kind, name): sql for kind, name, sql in rows}


@pytest.fixture
def old_ledger(tmp_path: Path) -> Path:
    """A copy of the ledger that version 0.1.0 wrote (tests/data/make_ledger_0_1_0.py)."""
    copy = tmp_path / "ledger.sqlite"
    shutil.copyfile(LEDGER_0_1_0, copy)
    return copy


def test_a_0_1_0_ledger_is_upgraded_in_place_and_keeps_every_row(old_ledger: Path) -> None:
    before = _rows(old_ledger)
    ledger = Ledger.open_file(old_ledger)
    assert current_revisions(ledger.engine) == [HEAD]
    assert "revisions" in inspect(ledger.engine).get_table_names()
    assert _rows(old_ledger, columns_of=LEDGER_0_1_0) == before

    # Every old row reads through the normal API.
    run = ledger.run(RUN)
    assert (run.status, run.attempts, run.campaign_name) == ("pending_review", 1, "Spring (0.1.0)")
    assert [job.job_key for job in ledger.jobs(RUN)] == ["job-cat", "job-dog"]
    assert ledger.jobs(RUN)[1].warnings == ["prompt truncated to 77 tokens"]
    states = {row.candidate_id[-1]: row.state for row in ledger.candidates(RUN)}
    assert states == {"1": "finalized", "2": "planned", "3": "failed"}
    assert ledger.embeddings(RUN, "tiny-clip") == {"c0000000000000000000000000000001": bytes(range(8))}
    assert [h.to_state for h in ledger.history(RUN, "c0000000000000000000000000000001")][-1] == "finalized"
    asset = ledger.assets(RUN)[0]
    assert (asset.payload_hex, asset.validation_state) == ("00000001", "Trusted")
    # Finalized without an upscale: delivered at the candidate's size; its pixels were never fingerprinted.
    assert (asset.final_size, asset.fingerprint) == ({"width": 256, "height": 256}, None)
    assert ledger.asset_by_key(asset.asset_key)[1].candidate_id == "c0000000000000000000000000000001"
    assert [audit.verdict for audit in ledger.audits(run_id=RUN)] == ["ok"]

    # What 0.1.0 held is carried over as each value's first revision (attempt unknown).
    policies = ledger.policy_history(RUN)
    assert [(p.old, p.new, p.attempt) for p in policies] == [(None, run.policy, None)]
    assert policies[0].sha256 == value_sha256(run.policy)
    cat = {h.name: (h.old, h.new) for h in ledger.job_history(RUN, "job-cat")}
    assert cat == {
        "keep_top_k": (None, 1),
        "output_format": (None, "png"),
        "screening": (None, {"blocked": False, "reason": "", "rule": None}),
    }
    assert {h.name for h in ledger.job_history(RUN, "job-dog")} == {"keep_top_k", "output_format"}
    ledger.engine.dispose()


def test_the_finalized_size_of_an_upscaled_asset_is_filled_in(old_ledger: Path) -> None:
    from PIL import Image

    from policies.watermark import WatermarkPolicy
    from tasks.stages.finalize import _prepare_pixels

    with sqlite3.connect(old_ledger) as connection:  # a 64x48 candidate that finalize upscaled, and one not finalized
        connection.execute("UPDATE candidates SET width = 64, height = 48")
        connection.execute("""UPDATE assets SET provenance = '{"upscaled_from": {"width": 64, "height": 48}}'""")
        connection.execute(
            "INSERT INTO assets (asset_key, run_id, candidate_id, provenance, created_at) "
            "VALUES (2, ?, 'c0000000000000000000000000000002', '{}', '2026-11-01 00:00:00')",
            (RUN,),
        )
    ledger = Ledger.open_file(old_ledger)
    upscaled, planned = ledger.assets(RUN)
    # The migration's frozen rule agrees with what finalize does to such a candidate.
    pixels, _ = _prepare_pixels(Image.new("RGB", (64, 48)), WatermarkPolicy(upscale_small=True))
    assert upscaled.final_size == {"width": pixels.width, "height": pixels.height} == {"width": 341, "height": 256}
    assert planned.final_size is None and planned.fingerprint is None
    ledger.engine.dispose()


def test_opening_a_ledger_at_head_changes_nothing(old_ledger: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Ledger.open_file(old_ledger).engine.dispose()
    tables = (*OLD_TABLES, "revisions", "alembic_version")
    before = _rows(old_ledger, tables)

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a ledger at head was migrated again")

    monkeypatch.setattr("alembic.command.upgrade", refuse)
    monkeypatch.setattr("alembic.command.stamp", refuse)
    ledger = Ledger.open_file(old_ledger)
    assert _rows(old_ledger, tables) == before and ledger.run(RUN).attempts == 1
    ledger.engine.dispose()


def test_a_run_from_0_1_0_resumes_with_history(old_ledger: Path) -> None:
    ledger = Ledger.open_file(old_ledger)
    run = ledger.run(RUN)
    jobs = [
        {key: getattr(job, key) for key in ("job_key", "prompt_id", "variant", "prompt", "variables", "output_format")}
        | {"keep_top_k": job.keep_top_k + 2}
        for job in ledger.jobs(RUN)
    ]
    ledger.start_run(
        run_id=RUN,
        campaign_id=run.campaign_id,
        campaign_name=run.campaign_name,
        manifest_path=run.manifest_path,
        manifest_sha256=run.manifest_sha256,
        policy=run.policy,
        run_dir=run.run_dir,
        jobs=jobs,
        candidates=[],
    )
    assert len(ledger.policy_history(RUN)) == 1
    assert ledger.jobs(RUN)[0].keep_top_k == 3
    last = ledger.job_history(RUN, "job-cat")[-1]
    assert (last.name, last.old, last.new, last.attempt) == ("keep_top_k", 1, 3, 2)
    ledger.engine.dispose()


def test_a_new_ledger_is_built_by_the_migrations_and_matches_the_models(tmp_path: Path) -> None:
    ledger = Ledger.open_file(tmp_path / "new.sqlite")
    assert current_revisions(ledger.engine) == [HEAD] == [migrations.script_directory().get_current_head()]
    with ledger.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        # A model change without a revision that makes it shows up here.
        assert compare_metadata(context, Base.metadata) == []
    ledger.engine.dispose()


def test_the_baseline_revision_is_exactly_the_0_1_0_schema(tmp_path: Path) -> None:
    from alembic import command

    engine = create_engine(f"sqlite:///{tmp_path / 'baseline.sqlite'}")
    with engine.begin() as connection:
        command.upgrade(migrations.alembic_config(connection), BASELINE)
    engine.dispose()
    assert _schema(tmp_path / "baseline.sqlite") == _schema(LEDGER_0_1_0)


def test_a_ledger_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    Ledger.open_file(path).engine.dispose()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0099_future'")
    with pytest.raises(LedgerError, match=r"schema revision 0099_future.*upgrade AssetMint"):
        Ledger.open_file(path)


def test_a_database_with_part_of_the_ledger_tables_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY)")
    with pytest.raises(LedgerError, match="lacks assets, audits, candidates, embeddings, history, jobs"):
        Ledger.open_file(path)


def _open_at_once(url: str, processes: int) -> None:
    """Open the ledger at `url` from several processes at the same moment; fail with their errors if any fails."""
    start = time.time() + 3  # after every process has imported the ledger
    script = (
        "import sys, time; from tasks.storage.ledger import Ledger; "
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time())); Ledger.open(sys.argv[1])"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, url, str(start)],
            cwd=REPO,
            env={"PYTHONPATH": str(REPO), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    errors = [proc.communicate(timeout=120)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * processes, errors


def test_processes_opening_one_new_ledger_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    _open_at_once(sqlite_url(path), processes=3)
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]


def test_the_migrations_ship_in_the_package() -> None:
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {path.parent for path in MIGRATIONS_DIR.rglob("*.py")}
    names = {".".join(folder.relative_to(REPO).parts) for folder in folders}
    assert names <= set(setup["packages"])
    assert "script.py.mako" in setup["package-data"]["tasks.storage.migrations"]
    assert all((folder / "__init__.py").exists() for folder in folders)


# --- PostgreSQL: the `postgres` fixture of conftest.py ----------------------------------------------------------


def test_postgres_migrations_match_the_models(postgres: Callable[[], str]) -> None:
    ledger = Ledger.open(postgres())
    assert current_revisions(ledger.engine) == [HEAD]
    with ledger.engine.connect() as connection:
        assert (
            compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata) == []
        )
    ledger.engine.dispose()


def test_a_0_1_0_postgres_ledger_is_stamped_and_upgraded(postgres: Callable[[], str]) -> None:
    from alembic import command

    url = postgres()
    engine = create_engine(url)
    with engine.begin() as connection:  # the 0.1.0 schema (the baseline equals it), without a version table
        command.upgrade(migrations.alembic_config(connection), BASELINE)
        connection.execute(text("DROP TABLE alembic_version"))
        connection.execute(
            text(
                "INSERT INTO runs VALUES ('r', 'c', 'C', 'm.yaml', :sha, :policy, '/runs/r', 'completed', 2, now(), "
                "now(), '{}')"
            ),
            {"sha": "0" * 64, "policy": '{"review": "manual"}'},
        )
    engine.dispose()
    ledger = Ledger.open(url)
    assert current_revisions(ledger.engine) == [HEAD]
    assert ledger.run("r").attempts == 2
    assert [(p.new, p.attempt) for p in ledger.policy_history("r")] == [({"review": "manual"}, None)]
    ledger.engine.dispose()


def test_a_newer_postgres_ledger_is_refused(postgres: Callable[[], str]) -> None:
    url = postgres()
    ledger = Ledger.open(url)
    with ledger.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099_future'"))
    ledger.engine.dispose()
    with pytest.raises(LedgerError, match="schema revision 0099_future"):
        Ledger.open(url)


def test_processes_opening_one_new_postgres_ledger_at_once_migrate_it_once(postgres: Callable[[], str]) -> None:
    url = postgres()
    _open_at_once(url, processes=3)
    engine = create_engine(url)
    assert current_revisions(engine) == [HEAD]
    engine.dispose()
