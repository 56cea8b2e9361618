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
    # Animations rank below an element's own !important, and transform:none leaves no 3D for a perspective to use.
    "animation to opacity:0, kept": "<style>@keyframes h{to{opacity:0;visibility:hidden}}"
                                    "div,a{animation:h .001s forwards}</style>",
    "animation off the page, kept": "<style>@keyframes h{to{transform:translateX(-9999px) scale(0)}}"
                                    "div,a{animation:h 1s both}</style>",
    "animation to font-size:0 and white": "<style>@keyframes h{to{font-size:0;color:#fff;-webkit-text-fill-color:#fff}}"
                                          "div,a{animation:h 1s forwards}</style>",
    "animation to display:none and clip-path": "<style>@keyframes h{to{display:none;clip-path:inset(50%)}}"
                                               "div,a{animation:h 1s forwards}</style>",
    "animation far off, position absolute": "<style>@keyframes h{to{position:absolute;left:-9999px;top:-9999px}}"
                                            "div,a{animation:h 1s forwards}</style>",
    "animation paused on opacity:0": "<style>@keyframes h{from{opacity:0}} div,a{animation:h 1s paused}</style>",
    "animation blinking forever": "<style>@keyframes h{0%,100%{opacity:0}} div,a{animation:h 1s infinite}</style>",
    "-webkit-keyframes": "<style>@-webkit-keyframes h{to{opacity:0}} div,a{-webkit-animation:h .001s forwards}</style>",
    "transition from @starting-style": "<style>@starting-style{div,a{opacity:0}} div,a{transition:opacity 3600s}"
                                       "</style>",
    "perspective() translateZ behind": "<style>div,a{transform:perspective(10px) translateZ(20px)!important}</style>",
    "matrix3d w<0": "<style>div,a{transform:matrix3d(1,0,0,0,0,1,0,0,0,0,1,0,0,0,0,-1)!important}</style>",
    "parent's perspective": "<style>body{perspective:10px}div,a{transform:translateZ(20px)!important}</style>",
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
# Animations as they are when they last: a finite one at its end (past any delay), one repeating forever at its
# start; a paused one where it is held.
SETTLE = """() => document.getAnimations().forEach(a => {
  if (a.playState === 'paused') return;
  if (a.effect.getComputedTiming().iterations === Infinity) { a.pause(); a.currentTime = 0; } else a.finish();
})"""
HIDE_LINK = """() => [...document.querySelectorAll('a')].filter(a => a.textContent.trim() === 'Unsubscribe')
  .forEach(a => a.style.setProperty('visibility', 'hidden', 'important'))"""
HIDE_FOOTER = """() => [...document.querySelectorAll('a')].filter(a => a.textContent.trim() === 'Unsubscribe')
  .forEach(a => a.parentElement.style.setProperty('visibility', 'hidden', 'important'))"""


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


def delivered_html(style_sheet: str, ending: str = "") -> str:
    """The HTML part delivery sends for a campaign with this style sheet in its head, whose body ends with
    `ending` (where the footer goes)."""
    renderer = Renderer(RenderSettings("https://t.herald.example", "bounces.herald.example"),
                        MessageTokens(SECRET), LinkSigner(SECRET, "https://lists.herald.example"), {})
    content = CampaignContent.model_validate({
        "subject": "Sale", "from_name": "Acme", "from_email": "news@acme.example", "text_body": "Sale. News.",
        "html_body": f"<html><head>{style_sheet}</head><body><h1>Sale</h1><p>News.</p>{ending}</body></html>"})
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
    await page.evaluate(SETTLE)
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


# What animates or turns the elements around the footer (here <body>) hides it in Chromium: no reset reaches them.
HIDING_THE_BODY = {
    "animation to opacity:0, kept": "<style>@keyframes h{to{opacity:0}} body{animation:h .001s forwards}</style>",
    "animation paused on opacity:0": "<style>@keyframes h{from{opacity:0}} body{animation:h 1s paused}</style>",
    "animation blinking forever": "<style>@keyframes h{0%,100%{opacity:0}} body{animation:h 1s infinite}</style>",
    "animation after an hour, kept": "<style>@keyframes h{to{opacity:0}} body{animation:h 1s 3600s forwards}</style>",
    "animation edge-on, kept": "<style>@keyframes h{to{transform:rotateX(90deg)}}"
                               "body{animation:h 1s forwards}</style>",
    "perspective() translateZ behind": "<style>body{transform:perspective(100px) translateZ(200px)}</style>",
    "perspective() translateZ far": "<style>body{transform:perspective(100px) translateZ(-10000px)}</style>",
    "parent's perspective": "<style>html{perspective:10px} body{transform:translateZ(20px)}</style>",
    "matrix3d w<0": "<style>body{transform:matrix3d(1,0,0,0,0,1,0,0,0,0,1,0,0,0,0,-1)}</style>",
    "rotateX twice": "<style>body{transform:rotateX(60deg) rotateX(30deg)}</style>",
}
# Delivery's resets win over these, and screening refuses them all the same (as it does `div{display:none}`).
BEATEN_BY_THE_RESETS = [name for name in HIDING_STYLE_SHEETS if "animation" in name or "keyframes" in name
                        or "perspective" in name or "matrix3d" in name]


