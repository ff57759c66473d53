"""The finalize flow: watermark, sign and validate a run's approved candidates (after a human review)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from policies.model import Policy, load_policy
from tasks.stages import delivery, runs
from tasks.storage.workdir import run_lock

finalize_approved_task = task(delivery.finalize_approved, name="finalize-approved", cache_policy=NO_CACHE)


def policy_for_run(run_id: str, policy_path: str | None) -> tuple[Policy, str]:
    """The given policy, or else the one recorded with the run; with the ledger URL to use."""
    if policy_path:
        policy = load_policy(Path(policy_path))
        return policy, policy.ledger_url()
    default = load_policy()
    recorded = runs.ledger_for(default.ledger_url()).run(run_id).policy
    return Policy.model_validate(recorded), default.ledger_url()


@flow(name="assetmint-finalize", log_prints=False, validate_parameters=False)
def finalize_flow(run_id: str, policy: str | None = None) -> dict[str, int | list[str]]:
    """Finalize every approved, not yet finalized candidate of a run; returns counts and failure reasons."""
    loaded, ledger_url = policy_for_run(run_id, policy)
    with run_lock(loaded.resolved_work_dir(), run_id):  # one writer of a run's final files at a time
        failures = finalize_approved_task(ledger_url, run_id, loaded)
    counts = runs.ledger_for(ledger_url).state_counts(run_id)
    return {"finalized": counts.get("finalized", 0) + counts.get("published", 0), "failed": failures}
