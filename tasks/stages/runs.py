"""The batch stages as plain functions: prepare a run, generate a chunk, score, select, summarise.

Prefect's flow (flows/batch.py) only puts these in order; they are usable and testable without Prefect.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from policies.model import Policy, load_policy
from tasks.core import progress
from tasks.core.errors import LedgerError
from tasks.core.identity import candidate_id
from tasks.core.limits import check_plan
from tasks.core.manifest import Plan, load_plan
from tasks.core.states import CandidateState, RunStatus
from tasks.stages.cluster import SLOTS_PER_GENERATOR, GeneratorPool
from tasks.stages.cluster import connect as connect_cluster
from tasks.stages.generate import (
    CandidateSpec,
    RuntimeChoice,
    choose_runtime,
    generate_candidates,
    load_pipeline,
    pipeline_kind,
    prompt_token_overflow,
    store_rendered,
)
from tasks.stages.models import ModelSource, resolve_model
from tasks.stages.score import (
    clip_score,
    cosine_rows,
    encode_images,
    encode_texts,
    load_scorer,
    resolve_clip,
    token_overflow,
)
from tasks.stages.select import rank_and_select
from tasks.storage.database import probe_database
from tasks.storage.ledger import CandidateScore, GeneratedImage, Ledger, PlannedCandidate
from tasks.storage.publish import open_target
from tasks.storage.run_locks import refuse_if_locked, run_locks
from tasks.storage.workdir import candidate_store, ensure_writable

log = logging.getLogger(__name__)


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
        """Where candidate images are written: the work dir's content-addressed store, shared by every run."""
        return candidate_store(self.work_dir)


@dataclass(frozen=True)
class RunSummary:
    """What a run produced, for the CLI and the Prefect artifacts."""

    run_id: str
    status: str
    counts: dict[str, int]
    generated_now: int
    best: list[dict[str, Any]]
    run_dir: str
    image_dir: str
    ledger_url: str
    warnings: list[str]
    scores: list[float] = field(default_factory=list)  # every CLIP score of the run, for its distribution
    blocked_prompts: list[str] = field(default_factory=list)  # "label: reason", nothing generated for them
    flagged_prompts: list[str] = field(default_factory=list)  # "label: n of m flagged" by the image filters
    generators: list[dict[str, Any]] = field(default_factory=list)  # the Ray generators' reports (engine ray)


@cache
def ledger_for(url: str, create: bool = True) -> Ledger:
    """One Ledger (engine and connection pool) per database URL per process; see Ledger.open for `create`."""
    return Ledger.open(url, create=create)


def load_context(manifest_path: Path, policy_path: Path | None) -> RunContext:
    """Load and check manifest, policy, models and the run's lock; creates the work dir only once all of that passed."""
    policy = load_policy(policy_path)
    plan = load_plan(manifest_path, policy.generation.max_candidates_per_run)
    check_plan(plan, policy)
    work_dir = policy.resolved_work_dir()
    probe_database(policy.ledger_url())  # the databases and stores first: nothing is created if they are not there
    refuse_if_locked(run_locks(policy.ledger_url(), work_dir), plan.run_id)
    if policy.execution.engine == "ray":
        cluster = connect_cluster(policy.execution)
        log.info(
            "Ray cluster at %s: %d generators (%g GPUs, %g CPUs)",
            cluster.address,
            cluster.workers,
            cluster.gpus,
            cluster.cpus,
        )
    if policy.finalize.enabled and policy.publish.auto_publish:
        open_target(policy.publish, work_dir).probe()
    if policy.finalize.enabled:
        check_signer(policy)
    models = {ref: resolve_model(ref) for ref in sorted({job.model for job in plan.jobs})}
    resolve_clip(policy.scoring.clip_model)
    ensure_writable(work_dir)  # last: a refused run leaves no work dir behind
    log.info(
        "run %s: %d jobs, %d candidates planned; work dir %s",
        plan.run_id,
        len(plan.jobs),
        plan.candidate_count,
        work_dir,
    )
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
    """Load the configured signer and watermark secret once, so a bad one fails before anything is generated."""
    from tasks.provenance.credentials import load_signer
    from tasks.provenance.mark_secrets import load_mark_secrets

    with load_signer(policy.signing):
        pass
    if policy.watermark.enabled:
        load_mark_secrets(policy.signing)


