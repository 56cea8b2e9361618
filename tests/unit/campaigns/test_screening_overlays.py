"""Screening of what hides or covers the footer, near the line between design and hiding (PRODUCT.md, "Every
message"): hero scrims and cover images inside a positioned hero, Beefree's stock CSS, a sticky header, a rotated
badge, a small blur and a logo link's text-indent pass; small variations of hiding on an element left open at the
end of the body, or in a rule that reaches the footer, and overlays over the footer, are refused."""

from __future__ import annotations

import pytest

from herald_campaigns.screening import screen


def refused_for(html_body: str) -> list[str]:
    return [refusal.reason for refusal in screen(subject="News", preheader=None, html_body=html_body,
                                                 text_body="News").refusals]


def page(inner: str) -> str:
    return f"<html><head></head><body style='background:#ffffff;color:#222'>{inner}</body></html>"


# What Beefree exports around every message (its stock style sheet, abridged), with an image block and its caption.
BEEFREE = """<!DOCTYPE html><html><head><style>
* { box-sizing:border-box; } body { margin:0; padding:0; }
a[x-apple-data-detectors] { color:inherit !important; text-decoration:inherit !important; }
#MessageViewBody a { color:inherit; text-decoration:none; } p { line-height:inherit }
.desktop_hide, .desktop_hide table { mso-hide:all; display:none; max-height:0px; overflow:hidden; }
.image_block img+div { display:none; }
@media (max-width:620px) { .mobile_hide { display:none; min-height:0; max-height:0; max-width:0; overflow:hidden;
  font-size:0px; } .desktop_hide, .desktop_hide table { display:table !important; max-height:none !important; } }
</style></head><body style="background-color:#ffffff;margin:0;padding:0;-webkit-text-size-adjust:none;">
<table class="nl-container" width="100%" role="presentation" style="background-color:#ffffff;"><tbody><tr><td>
<table class="row row-1" align="center" width="100%"><tbody><tr><td>
<table class="image_block block-1" width="100%"><tr><td class="pad"><div class="alignment" align="center">
<img src="https://d1oco4z2z1fhwp.cloudfront.net/templates/default/hero.png" style="display:block;height:auto;
border:0;width:600px;max-width:100%;" width="600" alt="Autumn loaves"></div></td></tr></table>
<table class="paragraph_block block-2" width="100%"><tr><td class="pad"><div style="color:#101112;
font-family:Arial,sans-serif;font-size:16px;line-height:120%;"><p style="margin:0;">Rye season is here.</p></div>
</td></tr></table></td></tr></tbody></table></td></tr></tbody></table></body></html>"""

# (title, HTML body): ordinary designs, all of which must pass.
DESIGNS = [
    ("a dark scrim over a hero image (inline)", page(
        "<div style='position:relative;width:600px'><img src='https://cdn.example.com/hero.jpg' width='600' "
        "height='300'><div style='position:absolute;top:0;left:0;width:100%;height:100%;"
        "background:rgba(0,0,0,0.4)'></div><h1 style='position:absolute;bottom:20px;left:20px;color:#fff'>"
        "Spring sale</h1></div><p>Hello</p>")),
    ("the scrim as a class rule (inset:0)", page(
        "<style>.hero{position:relative}.hero .scrim{position:absolute;inset:0;background:rgba(0,0,0,.35)}</style>"
        "<div class='hero'><img src='https://cdn.example.com/h.jpg' width='600'><div class='scrim'></div></div>"
        "<p>Hello</p>")),
    ("a hero <img> as an absolute cover (object-fit)", page(
        "<div style='position:relative;height:320px'><img src='https://cdn.example.com/h.jpg' style='position:"
        "absolute;top:0;left:0;width:100%;height:100%;object-fit:cover'><h1 style='position:relative;color:#fff'>"
        "Autumn</h1></div><p>Hello</p>")),
    ("a 600x600 absolute image in its own positioned card", page(
        "<div style='position:relative'><img src='https://cdn.example.com/a.jpg' style='position:absolute;top:0;"
        "left:0;width:600px;height:600px'></div><p>Hello</p>")),
    ("a scrim of calc(100%) and min-height inside a positioned hero", page(
        "<div style='position:relative'><div style='position:absolute;top:0;left:0;width:calc(100%);"
        "min-height:100%;background:#000'></div></div><p>Hello</p>")),
    ("Beefree's stock CSS", BEEFREE),
    ("a sticky header", page("<div style='position:sticky;top:0;background:#fff'>Logo</div><p>Hello</p>")),
    ("a rotated badge, its element left open", page("<p>Hello</p><div style='transform:rotate(-8deg)'>New")),
    ("a badge turned a little in 3D", page("<span style='transform:rotateY(30deg)'>New</span><p>Hello</p>")),
    ("a mirrored arrow left open", page("<p>Hello</p><div style='transform:scaleX(-1)'>&rarr;")),
    ("a small blur on a decorative image", page(
        "<div><img src='https://cdn.example.com/bg.jpg' style='filter:blur(2px)'></div><p>Hello</p>")),
    ("a strong blur on an image closed before the footer", page(
        "<div><img src='https://cdn.example.com/bg.jpg' style='filter:blur(20px)'></div><p>Hello</p>")),
    ("a masked picture closed before the footer", page(
        "<img src='https://cdn.example.com/p.jpg' style='-webkit-mask-image:url(https://cdn.example.com/m.png)'>"
        "<p>Hello</p>")),
    ("a logo link's text-indent, closed before the footer", page(
        "<a href='https://acme.example/' style='display:block;width:120px;height:40px;text-indent:100%;"
        "white-space:nowrap;overflow:hidden;background:url(https://acme.example/logo.png)'>Acme</a><p>Hello</p>")),
    ("a logo link's text-indent as a rule under its class", page(
        "<style>.logo a{text-indent:-9999px;overflow:hidden}</style><div class='logo'><a href='/'>Acme</a></div>"
        "<p>Hello</p>")),
    ("a card's soft shadow and a link's focus outline", page(
        "<div style='box-shadow:0 2px 8px rgba(0,0,0,.2)'><a href='/' style='outline:2px solid #06c'>Go</a></div>"
        "<p>Hello</p>")),
    ("a full-width wrapper left open, cutting nothing off", page("<div style='width:100%;overflow:hidden'><p>Hi")),
    ("a sticky panel as tall as the window in its own section", page(
        "<div><div style='position:sticky;top:0;height:100vh;background:#fff'>x</div></div><p>Hello</p>")),
]


