"""The installed command as a user runs it: fast help without torch, and clean output from a real run."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import orchestration_error
from conftest import cli_command, command_environment, write

MANIFEST = """\
campaign: {id: clean, name: Clean output}
defaults: {model: embedded:tiny-sd, width: 256, height: 256, steps: 2, candidates: 2, keep_top_k: 1}
prompts: [{prompt: a lamp on a desk}]
"""


def _run(args: list[str], tmp_path: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command(args),
        capture_output=True,
        text=True,
        env=command_environment(**extra_env),
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


def test_an_ephemeral_server_that_cannot_start_in_time_is_one_paragraph(tmp_path: Path) -> None:
    # 0 s: Prefect gives up before the first health check, exactly as it does when a busy machine is too slow.
    result = _run(
        ["run", str(write(tmp_path / "m.yaml", MANIFEST))],
        tmp_path,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="0",
        PREFECT_API_URL="",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "starting Prefect (ephemeral API server)" in result.stderr
    assert "did not start within 0 s" in result.stderr
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in result.stderr
    assert "prefect server start" in result.stderr
    assert "Traceback" not in output


def test_an_unreachable_prefect_api_url_is_one_paragraph(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a loopback port that nothing listens on once this socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    result = _run(["run", str(write(tmp_path / "m.yaml", MANIFEST))], tmp_path, PREFECT_API_URL=url)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert f"cannot reach the Prefect API at {url}" in result.stderr
    assert "starting Prefect" not in output  # no ephemeral server is started when an API URL is set
    assert "Traceback" not in output


@pytest.mark.parametrize(
    "message",
    ["something else went wrong", "Failed to reach API", "Timed out while attempting to connect to the database"],
)
def test_other_runtime_errors_are_not_mistaken_for_prefect_start_up(message: str) -> None:
    assert orchestration_error(RuntimeError(message)) is None
    assert orchestration_error(ValueError("Failed to reach API at http://x/api")) is None


def test_an_ephemeral_server_that_exits_is_not_blamed_on_the_timeout() -> None:
    error = orchestration_error(
        RuntimeError(
            "Timed out while attempting to connect to ephemeral Prefect API server. "
            "Ephemeral server process exited with code 1."
        )
    )
    assert error is not None and error.exit_code == 2
    assert "exited with code 1" in str(error) and "STARTUP_TIMEOUT" not in str(error)


def test_version_comes_from_the_package(tmp_path: Path) -> None:
    from cli.main import package_version

    result = _run(["--version"], tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"assetmint {package_version()}"
    assert package_version() not in ("", "unknown")


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    command = f"{sys.executable} -m cli schema manifest | head -5"
    result = subprocess.run(command, shell=True, capture_output=True, text=True, cwd=tmp_path, check=False)
    assert len(result.stdout.splitlines()) == 5
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, result.stderr


def test_prefect_client_telemetry_and_its_notice_are_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect._internal.analytics.enabled import is_telemetry_enabled

    from cli.console import quiet_environment

    monkeypatch.delenv("DO_NOT_TRACK", raising=False)
    monkeypatch.setattr("prefect._internal.analytics.enabled.is_ci_environment", lambda: False)
    quiet_environment(verbose=False)
    assert not is_telemetry_enabled()


def test_a_manual_review_summary_names_the_review_command() -> None:
    from io import StringIO
    from types import SimpleNamespace

    from rich.console import Console

    from cli.runs import _print_summary

    summary = SimpleNamespace(
        run_id="camp-0123abcd",
        status="pending_review",
        counts={"selected": 2, "scored": 4},
        generated_now=6,
        warnings=["2 selected candidates are pending review (policy review.mode: manual)"],
        best=[],
        image_dir="/w/candidates",
        run_dir="/w/runs/camp-0123abcd",
        ledger_url="sqlite:////w/ledger.sqlite",
    )
    out = StringIO()
    _print_summary(Console(file=out, width=80), summary)
    assert "assetmint review camp-0123abcd" in out.getvalue()
