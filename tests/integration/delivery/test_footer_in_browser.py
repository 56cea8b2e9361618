"""The footer delivery appends, as a reader's browser draws it (headless Chromium, Debian's package, driven by
Playwright): a customer's style sheet that screening let through before (or misses) cannot hide the footer's own
<div> and unsubscribe link, since their style attributes reset what hides with !important (render.py,
FOOTER_STYLE), and an element's own !important beats every style sheet rule, !important or not, in any @layer."""

from __future__ import annotations

import email
import email.policy
from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from herald_delivery.domain import Member
from herald_delivery.render import IDENTIFICATION_FOOTER, MessageTokens, Renderer, RenderSettings, compile_campaign
from herald_shared.contract.campaigns import CampaignContent
from herald_shared.links import LinkSigner
from tests.integration.helpers import chromium

SECRET = "browser-test-secret-0123456789"

# The reviewer's six (each passed screening and hid or disabled the link), and other rules on the footer's
# elements: !important, in a layer, an image as the link's content, a motion path, a blend over white.
HIDING_STYLE_SHEETS = {
    "a{pointer-events:none}": "<style>a{pointer-events:none}</style>",
    "div,a{color:hsl(0 0% 100%)}": "<style>div,a{color:hsl(0 0% 100%)}</style>",
    "CSS nesting": "<style>body{& div{display:none}}</style>",
    "display:var(--x)": "<style>:root{--x:none}div{display:var(--x)}</style>",
    "letter-spacing:-20px": "<style>div{letter-spacing:-20px}</style>",
    "font-size:calc(1px)!important": "<style>div{font-size:calc(1px)!important}</style>",
    "display:none!important": "<style>div,a{display:none!important}</style>",
    "@layer opacity:0!important": "<style>@layer x{div,a{opacity:0!important}}</style>",
    "transform and visibility": "<style>div{transform:translateX(-9999px)!important}a{visibility:hidden}</style>",
    "a{content:url(...)}": "<style>a{content:url(data:image/gif;base64,R0lGODlhAQABAAAAACw=)}</style>",
    "offset-path": "<style>div{offset-path:path('M-9999,0 L-9999,1')!important}</style>",
    "white on white, filled": "<style>a,div{-webkit-text-fill-color:#fff!important;background:#fff}</style>",
    "position far off": "<style>div,a{position:absolute!important;left:-9999px!important}</style>",
}

PROBE = """() => {
  const link = [...document.querySelectorAll('a')].find(a => a.textContent.trim() === 'Unsubscribe');
  if (!link) return {found: false};
  link.scrollIntoView();
  const box = link.getBoundingClientRect();
  const at = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
  const footer = link.parentElement;
  const style = getComputedStyle(footer);
  const around = footer.getBoundingClientRect();
  return {found: true, x: box.left, y: box.top, width: box.width, height: box.height,
          footer_box: {x: around.left, y: around.top, width: around.width, height: around.height},
          clickable: at === link || link.contains(at), link_colour: getComputedStyle(link).color,
          text: footer.innerText, colour: style.color, font_size: style.fontSize, opacity: style.opacity,
          display: style.display};
}"""
HIDE_LINK = """() => [...document.querySelectorAll('a')].filter(a => a.textContent.trim() === 'Unsubscribe')
  .forEach(a => a.style.setProperty('visibility', 'hidden', 'important'))"""
HIDE_FOOTER = """() => [...document.querySelectorAll('a')].filter(a => a.textContent.trim() === 'Unsubscribe')
  .forEach(a => a.parentElement.style.setProperty('visibility', 'hidden', 'important'))"""


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


def delivered_html(style_sheet: str) -> str:
    """The HTML part delivery sends for a campaign with this style sheet in its head."""
    renderer = Renderer(RenderSettings("https://t.herald.example", "bounces.herald.example"),
                        MessageTokens(SECRET), LinkSigner(SECRET, "https://lists.herald.example"), {})
    content = CampaignContent.model_validate({
        "subject": "Sale", "from_name": "Acme", "from_email": "news@acme.example", "text_body": "Sale. News.",
        "html_body": f"<html><head>{style_sheet}</head><body><h1>Sale</h1><p>News.</p></body></html>"})
    template = compile_campaign("acme", "c1", content, footer=True, settings=renderer.settings)
    member = Member("s1", "news", "ann@example.org", "active")
    rendered = renderer.campaign_message(template, member, "0e6f3f0a-7f4f-5a59-9d8d-2b8f7c0c4b11")
    message = email.message_from_bytes(rendered.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


async def footer_as_drawn(page: Page, html: str) -> dict[str, Any]:
    await page.set_content(html)
    found: dict[str, Any] = await page.evaluate(PROBE)
    assert found["found"], html
    # Drawn: its pixels change when it is hidden (the link; then the rest of the footer, its identification).
    found["drawn"] = found["identification_drawn"] = False
    around = found["footer_box"]
    if found["width"] >= 1 and found["height"] >= 1 and around["width"] >= 1 and around["height"] >= 1:
        clip = {"x": found["x"], "y": found["y"], "width": found["width"], "height": found["height"]}
        shown, footer_shown = await page.screenshot(clip=clip), await page.screenshot(clip=around)
        await page.evaluate(HIDE_LINK)
        found["drawn"] = shown != await page.screenshot(clip=clip)
        footer_shown = await page.screenshot(clip=around)
        await page.evaluate(HIDE_FOOTER)
        found["identification_drawn"] = footer_shown != await page.screenshot(clip=around)
    return found


@pytest.mark.parametrize("style_sheet", list(HIDING_STYLE_SHEETS.values()), ids=list(HIDING_STYLE_SHEETS))
async def test_a_style_sheet_on_the_footers_elements_leaves_the_link_drawn_clickable_and_the_footer_as_it_was(
        browser: Browser, style_sheet: str) -> None:
    """PRODUCT.md, "Every message": the unsubscribe link and the footer cannot be removed or hidden."""
    page = await browser.new_page(viewport={"width": 800, "height": 600})
    try:
        control = await footer_as_drawn(page, delivered_html(""))
        styled = await footer_as_drawn(page, delivered_html(style_sheet))
    finally:
        await page.close()
    assert control["drawn"] and control["identification_drawn"] and control["clickable"]
    assert control["width"] > 40 and control["height"] > 10
    assert styled["drawn"], styled
    assert styled["identification_drawn"], styled
    assert styled["clickable"], styled
    assert (styled["width"], styled["height"]) == (control["width"], control["height"])
    assert 0 <= styled["x"] < 800, styled  # on the page, not moved off it
    for looks in ("colour", "link_colour", "font_size", "opacity", "display"):
        assert styled[looks] == control[looks], (looks, styled)
    assert styled["text"] == control["text"] == f"Unsubscribe\n{IDENTIFICATION_FOOTER}"
