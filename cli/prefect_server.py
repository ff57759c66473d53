"""Prefect's ephemeral API server, started by the CLI in a session of its own, so that Ctrl-C reaches only the CLI.

Prefect starts this server (prefect.server.api.server.SubprocessASGIServer) on first use when PREFECT_API_URL is
unset, as a child in the terminal's process group. Ctrl-C sends SIGINT to the whole group: the server shut down at
once, and the run, which still had to record its interruption through the API, ended with `ConnectError` and a
traceback. Started here before any flow, registered as the instance Prefect's clients look up (the `None` port key,
as prefect.testing.utilities.prefect_test_harness does), in a new session: only the CLI gets the terminal's signals,
unwinds with the server still up, and stops the server at exit (Prefect's own atexit hook). On Linux the server is
also told to stop when the CLI dies (PR_SET_PDEATHSIG), so a kill -9 of the CLI does not leave it running.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

_PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> Callable[[], None] | None:
    """A pre-exec function that has the child receive SIGTERM when `parent` ends; None where that is not possible."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: no dynamic loading between fork and exec
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request was in place
            os._exit(1)

    return preexec


def _detached_server_class() -> Any:
    """SubprocessASGIServer whose server process starts in a new session (built late: Prefect loads only here)."""
    from prefect.server.api import server as prefect_server

    class DetachedServer(prefect_server.SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            preexec = _die_with(os.getpid())
            if preexec is None:  # without a way to end it with the CLI, a detached server could outlive a kill -9
                return super()._run_uvicorn_command()
            popen = functools.partial(subprocess.Popen, start_new_session=True, preexec_fn=preexec)
            # Prefect builds the command, environment and settings; only its module's Popen call gains the two
            # options, for this call, from the main thread before any flow or client runs.
            real = prefect_server.subprocess
            prefect_server.subprocess = SimpleNamespace(Popen=popen)  # type: ignore[assignment]
            try:
                return super()._run_uvicorn_command()
            finally:
                prefect_server.subprocess = real

    return DetachedServer


def start_prefect() -> None:
    """Start Prefect's ephemeral API server in its own session when no PREFECT_API_URL is set (and say so)."""
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return
    print("starting Prefect (ephemeral API server)...", file=sys.stderr, flush=True)
    server = _detached_server_class()()  # SubprocessASGIServer.__new__ registers it as the default instance
    server.start()
