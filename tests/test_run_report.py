"""What a run reports: contact sheet, score chart, blocked and flagged prompts, in the summary and its artifacts."""

from __future__ import annotations

import asyncio
from pathlib import Path

from PIL import Image

from conftest import AUTO_PUBLISH_POLICY, FLAG_EVERYTHING, SAFETY_MANIFEST, write
from tasks.stages.report import contact_sheet, data_uri, score_histogram

MANIFEST = SAFETY_MANIFEST.replace("{id: safe, name: Safety}", "{id: report, name: Report}")


def test_contact_sheet_is_a_small_jpeg_of_every_image(tmp_path: Path) -> None:
    paths = []
    for index in range(30):
        path = tmp_path / f"{index}.png"
        Image.effect_noise((256, 256), 80).convert("RGB").save(path)  # noise: the worst case for JPEG size
        paths.append(path)
    sheet = contact_sheet(paths, [f"p{i}" for i in range(30)], max_bytes=60_000)
    assert sheet is not None and len(sheet) <= 60_000 and sheet[:2] == b"\xff\xd8"
    assert data_uri(sheet).startswith("data:image/jpeg;base64,")
    assert contact_sheet([tmp_path / "missing.png"], ["x"]) is None


def test_score_histogram_counts_every_score() -> None:
    chart = score_histogram([20.0, 20.5, 25.0, 30.0], bins=5)
    assert len(chart.splitlines()) == 5 and sum(int(line.split()[-1]) for line in chart.splitlines()) == 4
    assert score_histogram([]) == "(no scores)"


def test_blocked_and_all_flagged_prompts_are_listed(harness: None, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    from flows.batch import batch_flow

    policy = write(tmp_path / "p.yaml", FLAG_EVERYTHING)
    summary = batch_flow(manifest=str(write(tmp_path / "m.yaml", MANIFEST)), policy=str(policy))
    assert summary.best == [] and len(summary.scores) == 2
    assert len(summary.blocked_prompts) == 1 and summary.blocked_prompts[0].startswith("bad: ")
    assert summary.flagged_prompts == ["ok: 2 of 2 candidates flagged"]

    async def markdown() -> str:
        async with get_client() as client:
            artifacts = await client.read_artifacts()
        return next(str(a.data) for a in artifacts if a.key == f"summary-{summary.run_id.lower()}")

    text = asyncio.run(markdown())
    for expected in ("## Blocked prompts", "- bad: ", "## Flagged by the image filters", "- ok: 2 of 2", "```"):
        assert expected in text
    assert f"assetmint review {summary.run_id}" in text


def test_published_candidates_stay_in_the_ranking(harness: None, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    from flows.batch import batch_flow

    policy = write(tmp_path / "p.yaml", AUTO_PUBLISH_POLICY)
    manifest = write(tmp_path / "m.yaml", MANIFEST.replace("a n.u.d.e model on a beach", "a teapot"))
    summary = batch_flow(manifest=str(manifest), policy=str(policy))
    assert [b["state"] for b in summary.best] == ["published", "published"]

    async def keys() -> dict[str, object]:
        async with get_client() as client:
            return {a.key: a.data for a in await client.read_artifacts() if a.key}

    artifacts = asyncio.run(keys())
    key = summary.run_id.lower()
    assert artifacts[f"ranking-{key}"] and "published" in str(artifacts[f"ranking-{key}"])
    sheet = str(artifacts[f"contact-sheet-{key}"])
    assert "data:image/jpeg;base64," in sheet and len(sheet) <= 200_000
    assert (Path(summary.run_dir) / "contact-sheet.jpg").is_file()
