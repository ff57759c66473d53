"""The audit flow (schedulable by a deployment) and the `assetmint audit` / `assetmint serve` commands.

Prefect is imported when the flow is first used, not when this module is: the CLI imports this module to register
its commands, and Prefect must not load (nor read its settings) before the CLI has quietened its logging. So
``audit_flow``, ``audit_task`` and ``audit_artifact`` are module attributes built on first access (PEP 562);
``from flows.audit import audit_flow`` and the deployment entrypoint ``flows/audit.py:audit_flow`` both work.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.inspection.audit import VERDICTS, AuditResult, AuditSummary

DEFAULT_SERVE_PORT = 8790
_PREFECT_OBJECTS: dict[str, Any] = {}


def _port(value: str) -> int:
    from flows.cli import port_number  # imported late: flows.cli imports this module

    return port_number(value)


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


def _audit_objects(
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


def _audit_artifact(summary: AuditSummary) -> None:
    """Post the verdict counts and the failures as a markdown artifact."""
    from prefect.artifacts import create_markdown_artifact

    lines = ["| verdict | objects |", "|---|---|"]
    lines += [f"| {verdict} | {count} |" for verdict, count in summary.counts.items()]
    failures = summary.failures
    if failures:
        lines += ["", f"**{len(failures)} published or finalized objects failed:**", ""]
        lines += [f"- `{r.object}`: {r.verdict} ({'; '.join(r.reasons)})" for r in failures[:50]]
    create_markdown_artifact(key="audit-summary", markdown="\n".join(lines), description="Audit summary")


def _audit_flow(
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
    summary = _prefect_objects()["audit_task"](targets, policy, json_lines, html)
    _prefect_objects()["audit_artifact"](summary)
    if fail_on_failures and summary.failures:
        names = ", ".join(r.object for r in summary.failures[:10])
        raise AssetMintError(f"{len(summary.failures)} published or finalized objects failed the audit: {names}")
    return {**summary.to_dict(), "exit_code": summary.exit_code}


def _prefect_objects() -> dict[str, Any]:
    """The flow and its tasks, decorated once (importing Prefect then)."""
    if not _PREFECT_OBJECTS:
        from prefect import flow, task
        from prefect.cache_policies import NO_CACHE

        _PREFECT_OBJECTS["audit_task"] = task(_audit_objects, name="audit-objects", cache_policy=NO_CACHE)
        _PREFECT_OBJECTS["audit_artifact"] = task(_audit_artifact, name="audit-artifact", cache_policy=NO_CACHE)
        _PREFECT_OBJECTS["audit_flow"] = flow(
            _audit_flow, name="assetmint-audit", log_prints=False, validate_parameters=False
        )
    return _PREFECT_OBJECTS


def __getattr__(name: str) -> Any:
    """`audit_flow`, `audit_task` and `audit_artifact`, built on first access."""
    if name in ("audit_flow", "audit_task", "audit_artifact"):
        return _prefect_objects()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- command line --------------------------------------------------------------------------------------------------


def cmd_audit(args: argparse.Namespace) -> int:
    """Audit published images with a progress display and a closing summary; exit 1 when a published one fails."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from flows.cli import _console, _rate_column_class, _RichProgress, escape
    from tasks.core import progress

    console = _console()
    columns = (
        TextColumn("{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        _rate_column_class()(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bars, progress.progress_sink(_RichProgress(bars)):
        summary = _prefect_objects()["audit_flow"](
            target=args.targets, policy=args.policy, json_lines=args.json_lines, html=args.html
        )
    _print_summary(console, summary, escape)
    return int(summary["exit_code"])


def _print_summary(console: Any, summary: dict[str, Any], escape: Callable[[str], str]) -> None:
    from rich.table import Table

    table = Table(title="Audit verdicts")
    table.add_column("verdict")
    table.add_column("objects", justify="right")
    for verdict in VERDICTS:
        table.add_row(verdict, str(summary["counts"][verdict]))
    console.print(table)
    for name in summary["failures"]:
        console.print(f"[red]failed:[/red] {escape(name)}", soft_wrap=True)
    console.print(
        f"{summary['objects']} objects audited; {len(summary['failures'])} published or finalized objects failed",
        soft_wrap=True,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the C2PA soft-binding resolution API (read-only, no authentication) until interrupted."""
    import uvicorn

    from policies.model import load_policy
    from tasks.web.soft_binding_api import create_app

    policy = load_policy(Path(args.policy) if args.policy else None)
    print(f"Soft-binding resolution API on http://{args.host}:{args.port} (read-only; Ctrl-C to stop)")
    uvicorn.run(create_app(policy), host=args.host, port=args.port, log_level="warning")
    return 0


def add_audit_commands(subparsers: Any, common_parent: argparse.ArgumentParser) -> None:
    """Register `assetmint audit` and `assetmint serve` on the CLI's subparsers."""
    policy_help = "policy file (default: the packaged default policy)"
    help_text = "verify watermarks and Content Credentials of published images (S3 prefix, folder or files)"
    p = subparsers.add_parser("audit", help=help_text, description=help_text, parents=[common_parent])
    p.add_argument("targets", nargs="+", metavar="TARGET", help="s3://bucket/prefix, a folder, or image files")
    p.add_argument("--json-lines", metavar="FILE", help="also write one JSON line per object here")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report here")
    p.add_argument("--policy", metavar="FILE", help=policy_help)
    p.set_defaults(handler=cmd_audit)
    help_text = "serve the C2PA soft-binding resolution API (read-only) for manifests in the ledger"
    p = subparsers.add_parser("serve", help=help_text, description=help_text, parents=[common_parent])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=DEFAULT_SERVE_PORT, help=f"port (default {DEFAULT_SERVE_PORT})")
    p.add_argument("--policy", metavar="FILE", help=policy_help)
    p.set_defaults(handler=cmd_serve)
