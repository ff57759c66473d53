"""The batch stages as plain functions: prepare a run, generate a chunk, score, select, summarise.

Prefect's flow (flows/batch.py) only puts these in order; they are usable and testable without Prefect.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from policies.model import Policy, load_policy
from tasks import progress
from tasks.errors import LedgerError
from tasks.generate import (
    CandidateSpec,
    RuntimeChoice,
    choose_runtime,
    generate_candidates,
    load_pipeline,
    pipeline_kind,
    prompt_token_overflow,
)
from tasks.identity import candidate_id
from tasks.ledger import CandidateScore, Ledger, PlannedCandidate
from tasks.limits import check_plan
from tasks.manifest import Plan, load_plan
from tasks.models import ModelSource, resolve_model
from tasks.score import clip_score, cosine_rows, encode_images, encode_texts, load_scorer, resolve_clip, token_overflow
from tasks.select import rank_and_select
from tasks.states import CandidateState, RunStatus
from tasks.workdir import ensure_writable


@dataclass(frozen=True)
class RunContext:
    """What every stage of one run needs to know."""

    run_id: str
    plan: Plan
    policy: Policy
    manifest_sha256: str
    work_dir: Path
    run_dir: Path
    ledger_url: str
    models: dict[str, ModelSource] = field(default_factory=dict)

    @property
    def image_dir(self) -> Path:
        """Where candidate images are written."""
        return self.run_dir / "candidates"


@dataclass(frozen=True)
class RunSummary:
    """What a run produced, for the CLI and the Prefect artifacts."""

    run_id: str
    status: str
    counts: dict[str, int]
    generated_now: int
    best: list[dict[str, Any]]
    run_dir: str
    ledger_url: str
    warnings: list[str]


@cache
def ledger_for(url: str) -> Ledger:
    """One Ledger (engine and connection pool) per database URL per process."""
    return Ledger.open(url)


def load_context(manifest_path: Path, policy_path: Path | None) -> RunContext:
    """Load and check manifest and policy and resolve models, touching nothing on disk but the work dir check."""
    policy = load_policy(policy_path)
    plan = load_plan(manifest_path)
    check_plan(plan, policy)
    work_dir = ensure_writable(policy.resolved_work_dir())
    if policy.finalize.enabled:
        check_signer(policy)
    models = {ref: resolve_model(ref) for ref in sorted({job.model for job in plan.jobs})}
    resolve_clip(policy.scoring.clip_model)
    return RunContext(
        run_id=plan.run_id,
        plan=plan,
        policy=policy,
        manifest_sha256=hashlib.sha256(manifest_path.read_bytes()).hexdigest(),
        work_dir=work_dir,
        run_dir=work_dir / "runs" / plan.run_id,
        ledger_url=policy.ledger_url(),
        models=models,
    )


def check_signer(policy: Policy) -> None:
    """Load the configured signer once, so a bad certificate or key fails before anything is generated."""
    from tasks.provenance import load_signer

    with load_signer(policy.signing):
        pass


def planned_candidates(ctx: RunContext, blocked: frozenset[str] = frozenset()) -> list[PlannedCandidate]:
    """Every candidate of the plan with its deterministic id, except those of jobs whose prompt was blocked."""
    planned: list[PlannedCandidate] = []
    for job in ctx.plan.jobs:
        if job.job_key in blocked:
            continue
        source = ctx.models[job.model]
        kind = pipeline_kind(source)
        for seed in job.seeds:
            params = dict(
                prompt=job.prompt,
                negative_prompt=job.negative_prompt,
                width=job.width,
                height=job.height,
                steps=job.steps,
                guidance=job.guidance,
                scheduler=job.scheduler,
                seed=seed,
            )
            planned.append(
                PlannedCandidate(
                    candidate_id=candidate_id(model_identity=source.identity, pipeline_kind=kind, **params),
                    job_key=job.job_key,
                    model_ref=job.model,
                    model_identity=source.identity,
                    pipeline_kind=kind,
                    **params,
                )
            )
    return planned


def screen_prompts_stage(ctx: RunContext) -> dict[str, dict[str, Any]]:
    """Screen every job's prompt before anything is generated; returns verdicts by job key."""
    from tasks.safety.prompts import screen_prompts

    if not ctx.policy.safety.prompts.enabled:
        return {}
    verdicts = screen_prompts([job.prompt for job in ctx.plan.jobs], ctx.policy.safety.prompts)
    return {job.job_key: asdict(verdict) for job, verdict in zip(ctx.plan.jobs, verdicts, strict=True)}