@pytest.mark.parametrize(("title", "html_body"), DESIGNS, ids=[title for title, _ in DESIGNS])
def test_ordinary_designs_pass(title: str, html_body: str) -> None:
    assert refused_for(html_body) == []


OPEN = "This element hides its content ({what}) and is not closed before the end of the body"
DRAWN = "This element is drawn over the page ({what})"

# (HTML inside the body, the start of the refusal): an element left open where the footer goes.
HIDING = [
    ("<div style='transform:scale(0.1);transform-origin:0 0'><p>Hello</p>", OPEN.format(what="transform:scale(0.1)")),
    ("<div style='scale:15%'><p>Hello</p>", OPEN.format(what="scale:15%")),
    ("<div style='zoom:0.1'><p>Hello</p>", OPEN.format(what="zoom:0.1")),
    ("<div style='width:2px;overflow:hidden'><p>Hello</p>", OPEN.format(what="width:2px with overflow:hidden")),
    ("<div style='max-width:300px;overflow:hidden;white-space:nowrap'><p>Hello</p>",
     OPEN.format(what="max-width:300px with overflow:hidden")),
    ("<div style='position:relative;left:3000px'><p>Hello</p>", OPEN.format(what="left:3000px")),
    ("<div style='margin-left:3000px'><p>Hello</p>", OPEN.format(what="margin-left:3000px")),
    ("<div style='transform:rotateX(90deg)'><p>Hello</p>", OPEN.format(what="transform:rotatex(90deg)")),
    ("<div style='transform:rotateY(-0.25turn)'><p>Hello</p>", OPEN.format(what="transform:rotatey(-0.25turn)")),
    ("<div style='-webkit-transform:rotate3d(0,1,0,88deg)'><p>Hello</p>",
     OPEN.format(what="-webkit-transform:rotate3d(0,1,0,88deg)")),
    ("<div style='rotate:x 90deg'><p>Hello</p>", OPEN.format(what="rotate:x 90deg")),
    ("<div style='transform:matrix3d(0.01,0,0,0,0,0.01,0,0,0,0,1,0,0,0,0,1)'><p>Hello</p>",
     OPEN.format(what="transform:matrix3d(0.01,0,0,0,0,0.01,0,0,0,0,1,0,0,0,0,1)")),
    ("<div style='transform:matrix(1,1,1,1,0,0)'><p>Hello</p>", OPEN.format(what="transform:matrix(1,1,1,1,0,0)")),
    ("<div style='-webkit-mask-image:linear-gradient(transparent,transparent)'><p>Hello</p>",
     OPEN.format(what="-webkit-mask-image:linear-gradient(transparent,transparent)")),
    ("<div style='mask:url(#nothing)'><p>Hello</p>", OPEN.format(what="mask:url(#nothing)")),
    ("<div style='filter:blur(40px)'><p>Hello</p>", OPEN.format(what="filter:blur(40px)")),
    ("<div style='-webkit-filter:blur(0.5em)'><p>Hello</p>", OPEN.format(what="-webkit-filter:blur(0.5em)")),
    ("<div style='text-indent:100%;white-space:nowrap;overflow:hidden'><p>Hello</p>",
     OPEN.format(what="text-indent:100% with overflow:hidden")),
    ("<div style='text-indent:200px;overflow-x:clip'><p>Hello</p>",
     OPEN.format(what="text-indent:200px with overflow:clip")),
    ("<div style='contain:paint;height:20px'><p>Hello</p>", OPEN.format(what="height:20px with contain:paint")),
    ("<div style='contain:strict;max-height:40px'><p>Hello</p>",
     OPEN.format(what="max-height:40px with contain:strict")),
]