def planned_candidates(ctx: RunContext, blocked: frozenset[str] = frozenset()) -> list[PlannedCandidate]:
    """Every candidate of the plan with its deterministic id, except those of jobs whose prompt was blocked."""
    planned: list[PlannedCandidate] = []
    kinds = {ref: pipeline_kind(source) for ref, source in ctx.models.items()}
    for job in ctx.plan.jobs:
        if job.job_key in blocked:
            continue
        source = ctx.models[job.model]
        kind = kinds[job.model]
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
    from tasks.stages.safety.prompts import screen_prompts

    if not ctx.policy.safety.prompts.enabled:
        return {}
    verdicts = screen_prompts([job.prompt for job in ctx.plan.jobs], ctx.policy.safety.prompts)
    log.info("screened %d prompts: %d blocked", len(verdicts), sum(1 for v in verdicts if v.blocked))
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
            **{
                k: v
                for k, v in job.to_dict().items()
                if k in {"job_key", "prompt_id", "variant", "prompt", "variables", "keep_top_k", "output_format"}
            },
            "screening": prompt_verdicts.get(job.job_key),  # this attempt's verdict (None: screening off)
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
    reused = reuse_generated(ctx)
    log.info(
        "%s the plan: %d candidates, %d images reused from earlier runs",
        "resumed" if resumed else "recorded",
        len(candidates),
        reused,
    )
    return resumed


def reuse_generated(ctx: RunContext) -> int:
    """Record as generated every pending candidate this ledger already made in any run; returns how many.

    A candidate's id covers everything that makes its pixels, so an image made once is never made again: its file
    is taken as it is when it still holds the bytes recorded then.
    """
    ledger = ledger_for(ctx.ledger_url)
    blocked = blocked_job_keys(ledger, ctx.run_id)
    pending = [
        row
        for row in ledger.candidates(ctx.run_id, [CandidateState.PLANNED, CandidateState.FAILED])
        if row.job_key not in blocked
    ]
    made = ledger.generated_elsewhere([row.candidate_id for row in pending], ctx.run_id)
    reused = [
        GeneratedImage(
            candidate_id=source.candidate_id,
            image_path=str(source.image_path),
            image_sha256=str(source.image_sha256),
            pixel_sha256=str(source.pixel_sha256),
            generation={**source.generation, "reused_from_run": source.run_id},
        )
        for source in made.values()
        if _file_sha256(Path(str(source.image_path))) == source.image_sha256
    ]
    if reused:
        ledger.record_generated(ctx.run_id, reused)
    return len(reused)


def _file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def pending_job_keys(ctx: RunContext) -> frozenset[str]:
    """Jobs that still have candidates to generate (blocked jobs excluded)."""
    ledger = ledger_for(ctx.ledger_url)
    pending = ledger.candidates(ctx.run_id, [CandidateState.PLANNED, CandidateState.FAILED])
    return frozenset(r.job_key for r in pending) - blocked_job_keys(ledger, ctx.run_id)


def pending_chunks(ctx: RunContext) -> list[list[CandidateSpec]]:
    """Candidates still to generate, in chunks of the policy's chunk size (job order kept, so batches fill)."""
    ledger = ledger_for(ctx.ledger_url)
    blocked = blocked_job_keys(ledger, ctx.run_id)
    seeds = {job.job_key: frozenset(job.seeds) for job in ctx.plan.jobs}
    rows = [
        r
        for r in ledger.candidates(ctx.run_id, [CandidateState.PLANNED, CandidateState.FAILED])
        if r.job_key not in blocked and r.seed in seeds.get(r.job_key, frozenset())  # dropped seeds stay unmade
    ]
    order = {job.job_key: i for i, job in enumerate(ctx.plan.jobs)}
    rows.sort(key=lambda r: (order.get(r.job_key, len(order)), r.seed))
    specs = [CandidateSpec.from_record(r) for r in rows]
    size = ctx.policy.generation.chunk_size
    return [specs[i : i + size] for i in range(0, len(specs), size)]


def _runtime(ctx: RunContext) -> RuntimeChoice:
    generation = ctx.policy.generation
    return choose_runtime(generation.device, generation.dtype, generation.batch_invariant)


_pools: dict[str, GeneratorPool] = {}
_pools_lock = threading.Lock()


def _generator_pool(ctx: RunContext) -> GeneratorPool:
    with _pools_lock:
        pool = _pools.get(ctx.run_id)
        if pool is None:
            generation = ctx.policy.generation
            pool = GeneratorPool(ctx.policy.execution, generation.device, generation.dtype, generation.batch_invariant)
            _pools[ctx.run_id] = pool
        return pool


def generation_slots(ctx: RunContext) -> int:
    """Chunks to have in flight at once: 1 in this process; on Ray every generator's slots, so none waits."""
    if ctx.policy.execution.engine != "ray":
        return 1
    return SLOTS_PER_GENERATOR * _generator_pool(ctx).plan.workers


