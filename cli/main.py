"""The `assetmint` command line. Imports stay light here: torch loads only in commands that generate or score."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from cli.admin import cmd_keys_init, cmd_keys_rotate_watermark_secret, cmd_keys_show, cmd_safety_eval
from cli.console import STARTUP_TIMEOUT_SETTING, quiet_environment
from cli.inspect import add_inspect_commands
from cli.models import add_models_commands
from cli.review import add_review_command
from cli.runs import (
    cmd_finalize,
    cmd_plan,
    cmd_publish,
    cmd_replay,
    cmd_run,
    cmd_runs,
    cmd_schema,
    cmd_show,
    cmd_validate,
)
from tasks.core import interrupts
from tasks.core.errors import AssetMintError, OrchestrationUnavailableError
from tasks.core.interrupts import INTERRUPTED_LINE, Interrupted

# The RuntimeError messages Prefect 3 raises when its API cannot be reached (prefect.server.api.server and
# prefect.client.orchestration); only these are turned into a paragraph, any other RuntimeError keeps its traceback.
_EPHEMERAL_TIMEOUT = "Timed out while attempting to connect to ephemeral Prefect API server."
_UNREACHABLE = "Failed to reach API at "


def package_version() -> str:
    """The installed package's version, else the one pyproject.toml beside the sources declares."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("assetmint")
    except PackageNotFoundError:
        import tomllib

        try:
            with (Path(__file__).resolve().parents[1] / "pyproject.toml").open("rb") as handle:
                return str(tomllib.load(handle)["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="assetmint", description="Provenance-aware batch production of generative marketing images."
    )
    parser.add_argument("--verbose", action="store_true", help="show library logs and full tracebacks")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--verbose", action="store_true", default=argparse.SUPPRESS, help="show library logs and full tracebacks"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], help_text: str, policy: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        p.set_defaults(handler=handler)
        if policy:
            p.add_argument("--policy", metavar="FILE", help="policy file (default: the packaged default policy)")
        return p

    p = command("run", cmd_run, "generate, CLIP-score, select and finalize every candidate of a manifest")
    p.add_argument("manifest", metavar="MANIFEST")
    p = command("validate", cmd_validate, "check a manifest against its schema and the policy limits")
    p.add_argument("manifest", metavar="FILE")
    p = command("plan", cmd_plan, "show the jobs a manifest expands to, generating nothing")
    p.add_argument("manifest", metavar="FILE")
    p = command("schema", cmd_schema, "print the JSON Schema of the manifest or policy format", policy=False)
    p.add_argument("kind", choices=["manifest", "policy"])
    p = command("runs", cmd_runs, "list runs in the ledger")
    p.add_argument("--json", action="store_true", help="machine-readable output (fields in README.md, Commands)")
    p = command("show", cmd_show, "show a run's ranking or one asset's full record")
    p.add_argument("id", metavar="RUN_ID|ASSET_ID")
    p.add_argument("--json", action="store_true", help="machine-readable output (fields in README.md, Commands)")
    p = command("replay", cmd_replay, "regenerate an asset from its ledger record and compare pixel digests")
    p.add_argument("asset_id", metavar="ASSET_ID")
    p.add_argument("--run", help="the run, when the asset id exists in several runs")
    p.add_argument("--out", metavar="PNG", help="also save the regenerated image here")
    p = command("finalize", cmd_finalize, "watermark, sign and validate a run's approved candidates")
    p.add_argument("run_id", metavar="RUN_ID")
    p = command("publish", cmd_publish, "publish a run's finalized assets to the policy's target, create-only")
    p.add_argument("run_id", metavar="RUN_ID")
    safety = sub.add_parser("safety", help="safety filters")
    safety_sub = safety.add_subparsers(dest="safety_command", required=True, metavar="ACTION")
    p = safety_sub.add_parser("eval", help="measure the image filters on a labelled folder", parents=[common])
    p.add_argument("folder", metavar="FOLDER")
    p.add_argument("--labels", required=True, metavar="CSV", help="filename,label rows with label safe or unsafe")
    p.add_argument("--policy", metavar="FILE", help="policy file (default: the packaged default policy)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_safety_eval)
    keys = sub.add_parser("keys", help="development signing keys and watermark secret")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    p = keys_sub.add_parser("init", help="create a development CA and signing certificate")
    p.add_argument("--force", action="store_true", help="replace existing keys")
    p.add_argument("--algorithm", choices=["es256", "ps256", "ed25519"], default="es256")
    p.set_defaults(handler=cmd_keys_init)
    p = keys_sub.add_parser("show", help="show the development keys and watermark secret fingerprints")
    p.set_defaults(handler=cmd_keys_show)
    p = keys_sub.add_parser(
        "rotate-watermark-secret", help="make a new development watermark secret current, keep the old to decode"
    )
    p.set_defaults(handler=cmd_keys_rotate_watermark_secret)
    add_models_commands(sub)
    add_review_command(sub, common)
    add_inspect_commands(sub, common)
    return parser


def orchestration_error(exc: BaseException) -> OrchestrationUnavailableError | None:
    """The user-facing error for Prefect's 'API not reachable' failures, or None for any other exception."""
    if not isinstance(exc, RuntimeError):
        return None
    message = str(exc)
    if message.startswith(_EPHEMERAL_TIMEOUT):
        timeout = os.environ.get(STARTUP_TIMEOUT_SETTING, "?")
        exited = re.search(r"exited with code (-?\d+)", message)
        server = (
            "start a server once with `prefect server start` and point PREFECT_API_URL at it "
            "(e.g. PREFECT_API_URL=http://127.0.0.1:4200/api); then rerun the same command."
        )
        if exited:
            return OrchestrationUnavailableError(
                f"Prefect's temporary API server exited with code {exited.group(1)} before it was ready (its own "
                f"output, if any, is above). Fix what it reports, or {server}"
            )
        return OrchestrationUnavailableError(
            f"Prefect's temporary API server did not start within {timeout} s (this machine may be busy). "
            f"Raise the wait with the environment variable {STARTUP_TIMEOUT_SETTING} (seconds), or {server}"
        )
    if message.startswith(_UNREACHABLE):
        url = message[len(_UNREACHABLE) :].rstrip(".")
        return OrchestrationUnavailableError(
            f"cannot reach the Prefect API at {url} (PREFECT_API_URL). Start the server there "
            "(`prefect server start`), correct PREFECT_API_URL, or unset it to let AssetMint start a temporary "
            "server of its own; then rerun the same command."
        )
    return None


def interrupt_exit_code(exc: BaseException) -> int | None:
    """128 + the stop signal when `exc` ends a command that Ctrl-C or SIGTERM interrupted, else None."""
    if isinstance(exc, Interrupted):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return 128 + signal.SIGINT
    prefect_exceptions = sys.modules.get("prefect.exceptions")  # loaded by then if Prefect raised it
    if prefect_exceptions is not None and isinstance(exc, prefect_exceptions.TerminationSignal):
        return 128 + exc.signal
    signum = interrupts.received()  # anything else that surfaced while the command was unwinding from a signal
    return None if signum is None else 128 + signum


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run a subcommand; user errors print one paragraph and exit 2, never a traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_environment(args.verbose)
    with interrupts.stop_signals_raise():
        try:
            return _run_command(args)
        except BaseException as exc:
            code = interrupt_exit_code(exc)
            if code is None:
                raise
            print(INTERRUPTED_LINE, file=sys.stderr)
            return code


def _run_command(args: argparse.Namespace) -> int:
    """Run the parsed subcommand; our errors and Prefect's 'API not reachable' become one paragraph."""
    try:
        code = args.handler(args)
        sys.stdout.flush()  # inside the try: a closed pipe surfaces here, not in the interpreter's final flush
        return code
    except AssetMintError as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except RuntimeError as exc:
        error = orchestration_error(exc)
        if error is None:
            raise
        if args.verbose:
            raise error from exc
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:
        # The reader went away (`assetmint schema manifest | head`): stop quietly, as `cat` does. Point stdout at
        # devnull so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
