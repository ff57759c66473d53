"""Write tests/data/ledger-0.1.0.sqlite: a small ledger exactly as release 0.1.0 (before migrations) made it.

Run it against the release it names, not against the current code, e.g.:

    git worktree add /tmp/assetmint-0.1.0 767055d
    cd /tmp/assetmint-0.1.0 && PYTHONPATH=. python /path/to/make_ledger_0_1_0.py /path/to/ledger-0.1.0.sqlite

The migration tests open a copy of the result with today's code and check that every row survives the upgrade.
"""

from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from tasks.core.clock import FixedClock
from tasks.core.states import CandidateState, RunStatus
from tasks.storage.ledger import (
    AuditRow,
    CandidateScore,
    FinalizedAsset,
    GeneratedImage,
    Ledger,
    PlannedCandidate,
)

RUN_ID = "run-0-1-0"
# Paths as a run under the default work dir would record them; relative, so the fixture names no machine.
WORK_DIR = "assetmint-output"
RUN_DIR = f"{WORK_DIR}/runs/{RUN_ID}"
POLICY = {"name": "release-0.1.0", "review": {"mode": "manual"}, "safety": {"prompts": {"enabled": True}}}
JOBS = [
    {
        "job_key": "job-cat",
        "prompt_id": "cat",
        "variant": "square",
        "prompt": "a cat on a red sofa",
        "variables": {"animal": "cat"},
        "keep_top_k": 1,
        "output_format": "png",
    },
    {
        "job_key": "job-dog",
        "prompt_id": "dog",
        "variant": "",
        "prompt": "a dog in the snow",
        "variables": {},
        "keep_top_k": 2,
        "output_format": "jpeg",
    },
]


def _planned(candidate_id: str, job_key: str, seed: int, prompt: str) -> PlannedCandidate:
    return PlannedCandidate(
        candidate_id=candidate_id,
        job_key=job_key,
        seed=seed,
        prompt=prompt,
        negative_prompt="blurry",
        model_ref="embedded:tiny-sd",
        model_identity={"name": "tiny-sd", "digest": "d" * 16},
        pipeline_kind="StableDiffusionPipeline",
        width=256,
        height=256,
        steps=2,
        guidance=5.0,
        scheduler="default",
    )


def build(path: Path) -> None:
    """Write the scenario into a new SQLite file at `path`."""
    if importlib.util.find_spec("tasks.storage.migrations") is not None:
        raise SystemExit("this checkout already has ledger migrations: run the script against release 0.1.0.")
    if path.exists():
        raise SystemExit(f"{path} exists; remove it first.")
    ledger = Ledger.open_file(path, FixedClock(datetime(2026, 10, 1, 9, 0, tzinfo=UTC), timedelta(seconds=1)))
    ledger.start_run(
        run_id=RUN_ID,
        campaign_id="spring-0-1-0",
        campaign_name="Spring (0.1.0)",
        manifest_path="campaigns/spring.yaml",
        manifest_sha256="1" * 64,
        policy=POLICY,
        run_dir=RUN_DIR,
        jobs=JOBS,
        candidates=[
            _planned("c0000000000000000000000000000001", "job-cat", 1, JOBS[0]["prompt"]),
            _planned("c0000000000000000000000000000002", "job-cat", 2, JOBS[0]["prompt"]),
            _planned("c0000000000000000000000000000003", "job-dog", 1, JOBS[1]["prompt"]),
        ],
    )
    ledger.record_job_screening(RUN_ID, "job-cat", {"blocked": False, "reason": "", "rule": None})
    ledger.add_job_warning(RUN_ID, "job-dog", "prompt truncated to 77 tokens")
    first, third = "c0000000000000000000000000000001", "c0000000000000000000000000000003"  # the second stays planned
    ledger.record_generated(
        RUN_ID,
        [GeneratedImage(first, f"{RUN_DIR}/candidates/1.png", "a" * 64, "b" * 64, {"device": "cpu"})],
    )
    ledger.record_failed(RUN_ID, [third], "out of memory")
    ledger.record_scores(RUN_ID, [CandidateScore(first, "tiny-clip", 1.25, 0.5, bytes(range(8)), 2)])
    ledger.record_screening(RUN_ID, {first: {"flagged": False, "reasons": [], "scores": {"nsfw": 0.01}}})
    ledger.record_selection(RUN_ID, {first: 1}, {first}, {first: "rank 1 of 1"})
    ledger.decide(RUN_ID, first, "approve", "dana@example.com", comment="on brief")
    keys = ledger.assign_asset_keys(RUN_ID, [first], 1000)
    ledger.record_finalized(
        RUN_ID,
        [
            FinalizedAsset(
                first,
                ok=True,
                watermark_method="dwtDctSvd",
                payload_hex="00000001",
                final_path=f"{RUN_DIR}/final/1.png",
                final_sha256="f" * 64,
                mime="image/png",
                manifest_label="urn:c2pa:0001",
                validation_state="Trusted",
                signer="AssetMint development signer",
                provenance={"asset_key": keys[first]},
            )
        ],
    )
    ledger.finish_run(RUN_ID, RunStatus.PENDING_REVIEW, {"counts": {CandidateState.FINALIZED.value: 1}})
    ledger.record_audits(
        [
            AuditRow(
                audited_at=datetime(2026, 10, 2, tzinfo=UTC),
                target=f"{WORK_DIR}/published",
                object="1.png",
                verdict="ok",
                evidence={"sha256": "f" * 64},
                run_id=RUN_ID,
                candidate_id=first,
            )
        ]
    )
    with ledger.engine.connect() as connection:
        # A self-contained file: no -wal/-shm companions, no free pages.
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.exec_driver_sql("PRAGMA journal_mode=DELETE")
        connection.execute(text("VACUUM"))
    ledger.engine.dispose()


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("ledger-0.1.0.sqlite"))
