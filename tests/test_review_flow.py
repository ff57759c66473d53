"""Manual review: the batch run ends pending review; decisions are recorded and reach the Content Credential."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import main
from conftest import AUTO_PUBLISH_POLICY, work_ledger, write
from tasks.stages.delivery import last_delivery

MANIFEST = """\
campaign: {id: rev, name: Review}
defaults: {model: embedded:tiny-sd, width: 256, height: 256, steps: 2, candidates: 3, keep_top_k: 2}
prompts: [{prompt: a glass vase with tulips}]
"""


def test_manual_review_then_finalize(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = write(tmp_path / "p.yaml", "review:\n  mode: manual\n")
    assert main(["run", str(write(tmp_path / "m.yaml", MANIFEST)), "--policy", str(policy)]) == 0
    out = capsys.readouterr().out
    assert "pending_review" in out and "2 selected candidates are pending review" in out
    ledger = work_ledger(tmp_path)
    run = ledger.runs()[0]
    assert run.status == "pending_review" and ledger.assets(run.run_id) == []
    best, second = sorted(ledger.candidates(run.run_id, ["selected"]), key=lambda r: r.rank)
    ledger.decide(run.run_id, best.candidate_id, "approve", "dana@example.com", comment="hero shot")
    ledger.decide(run.run_id, second.candidate_id, "reject", "dana@example.com", comment="off brand")

    assert main(["finalize", run.run_id, "--policy", str(policy)]) == 0
    assert "1 finalized assets (published ones included)" in capsys.readouterr().out
    assert ledger.state_counts(run.run_id) == {"finalized": 1, "rejected": 1, "not_selected": 1}
    attempt = last_delivery(ledger, run.run_id)  # the delivery flow records every attempt with the run
    assert attempt["status"] == "completed" and attempt["publish"] is False and attempt["failures"] == []
    assert ledger.run(run.run_id).status == "pending_review" and ledger.run(run.run_id).summary["counts"]
    final = Path(str(ledger.assets(run.run_id)[0].final_path))
    assert main(["verify", "--json", "--policy", str(policy), str(final)]) == 0
    review = json.loads(capsys.readouterr().out)[0]["credential"]["generation_assertion"]["review"]
    assert review["by"] == "dana@example.com" and review["comment"] == "hero shot" and review["mode"] == "manual"


def test_finalize_refuses_to_run_beside_another_writer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tasks.storage.run_locks import FileRunLocks

    policy = write(tmp_path / "p.yaml", "review:\n  mode: manual\n")
    assert main(["run", str(write(tmp_path / "m.yaml", MANIFEST)), "--policy", str(policy)]) == 0
    run_id = work_ledger(tmp_path).runs()[0].run_id
    capsys.readouterr()
    with FileRunLocks(tmp_path / "work").hold(run_id):
        assert main(["finalize", run_id, "--policy", str(policy)]) == 2
        assert main(["publish", run_id, "--policy", str(policy)]) == 2
    assert capsys.readouterr().err.count(f"error: run {run_id} is already running") == 2


def test_rerunning_after_publish_keeps_top_k_and_blocked_prompts_stay_unsigned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write(
        tmp_path / "m.yaml",
        MANIFEST.replace(
            "prompts: [{prompt: a glass vase with tulips}]",
            "prompts: [{prompt: a glass vase with tulips}, {prompt: a red sneaker}]",
        ),
    )
    open_policy = write(tmp_path / "open.yaml", AUTO_PUBLISH_POLICY + "safety:\n  prompts:\n    enabled: false\n")
    assert main(["run", str(manifest), "--policy", str(open_policy)]) == 0
    ledger = work_ledger(tmp_path)
    run_id = ledger.runs()[0].run_id
    assert ledger.state_counts(run_id) == {"published": 4, "not_selected": 2}
    # The same manifest again, now under a policy that blocks one prompt and adds nothing else.
    strict = write(tmp_path / "strict.yaml", AUTO_PUBLISH_POLICY + "safety:\n  prompts:\n    blocklist: [sneaker]\n")
    assert main(["run", str(manifest), "--policy", str(strict)]) == 0
    assert "blocked, nothing generated" in capsys.readouterr().out
    assert ledger.state_counts(run_id) == {"published": 4, "not_selected": 2}  # nothing new selected or signed
