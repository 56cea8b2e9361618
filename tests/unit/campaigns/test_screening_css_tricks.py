"""Screening of CSS that hides or disables the footer's unsubscribe link in ways it let through before (PRODUCT.md,
"Every message": the unsubscribe link and the footer cannot be hidden): colours written as hsl() or hwb() or in
functions screening does not convert, rules nested in style rules (CSS nesting), var(), calc() and the like,
pointer-events, letter and word spacing, text drawn as discs, filters and blends that take text to the page's
white, an image as an element's content, a motion path; an element left open in a <head>; a background where the
footer goes in its own colours. What designers write with the same properties still passes."""

from __future__ import annotations

import pytest

from herald_campaigns.screening import _colour, _css_rules, _px, screen


def refused_for(html_body: str) -> list[str]:
    return [refusal.reason for refusal in screen(subject="News", preheader=None, html_body=html_body,
                                                 text_body="News").refusals]


def head(css: str) -> str:
    """The reviewer's page: the CSS in the head, a heading and a paragraph, the footer appended at </body>."""
    return f"<html><head>{css}</head><body><h1>Sale</h1><p>News.</p></body></html>"


# Each hid the footer or its link in Chromium (or, the last ones, would in any browser) and passed screening.
@pytest.mark.parametrize("css", [
    "<style>a{pointer-events:none}</style>",
    "<style>div{pointer-events:none}</style>",
    "<style>div{letter-spacing:-20px}</style>",
    "<style>a{letter-spacing:200px}</style>",
    "<style>div{word-spacing:-50px}</style>",
    "<style>body{& div{display:none}}</style>",
    "<style>div{display:none; & p{color:red}}</style>",  # declarations before a nested rule
    "<style>.x{color:red} div{@media all{display:none}}</style>",  # a nested @media's declarations
    "<style>html{& > body{& div{visibility:hidden}}}</style>",
    "<style>div{content:\"}\";display:none}</style>",  # a brace in a string ends nothing
    "<style>div{font-size:calc(1px)}</style>",
    "<style>div{font-size:calc(1px)!important}</style>",
    "<style>a{font-size:max(1px, 0.1em)}</style>",
    "<style>div{font:clamp(0px, 1px, 2px) Arial}</style>",
    "<style>div{opacity:calc(0)}</style>",
    "<style>div{position:relative;left:calc(-9999px + 0%)}</style>",
    "<style>div{transform:translate(calc(-9999px))}</style>",
    "<style>div{font-size:round(1px, 2px)}</style>",  # math screening cannot work out
    "<style>div{display:attr(data-x type(*))}</style>",  # nor an attribute's value
    "<style>div,a{color:hsl(0 0% 100%)}</style>",
    "<style>div,a{color:hsla(0, 0%, 100%, 1)}</style>",
    "<style>div,a{color:hwb(0 100% 0%)}</style>",
    "<style>div,a{color:floralwhite}</style>",
    "<style>div,a{color:oklch(1 0 0)}</style>",  # not converted: refused as a colour screening cannot read
    "<style>div,a{color:lab(100 0 0)}</style>",
    "<style>div,a{color:color(srgb 1 1 1)}</style>",
    "<style>div,a{color:Canvas}</style>",  # a system colour: the page's
    "<style>:root{--x:none}div{display:var(--x)}</style>",
    "<style>:root{--x:none;--y:var(--x)}div{display:var(--y)}</style>",
    "<style>div{display:var(--missing, none)}</style>",
    "<style>.a{--c:#fff}.b{--c:#000}div,a{color:var(--c)}</style>",  # any of its values
    "<div style='--x:none;display:var(--x)'><p>hi</p>",
    "<div style='font-size:0.5px'><p>hi</p>",  # left open in the <head>: the body starts there
    "<style>div{-webkit-text-security:disc}</style>",
    "<style>div{filter:brightness(100)}</style>",
    "<style>div{filter:contrast(0)}</style>",
    "<style>div{filter:url(#flood)}</style>",
    "<style>div{mix-blend-mode:screen}</style>",
    "<style>div{-webkit-text-stroke:4px #fff}</style>",
    "<style>div{font-size-adjust:0}</style>",
    "<style>a{content:url(data:image/gif;base64,R0lGODlhAQABAAAAACw=)}</style>",
    "<style>div{offset-path:path('M-9999,0 L-9999,1')}</style>",
    "<style>div{transform:rotateY(180deg);backface-visibility:hidden}</style>",
    "<style>body{background:#555}</style>",  # the footer's own grey text on it
    "<style>body{background:hsl(240 100% 47%)}</style>",  # its link's blue
])
def test_css_that_hides_the_footer_or_disables_its_link_is_refused(css: str) -> None:
    reasons = refused_for(head(css))
    assert reasons, css
    assert all("footer" in reason or "unsubscribe" in reason for reason in reasons)


