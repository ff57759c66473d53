"""Delivery stages: approval by policy, finalization of approved candidates, and publishing of finalized assets.

Plain functions over the ledger; the Prefect flows (flows/batch.py, flows/delivery.py) order them.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from policies.model import Policy, load_policy
from tasks.core import progress
from tasks.core.errors import LedgerError, MissingLedgerError
from tasks.core.files import sweep_temp_files
from tasks.core.states import CandidateState, RunStatus
from tasks.stages.runs import RunContext, blocked_job_keys, ledger_for

log = logging.getLogger(__name__)


def policy_for_run(run_id: str, policy_path: Path | None) -> tuple[Policy, str]:
    """The given policy, or else the one recorded with the run, and the ledger URL; LedgerError for an unknown run."""
    given = load_policy(policy_path)
    url = given.ledger_url()
    try:  # never create an empty ledger (and its folder) only to say the run is not there
        run = ledger_for(url, create=False).run(run_id)
    except MissingLedgerError as exc:
        raise LedgerError(f"no run {run_id!r}: {exc}; `assetmint runs` lists the runs.") from None
    return (given if policy_path else Policy.model_validate(run.policy)), url


def target_root(policy: Policy) -> str:
    """Where the policy publishes: s3://bucket/prefix or the target folder."""
    location = policy.publish.location
    if location.kind == "s3":
        return f"s3://{location.bucket}/{location.prefix}".rstrip("/")
    return str(location.folder_path(policy.resolved_work_dir()))


def approve_by_policy(ctx: RunContext) -> int:
    """In auto review mode, approve what selection chose; in manual mode approve nothing (a reviewer decides)."""
    if ctx.policy.review.mode != "auto":
        log.info("review.mode %s: a reviewer approves or rejects the selected candidates", ctx.policy.review.mode)
        return 0
    rule = f"auto review: top-k above min_score {ctx.policy.scoring.min_score} among candidates that passed screening"
    approved = ledger_for(ctx.ledger_url).auto_approve(ctx.run_id, rule)
    log.info("approved %d selected candidates by policy (review.mode auto)", approved)
    return approved


def finalize_approved(ledger_url: str, run_id: str, policy: Policy) -> list[str]:
    """Watermark, encode, sign and validate every approved candidate not yet finalized; returns failure reasons."""
    from tasks.provenance import keys
    from tasks.provenance.watermark import max_key
    from tasks.stages.finalize import EXTENSION_BY_FORMAT, FinalizeJob, finalize_many

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
    for folder in (Path(run.run_dir), Path(run.run_dir) / "final"):  # what an interrupted finalize left there
        sweep_temp_files(folder)
    if not rows:
        log.info("finalize: no approved candidate waits to be finalized")
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
    log.info(
        "finalized %d assets (watermarked, signed, validated), %d failed", len(done) - len(failures), len(failures)
    )
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


def _policy_tag(policy: Policy) -> str:
    """A short, stable name for the policy that governed an asset (for object tags)."""
    digest = hashlib.sha256(policy.model_dump_json().encode()).hexdigest()
    return f"policy-{digest[:12]}"


def publish_finalized(ledger_url: str, run_id: str, policy: Policy) -> PublishOutcome:
    """Publish a run's finalized assets create-only; the ledger marks each published once the store confirmed it."""
    from tasks.storage.publish import PublishItem, PublishReceipt, PublishTargetError, open_target, publish_many

    ledger = ledger_for(ledger_url)
    run = ledger.run(run_id)
    candidates = {r.candidate_id: r for r in ledger.candidates(run_id, [CandidateState.FINALIZED])}
    jobs = {job.job_key: job for job in ledger.jobs(run_id)}
    outcome = PublishOutcome()
    items: list[PublishItem] = []
    for asset in ledger.assets(run_id):
        if asset.published:
            outcome.already.append({**asset.published, "already_published": True})
            continue
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
        log.info("publish: nothing new to publish (%d already published)", len(outcome.already))
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
    log.info(
        "published %d assets to %s; %d refused, %d to retry",
        len(outcome.published),
        target.describe(),
        len(outcome.refused),
        len(outcome.transient),
    )
    return outcome


@dataclass
class PublishOutcome:
    """Receipts of what was published, and why the rest was not (transient errors may clear on retry)."""

    published: list[dict[str, Any]] = field(default_factory=list)
    already: list[dict[str, Any]] = field(default_factory=list)  # the ledger's receipts from earlier publishes
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
            "final_size": asset.final_size,
        },
    }


@dataclass
class DeliveryResult:
    """What one delivery did: finalize failure reasons, finalized count, and the publish outcome when it published."""

    finalized: int = 0
    failed: list[str] = field(default_factory=list)
    published: PublishOutcome | None = None

    def not_published(self) -> list[str]:
        """Why finalized assets were not published, one line each."""
        if self.published is None:
            return []
        return [f"not published: {reason}" for reason in self.published.refused + self.published.transient]

    def failure_lines(self) -> list[str]:
        """Every reason an approved candidate did not make it out, one line each."""
        return [f"not finalized: {reason}" for reason in self.failed] + self.not_published()


DELIVERY_KEY = "delivery"
ACTIVE_DELIVERY = ("submitted", "running")


def last_delivery(ledger: Any, run_id: str) -> dict[str, Any]:
    """The run's last recorded delivery attempt (status, times, error, failures); empty when there was none."""
    record = (ledger.run(run_id).summary or {}).get(DELIVERY_KEY)
    return dict(record) if isinstance(record, dict) else {}


def record_delivery(ledger_url: str, run_id: str, record: dict[str, Any]) -> None:
    """Record a delivery attempt's state with the run (its summary and history); the run's status stays as it is."""
    ledger = ledger_for(ledger_url)
    run = ledger.run(run_id)
    summary = {**(run.summary or {}), DELIVERY_KEY: record}
    ledger.finish_run(run_id, RunStatus(run.status), summary)
