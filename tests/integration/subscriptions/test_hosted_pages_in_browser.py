"""The hosted pages as a person uses them, in headless Chromium (Debian's package, driven by Playwright):
fill the form -> pending subscriber; open the confirm link -> active; leave a list on the preference page."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, async_playwright

from herald_shared.contract.subscriptions import ConfirmationRequested
from herald_shared.http import make_server
from tests.conftest import eventually
from tests.integration.subscriptions.conftest import Platform

CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not installed; scripts/test installs Debian's package (apt-get install chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield launched
        await launched.close()


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

    await page.goto(f"{base_url}/subscribe/acme/news")
    await page.get_by_label("Email address").fill("Greta@Example.com")
    await page.get_by_label("First name (optional)").fill("Greta")
    await page.get_by_label("I want to receive emails from News.").check()
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
