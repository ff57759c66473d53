"""`assetmint validate|plan|schema|run|runs|show|replay|finalize|publish`: batches and their ledger records."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cli.console import escape, make_console, optional_path, stage_bars
from cli.prefect_server import start_prefect
from tasks.core import interrupts


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate a manifest (and the policy limits it must respect)."""
    from policies.model import load_policy
    from tasks.core.limits import check_plan
    from tasks.core.manifest import load_plan

    policy = load_policy(optional_path(args.policy))
    plan = load_plan(Path(args.manifest), policy.generation.max_candidates_per_run)
    check_plan(plan, policy)
    _check_models(plan, policy)
    print(f"{args.manifest}: valid; {len(plan.jobs)} jobs, {plan.candidate_count} candidates, run id {plan.run_id}")
    _print_plan_warnings(plan, policy)
    return 0


def _check_models(plan: Any, policy: Any) -> None:
    """Refuse model references that cannot resolve on this machine, without building or downloading anything."""
    from tasks.stages.embedded import check_embedded, is_embedded
    from tasks.stages.models import check_model_reference

    for ref in sorted({job.model for job in plan.jobs}):
        check_model_reference(ref)
    if is_embedded(policy.scoring.clip_model):
        check_embedded(policy.scoring.clip_model, "clip")


def _print_plan_warnings(plan: Any, policy: Any) -> None:
    from tasks.core.limits import finalize_warnings

    for warning in finalize_warnings(plan, policy):
        print(f"warning: {warning}", file=sys.stderr)


def cmd_plan(args: argparse.Namespace) -> int:
    """Show the expanded jobs of a manifest without generating anything."""
    from rich.table import Table

    from policies.model import load_policy
    from tasks.core.limits import check_plan
    from tasks.core.manifest import load_plan

    policy = load_policy(optional_path(args.policy))
    plan = load_plan(Path(args.manifest), policy.generation.max_candidates_per_run)
    check_plan(plan, policy)
    _check_models(plan, policy)
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
    _print_plan_warnings(plan, policy)
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
    ctx = load_context(Path(args.manifest), optional_path(args.policy))  # fail fast, before Prefect, on bad input
    from flows.batch import batch_flow

    print(
        f"run {ctx.run_id}: {ctx.plan.candidate_count} candidates of {len(ctx.plan.jobs)} jobs; "
        f"models {', '.join(sorted(ctx.models))}, CLIP {ctx.policy.scoring.clip_model}",
        file=sys.stderr,
        flush=True,
    )
    start_prefect()
    with stage_bars(console, eta=True), interrupts.deferred():  # Prefect's engine must not be cut half-way
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
    if summary.status == "pending_review" or summary.counts.get("selected"):
        console.print(
            f"Next: review the selected candidates with `assetmint review {summary.run_id}`",
            markup=False,
            soft_wrap=True,
        )


def _ledger(policy_path: str | None) -> Any:
    """The policy's ledger; refuses (rather than creates) a SQLite ledger that does not exist yet."""
    from policies.model import load_policy
    from tasks.core.errors import LedgerError, MissingLedgerError
    from tasks.storage.ledger import Ledger

    policy = load_policy(optional_path(policy_path))
    url = policy.ledger_url()
    try:
        return Ledger.open(url, create=False)
    except MissingLedgerError as exc:
        raise LedgerError(
            f"there is no ledger at {exc.path} (ledger URL {url}, from the policy's ledger.url and work_dir "
            f"{policy.resolved_work_dir()}); nothing has run here yet. Run this in the folder you ran "
            "`assetmint run` from, set ASSETMINT_WORK_DIR to that work directory, or pass --policy with the "
            "policy that run used."
        ) from None


