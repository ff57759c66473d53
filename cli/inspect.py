"""`assetmint verify|audit|serve`: what published images' credentials, watermarks and the ledger say."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cli.console import escape, make_console, optional_path, port_number, stage_bars
from cli.prefect_server import start_prefect

DEFAULT_SERVE_PORT = 8790
VERIFY_HELP = "check files' Content Credentials and watermarks against the ledger"


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify files' Content Credentials and watermarks against the ledger; exit 1 when any file fails."""
    from policies.model import load_policy
    from tasks.inspection.engine import make_inspection_context
    from tasks.inspection.verify import verify_file
    from tasks.storage.ledger import Ledger

    policy = load_policy(optional_path(args.policy))
    ledger_url = policy.ledger_url()
    ledger = Ledger.open(ledger_url)
    context = make_inspection_context(policy, ledger)  # the ledger is indexed once for all files
    reports = [verify_file(Path(name), policy, ledger, context.anchors, context) for name in args.files]
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2, default=str))
    else:
        console = make_console()
        for report in reports:
            _print_verify(console, report)
    return 0 if all(r.ok for r in reports) else 1


def _print_verify(console: Any, report: Any) -> None:
    verdict = "[green]OK[/green]" if report.ok else "[red]FAILED[/red]"
    console.print(f"{verdict} {escape(report.path)}", soft_wrap=True)
    credential = report.credential or {}
    lines = [("format", report.mime), ("sha256", report.sha256)]
    if credential:
        actions = ", ".join(a.get("action", "?") for a in credential.get("actions") or [])
        lines += [
            ("credential", f"{credential.get('trust')} {' '.join(credential.get('status_codes') or [])}".strip()),
            ("trust", credential.get("trust_explanation")),
            ("manifest", credential.get("active_manifest_label")),
            ("signer", credential.get("signer")),
            ("claim generator", credential.get("claim_generator")),
            ("actions", actions),
            ("soft binding", json.dumps(credential.get("soft_binding"))),
            ("generation", json.dumps(credential.get("generation_assertion"))),
        ]
    if report.watermark:
        wm = report.watermark
        lines.append(("watermark", f"{wm['method']} key {wm['key']} payload {wm['payload']} ({wm['attempt']})"))
    if report.ledger:
        lines.append(
            (
                "ledger",
                f"asset {report.ledger['candidate_id']} in run {report.ledger['run_id']}, "
                f"key {report.ledger['asset_key']}, {report.ledger['state']}",
            )
        )
    if report.likeness:
        likeness = report.likeness
        verdict = "the asset's pixels" if likeness["matched"] else "not the asset's pixels"
        shown = likeness.get("note") or f"{likeness['score']} (threshold {likeness['threshold']}): {verdict}"
        lines.append(("likeness", shown))
    for name, value in lines:
        console.print(f"  {name:>15}: {value if value is not None else '-'}", markup=False, soft_wrap=True)
    for problem in report.problems:
        console.print(f"  [red]problem:[/red] {escape(problem)}", soft_wrap=True)


def cmd_audit(args: argparse.Namespace) -> int:
    """Audit published images with a progress display and a closing summary; exit 1 when a published one fails."""
    from flows.audit import audit_flow

    console = make_console()
    start_prefect()
    with stage_bars(console):
        summary = audit_flow(target=args.targets, policy=args.policy, json_lines=args.json_lines, html=args.html)
    _print_audit_summary(console, summary)
    return int(summary["exit_code"])


def _print_audit_summary(console: Any, summary: dict[str, Any]) -> None:
    from rich.table import Table

    from tasks.inspection.audit import VERDICTS

    table = Table(title="Audit verdicts")
    table.add_column("verdict")
    table.add_column("objects", justify="right")
    for verdict in VERDICTS:
        table.add_row(verdict, str(summary["counts"][verdict]))
    console.print(table)
    for name in summary["failures"]:
        console.print(f"[red]failed:[/red] {escape(name)}", soft_wrap=True)
    if summary.get("development_signed"):
        from tasks.provenance.trust import DEVELOPMENT, DEVELOPMENT_BANNER

        console.print(
            f"[yellow]{summary['development_signed']} objects are {escape(DEVELOPMENT)}.[/yellow] "
            f"{escape(DEVELOPMENT_BANNER)}",
            soft_wrap=True,
        )
    console.print(
        f"{summary['objects']} objects audited; {len(summary['failures'])} published or finalized objects failed",
        soft_wrap=True,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the C2PA soft-binding resolution API (read-only, no authentication) until interrupted."""
    import uvicorn

    from policies.model import load_policy
    from tasks.web.bounds import server_options
    from tasks.web.soft_binding_api import create_app

    policy = load_policy(Path(args.policy) if args.policy else None)
    print(f"Soft-binding resolution API on http://{args.host}:{args.port} (read-only; Ctrl-C to stop)")
    uvicorn.run(create_app(policy), host=args.host, port=args.port, log_level="warning", **server_options())
    return 0


def add_inspect_commands(subparsers: Any, common_parent: argparse.ArgumentParser) -> None:
    """Register `assetmint verify`, `audit` and `serve` on the CLI's subparsers."""
    p = subparsers.add_parser("verify", help=VERIFY_HELP, description=VERIFY_HELP, parents=[common_parent])
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--policy", metavar="FILE", help="policy file (default: the packaged default policy)")
    p.set_defaults(handler=cmd_verify)
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
    p.add_argument("--port", type=port_number, default=DEFAULT_SERVE_PORT, help=f"port (default {DEFAULT_SERVE_PORT})")
    p.add_argument("--policy", metavar="FILE", help=policy_help)
    p.set_defaults(handler=cmd_serve)