def blocked_notices(ctx: RunContext, prompt_verdicts: dict[str, dict[str, Any]]) -> list[str]:
    """One line per blocked prompt: which prompt, which rule, why."""
    jobs = {job.job_key: job for job in ctx.plan.jobs}
    return [
        f"prompt {_job_label(jobs[key])} blocked, nothing generated: {verdict['reason']}"
        for key, verdict in prompt_verdicts.items()
        if verdict["blocked"]
    ]


def _job_label(job: Any) -> str:
    return f"{job.prompt_id} [{job.variant}]" if job.variant else job.prompt_id


def blocked_job_keys(ledger: Ledger, run_id: str) -> frozenset[str]:
    """Jobs whose prompt the latest screening blocked: none of their candidates is generated, selected or signed."""
    return frozenset(job.job_key for job in ledger.jobs(run_id) if (job.screening or {}).get("blocked"))


def blocked_jobs(prompt_verdicts: dict[str, dict[str, Any]]) -> frozenset[str]:
    """Job keys whose prompt screening blocked them."""
    return frozenset(key for key, verdict in prompt_verdicts.items() if verdict["blocked"])


def start_run(ctx: RunContext, prompt_verdicts: dict[str, dict[str, Any]] | None = None) -> bool:
    """Record the run, its plan and prompt verdicts in the ledger (idempotent); True when resuming."""
    ledger = ledger_for(ctx.ledger_url)
    prompt_verdicts = prompt_verdicts or {}
    candidates = planned_candidates(ctx, blocked_jobs(prompt_verdicts))
    seen: dict[str, PlannedCandidate] = {}
    for planned in candidates:
        if planned.candidate_id in seen:
            raise LedgerError(
                f"two candidates of {ctx.plan.source} are identical (seed {planned.seed} of "
                f"{planned.prompt!r}); give them different seeds."
            )
        seen[planned.candidate_id] = planned
    jobs = [
        {
            k: v
            for k, v in job.to_dict().items()
            if k in {"job_key", "prompt_id", "variant", "prompt", "variables", "keep_top_k", "output_format"}
        }
        for job in ctx.plan.jobs
    ]
    ctx.image_dir.mkdir(parents=True, exist_ok=True)
    resumed = ledger.start_run(
        run_id=ctx.run_id,
        campaign_id=ctx.plan.campaign_id,
        campaign_name=ctx.plan.campaign_name,
        manifest_path=str(ctx.plan.source.resolve()),
        manifest_sha256=ctx.manifest_sha256,
        policy=ctx.policy.model_dump(mode="json"),
        run_dir=str(ctx.run_dir),
        jobs=jobs,
        candidates=candidates,
    )
    for job in ctx.plan.jobs:  # this attempt's verdicts replace earlier ones (None: screening off)
        ledger.record_job_screening(ctx.run_id, job.job_key, prompt_verdicts.get(job.job_key))
    return resumed


def pending_chunks(ctx: RunContext) -> list[list[CandidateSpec]]:
    """Candidates still to generate, in chunks of the policy's chunk size (job order kept, so batches fill)."""
    ledger = ledger_for(ctx.ledger_url)
    blocked = blocked_job_keys(ledger, ctx.run_id)
    rows = [
        r
        for r in ledger.candidates(ctx.run_id, [CandidateState.PLANNED, CandidateState.FAILED])
        if r.job_key not in blocked
    ]
    order = {job.job_key: i for i, job in enumerate(ctx.plan.jobs)}
    rows.sort(key=lambda r: (order.get(r.job_key, len(order)), r.seed))
    specs = [CandidateSpec.from_record(r) for r in rows]
    size = ctx.policy.generation.chunk_size
    return [specs[i : i + size] for i in range(0, len(specs), size)]


def _runtime(ctx: RunContext) -> RuntimeChoice:
    generation = ctx.policy.generation
    return choose_runtime(generation.device, generation.dtype, generation.batch_invariant)


def generate_chunk(ctx: RunContext, specs: Sequence[CandidateSpec], done_before: int, total: int) -> int:
    """Generate one chunk and record it in one transaction; returns how many candidates it produced."""
    ledger = ledger_for(ctx.ledger_url)
    runtime = _runtime(ctx)
    by_model: dict[str, list[CandidateSpec]] = {}
    for spec in specs:
        by_model.setdefault(spec.model_ref, []).append(spec)
    produced = 0
    for ref, group in by_model.items():
        loaded = load_pipeline(ctx.models[ref], runtime)
        done = done_before + produced

        def advance(count: int) -> None:
            nonlocal done
            done += count
            progress.report("generate", done, total)

        images = generate_candidates(loaded, group, ctx.image_dir, ctx.policy.generation.batch_size, advance)
        ledger.record_generated(ctx.run_id, images)
        produced += len(images)
    return produced


