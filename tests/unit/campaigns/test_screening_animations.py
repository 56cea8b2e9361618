"""Screening of @keyframes animations and 3D transforms (PRODUCT.md, "Every message": the unsubscribe link and the
footer cannot be hidden). A moment of an animation that lasts (kept when it ends, held paused or by scrolling,
repeated forever, run for 5s or more) is read as a style of the element it animates; a transform list is judged as
a whole, in 3D, in its own perspective() and in any perspective the message gives a parent. Chromium draws the
footer's own <div> and link over any animation (their inline !important wins); what animates an element around the
footer hides it (tests/integration/delivery/test_footer_in_browser.py)."""

from __future__ import annotations

import pytest

from herald_campaigns.screening import screen

HIDE = "@keyframes hide{to{opacity:0}}"


def refused_for(html_body: str) -> list[str]:
    return [refusal.reason for refusal in screen(subject="News", preheader=None, html_body=html_body,
                                                 text_body="News").refusals]


def head(css: str, body: str = "<h1>Sale</h1><p>News.</p>") -> str:
    """The CSS in the head, a heading and a paragraph (or `body`), the footer appended at </body>."""
    return f"<html><head>{css}</head><body>{body}</body></html>"


# Each hides the footer (on <body>, on a wrapper left open, or on the footer's own elements, where delivery's
# resets win but screening refuses all the same, as it does `div{display:none}`), and each passed screening before.
@pytest.mark.parametrize(("css", "reason"), [
    (f"<style>{HIDE} body{{animation:hide .001s forwards}}</style>",
     "opacity:0 in @keyframes hide, kept when it ends (animation-fill-mode:forwards)"),
    (f"<style>{HIDE} div,a{{animation:hide 1ms both}}</style>", "kept when it ends (animation-fill-mode:both)"),
    (f"<style>{HIDE} body{{animation:hide 1s 3600s forwards}}</style>", "kept when it ends"),  # vanishes in an hour
    ("<style>@keyframes hide{from{opacity:0}} body{animation:hide 1s paused}</style>",
     "held (animation-play-state:paused)"),
    ("<style>@keyframes blink{0%,100%{visibility:hidden}} body{animation:blink 1s infinite}</style>",
     "repeated forever"),
    ("<style>@keyframes hide{50%{display:none}} div{animation:hide 60s}</style>", "shown for 5s or more"),
    (f"<style>{HIDE} body{{animation:hide linear both;animation-timeline:scroll()}}</style>",
     "as the reader scrolls (animation-timeline:scroll())"),
    ("<style>@-webkit-keyframes hide{to{font-size:0}} body{-webkit-animation:hide 1ms forwards}</style>",
     "font-size:0 in @keyframes hide"),
    ("<style>@keyframes hide{to{transform:translateX(-9999px)}} body{animation-name:hide;animation-duration:1ms;"
     "animation-fill-mode:forwards}</style>", "transform:translatex(-9999px) in @keyframes hide"),
    ("<style>@keyframes hide{to{transform:scale(0)}} html{animation:hide 1ms forwards}</style>", "scale(0)"),
    ("<style>@keyframes hide{to{clip-path:inset(50%)}} body{animation:hide 1ms forwards}</style>", "clip-path"),
    ("<style>@keyframes hide{to{color:#fff}} body{animation:hide 1ms forwards}</style>", "color:#fff"),
    ("<style>@keyframes hide{to{transform:rotateY(90deg)}} body{animation:hide 1ms forwards}</style>",
     "rotatey(90deg)"),
    ("<style>@keyframes hide{from{opacity:0}} body{animation:hide 1s reverse forwards}</style>", "kept when it ends"),
    ("<style>@keyframes hide{from{opacity:0}} body{animation:hide 1s alternate 2 forwards}</style>",
     "kept when it ends"),
    ("<style>@keyframes hide{50%{opacity:0}} body{animation:hide 1s .5 forwards}</style>", "ends midway"),
    ("<style>@keyframes hide{to{opacity:var(--gone)}} :root{--gone:0} body{animation:hide 1ms forwards}</style>",
     "opacity:0 in @keyframes hide"),
    ("<style><!-- @keyframes hide{to{opacity:0}} body{animation:hide 1ms forwards} --></style>", "@keyframes hide"),
    ("<style>@media screen{@keyframes hide{to{opacity:0}}} body{animation:hide 1ms forwards}</style>",
     "@keyframes hide"),
    ("<style>@keyframes hide{to{opacity:0}} .wrap{animation:hide 1ms forwards}</style>", "(.wrap)"),
])
def test_an_animation_that_hides_what_the_footer_is_in_is_refused_with_its_moment(css: str, reason: str) -> None:
    body = '<div class="wrap"><p>News.</p>' if "(.wrap)" in reason else "<h1>Sale</h1><p>News.</p>"
    refused = refused_for(head(css, body))
    assert any(reason in refusal for refusal in refused), refused


def test_an_animation_in_a_style_attribute_hides_what_it_holds() -> None:
    """An element left open around the footer, and one around the unsubscribe link in the body."""
    left_open = refused_for(head(f"<style>{HIDE}</style>",
                                 '<div style="animation:hide 1ms forwards"><p>News.</p>'))
    assert any("This element hides its content (opacity:0 in @keyframes hide" in r for r in left_open), left_open
    # The @keyframes after the element it animates, as a style sheet at the end of the body.
    around_link = refused_for(
        '<p style="animation:gone 1ms forwards"><a href="{{ unsubscribe_url }}">Unsubscribe</a></p><p>News.</p>'
        "<style>@keyframes gone{to{visibility:hidden}}</style>")
    assert any("The unsubscribe link or wording is inside an element that hides it (visibility:hidden in @keyframes "
               "gone" in r for r in around_link), around_link


