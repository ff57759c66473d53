"""Checks that need no Prefect answer before it starts: unknown runs, a run already running, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.main import main
from conftest import TINY_MANIFEST, write
from tasks.core.manifest import load_plan
from tasks.storage.ledger import Ledger
from tasks.storage.run_locks import FileRunLocks


@pytest.mark.parametrize("command", ["publish", "finalize"])
def test_an_unknown_run_is_refused_before_prefect_starts(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "nosuchrun"]) == 2
    err = capsys.readouterr().err
    assert "no run 'nosuchrun'" in err and "starting Prefect" not in err
    assert not (tmp_path / "work").exists()  # no empty ledger made just to say so
    Ledger.open_file(tmp_path / "work" / "ledger.sqlite")
    assert main([command, "nosuchrun"]) == 2
    err = capsys.readouterr().err
    assert "no run 'nosuchrun' in the ledger" in err and "starting Prefect" not in err


def test_a_running_manifest_is_refused_before_prefect_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write(tmp_path / "m.yaml", TINY_MANIFEST)
    with FileRunLocks(tmp_path / "work").hold(load_plan(manifest).run_id):
        assert main(["run", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert "is already running" in err and "starting Prefect" not in err


def test_a_refused_run_creates_no_work_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write(tmp_path / "m.yaml", TINY_MANIFEST.replace("embedded:tiny-sd", "embedded:no-such-model"))
    assert main(["run", str(manifest)]) == 2
    assert "no-such-model" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()
