"""The footer's own style attributes (PRODUCT.md, "Every message": the unsubscribe link and the footer cannot be
hidden): its <div> and its link reset with !important every property a style sheet could hide them with, so no
rule of the customer's, !important or not, wins over them (an element's own !important ranks above every style
sheet's); the footer reads and looks as before: its text, 24px above it, 12px #555 text, the link in #0000ee.
Chromium draws it so whatever the style sheet says: tests/integration/delivery/test_footer_in_browser.py."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import lxml.html
import pytest

from herald_delivery.domain import Member
from herald_delivery.render import IDENTIFICATION_FOOTER, MessageTokens, Renderer, RenderSettings, compile_campaign
from herald_shared.contract.campaigns import CampaignContent
from herald_shared.links import LinkSigner

SECRET = "unit-test-secret-0123456789"
BOTH = {
    "display", "visibility", "opacity", "color", "-webkit-text-fill-color", "background", "font-size",
    "line-height", "letter-spacing", "word-spacing", "-webkit-text-security", "pointer-events", "position", "inset",
    "transform", "translate", "scale", "rotate", "offset-path", "zoom", "clip", "clip-path", "mask", "filter",
    "mix-blend-mode", "content-visibility", "content", "padding", "border",
}
BLOCK_ONLY = {"margin-top", "margin-right", "margin-bottom", "margin-left", "text-indent", "overflow", "max-height",
              "max-width", "contain"}
LINK_ONLY = {"margin", "box-shadow"}  # above the <div> (z-index), its shadow would cover the line below


def footer_of(html_body: str, footer: bool = True) -> tuple[lxml.html.HtmlElement, lxml.html.HtmlElement]:
    renderer = Renderer(RenderSettings("https://t.herald.example", "bounces.herald.example"), MessageTokens(SECRET),
                        LinkSigner(SECRET, "https://lists.herald.example"), {})
    content = CampaignContent.model_validate({"subject": "News", "from_name": "Acme", "from_email": "news@acme.example",
                                              "html_body": html_body, "text_body": "News"})
    template = compile_campaign("acme", "c1", content, footer=footer, settings=renderer.settings)
    rendered = renderer.campaign_message(template, Member("s1", "news", "ann@example.org", "active"),
                                         "0e6f3f0a-7f4f-5a59-9d8d-2b8f7c0c4b11")
    message = email.message_from_bytes(rendered.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    part = message.get_body(("html",))
    assert part is not None
    document = lxml.html.document_fromstring(str(part.get_content()))
    link = next(a for a in document.iter("a") if a.text == "Unsubscribe")
    return link.getparent(), link


def declarations(element: lxml.html.HtmlElement) -> dict[str, str]:
    """The element's style attribute by property, each value as written (its !important included)."""
    found: dict[str, str] = {}
    for declaration in element.get("style", "").split(";"):
        if declaration.strip():
            name, _, value = declaration.partition(":")
            assert name.strip() not in found, f"{name} twice"
            found[name.strip()] = value.strip()
    return found


@pytest.mark.parametrize("html_body", [
    "<html><body><p>News.</p></body></html>",
    "<html><head><style>div,a{display:none!important}</style></head><body><div><p>News.</p></div></body></html>",
    "<p>No body tag at all</p>",
])
def test_the_footers_div_and_link_reset_every_hiding_property_with_important(html_body: str) -> None:
    div, link = footer_of(html_body)
    for element, needed in ((div, BOTH | BLOCK_ONLY), (link, BOTH | LINK_ONLY)):
        style = declarations(element)
        assert needed <= style.keys(), needed - style.keys()
        assert all(value.endswith("!important") for value in style.values()), style


def test_the_footer_reads_and_looks_as_before() -> None:
    div, link = footer_of("<html><body><p>News.</p></body></html>")
    assert div.tag == "div" and link.getparent() is div
    assert div.text_content() == f"Unsubscribe{IDENTIFICATION_FOOTER}"
    assert [child.tag for child in div] == ["a", "br"]
    style, link_style = declarations(div), declarations(link)
    assert (style["margin-top"], style["margin-left"], style["font-size"], style["color"], style["display"]) == (
        "24px!important", "0!important", "12px!important", "#555!important", "block!important")
    assert (link_style["color"], link_style["font-size"], link_style["display"]) == (
        "#0000ee!important", "inherit!important", "inline!important")
    assert style["visibility"] == link_style["visibility"] == "visible!important"
    assert style["pointer-events"] == link_style["pointer-events"] == "auto!important"


def test_a_pro_plans_footer_is_the_link_alone_with_the_same_resets() -> None:
    div, link = footer_of("<html><body><p>News.</p></body></html>", footer=False)
    assert div.text_content() == "Unsubscribe"
    assert BOTH | LINK_ONLY <= declarations(link).keys() and BOTH | BLOCK_ONLY <= declarations(div).keys()
