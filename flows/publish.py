"""The publish flow: a run's finalized assets to the policy's target, exactly once, with retries for I/O trouble."""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.finalize import policy_for_run
from policies.model import Policy
from tasks.stages import delivery
from tasks.stages.delivery import PublishOutcome
from tasks.storage.publish import PublishTargetError
from tasks.storage.workdir import run_lock


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
def publish_task(ledger_url: str, run_id: str, policy: Policy) -> PublishOutcome:
    """Publish what is not yet published; raise a retryable error while transient failures remain."""
    outcome = delivery.publish_finalized(ledger_url, run_id, policy)
    if outcome.transient:
        raise PublishTargetError(
            f"{len(outcome.transient)} assets could not be published yet: {'; '.join(outcome.transient)}",
            retryable=True,
        )
    return outcome


@flow(name="assetmint-publish", log_prints=False, validate_parameters=False)
def publish_flow(run_id: str, policy: str | None = None) -> PublishOutcome:
    """Publish every finalized, not yet published asset of a run."""
    loaded, ledger_url = policy_for_run(run_id, policy)
    with run_lock(loaded.resolved_work_dir(), run_id):
        return publish_task(ledger_url, run_id, loaded)
