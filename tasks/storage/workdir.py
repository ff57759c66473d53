"""The work directory: checked writable up front, and where candidate images live in it."""

from __future__ import annotations

import os
from pathlib import Path

from tasks.core.errors import WorkDirError


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
