"""The review web app over HTTP (FastAPI TestClient) on a run produced by the real batch flow in manual review mode."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from cli.main import main
from cli.review import start_delivery
from conftest import FUZZ, REPO, TINY_WATERMARK, serve_on_loopback, write
from policies.model import Policy, load_policy
from tasks.core.states import CandidateState, can_transition
from tasks.stages.delivery import last_delivery
from tasks.storage.ledger import CandidateRow, CandidateScore, GeneratedImage, Ledger, PlannedCandidate, sqlite_url
from tasks.storage.run_locks import FileRunLocks
from tasks.web.review.app import create_app
from tasks.web.review.delivery import DeliverySubmitter
from tasks.web.review.security import SECURITY_HEADERS

TOKEN = "review-test-token-0123456789abcdef"
BASE = "http://127.0.0.1:8765"
POLICY = "review: {mode: manual}\n" + TINY_WATERMARK  # review is the subject, not the mark (see conftest)
XSS_PROMPT = "a red cube <script>alert(1)</script> <b>bold</b>"
MANIFEST = f"""\
campaign: {{id: review, name: "Spring <i>review</i>"}}
defaults:
  model: embedded:tiny-sd
  width: 256
  height: 256
  steps: 2
  candidates: 3
  base_seed: 11
  keep_top_k: 1
  negative_prompt: blurry
prompts:
  - {{id: hero, prompt: "{XSS_PROMPT}"}}
  - {{id: mug, prompt: a ceramic mug on a wooden desk}}
"""
FLAGGED_RUN = "flagged-run"
FLAGGED_ID = "f1a99ed0000000000001"


def produce_run(root: Path, model_cache: Path) -> dict[str, Any]:
    """Run the real batch flow in manual review mode into `root`; returns where the ledger, run and policy are."""
    env = {
        "ASSETMINT_CACHE_DIR": str(model_cache),
        "ASSETMINT_CONFIG_DIR": str(root / "config"),
        "ASSETMINT_WORK_DIR": str(root / "work"),
    }
    policy_path = write(root / "policy.yaml", POLICY)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert main(["run", str(write(root / "manifest.yaml", MANIFEST)), "--policy", str(policy_path)]) == 0
    database = root / "work" / "ledger.sqlite"
    run_id = Ledger.open_file(database).runs()[0].run_id
    return {"root": root, "database": database, "run_id": run_id, "policy": load_policy(policy_path)}


def add_flagged_run(database: Path, source_run: str, root: Path) -> None:
    """A second run in the same ledger whose one candidate safety screening flagged (real image, own run dir)."""
    ledger = Ledger.open_file(database)
    source = ledger.candidates(source_run)[0]
    run_dir = root / "work" / "runs" / FLAGGED_RUN
    image = run_dir / "candidates" / f"{FLAGGED_ID}.png"
    image.parent.mkdir(parents=True)
    shutil.copyfile(str(source.image_path), image)
    ledger.start_run(
        run_id=FLAGGED_RUN,
        campaign_id="flagged",
        campaign_name="Flagged",
        manifest_path=str(root / "flagged.yaml"),
        manifest_sha256="0" * 64,
        policy={},
        run_dir=str(run_dir),
        jobs=[
            {
                "job_key": "flaggedjob",
                "prompt_id": "risky",
                "variant": "",
                "prompt": "a risky picture",
                "variables": {},
                "keep_top_k": 1,
                "output_format": "png",
            }
        ],
        candidates=[
            PlannedCandidate(
                candidate_id=FLAGGED_ID,
                job_key="flaggedjob",
                seed=1,
                prompt="a risky picture",
                negative_prompt="",
                model_ref=source.model_ref,
                model_identity=source.model_identity,
                pipeline_kind=source.pipeline_kind,
                width=256,
                height=256,
                steps=2,
                guidance=5.0,
                scheduler=source.scheduler,
            )
        ],
    )
    ledger.record_generated(
        FLAGGED_RUN, [GeneratedImage(FLAGGED_ID, str(image), "a" * 64, "b" * 64, {"device": "cpu"})]
    )
    ledger.record_scores(FLAGGED_RUN, [CandidateScore(FLAGGED_ID, "embedded:tiny-clip", 0.5, 0.2, b"", 0)])
    reason = "concepts 'a weapon' score 0.310 >= threshold -1.000"
    result = {"filter": "concepts", "label": "a weapon", "score": 0.31, "threshold": -1.0, "flagged": True}
    verdict = {
        "flagged": True,
        "results": [result],
        "reasons": [reason],
        "filters_run": ["concepts"],
        "filters_off": ["nsfw"],
    }
    ledger.record_screening(FLAGGED_RUN, {FLAGGED_ID: verdict})
    ledger.record_selection(FLAGGED_RUN, {FLAGGED_ID: 1}, set(), {})


@pytest.fixture(scope="module")
def produced(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("review")
    made = produce_run(root, model_cache)
    add_flagged_run(made["database"], made["run_id"], root)
    return made


@pytest.fixture
def ledger_url(produced: dict[str, Any], tmp_path: Path) -> str:
    """A private copy of the produced ledger, so every test starts from the same undecided run."""
    target = tmp_path / "ledger.sqlite"
    source, copy = sqlite3.connect(produced["database"]), sqlite3.connect(target)
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()
    return sqlite_url(target)


def make_client(
    ledger_url: str,
    policy: Policy,
    override: bool = False,
    reviewer: str = "alice",
    submit: DeliverySubmitter | None = start_delivery,
) -> TestClient:
    if override:
        policy = policy.model_copy(update={"safety": policy.safety.model_copy(update={"human_override": True})})
    return TestClient(create_app(ledger_url, policy, TOKEN, reviewer, submit_delivery=submit), base_url=BASE)


def login(client: TestClient, path: str = "/") -> str:
    """Exchange the token for the session cookie; returns the page's CSRF token."""
    page = client.get(f"{path}?token={TOKEN}")
    assert page.status_code == 200
    return csrf_of(page.text)