def release_generators(ctx: RunContext) -> list[dict[str, Any]]:
    """Stop the run's Ray generators (freeing their GPUs) and return their reports; [] when none ran."""
    with _pools_lock:
        pool = _pools.pop(ctx.run_id, None)
    if pool is None:
        return []
    try:
        reports = pool.reports()
    finally:
        pool.close()
    for report in reports:
        log.info(
            "generator %s: %d chunks, model loads %s, peak RSS %.0f MB",
            report["worker"],
            report["chunks"],
            report["model_loads"],
            report["peak_rss_mb"],
        )
    return reports


def _generate_on_cluster(ctx: RunContext, specs: Sequence[CandidateSpec], total: int) -> int:
    pool = _generator_pool(ctx)
    identities = {spec.model_ref: ctx.models[spec.model_ref].identity for spec in specs}
    rendered = pool.render(specs, identities, ctx.policy.generation.batch_size)
    ledger_for(ctx.ledger_url).record_generated(ctx.run_id, store_rendered(rendered, ctx.image_dir))
    done = pool.count(len(rendered))
    progress.report("generate", done, total)
    log.info("generated %d candidates on the cluster (%d of %d)", len(rendered), done, total)
    return len(rendered)


def generate_chunk(ctx: RunContext, specs: Sequence[CandidateSpec], done_before: int, total: int) -> int:
    """Generate one chunk and record it in one transaction; returns how many candidates it produced."""
    if ctx.policy.execution.engine == "ray":
        return _generate_on_cluster(ctx, specs, total)
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
    log.info("generated %d candidates (%d of %d)", produced, done_before + produced, total)
    return produced


def record_prompt_warnings(ctx: RunContext, job_keys: frozenset[str]) -> list[str]:
    """Record which of these jobs' prompts the text encoders truncate; returns every job warning of the run.

    Only jobs with work still to do are checked, so a rerun with nothing left loads no model for this.
    """
    ledger = ledger_for(ctx.ledger_url)
    jobs = [job for job in ctx.plan.jobs if job.job_key in job_keys]
    if jobs:
        runtime = _runtime(ctx)
        scorer = load_scorer(ctx.policy.scoring.clip_model, runtime.device)
        for job in jobs:
            loaded = load_pipeline(ctx.models[job.model], runtime)
            overflows = (
                ("CLIP scorer", token_overflow(scorer, job.prompt)),
                ("generator text encoder", prompt_token_overflow(loaded, job.prompt)),
            )
            for who, count in overflows:
                if count:
                    message = f"prompt {_job_label(job)} is {count} tokens too long for the {who}; the end is ignored"
                    ledger.add_job_warning(ctx.run_id, job.job_key, message)
    return [warning for job in ledger.jobs(ctx.run_id) for warning in job.warnings]


def score_pending(ctx: RunContext) -> int:
    """CLIP-score every generated, unscored candidate; embeddings are stored for later stages."""
    ledger = ledger_for(ctx.ledger_url)
    scoring = ctx.policy.scoring
    rows = ledger.candidates(ctx.run_id, [CandidateState.GENERATED])
    if not rows:
        log.info("CLIP scoring: nothing new to score")
        return 0
    runtime = _runtime(ctx)
    scorer = load_scorer(scoring.clip_model, runtime.device)
    # A resumed run scores whatever is left, in other batches: per-input encoding keeps the scores bit-identical.
    invariant = runtime.batch_invariant
    by_prompt: dict[str, list[Any]] = {}
    for row in rows:
        by_prompt.setdefault(row.prompt, []).append(row)
    texts = list(by_prompt)
    text_vectors = dict(zip(texts, encode_texts(scorer, texts, per_text=invariant), strict=True)) if texts else {}
    done = 0
    for prompt, group in by_prompt.items():
        for start in range(0, len(group), scoring.batch_size):
            batch = group[start : start + scoring.batch_size]
            paths = [Path(r.image_path) for r in batch]
            vectors = encode_images(scorer, paths, scoring.batch_size, per_image=invariant)
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
    log.info("CLIP-scored %d candidates with %s", done, scoring.clip_model)
    return done