def screening_refuses(style_sheet: str) -> bool:
    from herald_campaigns.screening import screen
    html_body = f"<html><head>{style_sheet}</head><body><h1>Sale</h1><p>News.</p></body></html>"
    return screen(subject="Sale", preheader=None, html_body=html_body, text_body="Sale. News.").refused


@pytest.mark.parametrize("name", BEATEN_BY_THE_RESETS)
def test_screening_refuses_an_animation_or_3d_transform_of_the_footers_elements_though_their_resets_win(
        name: str) -> None:
    """Defence in depth: the same rule on a <div> left open around the footer would hide it."""
    assert screening_refuses(HIDING_STYLE_SHEETS[name])


@pytest.mark.parametrize("style_sheet", list(HIDING_THE_BODY.values()), ids=list(HIDING_THE_BODY))
async def test_an_animation_or_3d_transform_of_the_body_hides_the_footer_and_screening_refuses_it(
        browser: Browser, style_sheet: str) -> None:
    """PRODUCT.md, "Every message": what would hide the footer in a reader's browser is refused at screening."""
    page = await browser.new_page(viewport={"width": 800, "height": 600})
    try:
        styled = await footer_as_drawn(page, delivered_html(style_sheet))
    finally:
        await page.close()
    assert not (styled["drawn"] and styled["clickable"]), styled
    assert screening_refuses(style_sheet)


async def test_a_body_fading_in_leaves_the_footer_drawn_and_passes_screening(browser: Browser) -> None:
    style_sheet = "<style>@keyframes h{from{opacity:0}to{opacity:1}} body{animation:h 1s both}</style>"
    page = await browser.new_page(viewport={"width": 800, "height": 600})
    try:
        styled = await footer_as_drawn(page, delivered_html(style_sheet))
    finally:
        await page.close()
    assert styled["drawn"] and styled["identification_drawn"] and styled["clickable"], styled
    assert not screening_refuses(style_sheet)


# Bodies ending inside an element that HTML's width/height attributes size (review R2), or a <marquee>.
CLIPPING_ENDINGS = {
    "td width=1, overflow:hidden, fixed layout": "<table width=1 style='table-layout:fixed'><tr>"
                                                 "<td width=1 style='overflow:hidden'>",
    "th width=1px, overflow:clip": "<table width=1 style='table-layout:fixed'><tr>"
                                   "<th width='1px' style='overflow:clip'>",
    "table width=1, overflow:hidden": "<table width=1 style='table-layout:fixed;overflow:hidden'><tr><td>",
    "a rule's overflow:hidden on td width=1": "<style>td{overflow:hidden}</style>"
                                              "<table width=1 style='table-layout:fixed'><tr><td width=1>",
    "td height=1 made a block": "<table><tr><td height=1 style='overflow:hidden;display:block'>",
    "marquee width=1": "<marquee width=1>",
    "marquee style width:1px": "<marquee style='width:1px'>",
    "marquee height=1 up": "<marquee height=1 direction=up>",
}
MARQUEES = {"marquee": "<marquee>", "marquee width=600": "<marquee width=600>",
            **{name: ending for name, ending in CLIPPING_ENDINGS.items() if ending.startswith("<marquee")}}
