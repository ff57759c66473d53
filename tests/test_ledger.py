"""Ledger transitions, history and transactional writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tasks.core.clock import FixedClock
from tasks.core.errors import LedgerError, ReviewError
from tasks.core.states import CandidateState, RunStatus
from tasks.storage.ledger import CandidateScore, GeneratedImage, Ledger, PlannedCandidate, sqlite_url, value_sha256


def _planned(candidate_id: str, seed: int) -> PlannedCandidate:
    return PlannedCandidate(
        candidate_id=candidate_id,
        job_key="job1",
        seed=seed,
        prompt="a cat",
        negative_prompt="",
        model_ref="embedded:tiny-sd",
        model_identity={"name": "x", "digest": "d"},
        pipeline_kind="StableDiffusionPipeline",
        width=256,
        height=256,
        steps=2,
        guidance=5.0,
        scheduler="default",
    )


JOB = {
    "job_key": "job1",
    "prompt_id": "p1",
    "variant": "",
    "prompt": "a cat",
    "variables": {},
    "keep_top_k": 1,
    "output_format": "png",
}


def _start(
    ledger: Ledger, tmp_path: Path, jobs: list[dict[str, object]], policy: dict[str, object] | None = None
) -> bool:
    return ledger.start_run(
        run_id="r1",
        campaign_id="c",
        campaign_name="C",
        manifest_path="m.yaml",
        manifest_sha256="0" * 64,
        policy=policy or {},
        run_dir=str(tmp_path),
        jobs=jobs,
        candidates=[_planned("cand001", 1), _planned("cand002", 2)],
    )


def _ledger(tmp_path: Path) -> Ledger:
    clock = FixedClock(datetime(2026, 11, 1, tzinfo=UTC), timedelta(seconds=1))
    ledger = Ledger.open_file(tmp_path / "ledger.sqlite", clock)
    _start(ledger, tmp_path, [JOB])
    return ledger


def _image(candidate_id: str) -> GeneratedImage:
    return GeneratedImage(
        candidate_id=candidate_id,
        image_path=f"/x/{candidate_id}.png",
        image_sha256="a" * 64,
        pixel_sha256="b" * 64,
        generation={"device": "cpu"},
    )


def test_lifecycle_is_recorded_in_history(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.record_generated("r1", [_image("cand001")])
    ledger.record_scores("r1", [CandidateScore("cand001", "clip", 1.2, 0.48, b"\0" * 8, 2)])
    ledger.record_screening("r1", {"cand001": {"flagged": False, "reasons": []}})
    ledger.record_selection("r1", {"cand001": 1}, {"cand001"}, {"cand001": "rank 1"})
    row = ledger.find_candidates("cand001")[0]
    assert (row.state, row.rank, row.clip_score) == (CandidateState.SELECTED, 1, 1.2)
    states = [(h.from_state, h.to_state) for h in ledger.history("r1", "cand001")]
    assert states == [
        (None, "planned"),
        ("planned", "generated"),
        ("generated", "scored"),
        ("scored", "screened_passed"),
        ("screened_passed", "selected"),
    ]
    times = [h.at for h in ledger.history("r1", "cand001")]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert ledger.embeddings("r1", "clip") == {"cand001": b"\0" * 8}


def test_illegal_transition_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.record_generated("r1", [_image("cand001")])
    # cand2 was never generated: the whole batch must be rejected, including cand1's valid score.
    with pytest.raises(LedgerError, match="cand002 cannot go from planned to scored"):
        ledger.record_scores(
            "r1",
            [CandidateScore("cand001", "clip", 1.0, 0.4, b"", 0), CandidateScore("cand002", "clip", 1.0, 0.4, b"", 0)],
        )
    assert ledger.state_counts("r1") == {"generated": 1, "planned": 1}
    assert ledger.embeddings("r1", "clip") == {}


def test_restarting_a_run_keeps_rows_and_counts_attempts(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.record_generated("r1", [_image("cand001")])
    ledger.finish_run("r1", RunStatus.INTERRUPTED)
    resumed = _start(ledger, tmp_path, [])
    assert resumed
    run = ledger.run("r1")
    assert run.attempts == 2 and run.status == RunStatus.RUNNING
    assert ledger.state_counts("r1") == {"generated": 1, "planned": 1}
    assert [h.to_state for h in ledger.history("r1") if h.candidate_id is None] == ["running", "interrupted", "running"]


def test_lookups_fail_clearly(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    with pytest.raises(LedgerError, match="no run 'nope'"):
        ledger.run("nope")
    with pytest.raises(LedgerError, match="too short"):
        ledger.find_candidates("ab")
    with pytest.raises(LedgerError, match="not a valid database URL"):
        Ledger.open("not a url")


def _screened(tmp_path: Path, flagged: bool) -> Ledger:
    ledger = _ledger(tmp_path)
    ledger.record_generated("r1", [_image("cand001")])
    ledger.record_scores("r1", [CandidateScore("cand001", "clip", 1.0, 0.4, b"", 0)])
    ledger.record_screening("r1", {"cand001": {"flagged": flagged, "reasons": ["nsfw 0.9 >= 0.5"] if flagged else []}})
    return ledger


def test_review_decisions_are_recorded_with_who_when_and_why(tmp_path: Path) -> None:
    ledger = _screened(tmp_path, flagged=False)
    ledger.record_selection("r1", {"cand001": 1}, {"cand001"}, {})
    row = ledger.decide("r1", "cand001", "approve", "dana@example.com", comment="on brief")
    assert row.state == "approved" and row.review["by"] == "dana@example.com" and row.review["comment"] == "on brief"
    row = ledger.decide("r1", "cand001", "reject", "lee@example.com", comment="logo too small")
    assert row.state == "rejected"
    history = ledger.history("r1", "cand001")
    assert [h.to_state for h in history][-2:] == ["approved", "rejected"]
    assert history[-1].detail["by"] == "lee@example.com" and history[-1].detail["comment"] == "logo too small"
    with pytest.raises(ReviewError, match="must be 'approve' or 'reject'"):
        ledger.decide("r1", "cand001", "maybe", "lee@example.com")
    with pytest.raises(ReviewError, match="reviewer's name"):
        ledger.decide("r1", "cand001", "approve", " ")


def test_flagged_candidates_need_an_allowed_override_with_a_reason(tmp_path: Path) -> None:
    ledger = _screened(tmp_path, flagged=True)
    with pytest.raises(ReviewError, match="does not allow overrides"):
        ledger.decide("r1", "cand001", "approve", "dana", override_reason="art nude, approved by legal")
    with pytest.raises(ReviewError, match="needs an override reason"):
        ledger.decide("r1", "cand001", "approve", "dana", allow_override=True)
    assert ledger.find_candidates("cand001")[0].state == "screened_flagged"
    row = ledger.decide("r1", "cand001", "approve", "dana", override_reason="approved by legal", allow_override=True)
    assert row.state == "approved" and row.review["override"]["reason"] == "approved by legal"
    assert row.review["override"]["flags"] == ["nsfw 0.9 >= 0.5"]


def test_rejecting_a_flagged_candidate_does_not_clear_its_flag(tmp_path: Path) -> None:
    ledger = _screened(tmp_path, flagged=True)
    ledger.decide("r1", "cand001", "reject", "dana")
    with pytest.raises(ReviewError, match="does not allow overrides"):
        ledger.decide("r1", "cand001", "approve", "dana")
    assert ledger.find_candidates("cand001")[0].state == "rejected"


def test_a_rejection_during_finalize_discards_the_signed_file(tmp_path: Path) -> None:
    from tasks.storage.ledger import FinalizedAsset

    ledger = _screened(tmp_path, flagged=False)
    ledger.record_selection("r1", {"cand001": 1}, {"cand001"}, {})
    ledger.decide("r1", "cand001", "approve", "dana")
    ledger.assign_asset_keys("r1", ["cand001"], 100)
    ledger.decide("r1", "cand001", "reject", "lee", comment="changed my mind")
    signed = tmp_path / "final.png"
    signed.write_bytes(b"signed")
    ledger.record_finalized("r1", [FinalizedAsset("cand001", ok=True, final_path=str(signed), final_sha256="0" * 64)])
    assert ledger.find_candidates("cand001")[0].state == "rejected" and not signed.exists()
    assert "finalize_discarded" in ledger.history("r1", "cand001")[-1].detail


def test_a_finalized_asset_keeps_its_delivered_size_and_fingerprint(tmp_path: Path) -> None:
    from tasks.storage.ledger import FinalizedAsset

    ledger = _screened(tmp_path, flagged=False)
    ledger.record_selection("r1", {"cand001": 1}, {"cand001"}, {})
    ledger.decide("r1", "cand001", "approve", "dana")
    ledger.assign_asset_keys("r1", ["cand001"], 100)
    assert ledger.assets("r1")[0].final_size is None
    outcome = FinalizedAsset(
        "cand001", ok=True, final_sha256="0" * 64, final_width=341, final_height=256, fingerprint=b"\x89PNG..."
    )
    ledger.record_finalized("r1", [outcome])
    asset = ledger.assets("r1")[0]
    assert asset.final_size == {"width": 341, "height": 256} and asset.fingerprint == b"\x89PNG..."


def test_unscreened_candidates_cannot_be_selected(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.record_generated("r1", [_image("cand001")])
    ledger.record_scores("r1", [CandidateScore("cand001", "clip", 1.0, 0.4, b"", 0)])
    with pytest.raises(LedgerError, match="cannot go from scored to selected"):
        ledger.record_selection("r1", {"cand001": 1}, {"cand001"}, {})


def test_a_resumed_run_with_a_changed_policy_keeps_every_policy(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    _start(ledger, tmp_path, [JOB], policy={"review": {"mode": "auto"}})
    history = ledger.policy_history("r1")
    assert [(h.old, h.new, h.attempt) for h in history] == [(None, {}, 1), ({}, {"review": {"mode": "auto"}}, 2)]
    assert history[-1].sha256 == value_sha256({"review": {"mode": "auto"}})
    assert history[0].at < history[1].at
    assert ledger.run("r1").policy == {"review": {"mode": "auto"}}


def test_a_resumed_run_with_the_same_policy_adds_no_entry(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    _start(ledger, tmp_path, [JOB], policy={})
    assert len(ledger.policy_history("r1")) == 1
    _start(ledger, tmp_path, [JOB], policy={"a": 1, "b": {"c": 2, "d": 3}})
    _start(ledger, tmp_path, [JOB], policy={"b": {"d": 3, "c": 2}, "a": 1})  # same policy, other key order
    assert [h.attempt for h in ledger.policy_history("r1")] == [1, 3]
    assert ledger.run("r1").attempts == 4


def test_a_changed_screening_verdict_keeps_both_verdicts(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    passed = {"blocked": False, "reason": "", "rule": None}
    blocked = {"blocked": True, "reason": "blocklist: 'gore'", "rule": "blocklist"}
    _start(ledger, tmp_path, [{**JOB, "screening": passed}])
    _start(ledger, tmp_path, [{**JOB, "screening": blocked}])
    _start(ledger, tmp_path, [{**JOB, "screening": blocked}])
    ledger.record_job_screening("r1", "job1", blocked)  # unchanged: nothing appended
    assert ledger.jobs("r1")[0].screening == blocked
    revisions = [(h.old, h.new, h.attempt) for h in ledger.job_history("r1", "job1") if h.name == "screening"]
    assert revisions == [(None, passed, 2), (passed, blocked, 3)]
    ledger.record_job_screening("r1", "job1", None)  # screening turned off
    assert ledger.job_history("r1", "job1")[-1].old == blocked and ledger.jobs("r1")[0].screening is None


def test_a_resume_updates_keep_top_k_and_output_format_and_keeps_the_old_values(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    _start(ledger, tmp_path, [{**JOB, "keep_top_k": 3, "output_format": "webp"}])
    job = ledger.jobs("r1")[0]
    assert (job.keep_top_k, job.output_format) == (3, "webp")
    history = [(h.name, h.old, h.new, h.attempt) for h in ledger.job_history("r1", "job1")]
    assert history == [
        ("keep_top_k", None, 1, 1),
        ("output_format", None, "png", 1),
        ("keep_top_k", 1, 3, 2),
        ("output_format", "png", "webp", 2),
    ]
    _start(ledger, tmp_path, [])  # a job left out of the plan keeps its values
    assert ledger.jobs("r1")[0].keep_top_k == 3 and len(ledger.job_history("r1", "job1")) == 4
    assert ledger.policy_history("r1")[-1].new == ledger.run("r1").policy


def test_history_lookups_fail_clearly(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    with pytest.raises(LedgerError, match="no run 'nope'"):
        ledger.policy_history("nope")
    with pytest.raises(LedgerError, match="run r1 has no job job9"):
        ledger.job_history("r1", "job9")
    with pytest.raises(LedgerError, match="run r1 has no job job9"):
        ledger.record_job_screening("r1", "job9", None)


def test_a_missing_ledger_is_not_created_when_only_read(tmp_path: Path) -> None:
    from tasks.core.errors import MissingLedgerError

    path = tmp_path / "elsewhere" / "ledger.sqlite"
    with pytest.raises(MissingLedgerError) as info:
        Ledger.open(sqlite_url(path), create=False)
    assert info.value.path == str(path.resolve()) and not path.parent.exists()
    Ledger.open_file(path)  # created on purpose, then readable without creating
    assert Ledger.open(sqlite_url(path), create=False).runs() == []
