"""A declarative shadow root cannot hide the footer (PRODUCT.md "Every message": an unsubscribe link the customer
cannot remove or hide; the identification footer unless PRO). A `<template shadowrootmode>` (or the older
`shadowroot`) makes its parent a shadow host, whose own children, the footer among them, a browser never shows:
delivery renames the attribute (`data-shadowrootmode`) however the body or a member's values write it. lxml's
libxml2 (an HTML5 tokenizer, attribute names lowercased) is the independent reader."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import lxml.html
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from herald_delivery.domain import Member
from herald_delivery.render import (
    IDENTIFICATION_FOOTER,
    MessageTokens,
    Renderer,
    RenderSettings,
    compile_campaign,
    shadow_root_attributes,
)
from herald_shared.contract.campaigns import CampaignContent
from herald_shared.links import LinkSigner

SECRET = "unit-test-secret-0123456789"
MESSAGE_ID = "0e6f3f0a-7f4f-5a59-9d8d-2b8f7c0c4b11"
SHADOW_ROOT = {"shadowrootmode", "shadowroot"}


def renderer() -> Renderer:
    return Renderer(RenderSettings("https://t.herald.example", "bounces.herald.example"), MessageTokens(SECRET),
                    LinkSigner(SECRET, "https://lists.herald.example"), {})


def html_of(html_body: str, city: str = "Riga", test: bool = False) -> tuple[str, str]:
    """The HTML part of Anna's message (or of a test send with her values), and its unsubscribe URL."""
    r = renderer()
    template = compile_campaign("acme", "c1", CampaignContent(
        subject="News", from_name="Acme", from_email="news@acme.example", html_body=html_body, text_body="Hello"),
        footer=True, settings=r.settings)
    if test:
        rendered = r.test_message(template, "anna@example.org", {"first_name": "Anna", "city": city}, MESSAGE_ID,
                                  "t1")
    else:
        member = Member("s1", "news", "anna@example.org", "active", first_name="Anna", custom_fields={"city": city})
        rendered = r.campaign_message(template, member, MESSAGE_ID)
    message = email.message_from_bytes(rendered.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    part = message.get_body(("html",))
    assert part is not None
    return part.get_content(), str(message["List-Unsubscribe"]).split(",")[0].strip(" <>")


def assert_footer_outside_shadow_hosts(html: str, unsubscribe: str) -> None:
    document = lxml.html.document_fromstring(html)
    hosts = [t.getparent() for t in document.iter("template") if SHADOW_ROOT & set(t.attrib)]
    [link] = [a for a in document.iter("a") if a.get("href") == unsubscribe]
    footer = link.getparent()
    assert IDENTIFICATION_FOOTER in footer.text_content()
    ancestors = set(footer.iterancestors())
    assert not [host for host in hosts if host in ancestors], html
    assert hosts == [], html  # no shadow host anywhere: nothing of the message is hidden so
    assert "template" not in {a.tag for a in ancestors}


BODIES = [
    '<html><body><template shadowrootmode="open"><h1>Our news</h1><p>Sale!</p></template></body></html>',
    '<html><body><div><template shadowrootmode="closed"><h1>Our news</h1></template></div></body></html>',
    '<html><body><template shadowrootmode="open"><h1>Our news</h1></template>',
    '<html><body><p>News</p><div><template shadowrootmode="open"><p>Our news</p></template>',
    "<html><body><p>News</p><div><TEMPLATE SHADOWROOTMODE='open'><p>Our news</p>",
    "<html><body><div><Template ShadowRoot=open><p>Our news</p></template></div></body></html>",
    "<html><body><div><template/shadowrootmode=open><p>Our news</p></template></div></body></html>",
    '<html><body><div><template\tid="t" title="a>b"\nshadowrootmode\n=\n"closed"><p>x</p></template></div></body>',
    '<html><body><div><template x=1 shadowrootmode = open shadowrootmode=closed><p>x</p></template></div></body>',
    # after </body> is still the body to a browser: the body would be the host
    '<html><body><p>News</p></body><template shadowrootmode="open"><p>x</p></template></html>',
    '<html><body><p>News</p><!-- <template shadowrootmode="open"> --><div><template shadowrootmode=open></div>',
]


@pytest.mark.parametrize("html_body", BODIES)
def test_a_declarative_shadow_root_is_neutralised_so_the_footer_shows(html_body: str) -> None:
    html, unsubscribe = html_of(html_body)
    assert_footer_outside_shadow_hosts(html, unsubscribe)
    assert "data-shadowroot" in html.lower()


@pytest.mark.parametrize("html_body", BODIES[:3])
def test_a_test_send_is_neutralised_too(html_body: str) -> None:
    html, unsubscribe = html_of(html_body, test=True)
    assert_footer_outside_shadow_hosts(html, unsubscribe)


@pytest.mark.parametrize(("html_body", "city"), [
    # template code and member values can write the attribute, or the tag name, where the body does not
    ("<html><body><div><template {{ city }}><p>News</p></template></div></body></html>", "shadowrootmode=open"),
    ("<html><body><div><template a={{ city }}><p>News</p></template></div></body></html>", "1 shadowroot=open"),
    ("<html><body><div><temp{{ city }}><p>News</p></template></div></body></html>", "late shadowrootmode=open"),
    ("<html><body><p>News</p></body><{{ city }}><p>x</p>", "template shadowrootmode=closed"),
    ('<html><body><div><template {% if city %}shadowrootmode="open"{% endif %}><p>x</p></template></div>',
     "Riga"),
    ('<html><body><div>< {%- if city %}template shadowrootmode{% endif %}><p>x</p></template></div>', "Riga"),
    # Jinja's "-" strips any white space str.rstrip does: a no-break space, U+3000, the separators \x1c-\x1f
    *[(f'<html><body><div><{space}{{%- if city %}}template shadowrootmode=open{{% endif %}}><p>x</p></template></div>',
       "Riga") for space in ("\xa0", "\u3000", "\x1c", "\x1f")],
    ("<html><body><div><temp\n{{- city }}><p>x</p></template></div>", "late shadowroot=open"),
])
def test_a_shadow_root_written_by_template_code_or_a_value_is_neutralised(html_body: str, city: str) -> None:
    html, unsubscribe = html_of(html_body, city=city)
    assert_footer_outside_shadow_hosts(html, unsubscribe)


def test_what_is_no_shadow_root_attribute_is_left_as_written() -> None:
    body = ('<html><body><template id="row"><p>x</p></template><div title="<template shadowroot>">y</div>'
            '<template a= shadowrootmode b="shadowrootmode=open"><p>z</p></template><templates shadowrootmode>'
            "</body></html>")
    html, _ = html_of(body)
    # Only the attribute of the "tag" in a title is renamed (looked at as any "<template" is: that changes no
    # reading); the plain template, a value that reads "shadowrootmode" and another element are as written.
    assert shadow_root_attributes(body) == [body.index("shadowroot>")]
    assert '<div title="<template data-shadowroot>">y</div><template a= shadowrootmode b="shadowrootmode=open">' \
        '<p>z</p></template><templates shadowrootmode>' in html
    assert '<template id="row"><p>x</p></template>' in html


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["shadowrootmode", "shadowroot"]), st.lists(st.booleans(), min_size=14, max_size=14),
       st.sampled_from(['="open"', "='closed'", "=open", " = 'open' ", "", '=""']),
       st.sampled_from([" ", "\n", "\t", "/", " x=1 ", ' title="a>b" ', " hidden ", "\f"]),
       st.sampled_from(["", "</template>", "</template></div>"]))
@example("shadowrootmode", [False] * 14, '="open"', " ", "</template>")
def test_any_casing_quoting_or_spacing_of_the_attribute_is_neutralised(
        name: str, upper: list[bool], value: str, before: str, closing: str) -> None:
    written = "".join(c.upper() if up else c for c, up in zip(name, upper, strict=False))
    tag = "".join(c.upper() if up else c for c, up in zip("template", upper[6:], strict=False))
    body = f"<html><body><p>News</p><div><{tag}{before}{written}{value}><p>Our news</p>{closing}"
    html, unsubscribe = html_of(body)
    assert_footer_outside_shadow_hosts(html, unsubscribe)
