"""The `assetmint` command line. Imports stay light here: torch loads only in commands that generate or score."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flows.audit import add_audit_commands
from flows.models import add_models_commands
from flows.review import add_review_command
from tasks.core.errors import AssetMintError

EXIT_USAGE = 2


def _quiet_environment(verbose: bool) -> None:
    """Defaults that keep a normal run's output clean; set before Prefect or torch are imported."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_LOGGING_SERVER_LEVEL", "CRITICAL")
        import warnings

        warnings.filterwarnings("ignore")


def escape(text: str) -> str:
    """Escape rich markup in user-provided text (prompts and names may contain square brackets)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


# --- manifest commands ----------------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate a manifest (and the policy limits it must respect)."""
    from policies.model import load_policy
    from tasks.core.limits import check_plan
    from tasks.core.manifest import load_plan

    plan = load_plan(Path(args.manifest))
    check_plan(plan, load_policy(_path(args.policy)))
    print(f"{args.manifest}: valid; {len(plan.jobs)} jobs, {plan.candidate_count} candidates, run id {plan.run_id}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Show the expanded jobs of a manifest without generating anything."""
    from rich.table import Table

    from policies.model import load_policy
    from tasks.core.limits import check_plan
    from tasks.core.manifest import load_plan

    plan = load_plan(Path(args.manifest))
    check_plan(plan, load_policy(_path(args.policy)))
    models = sorted({job.model for job in plan.jobs})
    table = Table(title=escape(f"{plan.campaign_name} ({plan.run_id})"), caption=escape(f"model: {', '.join(models)}"))
    for column in ("#", "id", "prompt", "size", "n", "seeds", "steps", "cfg", "sched", "keep"):
        table.add_column(column, overflow="fold", no_wrap=column != "prompt")
    for index, job in enumerate(plan.jobs, start=1):
        seeds = ", ".join(map(str, job.seeds)) if len(job.seeds) <= 2 else f"{job.seeds[0]}-{job.seeds[-1]}"
        table.add_row(
            str(index),
            job.prompt_id,
            escape(job.prompt),
            f"{job.width}x{job.height}",
            str(len(job.seeds)),
            seeds,
            str(job.steps),
            f"{job.guidance:g}",
            job.scheduler,
            str(job.keep_top_k),
        )
    console = _console()
    console.print(table)
    console.print(f"{len(plan.jobs)} jobs, {plan.candidate_count} candidates; nothing generated.")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema of the manifest or policy format."""
    print(json.dumps(_schema(args.kind), indent=2))
    return 0


def _schema(kind: str) -> dict[str, Any]:
    if kind == "manifest":
        from tasks.core.manifest import manifest_json_schema

        return manifest_json_schema()
    from policies.model import policy_json_schema

    return policy_json_schema()


# --- running ----------------------------------------------------------------------------------------------------


def _rate_column_class() -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Items per second of a stage."""

        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.2f}/s" if speed else "   -/s")

    return RateColumn


