"""The hosted pages as a person uses them, in headless Chromium (Debian's package, driven by Playwright):
fill the form -> pending subscriber; open the confirm link -> active; leave a list on the preference page."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn
from playwright.async_api import Browser

from herald_shared.contract.subscriptions import ConfirmationRequested
from herald_shared.http import make_server
from herald_subscriptions.forms import CHALLENGE_BITS, solve
from tests.conftest import eventually
from tests.integration.helpers import chromium
from tests.integration.subscriptions.conftest import Platform

MIN_FILL_MS = 3100


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def base_url(platform: Platform) -> AsyncIterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = make_server(platform.service.app, "127.0.0.1", port)
    task = asyncio.create_task(server.serve())
    await eventually(lambda: _started(server), lambda started: started, what="HTTP server up")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def _started(server: object) -> bool:
    return bool(server.started)  # type: ignore[attr-defined]


async def test_a_person_subscribes_confirms_and_manages_preferences_in_a_browser(
        platform: Platform, browser: Browser, base_url: str, tmp_path: Path) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list("news", opt_in="double")
    await acme.create_list("offers", opt_in="single")
    page = await browser.new_page()
    console: list[str] = []  # a stylesheet or script the Content-Security-Policy blocked would show here
    page.on("console", lambda message: console.append(message.text))

    await page.goto(f"{base_url}/subscribe/acme/news")
    await page.get_by_label("Email address").fill("Greta@Example.com")
    await page.get_by_label("First name (optional)").fill("Greta")
    await page.get_by_label("I want to receive emails from News.").check()
    honeypot = await page.locator("#website").bounding_box()  # laid out off screen: people never fill it in
    assert honeypot is not None and honeypot["x"] + honeypot["width"] < 0
    await page.wait_for_timeout(MIN_FILL_MS)  # a person takes seconds; sooner is a bot's post
    await page.get_by_role("button", name="Subscribe").click()
    await page.get_by_role("heading", name="Check your inbox").wait_for()
    await page.screenshot(path=str(tmp_path / "check-inbox.png"))

    pending = (await acme.http.get("/v1/lists/news/subscribers", params={"status": "pending"})).json()["items"]
    assert [(m["email"], m["first_name"], m["consent"]["source"]) for m in pending] == [
        ("greta@example.com", "Greta", "form")]

    request = next(e for e in await platform.events() if isinstance(e, ConfirmationRequested))
    await page.goto(base_url + urlsplit(str(request.payload.confirm_url)).path)
    await page.get_by_role("heading", name="Confirm your subscription").wait_for()
    assert (await acme.http.get(f"/v1/subscribers/{pending[0]['subscriber_id']}")).json()["status"] == "pending"
    await page.get_by_role("button", name="Confirm subscription").click()
    await page.get_by_role("heading", name="Subscription confirmed").wait_for()
    assert (await acme.http.get(f"/v1/subscribers/{pending[0]['subscriber_id']}")).json()["status"] == "active"

    await acme.subscribe("greta@example.com", list_id="offers")
    links = platform.service.service.links
    await page.goto(base_url + urlsplit(links.unsubscribe_url("acme", pending[0]["subscriber_id"], "c1")).path)
    await page.get_by_role("link", name="Choose which lists you stay on").click()
    assert await page.get_by_role("listitem").count() == 2
    await page.get_by_role("button", name="Leave News").click()
    assert await page.get_by_role("status").inner_text() == "Done: you left News."
    assert await page.get_by_role("listitem").count() == 1
    await page.screenshot(path=str(tmp_path / "preferences.png"))
    news = (await acme.http.get(f"/v1/subscribers/{pending[0]['subscriber_id']}")).json()
    assert (news["status"], news["unsubscribe_source"]) == ("unsubscribed", "preference_page")
    # Each page applied its own stylesheet under the policy (a blocked one is a console error in Chromium).
    assert not [m for m in console if "Content Security Policy" in m], console
    assert await page.evaluate("getComputedStyle(document.body).maxWidth") == "512px"


@pytest.fixture
async def framing_site() -> AsyncIterator[tuple[str, dict[str, str]]]:
    """Another origin (another port) serving pages that frame a form: path -> HTML."""
    pages: dict[str, str] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = pages.get(scope["path"], "").encode()
        await send({"type": "http.response.start", "status": 200 if body else 404,
                    "headers": [(b"content-type", b"text/html; charset=utf-8")]})
        await send({"type": "http.response.body", "body": body})

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    await eventually(lambda: _started(server), lambda started: started, what="framing site up")
    yield f"http://127.0.0.1:{port}", pages
    server.should_exit = True
    await task


async def test_the_form_is_framed_only_where_its_list_allows_and_its_challenge_runs_in_the_browser(
        platform: Platform, browser: Browser, base_url: str, framing_site: tuple[str, dict[str, str]]) -> None:
    site, pages = framing_site
    acme = await platform.tenant("acme")
    await acme.create_list("news", opt_in="double")
    await acme.create_list("offers", opt_in="single")
    configured = await acme.http.put("/v1/lists/offers/form", json={"frame_ancestors": [site],
                                                                    "challenge": "proof_of_work"})
    assert configured.status_code == 200, configured.text
    assert configured.json()["form"] == {"frame_ancestors": [site], "challenge": "proof_of_work"}
    for list_id in ("news", "offers"):
        pages[f"/{list_id}"] = f'<!doctype html><iframe id="form" src="{base_url}/subscribe/acme/{list_id}"></iframe>'
    page = await browser.new_page()

    # news allows no site to frame its form: Chromium refuses to show it (frame-ancestors 'none').
    async with page.expect_console_message(lambda message: "frame-ancestors" in message.text) as refused:
        await page.goto(f"{site}/news")
    assert "has been blocked" in (await refused.value).text
    frame = page.frame_locator("#form")
    assert await frame.get_by_role("heading", name="Subscribe to News").count() == 0

    # offers allows this site; its proof-of-work challenge is solved by the page's script before the post.
    await page.goto(f"{site}/offers")
    frame = page.frame_locator("#form")
    await frame.get_by_role("heading", name="Subscribe to Offers").wait_for()
    await frame.get_by_label("Email address").fill("hugo@example.com")
    await frame.get_by_label("I want to receive emails from Offers.").check()
    await page.wait_for_timeout(MIN_FILL_MS)
    await frame.get_by_role("button", name="Subscribe").click()
    await frame.get_by_role("heading", name="You are subscribed").wait_for(timeout=30_000)
    active = (await acme.http.get("/v1/lists/offers/subscribers", params={"status": "active"})).json()["items"]
    assert [m["email"] for m in active] == ["hugo@example.com"]

    # The same post without the challenge solved is refused, and records nothing.
    form = await platform.pages.get("/subscribe/acme/offers")
    challenge = re.search(r'name="challenge" value="([^"]+)"', form.text)
    assert challenge is not None and 'script src="/assets/form-challenge.js"' in form.text
    unsolved = await platform.submit("/subscribe/acme/offers", {"email": "ida@example.com", "consent": "yes",
                                                                "challenge": challenge[1], "challenge_nonce": "1"})
    solved_elsewhere = await platform.submit("/subscribe/acme/offers", {
        "email": "ida@example.com", "consent": "yes", "challenge": challenge[1],
        "challenge_nonce": solve(challenge[1], CHALLENGE_BITS)})
    assert (unsolved.status_code, solved_elsewhere.status_code) == (422, 200)
