"""The review app in a real headless Chromium (Debian's, driven by Playwright) against uvicorn on loopback."""

from __future__ import annotations

import os
import re
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


def cards_per_screen(page: Any) -> int:
    """How many whole cards one 900 px screen holds at the sheet's current width and card size."""
    box = page.locator("li.card").first.bounding_box()
    sheet = page.locator("ol.sheet").first.bounding_box()
    gap = 8
    columns = int((sheet["width"] + gap) // (box["width"] + gap))
    return columns * int(900 // (box["height"] + gap))


def test_detail_page_shows_the_image_full_size_with_a_viewer(served: dict[str, Any], page: Any) -> None:
    expect = sync_api.expect
    run_id = served["run_id"]
    page.set_viewport_size({"width": 1440, "height": 900})
    ordered = [
        r.candidate_id
        for job in Ledger.open(served["ledger_url"]).jobs(run_id)
        for r in sorted(Ledger.open(served["ledger_url"]).candidates(run_id), key=lambda r: -(r.clip_score or 0.0))
        if r.job_key == job.job_key
    ]
    page.goto(f"{served['base']}/runs/{run_id}/candidates/{ordered[1]}?token={TOKEN}")
    image = page.locator("img.full")
    expect(image).to_be_visible()
    page.wait_for_function("document.querySelector('img.full').complete")
    natural = image.evaluate("el => el.naturalWidth")
    assert natural == 256 and image.evaluate("el => el.clientWidth") == natural  # full resolution (it fits)

    image.click()
    viewer = page.locator("#viewer")
    expect(viewer).to_be_visible()
    shown = viewer.locator(".pane img")
    expect(shown).to_have_count(1)
    assert shown.get_attribute("src").endswith(f"/candidates/{ordered[1]}/image")
    page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()

    page.keyboard.press("ArrowRight")
    page.wait_for_url(f"**/candidates/{ordered[2]}")
    page.keyboard.press("ArrowLeft")
    page.wait_for_url(f"**/candidates/{ordered[1]}")
    page.locator("img.full").click()
    page.locator("#viewer").get_by_role("button", name="next").click()  # the viewer stays open on the next one
    page.wait_for_url(f"**/candidates/{ordered[2]}#view")
    expect(page.locator("#viewer .pane img")).to_have_attribute("src", re.compile(f"/candidates/{ordered[2]}/image$"))
    page.keyboard.press("ArrowLeft")
    page.wait_for_url(f"**/candidates/{ordered[1]}#view")
    expect(page.locator("#viewer")).to_be_visible()
    page.locator("#viewer").get_by_role("button", name="close").click()
    expect(page.locator("#viewer")).to_be_hidden()


def test_density_control_fills_the_screen_and_is_remembered(served: dict[str, Any], page: Any) -> None:
    expect = sync_api.expect
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(f"{served['base']}/runs/{served['run_id']}?token={TOKEN}")
    medium = cards_per_screen(page)
    assert medium >= 12, medium  # the sheet used to hold 4 cards on a 1440x900 screen
    page.get_by_role("button", name="S", exact=True).click()
    small = cards_per_screen(page)
    page.get_by_role("button", name="L", exact=True).click()
    large = cards_per_screen(page)
    assert small > medium > large, (small, medium, large)
    page.get_by_role("button", name="S", exact=True).click()
    page.reload()
    expect(page.locator("html")).to_have_attribute("data-density", "s")
    expect(page.get_by_role("button", name="S", exact=True)).to_have_attribute("aria-pressed", "true")
    assert cards_per_screen(page) == small
    page.get_by_role("button", name="M", exact=True).click()


def test_keyboard_review_keeps_counts_live_with_undo_compare_and_export(served: dict[str, Any], page: Any) -> None:
    expect = sync_api.expect
    run_id = served["run_id"]
    ledger = Ledger.open(served["ledger_url"])
    dialogs: list[str] = []
    answers: list[bool] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.accept() if answers.pop(0) else d.dismiss()))
    page.goto(f"{served['base']}/runs/{run_id}?token={TOKEN}")
    cards = page.locator("li.card")
    pending = page.locator('nav.filters a[data-filter="pending"]')
    status = page.locator("#summary [data-role=run-status]")
    expect(pending).to_have_text("pending (2)")  # selected and awaiting a decision, not every undecided one
    expect(status).to_have_text("pending_review")

    page.locator("h1").click()
    page.keyboard.press("j")
    page.keyboard.press("a")
    expect(cards.nth(0).locator("[data-role=state]")).to_have_text("approved")
    expect(pending).to_have_text("pending (1)")
    expect(page.locator('nav.filters a[data-filter="approved"]')).to_have_text("approved (1)")
    expect(cards.nth(3)).to_be_focused()  # auto-advance to the next pending card
    page.keyboard.press("r")
    expect(cards.nth(3).locator("[data-role=state]")).to_have_text("rejected")
    expect(pending).to_have_text("pending (0)")
    expect(status).to_have_text("completed")  # nothing awaits a decision: the run follows
    assert ledger.run(run_id).status == "completed"
    expect(page.locator("#summary [data-role=counts]")).to_contain_text("1 rejected")

    page.keyboard.press("u")  # undo the last decision
    expect(cards.nth(3).locator("[data-role=state]")).to_have_text("selected")
    expect(cards.nth(3)).to_be_focused()
    expect(pending).to_have_text("pending (1)")
    expect(status).to_have_text("pending_review")
    assert ledger.history(run_id, cards.nth(3).get_attribute("data-candidate"))[-1].detail["decision"] == "undone"

    # Decided cards offer an undo, not the decision they already have.
    expect(cards.nth(0).get_by_role("button", name="Approve")).to_have_count(0)
    expect(cards.nth(0).get_by_role("button", name="Undo decision")).to_be_visible()

    # Past keep-top-k: a warning that needs a second yes.
    answers.append(False)
    cards.nth(1).get_by_role("button", name="Approve").click()
    expect(page.locator("#status")).to_contain_text("keep-top-k")
    assert "keeps the top 1" in dialogs[-1]
    expect(cards.nth(1).locator("[data-role=state]")).to_have_text("not_selected")
    answers.append(True)
    cards.nth(1).get_by_role("button", name="Approve").click()
    expect(cards.nth(1).locator("[data-role=state]")).to_have_text("approved")
    assert len(dialogs) == 2

    export = page.request.get(f"{served['base']}/runs/{run_id}/decisions.csv")
    assert export.status == 200 and cards.nth(1).get_attribute("data-candidate") in export.text()
    assert page.request.get(f"{served['base']}/runs/{run_id}/decisions.json").json()["decisions"]

    # Compare two: pick them (x or the box), press c; Esc closes.
    cards.nth(0).focus()
    page.keyboard.press("x")
    cards.nth(4).locator("input.compare-pick").check()
    expect(page.get_by_role("button", name="Compare selected (2/2)")).to_be_enabled()
    page.keyboard.press("c")
    panes = page.locator("#viewer .pane img")
    expect(panes).to_have_count(2)
    for index, card in ((0, 0), (1, 4)):
        picked = cards.nth(card).get_attribute("data-candidate")
        assert panes.nth(index).get_attribute("src").endswith(f"{picked}/image")
    boxes = [panes.nth(i).bounding_box() for i in range(2)]
    assert boxes[0]["x"] + boxes[0]["width"] <= boxes[1]["x"]  # side by side
    page.keyboard.press("Escape")
    expect(page.locator("#viewer")).to_be_hidden()

    # Leave the run as it was for the next test: undo through the buttons.
    page.get_by_role("button", name="Undo last decision").click()
    expect(cards.nth(1).locator("[data-role=state]")).to_have_text("not_selected")
    cards.nth(0).get_by_role("button", name="Undo decision").click()
    expect(cards.nth(0).locator("[data-role=state]")).to_have_text("selected")
    expect(pending).to_have_text("pending (2)")
    assert {r.state for r in ledger.candidates(run_id)} == {"selected", "not_selected"}
    assert ledger.run(run_id).status == "pending_review"