class _RichProgress:
    """Progress sink that draws one bar per stage with done/total and rate."""

    def __init__(self, progress: Any) -> None:
        self._progress = progress
        self._tasks: dict[str, Any] = {}

    def update(self, stage: str, done: int, total: int) -> None:
        if stage not in self._tasks:
            self._tasks[stage] = self._progress.add_task(stage, total=total)
        self._progress.update(self._tasks[stage], completed=done, total=total)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the batch flow on a manifest with a live progress display and a closing summary."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tasks.core import progress
    from tasks.stages.runs import load_context

    _RateColumn = _rate_column_class()
    console = _console()
    load_context(Path(args.manifest), _path(args.policy))  # fail fast, before Prefect starts, on bad input
    from flows.batch import batch_flow

    columns = (
        TextColumn("{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bars, progress.progress_sink(_RichProgress(bars)):
        summary = batch_flow(manifest=args.manifest, policy=args.policy)
    _print_summary(console, summary)
    return 0


def _print_summary(console: Any, summary: Any) -> None:
    from rich.table import Table

    counts = ", ".join(f"{n} {state}" for state, n in sorted(summary.counts.items()))
    console.print(
        f"Run [bold]{summary.run_id}[/bold] {summary.status}: {counts}; "
        f"{summary.generated_now} generated in this attempt.",
        soft_wrap=True,
    )
    for warning in summary.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True)
    table = Table(title="Best candidates per prompt")
    for column in ("prompt", "rank", "CLIPScore", "seed", "state", "candidate"):
        table.add_column(column, overflow="fold", no_wrap=column != "prompt")
    for best in summary.best:
        label = f"{best['prompt_id']}: {best['variant']}" if best["variant"] else best["prompt_id"]
        table.add_row(
            escape(label),
            str(best["rank"]),
            f"{best['clip_score']:.4f}",
            str(best["seed"]),
            best["state"],
            best["candidate_id"][:12],  # any unique prefix works with `assetmint show`
        )
    console.print(table)
    console.print(f"Images: {summary.run_dir}/candidates", soft_wrap=True)
    if any(best["state"] == "finalized" for best in summary.best):
        console.print(f"Finalized (watermarked, signed): {summary.run_dir}/final", soft_wrap=True)
    console.print(f"Ledger: {summary.ledger_url}", soft_wrap=True)


# --- ledger views -------------------------------------------------------------------------------------------------


def _ledger(policy_path: str | None) -> Any:
    from policies.model import load_policy
    from tasks.storage.ledger import Ledger

    return Ledger.open(load_policy(_path(policy_path)).ledger_url())


def cmd_runs(args: argparse.Namespace) -> int:
    """List the runs in the ledger."""
    from rich.table import Table

    ledger = _ledger(args.policy)
    table = Table(title="Runs")
    for column in ("run", "campaign", "status", "attempts", "updated", "candidates"):
        table.add_column(column)
    for run in ledger.runs():
        counts = ledger.state_counts(run.run_id)
        table.add_row(
            run.run_id,
            escape(run.campaign_name),
            run.status,
            str(run.attempts),
            run.updated_at.strftime("%Y-%m-%d %H:%M"),
            ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
        )
    _console().print(table)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Show a run (its ranking per prompt) or one candidate (every parameter and its history)."""
    from tasks.core.errors import LedgerError

    ledger = _ledger(args.policy)
    console = _console()
    try:
        run = ledger.run(args.id)
    except LedgerError:
        run = None
    if run is not None:
        _show_run(console, ledger, run)
        return 0
    if len(args.id) < 6:
        raise LedgerError(
            f"no run {args.id!r} in the ledger (asset ids need at least 6 characters); `assetmint runs` lists the runs."
        )
    matches = ledger.find_candidates(args.id)
    if not matches:
        raise LedgerError(f"no run or asset matches {args.id!r}; `assetmint runs` lists the runs.")
    for row in matches:
        _show_candidate(console, ledger, row)
    return 0


def _show_run(console: Any, ledger: Any, run: Any) -> None:
    from rich.table import Table

    console.print(
        f"[bold]{run.run_id}[/bold]  {escape(run.campaign_name)}  status {run.status}, attempts {run.attempts}"
    )
    console.print(f"manifest {run.manifest_path}\nimages {run.run_dir}/candidates", soft_wrap=True)
    rows = ledger.candidates(run.run_id)
    for job in ledger.jobs(run.run_id):
        table = Table(title=escape(f"{job.prompt_id} {job.variant}: {job.prompt}"), title_justify="left")
        for column in ("rank", "CLIPScore", "cosine", "seed", "state", "candidate"):
            table.add_column(column)
        members = sorted((r for r in rows if r.job_key == job.job_key), key=lambda r: (r.rank or 10**9, r.seed))
        for row in members:
            table.add_row(
                str(row.rank or "-"),
                f"{row.clip_score:.4f}" if row.clip_score is not None else "-",
                f"{row.clip_cosine:.4f}" if row.clip_cosine is not None else "-",
                str(row.seed),
                row.state,
                row.candidate_id,
            )
        console.print(table)
        for warning in job.warnings:
            console.print(f"  [yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True)


def _show_candidate(console: Any, ledger: Any, row: Any) -> None:
    fields = {
        "candidate": row.candidate_id,
        "run": row.run_id,
        "state": row.state,
        "prompt": row.prompt,
        "negative prompt": row.negative_prompt,
        "model": row.model_ref,
        "model identity": json.dumps(row.model_identity),
        "pipeline": row.pipeline_kind,
        "size": f"{row.width}x{row.height}",
        "steps": row.steps,
        "guidance": row.guidance,
        "scheduler": row.scheduler,
        "seed": row.seed,
        "image": row.image_path,
        "image sha256": row.image_sha256,
        "pixel sha256": row.pixel_sha256,
        "generation": json.dumps(row.generation),
        "CLIP model": row.clip_model,
        "CLIPScore": row.clip_score,
        "cosine": row.clip_cosine,
        "rank": row.rank,
    }
    for name, value in fields.items():
        console.print(f"{name:>15}: {value if value is not None else '-'}", markup=False, soft_wrap=True)
    console.print(f"{'history':>15}:")
    for entry in ledger.history(row.run_id, row.candidate_id):
        console.print(
            f"{'':>17}{entry.at:%Y-%m-%d %H:%M:%S} {entry.from_state or '-'} -> {entry.to_state} "
            f"{json.dumps(entry.detail) if entry.detail else ''}",
            markup=False,
            soft_wrap=True,
        )


def cmd_replay(args: argparse.Namespace) -> int:
    """Regenerate a candidate from its ledger record and report whether its pixels match."""
    from tasks.core.errors import LedgerError
    from tasks.stages.replay import replay_candidate

    ledger = _ledger(args.policy)
    matches = [r for r in ledger.find_candidates(args.asset_id) if args.run is None or r.run_id == args.run]
    if not matches:
        raise LedgerError(f"no asset matches {args.asset_id!r}.")
    if len({(r.run_id, r.candidate_id) for r in matches}) > 1:
        options = ", ".join(f"{r.candidate_id} (run {r.run_id})" for r in matches)
        raise LedgerError(f"{args.asset_id!r} matches several assets: {options}; give a longer id or --run.")
    result = replay_candidate(matches[0], out=_path(args.out))
    console = _console()
    verdict = "[green]MATCH[/green]" if result.matches else "[red]MISMATCH[/red]"
    console.print(f"{result.candidate_id} (run {result.run_id}): {verdict}")
    console.print(f"  recorded pixels sha256 {result.recorded_pixel_sha256} on {result.recorded_device}")
    console.print(f"  replayed pixels sha256 {result.replayed_pixel_sha256} on {result.replay_device}")
    if not result.model_identity_matches:
        console.print("  [yellow]the model's files changed since the candidate was generated[/yellow]")
    if result.output_path:
        console.print(f"  saved to {result.output_path}")
    return 0 if result.matches else 1


def cmd_finalize(args: argparse.Namespace) -> int:
    """Finalize a run's approved candidates (after review) with a progress display."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from flows.finalize import finalize_flow
    from tasks.core import progress

    console = _console()
    columns = (TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bars, progress.progress_sink(_RichProgress(bars)):
        result = finalize_flow(run_id=args.run_id, policy=args.policy)
    console.print(
        f"{result['finalized']} finalized assets (published ones included) in run {escape(args.run_id)}", soft_wrap=True
    )
    for reason in result["failed"]:
        console.print(f"[red]not finalized:[/red] {escape(reason)}", soft_wrap=True)
    return 1 if result["failed"] else 0


def cmd_publish(args: argparse.Namespace) -> int:
    """Publish a run's finalized assets (create-only) and print where each went."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from flows.publish import publish_flow
    from tasks.core import progress

    console = _console()
    columns = (TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bars, progress.progress_sink(_RichProgress(bars)):
        outcome = publish_flow(run_id=args.run_id, policy=args.policy)
    for receipt in outcome.published:
        where = f"s3://{receipt['bucket']}/{receipt['key']}" if receipt["bucket"] else receipt["key"]
        note = " (already published)" if receipt["already_published"] else ""
        console.print(f"published {escape(where)}{note}", soft_wrap=True)
    for reason in outcome.refused:
        console.print(f"[red]not published:[/red] {escape(reason)}", soft_wrap=True)
    console.print(f"{len(outcome.published)} published, {len(outcome.refused)} not published", soft_wrap=True)
    return 1 if outcome.refused else 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify files' Content Credentials and watermarks against the ledger; exit 1 when any file fails."""
    from policies.model import load_policy
    from tasks.inspection.verify import trust_anchors_for, verify_file
    from tasks.storage.ledger import Ledger

    policy = load_policy(_path(args.policy))
    ledger_url = policy.ledger_url()
    ledger = Ledger.open(ledger_url)
    anchors = trust_anchors_for(policy)
    reports = [verify_file(Path(name), policy, ledger, anchors) for name in args.files]
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2, default=str))
    else:
        console = _console()
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
            ("credential", f"{credential.get('state')} {' '.join(credential.get('status_codes') or [])}"),
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
    for name, value in lines:
        console.print(f"  {name:>15}: {value if value is not None else '-'}", markup=False, soft_wrap=True)
    for problem in report.problems:
        console.print(f"  [red]problem:[/red] {escape(problem)}", soft_wrap=True)