@pytest.mark.parametrize(("inner", "reason"), HIDING)
def test_small_variations_of_hiding_on_an_element_left_open_are_refused(inner: str, reason: str) -> None:
    reasons = refused_for(page(inner))
    assert len(reasons) == 1 and reasons[0].startswith(reason), reasons


@pytest.mark.parametrize("inner", [
    "<div style='transform:scale(0.5)'><p>Hello</p>",  # smaller, still readable
    "<div style='zoom:0.8'><p>Hello</p>",
    "<div style='transform:rotateX(45deg)'><p>Hello</p>",
    "<div style='filter:blur(3px)'><p>Hello</p>",
    "<div style='text-indent:2em'><p>Hello</p>",  # a paragraph's indent
    "<div style='text-indent:100%'><p>Hello</p>",  # the first line moves down a line; nothing cuts it off
    "<div style='margin-left:40px;position:relative;left:20px'><p>Hello</p>",
    "<div style='contain:strict'><p>Hello</p>",  # containment with no size cuts nothing off
    "<div style='mask:none;-webkit-mask-image:none'><p>Hello</p>",
    "<div style='max-width:600px;overflow:hidden'><p>Hello</p>",  # the footer's lines wrap within it
    "<style>div{max-width:600px;overflow:hidden}</style><p>Hello</p>",
])
def test_what_stays_readable_on_an_element_left_open_passes(inner: str) -> None:
    assert refused_for(page(inner)) == []