def test_review_a_run_in_the_browser(served: dict[str, Any], page: Any, tmp_path: Path) -> None:
    expect = sync_api.expect
    run_id = served["run_id"]
    ledger = Ledger.open(served["ledger_url"])
    dialogs: list[str] = []
    console_errors: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
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
    expect(cards.nth(3)).to_be_focused()  # on to the next pending card: the other prompt's pick

    page.locator("h1").click()  # nothing focused: j goes to the first card, j again to the second
    page.keyboard.press("j")
    expect(cards.nth(0)).to_be_focused()
    page.keyboard.press("j")
    expect(cards.nth(1)).to_be_focused()
    assert cards.nth(1).evaluate("el => getComputedStyle(el).boxShadow") != "none"  # visible focus
    page.keyboard.press("a")  # a second approval of a keep-top-1 prompt: confirmed in a dialog (accepted here)
    expect(cards.nth(1).locator("[data-role=state]")).to_have_text("approved")
    assert len(dialogs) == 1 and "keeps the top 1" in dialogs[0]
    page.locator("h1").click()
    for _ in range(3):
        page.keyboard.press("j")
    page.keyboard.press("r")
    expect(cards.nth(2).locator("[data-role=state]")).to_have_text("rejected")
    expect(cards.nth(3)).to_be_focused()
    page.keyboard.press("k")
    expect(cards.nth(2)).to_be_focused()

    decided = {r.candidate_id: r for r in ledger.candidates(run_id)}
    assert decided[first].state == decided[second].state == "approved" and decided[third].state == "rejected"
    assert decided[first].review["by"] == "erin" and decided[first].review["comment"] == "best of the batch"
    assert decided[third].review["by"] == "erin" and decided[third].review["comment"] == ""

    page.get_by_role("button", name="Finalize and publish approved").click()
    progress = page.locator("#publish [data-role=progress]")
    expect(progress).to_contain_text("done", timeout=240_000)
    expect(progress).to_contain_text("2 finalized")
    target = str(Path(os.environ["ASSETMINT_WORK_DIR"]).resolve() / "published")  # the policy's '{work_dir}/published'
    assert len(dialogs) == 2 and "publish 2 approved assets to " + target in dialogs[1]
    for index in (0, 1):  # live, without a reload: finalized (or published) cards offer no stale actions
        expect(cards.nth(index)).to_have_attribute("data-state", re.compile("^(finalized|published)$"))
        expect(cards.nth(index).get_by_role("button")).to_have_count(0)
    assert {a.candidate_id for a in ledger.assets(run_id) if a.final_sha256} == {first, second}

    page.goto(f"{served['base']}/runs/{run_id}/candidates/{first}")
    provenance = page.locator("table.provenance")
    expect(provenance).to_contain_text("valid, development signer (not trusted for production)")
    expect(provenance).not_to_contain_text("Trusted")  # the raw c2pa state never stands alone for a dev signer
    expect(page.locator(".banners .dev-banner")).to_be_visible()
    expect(page.locator("td.prompt")).to_have_text(XSS_PROMPT)

    page.goto(f"{served['base']}/runs/{run_id}")
    shot = tmp_path / "contact-sheet.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for index in (0, 1):
        expect(cards.nth(index).get_by_role("button")).to_have_count(0)
    assert len(dialogs) == 2 and console_errors == []  # no CSP violation, no failed request


def test_the_browser_without_the_token_gets_nothing(served: dict[str, Any], page: Any) -> None:
    response = page.goto(f"{served['base']}/runs/{served['run_id']}")
    assert response is not None and response.status == 401
    assert page.request.get(f"{served['base']}/static/review.js").status == 401