# Drawn whole in Chromium, and screening passes them: builders' 600px and 100% tables, sizes that clip nothing.
PASSING_ENDINGS = {
    "table and td width=600": "<table width='600' align='center'><tr><td width='600'>",
    "table width=100%": "<table width='100%'><tr><td>",
    "td width=600 overflow:hidden, fixed": "<table width=600 style='table-layout:fixed'><tr>"
                                           "<td width=600 style='overflow:hidden'>",
    "td width=1, no overflow, fixed": "<table width=1 style='table-layout:fixed'><tr><td width=1>",
    "td height=1 overflow:hidden": "<table><tr><td height=1 style='overflow:hidden'>",
    "table height=1 overflow:hidden": "<table height=1 style='overflow:hidden'><tr><td>",
    "td width=0 overflow:hidden": "<table><tr><td width=0 style='overflow:hidden'>",
    "div width=1 overflow:hidden": "<div width=1 style='overflow:hidden'>",
    "marquee closed before": "<marquee>Sale today!</marquee><p>Hello</p>",
    "blink": "<blink>",
}
# Drawn whole in Chromium's automatic table layout, refused all the same, as the same CSS width is: a table's
# layout is one `table-layout:fixed` from cutting the footer off.
REFUSED_THOUGH_DRAWN = {
    "td width=1 overflow:hidden, automatic layout": "<table><tr><td width=1 style='overflow:hidden'>",
    "table width=1 overflow:hidden, automatic layout": "<table width=1 style='overflow:hidden'><tr><td>",
}
# How much of the link a click can reach: of 15 x 14 points across its box, those where the link is on top.
LINK_POINTS = """() => {
  const link = [...document.querySelectorAll('a')].find(a => a.textContent.trim() === 'Unsubscribe');
  link.scrollIntoView();
  const box = link.getBoundingClientRect();
  let reached = 0;
  for (let i = 0; i < 15; i++) for (let j = 0; j < 14; j++) {
    const at = document.elementFromPoint(box.left + (i + .5) * box.width / 15, box.top + (j + .5) * box.height / 14);
    if (at === link || link.contains(at)) reached++;
  }
  return reached;
}"""
LINK_PLACE = """() => {
  const box = [...document.querySelectorAll('a')].find(a => a.textContent.trim() === 'Unsubscribe')
    .getBoundingClientRect();
  return `${box.left},${box.top}`;
}"""
ALL_POINTS = 15 * 14


def screening_refuses_ending(ending: str) -> bool:
    from herald_campaigns.screening import screen
    html_body = f"<html><head></head><body><h1>Sale</h1><p>News.</p>{ending}</body></html>"
    return screen(subject="Sale", preheader=None, html_body=html_body, text_body="Sale. News.").refused


async def link_points(browser: Browser, ending: str) -> int:
    page = await browser.new_page(viewport={"width": 800, "height": 600})
    try:
        await page.set_content(delivered_html("", ending))
        reached: int = await page.evaluate(LINK_POINTS)
        return reached
    finally:
        await page.close()


@pytest.mark.parametrize("ending", list(CLIPPING_ENDINGS.values()), ids=list(CLIPPING_ENDINGS))
async def test_a_body_ending_in_an_element_sized_by_attributes_and_clipped_cuts_the_link_off_and_is_refused(
        browser: Browser, ending: str) -> None:
    """PRODUCT.md, "Every message": the footer's inline resets cannot undo what an ancestor clips."""
    assert await link_points(browser, "") == ALL_POINTS
    assert await link_points(browser, ending) < ALL_POINTS / 2
    assert screening_refuses_ending(ending)


@pytest.mark.parametrize("ending", list(MARQUEES.values()), ids=list(MARQUEES))
async def test_a_body_ending_in_a_marquee_keeps_the_link_moving_and_is_refused(browser: Browser,
                                                                              ending: str) -> None:
    page = await browser.new_page(viewport={"width": 800, "height": 600})
    try:
        await page.set_content(delivered_html("", ending))
        place = await page.evaluate(LINK_PLACE)
        await page.wait_for_function(f"place => ({LINK_PLACE})() !== place", arg=place, timeout=10_000)
    finally:
        await page.close()
    assert screening_refuses_ending(ending)


@pytest.mark.parametrize("ending", list(PASSING_ENDINGS.values()), ids=list(PASSING_ENDINGS))
async def test_builders_table_sizes_and_what_clips_nothing_leave_the_link_whole_and_pass(
        browser: Browser, ending: str) -> None:
    assert await link_points(browser, ending) == ALL_POINTS
    assert not screening_refuses_ending(ending)


@pytest.mark.parametrize("ending", list(REFUSED_THOUGH_DRAWN.values()), ids=list(REFUSED_THOUGH_DRAWN))
async def test_a_narrow_clipping_cell_in_an_automatic_table_is_drawn_whole_yet_refused_as_its_css_is(
        browser: Browser, ending: str) -> None:
    assert await link_points(browser, ending) == ALL_POINTS
    assert screening_refuses_ending(ending)
    css = ending.replace("width=1 style='", "style='width:1px;")
    assert await link_points(browser, css) == ALL_POINTS
    assert screening_refuses_ending(css)
