"""The footer and its unsubscribe link are markup wherever the customer's HTML leaves them (PRODUCT.md "Every
message": an unsubscribe link the customer cannot remove; the identification footer unless PRO): never inside a
comment, a tag's attribute, raw text (style, title, textarea...), a script or a template, whatever the body and
each member's values in it. lxml's libxml2 (2.14: an HTML5 tokenizer) is the independent reader."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage

import lxml.html
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from herald_delivery.domain import Member
from herald_delivery.render import (
    IDENTIFICATION_FOOTER,
    HtmlPlan,
    MessageTokens,
    Renderer,
    RenderSettings,
    _html_points,
    compile_campaign,
    html_plan,
    visible_points,
)
from herald_shared.contract.campaigns import CampaignContent
from herald_shared.links import LinkSigner
from herald_shared.templating import TemplateProblem, compile_template

SECRET = "unit-test-secret-0123456789"
MESSAGE_ID = "0e6f3f0a-7f4f-5a59-9d8d-2b8f7c0c4b11"
# Where nothing is shown as markup: a footer with one of these around it is hidden (or mere text).
HIDING = {"script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes", "noscript", "template"}


def renderer() -> Renderer:
    return Renderer(RenderSettings("https://t.herald.example", "bounces.herald.example"), MessageTokens(SECRET),
                    LinkSigner(SECRET, "https://lists.herald.example"), {})


def html_of(html_body: str, city: str = "Riga", footer: bool = True) -> tuple[str, str]:
    """The HTML part of Anna's message, and its unsubscribe URL."""
    r = renderer()
    template = compile_campaign("acme", "c1", CampaignContent(
        subject="News", from_name="Acme", from_email="news@acme.example", html_body=html_body, text_body="Hello",
        preheader="Preview"), footer=footer, settings=r.settings)
    member = Member("s1", "news", "anna@example.org", "active", first_name="Anna", custom_fields={"city": city})
    message = email.message_from_bytes(r.campaign_message(template, member, MESSAGE_ID).data,
                                       policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    part = message.get_body(("html",))
    assert part is not None
    return part.get_content(), str(message["List-Unsubscribe"]).split(",")[0].strip(" <>")


def footer_is_markup(html: str, unsubscribe: str, identification: bool = True) -> bool:
    """As a browser reads `html`: the unsubscribe link is an <a> element with its text, the identification a
    text of the footer, neither inside an element that hides or merely shows text."""
    document = lxml.html.document_fromstring("<!DOCTYPE html>" + html)
    links = [a for a in document.iter("a") if a.get("href") == unsubscribe and a.text == "Unsubscribe"]
    if len(links) != 1 or any(str(up.tag).lower() in HIDING for up in links[0].iterancestors()):
        return False
    footer = links[0].getparent()
    return footer is not None and (IDENTIFICATION_FOOTER in footer.text_content()) == identification


def test_a_comment_left_open_for_some_members_does_not_hide_the_footer() -> None:
    """The reviewer's case: a condition leaves "<!--" open for members in Tallinn; before, their footer and
    unsubscribe link were rendered inside that comment. Now the footer goes before it, for every member."""
    body = ('<html><body><p>Hello {{ first_name }}</p>'
            '{% if city == "Tallinn" %}<!--{% else %}<!-- -->{% endif %}</body></html>')
    for city in ("Tallinn", "Riga"):
        html, unsubscribe = html_of(body, city)
        assert footer_is_markup(html, unsubscribe), html
        visible = re.sub(r"<!--.*?(-->|$)", "", html, flags=re.S)  # the reviewer's own check
        assert IDENTIFICATION_FOOTER in visible and "Unsubscribe</a>" in visible
    tallinn, _ = html_of(body, "Tallinn")
    assert re.search(r"<p>Hello Anna</p><div style=\"margin-top:24px.*?</div><img [^>]*><!--</body></html>$", tallinn,
                     flags=re.DOTALL)  # the footer's style attributes span lines


@pytest.mark.parametrize(("body", "after"), [
    # The first </body> that is markup, not one in a comment, an attribute, raw text or a script.
    ("<body><p>Hi</p><!-- </body> --></body>", "</body>"),
    ('<body><p title="</body>">Hi</p></body>', "</body>"),
    ("<body><p title='x'>Hi</p><style>p{}</body></style></body>", "</body>"),
    ("<body><title></body></title><textarea></body></textarea></body>", "</body>"),
    ("<body><script>var a = '</body>';</script></body>", "</body>"),
    ("<body><script><!--<script></script></body>--></script><p>x</p></body>", "</body>"),
    ("<body><p>Hi</p></BODY ></html>", "</BODY ></html>"),
    ("<body><p>Hi <!--> not a comment</p></body>", "</body>"),
    ("<body><p>Hi <!-- a --!> b</p></body>", "</body>"),
    ("<body><svg><path d='M0'/></svg><!--[if mso]><br><![endif]--></body>", "</body>"),
    ("<p>No body tag at all</p>", ""),
    # What hides the rest when left open: the footer goes before it, where the reader still reads markup.
    ("<body><p>Hi</p><!-- open to the end </body></html>", "<!-- open to the end </body></html>"),
    ('<body><p>Hi</p><p title="open to the end></body></html>', '<p title="open to the end></body></html>'),
    ("<body><p>Hi</p><p class=x </body></html>", "</html>"),  # "</body" is two attributes of <p> there
    ("<html><body><p>Hi</p></html>", "</html>"),  # </html> ends the body as well: some readers drop what follows
    ("<body><p>Hi</p><textarea></body></html>", "<textarea></body></html>"),
    ("<body><p>Hi</p><style></body></html>", "<style></body></html>"),
    ("<body><p>Hi</p><script><!--<script></script></body></html>", "<script><!--<script></script></body></html>"),
    ('<body><p>Hi</p><script>x</script title="></body></html>', '<script>x</script title="></body></html>'),
    ("<body><p>Hi</p><plaintext></body></html>", "<plaintext></body></html>"),
    ("<body><p>Hi</p><noscript><!--</noscript></body>--></html>", "<noscript><!--</noscript></body>--></html>"),
    ("<body><p>Hi</p><template></body></html>", "<template></body></html>"),
    ("<body><p>Hi</p><svg><![CDATA[ > </body> ]]></svg></body>", "<svg><![CDATA[ > </body> ]]></svg></body>"),
    ("<body><p>Hi</p><select><style><!--</style></body>--></body>", "<select><style><!--</style></body>--></body>"),
])
def test_the_footer_goes_where_the_reader_reads_markup(body: str, after: str) -> None:
    html, unsubscribe = html_of(body)
    assert footer_is_markup(html, unsubscribe), html
    assert html.count('<div style="margin-top:24px') == 1
    assert html.split('<div style="margin-top:24px', 1)[1].split('width="1" height="1" alt="">', 1)[1] == after


@pytest.mark.parametrize(("body", "footer_before"), [
    ("<body><p>Hi</p><!-- </body> --></body>", "</body>"),
    ('<body><p title="</body>">Hi</p></body>', "</body>"),
    ("<body><script>var a = '</body>';</script></body>", "</body>"),
    ("<body><p>Hi</p><!-- open to the end </body></html>", "<!-- open"),
    ("<body><p>Hi</p><svg><![CDATA[ > </body> ]]></svg></body>", "<svg>"),
    ("<p>No body tag at all</p>", None),
])
def test_the_footers_place_in_the_body(body: str, footer_before: str | None) -> None:
    expected = len(body) if footer_before is None else body.rindex(footer_before)
    assert visible_points(body) == (6 if body.startswith("<body>") else None, expected)


def test_the_preheader_goes_after_the_body_start_tag_that_is_markup() -> None:
    """A "<body>" in a comment or an attribute, or a ">" in the body tag's attribute, is no place for it."""
    html, _ = html_of('<html><!-- <body> --><p title="<body>"></p><body title="a>b"><h1>Hi</h1></body></html>')
    assert '<body title="a>b"><div style="display:none' in html
    assert "<!-- <body> -->" in html and '<p title="<body>"></p>' in html


def test_a_pro_accounts_footer_is_markup_too() -> None:
    html, unsubscribe = html_of("<body><p>Hi</p><!-- open</body>", footer=False)
    assert footer_is_markup(html, unsubscribe, identification=False)


FRAGMENTS = ["<p>", "</p>", "text ", "<!--", "-->", "--!>", "<!-->", "-", ">", "<", "</", '"', "'", "=", " ", "/",
             "<style>", "</style>", "<title>", "</title>", "<textarea>", "</textarea>", "<script>", "</script>",
             "<xmp>", "</xmp>", "<iframe>", "</iframe>", "<noembed>", "</noembed>", '<a title="', "<b class=x ",
             "<div", "</div>", "<!DOCTYPE html>", "<?xml ?>", "</ x>", "<!x>", "</body>", "<body>", "<BODY x=1>",
             "</BODY >", "<p a=\"b\"c='d'>", "<p/>", "<plaintext>", "<![CDATA[", "]]>", "<script><!--",
             "<STYLE a='>'>", "<svg>", "</svg>", "<math>", "<select>", "<noscript>", "<template>", "</template>"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=14).map("".join))
