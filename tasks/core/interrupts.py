"""Stop signals: SIGINT (Ctrl-C) and SIGTERM (a worker, Kubernetes) end a command as an exception, never silently.

Why explicit handlers rather than Python's defaults:
- SIGTERM's default action kills the process on the spot: no `interrupted` status in the ledger, no message, the
  exit status of a killed process. Raised as an exception it unwinds like Ctrl-C: the run is recorded as
  interrupted, locks and temporary files are released, and the command exits 128 + 15 = 143.
- A shell that is not interactive starts its background jobs with SIGINT ignored, and Python then never installs
  its KeyboardInterrupt handler: `kill -INT -- -PGID` to such a run was ignored until the run ended. A command that
  holds a run is stopped by a stop signal wherever it was started.
- Only the first signal raises. The unwinding that follows (recording the interruption, stopping Prefect's server,
  letting a running finalize worker finish its file) takes seconds; a second Ctrl-C must not cut it short and leave
  the run `running` (kill -9 still ends everything at once).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
INTERRUPTED_LINE = "interrupted; rerun the same command to continue where it stopped."


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; a KeyboardInterrupt, so every `except KeyboardInterrupt` treats SIGTERM as Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a command that a signal ended."""
        return 128 + self.signum


_received: list[int] = []


def received() -> int | None:
    """The first stop signal received while stop_signals_raise() was active, else None."""
    return _received[0] if _received else None


def _raise_once(signum: int, _frame: FrameType | None) -> None:
    first = not _received
    _received.append(signum)
    if first:
        raise Interrupted(signum)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Within: the first SIGINT or SIGTERM raises Interrupted in the main thread; on exit the old handlers return."""
    if not _in_main_thread():  # signal handlers can only be set from the main thread
        yield
        return
    previous = {signum: signal.signal(signum, _raise_once) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        _received.clear()


@contextmanager
def children_ignore_stop_signals() -> Iterator[None]:
    """Processes started within begin life with SIGINT and SIGTERM ignored: the parent alone decides when to stop.

    A process pool's workers share the terminal's process group, so Ctrl-C reaches them too; a worker that died of it
    would print a traceback and break the pool. An ignored disposition survives exec, so the children ignore the
    signals from their first instruction; the parent blocks them meanwhile, so one that arrives is delivered (not
    lost) when the old handlers are back.
    """
    if not _in_main_thread():
        yield
        return
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, set(STOP_SIGNALS))
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