# (HTML inside the body, the start of the refusal): drawn over the footer, or a rule reaching it.
OVER = [
    ("<div style='position:absolute;top:0;left:0;width:calc(100%);height:calc(100%);background:#fff'>x</div>"
     "<p>Hello</p>", DRAWN.format(what="position:absolute over the whole page with background #ffffff")),
    ("<div style='position:absolute;top:0;left:0;width:100%;min-height:100%;background:#fff'>x</div><p>Hello</p>",
     DRAWN.format(what="position:absolute over the whole page with background #ffffff")),
    ("<div style='position:sticky;top:0;height:100vh;background:#fff'>x</div><p>Hello</p>",
     DRAWN.format(what="position:sticky as tall as the window with background #ffffff")),
    ("<div style='position:relative;z-index:9;box-shadow:0 0 0 9999px #fff'>x</div><p>Hello</p>",
     DRAWN.format(what="box-shadow:0 0 0 9999px #fff")),
    ("<p style='outline:2000px solid #fff'>Hello</p>", DRAWN.format(what="outline:2000px solid #fff")),
    # inside a positioned element, but one the footer ends up in, or reaching far past it
    ("<div style='position:relative'><div style='position:absolute;inset:0;background:#000'></div><p>Hello</p>",
     DRAWN.format(what="position:absolute over the whole page with background #000000")),
    ("<div style='position:relative'><div style='position:absolute;top:0;left:0;width:100%;height:5000px;"
     "background:#fff'></div></div><p>Hello</p>",
     DRAWN.format(what="position:absolute over the whole page with background #ffffff")),
    ("<div style='position:relative'><p>Hello</p><div style='position:absolute;bottom:0;left:0;width:100%;"
     "height:60px;background:#fff'></div>",
     DRAWN.format(what="position:absolute at the bottom with background #ffffff")),
    # rules: what they could select is placed on the page, or is the footer's own <div>
    ("<style>.hero .scrim{position:absolute;inset:0;background:#000}</style><div class='hero'><div class='scrim'>"
     "</div></div><p>Hello</p>", "A <style> rule (.hero .scrim) draws an element over the page"),
    ("<style>@media (min-width:600px){.hero{position:relative}}.scrim{position:absolute;inset:0;background:#000}"
     "</style><div class='hero'><div class='scrim'></div></div><p>Hello</p>", "A <style> rule (.scrim) draws"),
    ("<style>.hero{position:relative}.scrim{position:absolute;inset:0;background:#000}</style><div class='hero' "
     "style='position:static'><div class='scrim'></div></div><p>Hello</p>", "A <style> rule (.scrim) draws"),
    ("<style>.hero{position:relative}.scrim{position:absolute;inset:0;background:#000}</style><div class='hero'>"
     "<div class='scrim'></div></div><div class='scrim'></div><p>Hello</p>", "A <style> rule (.scrim) draws"),
    ("<style>.hero{position:relative}.x{position:absolute;inset:0;background:#fff}</style><div class='hero'>"
     "<div class='x'></div></div><p class='{{ tier }}'>Hello</p>", "A <style> rule (.x) draws"),
    ("<style>div::after{content:'';position:absolute;inset:0;background:#fff}</style><p>Hello</p>",
     "A <style> rule (div::after) draws an element over the page"),
    ("<style>.panel{position:sticky;top:0;min-height:100vh;background:#fff}</style><div class='panel'>x</div>"
     "<p>Hello</p>", "A <style> rule (.panel) draws an element over the page (position:sticky"),
    ("<style>div{filter:blur(40px)}</style><p>Hello</p>", "A <style> rule (div) hides content with filter:blur(40px)"),
    ("<style>a{text-indent:100%;white-space:nowrap;overflow:hidden}</style><p>Hello</p>",
     "A <style> rule (a) hides content with text-indent:100% with overflow:hidden"),
    ("<style>div{max-width:120px;overflow:hidden}</style><p>Hello</p>",
     "A <style> rule (div) hides content with max-width:120px with overflow:hidden"),
    # a sibling combinator reaching the footer's <div>: the body ends with an <img>, or one comes before it
    ("<style>img+div{display:none}</style><p>Hello</p><img src='https://acme.example/sign.png'>",
     "A <style> rule (img+div) hides content with display:none"),
    ("<style>.image_block img+div{display:none}</style><div class='image_block'>"
     "<img src='https://acme.example/sign.png'>", "A <style> rule (.image_block img+div) hides content"),
    ("<style>h1~div{display:none}</style><h1>News</h1><p>Hello</p>", "A <style> rule (h1~div) hides content"),
]


@pytest.mark.parametrize(("inner", "reason"), OVER)
def test_overlays_over_the_footer_and_rules_reaching_it_are_refused(inner: str, reason: str) -> None:
    reasons = refused_for(page(inner))
    assert len(reasons) == 1 and reasons[0].startswith(reason), reasons


def test_a_sibling_rule_that_cannot_reach_the_footer_passes() -> None:
    """`.image_block img+div` selects a <div> right after an <img> inside .image_block: the footer's <div> follows
    the body's last element, so only a body ending with an <img> inside an open .image_block would give it one."""
    closed = ("<style>.image_block img+div{display:none}</style><div class='image_block'><img src='x.png'>"
              "<div>caption</div></div><img src='https://acme.example/sign.png'>")
    assert refused_for(page(closed)) == []
    assert refused_for(page("<style>img+div{display:none}</style><img src='x.png'><p>Hello</p>")) == []
    assert refused_for(page("<style>h1+div{display:none}</style><h1>News</h1><p>Hello</p>")) == []


def test_an_attribute_selector_on_the_class_or_id_selects_only_that_class_or_id() -> None:
    """Stripo's stock `*[class="gmail-fix"] {display:none!important}` selects only elements of that class, as
    `.gmail-fix` does: not the footer. On a class or id the footer sits in, it is refused as `.x` would be."""
    stripo = ('<style>*[class="gmail-fix"] {display:none!important}</style>'
              "<table class='gmail-fix'><tr><td>&nbsp;</td></tr></table><p>Hello</p>")
    assert refused_for(page(stripo)) == []
    assert refused_for(page("<style>[id='top'] a, td[class~=spacer]{display:none}</style><p>Hello</p>")) == []
    assert refused_for(page("<style>*[class=\"wrap\"]{display:none}</style><div class='wrap'><p>Hello</p>"))
    assert refused_for(page("<style>[id=main]{display:none}</style><div id='main'><p>Hello</p>"))
    assert refused_for(page("<style>*[class=\"wrap\" i]{display:none}</style><p>Hello</p>"))  # unread: any element