def _when(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _score(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "-"


def _run_record(ledger: Any, run: Any) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "campaign_id": run.campaign_id,
        "campaign_name": run.campaign_name,
        "status": run.status,
        "attempts": run.attempts,
        "created_at": _when(run.created_at),
        "updated_at": _when(run.updated_at),
        "counts": ledger.state_counts(run.run_id),
    }


def cmd_runs(args: argparse.Namespace) -> int:
    """List the runs in the ledger (as a table, or with --json as a list of run records)."""
    from rich.table import Table

    ledger = _ledger(args.policy)
    runs = ledger.runs()
    if args.json:
        print(json.dumps({"runs": [_run_record(ledger, run) for run in runs]}, indent=2))
        return 0
    table = Table(title="Runs")
    # The run id is what users copy: it never wraps or truncates; the other columns fold instead.
    table.add_column("run", no_wrap=True, min_width=max((len(r.run_id) for r in runs), default=3))
    for column in ("campaign", "status", "attempts", "updated", "candidates"):
        table.add_column(column, overflow="fold")
    for run in runs:
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
    """Show a run (its ranking per prompt) or one candidate in every run that shares it (--json: records)."""
    from tasks.core.errors import LedgerError

    ledger = _ledger(args.policy)
    console = make_console()
    try:
        run = ledger.run(args.id)
    except LedgerError:
        run = None
    if run is not None:
        if args.json:
            print(json.dumps(_run_json(ledger, run), indent=2, default=str))
        else:
            _show_run(console, ledger, run)
        return 0
    if len(args.id) < 6:
        raise LedgerError(
            f"no run {args.id!r} in the ledger (asset ids need at least 6 characters); `assetmint runs` lists the runs."
        )
    matches = ledger.find_candidates(args.id)
    if not matches:
        raise LedgerError(f"no run or asset matches {args.id!r}; `assetmint runs` lists the runs.")
    records = [_candidate_json(ledger, row) for row in matches]
    if args.json:
        print(json.dumps({"kind": "candidates", "candidates": records}, indent=2, default=str))
        return 0
    for index, record in enumerate(records):
        if index:
            console.print()
        _show_candidate(console, record)
    return 0


def _run_json(ledger: Any, run: Any) -> dict[str, Any]:
    rows = ledger.candidates(run.run_id)
    jobs = []
    for job in ledger.jobs(run.run_id):
        members = sorted((r for r in rows if r.job_key == job.job_key), key=lambda r: (r.rank or 10**9, r.seed))
        jobs.append(
            {
                "job_key": job.job_key,
                "prompt_id": job.prompt_id,
                "variant": job.variant,
                "prompt": job.prompt,
                "warnings": list(job.warnings),
                "candidates": [
                    {
                        "candidate_id": r.candidate_id,
                        "rank": r.rank,
                        "clip_score": r.clip_score,
                        "clip_cosine": r.clip_cosine,
                        "seed": r.seed,
                        "state": r.state,
                    }
                    for r in members
                ],
            }
        )
    return {"kind": "run", **_run_record(ledger, run), "manifest": run.manifest_path, "jobs": jobs}


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
        for column in ("rank", "CLIPScore", "cosine", "seed", "state"):
            table.add_column(column, overflow="fold")
        table.add_column("candidate", no_wrap=True)
        members = sorted((r for r in rows if r.job_key == job.job_key), key=lambda r: (r.rank or 10**9, r.seed))
        for row in members:
            table.add_row(
                str(row.rank or "-"),
                _score(row.clip_score),
                _score(row.clip_cosine),
                str(row.seed),
                row.state,
                row.candidate_id,
            )
        console.print(table)
        for warning in job.warnings:
            console.print(f"  [yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True)


def _candidate_json(ledger: Any, row: Any) -> dict[str, Any]:
    """One run's record of a candidate: parameters, score, safety, review, provenance and history."""
    from tasks.provenance.trust import trust_of

    safety = row.safety or {}
    review = row.review or {}
    asset = next((a for a in ledger.assets(row.run_id) if a.candidate_id == row.candidate_id), None)
    provenance = None
    if asset is not None:
        trust = trust_of(asset.validation_state, asset.signer) if asset.final_sha256 else None
        published = asset.published or {}
        provenance = {
            "asset_key": asset.asset_key,
            "watermark_method": asset.watermark_method,
            "watermark_payload": asset.payload_hex,
            "final_path": asset.final_path,
            "sha256": asset.final_sha256,
            "mime": asset.mime,
            "manifest_label": asset.manifest_label,
            "validation_state": asset.validation_state,
            "trust": trust.label if trust else None,
            "signer": asset.signer,
            "published_key": published.get("key"),
            "published_bucket": published.get("bucket"),
        }
    return {
        "candidate_id": row.candidate_id,
        "run_id": row.run_id,
        "state": row.state,
        "prompt": row.prompt,
        "negative_prompt": row.negative_prompt,
        "model": row.model_ref,
        "model_identity": row.model_identity,
        "pipeline": row.pipeline_kind,
        "width": row.width,
        "height": row.height,
        "steps": row.steps,
        "guidance": row.guidance,
        "scheduler": row.scheduler,
        "seed": row.seed,
        "image": row.image_path,
        "image_sha256": row.image_sha256,
        "pixel_sha256": row.pixel_sha256,
        "generation": row.generation,
        "clip_model": row.clip_model,
        "clip_score": row.clip_score,
        "clip_cosine": row.clip_cosine,
        "rank": row.rank,
        "safety": {
            "verdict": "flagged" if safety.get("flagged") else "passed",
            "reasons": list(safety.get("reasons") or []),
            "results": [dict(r) for r in safety.get("results") or []],
        }
        if row.safety
        else None,
        "review": {k: review.get(k) for k in ("decision", "by", "at", "mode", "comment")} if row.review else None,
        "provenance": provenance,
        "history": [
            {"at": _when(e.at), "from": e.from_state, "to": e.to_state, "detail": e.detail}
            for e in ledger.history(row.run_id, row.candidate_id)
        ],
    }


def _show_candidate(console: Any, record: dict[str, Any]) -> None:
    def section(title: str, fields: dict[str, Any]) -> None:
        console.print(f"[bold]{title}[/bold]")
        for name, value in fields.items():
            console.print(f"{name:>17}: {value if value is not None else '-'}", markup=False, soft_wrap=True)

    section(
        f"candidate {record['candidate_id']} in run {record['run_id']}",
        {
            "state": record["state"],
            "prompt": record["prompt"],
            "negative prompt": record["negative_prompt"],
            "model": record["model"],
            "model identity": json.dumps(record["model_identity"]),
            "pipeline": record["pipeline"],
            "size": f"{record['width']}x{record['height']}",
            "steps": record["steps"],
            "guidance": record["guidance"],
            "scheduler": record["scheduler"],
            "seed": record["seed"],
            "image": record["image"],
            "image sha256": record["image_sha256"],
            "pixel sha256": record["pixel_sha256"],
            "generation": json.dumps(record["generation"]),
            "CLIP model": record["clip_model"],
            "CLIPScore": _score(record["clip_score"]),
            "cosine": _score(record["clip_cosine"]),
            "rank": record["rank"],
        },
    )
    safety = record["safety"]
    fields: dict[str, Any] = {"verdict": "not screened"}
    if safety:
        fields = {"verdict": safety["verdict"], "reasons": "; ".join(safety["reasons"]) or None}
        for result in safety["results"]:
            flagged = " flagged" if result.get("flagged") else ""
            fields[f"{result.get('filter')} {result.get('label')}"] = (
                f"{_score(result.get('score'))} (threshold {_score(result.get('threshold'))}){flagged}"
            )
    section("safety", fields)
    review = record["review"]
    section("review", review and {k: review[k] for k in ("decision", "by", "at", "comment")} or {"decision": None})
    provenance = record["provenance"]
    if provenance:
        section(
            "provenance",
            {
                "asset key": provenance["asset_key"],
                "watermark payload": provenance["watermark_payload"],
                "final file": provenance["final_path"],
                "sha256": provenance["sha256"],
                "validation": provenance["trust"],
                "signer": provenance["signer"],
                "published key": provenance["published_key"],
            },
        )
    else:
        section("provenance", {"asset key": None})
    console.print("[bold]history[/bold]")
    for entry in record["history"]:
        console.print(
            f"{'':>19}{entry['at']} {entry['from'] or '-'} -> {entry['to']} "
            f"{json.dumps(entry['detail']) if entry['detail'] else ''}",
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
    from tasks.storage.run_locks import refuse_if_locked, run_locks

    policy, ledger_url = policy_for_run(run_id, optional_path(policy_path))
    refuse_if_locked(run_locks(ledger_url, policy.resolved_work_dir()), run_id)
    return policy


def cmd_finalize(args: argparse.Namespace) -> int:
    """Finalize a run's approved candidates (after review) with a progress display."""
    _deliverable(args.run_id, args.policy)
    from flows.delivery import delivery_flow

    console = make_console()
    start_prefect()
    with stage_bars(console, rate=False), interrupts.deferred():  # Prefect's engine must not be cut half-way
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
    from tasks.storage.publish import open_target

    open_target(policy.publish, policy.resolved_work_dir()).probe()  # unreachable or unwritable: fail before Prefect
    from flows.delivery import delivery_flow

    console = make_console()
    console.print(f"target: {escape(target_root(policy))}", soft_wrap=True)
    start_prefect()
    with stage_bars(console, rate=False), interrupts.deferred():  # Prefect's engine must not be cut half-way
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
