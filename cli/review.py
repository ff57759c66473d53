"""`assetmint review`: serve the review web app on loopback with a fresh access token. Imports stay light here."""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.console import DEFAULT_STARTUP_TIMEOUT_S, STARTUP_TIMEOUT_SETTING, port_number
from tasks.core.errors import AssetMintError

if TYPE_CHECKING:
    from policies.model import Policy

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def add_review_command(subparsers: Any, common_parent: argparse.ArgumentParser) -> None:
    """Register `assetmint review [RUN_ID] [--host HOST] [--port PORT] [--reviewer NAME] [--policy FILE]`."""
    help_text = "serve the CLIP-ranked contact sheet where a reviewer approves or rejects candidates"
    p = subparsers.add_parser("review", help=help_text, description=help_text, parents=[common_parent])
    p.add_argument("run_id", nargs="?", metavar="RUN_ID", help="review only this run (default: every run)")
    p.add_argument(
        "--host",
        default=None,
        help=f"address to listen on (default {DEFAULT_HOST}; anything else exposes the app beyond this machine)",
    )
    p.add_argument(
        "--port", type=port_number, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any free one)"
    )
    p.add_argument("--reviewer", metavar="NAME", help="name recorded with every decision (default: $USER)")
    p.add_argument("--policy", metavar="FILE", help="policy file (default: the packaged default policy)")
    p.set_defaults(handler=cmd_review)


def default_reviewer() -> str:
    """The reviewer's name when --reviewer is not given: $USER, else 'reviewer'."""
    return (os.environ.get("USER") or "").strip() or "reviewer"


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port; AssetMintError naming the address when that is impossible."""
    if not 0 <= port <= 65535:
        raise AssetMintError(f"--port {port} is not a TCP port; use 1-65535 (or 0 for a free one).")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise AssetMintError(f"cannot listen on {host}:{port}: {exc.strerror or exc}.") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise AssetMintError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; try another --port.") from None
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def review_url(host: str, port: int, token: str, run_id: str | None) -> str:
    """The URL to open: the runs list or one run, with the access token."""
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = DEFAULT_HOST
    path = f"/runs/{run_id}" if run_id else "/"
    return f"http://{shown}:{port}{path}?token={token}"


def start_delivery(run_id: str, ledger_url: str, policy: Policy, attempt: str) -> subprocess.Popen[bytes]:
    """Run the delivery flow for a run in a process of its own (the page's finalize); its output goes to a log file."""
    from prefect.settings import PREFECT_API_URL

    from tasks.core.files import write_atomic
    from tasks.storage.workdir import ensure_writable

    work_dir = policy.resolved_work_dir()
    folder = ensure_writable(work_dir / "delivery")
    # The child signs and publishes exactly as this app would: same policy, same ledger, same work directory.
    pinned = policy.model_copy(
        update={"work_dir": str(work_dir), "ledger": policy.ledger.model_copy(update={"url": ledger_url})}
    )
    policy_file = folder / f"{run_id}.policy.json"
    write_atomic(policy_file, pinned.model_dump_json().encode(), mode=0o600)  # it may hold a database password
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    # Without a server the child starts an ephemeral one, whose 20 s default start-up limit a busy machine can miss.
    env.setdefault(STARTUP_TIMEOUT_SETTING, str(DEFAULT_STARTUP_TIMEOUT_S))
    api_url = PREFECT_API_URL.value()
    if api_url:  # the flow run shows up on the Prefect server this process is configured for
        env["PREFECT_API_URL"] = api_url
    command = [sys.executable, "-m", "flows.delivery", run_id, "--policy", str(policy_file), "--attempt", attempt]
    with (folder / f"{run_id}.log").open("ab") as log:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def cmd_review(args: argparse.Namespace) -> int:
    """Serve the review app until Ctrl-C; prints the URL with a fresh access token."""
    import uvicorn

    from policies.model import Policy, load_policy
    from tasks.core.errors import ReviewError
    from tasks.storage.ledger import Ledger
    from tasks.web.bounds import server_options
    from tasks.web.review.app import create_app

    policy = load_policy(Path(args.policy) if args.policy else None)
    ledger_url = policy.ledger_url()
    if args.run_id:
        run = Ledger.open(ledger_url).run(args.run_id)  # LedgerError names the unknown run
        if not args.policy:
            # Decide overrides, sign and publish under the policy the run was made with, as finalize/publish do.
            policy = Policy.model_validate(run.policy)
    reviewer = (args.reviewer or default_reviewer()).strip()
    if not reviewer:
        raise ReviewError("--reviewer must not be blank.")
    host = args.host or DEFAULT_HOST
    token = secrets.token_urlsafe(32)
    app = create_app(ledger_url, policy, token, reviewer, run_filter=args.run_id, submit_delivery=start_delivery)
    sock = bind(host, args.port)
    port = sock.getsockname()[1]
    if not _is_loopback(host):
        print(
            f"warning: listening on {host}, reachable from other machines over plain HTTP (the token is the only lock)."
        )
    print(f"Reviewing as {reviewer}; ledger {ledger_url}")
    print(f"Open: {review_url(host, port, token, args.run_id)}", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    config = uvicorn.Config(
        app,
        log_level="info" if getattr(args, "verbose", False) else "warning",
        access_log=getattr(args, "verbose", False),
        server_header=False,
        proxy_headers=False,
        **server_options(),
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0
