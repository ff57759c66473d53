"""What a rerun does after an edit: the run is named by what makes pixels, and no image is ever made twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import TINY_MANIFEST, work_ledger, write
from tasks.core.manifest import load_plan

MANIFEST = TINY_MANIFEST.replace("campaign: {id: e2e, name: End to end}", "campaign: {id: rerun, name: Rerun}")


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    return write(tmp_path / "policy.yaml", "generation:\n  chunk_size: 4\n  batch_size: 2\n")


def _run_id(tmp_path: Path, text: str) -> str:
    return load_plan(write(tmp_path / "variant.yaml", text)).run_id


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("candidates: 3", "candidates: 6"),
        ("keep_top_k: 2", "keep_top_k: 1"),
        ("keep_top_k: 2", "keep_top_k: 2\n  output_format: jpeg"),
        ("candidates: 3\n  base_seed: 5", "seeds: [5, 6, 7, 8]"),
        ("campaign: {id: rerun, name: Rerun}", "campaign: {id: rerun, name: Renamed}"),
        ("vars: {thing: [red cube, blue ball]}", "vars: {thing: [blue ball, red cube]}"),
    ],
)
def test_edits_that_make_no_new_pixels_keep_the_run(tmp_path: Path, old: str, new: str) -> None:
    assert old in MANIFEST
    assert _run_id(tmp_path, MANIFEST.replace(old, new)) == _run_id(tmp_path, MANIFEST)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("steps: 2", "steps: 3"),
        ("guidance: 4.0", "guidance: 5.0"),
        ("width: 256", "width: 264"),
        ("red cube", "green cube"),
        ("campaign: {id: rerun,", "campaign: {id: other,"),
    ],
)
def test_edits_that_change_pixels_or_the_campaign_name_another_run(tmp_path: Path, old: str, new: str) -> None:
    assert old in MANIFEST
    assert _run_id(tmp_path, MANIFEST.replace(old, new)) != _run_id(tmp_path, MANIFEST)


def _images(tmp_path: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (tmp_path / "work" / "candidates").rglob("*.png")}


def test_more_candidates_generate_only_the_new_seeds_and_keep_decisions(
    harness: None, tmp_path: Path, policy: Path
) -> None:
    from flows.batch import batch_flow

    first = batch_flow(manifest=str(write(tmp_path / "m.yaml", MANIFEST)), policy=str(policy))
    assert first.generated_now == 6
    before = _images(tmp_path)
    ledger = work_ledger(tmp_path)
    finalized = {r.candidate_id for r in ledger.candidates(first.run_id) if r.state == "finalized"}
    assert len(finalized) == 4

    more = batch_flow(
        manifest=str(write(tmp_path / "m.yaml", MANIFEST.replace("candidates: 3", "candidates: 5"))),
        policy=str(policy),
    )
    assert more.run_id == first.run_id
    assert more.generated_now == 4  # seeds 8 and 9 of each of the two jobs, nothing else
    after = _images(tmp_path)
    assert len(after) == 10 and all(after[name] == mtime for name, mtime in before.items())
    rows = ledger.candidates(first.run_id)
    assert sorted({r.seed for r in rows}) == [5, 6, 7, 8, 9]
    assert finalized <= {r.candidate_id for r in rows if r.state == "finalized"}  # signed picks keep their slots
    assert ledger.run(first.run_id).attempts == 2


@pytest.mark.parametrize(
    "edit",
    [("keep_top_k: 2", "keep_top_k: 1"), ("keep_top_k: 2", "keep_top_k: 2\n  output_format: jpeg")],
    ids=["keep_top_k", "output_format"],
)
def test_selection_or_delivery_edits_generate_nothing(
    harness: None, tmp_path: Path, policy: Path, edit: tuple[str, str]
) -> None:
    from flows.batch import batch_flow

    first = batch_flow(manifest=str(write(tmp_path / "m.yaml", MANIFEST)), policy=str(policy))
    before = _images(tmp_path)
    edited = batch_flow(manifest=str(write(tmp_path / "m.yaml", MANIFEST.replace(*edit))), policy=str(policy))
    assert edited.run_id == first.run_id and edited.generated_now == 0
    assert _images(tmp_path) == before


def test_another_campaign_reuses_every_image_made_before(harness: None, tmp_path: Path, policy: Path) -> None:
    from flows.batch import batch_flow

    first = batch_flow(manifest=str(write(tmp_path / "m.yaml", MANIFEST)), policy=str(policy))
    before = _images(tmp_path)
    other = MANIFEST.replace("campaign: {id: rerun,", "campaign: {id: summer,")
    second = batch_flow(manifest=str(write(tmp_path / "other.yaml", other)), policy=str(policy))
    assert second.run_id != first.run_id
    assert second.generated_now == 0 and _images(tmp_path) == before
    ledger = work_ledger(tmp_path)
    originals = {r.candidate_id: r for r in ledger.candidates(first.run_id)}
    reused = ledger.candidates(second.run_id)
    assert len(reused) == 6
    for row in reused:
        assert row.image_path == originals[row.candidate_id].image_path
        assert row.pixel_sha256 == originals[row.candidate_id].pixel_sha256
        assert row.generation["reused_from_run"] == first.run_id


def test_an_image_whose_file_changed_is_generated_again(harness: None, tmp_path: Path, policy: Path) -> None:
    from flows.batch import batch_flow

    first = batch_flow(manifest=str(write(tmp_path / "m.yaml", MANIFEST)), policy=str(policy))
    ledger = work_ledger(tmp_path)
    damaged = ledger.candidates(first.run_id)[0]
    Path(str(damaged.image_path)).write_bytes(b"not the recorded image")
    other = MANIFEST.replace("campaign: {id: rerun,", "campaign: {id: summer,")
    second = batch_flow(manifest=str(write(tmp_path / "other.yaml", other)), policy=str(policy))
    assert second.generated_now == 1
    regenerated = next(r for r in ledger.candidates(second.run_id) if r.candidate_id == damaged.candidate_id)
    assert regenerated.pixel_sha256 == damaged.pixel_sha256  # same inputs, same pixels
    assert "reused_from_run" not in regenerated.generation


def test_dropped_seeds_stay_in_the_run_but_are_never_picked_again(harness: None, tmp_path: Path, policy: Path) -> None:
    from flows.batch import batch_flow

    manual = write(tmp_path / "manual.yaml", "generation:\n  chunk_size: 4\n  batch_size: 2\nreview:\n  mode: manual\n")
    first = batch_flow(manifest=str(write(tmp_path / "m.yaml", MANIFEST)), policy=str(manual))
    ledger = work_ledger(tmp_path)
    assert {r.seed for r in ledger.candidates(first.run_id) if r.state == "selected"} - {5, 6, 7} == set()
    fewer = MANIFEST.replace("candidates: 3\n  base_seed: 5", "seeds: [5]")
    again = batch_flow(manifest=str(write(tmp_path / "m.yaml", fewer)), policy=str(manual))
    assert again.run_id == first.run_id and again.generated_now == 0
    rows = ledger.candidates(first.run_id)
    assert len(rows) == 6  # nothing deleted
    assert {r.seed for r in rows if r.state == "selected"} == {5}
    dropped = [r for r in rows if r.seed != 5]
    assert all(r.state == "not_selected" for r in dropped)
    reasons = [e.detail.get("why", "") for r in dropped for e in ledger.history(first.run_id, r.candidate_id)]
    assert any("no longer in the manifest" in why for why in reasons)