def record_prompt_warnings(ctx: RunContext) -> list[str]:
    """Record, per job, prompts the text encoders will truncate; returns the warnings."""
    ledger = ledger_for(ctx.ledger_url)
    runtime = _runtime(ctx)
    scorer = load_scorer(ctx.policy.scoring.clip_model, runtime.device)
    warnings: list[str] = []
    for job in ctx.plan.jobs:
        dropped = token_overflow(scorer, job.prompt)
        loaded = load_pipeline(ctx.models[job.model], runtime)
        dropped_gen = prompt_token_overflow(loaded, job.prompt)
        for who, count in (("CLIP scorer", dropped), ("generator text encoder", dropped_gen)):
            if count:
                message = f"prompt {_job_label(job)} is {count} tokens too long for the {who}; the end is ignored"
                ledger.add_job_warning(ctx.run_id, job.job_key, message)
                warnings.append(message)
    return warnings


def score_pending(ctx: RunContext) -> int:
    """CLIP-score every generated, unscored candidate; embeddings are stored for later stages."""
    ledger = ledger_for(ctx.ledger_url)
    scoring = ctx.policy.scoring
    runtime = _runtime(ctx)
    scorer = load_scorer(scoring.clip_model, runtime.device)
    rows = ledger.candidates(ctx.run_id, [CandidateState.GENERATED])
    by_prompt: dict[str, list[Any]] = {}
    for row in rows:
        by_prompt.setdefault(row.prompt, []).append(row)
    texts = list(by_prompt)
    text_vectors = dict(zip(texts, encode_texts(scorer, texts), strict=True)) if texts else {}
    done = 0
    for prompt, group in by_prompt.items():
        for start in range(0, len(group), scoring.batch_size):
            batch = group[start : start + scoring.batch_size]
            vectors = encode_images(scorer, [Path(r.image_path) for r in batch], scoring.batch_size)
            cosines = cosine_rows(vectors, text_vectors[prompt])
            ledger.record_scores(
                ctx.run_id,
                [
                    CandidateScore(
                        candidate_id=row.candidate_id,
                        clip_model=scoring.clip_model,
                        clip_score=clip_score(cos),
                        clip_cosine=float(cos),
                        embedding=vector.astype(np.float32).tobytes(),
                        dim=int(vector.shape[0]),
                    )
                    for row, vector, cos in zip(batch, vectors, cosines, strict=True)
                ],
            )
            done += len(batch)
            progress.report("score", done, len(rows))
    return done


def screen_images_stage(ctx: RunContext) -> int:
    """Screen every scored candidate with the policy's image filters, reusing the scorer's image embeddings."""
    from tasks.safety.images import screen_images

    ledger = ledger_for(ctx.ledger_url)
    rows = ledger.candidates(ctx.run_id, [CandidateState.SCORED])
    if not rows:
        return 0
    scoring = ctx.policy.scoring
    scorer = load_scorer(scoring.clip_model, _runtime(ctx).device)
    stored = ledger.embeddings(ctx.run_id, scoring.clip_model)
    done = 0
    for start in range(0, len(rows), scoring.batch_size):
        batch = rows[start : start + scoring.batch_size]
        embeddings = np.stack([np.frombuffer(stored[r.candidate_id], dtype=np.float32) for r in batch])
        verdicts = screen_images(
            [Path(str(r.image_path)) for r in batch],
            embeddings,
            lambda texts: encode_texts(scorer, texts),
            ctx.policy.safety,
        )
        ledger.record_screening(
            ctx.run_id,
            {
                row.candidate_id: {**asdict(verdict), "screened_at": ledger.clock.now().isoformat()}
                for row, verdict in zip(batch, verdicts, strict=True)
            },
        )
        done += len(batch)
        progress.report("screen", done, len(rows))
    return done


