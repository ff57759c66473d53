"""Atomic file writes: a reader sees the old file or the whole new one, never a partial one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _write_temp(path: Path, data: bytes, mode: int, durable: bool) -> str:
    """A temporary sibling of `path` holding `data`, created with `mode` (never wider); returns its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # created 0600
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def write_atomic(path: Path, data: bytes, mode: int = 0o644, durable: bool = False) -> None:
    """Write `data` to `path` through a temporary sibling created with `mode` (never wider), then rename."""
    tmp = _write_temp(path, data, mode, durable)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def create_only(path: Path, data: bytes, mode: int = 0o644) -> bool:
    """Create `path` with `data`, durably and all at once; False (nothing written) when it already exists."""
    tmp = _write_temp(path, data, mode, durable=True)
    try:
        os.link(tmp, path)  # unlike rename, link refuses to replace an existing name
    except FileExistsError:
        return False
    finally:
        Path(tmp).unlink(missing_ok=True)
    return True