def screen_images_stage(ctx: RunContext) -> int:
    """Screen every scored candidate with the policy's image filters, reusing the scorer's image embeddings."""
    from tasks.stages.safety.images import screen_images

    ledger = ledger_for(ctx.ledger_url)
    rows = ledger.candidates(ctx.run_id, [CandidateState.SCORED])
    if not rows:
        log.info("image screening: nothing new to screen")
        return 0
    scoring = ctx.policy.scoring
    runtime = _runtime(ctx)
    scorer = load_scorer(scoring.clip_model, runtime.device)
    stored = ledger.embeddings(ctx.run_id, scoring.clip_model)
    done = flagged = 0
    for start in range(0, len(rows), scoring.batch_size):
        batch = rows[start : start + scoring.batch_size]
        embeddings = np.stack([np.frombuffer(stored[r.candidate_id], dtype=np.float32) for r in batch])
        verdicts = screen_images(
            [Path(str(r.image_path)) for r in batch],
            embeddings,
            lambda texts: encode_texts(scorer, texts, per_text=runtime.batch_invariant),
            ctx.policy.safety,
            per_image=runtime.batch_invariant,
        )
        ledger.record_screening(
            ctx.run_id,
            {
                row.candidate_id: {**asdict(verdict), "screened_at": ledger.clock.now().isoformat()}
                for row, verdict in zip(batch, verdicts, strict=True)
            },
        )
        done += len(batch)
        flagged += sum(1 for verdict in verdicts if verdict.flagged)
        progress.report("screen", done, len(rows))
    log.info("screened %d images: %d flagged", done, flagged)
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
        members = [r for r in rows if r.job_key == job.job_key]
        scores = [(r.candidate_id, float(r.clip_score or 0.0)) for r in members]
        if not scores:
            continue
        keep = min(job.keep_top_k, cap) if cap else job.keep_top_k
        locked = frozenset(r.candidate_id for r in members if r.state in decided)
        ineligible = {r.candidate_id: "flagged by safety screening" for r in members if r.state == flagged}
        # Nothing is deleted: a seed the manifest dropped stays in the run, ranked, but is not picked again.
        ineligible |= {
            r.candidate_id: f"seed {r.seed} is no longer in the manifest"
            for r in members
            if r.seed not in job.seeds and r.candidate_id not in ineligible
        }
        selection = rank_and_select(scores, keep, ctx.policy.scoring.min_score, locked, ineligible)
        ledger.record_selection(ctx.run_id, selection.ranks, selection.selected, selection.reasons)
        selected += len(selection.selected)
    log.info("selected %d candidates over %d prompts", selected, len(ctx.plan.jobs) - len(blocked))
    return selected


def review_notices(ctx: RunContext) -> list[str]:
    """In manual review mode, say how many selected candidates wait for a reviewer."""
    if ctx.policy.review.mode != "manual":
        return []
    waiting = len(ledger_for(ctx.ledger_url).candidates(ctx.run_id, [CandidateState.SELECTED]))
    return [f"{waiting} selected candidates are pending review (policy review.mode: manual)"] if waiting else []


def summarize(
    ctx: RunContext,
    generated_now: int,
    warnings: Sequence[str],
    status: RunStatus,
    generators: Sequence[dict[str, Any]] = (),
) -> RunSummary:
    """Per-prompt best candidates and state counts of the run."""
    ledger = ledger_for(ctx.ledger_url)
    best: list[dict[str, Any]] = []
    chosen = [
        CandidateState.SELECTED,
        CandidateState.APPROVED,
        CandidateState.FINALIZED,
        CandidateState.FINALIZE_FAILED,
        CandidateState.PUBLISHED,
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
    rows = ledger.candidates(ctx.run_id)
    jobs = {job.job_key: job for job in ctx.plan.jobs}
    blocked = [
        f"{_job_label(jobs[job.job_key])}: {job.screening.get('reason', 'blocked')}"
        for job in ledger.jobs(ctx.run_id)
        if job.job_key in jobs and (job.screening or {}).get("blocked")
    ]
    flagged = []
    for job in ctx.plan.jobs:
        screened = [r for r in rows if r.job_key == job.job_key and r.safety]
        hits = sum(1 for r in screened if r.safety.get("flagged"))
        if hits:
            flagged.append(f"{_job_label(job)}: {hits} of {len(screened)} candidates flagged")
    return RunSummary(
        run_id=ctx.run_id,
        status=status.value,
        counts=ledger.state_counts(ctx.run_id),
        generated_now=generated_now,
        best=best,
        run_dir=str(ctx.run_dir),
        image_dir=str(ctx.image_dir),
        ledger_url=ctx.ledger_url,
        warnings=list(warnings),
        scores=[float(r.clip_score) for r in rows if r.clip_score is not None],
        blocked_prompts=blocked,
        flagged_prompts=flagged,
        generators=list(generators),
    )


def finish(ctx: RunContext, summary: RunSummary) -> None:
    """Record the run attempt's end with its counts."""
    ledger_for(ctx.ledger_url).finish_run(
        ctx.run_id,
        RunStatus(summary.status),
        {
            "counts": summary.counts,
            "generated_now": summary.generated_now,
            "warnings": summary.warnings,
            **({"generators": summary.generators} if summary.generators else {}),
        },
    )


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
