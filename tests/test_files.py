"""Atomic writes leave nothing behind, and what a killed writer left is swept by the next write of the same target."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from conftest import backdate
from tasks.core.files import create_only, sweep_temp_files, write_atomic

# A writer that stops between creating its temporary sibling and moving it into place, as a kill -9 would find it.
STUCK_WRITER = """
import sys, time
from pathlib import Path
from tasks.core.files import _temp_sibling
with _temp_sibling(Path(sys.argv[1]), b"half", 0o644, durable=False) as tmp:
    print(tmp, flush=True)
    time.sleep(600)
"""


def test_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    write_atomic(tmp_path / "a.png", b"one")
    write_atomic(tmp_path / "a.png", b"two")
    assert create_only(tmp_path / "b.png", b"three") and not create_only(tmp_path / "b.png", b"four")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]
    assert (tmp_path / "a.png").read_bytes() == b"two" and (tmp_path / "b.png").read_bytes() == b"three"


def test_a_killed_writers_file_is_kept_while_it_lives_and_swept_after(tmp_path: Path) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", STUCK_WRITER, str(tmp_path / "asset.png")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None
        tmp = backdate(Path(writer.stdout.readline().strip()))
        assert tmp.name.startswith(".asset.png.") and tmp.name.endswith(".tmp")
        assert sweep_temp_files(tmp_path) == 0 and tmp.exists()  # locked: its writer may still finish
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=60)
    assert sweep_temp_files(tmp_path) == 1
    assert list(tmp_path.iterdir()) == []


def test_only_our_abandoned_temporary_files_are_swept(tmp_path: Path) -> None:
    ours = [".a.png.k3_x9q0z.tmp", ".a.png.provenance.json.abcdefgh.tmp"]
    others = [".a.png.ABCDEFGH.tmp", ".a.png.abc.tmp", "a.png.abcdefgh.tmp", ".keep.tmp", "notes.txt", ".a.png.tmp"]
    for name in ours + others:
        (tmp_path / name).write_bytes(b"x")
        backdate(tmp_path / name)
    (tmp_path / ".dir.png.abcdefgh.tmp").mkdir()
    (tmp_path / ".link.png.abcdefgh.tmp").symlink_to(tmp_path / "notes.txt")
    (tmp_path / ".young.png.abcdefgh.tmp").write_bytes(b"x")  # may belong to a writer that has not locked it yet
    assert sweep_temp_files(tmp_path) == len(ours)
    kept = [*others, ".dir.png.abcdefgh.tmp", ".link.png.abcdefgh.tmp", ".young.png.abcdefgh.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
    assert sweep_temp_files(tmp_path / "nowhere") == 0