# Ordinary newsletters' CSS with the same properties, and what Chromium showed does not hide the footer.
@pytest.mark.parametrize("css", [
    "<style>div{column-count:1;height:0;column-fill:auto}</style>",  # the footer's text still drawn, clickable
    "<style>div{content-visibility:auto;contain-intrinsic-size:0}</style>",  # drawn once scrolled to
    "<style>body{color:hsl(0 0% 13%)}h1{color:hwb(210 10% 40%)}div{color:hsl(210, 30%, 30%)}</style>",
    "<style>.card{color:oklch(0.5 0.1 200)} p{color:lab(30 10 10)}</style>",  # unconverted, but not the footer's
    "<style>div{width:calc(100% - 40px);max-width:min(600px, 100%);margin:0 auto}</style>",
    "<style>div{font-size:clamp(14px, 2vw, 18px);line-height:calc(1em + 6px)}</style>",
    "<style>:root{--brand:#0b5fff;--text:#222}body{color:var(--text)}a{color:var(--brand)}</style>",
    "<style>:root{--gap:24px}div{padding:var(--gap);margin-top:var(--gap)}</style>",
    "<style>.card{& .title{font-weight:bold} &:hover{color:#333} @media (max-width:600px){padding:8px}}</style>",
    "<style>.hide-mobile{@media (max-width:600px){display:none}}</style>",  # its own class: not the footer's
    "<style>h1{letter-spacing:-1px} div{letter-spacing:0.02em;word-spacing:2px} .caps{letter-spacing:4px}</style>",
    "<style>.btn-disabled{pointer-events:none} a::after{content:url(arrow.png)}</style>",
    "<style>img{mix-blend-mode:multiply;filter:brightness(1.1) contrast(1.05)}</style>",
    "<style>div{filter:saturate(1.2)}</style>",
    "<style>body{background:#f4f4f4} .dark{background:#555;color:#fff}</style>",
])
def test_designers_css_with_the_same_properties_passes(css: str) -> None:
    assert refused_for(head(css)) == []


def test_hsl_and_hwb_are_read_as_the_colours_they_are() -> None:
    assert _colour("hsl(0 0% 100%)") == (255, 255, 255, 1.0)
    assert _colour("hsl(120deg 100% 25% / 50%)") == (0, 128, 0, 0.5)
    assert _colour("hsla(240, 100%, 50%, .3)") == (0, 0, 255, 0.3)
    assert _colour("hwb(0 0% 0%)") == (255, 0, 0, 1.0)
    assert _colour("hwb(0 60% 60%)") == (128, 128, 128, 1.0)  # whiteness and blackness past 100%: a grey
    assert _colour("rebeccapurple") == (0x66, 0x33, 0x99, 1.0)
    assert _colour("oklch(1 0 0)") == _colour("rgb(from red r g b)") == (0, 0, 0, -2.0)  # unreadable


def test_math_is_worked_out_and_what_cannot_be_is_no_length() -> None:
    assert _px("calc(1px)") == 1
    assert _px("calc(2 * (3px + 1px))") == 8
    assert _px("clamp(1px, 5px, 3px)") == 3
    assert _px("min(1px, 100vw)") == 1
    assert _px("calc(10px - -2px)") == 12
    assert _px("calc(-infinity * 1px)") is not None and _px("calc(-infinity * 1px)") < -100  # type: ignore[operator]
    assert _px("calc(1px + var(--x))") is None and _px("round(1px, 2px)") is None and _px("calc(1px") is None


def test_nested_rules_read_as_the_selectors_they_select() -> None:
    assert list(_css_rules("body{& div{display:none}}")) == [("body div", "display:none", False, False),
                                                              ("body", ";", False, False)]
    assert [rule[0] for rule in _css_rules("a, b{ > c{x:1} &.e{z:3} .d &{y:2} }")] == [
        "a > c, b > c", "a.e, b.e", ".d :is(a), .d :is(b)", "a, b"]
    assert next(_css_rules("div{@media print{display:none}}")) == ("div", "display:none", False, True)
    assert list(_css_rules("@keyframes k{to{opacity:0}} p{color:red}")) == [("p", "color:red", False, False)]
