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

Where the exception is raised matters. Raised half-way through a ledger commit it left SQLAlchemy's session state
broken; raised inside Prefect's engine between two tasks it made Prefect's own crash handling fail with a traceback.
So code runs in zones: `deferred()` holds a signal back until the zone ends (ledger transactions, a flow's
orchestration), `interruptible()` lets it raise at once (the work inside a task, where a stop must not wait for a
whole generation chunk). Outside any zone (command start-up, Prefect's server start) it raises at once.
"""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, ParamSpec, TypeVar

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
INTERRUPTED_LINE = "interrupted; rerun the same command to continue where it stopped."

P = ParamSpec("P")
R = TypeVar("R")


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; a KeyboardInterrupt, so every `except KeyboardInterrupt` treats SIGTERM as Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a command that a signal ended."""
        return 128 + self.signum


class _State:
    """Whether stop signals are handled here, the one received (if any), whether it was raised, and the zones."""

    def __init__(self) -> None:
        self.reset()

    def reset(self, active: bool = False) -> None:
        self.active = active
        self.received: int | None = None
        self.raised = False
        self.zones: list[bool] = []  # the main thread's zones, innermost last; True: a signal may raise there

    def may_raise(self) -> bool:
        return not self.zones or self.zones[-1]

    def raise_pending(self) -> None:
        if self.received is not None and not self.raised and self.may_raise():
            self.raised = True
            raise Interrupted(self.received)


_state = _State()


def received() -> int | None:
    """The first stop signal received while stop_signals_raise() was active, else None."""
    return _state.received


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    if _state.received is None:
        _state.received = signum
    _state.raise_pending()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _install(handler: Any) -> dict[int, Any]:
    return {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}


def _restore(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)


@contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Within: the first SIGINT or SIGTERM raises Interrupted in the main thread, where the zones allow; on exit the
    old handlers return. Zones do nothing outside it (a library caller keeps its own signal handling)."""
    if not _in_main_thread():  # signal handlers can only be set from the main thread
        yield
        return
    previous = _install(_on_signal)
    _state.reset(active=True)
    try:
        yield
    finally:
        _restore(previous)
        _state.reset()


@contextmanager
def _zone(may_raise: bool) -> Iterator[None]:
    if not (_state.active and _in_main_thread()):
        yield
        return
    # Also takes SIGTERM back from Prefect's engine, which installs its own handler (raising TerminationSignal
    # wherever the engine is) for the duration of a flow run; the engine's handler returns when the zone ends.
    previous = _install(_on_signal)
    _state.zones.append(may_raise)
    try:
        _state.raise_pending()
        yield
    finally:
        _state.zones.pop()
        _restore(previous)
    _state.raise_pending()


def deferred() -> Any:
    """A zone where a stop signal is held back, then raised where the zone ends (if the enclosing zone allows)."""
    return _zone(False)


def interruptible(fn: Callable[P, R]) -> Callable[P, R]:
    """`fn` runs in a zone where a stop signal raises at once (and one held back before raises as it starts)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with _zone(True):
            return fn(*args, **kwargs)

    return wrapper


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
    previous = _install(signal.SIG_IGN)
    try:
        yield
    finally:
        _restore(previous)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
