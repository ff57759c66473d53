"""`assetmint validate|plan|schema|run|runs|show|replay|finalize|publish`: batches and their ledger records."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cli.console import announce_prefect_start, escape, make_console, optional_path, stage_bars


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate a manifest (and the policy limits it must respect)."""
    from policies.model import load_policy
    from tasks.core.limits import check_plan
    from tasks.core.manifest import load_plan

    plan = load_plan(Path(args.manifest))
    check_plan(plan, load_policy(optional_path(args.policy)))
    print(f"{args.manifest}: valid; {len(plan.jobs)} jobs, {plan.candidate_count} candidates, run id {plan.run_id}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Show the expanded jobs of a manifest without generating anything."""
    from rich.table import Table

    from policies.model import load_policy
    from tasks.core.limits import check_plan
    from tasks.core.manifest import load_plan

    plan = load_plan(Path(args.manifest))
    check_plan(plan, load_policy(optional_path(args.policy)))
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
    console = make_console()
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


def cmd_run(args: argparse.Namespace) -> int:
    """Run the batch flow on a manifest with a live progress display and a closing summary."""
    from tasks.stages.runs import load_context

    console = make_console()
    load_context(Path(args.manifest), optional_path(args.policy))  # fail fast, before Prefect starts, on bad input
    from flows.batch import batch_flow

    announce_prefect_start()
    with stage_bars(console):
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
    console.print(f"Images: {summary.image_dir}", soft_wrap=True)
    if any(best["state"] in ("finalized", "published") for best in summary.best):
        console.print(f"Finalized (watermarked, signed): {summary.run_dir}/final", soft_wrap=True)
    console.print(f"Ledger: {summary.ledger_url}", soft_wrap=True)


def _ledger(policy_path: str | None) -> Any:
    from policies.model import load_policy
    from tasks.storage.ledger import Ledger

    return Ledger.open(load_policy(optional_path(policy_path)).ledger_url())


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
    make_console().print(table)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Show a run (its ranking per prompt) or one candidate (every parameter and its history)."""
    from tasks.core.errors import LedgerError

    ledger = _ledger(args.policy)
    console = make_console()
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

    from tasks.storage.workdir import candidate_store, work_dir_of_run

    console.print(
        f"[bold]{run.run_id}[/bold]  {escape(run.campaign_name)}  status {run.status}, attempts {run.attempts}"
    )
    images = candidate_store(work_dir_of_run(Path(run.run_dir)))
    console.print(f"manifest {run.manifest_path}\nimages {images}", soft_wrap=True)
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
    result = replay_candidate(matches[0], out=optional_path(args.out))
    console = make_console()
    verdict = "[green]MATCH[/green]" if result.matches else "[red]MISMATCH[/red]"
    console.print(f"{result.candidate_id} (run {result.run_id}): {verdict}")
    console.print(f"  recorded pixels sha256 {result.recorded_pixel_sha256} on {result.recorded_device}")
    console.print(f"  replayed pixels sha256 {result.replayed_pixel_sha256} on {result.replay_device}")
    if not result.model_identity_matches:
        console.print("  [yellow]the model's files changed since the candidate was generated[/yellow]")
    if result.output_path:
        console.print(f"  saved to {result.output_path}")
    return 0 if result.matches else 1


def _deliverable(run_id: str, policy_path: str | None) -> Any:
    """The policy a delivery of the run would use; the run's existence and lock checked without starting Prefect."""
    from tasks.stages.delivery import policy_for_run
    from tasks.storage.workdir import refuse_if_locked

    policy, _ledger_url = policy_for_run(run_id, optional_path(policy_path))
    refuse_if_locked(policy.resolved_work_dir(), run_id)
    return policy


def cmd_finalize(args: argparse.Namespace) -> int:
    """Finalize a run's approved candidates (after review) with a progress display."""
    _deliverable(args.run_id, args.policy)
    from flows.delivery import delivery_flow

    console = make_console()
    announce_prefect_start()
    with stage_bars(console, rate=False):
        result = delivery_flow(run_id=args.run_id, policy=args.policy, publish=False)
    console.print(
        f"{result.finalized} finalized assets (published ones included) in run {escape(args.run_id)}", soft_wrap=True
    )
    for reason in result.failed:
        console.print(f"[red]not finalized:[/red] {escape(reason)}", soft_wrap=True)
    return 1 if result.failed else 0


def cmd_publish(args: argparse.Namespace) -> int:
    """Publish a run's finalized assets (create-only) and print where each went."""
    from tasks.stages.delivery import PublishOutcome, target_root

    policy = _deliverable(args.run_id, args.policy)
    from flows.delivery import delivery_flow

    console = make_console()
    console.print(f"target: {escape(target_root(policy))}", soft_wrap=True)
    announce_prefect_start()
    with stage_bars(console, rate=False):
        outcome = delivery_flow(run_id=args.run_id, policy=args.policy, finalize=False).published or PublishOutcome()
    already = 0
    for receipt in outcome.already + outcome.published:
        where = f"s3://{receipt['bucket']}/{receipt['key']}" if receipt["bucket"] else receipt["key"]
        if receipt["already_published"]:  # earlier by this ledger, or found in the store with the same bytes
            already += 1
            console.print(f"already published {escape(where)}", soft_wrap=True)
        else:
            console.print(f"published {escape(where)}", soft_wrap=True)
    for reason in outcome.refused:
        console.print(f"[red]not published:[/red] {escape(reason)}", soft_wrap=True)
    console.print(
        f"{len(outcome.already) + len(outcome.published) - already} published, {already} already published, "
        f"{len(outcome.refused)} not published",
        soft_wrap=True,
    )
    return 1 if outcome.refused else 0