def csrf_of(html: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([0-9a-f]{64})">', html)
    assert match, "the page carries no CSRF token"
    return match.group(1)


@pytest.fixture
def client(ledger_url: str, produced: dict[str, Any]) -> TestClient:
    return make_client(ledger_url, produced["policy"])


def by_score(rows: list[CandidateRow]) -> list[str]:
    return [r.candidate_id for r in sorted(rows, key=lambda r: -(r.clip_score or 0.0))]


def test_every_request_needs_the_token(client: TestClient, produced: dict[str, Any]) -> None:
    run_id = produced["run_id"]
    cid = client.app.state.ledger.candidates(run_id)[0].candidate_id
    urls = ["/", "/api/runs", f"/runs/{run_id}", f"/runs/{run_id}/candidates/{cid}", "/static/review.js"]
    urls += [f"/runs/{run_id}/candidates/{cid}/image", f"/api/runs/{run_id}/finalize", "/no-such-page"]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 401, url
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value
        assert client.get(url, headers={"Authorization": "Bearer wrong-token"}).status_code == 401
        assert client.get(f"{url}?token=wrong-token", follow_redirects=False).status_code == 401
        client.cookies.set(client.app.state.gate.cookie_name, "forged.cookie")
        assert client.get(url).status_code == 401
        client.cookies.clear()
    decision = client.post(f"/runs/{run_id}/candidates/{cid}/decision", json={"decision": "approve"})
    assert decision.status_code == 401
    bearer = client.get(f"/runs/{run_id}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert bearer.status_code == 200
    assert (
        bearer.headers["x-frame-options"] == "DENY" and "script-src 'self'" in bearer.headers["content-security-policy"]
    )
    assert client.get("/static/review.js", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_token_in_the_url_becomes_a_cookie_and_is_removed(client: TestClient, produced: dict[str, Any]) -> None:
    run_id = produced["run_id"]
    response = client.get(f"/runs/{run_id}?show=pending&token={TOKEN}", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/runs/{run_id}?show=pending"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and TOKEN not in cookie
    assert client.get(f"/runs/{run_id}?show=pending").status_code == 200  # the cookie alone is enough now
    assert client.get("/static/review.css").status_code == 200
    assert client.post(f"/runs/{run_id}/finalize?token={TOKEN}").status_code == 401  # only GET exchanges the token
    sneaky = client.get(f"{BASE}//evil.test/?token={TOKEN}", follow_redirects=False)
    assert sneaky.status_code == 303 and sneaky.headers["location"] == "/evil.test/"


def test_runs_list_and_contact_sheet_in_score_order(
    client: TestClient, ledger_url: str, produced: dict[str, Any]
) -> None:
    login(client)
    run_id = produced["run_id"]
    runs = client.get("/").text
    assert (
        run_id in runs
        and "Spring &lt;i&gt;review&lt;/i&gt;" in runs
        and "4 not_selected" in runs
        and "2 selected" in runs
    )
    ledger = Ledger.open(ledger_url)
    rows = ledger.candidates(run_id)
    page = client.get(f"/runs/{run_id}").text
    assert page.count('class="bar"') == 20 and "<svg" in page  # server-rendered histogram
    api = client.get(f"/api/runs/{run_id}/candidates").json()
    assert [g["prompt_id"] for g in api["groups"]] == ["hero", "mug"]
    for group in api["groups"]:
        expected = by_score([r for r in rows if r.job_key == group["job_key"]])
        got = [c["candidate_id"] for c in group["candidates"]]
        assert got == expected
        assert [c["rank"] for c in group["candidates"]] == [1, 2, 3]
        positions = [page.index(f'id="c-{cid}"') for cid in got]
        assert positions == sorted(positions)  # the HTML shows them best first too
    pending = client.get(f"/api/runs/{run_id}/candidates?show=pending").json()
    assert sum(len(g["candidates"]) for g in pending["groups"]) == 2  # selected and awaiting a decision
    assert client.get(f"/api/runs/{run_id}/candidates?show=flagged").json()["groups"] == []
    assert client.get(f"/runs/{run_id}?show=bogus").status_code == 400
    assert client.get("/runs/no-such-run").status_code == 404


def test_candidate_detail_shows_parameters_and_history(
    client: TestClient, ledger_url: str, produced: dict[str, Any]
) -> None:
    login(client)
    run_id = produced["run_id"]
    row = Ledger.open(ledger_url).candidates(run_id)[0]
    page = client.get(f"/runs/{run_id}/candidates/{row.candidate_id}").text
    for text in (str(row.seed), row.scheduler, "256×256", "blurry", row.model_ref, str(row.model_identity["name"])):
        assert text in page
    assert "<th>steps</th><td>2</td>" in page and f"<th>guidance</th><td>{row.guidance}</td>" in page
    assert "<td>-</td><td>planned</td>" in page and "<td>planned</td><td>generated</td>" in page
    assert row.model_identity["digest"] in page
    assert "Not finalized." in page


def test_prompt_html_is_escaped_everywhere(client: TestClient, ledger_url: str, produced: dict[str, Any]) -> None:
    csrf = login(client)
    run_id = produced["run_id"]
    row = next(r for r in Ledger.open(ledger_url).candidates(run_id) if "<script>" in r.prompt)
    comment = '<img src=x onerror="alert(2)">'
    client.post(
        f"/runs/{run_id}/candidates/{row.candidate_id}/decision",
        json={"decision": "reject", "comment": comment},
        headers={"X-CSRF-Token": csrf},
    )
    for url in (f"/runs/{run_id}", f"/runs/{run_id}/candidates/{row.candidate_id}"):
        page = client.get(url).text
        assert "&lt;script&gt;alert(1)&lt;/script&gt; &lt;b&gt;bold&lt;/b&gt;" in page
        assert "<script>alert" not in page and "<b>bold" not in page and "<img src=x" not in page
        assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/review.js" defer>']  # no inline script
    assert "&lt;img src=x onerror=" in client.get(f"/runs/{run_id}/candidates/{row.candidate_id}").text


def test_decisions_are_recorded_with_reviewer_and_comment(
    client: TestClient, ledger_url: str, produced: dict[str, Any]
) -> None:
    csrf = login(client)
    run_id = produced["run_id"]
    ledger = Ledger.open(ledger_url)
    first, second, third = by_score(ledger.candidates(run_id))[:3]
    approve = client.post(
        f"/runs/{run_id}/candidates/{first}/decision",
        json={"decision": "approve", "comment": "hero shot"},
        headers={"X-CSRF-Token": csrf},
    )
    assert approve.status_code == 200 and approve.json()["state"] == "approved"
    form = client.post(
        f"/runs/{run_id}/candidates/{second}/decision",
        data={"decision": "reject", "comment": "too dark", "csrf_token": csrf, "show": "pending"},
        follow_redirects=False,
    )
    assert form.status_code == 303 and form.headers["location"] == f"/runs/{run_id}?show=pending#c-{second}"
    bad = client.post(
        f"/runs/{run_id}/candidates/{third}/decision", json={"decision": "maybe"}, headers={"X-CSRF-Token": csrf}
    )
    assert bad.status_code == 400 and "approve" in bad.json()["error"]
    rows = {r.candidate_id: r for r in ledger.candidates(run_id)}
    assert rows[first].state == "approved" and rows[first].review["by"] == "alice"
    assert rows[first].review["comment"] == "hero shot" and rows[first].review["at"]
    assert rows[second].state == "rejected" and rows[second].review["comment"] == "too dark"
    assert rows[third].state in ("selected", "not_selected")
    last = ledger.history(run_id, second)[-1]
    assert last.to_state == "rejected" and last.detail["by"] == "alice"
    missing = client.post(
        f"/runs/{run_id}/candidates/nosuchcandidate0001/decision",
        json={"decision": "approve"},
        headers={"X-CSRF-Token": csrf},
    )
    assert missing.status_code == 404


def test_state_changes_need_the_csrf_token(client: TestClient, ledger_url: str, produced: dict[str, Any]) -> None:
    csrf = login(client)
    run_id = produced["run_id"]
    cid = Ledger.open(ledger_url).candidates(run_id)[0].candidate_id
    url = f"/runs/{run_id}/candidates/{cid}/decision"
    other_csrf = login(TestClient(client.app, base_url=BASE))  # another session of the same server
    assert other_csrf != csrf
    attempts = [
        client.post(url, json={"decision": "approve"}),
        client.post(url, json={"decision": "approve"}, headers={"X-CSRF-Token": "0" * 64}),
        client.post(url, json={"decision": "approve"}, headers={"X-CSRF-Token": other_csrf}),
        client.post(url, data={"decision": "approve"}),
        client.post(url, data={"decision": "approve", "csrf_token": other_csrf}),
        client.post(url, json={"decision": "approve"}, headers={"X-CSRF-Token": csrf, "Origin": "http://evil.test"}),
        client.post(url, json={"decision": "approve"}, headers={"X-CSRF-Token": csrf, "Referer": "http://evil.test/x"}),
        client.post(f"/runs/{run_id}/approve-top-k", json={}),
        client.post(f"/runs/{run_id}/finalize", json={}),
    ]
    assert [r.status_code for r in attempts] == [403] * len(attempts)
    assert client.get(url).status_code == 405  # no state change on GET
    assert Ledger.open(ledger_url).candidates(run_id)[0].state in ("selected", "not_selected")
    same_origin = client.post(url, json={"decision": "approve"}, headers={"X-CSRF-Token": csrf, "Origin": BASE})
    assert same_origin.status_code == 200


def test_flagged_candidate_needs_an_allowed_override(ledger_url: str, produced: dict[str, Any]) -> None:
    url = f"/runs/{FLAGGED_RUN}/candidates/{FLAGGED_ID}/decision"
    strict = make_client(ledger_url, produced["policy"])
    csrf = login(strict)
    sheet = strict.get(f"/runs/{FLAGGED_RUN}?show=flagged").text
    assert "badge-flagged" in sheet and "concepts &#39;a weapon&#39; score 0.310" in sheet
    assert 'name="override_reason"' not in sheet  # the policy allows no override: no field for one
    refused = strict.post(url, json={"decision": "approve", "override_reason": "fine"}, headers={"X-CSRF-Token": csrf})
    assert refused.status_code == 409 and "does not allow overrides" in refused.json()["error"]
    page = strict.post(url, data={"decision": "approve", "csrf_token": csrf}, follow_redirects=False)
    assert page.status_code == 409 and "does not allow overrides" in page.text and "Traceback" not in page.text
    lenient = make_client(ledger_url, produced["policy"], override=True, reviewer="bob")
    csrf = login(lenient)
    assert 'name="override_reason"' in lenient.get(f"/runs/{FLAGGED_RUN}").text
    no_reason = lenient.post(url, json={"decision": "approve"}, headers={"X-CSRF-Token": csrf})
    assert no_reason.status_code == 409 and "needs an override reason" in no_reason.json()["error"]
    assert Ledger.open(ledger_url).candidates(FLAGGED_RUN)[0].state == "screened_flagged"
    allowed = lenient.post(
        url, json={"decision": "approve", "override_reason": "toy gun, fine"}, headers={"X-CSRF-Token": csrf}
    )
    assert allowed.status_code == 200 and allowed.json()["state"] == "approved"
    row = Ledger.open(ledger_url).candidates(FLAGGED_RUN)[0]
    assert row.review["by"] == "bob" and row.review["override"]["reason"] == "toy gun, fine"
    assert "toy gun, fine" in lenient.get(f"/runs/{FLAGGED_RUN}/candidates/{FLAGGED_ID}").text


def test_images_come_only_from_the_runs_own_directory(
    client: TestClient, ledger_url: str, produced: dict[str, Any]
) -> None:
    login(client)
    run_id = produced["run_id"]
    cid = Ledger.open(ledger_url).candidates(run_id)[0].candidate_id
    full = client.get(f"/runs/{run_id}/candidates/{cid}/image")
    assert full.status_code == 200 and full.headers["content-type"] == "image/png" and full.content[:4] == b"\x89PNG"
    thumb = client.get(f"/runs/{run_id}/candidates/{cid}/image?thumb=1")
    assert thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff"
    attempts = [
        f"/runs/{run_id}/candidates/..%2F..%2Fledger.sqlite/image",
        f"/runs/{run_id}/candidates/%2e%2e/image",
        f"/runs/{run_id}/candidates/%2e%2e%2f%2e%2e%2fledger.sqlite/image",
        f"/runs/{run_id}/candidates/%2Fetc%2Fpasswd/image",
        f"/runs/{run_id}/candidates/{FLAGGED_ID}/image",  # another run's candidate
        f"/runs/{FLAGGED_RUN}/candidates/{cid}/image",
        f"/runs/..%2F{run_id}/candidates/{cid}/image",
        f"/runs/{run_id}/candidates/{cid}/image/../../../../ledger.sqlite",
        "/static/..%2Fapp.py",
        "/static/%2e%2e/app.py",
    ]
    malformed = {f"/runs/{run_id}/candidates/%2e%2e/image"}  # '..' is no candidate id: 400 names the format
    for url in attempts:
        assert client.get(url).status_code == (400 if url in malformed else 404), url
    own_image = Path(str(client.app.state.ledger.candidates(run_id)[0].image_path))
    link = own_image.parent / "link-outside.png"
    link.unlink(missing_ok=True)
    link.symlink_to(ledger_url.removeprefix("sqlite:///"))
    others = [r for r in client.app.state.ledger.candidates(run_id) if r.candidate_id != cid]
    with client.app.state.ledger.transaction() as session:  # records pointing outside their run are never served
        session.get(CandidateRow, (FLAGGED_RUN, FLAGGED_ID)).image_path = str(own_image)  # another run's file
        session.get(CandidateRow, (run_id, cid)).image_path = ledger_url.removeprefix("sqlite:///")
        session.get(CandidateRow, (run_id, others[0].candidate_id)).image_path = str(link)
        session.get(CandidateRow, (run_id, others[1].candidate_id)).image_path = f"{own_image.parent}/../../../x.png"
    for candidate in (cid, others[0].candidate_id, others[1].candidate_id):
        assert client.get(f"/runs/{run_id}/candidates/{candidate}/image").status_code == 404
    assert client.get(f"/runs/{FLAGGED_RUN}/candidates/{FLAGGED_ID}/image").status_code == 404
    link.unlink()


def test_bulk_approves_the_top_k_of_every_prompt(client: TestClient, ledger_url: str, produced: dict[str, Any]) -> None:
    csrf = login(client)
    run_id = produced["run_id"]
    ledger = Ledger.open(ledger_url)
    rows = ledger.candidates(run_id)
    hero, mug = (by_score([r for r in rows if r.job_key == job.job_key]) for job in ledger.jobs(run_id))
    client.post(
        f"/runs/{run_id}/candidates/{mug[0]}/decision", json={"decision": "reject"}, headers={"X-CSRF-Token": csrf}
    )
    response = client.post(f"/runs/{run_id}/approve-top-k", json={}, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 200
    assert sorted(response.json()["approved"]) == sorted([hero[0], mug[1]])  # a rejection is not undone
    states = {r.candidate_id: r.state for r in ledger.candidates(run_id)}
    assert [states[c] for c in hero] == ["approved", "not_selected", "not_selected"]
    assert [states[c] for c in mug] == ["rejected", "approved", "not_selected"]
    again = client.post(f"/runs/{run_id}/approve-top-k", json={}, headers={"X-CSRF-Token": csrf})
    assert again.json() == {"approved": [], "errors": []}
    flagged = client.post(f"/runs/{FLAGGED_RUN}/approve-top-k", json={}, headers={"X-CSRF-Token": csrf})
    assert flagged.json()["approved"] == []  # flagged ones are skipped


def test_finalize_submits_the_delivery_flow_and_reports_from_the_ledger(
    ledger_url: str, produced: dict[str, Any]
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        client = make_client(ledger_url, produced["policy"])
        csrf = login(client)
        run_id = produced["run_id"]
        headers = {"X-CSRF-Token": csrf}
        nothing = client.post(f"/runs/{run_id}/finalize", json={}, headers=headers)
        assert nothing.status_code == 409 and "approve some first" in nothing.json()["error"]
        approved = client.post(f"/runs/{run_id}/approve-top-k", json={}, headers=headers).json()["approved"]
        started = client.post(f"/runs/{run_id}/finalize", json={}, headers=headers)
        assert started.status_code == 202 and started.json()["running"] is True, started.json()
        assert started.json()["status"] == "submitted"
        client.app.state.deliveries.wait(run_id, timeout=240)
        status = client.get(f"/api/runs/{run_id}/finalize").json()

        async def delivery_runs() -> list[tuple[str, Any]]:
            async with get_client() as prefect:
                found = [r for r in await prefect.read_flow_runs() if r.parameters.get("run_id") == run_id]
                return [((await prefect.read_flow(r.flow_id)).name, r) for r in found]

        flow_runs = asyncio.run(delivery_runs())
    assert status["running"] is False and status["error"] is None, status
    assert status["status"] == "completed" and status["finished_at"], status
    counts = Ledger.open(ledger_url).state_counts(run_id)
    assert status["finalized"] == 2 == counts.get("finalized", 0) + counts.get("published", 0)
    assert status["published"] == 2 == counts["published"]  # to the policy's default target, the published/ folder
    assert status["finalize_failed"] == counts.get("finalize_failed", 0) == 0
    assert status["approved"] == counts.get("approved", 0) == 0
    # The page's finalize is a Prefect flow run of the delivery flow, with the attempt the ledger recorded.
    assert [name for name, _ in flow_runs] == ["assetmint-delivery"], flow_runs
    flow_run = flow_runs[0][1]
    assert flow_run.state.is_completed()
    assert flow_run.parameters["attempt"] == last_delivery(Ledger.open(ledger_url), run_id)["attempt"]
    assets = {a.candidate_id: a for a in Ledger.open(ledger_url).assets(run_id)}
    assert sorted(assets) == sorted(approved)
    asset = assets[approved[0]]
    assert asset.final_sha256 and asset.validation_state == "Trusted" and Path(str(asset.final_path)).is_file()
    assert asset.published and asset.published["key"].endswith(f"{asset.candidate_id}.png")
    page = client.get(f"/runs/{run_id}/candidates/{approved[0]}").text
    assert asset.final_sha256 in page and str(asset.manifest_label) in page and "Trusted" in page
    assert "finalized" in client.get(f"/runs/{run_id}").text


def test_one_delivery_at_a_time_and_a_lost_one_is_reported(ledger_url: str, produced: dict[str, Any]) -> None:
    sleepers: list[subprocess.Popen[bytes]] = []

    def sleeper(run_id: str, url: str, policy: Policy, attempt: str) -> subprocess.Popen[bytes]:
        assert url == ledger_url and policy.review.mode == "manual"
        sleepers.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))
        return sleepers[-1]

    client = make_client(ledger_url, produced["policy"], submit=sleeper)
    headers = {"X-CSRF-Token": login(client)}
    run_id = produced["run_id"]
    client.post(f"/runs/{run_id}/approve-top-k", json={}, headers=headers)
    # A batch, finalize or publish holds the run.
    with FileRunLocks(produced["policy"].resolved_work_dir()).hold(run_id):
        busy = client.post(f"/runs/{run_id}/finalize", json={}, headers=headers)
    assert busy.status_code == 409 and "busy" in busy.json()["error"] and not sleepers
    try:
        assert client.post(f"/runs/{run_id}/finalize", json={}, headers=headers).status_code == 202
        again = client.post(f"/runs/{run_id}/finalize", json={}, headers=headers)
        assert again.status_code == 409 and "already running" in again.json()["error"]
        assert len(sleepers) == 1 and client.get(f"/api/runs/{run_id}/finalize").json()["running"] is True
        assert "finalizing" in client.get(f"/runs/{run_id}").text
    finally:
        for process in sleepers:
            process.kill()
            process.wait()
    status = client.get(f"/api/runs/{run_id}/finalize").json()
    assert status["running"] is False and status["status"] == "lost"
    assert "before recording its end" in status["error"]
    assert "before recording its end" in client.get(f"/runs/{run_id}").text


def test_a_failing_delivery_shows_the_error_the_ledger_recorded(ledger_url: str, produced: dict[str, Any]) -> None:
    missing = "/nonexistent/assetmint/chain.pem"
    policy = produced["policy"]
    broken = policy.model_copy(
        update={
            "signing": policy.signing.model_copy(
                update={"certificate_chain": missing, "private_key": "/nonexistent/assetmint/key.pem"}
            )
        }
    )
    client = make_client(ledger_url, broken)
    headers = {"X-CSRF-Token": login(client)}
    run_id = produced["run_id"]
    client.post(f"/runs/{run_id}/approve-top-k", json={}, headers=headers)
    assert client.post(f"/runs/{run_id}/finalize", json={}, headers=headers).status_code == 202
    client.app.state.deliveries.wait(run_id, timeout=240)
    status = client.get(f"/api/runs/{run_id}/finalize").json()
    recorded = last_delivery(Ledger.open(ledger_url), run_id)
    assert status["running"] is False and status["status"] == recorded["status"] == "failed", status
    shown = " ".join([status["error"] or "", *status["failure_lines"]])
    assert missing in shown, status
    assert missing in client.get(f"/runs/{run_id}").text
    assert Ledger.open(ledger_url).state_counts(run_id).get("published", 0) == 0


def test_review_command_prints_a_token_url_and_serves_on_loopback(produced: dict[str, Any], tmp_path: Path) -> None:
    import httpx

    script = (
        "import argparse, sys\n"
        "from cli.review import add_review_command\n"
        "from tasks.core.errors import AssetMintError\n"
        "parser = argparse.ArgumentParser(prog='assetmint')\n"
        "parser.add_argument('--verbose', action='store_true')\n"
        "common = argparse.ArgumentParser(add_help=False)\n"
        "sub = parser.add_subparsers(dest='command', required=True)\n"
        "add_review_command(sub, common)\n"
        "args = parser.parse_args(sys.argv[1:])\n"
        "try:\n"
        "    sys.exit(args.handler(args))\n"
        "except AssetMintError as exc:\n"
        "    sys.exit(f'error: {exc}')\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "ASSETMINT_WORK_DIR": str(produced["root"] / "work"),
        "ASSETMINT_CONFIG_DIR": str(tmp_path / "config"),
        "ASSETMINT_CACHE_DIR": str(tmp_path / "cache"),
        "USER": "carol",
        "HOME": str(tmp_path),
    }
    policy = str(produced["root"] / "policy.yaml")
    command = [sys.executable, "-c", script, "review", produced["run_id"], "--port", "0", "--policy", policy]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(2)]
        assert lines[0].startswith("Reviewing as carol;"), lines
        url = lines[1].removeprefix("Open: ").strip()
        assert re.fullmatch(rf"http://127\.0\.0\.1:\d+/runs/{produced['run_id']}\?token=[\w-]{{43}}", url), url
        deadline = time.monotonic() + 20
        while True:
            try:
                with httpx.Client(follow_redirects=True) as http:
                    page = http.get(url)
                    assert http.get(url.split("?")[0].replace(produced["run_id"], FLAGGED_RUN)).status_code == 404
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert page.status_code == 200 and "Finalize and publish approved" in page.text
        assert "?token=" not in str(page.url)
    finally:
        process.terminate()
        process.wait(timeout=20)
    unknown = subprocess.run(
        [sys.executable, "-c", script, "review", "no-such-run", "--policy", policy],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unknown.returncode == 1 and "no run 'no-such-run'" in unknown.stderr


def test_review_command_is_registered_with_its_options() -> None:
    import argparse

    from cli.review import add_review_command, bind, review_url

    parser = argparse.ArgumentParser()
    add_review_command(parser.add_subparsers(dest="command"), argparse.ArgumentParser(add_help=False))
    args = parser.parse_args(["review"])
    assert args.run_id is None and args.host is None and args.port == 8765 and args.reviewer is None
    args = parser.parse_args(["review", "r1", "--host", "0.0.0.0", "--port", "9000", "--reviewer", "dana"])
    assert (args.run_id, args.host, args.port, args.reviewer) == ("r1", "0.0.0.0", 9000, "dana")
    sock = bind("127.0.0.1", 0)
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()
    assert review_url("::1", 80, "t", None) == "http://[::1]:80/?token=t"


def test_pending_means_selected_and_awaiting_a_decision(client: TestClient, produced: dict[str, Any]) -> None:
    csrf = login(client)
    run_id = produced["run_id"]
    ledger = client.app.state.ledger
    selected = [r.candidate_id for r in ledger.candidates(run_id) if r.state == "selected"]
    assert len(selected) == 2  # keep_top_k 1 of 2 prompts; the other 4 are not_selected and wait for no one
    pending = client.get(f"/api/runs/{run_id}/candidates?show=pending").json()
    assert sorted(c["candidate_id"] for g in pending["groups"] for c in g["candidates"]) == sorted(selected)
    page = client.get(f"/runs/{run_id}").text
    assert 'data-filter="pending">pending (<span data-role="filter-count">2</span>)' in page
    client.post(
        f"/runs/{run_id}/candidates/{selected[0]}/decision", json={"decision": "reject"}, headers={"X-CSRF-Token": csrf}
    )
    live = client.get(f"/api/runs/{run_id}/summary").json()
    assert live["filters"]["pending"] == 1 and live["states"][selected[0]] == "rejected"


def test_undo_returns_the_candidate_through_a_new_ledger_entry(client: TestClient, produced: dict[str, Any]) -> None:
    csrf = login(client)
    run_id = produced["run_id"]
    ledger = client.app.state.ledger
    rows = ledger.candidates(run_id)
    chosen = next(r for r in rows if r.state == "selected").candidate_id
    other = next(r for r in rows if r.state == "not_selected").candidate_id
    headers = {"X-CSRF-Token": csrf}
    decide = f"/runs/{run_id}/candidates/{chosen}/decision"
    undo = f"/runs/{run_id}/candidates/{chosen}/undo"

    assert client.post(undo, json={}, headers=headers).status_code == 409  # nothing decided yet
    client.post(decide, json={"decision": "reject", "comment": "soft"}, headers=headers)
    client.post(decide, json={"decision": "approve", "comment": "on second look"}, headers=headers)
    before = ledger.history(run_id, chosen)
    assert client.post(undo, json={}).status_code == 403  # CSRF applies to undo too
    back = client.post(undo, json={}, headers=headers)
    assert back.status_code == 200 and back.json()["state"] == "rejected"
    assert back.json()["review"]["comment"] == "soft"  # the earlier decision is the current one again
    after = ledger.history(run_id, chosen)
    assert [h.id for h in after[: len(before)]] == [h.id for h in before]  # append-only
    assert after[-1].from_state == "approved" and after[-1].to_state == "rejected"
    assert after[-1].detail["decision"] == "undone" and after[-1].detail["by"] == "alice"
    assert client.post(undo, json={}, headers=headers).json()["state"] == "selected"
    assert next(r for r in ledger.candidates(run_id) if r.candidate_id == chosen).review is None

    client.post(f"/runs/{run_id}/candidates/{other}/decision", json={"decision": "approve"}, headers=headers)
    form = client.post(
        f"/runs/{run_id}/candidates/{other}/undo", data={"csrf_token": csrf, "show": "all"}, follow_redirects=False
    )
    assert form.status_code == 303 and form.headers["location"] == f"/runs/{run_id}?show=all#c-{other}"
    assert next(r for r in ledger.candidates(run_id) if r.candidate_id == other).state == "not_selected"


def test_run_status_follows_the_decisions(client: TestClient, produced: dict[str, Any]) -> None:
    csrf = login(client)
    run_id = produced["run_id"]
    ledger = client.app.state.ledger
    assert ledger.run(run_id).status == "pending_review"
    selected = [r.candidate_id for r in ledger.candidates(run_id) if r.state == "selected"]
    headers = {"X-CSRF-Token": csrf}
    client.post(f"/runs/{run_id}/candidates/{selected[0]}/decision", json={"decision": "approve"}, headers=headers)
    assert ledger.run(run_id).status == "pending_review"
    last = client.post(
        f"/runs/{run_id}/candidates/{selected[1]}/decision", json={"decision": "reject"}, headers=headers
    )
    assert last.json()["summary"]["status"] == "completed" == ledger.run(run_id).status
    assert ledger.history(run_id)[-1].to_state == "completed"  # recorded with the run's history
    client.post(f"/runs/{run_id}/candidates/{selected[1]}/undo", json={}, headers=headers)
    assert ledger.run(run_id).status == "pending_review"
    assert "pending_review" in client.get(f"/runs/{run_id}").text


def test_decisions_export_as_csv_and_json(client: TestClient, produced: dict[str, Any]) -> None:
    run_id = produced["run_id"]
    assert client.get(f"/runs/{run_id}/decisions.csv").status_code == 401
    assert client.get(f"/runs/{run_id}/decisions.json").status_code == 401
    csrf = login(client)
    ledger = client.app.state.ledger
    first, second = by_score(ledger.candidates(run_id))[:2]
    headers = {"X-CSRF-Token": csrf}
    client.post(
        f"/runs/{run_id}/candidates/{first}/decision",
        json={"decision": "approve", "comment": '=HYPERLINK("http://evil.test")'},
        headers=headers,
    )
    client.post(f"/runs/{run_id}/candidates/{second}/decision", json={"decision": "reject"}, headers=headers)
    exported = client.get(f"/runs/{run_id}/decisions.csv")
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(exported.text)))
    columns = "candidate,prompt_id,variant,seed,rank,score,state,decision,reviewer,time,comment,override_reason"
    assert exported.text.splitlines()[0] == columns
    assert [r["candidate"] for r in table] == [first, second]
    row = {r.candidate_id: r for r in ledger.candidates(run_id)}[first]
    assert table[0]["prompt_id"] == "hero" and table[0]["seed"] == str(row.seed) and table[0]["rank"] == "1"
    assert table[0]["decision"] == "approved" and table[0]["reviewer"] == "alice" and table[0]["time"]
    assert table[0]["comment"] == '\'=HYPERLINK("http://evil.test")'  # no formula runs in a spreadsheet
    assert table[1]["decision"] == "rejected" and table[1]["state"] == "rejected"
    data = client.get(f"/runs/{run_id}/decisions.json").json()
    assert data["columns"] == columns.split(",") and [d["candidate"] for d in data["decisions"]] == [first, second]
    assert data["decisions"][0]["comment"] == '=HYPERLINK("http://evil.test")' and data["decisions"][0]["score"]


def test_the_run_page_names_the_publish_target_and_offers_only_live_actions(
    client: TestClient, produced: dict[str, Any]
) -> None:
    csrf = login(client)
    run_id = produced["run_id"]
    ledger = client.app.state.ledger
    first = by_score(ledger.candidates(run_id))[0]
    client.post(
        f"/runs/{run_id}/candidates/{first}/decision", json={"decision": "approve"}, headers={"X-CSRF-Token": csrf}
    )
    page = client.get(f"/runs/{run_id}").text
    target = str(Path(os.environ["ASSETMINT_WORK_DIR"]).resolve() / "published")  # the policy's '{work_dir}/published'
    assert f'data-target="{target}"' in page and f'<code data-role="target">{target}</code>' in page
    card = page[page.index(f'id="c-{first}"') :]
    card = card[: card.index("</ol>")]  # the first card of its prompt: the rest of its sheet is undecided
    assert card.count('class="decide"') == 2 and f"/candidates/{first}/undo" in card  # decided: only an undo
    assert card.index(f"/candidates/{first}/undo") < card.index('class="decide"')
    assert 'data-keep-top-k="1" data-approved="1"' in page
    assert '<div class="banners"></div>' in page  # where a session-wide notice goes


def test_undo_transitions_are_allowed_only_back_to_an_undecided_state() -> None:
    for decided in (CandidateState.APPROVED, CandidateState.REJECTED):
        for earlier in (CandidateState.SELECTED, CandidateState.NOT_SELECTED, CandidateState.SCREENED_FLAGGED):
            assert can_transition(decided, earlier)
    for later in (CandidateState.FINALIZED, CandidateState.PUBLISHED):
        assert not can_transition(later, CandidateState.SELECTED)


def _ledger_dump(ledger_url: str) -> list[str]:
    """Every row of the ledger file, as SQL: equal dumps mean nothing was written."""
    connection = sqlite3.connect(ledger_url.removeprefix("sqlite:///"))
    try:
        return list(connection.iterdump())
    finally:
        connection.close()


def _refused(response: Any, status: int, *words: str) -> None:
    """A 4xx whose short message (JSON error, or the page) names every word."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    message = response.json()["error"] if response.headers["content-type"].startswith("application/json") else ""
    message = message or response.text
    assert all(word in message for word in words), message[:500]
    if response.headers["content-type"].startswith("application/json"):
        assert len(message) < 400, message  # a hostile value is quoted short, never echoed whole


def test_hostile_fields_are_refused_and_the_ledger_is_unchanged(
    client: TestClient, ledger_url: str, produced: dict[str, Any]
) -> None:
    from tasks.web.review.security import MAX_FORM_BYTES

    csrf = login(client)
    run_id = produced["run_id"]
    cid = next(r for r in Ledger.open(ledger_url).candidates(run_id) if r.state == "selected").candidate_id
    decide = f"/runs/{run_id}/candidates/{cid}/decision"
    headers = {"X-CSRF-Token": csrf, "Accept": "application/json"}
    before = _ledger_dump(ledger_url)

    def post(url: str, **kwargs: Any) -> Any:
        return client.post(url, headers={**headers, **kwargs.pop("headers", {})}, **kwargs)

    _refused(post(decide, json={"decision": "maybe" * 10_000}), 400, "approve, reject")
    _refused(post(decide, json={"decision": "approve", "comment": "x" * 2001}), 400, "comment", "at most 2000")
    _refused(post(decide, json={"decision": "approve", "comment": "a\x00b"}), 400, "comment", "control character")
    _refused(post(decide, json={"decision": "reject", "override_reason": "\x1b[2J"}), 400, "control character")
    _refused(post(decide, json={"decision": 1}), 400, "decision must be a string")
    _refused(post(decide, json={"decision": ["approve"]}), 400, "decision must be a string")
    _refused(post(decide, json={"decision": "approve", "comment": {"$gt": ""}}), 400, "comment must be a string")
    _refused(post(decide, json={"decision": "approve", "comments": "typo"}), 400, "unknown field", "comment,")
    _refused(post(decide, json={"decision": "approve", "show": "../../etc"}), 400, "unknown filter", "pending")
    _refused(post(decide, json=["decision", "approve"]), 400, "JSON object")
    _refused(post(decide, content=b"[" * 50_000, headers={"content-type": "application/json"}), 400, "not valid JSON")
    _refused(post(decide, content=b"decision=\xff\xfe", headers={"content-type": FORM}), 400, "UTF-8")
    _refused(post(decide, content=b"decision=approve", headers={"content-type": "text/plain"}), 415, "urlencoded")
    too_big = {"decision": "approve", "override_reason": "x" * (MAX_FORM_BYTES + 1)}
    _refused(post(decide, json=too_big), 413, str(MAX_FORM_BYTES))

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while read
        yield b'{"decision": "approve", "comment": "'
        for _ in range(20):
            yield b"x" * 10_000

    _refused(post(decide, content=chunks(), headers={"content-type": "application/json"}), 413, "limit")
    twice = f"decision=approve&decision=reject&csrf_token={csrf}".encode()
    _refused(client.post(decide, content=twice, headers={"content-type": FORM}), 400, "decision", "more than once")
    form_too_big = f"csrf_token={csrf}&comment={'x' * MAX_FORM_BYTES}&decision=approve".encode()
    _refused(client.post(decide, content=form_too_big, headers={"content-type": FORM}), 413, "limit")
    _refused(post(f"/runs/{run_id}/candidates/{cid}/undo", json={"show": "everything"}), 400, "unknown filter")
    _refused(post(f"/runs/{run_id}/approve-top-k", json={"comment": 5}), 400, "comment must be a string")
    _refused(post(f"/runs/{run_id}/approve-top-k", json={"comment": "ok", "top_k": 99}), 400, "unknown field")
    _refused(post(f"/runs/{run_id}/finalize", json={"force": True}), 400, "unknown field")
    assert _ledger_dump(ledger_url) == before
    assert post(decide, json={"decision": "approve", "comment": "fine\nby me"}).status_code == 200  # still works


FORM = "application/x-www-form-urlencoded"


def test_hostile_paths_and_query_parameters_are_refused(
    client: TestClient, ledger_url: str, produced: dict[str, Any]
) -> None:
    csrf = login(client)
    run_id = produced["run_id"]
    cid = Ledger.open(ledger_url).candidates(run_id)[0].candidate_id
    json_accept = {"Accept": "application/json"}
    before = _ledger_dump(ledger_url)
    for bad in ("...", ".env", "a" * 97, "run%00id", "run%20id", "..%5C..%5Cwindows", "x;rm", "%E2%80%AE"):
        for url in (f"/runs/{bad}", f"/api/runs/{bad}/summary", f"/runs/{run_id}/candidates/{bad}/image"):
            _refused(client.get(url, headers=json_accept), 400, "is not a", "96 letters, digits")
        refused = client.post(f"/runs/{bad}/finalize", json={}, headers={"X-CSRF-Token": csrf, **json_accept})
        _refused(refused, 400, "is not a run id")
    page = client.get(f"/runs/{run_id}/candidates/..%2F..%2F..%2Fetc%2Fpasswd/image")
    assert page.status_code == 404 and "root:" not in page.text  # a slash never reaches an id
    _refused(client.get(f"/runs/{run_id}?show={'x' * 60_000}"), 400, "unknown filter", "pending, flagged")
    _refused(client.get(f"/api/runs/{run_id}/candidates?show=%00"), 400, "unknown filter")
    _refused(client.get(f"/runs/{run_id}/candidates/{cid}/image?thumb=maybe"), 400, "query parameter thumb")
    _refused(client.get(f"/runs/{run_id}/candidates/{cid}/image?thumb=-1", headers=json_accept), 400, "thumb")
    assert client.get(f"/runs/{run_id}/candidates/{cid}/image?thumb=true").status_code == 200
    assert client.get("/runs/no-such-run").status_code == 404  # well formed but unknown: not found
    assert _ledger_dump(ledger_url) == before


def test_an_over_long_url_gets_an_answer_over_a_real_socket(ledger_url: str, produced: dict[str, Any]) -> None:
    import http.client
    from urllib.parse import urlsplit

    app = make_client(ledger_url, produced["policy"]).app
    with serve_on_loopback(app) as base:
        connection = http.client.HTTPConnection(str(urlsplit(base).netloc), timeout=60)
        try:
            target = f"/api/runs/{produced['run_id']}/candidates?show={'x' * 1_000_000}"
            connection.request("GET", target, headers={"Authorization": f"Bearer {TOKEN}"})
            response = connection.getresponse()
            status, body = response.status, response.read().decode()
        finally:
            connection.close()
    assert status == 400 and "unknown filter" in body and len(body) < 400


# Every route but POST .../finalize, which starts a real delivery process (its inputs are covered above).
REVIEW_ROUTES = [
    ("GET", "/runs/{run}"),
    ("GET", "/api/runs/{run}/candidates"),
    ("GET", "/runs/{run}/candidates/{cid}"),
    ("GET", "/runs/{run}/candidates/{cid}/image"),
    ("POST", "/runs/{run}/candidates/{cid}/decision"),
    ("POST", "/runs/{run}/candidates/{cid}/undo"),
    ("GET", "/api/runs/{run}/summary"),
    ("GET", "/runs/{run}/decisions.json"),
    ("GET", "/runs/{run}/decisions.csv"),
    ("POST", "/runs/{run}/approve-top-k"),
    ("GET", "/api/runs/{run}/finalize"),
]
FIELD_VALUES = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["approve", "reject", "pending", "flagged", "true", "-1", "\x00", "x" * 3000, "../.."]),
    st.integers(),
    st.none(),
    st.lists(st.text(max_size=5), max_size=2),
)


@FUZZ
@given(
    route=st.sampled_from(REVIEW_ROUTES),
    real_run=st.booleans(),
    real_candidate=st.booleans(),
    made_up_id=st.text(min_size=1, max_size=120),
    query=st.dictionaries(st.sampled_from(["show", "thumb", "token", "page", "x"]), st.text(max_size=40), max_size=3),
    fields=st.dictionaries(
        st.sampled_from(["decision", "comment", "override_reason", "show", "csrf_token", "extra"]),
        FIELD_VALUES,
        max_size=4,
    ),
    as_form=st.booleans(),
)
def test_every_review_request_gets_an_answer_that_is_not_a_server_error(
    client: TestClient,
    ledger_url: str,
    produced: dict[str, Any],
    route: tuple[str, str],
    real_run: bool,
    real_candidate: bool,
    made_up_id: str,
    query: dict[str, str],
    fields: dict[str, Any],
    as_form: bool,
) -> None:
    """Whatever a logged-in reviewer's browser sends: a page, JSON or a short 4xx; never a 5xx; a 4xx writes nothing."""
    from urllib.parse import quote

    csrf = login(client)
    run_id = produced["run_id"] if real_run else made_up_id
    cid = client.app.state.ledger.candidates(produced["run_id"])[0].candidate_id if real_candidate else made_up_id
    method, template = route
    url = template.format(run=quote(run_id, safe=""), cid=quote(cid, safe=""))
    headers = {"X-CSRF-Token": csrf, "Accept": "application/json"}
    before = _ledger_dump(ledger_url)
    if method == "GET":
        response = client.get(url, params=query, headers=headers)
    elif as_form:
        form = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
        response = client.post(url, params=query, data=form, headers=headers)
    else:
        response = client.post(url, params=query, json=fields, headers=headers)
    assert response.status_code < 500, (method, url, fields, response.text[:300])
    if response.status_code >= 400:
        assert _ledger_dump(ledger_url) == before, (method, url, fields)
