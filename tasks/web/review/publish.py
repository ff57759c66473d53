"""Finalize a run's approved candidates in a background thread, one at a time per run, with pollable state."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from policies.model import Policy
from tasks.core import progress
from tasks.core.errors import AssetMintError

log = logging.getLogger(__name__)

Finalizer = Callable[[str, str, Policy], list[str]]


@dataclass
class PublishState:
    """One finalize job of a run: running or done, with the failures it reported."""

    run_id: str
    started_at: datetime
    running: bool = True
    finished_at: datetime | None = None
    failures: list[str] = field(default_factory=list)
    error: str | None = None
    done: int = 0
    total: int = 0

    def to_dict(self) -> dict[str, object]:
        """JSON-ready view."""
        return {
            "running": self.running,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "failures": list(self.failures),
            "error": self.error,
            "done": self.done,
            "total": self.total,
        }


class _ThreadProgress:
    """Progress sink that routes each report to the finalize job running on the reporting thread."""

    def __init__(self) -> None:
        self._states: dict[int, PublishState] = {}

    def register(self, state: PublishState) -> None:
        self._states[threading.get_ident()] = state

    def forget(self) -> None:
        self._states.pop(threading.get_ident(), None)

    def update(self, stage: str, done: int, total: int) -> None:
        state = self._states.get(threading.get_ident())
        if state is not None and stage in ("finalize", "publish"):
            state.done, state.total = done, total


_PROGRESS = _ThreadProgress()


def _finalize_approved(ledger_url: str, run_id: str, policy: Policy) -> list[str]:
    """Finalize the approved candidates, then publish what is finalized; returns every failure reason."""
    from tasks.stages.delivery import finalize_approved, publish_finalized
    from tasks.storage.workdir import run_lock

    with run_lock(policy.resolved_work_dir(), run_id):  # never beside a batch run, finalize or publish of the run
        failures = finalize_approved(ledger_url, run_id, policy)
        outcome = publish_finalized(ledger_url, run_id, policy)
    return failures + [f"not published: {reason}" for reason in outcome.refused + outcome.transient]


class Publisher:
    """Starts `finalize_approved` for a run in a thread unless one is already running for that run."""

    def __init__(self, ledger_url: str, policy: Policy, finalizer: Finalizer | None = None) -> None:
        self._ledger_url = ledger_url
        self._policy = policy
        self._finalizer = finalizer or _finalize_approved
        self._lock = threading.Lock()
        self._states: dict[str, PublishState] = {}
        self._threads: dict[str, threading.Thread] = {}

    def start(self, run_id: str) -> bool:
        """Start finalizing a run; False when a finalize of the same run is still running."""
        with self._lock:
            current = self._states.get(run_id)
            if current is not None and current.running:
                return False
            state = PublishState(run_id=run_id, started_at=datetime.now(UTC))
            self._states[run_id] = state
            thread = threading.Thread(target=self._work, args=(state,), name=f"finalize-{run_id}", daemon=True)
            self._threads[run_id] = thread
            thread.start()
            return True

    def state(self, run_id: str) -> PublishState | None:
        """The latest finalize job of a run, if any."""
        with self._lock:
            return self._states.get(run_id)

    def wait(self, run_id: str, timeout: float | None = None) -> None:
        """Block until the run's finalize thread ends (for tests and shutdown)."""
        thread = self._threads.get(run_id)
        if thread is not None:
            thread.join(timeout)

    def _work(self, state: PublishState) -> None:
        failures: list[str] = []
        error: str | None = None
        _PROGRESS.register(state)
        try:
            with progress.progress_sink(_PROGRESS):
                failures = self._finalizer(self._ledger_url, state.run_id, self._policy)
        except AssetMintError as exc:
            error = str(exc)
        except Exception as exc:  # the reviewer sees why; the traceback goes to the server log
            log.exception("finalize of run %s failed", state.run_id)
            error = f"{exc.__class__.__name__}: {exc}"
        finally:
            _PROGRESS.forget()
        with self._lock:
            state.failures = list(failures)
            state.error = error
            state.finished_at = datetime.now(UTC)
            state.running = False
