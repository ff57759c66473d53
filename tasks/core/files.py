"""Atomic file writes: a reader sees the old file or the whole new one, never a partial one.

A write goes through a temporary sibling `.{name}.{8 random characters}.tmp` (tempfile.mkstemp's names), locked
(flock) by its writer until it is moved into place or removed. A process killed in between (kill -9, power loss)
leaves the sibling behind; sweep_temp_files removes exactly those: our name pattern, not locked by a live writer.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# tempfile.mkstemp(prefix=".{name}.", suffix=".tmp"): 8 characters from tempfile._RandomNameSequence.characters.
TEMP_NAME = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")
# A temp file is created, then locked a few microseconds later; one younger than this may not be locked yet.
TEMP_GRACE_S = 2.0


@contextmanager
def _temp_sibling(path: Path, data: bytes, mode: int, durable: bool) -> Iterator[str]:
    """A temporary sibling of `path` holding `data` (`mode`, never wider), locked while the caller moves it into
    place; removed afterwards if it is still there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # created 0600
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes, i.e. when the writer is done or dead
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
        yield tmp
    finally:
        try:
            Path(tmp).unlink(missing_ok=True)
        finally:
            os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o644, durable: bool = False) -> None:
    """Write `data` to `path` through a temporary sibling created with `mode` (never wider), then rename."""
    with _temp_sibling(path, data, mode, durable) as tmp:
        os.replace(tmp, path)


def create_only(path: Path, data: bytes, mode: int = 0o644) -> bool:
    """Create `path` with `data`, durably and all at once; False (nothing written) when it already exists."""
    with _temp_sibling(path, data, mode, durable=True) as tmp:
        try:
            os.link(tmp, path)  # unlike rename, link refuses to replace an existing name
        except FileExistsError:
            return False
    return True


def sweep_temp_files(directory: Path) -> int:
    """Remove the temporary siblings that interrupted writes left in `directory`; returns how many.

    Only names of our pattern, only regular files, only ones no live writer holds: a concurrent write_atomic or
    create_only in the same folder (another run publishing under a shared key prefix, another campaign's generation
    in the shared candidate store) keeps its file locked, so no run lock is needed to sweep safely.
    """
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    removed = 0
    for entry in entries:
        if TEMP_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False) and _remove_if_abandoned(entry):
            removed += 1
    return removed


def _remove_if_abandoned(entry: os.DirEntry[str]) -> bool:
    try:
        fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        stat = os.fstat(fd)
        if time.time() - stat.st_mtime < TEMP_GRACE_S:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: its writer is alive
            return False
        try:
            if os.stat(entry.path, follow_symlinks=False).st_ino != stat.st_ino:
                return False  # the name now belongs to another file
            os.unlink(entry.path)
        except FileNotFoundError:
            return False
        return True
    finally:
        os.close(fd)


def why_not_creatable(folder: Path) -> str | None:
    """Why `folder` could not be created and written here, or None: tried by making (and removing) a folder in its
    nearest existing ancestor, since permission bits do not say what mkdir does (root, /proc, read-only mounts)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".assetmint-probe-", dir=existing))
    except OSError as exc:
        return f"{existing} is not a writable folder ({exc.strerror or exc})"
    return None