def cmd_safety_eval(args: argparse.Namespace) -> int:
    """Precision, recall, confusion table and threshold sweep of the image filters on a labelled folder."""
    from functools import partial

    from policies.model import load_policy
    from tasks.stages.safety.evaluate import evaluate
    from tasks.stages.score import encode_images, encode_texts, load_scorer

    policy = load_policy(_path(args.policy))
    scorer = load_scorer(policy.scoring.clip_model)
    report = evaluate(
        Path(args.folder),
        Path(args.labels),
        policy.safety,
        partial(encode_images, scorer, batch_size=policy.scoring.batch_size),
        partial(encode_texts, scorer),
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    return 0


def cmd_keys_init(args: argparse.Namespace) -> int:
    """Create development signing keys (untrusted for production) in the user config directory."""
    from tasks.provenance.keys import init_dev_keys

    _print_keys(init_dev_keys(force=args.force, algorithm=args.algorithm), "created")
    return 0


def cmd_keys_show(args: argparse.Namespace) -> int:
    """Show the development signing keys."""
    from tasks.provenance.keys import show_dev_keys

    _print_keys(show_dev_keys(), "found")
    return 0


def _print_keys(keys: Any, verb: str) -> None:
    print(f"{verb} DEVELOPMENT signing keys (untrusted for production) in {keys.directory}")
    for name in ("subject", "algorithm", "not_after", "fingerprint", "chain", "key", "trust_anchor"):
        print(f"  {name:>12}: {getattr(keys, name)}")


# --- plumbing ------------------------------------------------------------------------------------------------------


def port_number(value: str) -> int:
    """argparse type for a TCP port: 0..65535 (0 lets the system pick a free one)."""
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a number, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 0 and 65535, got {port}")
    return port


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="assetmint", description="Provenance-aware batch production of generative marketing images."
    )
    parser.add_argument("--verbose", action="store_true", help="show library logs and full tracebacks")
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
    command("runs", cmd_runs, "list runs in the ledger")
    p = command("show", cmd_show, "show a run's ranking or one asset's full record")
    p.add_argument("id", metavar="RUN_ID|ASSET_ID")
    p = command("replay", cmd_replay, "regenerate an asset from its ledger record and compare pixel digests")
    p.add_argument("asset_id", metavar="ASSET_ID")
    p.add_argument("--run", help="the run, when the asset id exists in several runs")
    p.add_argument("--out", metavar="PNG", help="also save the regenerated image here")
    p = command("finalize", cmd_finalize, "watermark, sign and validate a run's approved candidates")
    p.add_argument("run_id", metavar="RUN_ID")
    p = command("publish", cmd_publish, "publish a run's finalized assets to the policy's target, create-only")
    p.add_argument("run_id", metavar="RUN_ID")
    p = command("verify", cmd_verify, "check files' Content Credentials and watermarks against the ledger")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    safety = sub.add_parser("safety", help="safety filters")
    safety_sub = safety.add_subparsers(dest="safety_command", required=True, metavar="ACTION")
    p = safety_sub.add_parser("eval", help="measure the image filters on a labelled folder", parents=[common])
    p.add_argument("folder", metavar="FOLDER")
    p.add_argument("--labels", required=True, metavar="CSV", help="filename,label rows with label safe or unsafe")
    p.add_argument("--policy", metavar="FILE", help="policy file (default: the packaged default policy)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_safety_eval)
    keys = sub.add_parser("keys", help="development signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    p = keys_sub.add_parser("init", help="create a development CA and signing certificate")
    p.add_argument("--force", action="store_true", help="replace existing keys")
    p.add_argument("--algorithm", choices=["es256", "ps256", "ed25519"], default="es256")
    p.set_defaults(handler=cmd_keys_init)
    p = keys_sub.add_parser("show", help="show the development keys")
    p.set_defaults(handler=cmd_keys_show)
    add_models_commands(sub)
    add_review_command(sub, common)
    add_audit_commands(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run a subcommand; user errors print one paragraph and exit 2, never a traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_environment(args.verbose)
    try:
        return args.handler(args)
    except AssetMintError as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to continue where it stopped.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
