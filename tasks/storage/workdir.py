"""The work directory: checked writable up front, and a per-run lock so one manifest runs once at a time."""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks.core.errors import RunLockedError, WorkDirError


def ensure_writable(folder: Path) -> Path:
    """Create `folder` if needed and prove it is writable; WorkDirError otherwise."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise WorkDirError(
            f"work directory {folder} is not writable ({exc.strerror}); set work_dir in the policy "
            "or ASSETMINT_WORK_DIR to a folder you can write."
        ) from None
    return folder


def candidate_store(work_dir: Path) -> Path:
    """The folder of candidate images, shared by every run on this work directory."""
    return work_dir / "candidates"


def candidate_image_path(store: Path, candidate_id: str) -> Path:
    """Where a candidate's image lives: addressed by its content-derived id, so any run finds it."""
    return store / candidate_id[:2] / f"{candidate_id}.png"


def work_dir_of_run(run_dir: Path) -> Path:
    """The work directory a run folder ({work_dir}/runs/{run_id}) belongs to."""
    return Path(run_dir).parent.parent


@contextmanager
def run_lock(work_dir: Path, run_id: str) -> Iterator[None]:
    """Hold an exclusive lock for `run_id`; RunLockedError at once if another process holds it."""
    lock_dir = ensure_writable(work_dir / "locks")
    path = lock_dir / f"{run_id}.lock"
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
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()


def _locked(run_id: str, holder: str) -> RunLockedError:
    return RunLockedError(f"run {run_id} is already running ({holder}); wait for it to finish or stop it first.")


def refuse_if_locked(work_dir: Path, run_id: str) -> None:
    """RunLockedError now when another process holds the run's lock; creates nothing."""
    holder = lock_holder(work_dir, run_id)
    if holder is not None:
        raise _locked(run_id, holder)


def lock_holder(work_dir: Path, run_id: str) -> str | None:
    """Who holds the run's lock right now ('pid N'), or None when nobody does; takes and drops it to find out."""
    path = work_dir / "locks" / f"{run_id}.lock"
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
