"""Markup that hides the footer Herald adds (or makes it unclickable) without any CSS is refused like a hiding
style: a declarative shadow root (its parent a shadow host, whose own children are never shown), elements whose
content is not displayed (`<rp>`, `<meter>`, `<progress>`) or whose attribute hides it (`popover`) or makes it
unclickable (`inert`) left open where the footer goes. Shown by headless Chromium in review 2C."""

from __future__ import annotations

import pytest

from herald_campaigns.screening import screen


def refused_for(html_body: str) -> list[str]:
    return [refusal.reason for refusal in screen(subject="News", preheader=None, html_body=html_body,
                                                 text_body="News").refusals]


SHADOW = "A <template> with a {} attribute makes the element it is in a shadow host"


@pytest.mark.parametrize(("html_body", "reason"), [
    # declarative shadow DOM, closed or not, any casing, quoting or spacing
    ('<html><body><template shadowrootmode="open"><h1>Our news</h1></template></body></html>',
     SHADOW.format("shadowrootmode")),
    ('<html><body><div><template shadowrootmode="closed"><h1>Our news</h1></template></div></body></html>',
     SHADOW.format("shadowrootmode")),
    ("<html><body><p>News</p><div><TEMPLATE ShadowRootMode='open'><p>x</p></template>",
     SHADOW.format("shadowrootmode")),
    ("<p>News</p><div><template/shadowrootmode=open><p>x</p></template></div>", SHADOW.format("shadowrootmode")),
    ('<p>News</p><div><template id="t"\nshadowrootmode = "open"><p>x</p></template></div>',
     SHADOW.format("shadowrootmode")),
    ("<p>News</p><div><template shadowroot=open><p>x</p></template></div>", SHADOW.format("shadowroot")),
    # not displayed, left open where the footer goes
    ("<html><body><p>News</p><rp>", "The <rp> element is not closed before the end of the body"),
    ("<html><body><p>News</p><ruby>x<rp>", "The <rp> element is not closed before the end of the body"),
    ("<html><body><p>News</p><meter value=0.5>", "The <meter> element is not closed before the end of the body"),
    ("<html><body><p>News</p><progress>", "The <progress> element is not closed before the end of the body"),
    # hidden or unclickable by an attribute, left open where the footer goes
    ("<html><body><p>News</p><div popover>", "This element hides its content (the popover attribute)"),
    ('<html><body><p>News</p><div popover="manual">', "This element hides its content (the popover attribute)"),
    ("<html><body><p>News</p><div inert>", "This element hides its content (the inert attribute"),
    ("<html><body><p>News</p><SECTION INERT>", "This element hides its content (the inert attribute"),
    # the customer's own unsubscribe link inside them
    ('<meter><a href="{{ unsubscribe_url }}">Unsubscribe</a></meter>',
     "The unsubscribe link or wording is inside an element that hides it (<meter> content is not displayed)"),
    ('<div inert><a href="{{ unsubscribe_url }}">Unsubscribe</a></div>',
     "The unsubscribe link or wording is inside an element that hides it (the inert attribute"),
    ('<div popover><a href="{{ unsubscribe_url }}">Unsubscribe</a></div>',
     "The unsubscribe link or wording is inside an element that hides it (the popover attribute)"),
])
def test_markup_that_hides_the_footer_or_makes_it_unclickable_is_refused(html_body: str, reason: str) -> None:
    reasons = refused_for(html_body)
    assert len(reasons) == 1 and reasons[0].startswith(reason), reasons


@pytest.mark.parametrize("html_body", [
    '<html><body><template id="row"><p>x</p></template><p>News</p></body></html>',
    "<html><body><p>News</p><template><p>x</p></template>",
    '<html><body><template data-shadowrootmode="open"><p>x</p></template></body></html>',
    '<html><body><p>Disk <meter value="0.6">60%</meter> full</p></body></html>',
    "<html><body><p>Upload <progress max=100 value=70>70 %</progress></p>",
    "<html><body><ruby>漢<rp>(</rp><rt>kan</rt><rp>)</rp></ruby><p>News</p></body></html>",
    "<html><body><div popover><p>Tip</p></div><div inert><p>Read only</p></div><p>News</p></body></html>",
    '<html><body><p title="shadowrootmode">News</p><div data-inert="1">',
])
def test_a_plain_template_and_closed_elements_are_still_accepted(html_body: str) -> None:
    assert refused_for(html_body) == []
