"""The batch flow end to end on the tiny embedded models, under a Prefect test harness."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from cli.main import main
from conftest import TINY_MANIFEST as MANIFEST
from conftest import work_ledger, write
from tasks.provenance import trust
from tasks.stages import runs
from tasks.stages.generate import CandidateSpec, choose_runtime, generate_candidates, load_pipeline
from tasks.stages.models import resolve_model
from tasks.storage.ledger import Ledger


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    return write(tmp_path / "policy.yaml", "generation:\n  chunk_size: 2\n  batch_size: 2\n")


def test_batch_flow_generates_scores_ranks_and_records(harness: None, tmp_path: Path, policy: Path) -> None:
    from prefect.client.orchestration import get_client

    from flows.batch import batch_flow

    manifest = write(tmp_path / "m.yaml", MANIFEST)
    summary = batch_flow(manifest=str(manifest), policy=str(policy))
    assert summary.status == "completed" and summary.generated_now == 6
    assert summary.counts == {"finalized": 4, "not_selected": 2}
    ledger = work_ledger(tmp_path)
    rows = ledger.candidates(summary.run_id)
    assert len(rows) == 6 and len({r.candidate_id for r in rows}) == 6
    for job_key in {r.job_key for r in rows}:
        members = sorted((r for r in rows if r.job_key == job_key), key=lambda r: r.rank)
        assert [r.rank for r in members] == [1, 2, 3]
        assert members[0].clip_score >= members[1].clip_score >= members[2].clip_score
        assert [r.state for r in members] == ["finalized", "finalized", "not_selected"]
    for row in rows:
        assert Path(row.image_path).is_file() and row.image_path.startswith(summary.image_dir)
        assert row.clip_score == pytest.approx(2.5 * max(row.clip_cosine, 0.0))
        assert row.model_identity["name"] == "embedded:tiny-sd" and len(row.model_identity["digest"]) == 64
        assert row.generation["device"] == "cpu" and row.generation["batch_invariant"] is True
        expected = ["planned", "generated", "scored", "screened_passed"] + (
            ["selected", "approved", "finalized"] if row.rank <= 2 else ["not_selected"]
        )
        assert [h.to_state for h in ledger.history(row.run_id, row.candidate_id)] == expected
    assert len(ledger.embeddings(summary.run_id, "embedded:tiny-clip")) == 6

    import asyncio

    async def artifact_keys() -> set[str]:
        async with get_client() as client:
            return {a.key for a in await client.read_artifacts() if a.key}

    keys = asyncio.run(artifact_keys())
    assert any(k.startswith("ranking-e2e-") for k in keys) and any(k.startswith("summary-e2e-") for k in keys)


def test_candidates_do_not_depend_on_their_batch(tmp_path: Path) -> None:
    loaded = load_pipeline(resolve_model("embedded:tiny-sd"), choose_runtime("cpu", "float32", "auto"))
    specs = [
        CandidateSpec(
            candidate_id=f"seed{s}",
            model_ref="embedded:tiny-sd",
            prompt="a cat",
            negative_prompt="dull",
            width=256,
            height=256,
            steps=2,
            guidance=5.0,
            scheduler="euler_a",
            seed=s,
        )
        for s in (1, 2, 3)
    ]
    together = generate_candidates(loaded, specs, tmp_path / "batch", batch_size=3)
    alone = [generate_candidates(loaded, [spec], tmp_path / "alone", batch_size=1)[0] for spec in specs]
    assert [g.pixel_sha256 for g in together] == [g.pixel_sha256 for g in alone]
    assert len({g.pixel_sha256 for g in together}) == 3  # different seeds really give different images


def test_interrupted_run_resumes_without_duplicates(
    harness: None, tmp_path: Path, policy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows import batch

    manifest = write(tmp_path / "m.yaml", MANIFEST)
    real_generate = runs.generate_chunk
    calls = {"n": 0}

    def flaky(*args: object, **kwargs: object) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the operator pressed Ctrl-C during the second chunk
        return real_generate(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(batch.generate_task, "fn", flaky)
    with pytest.raises(KeyboardInterrupt):
        batch.batch_flow(manifest=str(manifest), policy=str(policy))
    ledger = work_ledger(tmp_path)
    run_id = ledger.runs()[0].run_id
    assert ledger.run(run_id).status == "interrupted"
    assert ledger.state_counts(run_id) == {"generated": 2, "planned": 4}
    first_files = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "work/candidates").rglob("*.png")}

    monkeypatch.setattr(batch.generate_task, "fn", real_generate)
    summary = batch.batch_flow(manifest=str(manifest), policy=str(policy))
    assert summary.generated_now == 4
    assert summary.counts == {"finalized": 4, "not_selected": 2}
    files = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "work/candidates").rglob("*.png")}
    assert len(files) == 6 and all(files[name] == mtime for name, mtime in first_files.items())
    assert ledger.run(run_id).attempts == 2

    again = batch.batch_flow(manifest=str(manifest), policy=str(policy))
    assert again.generated_now == 0 and again.counts == summary.counts
    with sqlite3.connect(tmp_path / "work/ledger.sqlite") as db:
        assert db.execute("select count(*) from candidates").fetchone()[0] == 6


def test_cli_run_show_and_replay(
    tmp_path: Path, policy: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = write(tmp_path / "m.yaml", MANIFEST.replace("candidates: 3", "candidates: 2"))
    assert main(["run", str(manifest), "--policy", str(policy)]) == 0
    out = capsys.readouterr().out
    assert "completed" in out and "Best candidates per prompt" in out and "Ledger: sqlite:///" in out
    ledger = work_ledger(tmp_path)
    run_id = ledger.runs()[0].run_id
    best = ledger.candidates(run_id)[0]
    assert main(["show", run_id, "--policy", str(policy)]) == 0
    assert "a red cube on a table" in capsys.readouterr().out
    assert main(["show", best.candidate_id[:10], "--policy", str(policy)]) == 0
    shown = capsys.readouterr().out
    assert best.pixel_sha256 in shown and "planned -> generated" in shown
    assert main(["replay", best.candidate_id, "--policy", str(policy), "--out", str(tmp_path / "again.png")]) == 0
    assert "MATCH" in capsys.readouterr().out and (tmp_path / "again.png").is_file()
    assert main(["runs", "--policy", str(policy)]) == 0
    assert run_id in capsys.readouterr().out

    # A candidate two runs share (same pixels, another campaign) is shown with every run's record.
    other = write(tmp_path / "m2.yaml", manifest.read_text().replace("id: e2e", "id: e2e-again"))
    assert main(["run", str(other), "--policy", str(policy)]) == 0
    capsys.readouterr()
    assert len({r.run_id for r in ledger.find_candidates(best.candidate_id)}) == 2
    assert main(["show", best.candidate_id, "--policy", str(policy)]) == 0
    shown = capsys.readouterr().out
    for row in ledger.find_candidates(best.candidate_id):
        assert f"candidate {best.candidate_id} in run {row.run_id}" in shown
    assert re.search(r"CLIPScore: \d+\.\d{4}\n", shown) and "cosine: " in shown
    for heading in ("\nsafety\n", "verdict: passed", "\nreview\n", "decision:", "\nprovenance\n", "asset key:"):
        assert heading in shown, heading
    assert "watermark payload:" in shown and f"validation: {trust.DEVELOPMENT}" in shown
    # c2pa's raw state appears only in the recorded history, with the label beside it
    assert "Trusted" not in shown.replace(f'"validation": "Trusted", "trust": "{trust.DEVELOPMENT}"', "")
    assert main(["show", best.candidate_id, "--json", "--policy", str(policy)]) == 0
    records = json.loads(capsys.readouterr().out)["candidates"]
    assert {r["run_id"] for r in records} == {r.run_id for r in ledger.runs()}
    assert records[0]["provenance"]["trust"] == trust.DEVELOPMENT and records[0]["safety"]["verdict"] == "passed"
    assert main(["show", run_id, "--json", "--policy", str(policy)]) == 0
    shown_run = json.loads(capsys.readouterr().out)
    assert shown_run["kind"] == "run" and shown_run["run_id"] == run_id and shown_run["jobs"][0]["candidates"]

    # Run ids are what users copy: never cut at 80 columns; --json lists the same runs.
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["runs", "--policy", str(policy)]) == 0
    listed = capsys.readouterr().out
    assert all(r.run_id in listed for r in ledger.runs())
    assert main(["runs", "--json", "--policy", str(policy)]) == 0
    runs_json = json.loads(capsys.readouterr().out)["runs"]
    assert {r["run_id"] for r in runs_json} == {r.run_id for r in ledger.runs()}
    assert set(runs_json[0]) == {
        "run_id",
        "campaign_id",
        "campaign_name",
        "status",
        "attempts",
        "created_at",
        "updated_at",
        "counts",
    }


def test_runs_and_show_refuse_a_folder_without_a_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASSETMINT_WORK_DIR", str(tmp_path / "elsewhere"))
    for args in (["runs"], ["show", "abcdef123"], ["runs", "--json"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"no ledger at {tmp_path / 'elsewhere' / 'ledger.sqlite'}" in err and "ASSETMINT_WORK_DIR" in err
        assert "Traceback" not in err
    assert not (tmp_path / "elsewhere").exists()


def test_replay_reports_a_mismatch(tmp_path: Path, policy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write(tmp_path / "m.yaml", MANIFEST.replace("candidates: 3", "candidates: 1"))
    assert main(["run", str(manifest), "--policy", str(policy)]) == 0
    db = tmp_path / "work/ledger.sqlite"
    with sqlite3.connect(db) as conn:
        candidate = conn.execute("select candidate_id from candidates limit 1").fetchone()[0]
        conn.execute("update candidates set pixel_sha256 = ? where candidate_id = ?", ("0" * 64, candidate))
    capsys.readouterr()
    assert main(["replay", candidate, "--policy", str(policy)]) == 1
    assert "MISMATCH" in capsys.readouterr().out


def test_bad_input_leaves_the_ledger_untouched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing_model = write(tmp_path / "m.yaml", MANIFEST.replace("embedded:tiny-sd", "./no/such/model"))
    allow_all = write(tmp_path / "p.yaml", "generation:\n  allowed_models: ['*']\n")
    assert main(["run", str(missing_model), "--policy", str(allow_all)]) == 2
    assert "model folder './no/such/model' does not exist" in capsys.readouterr().err
    assert not (tmp_path / "work/ledger.sqlite").exists()

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the work directory should be")
    bad_dir = write(tmp_path / "p2.yaml", f"work_dir: {blocked}/sub\n")
    monkey_env = dict(ASSETMINT_WORK_DIR="")
    import os

    old = os.environ.pop("ASSETMINT_WORK_DIR")
    try:
        assert main(["run", str(write(tmp_path / "ok.yaml", MANIFEST)), "--policy", str(bad_dir)]) == 2
    finally:
        os.environ["ASSETMINT_WORK_DIR"] = old
    err = capsys.readouterr().err
    assert "is not a writable folder (Not a directory)" in err and "Traceback" not in err
    del monkey_env


def test_second_run_of_the_same_manifest_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tasks.core.manifest import load_plan
    from tasks.storage.run_locks import FileRunLocks

    manifest = write(tmp_path / "m.yaml", MANIFEST)
    run_id = load_plan(manifest).run_id
    with FileRunLocks(tmp_path / "work").hold(run_id):
        assert main(["run", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert f"run {run_id} is already running" in err
    ledger_file = tmp_path / "work/ledger.sqlite"
    assert not ledger_file.exists() or not Ledger.open_file(ledger_file).runs()


def test_unknown_models_fail_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    allow_all = write(tmp_path / "p.yaml", "generation:\n  allowed_models: ['*']\n")
    hub = write(tmp_path / "hub.yaml", MANIFEST.replace("embedded:tiny-sd", "someorg/some-model"))
    assert main(["run", str(hub), "--policy", str(allow_all)]) == 2
    assert "'someorg/some-model' is not in the local Hugging Face cache" in capsys.readouterr().err
    bad_clip = write(tmp_path / "clip.yaml", "scoring:\n  clip_model: 'NoSuchNet:x'\n")
    assert main(["run", str(write(tmp_path / "m.yaml", MANIFEST)), "--policy", str(bad_clip)]) == 2
    err = capsys.readouterr().err
    assert "unknown open_clip model 'NoSuchNet'" in err and "ViT-B-32" in err
    bad_tag = write(tmp_path / "tag.yaml", "scoring:\n  clip_model: 'ViT-B-32:nonsense'\n")
    assert main(["run", str(write(tmp_path / "m.yaml", MANIFEST)), "--policy", str(bad_tag)]) == 2
    assert "valid tags: " in capsys.readouterr().err and not (tmp_path / "work/ledger.sqlite").exists()
    assert main(["run", str(write(tmp_path / "m.yaml", MANIFEST.replace("tiny-sd", "huge-sd")))]) == 2
    valid = "embedded:shapes-clip, embedded:shapes-sd, embedded:tiny-clip, embedded:tiny-sd"
    assert f"valid embedded models are: {valid}" in capsys.readouterr().err


def test_overlong_prompts_are_recorded_as_truncated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    long_prompt = "a lamp on a desk, " + ", ".join(f"detail number {i}" for i in range(40))
    manifest = write(
        tmp_path / "m.yaml",
        MANIFEST.replace('"a {thing} on a table"', f'"{long_prompt}"')
        .replace("    vars: {thing: [red cube, blue ball]}\n", "")
        .replace("candidates: 3", "candidates: 1"),
    )
    for _attempt in range(2):  # the rerun has nothing to generate and still reports what was recorded
        assert main(["run", str(manifest)]) == 0
        out = capsys.readouterr().out.replace("\n", " ")
        assert "tokens too long for the CLIP scorer; the end is ignored" in out
        assert "tokens too long for the generator text encoder" in out
    job = work_ledger(tmp_path).jobs(work_ledger(tmp_path).runs()[0].run_id)[0]
    assert len(job.warnings) == 2
