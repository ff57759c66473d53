"""The audit flow: audit every object under a target, stream the results, post a summary artifact."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from tasks.inspection.audit import AuditResult, AuditSummary


def _open_json_lines(path: str | None) -> Any:
    if not path:
        return None
    from tasks.core.errors import AssetMintError

    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.open("w", encoding="utf-8")
    except OSError as exc:
        raise AssetMintError(f"cannot write the JSON lines file {target}: {exc.strerror or exc}") from None


@task(name="audit-objects", cache_policy=NO_CACHE)
def audit_task(
    targets: list[str],
    policy_path: str | None,
    json_lines: str | None = None,
    html: str | None = None,
    on_result: Callable[[AuditResult], None] | None = None,
) -> AuditSummary:
    """List, audit and record every object; stream JSON lines; write the HTML report."""
    from policies.model import load_policy
    from tasks.inspection.audit import run_audit
    from tasks.inspection.audit_report import write_html
    from tasks.storage.ledger import Ledger

    policy = load_policy(Path(policy_path) if policy_path else None)
    ledger = Ledger.open(policy.ledger_url())
    lines = _open_json_lines(json_lines)

    def each(result: AuditResult) -> None:
        if lines is not None:
            lines.write(json.dumps(result.to_dict(), default=str, sort_keys=True) + "\n")
            lines.flush()
        if on_result is not None:
            on_result(result)

    try:
        summary = run_audit(targets, policy, ledger, thumbnails=bool(html), on_result=each)
    finally:
        if lines is not None:
            lines.close()
    if html:
        write_html(summary, Path(html))
    return summary


@task(name="audit-artifact", cache_policy=NO_CACHE)
def audit_artifact(summary: AuditSummary) -> None:
    """Post the verdict counts and the failures as a markdown artifact."""
    from prefect.artifacts import create_markdown_artifact

    lines = ["| verdict | objects |", "|---|---|"]
    lines += [f"| {verdict} | {count} |" for verdict, count in summary.counts.items()]
    failures = summary.failures
    if failures:
        lines += ["", f"**{len(failures)} published or finalized objects failed:**", ""]
        lines += [f"- `{r.object}`: {r.verdict} ({'; '.join(r.reasons)})" for r in failures[:50]]
    create_markdown_artifact(key="audit-summary", markdown="\n".join(lines), description="Audit summary")


@flow(name="assetmint-audit", log_prints=False, validate_parameters=False)
def audit_flow(
    target: str | list[str],
    policy: str | None = None,
    json_lines: str | None = None,
    html: str | None = None,
    fail_on_failures: bool = False,
) -> dict[str, Any]:
    """Audit every object under the target(s); returns counts per verdict, failures and the exit status.

    With `fail_on_failures` (for scheduled deployments) the flow run ends Failed when any published or finalized
    object is neither verified nor recovered, so that Prefect automations can alert on it.
    """
    from tasks.core.errors import AssetMintError

    targets = [target] if isinstance(target, str) else list(target)
    summary = audit_task(targets, policy, json_lines, html)
    audit_artifact(summary)
    if fail_on_failures and summary.failures:
        names = ", ".join(r.object for r in summary.failures[:10])
        raise AssetMintError(f"{len(summary.failures)} published or finalized objects failed the audit: {names}")
    return {**summary.to_dict(), "exit_code": summary.exit_code}