@example('<body><a title="</body>')
@example("<body><script><!--<script></body></script></body>")
@example("<body><p =\"x>\">y</body>")
def test_whatever_the_body_the_footer_is_markup(body: str) -> None:
    footer = '<div id="f"><a href="https://u.example/x">Unsubscribe</a><br>Email marketing by Herald</div>'
    _, at = visible_points(body)
    assert footer_is_markup(body[:at] + footer + body[at:], "https://u.example/x")


def test_the_campaigns_plan_finds_the_places_without_reading_each_message() -> None:
    """Merge tags in text, in quoted attributes, in raw text and in a comment change no reading: found once."""
    plain = compile_template('<html><head><title>{{ x }}</title></head><body class="{{ x }}"><!-- {{ x }} -->'
                             '<p>{{ x }}</p><a href="https://a.example/{{ x }}">a</a></body></html>', html=True)
    assert html_plan(plain) == HtmlPlan(body_start=0, body_end=0)
    assert html_plan(compile_template("<p>{{ x }}</p>", html=True)) == HtmlPlan(None, None)
    assert html_plan(compile_template("<body><!-- </body> --></body>", html=True)) == HtmlPlan(0, 1)
    for source in ("<body><p title={{ x }}>a</p></body>",  # unquoted: a value with a space makes attributes
                   "<body><{{ x }}>a</body>",  # a tag name
                   "<body><!-- {{ x }}> --></body>",  # a value "--" would close the comment there
                   "<body></bo{{ x }}dy></body>",
                   "<body><script>{{ x }}</script></body>",
                   "<body><svg><text>{{ x }}</text></svg></body>",  # read from the <svg> for each value
                   "<body>{% if x %}<!--{% endif %}</body>",  # logic: read in each message
                   "<body><p>a</p><!-- open"):
        assert html_plan(compile_template(source, html=True)) is None, source


TEMPLATE_PIECES = ["<p>", "</p>", "text ", "<!--", "-->", "-", ">", "<", "</", '"', "'", "=", " ", "!", "<style>",
                   "</style>", '<a title="', "<b class=x ", "</body>", "<body>", "<BODY x=1>", "</bo", "dy>", "body",
                   "<script>", "</script>", "{{ x }}", "{{ y }}", "<svg>", "--!>"]
VALUES = ["", "-", "--", "!", "body", "/body", " ", "a b", "dy", "x=y", "<", ">", '"', "'", "&", "--!", "style"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(TEMPLATE_PIECES), min_size=1, max_size=12).map("".join),
       st.lists(st.tuples(st.sampled_from(VALUES), st.sampled_from(VALUES)), min_size=1, max_size=4))
def test_a_campaigns_plan_gives_the_places_reading_each_message_would(source: str,
                                                                      members: list[tuple[str, str]]) -> None:
    try:
        template = compile_template(source, html=True)
    except TemplateProblem:
        return
    plan = html_plan(template)
    for x, y in members:
        html = "".join(template.render_segments({"x": x, "y": y}))
        assert _html_points(html, plan) == visible_points(html)
