"""Ctrl-C (SIGINT to the process group) and SIGTERM end a run within seconds, recorded as interrupted, with one line
saying how to continue; the rerun finishes the run. The runs are observed and signalled from outside, as a user or a
worker would; the zones that decide where a signal may raise are tested in-process first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import AUTO_PUBLISH_POLICY, SpawnedRun, process_gone, run_statuses, write
from tasks.core import interrupts
from tasks.core.interrupts import INTERRUPTED_LINE, Interrupted, interruptible


def _signal_self(signum: int) -> None:
    os.kill(os.getpid(), signum)  # the handler runs in this (the main) thread before os.kill returns to the test


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_waits_for_the_end_of_a_deferred_zone(signum: int) -> None:
    finished = []
    with interrupts.stop_signals_raise(), pytest.raises(Interrupted) as raised:
        with interrupts.deferred():
            _signal_self(signum)
            finished.append("the zone's work")
    assert finished == ["the zone's work"]
    assert raised.value.exit_code == 128 + signum


def test_interruptible_work_raises_at_once_and_only_the_first_signal_raises() -> None:
    steps = []

    @interruptible
    def work() -> None:
        steps.append("started")
        _signal_self(signal.SIGINT)
        steps.append("not reached")

    with interrupts.stop_signals_raise(), interrupts.deferred():
        with pytest.raises(Interrupted):
            work()
        _signal_self(signal.SIGTERM)  # while unwinding: recorded, not raised
        assert interrupts.received() == signal.SIGINT
    assert steps == ["started"]
    assert interrupts.received() is None and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_stop_signal_raises_even_where_the_shell_ignored_sigint() -> None:
    # A non-interactive shell starts background jobs with SIGINT ignored; `kill -INT -- -PGID` must still stop a run.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts.stop_signals_raise(), pytest.raises(Interrupted):
            _signal_self(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # the caller's disposition is back
    finally:
        signal.signal(signal.SIGINT, previous)


def test_zones_change_nothing_outside_a_command() -> None:
    # Python's own SIGINT handler, whatever the shell that started the tests did (a background job ignores SIGINT).
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        before = signal.getsignal(signal.SIGINT)
        with interrupts.deferred():
            assert signal.getsignal(signal.SIGINT) is before
        with pytest.raises(KeyboardInterrupt) as raised:
            interruptible(_signal_self)(signal.SIGINT)
        assert type(raised.value) is KeyboardInterrupt  # Python's own handler, not ours
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_children_started_meanwhile_ignore_stop_signals() -> None:
    with interrupts.stop_signals_raise():
        with interrupts.children_ignore_stop_signals():
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
    try:
        ignored = int(Path(f"/proc/{child.pid}/status").read_text().split("SigIgn:")[1].split()[0], 16)
        assert ignored & (1 << (signal.SIGINT - 1)) and ignored & (1 << (signal.SIGTERM - 1))
    finally:
        child.kill()
        child.wait()


def test_prefects_termination_signal_ends_a_command_as_sigterm() -> None:
    from prefect.exceptions import TerminationSignal

    from cli.main import interrupt_exit_code

    assert interrupt_exit_code(TerminationSignal(signal.SIGTERM)) == 143
    assert interrupt_exit_code(KeyboardInterrupt()) == 130
    assert interrupt_exit_code(RuntimeError("unrelated")) is None


# 48 candidates (6 generation chunks of 8 on the tiny model: seconds of generation) and 36 to finalize and publish.
MANIFEST = """\
campaign: {id: stop, name: Stop signals}
defaults: {model: embedded:tiny-sd, width: 256, height: 256, steps: 2, candidates: 16, keep_top_k: 12}
prompts:
  - id: shot
    prompt: "a {thing} on a table"
    vars: {thing: [red cube, blue ball, green cone]}
"""
POLICY = AUTO_PUBLISH_POLICY
TOTAL, KEPT = 48, 36
STOPPED_WITHIN_S = 30  # generous: this machine is shared and loaded; a stop is normally a second or two


def _interrupt(
    root: Path, model_cache: Path, argv: list[str], signum: int, name: str, moment: Callable[[dict[str, int]], bool]
) -> dict[str, int]:
    """Start the run, signal its process group at `moment`, check how it ended; the ledger's counts after."""
    run = SpawnedRun(argv, root, model_cache, name)
    run.wait_until(lambda: moment(run.counts()), f"at the moment to stop ({name})")
    servers = run.prefect_servers()
    signalled = time.monotonic()
    os.killpg(run.pid, signum)  # the whole group, as a terminal's Ctrl-C or `kill -TERM -- -PGID` does
    code, stderr = run.wait(timeout_s=120)
    took = time.monotonic() - signalled
    assert code == 128 + signum, stderr
    assert took < STOPPED_WITHIN_S, f"took {took:.0f} s to stop"
    assert stderr.splitlines()[-1] == INTERRUPTED_LINE and stderr.count(INTERRUPTED_LINE) == 1, stderr
    assert "Traceback" not in stderr and "Error" not in stderr, stderr
    assert run_statuses(root) == ["interrupted"]
    assert servers, "Prefect's ephemeral server was not found among the command's children"
    assert run.group_gone(), "processes of the command's group outlived it"
    assert all(process_gone(pid, 0) for pid in servers), "Prefect's server outlived the command"
    return run.counts()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_mid_generation_and_mid_delivery_then_a_rerun_finishes(
    tmp_path: Path, model_cache: Path, signum: int
) -> None:
    argv = ["run", str(write(tmp_path / "m.yaml", MANIFEST)), "--policy", str(write(tmp_path / "p.yaml", POLICY))]

    counts = _interrupt(tmp_path, model_cache, argv, signum, "generating", lambda c: c.get("generated", 0) > 0)
    assert counts.get("planned", 0) > 0, f"generation was not stopped midway: {counts}"

    def delivering(c: dict[str, int]) -> bool:
        return c.get("finalized", 0) > 0

    counts = _interrupt(tmp_path, model_cache, argv, signum, "delivering", delivering)
    assert counts.get("published", 0) < KEPT, f"delivery was not stopped midway: {counts}"

    rerun = SpawnedRun(argv, tmp_path, model_cache, "rerun")
    rerun.wait_until(lambda: bool(rerun.prefect_servers()), "Prefect's server has started")
    servers = rerun.prefect_servers()
    code, stderr = rerun.wait()
    assert code == 0, stderr
    assert run_statuses(tmp_path) == ["completed"]
    assert rerun.counts() == {"published": KEPT, "not_selected": TOTAL - KEPT}
    assert rerun.group_gone() and all(process_gone(pid, 0) for pid in servers)
