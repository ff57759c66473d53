"""One writer per run: the work directory's file lock, and the PostgreSQL advisory lock of a PostgreSQL ledger."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cli.main import main
from conftest import REPO, TINY_MANIFEST, TINY_MODELS_POLICY, write
from tasks.core.errors import RunLockedError
from tasks.core.manifest import load_plan
from tasks.storage.ledger import Ledger
from tasks.storage.run_locks import FileRunLocks, PostgresRunLocks, advisory_key, refuse_if_locked, run_locks

HOLDER = """
import sys, time
from pathlib import Path
from tasks.storage.run_locks import run_locks
with run_locks(sys.argv[1], Path(sys.argv[2])).hold(sys.argv[3]):
    print("held", flush=True)
    time.sleep(600)
"""


def _holding(url: str, work_dir: Path, run_id: str) -> subprocess.Popen[str]:
    """Another process holding the run's lock (a second driver, on whatever machine)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLDER), url, str(work_dir), run_id],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def _released(locks: PostgresRunLocks | FileRunLocks, run_id: str, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while locks.holder(run_id) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _policy_with_ledger(folder: Path, url: str, auto_publish: bool = False) -> Path:
    """The tiny-models policy with its ledger at `url`."""
    text = TINY_MODELS_POLICY.read_text().replace('url: "sqlite:///{work_dir}/ledger.sqlite"', f'url: "{url}"')
    if auto_publish:
        text = text.replace("auto_publish: false", "auto_publish: true")
    assert url in text and (not auto_publish or "auto_publish: true" in text)
    return write(folder / "policy.yaml", text)


def test_the_ledger_chooses_the_lock(tmp_path: Path) -> None:
    assert isinstance(run_locks("sqlite:///x.sqlite", tmp_path), FileRunLocks)
    assert isinstance(run_locks("postgresql+psycopg://u@db/x", tmp_path), PostgresRunLocks)
    # Keys differ per run and never take the schema migration's key.
    from tasks.storage.migrations import MIGRATION_LOCK_KEY

    keys = {advisory_key(f"run-{n}") for n in range(1000)}
    assert len(keys) == 1000 and MIGRATION_LOCK_KEY not in keys
    assert all(-(2**63) <= key < 2**63 for key in keys)


def test_a_file_lock_names_its_holder_and_frees_when_it_dies(tmp_path: Path) -> None:
    locks = FileRunLocks(tmp_path / "work")
    holder = _holding("sqlite:///unused.sqlite", tmp_path / "work", "r1")
    try:
        assert locks.holder("r1") == f"pid {holder.pid} on {socket.gethostname()}"
        with pytest.raises(RunLockedError, match=f"run r1 is already running \\(pid {holder.pid} on "):
            with locks.hold("r1"):
                pass
        with locks.hold("r2"):  # another run is not held up
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert _released(locks, "r1")
    with locks.hold("r1"):
        assert locks.holder("r1") == f"pid {os.getpid()} on {socket.gethostname()}"
    assert locks.holder("r1") is None


def test_a_postgres_lock_refuses_a_second_driver_and_frees_when_the_first_is_killed(
    postgres: Callable[[], str], tmp_path: Path
) -> None:
    url = postgres()
    # Each driver has its own work directory, as on two machines: only the database is shared.
    locks = run_locks(url, tmp_path / "machine-b")
    holder = _holding(url, tmp_path / "machine-a", "r1")
    try:
        assert locks.holder("r1") == f"pid {holder.pid} on {socket.gethostname()}"
        with pytest.raises(RunLockedError, match=f"run r1 is already running \\(pid {holder.pid} on "):
            with locks.hold("r1"):
                pass
        with pytest.raises(RunLockedError):
            refuse_if_locked(locks, "r1")
        with locks.hold("r2"):
            assert locks.holder("r2") == f"pid {os.getpid()} on {socket.gethostname()}"
        assert locks.holder("r2") is None  # released on leaving the block, with its connection still usable
    finally:
        holder.send_signal(signal.SIGKILL)  # no chance to unlock: the server frees it with the session
        holder.wait()
    assert _released(locks, "r1"), "the killed driver's advisory lock was never freed"
    with locks.hold("r1"):
        assert locks.holder("r1") == f"pid {os.getpid()} on {socket.gethostname()}"
    assert not list((tmp_path / "machine-b").glob("**/*")), "a PostgreSQL lock writes nothing in the work dir"


def test_the_lock_of_an_unreachable_postgres_ledger_is_a_clear_error(tmp_path: Path) -> None:
    from tasks.core.errors import LedgerError

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    locks = run_locks(f"postgresql+psycopg://assetmint:secret@127.0.0.1:{port}/ledger", tmp_path)
    with pytest.raises(LedgerError, match="cannot take the lock of run r1 on the ledger database at") as caught:
        with locks.hold("r1"):
            pass
    assert "secret" not in str(caught.value)


def test_a_second_driver_of_a_run_on_a_postgres_ledger_is_refused_before_any_work(
    postgres: Callable[[], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = postgres()
    policy = _policy_with_ledger(tmp_path, url)
    manifest = write(tmp_path / "m.yaml", TINY_MANIFEST)
    run_id = load_plan(manifest).run_id
    holder = _holding(url, tmp_path / "elsewhere", run_id)
    try:
        assert main(["run", str(manifest), "--policy", str(policy)]) == 2
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    err = capsys.readouterr().err
    assert f"run {run_id} is already running (pid {holder.pid} on" in err and "starting Prefect" not in err
    assert not (tmp_path / "work").exists()
    assert Ledger.open(url).runs() == []


def test_a_run_on_a_postgres_ledger_ends_as_on_sqlite(postgres: Callable[[], str], tmp_path: Path) -> None:
    manifest = write(tmp_path / "m.yaml", TINY_MANIFEST)
    run_id = load_plan(manifest).run_id
    outcomes = {}
    for name, url in (("sqlite", f"sqlite:///{tmp_path}/sqlite-work/ledger.sqlite"), ("postgres", postgres())):
        policy = _policy_with_ledger(tmp_path / name, url, auto_publish=True)
        work = tmp_path / f"{name}-work"
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("ASSETMINT_WORK_DIR", str(work))
            assert main(["run", str(manifest), "--policy", str(policy)]) == 0
        ledger = Ledger.open(url)
        candidates = {
            c.candidate_id: (c.state, c.image_sha256, c.rank, round(c.clip_score or 0.0, 4))
            for c in ledger.candidates(run_id)
        }
        assets = sorted((a.candidate_id, a.asset_key, a.watermark_method, a.final_width) for a in ledger.assets(run_id))
        outcomes[name] = (ledger.run(run_id).status, candidates, assets)
        assert not (work / "locks").exists() if name == "postgres" else (work / "locks").is_dir()
    assert outcomes["postgres"] == outcomes["sqlite"]
    status, candidates, assets = outcomes["postgres"]
    assert status == "completed" and len(candidates) == 6 and len(assets) == 4
    assert {state for state, *_ in candidates.values()} == {"published", "not_selected"}
