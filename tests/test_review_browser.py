"""The review app in a real headless Chromium (Debian's, driven by Playwright) against uvicorn on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_review_api import TOKEN, XSS_PROMPT, produce_run

from tasks.storage.ledger import Ledger, sqlite_url

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not CHROMIUM.is_file():
    pytest.skip(
        f"browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright (pip install playwright)")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[dict[str, Any]]:
    """A run from the real batch flow, reviewed through the app served by uvicorn on 127.0.0.1 and a free port."""
    import uvicorn

    from cli.review import bind, start_delivery
    from tasks.web.review.app import create_app

    root = tmp_path_factory.mktemp("review-browser")
    made = produce_run(root, model_cache)
    ledger_url = sqlite_url(made["database"])
    app = create_app(ledger_url, made["policy"], TOKEN, "erin", submit_delivery=start_delivery)
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    port = sock.getsockname()[1]
    env = {"ASSETMINT_CONFIG_DIR": str(root / "config"), "ASSETMINT_WORK_DIR": str(root / "work")}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        yield {**made, "app": app, "base": f"http://127.0.0.1:{port}", "ledger_url": ledger_url, "root": root}
    app.state.deliveries.wait(made["run_id"], timeout=240)
    server.should_exit = True
    thread.join(timeout=20)
    sock.close()


@pytest.fixture
def page(served: dict[str, Any], tmp_path: Path) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def test_review_a_run_in_the_browser(served: dict[str, Any], page: Any, tmp_path: Path) -> None:
    expect = sync_api.expect
    run_id = served["run_id"]
    ledger = Ledger.open(served["ledger_url"])
    dialogs: list[str] = []
    console_errors: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)

    page.goto(f"{served['base']}/runs/{run_id}?token={TOKEN}")
    assert page.url == f"{served['base']}/runs/{run_id}"  # the token left the address bar for a cookie
    expect(page.locator("h1")).to_contain_text("Spring <i>review</i>")

    rows = ledger.candidates(run_id)
    jobs = ledger.jobs(run_id)
    sections = page.locator("section.job")
    expect(sections).to_have_count(2)
    for index, job in enumerate(jobs):
        expected = [
            r.candidate_id for r in sorted(rows, key=lambda r: -(r.clip_score or 0.0)) if r.job_key == job.job_key
        ]
        shown = sections.nth(index).locator("li.card")
        assert [shown.nth(i).get_attribute("data-candidate") for i in range(shown.count())] == expected
        scores = [float(shown.nth(i).get_attribute("data-score") or "nan") for i in range(shown.count())]
        assert scores == sorted(scores, reverse=True)
    expect(page.locator("figure.histogram svg rect.bar")).to_have_count(20)

    # The hostile prompt is shown literally and runs nothing.
    hero = sections.nth(0)
    expect(hero.locator("p.prompt")).to_have_text(XSS_PROMPT)
    assert page.locator("main b").count() == 0 and dialogs == []

    cards = page.locator("li.card")
    first, second, third = (cards.nth(i).get_attribute("data-candidate") for i in range(3))
    cards.nth(0).locator("input[name=comment]").fill("best of the batch")
    cards.nth(0).get_by_role("button", name="Approve").click()
    expect(cards.nth(0).locator("[data-role=state]")).to_have_text("approved")

    page.locator("h1").click()  # nothing focused: j goes to the first card, j again to the second
    page.keyboard.press("j")
    expect(cards.nth(0)).to_be_focused()
    page.keyboard.press("j")
    expect(cards.nth(1)).to_be_focused()
    assert cards.nth(1).evaluate("el => getComputedStyle(el).boxShadow") != "none"  # visible focus
    page.keyboard.press("a")
    expect(cards.nth(1).locator("[data-role=state]")).to_have_text("approved")
    page.keyboard.press("j")
    page.keyboard.press("r")
    expect(cards.nth(2).locator("[data-role=state]")).to_have_text("rejected")
    page.keyboard.press("k")
    expect(cards.nth(1)).to_be_focused()

    decided = {r.candidate_id: r for r in ledger.candidates(run_id)}
    assert decided[first].state == decided[second].state == "approved" and decided[third].state == "rejected"
    assert decided[first].review["by"] == "erin" and decided[first].review["comment"] == "best of the batch"
    assert decided[third].review["by"] == "erin" and decided[third].review["comment"] == ""

    page.get_by_role("button", name="Finalize and publish approved").click()
    progress = page.locator("#publish [data-role=progress]")
    expect(progress).to_contain_text("done", timeout=240_000)
    expect(progress).to_contain_text("2 finalized")
    assert {a.candidate_id for a in ledger.assets(run_id) if a.final_sha256} == {first, second}

    page.goto(f"{served['base']}/runs/{run_id}/candidates/{first}")
    expect(page.locator("table.provenance")).to_contain_text("Trusted")
    expect(page.locator("td.prompt")).to_have_text(XSS_PROMPT)

    page.goto(f"{served['base']}/runs/{run_id}")
    shot = tmp_path / "contact-sheet.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert dialogs == [] and console_errors == []  # no CSP violation, no failed request


def test_the_browser_without_the_token_gets_nothing(served: dict[str, Any], page: Any) -> None:
    response = page.goto(f"{served['base']}/runs/{served['run_id']}")
    assert response is not None and response.status == 401
    assert page.request.get(f"{served['base']}/static/review.js").status == 401