def select_top(ctx: RunContext) -> int:
    """Rank each job's scored candidates and select the top k above the policy minimum; returns selected count."""
    ledger = ledger_for(ctx.ledger_url)
    # Approved and later candidates keep their place and their slot: their rank may already be signed.
    decided = {
        CandidateState.APPROVED,
        CandidateState.FINALIZED,
        CandidateState.FINALIZE_FAILED,
        CandidateState.PUBLISHED,
    }
    flagged = CandidateState.SCREENED_FLAGGED
    rankable = [
        CandidateState.SCREENED_PASSED,
        flagged,
        CandidateState.SELECTED,
        CandidateState.NOT_SELECTED,
        *decided,
    ]
    rows = ledger.candidates(ctx.run_id, rankable)
    cap = ctx.policy.scoring.top_k
    blocked = blocked_job_keys(ledger, ctx.run_id)
    selected = 0
    for job in ctx.plan.jobs:
        if job.job_key in blocked:
            continue
        scores = [(r.candidate_id, float(r.clip_score or 0.0)) for r in rows if r.job_key == job.job_key]
        if not scores:
            continue
        keep = min(job.keep_top_k, cap) if cap else job.keep_top_k
        locked = frozenset(r.candidate_id for r in rows if r.job_key == job.job_key and r.state in decided)
        ineligible = frozenset(r.candidate_id for r in rows if r.job_key == job.job_key and r.state == flagged)
        selection = rank_and_select(scores, keep, ctx.policy.scoring.min_score, locked, ineligible)
        ledger.record_selection(ctx.run_id, selection.ranks, selection.selected, selection.reasons)
        selected += len(selection.selected)
    return selected


def review_notices(ctx: RunContext) -> list[str]:
    """In manual review mode, say how many selected candidates wait for a reviewer."""
    if ctx.policy.review.mode != "manual":
        return []
    waiting = len(ledger_for(ctx.ledger_url).candidates(ctx.run_id, [CandidateState.SELECTED]))
    return [f"{waiting} selected candidates are pending review (policy review.mode: manual)"] if waiting else []


def summarize(ctx: RunContext, generated_now: int, warnings: Sequence[str], status: RunStatus) -> RunSummary:
    """Per-prompt best candidates and state counts of the run."""
    ledger = ledger_for(ctx.ledger_url)
    best: list[dict[str, Any]] = []
    chosen = [
        CandidateState.SELECTED,
        CandidateState.APPROVED,
        CandidateState.FINALIZED,
        CandidateState.FINALIZE_FAILED,
    ]
    for row in ledger.candidates(ctx.run_id, chosen):
        job = next(j for j in ctx.plan.jobs if j.job_key == row.job_key)
        best.append(
            {
                "prompt_id": job.prompt_id,
                "variant": job.variant,
                "prompt": row.prompt,
                "rank": row.rank,
                "clip_score": row.clip_score,
                "candidate_id": row.candidate_id,
                "seed": row.seed,
                "image_path": row.image_path,
                "state": row.state,
                "job_position": ctx.plan.jobs.index(job),
            }
        )
    best.sort(key=lambda b: (b["job_position"], b["rank"]))
    return RunSummary(
        run_id=ctx.run_id,
        status=status.value,
        counts=ledger.state_counts(ctx.run_id),
        generated_now=generated_now,
        best=best,
        run_dir=str(ctx.run_dir),
        ledger_url=ctx.ledger_url,
        warnings=list(warnings),
    )


def finish(ctx: RunContext, summary: RunSummary) -> None:
    """Record the run attempt's end with its counts."""
    ledger_for(ctx.ledger_url).finish_run(
        ctx.run_id,
        RunStatus(summary.status),
        {"counts": summary.counts, "generated_now": summary.generated_now, "warnings": summary.warnings},
    )


def finalize_selected(ctx: RunContext) -> list[str]:
    """Finalize the run's approved candidates (the batch flow's stage); returns failure reasons."""
    return finalize_approved(ctx.ledger_url, ctx.run_id, ctx.policy)


def approve_by_policy(ctx: RunContext) -> int:
    """In auto review mode, approve what selection chose; in manual mode approve nothing (a reviewer decides)."""
    if ctx.policy.review.mode != "auto":
        return 0
    rule = f"auto review: top-k above min_score {ctx.policy.scoring.min_score} among candidates that passed screening"
    return ledger_for(ctx.ledger_url).auto_approve(ctx.run_id, rule)


