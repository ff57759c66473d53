"""Safety screening wired into the batch flow: blocked prompts, flagged images, enforcement, evaluation CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from cli.main import main
from conftest import FLAG_EVERYTHING, work_ledger, write
from conftest import SAFETY_MANIFEST as MANIFEST


def test_blocked_prompt_generates_nothing_and_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(write(tmp_path / "m.yaml", MANIFEST))]) == 0
    out = capsys.readouterr().out
    assert "prompt bad blocked, nothing generated: blocked: blocklist term 'nude'" in out
    ledger = work_ledger(tmp_path)
    run_id = ledger.runs()[0].run_id
    rows = ledger.candidates(run_id)
    assert {r.prompt for r in rows} == {"a ceramic mug on a wooden desk"}
    bad_job = next(j for j in ledger.jobs(run_id) if j.prompt_id == "bad")
    assert bad_job.screening["blocked"] and bad_job.screening["rule"] == "blocklist"
    good = [r for r in rows if r.state == "finalized"]
    assert len(good) == 1 and good[0].safety["filters_run"] == ["nsfw", "concepts"]
    assert all(result["flagged"] is False for result in good[0].safety["results"])


def test_flagged_candidates_are_kept_ranked_and_never_selected(tmp_path: Path) -> None:
    policy = write(tmp_path / "p.yaml", FLAG_EVERYTHING)
    manifest = write(tmp_path / "m.yaml", MANIFEST.replace("a n.u.d.e model on a beach", "a teapot"))
    assert main(["run", str(manifest), "--policy", str(policy)]) == 0
    ledger = work_ledger(tmp_path)
    run_id = ledger.runs()[0].run_id
    rows = ledger.candidates(run_id)
    assert {r.state for r in rows} == {"screened_flagged"}
    assert all(r.rank in (1, 2) and Path(str(r.image_path)).is_file() for r in rows)  # kept, not blacked out
    assert all("anything at all" in " ".join(r.safety["reasons"]) for r in rows)
    assert ledger.assets(run_id) == [] and not (Path(ledger.run(run_id).run_dir) / "final").exists()


def test_turning_a_filter_off_is_loud_and_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = write(tmp_path / "p.yaml", "safety:\n  nsfw:\n    enabled: false\n")
    manifest = write(tmp_path / "m.yaml", MANIFEST.replace("a n.u.d.e model on a beach", "a teapot"))
    assert main(["run", str(manifest), "--policy", str(policy)]) == 0
    assert "safety filter nsfw is OFF in the policy" in capsys.readouterr().out
    ledger = work_ledger(tmp_path)
    run = ledger.runs()[0]
    assert any("nsfw is OFF" in w for w in run.summary["warnings"])
    finalized = ledger.candidates(run.run_id, ["finalized"])
    assert finalized and all(r.safety["filters_off"] == ["nsfw"] for r in finalized)


def test_safety_eval_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "labelled"
    folder.mkdir()
    rows = ["filename,label"]
    for i in range(6):
        Image.effect_noise((128, 128), 20 + 10 * i).convert("RGB").save(folder / f"{i}.png")
        rows.append(f"{i}.png,{'unsafe' if i % 2 else 'safe'}")
    labels = write(tmp_path / "labels.csv", "\n".join(rows) + "\n")
    assert main(["safety", "eval", str(folder), "--labels", str(labels), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "nsfw" in json.dumps(report) and "combined" in json.dumps(report)
    bad = write(tmp_path / "bad.csv", "filename,label\n0.png,maybe\n")
    assert main(["safety", "eval", str(folder), "--labels", str(bad)]) == 2
    assert "maybe" in capsys.readouterr().err