def test_an_animation_that_draws_a_cover_over_the_page_is_refused() -> None:
    refused = refused_for(head("<style>@keyframes grow{to{box-shadow:0 0 0 3000px #fff}} "
                               ".badge{animation:grow 1ms forwards}</style>",
                               '<p class="badge">New</p><p>News.</p>'))
    assert any("box-shadow" in r and "@keyframes grow" in r for r in refused), refused


# Each hides the footer when Chromium draws it (test_footer_in_browser.py), and passed screening before.
@pytest.mark.parametrize(("css", "reason"), [
    ("<style>body{transform:perspective(100px) translateZ(200px)}</style>", "behind the reader"),
    ("<style>body{transform:perspective(100px) translateZ(-10000px)}</style>", "a fifth of its size or less"),
    ("<style>html{perspective:10px} body{transform:translateZ(20px)}</style>", "in a parent's perspective:10px"),
    ("<style>html{-webkit-perspective:1px} body{translate:0 0 5px}</style>", "in a parent's perspective:1px"),
    ("<style>body{transform:matrix3d(1,0,0,0,0,1,0,0,0,0,1,0,0,0,0,-1)}</style>", "behind the reader"),
    ("<style>body{transform:matrix3d(1,0,0,0,0,1,0,0,0,0,1,-0.01,0,0,200,1) perspective(10px) "
     "translateZ(20px)}</style>", "behind the reader"),
    ("<style>body{transform:rotateX(60deg) rotateX(30deg)}</style>", "a fifth of its size or less"),
    ("<style>body{transform:rotate3d(1,1,0,45deg) rotate3d(1,1,0,45deg)}</style>", "a fifth of its size or less"),
    ("<style>body{transform:scale(.5) scale(.3)}</style>", "a fifth of its size or less"),
    ("<style>body{transform:perspective(200px) rotateY(45deg)}</style>", "behind the reader"),
    ("<style>body{transform:translate3d(-60px,0,0) translateX(-60px)}</style>", "off the page"),
    ("<style>body{rotate:x 50deg;transform:rotateX(40deg)}</style>", "a fifth of its size or less"),
])
def test_a_3d_transform_that_hides_what_the_footer_is_in_is_refused(css: str, reason: str) -> None:
    refused = refused_for(head(css))
    assert any(reason in refusal for refusal in refused), refused


@pytest.mark.parametrize("css", [
    # A banner fading in (animate.css keeps the frames both ways), a badge pulsing forever, a headline sliding in.
    "<style>@keyframes fadeIn{from{opacity:0}to{opacity:1}} .banner{animation:fadeIn 1s ease-in both}</style>",
    "<style>@keyframes fadeIn{from{opacity:0}to{opacity:1}} body{animation:fadeIn 2s both}</style>",
    "<style>@keyframes pulse{50%{transform:scale(1.1)}} .badge{animation:pulse 2s infinite}</style>",
    "<style>@keyframes slide{from{transform:translateX(-100%)}} h1{animation:slide .6s cubic-bezier(.2,.8,.2,1)}"
    "</style>",
    # A banner leaving after a while: closed before the footer, holding no unsubscribe link.
    "<style>@keyframes out{to{opacity:0}} .flash{animation:out 1s 3s forwards}</style>",
    "<style>@keyframes blink{50%{opacity:0}} .new{animation:blink 1s infinite}</style>",
    # A frame browsers ignore (!important in a keyframe), a name without @keyframes, none at all.
    "<style>@keyframes hide{to{opacity:0!important}} body{animation:hide 1ms forwards}</style>",
    "<style>body{animation:nowhere 1ms forwards}</style>",
    "<style>@keyframes hide{to{opacity:0}} body{animation:none}</style>",
    "<style>@keyframes hide{to{opacity:0}} body{animation:hide 1ms}</style>",  # over in a blink
    # 3D: a card turned in a deep perspective, a tilt, a hero moved towards the reader in none.
    "<style>.scene{perspective:1000px} .card{transform:rotateY(20deg)}</style>",
    "<style>body{transform:perspective(1000px) rotateY(20deg)}</style>",
    "<style>body{transform:translateZ(-100px)}</style>",
    "<style>.card{transform:rotateY(180deg) translateZ(1px)}</style>",
    "<style>body{transform:rotate(10deg) translate(10px) scale(1.2)}</style>",
])
def test_designers_animations_and_3d_pass(css: str) -> None:
    assert refused_for(head(css, '<div class="banner">Sale</div><p class="flash new badge">News.</p>'
                                 '<div class="scene"><div class="card">Turn</div></div>')) == []


def test_too_many_moments_of_animations_to_read_are_refused() -> None:
    frames = " ".join(f"{n}%{{opacity:.5}}" for n in range(40))
    refused = refused_for(head(f"<style>@keyframes many{{{frames}}} body{{animation:many 1s infinite}}</style>"))
    assert any("more than 32 lasting frames of animations" in r for r in refused), refused
