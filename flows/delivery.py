"""The delivery flow: finalize a run's approved candidates, then publish them, under the run's lock.

The one sequence behind `assetmint finalize`, `assetmint publish`, the review page's "Finalize and publish" and the
batch flow's finalize + auto_publish part. `python -m flows.delivery RUN_ID` runs it in its own process.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.interrupts import is_interruption
from flows.labels import label_flow_run, run_tags, send_stage_logs_to_prefect
from policies.model import Policy
from tasks.core import interrupts
from tasks.core.errors import AssetMintError, RunLockedError
from tasks.core.interrupts import interruptible
from tasks.stages import delivery, runs
from tasks.stages.delivery import DeliveryResult, PublishOutcome
from tasks.storage.publish import PublishTargetError
from tasks.storage.run_locks import run_locks

send_stage_logs_to_prefect()
finalize_task = task(interruptible(delivery.finalize_approved), name="finalize-approved", cache_policy=NO_CACHE)
record_task = task(interruptible(delivery.record_delivery), name="record-delivery", cache_policy=NO_CACHE)


def only_transient_failures(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry a publish task only for errors that can clear up (5xx, throttling, timeouts), never for conflicts."""
    error = state.data
    return isinstance(error, PublishTargetError) and error.retryable


@task(
    name="publish-finalized",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=[5, 30, 120],
    retry_condition_fn=only_transient_failures,
)
@interruptible
def publish_task(ledger_url: str, run_id: str, policy: Policy) -> PublishOutcome:
    """Publish what is not yet published; raise a retryable error while transient failures remain."""
    outcome = delivery.publish_finalized(ledger_url, run_id, policy)
    if outcome.transient:
        raise PublishTargetError(
            f"{len(outcome.transient)} assets could not be published yet: {'; '.join(outcome.transient)}",
            retryable=True,
        )
    return outcome


def policy_for_run(run_id: str, policy_path: str | None) -> tuple[Policy, str]:
    """The given policy, or else the one recorded with the run; with the ledger URL to use."""
    return delivery.policy_for_run(run_id, Path(policy_path) if policy_path else None)


def deliver(
    ledger_url: str, run_id: str, policy: Policy, finalize: bool = True, publish: bool = True
) -> DeliveryResult:
    """Order the delivery tasks for a run whose lock the caller holds: finalize, then publish what is finalized."""
    result = DeliveryResult()
    if finalize:
        result.failed = finalize_task(ledger_url, run_id, policy)
    if publish:
        result.published = publish_task(ledger_url, run_id, policy)
    counts = runs.ledger_for(ledger_url).state_counts(run_id)
    result.finalized = counts.get("finalized", 0) + counts.get("published", 0)
    return result


def _now() -> str:
    return datetime.now(UTC).isoformat()


def describe_error(exc: BaseException) -> str:
    """How a failed delivery reads on the review page: our own errors as they are, others with their class."""
    if isinstance(exc, AssetMintError):
        return str(exc)
    if is_interruption(exc):
        return "interrupted"
    return f"{type(exc).__name__}: {exc}"


@flow(name="assetmint-delivery", flow_run_name="deliver-{run_id}", log_prints=False, validate_parameters=False)
def delivery_flow(
    run_id: str,
    policy: str | None = None,
    finalize: bool = True,
    publish: bool = True,
    attempt: str | None = None,
) -> DeliveryResult:
    """Finalize a run's approved candidates and publish its finalized assets; records the attempt in the ledger."""
    with interrupts.deferred():  # orchestration holds a stop signal back; it raises inside the tasks' work
        return _delivery(run_id, policy, finalize, publish, attempt)


def _delivery(run_id: str, policy: str | None, finalize: bool, publish: bool, attempt: str | None) -> DeliveryResult:
    loaded, ledger_url = policy_for_run(run_id, policy)
    label_flow_run(f"deliver-{run_id}", run_tags(runs.ledger_for(ledger_url).run(run_id).campaign_id, loaded))
    with run_locks(ledger_url, loaded.resolved_work_dir()).hold(run_id):  # one writer of a run at a time
        started = {
            "attempt": attempt,
            "finalize": finalize,
            "publish": publish,
            "started_at": _now(),
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }
        record_task(ledger_url, run_id, {**started, "status": "running"})
        try:
            result = deliver(ledger_url, run_id, loaded, finalize=finalize, publish=publish)
        except BaseException as exc:
            # A plain call: the flow may be cancelled or crashing, and the reviewer still needs to see why.
            ended = {"status": "failed", "finished_at": _now(), "error": describe_error(exc), "failures": []}
            delivery.record_delivery(ledger_url, run_id, {**started, **ended})
            raise
        # Finalize failures as the ledger words them (cid: reason), so the page can show each once.
        failures = result.failed + result.not_published()
        ended = {"status": "failed" if failures else "completed", "finished_at": _now(), "error": None}
        record_task(ledger_url, run_id, {**started, **ended, "failures": failures})
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the delivery flow from the command line; 0 when everything was delivered, 2 when the run is busy."""
    parser = argparse.ArgumentParser(prog="python -m flows.delivery", description=__doc__.splitlines()[0])
    parser.add_argument("run_id", metavar="RUN_ID")
    parser.add_argument("--policy", metavar="FILE", help="policy file (default: the policy recorded with the run)")
    parser.add_argument("--no-publish", action="store_true", help="finalize only")
    parser.add_argument("--attempt", help="id of the delivery attempt the caller recorded as submitted")
    args = parser.parse_args(argv)
    try:
        result = delivery_flow(args.run_id, args.policy, publish=not args.no_publish, attempt=args.attempt)
    except RunLockedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except AssetMintError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in result.failure_lines():
        print(line)
    return 1 if result.failure_lines() else 0


if __name__ == "__main__":
    sys.exit(main())