def finalize_approved(ledger_url: str, run_id: str, policy: Policy) -> list[str]:
    """Watermark, encode, sign and validate every approved candidate not yet finalized; returns failure reasons."""
    from tasks import keys
    from tasks.finalize import EXTENSION_BY_FORMAT, FinalizeJob, finalize_many
    from tasks.watermark import max_key

    ledger = ledger_for(ledger_url)
    run = ledger.run(run_id)
    rows = ledger.candidates(run_id, [CandidateState.APPROVED, CandidateState.FINALIZE_FAILED])
    blocked = blocked_job_keys(ledger, run_id)
    rows = [
        r
        for r in rows
        if (r.review or {}).get("decision") == "approved"
        and r.job_key not in blocked
        # A flagged candidate is signed only with a recorded override (Ledger.decide enforces how one is made).
        and (not (r.safety or {}).get("flagged") or (r.review or {}).get("override"))
    ]
    if not rows:
        return []
    unscreened = [r.candidate_id for r in rows if not r.safety]
    if unscreened:  # the state machine already prevents this; a record without a verdict is never signed
        raise LedgerError(f"candidates {', '.join(unscreened)} have no safety verdict; refusing to finalize them")
    dev_keys_dir: str | None = None
    if policy.signing.uses_development_keys:
        dev, _ = keys.ensure_dev_keys(algorithm=policy.signing.algorithm)
        dev_keys_dir = str(dev.directory)
    asset_keys = ledger.assign_asset_keys(run_id, [r.candidate_id for r in rows], max_key(policy.watermark.method))
    jobs_by_key = {job.job_key: job for job in ledger.jobs(run_id)}
    work: list[FinalizeJob] = []
    for row in rows:
        job = jobs_by_key[row.job_key]
        generation = {
            "campaign": {"id": run.campaign_id, "name": run.campaign_name},
            "run_id": run_id,
            "prompt_id": job.prompt_id,
            "variant": job.variant,
            **pixel_inputs(row),
            # Rounded: c2pa stores a float that fits float32 exactly as float32, and float32-born scores do.
            "clip": {
                "model": row.clip_model,
                "score": round(row.clip_score or 0.0, 6),
                "cosine": round(row.clip_cosine or 0.0, 6),
                "rank": row.rank,
            },
            "safety": _safety_summary(row.safety),
            "review": {k: v for k, v in (row.review or {}).items() if v not in (None, "")},
        }
        work.append(
            FinalizeJob(
                run_id=run_id,
                candidate_id=row.candidate_id,
                asset_key=asset_keys[row.candidate_id],
                image_path=str(row.image_path),
                output_format=job.output_format,
                final_path=str(
                    Path(run.run_dir) / "final" / f"{row.candidate_id}.{EXTENSION_BY_FORMAT[job.output_format]}"
                ),
                prompt=row.prompt,
                negative_prompt=row.negative_prompt,
                model_name=row.model_ref,
                title=f"{run.campaign_name}: {job.prompt_id} {job.variant}".strip(),
                generation=generation,
                watermark=policy.watermark,
                signing=policy.signing,
                finalize=policy.finalize,
                dev_keys_dir=dev_keys_dir,
            )
        )
    done: list[Any] = []
    failures: list[str] = []

    def record(outcome: Any) -> None:
        # One transaction per asset as it completes: an interrupted stage keeps what it finished.
        ledger.record_finalized(run_id, [outcome])
        done.append(outcome)
        if not outcome.ok:
            failures.append(f"{outcome.candidate_id}: {outcome.reason}")
        progress.report("finalize", len(done), len(work))

    finalize_many(work, policy.finalize.workers, record)
    return failures


def pixel_inputs(row: Any) -> dict[str, Any]:
    """What made a candidate's pixels (but the prompt), for its Content Credential and its provenance sidecar."""
    return {
        "model": {"ref": row.model_ref, **row.model_identity, "pipeline": row.pipeline_kind},
        "seed": row.seed,
        "steps": row.steps,
        "guidance": row.guidance,
        "scheduler": row.scheduler,
        "size": {"width": row.width, "height": row.height},
        "pixel_sha256": row.pixel_sha256,
    }


def _safety_summary(verdict: dict[str, Any] | None) -> dict[str, Any]:
    """The safety part of the generation assertion: which filters ran, their scores, and the verdict."""
    if not verdict:
        return {"screened": False}
    return {
        "screened": True,
        "verdict": "flagged" if verdict["flagged"] else "passed",
        "filters_run": list(verdict["filters_run"]),
        "filters_off": list(verdict["filters_off"]),
        "scores": {f"{r['filter']}:{r['label']}": round(float(r["score"]), 6) for r in verdict["results"]},
    }


