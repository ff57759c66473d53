"""The review page's finalize: submit the delivery flow for a run as its own process and report from the ledger."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from policies.model import Policy
from tasks.core.errors import AssetMintError, ReviewError, RunLockedError
from tasks.core.states import CandidateState
from tasks.stages.delivery import ACTIVE_DELIVERY, last_delivery, record_delivery
from tasks.storage.ledger import Ledger
from tasks.storage.run_locks import run_locks

# A submitted delivery that no process of ours started and that never said it runs is taken as lost after this.
SUBMIT_GRACE = timedelta(minutes=2)


class DeliveryProcess(Protocol):
    """The process a submitter started (a `subprocess.Popen` does)."""

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


# (run_id, ledger_url, policy, attempt id) -> the started process; the CLI supplies it (it may import flows).
DeliverySubmitter = Callable[[str, str, Policy, str], DeliveryProcess]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Deliveries:
    """Starts one delivery per run at a time through `submit`, and reads every delivery's state from the ledger."""

    def __init__(self, ledger: Ledger, ledger_url: str, policy: Policy, submit: DeliverySubmitter | None) -> None:
        self._ledger = ledger
        self._ledger_url = ledger_url
        self._policy = policy
        self._submit = submit
        self._lock = threading.Lock()
        # Only to tell a live child from a dead one; what it did is read from the ledger.
        self._children: dict[str, tuple[str, DeliveryProcess]] = {}

    def _lost_reason(self, run_id: str, record: dict[str, Any]) -> str | None:
        """Why an attempt the ledger calls active is not running any more; None while it may still run."""
        child = self._children.get(run_id)
        if child is not None and child[0] == record.get("attempt"):
            code = child[1].poll()
            return None if code is None else f"the delivery process exited with code {code} before recording its end"
        pid, host = record.get("pid"), record.get("host")
        if record.get("status") == "running" and isinstance(pid, int):
            if host != socket.gethostname() or _pid_alive(pid):
                return None
            return f"the delivery process (pid {pid}) ended without recording its outcome"
        submitted_at = record.get("submitted_at")
        if submitted_at and datetime.now(UTC) - datetime.fromisoformat(submitted_at) < SUBMIT_GRACE:
            return None
        return "the delivery was submitted but never started"

    def status(self, run_id: str) -> dict[str, Any]:
        """Ledger counts of the run's delivery and its last attempt: running or not, when, error, failures."""
        record = last_delivery(self._ledger, run_id)
        lost = self._lost_reason(run_id, record) if record.get("status") in ACTIVE_DELIVERY else None
        if lost is not None:
            # The record may have been written between the two reads: trust it when it has.
            record = last_delivery(self._ledger, run_id)
            if record.get("status") not in ACTIVE_DELIVERY:
                lost = None
        counts = self._ledger.state_counts(run_id)
        failed = {
            row.candidate_id: row.error or "unknown reason"
            for row in self._ledger.candidates(run_id, [CandidateState.FINALIZE_FAILED])
        }
        lines = [f"{k}: {v}" for k, v in sorted(failed.items())]
        recorded = [str(line) for line in record.get("failures") or []]
        return {
            "run_id": run_id,
            "approved": counts.get(CandidateState.APPROVED, 0),
            # Published assets were finalized first: count them as finalized too, and separately as published.
            "finalized": counts.get(CandidateState.FINALIZED, 0) + counts.get(CandidateState.PUBLISHED, 0),
            "published": counts.get(CandidateState.PUBLISHED, 0),
            "finalize_failed": counts.get(CandidateState.FINALIZE_FAILED, 0),
            "failed": [{"candidate_id": k, "reason": v} for k, v in sorted(failed.items())],
            "status": "lost" if lost else record.get("status"),
            "running": record.get("status") in ACTIVE_DELIVERY and lost is None,
            "submitted_at": record.get("submitted_at"),
            "started_at": record.get("started_at"),
            "finished_at": record.get("finished_at"),
            "error": lost or record.get("error"),
            "failures": recorded,
            "failure_lines": lines + [line for line in recorded if line not in lines],
        }

    def start(self, run_id: str, reviewer: str) -> None:
        """Submit a delivery of the run; RunLockedError when one is running or another writer holds the run."""
        if self._submit is None:
            raise ReviewError(f"this review session cannot finalize; run `assetmint finalize {run_id}` instead.")
        with self._lock:
            current = self.status(run_id)
            if current["running"]:
                since = current["started_at"] or current["submitted_at"]
                raise RunLockedError(f"a delivery of run {run_id} is already running (since {since}); wait for it.")
            holder = run_locks(self._ledger_url, self._policy.resolved_work_dir()).holder(run_id)
            if holder is not None:
                raise RunLockedError(
                    f"run {run_id} is busy ({holder}: a batch, finalize or publish of it); try again when it ends."
                )
            attempt = uuid.uuid4().hex
            submitted = {
                "attempt": attempt,
                "status": "submitted",
                "submitted_at": datetime.now(UTC).isoformat(),
                "by": reviewer,
                "error": None,
                "failures": [],
            }
            record_delivery(self._ledger_url, run_id, submitted)
            try:
                process = self._submit(run_id, self._ledger_url, self._policy, attempt)
            except Exception as exc:
                error = f"could not start the delivery process: {type(exc).__name__}: {exc}"
                record_delivery(self._ledger_url, run_id, {**submitted, "status": "failed", "error": error})
                raise AssetMintError(error) from exc
            self._children[run_id] = (attempt, process)

    def wait(self, run_id: str, timeout: float | None = None) -> None:
        """Block until the delivery process this app started for the run ends (for tests and shutdown)."""
        child = self._children.get(run_id)
        if child is not None:
            child[1].wait(timeout)
