"""How AssetMint's flow runs read in Prefect: names from the run id, tags for campaign and policy, stage logs."""

from __future__ import annotations

import hashlib
import logging

from policies.model import Policy

# The stages (tasks/) log with the standard library under this name; they know nothing of Prefect.
STAGE_LOGGER = "tasks"


def policy_digest(policy: Policy) -> str:
    """A short, stable digest of a policy's effective settings (8 hex digits)."""
    return hashlib.sha256(policy.model_dump_json().encode()).hexdigest()[:8]


def run_tags(campaign_id: str, policy: Policy) -> list[str]:
    """The tags a run's flow runs carry: its campaign and the digest of its policy."""
    return [f"campaign:{campaign_id}", f"policy:{policy_digest(policy)}"]


def label_flow_run(name: str, tags: list[str]) -> None:
    """Rename the current flow run and add tags to it; works for deployed runs too, where tags come from the server."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    merged = sorted(set(context.flow_run.tags) | set(tags))
    with get_client(sync_client=True) as client:
        client.update_flow_run(context.flow_run.id, name=name, tags=merged)


def send_stage_logs_to_prefect() -> None:
    """Send the stages' INFO lines to the Prefect API, attached to the flow or task run they happen in."""
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.logging.handlers import APILogHandler

    class RunLogHandler(APILogHandler):
        """Prefect's API handler, silent outside a run (stages also run without Prefect)."""

        def emit(self, record: logging.LogRecord) -> None:
            if FlowRunContext.get() is not None or TaskRunContext.get() is not None:
                super().emit(record)

    logger = logging.getLogger(STAGE_LOGGER)
    if not any(isinstance(handler, APILogHandler) for handler in logger.handlers):
        logger.addHandler(RunLogHandler())
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