def run_notices(ctx: RunContext) -> list[str]:
    """Loud notices about provenance turned off or weakened by the policy; recorded with the run."""
    notices: list[str] = []
    if not ctx.policy.finalize.enabled:
        notices.append("finalize is OFF in the policy: selected candidates are not watermarked or signed")
    if not ctx.policy.watermark.enabled:
        notices.append("invisible watermarking is OFF in the policy: finalized assets carry no watermark")
    for name in ctx.policy.safety.disabled_filters():
        notices.append(f"safety filter {name} is OFF in the policy; recorded with every candidate")
    if ctx.policy.signing.uses_development_keys:
        notices.append("signing with DEVELOPMENT keys (untrusted for production); see `assetmint keys show`")
    return notices


def _policy_tag(policy: Policy) -> str:
    """A short, stable name for the policy that governed an asset (for object tags)."""
    digest = hashlib.sha256(policy.model_dump_json().encode()).hexdigest()
    return f"policy-{digest[:12]}"


def publish_finalized(ledger_url: str, run_id: str, policy: Policy) -> PublishOutcome:
    """Publish a run's finalized assets create-only; the ledger marks each published once the store confirmed it."""
    from tasks.publish import PublishItem, PublishReceipt, PublishTargetError, open_target, publish_many

    ledger = ledger_for(ledger_url)
    run = ledger.run(run_id)
    candidates = {r.candidate_id: r for r in ledger.candidates(run_id, [CandidateState.FINALIZED])}
    jobs = {job.job_key: job for job in ledger.jobs(run_id)}
    outcome = PublishOutcome()
    items: list[PublishItem] = []
    for asset in ledger.assets(run_id):
        row = candidates.get(asset.candidate_id)
        if row is None or asset.final_path is None or asset.final_sha256 is None:
            continue
        if not row.safety or not asset.payload_hex:
            # DESIGN: a record whose safety or watermark check did not run is never published.
            missing = "safety verdict" if not row.safety else "watermark"
            outcome.refused.append(f"{asset.candidate_id}: not published, it has no {missing}")
            continue
        ext = Path(asset.final_path).suffix.lstrip(".")
        items.append(
            PublishItem(
                asset_id=asset.candidate_id,
                run_id=run_id,
                campaign=run.campaign_id,
                prompt_id=jobs[row.job_key].prompt_id,
                policy_name=_policy_tag(policy),
                path=Path(asset.final_path),
                sha256=asset.final_sha256,
                mime=str(asset.mime),
                ext=ext,
                metadata={
                    "asset-id": asset.candidate_id,
                    "watermark-payload": asset.payload_hex,
                    "c2pa-manifest": str(asset.manifest_label),
                },
                sidecar=_sidecar(run, row, asset),
                created_at=asset.finalized_at,
            )
        )
    if not items:
        return outcome
    target = open_target(policy.publish, policy.resolved_work_dir())
    results = publish_many(target, items, policy.publish.concurrency)
    for item, result in zip(items, results, strict=True):
        if isinstance(result, PublishReceipt):
            receipt = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(result).items()}
            ledger.record_published(run_id, item.asset_id, receipt)
            outcome.published.append(receipt)
        elif isinstance(result, PublishTargetError) and result.retryable:
            outcome.transient.append(f"{item.asset_id}: {result}")
        else:
            outcome.refused.append(f"{item.asset_id}: {result}")
        progress.report("publish", len(outcome.published) + len(outcome.transient) + len(outcome.refused), len(items))
    return outcome


@dataclass
class PublishOutcome:
    """Receipts of what was published, and why the rest was not (transient errors may clear on retry)."""

    published: list[dict[str, Any]] = field(default_factory=list)
    transient: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def _sidecar(run: Any, row: Any, asset: Any) -> dict[str, Any]:
    """The asset's full provenance record for `<key>.provenance.json`: deterministic, no secrets, no local paths."""
    return {
        "asset_id": row.candidate_id,
        "run_id": run.run_id,
        "campaign": {"id": run.campaign_id, "name": run.campaign_name},
        "generation": {
            **pixel_inputs(row),
            "prompt_sha256": hashlib.sha256(row.prompt.encode()).hexdigest(),
        },
        "clip": {"model": row.clip_model, "score": row.clip_score, "cosine": row.clip_cosine, "rank": row.rank},
        "safety": row.safety,
        "review": row.review,
        "provenance": {
            "asset_key": asset.asset_key,
            "watermark_method": asset.watermark_method,
            "watermark_payload": asset.payload_hex,
            "c2pa_manifest": asset.manifest_label,
            "validation_state": asset.validation_state,
            "signer": asset.signer,
            "sha256": asset.final_sha256,
            "mime": asset.mime,
        },
    }
