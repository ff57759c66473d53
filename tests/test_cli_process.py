"""The installed command as a user runs it: fast help without torch, and clean output from a real run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import write

MANIFEST = """\
campaign: {id: clean, name: Clean output}
defaults: {model: embedded:tiny-sd, width: 256, height: 256, steps: 2, candidates: 2, keep_top_k: 1}
prompts: [{prompt: a lamp on a desk}]
"""


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_LOGGING")}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
        check=False,
    )


def test_help_does_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom cli.main import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, 'diffusers' in sys.modules, 'prefect' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert "usage: assetmint" in result.stdout
    assert result.stdout.strip().endswith("False False False")


def test_a_normal_run_prints_no_library_noise(tmp_path: Path) -> None:
    result = _run(["run", str(write(tmp_path / "m.yaml", MANIFEST))], tmp_path)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "completed" in result.stdout and "Finalized (watermarked, signed)" in result.stdout
    for noise in ("Traceback", "Warning", "WARNING", "INFO", "deprecated", "Loading", "temporary server"):
        assert noise not in output, f"{noise!r} in output:\n{output}"
