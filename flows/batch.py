"""The batch flow: manifest -> plan -> generation in chunks -> CLIP scoring -> selection -> artifacts."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.delivery import deliver
from flows.fan_out import in_flight
from flows.interrupts import is_interruption
from flows.labels import label_flow_run, run_tags
from tasks.core import interrupts
from tasks.core.files import write_atomic
from tasks.core.interrupts import interruptible
from tasks.core.states import RunStatus
from tasks.stages import delivery, report, runs
from tasks.stages.runs import RunContext, RunSummary
from tasks.storage.run_locks import run_locks

prepare_task = task(interruptible(runs.load_context), name="prepare-run", cache_policy=NO_CACHE)
start_task = task(interruptible(runs.start_run), name="record-plan", cache_policy=NO_CACHE)
generate_task = task(interruptible(runs.generate_chunk), name="generate-chunk", cache_policy=NO_CACHE)
warnings_task = task(interruptible(runs.record_prompt_warnings), name="check-prompt-lengths", cache_policy=NO_CACHE)
score_task = task(interruptible(runs.score_pending), name="clip-score", cache_policy=NO_CACHE)
select_task = task(interruptible(runs.select_top), name="select-top-k", cache_policy=NO_CACHE)
screen_prompts_task = task(interruptible(runs.screen_prompts_stage), name="screen-prompts", cache_policy=NO_CACHE)
screen_images_task = task(interruptible(runs.screen_images_stage), name="screen-images", cache_policy=NO_CACHE)
approve_task = task(interruptible(delivery.approve_by_policy), name="review-by-policy", cache_policy=NO_CACHE)
release_task = task(runs.release_generators, name="release-generators", cache_policy=NO_CACHE)


@task(name="publish-run-artifacts", cache_policy=NO_CACHE)
@interruptible
def publish_artifacts(summary: RunSummary) -> None:
    """Post the ranking table, the contact sheet, the score distribution and the run summary as artifacts."""
    key = "".join(c if c.isalnum() else "-" for c in summary.run_id.lower())
    create_table_artifact(
        key=f"ranking-{key}",
        table=[
            {
                "prompt": b["prompt_id"],
                "variant": b["variant"],
                "rank": b["rank"],
                "clip_score": round(b["clip_score"] or 0.0, 4),
                "seed": b["seed"],
                "state": b["state"],
                "candidate": b["candidate_id"],
            }
            for b in summary.best
        ],
        description=f"Selected candidates of run {summary.run_id}, best first per prompt.",
    )
    sheet = report.contact_sheet(
        [Path(str(b["image_path"])) for b in summary.best],
        [f"{b['prompt_id']} #{b['rank']} {b['clip_score'] or 0:.1f}" for b in summary.best],
    )
    if sheet is not None:
        # Embedded, because the Prefect UI cannot open the worker's files; a copy stays in the run folder.
        write_atomic(Path(summary.run_dir) / "contact-sheet.jpg", sheet)
        create_markdown_artifact(
            key=f"contact-sheet-{key}",
            markdown=f"# Selection of {summary.run_id}\n\n![contact sheet]({report.data_uri(sheet)})\n\n"
            f"Also in `{summary.run_dir}/contact-sheet.jpg`.",
            description="Contact sheet of the selected candidates",
        )
    counts = ", ".join(f"{state}: {n}" for state, n in sorted(summary.counts.items()))
    review = f"ASSETMINT_WORK_DIR={Path(summary.run_dir).parent.parent} assetmint review {summary.run_id}"
    lines = [
        f"# Run {summary.run_id}",
        "",
        f"Status: **{summary.status}**; {counts}.",
        f"Generated in this attempt: {summary.generated_now}.",
        "",
        f"Images: `{summary.image_dir}`",
        f"Run folder: `{summary.run_dir}`",
        f"Ledger: `{summary.ledger_url}`",
        "",
        "## Review",
        f"`{review}` serves the contact sheet to approve or reject candidates.",
    ]
    if summary.status == RunStatus.PENDING_REVIEW:
        lines += [
            f"Selected candidates wait for a reviewer: approve or reject, then finalize from the page or with "
            f"`assetmint finalize {summary.run_id}`.",
        ]
    lines += ["", "## CLIP score distribution", "", "```", report.score_histogram(summary.scores), "```"]
    if summary.blocked_prompts:
        lines += ["", "## Blocked prompts (nothing generated)", *(f"- {p}" for p in summary.blocked_prompts)]
    if summary.flagged_prompts:
        lines += ["", "## Flagged by the image filters", *(f"- {p}" for p in summary.flagged_prompts)]
    if summary.warnings:
        lines += ["", "## Warnings", *(f"- {w}" for w in summary.warnings)]
    create_markdown_artifact(key=f"summary-{key}", markdown="\n".join(lines), description="Run summary")


@flow(name="assetmint-batch", log_prints=False, validate_parameters=False)
def batch_flow(manifest: str, policy: str | None = None) -> RunSummary:
    """Generate, score, select and finalize every candidate a manifest plans; resumes where a run stopped."""
    # Orchestration holds a stop signal back; it raises inside the tasks' work (tasks.core.interrupts).
    with interrupts.deferred():
        return _batch(manifest, policy)


def _batch(manifest: str, policy: str | None) -> RunSummary:
    ctx: RunContext = prepare_task(Path(manifest), Path(policy) if policy else None)
    # The run id is `{campaign}-{digest of the pixel-making content}`: it already names the campaign.
    label_flow_run(ctx.run_id, run_tags(ctx.plan.campaign_id, ctx.policy))
    with run_locks(ctx.ledger_url, ctx.work_dir).hold(ctx.run_id):
        prompt_verdicts = screen_prompts_task(ctx)
        start_task(ctx, prompt_verdicts)
        notices = runs.run_notices(ctx) + runs.blocked_notices(ctx, prompt_verdicts)
        for notice in notices:
            get_run_logger().warning(notice)
        generated = 0
        try:
            warnings = notices + warnings_task(ctx, runs.pending_job_keys(ctx))
            chunks = runs.pending_chunks(ctx)
            total = sum(len(chunk) for chunk in chunks)
            generators: list[dict[str, Any]] = []
            if ctx.policy.execution.engine == "ray":  # chunks in flight at once, one task each
                generated = sum(
                    in_flight(generate_task, [(ctx, c, 0, total) for c in chunks], runs.generation_slots(ctx))
                )
                generators = release_task(ctx)
            else:
                for chunk in chunks:
                    generated += generate_task(ctx, chunk, generated, total)
            score_task(ctx)
            screen_images_task(ctx)
            select_task(ctx)
            approve_task(ctx)
            if ctx.policy.finalize.enabled:
                delivered = deliver(ctx.ledger_url, ctx.run_id, ctx.policy, publish=ctx.policy.publish.auto_publish)
                warnings += delivered.failure_lines()
            warnings += runs.review_notices(ctx)
            pending = bool(runs.review_notices(ctx))
            status = RunStatus.PENDING_REVIEW if pending else RunStatus.COMPLETED
            summary = runs.summarize(ctx, generated, warnings, status, generators)
            publish_artifacts(summary)
        except BaseException as exc:
            with contextlib.suppress(Exception):  # a Ray generator left running would hold its GPU
                runs.release_generators(ctx)
            status = RunStatus.INTERRUPTED if is_interruption(exc) else RunStatus.FAILED
            runs.finish(ctx, runs.summarize(ctx, generated, [f"{type(exc).__name__}: {exc}"], status))
            raise
        runs.finish(ctx, summary)
    return summary
