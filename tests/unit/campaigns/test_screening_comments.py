"""PRODUCT.md, "Every message": the unsubscribe link and footer cannot be removed. A template condition must not
decide, per subscriber, whether an HTML comment is still open where delivery adds them (before </body>):
every branch holds whole comments, as it holds whole elements."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from herald_campaigns import domain
from herald_campaigns.screening import screen
from herald_shared.contract.campaigns import CampaignContent

SPLIT = "An HTML comment (<!--) is opened and closed on different sides of a template condition"


def refusals(html_body: str) -> list[str]:
    return [r.reason for r in screen(subject="News", preheader=None, html_body=html_body, text_body="Hi").refusals]


@pytest.mark.parametrize("html_body", [
    # the reviewer's case: Tallinn opens a comment the else branch would close, so it stays open for Tallinn
    '<html><body><p>Hello {{ first_name }}</p>{% if city == "Tallinn" %}<!--{% else %}<!-- -->{% endif %}'
    "</body></html>",
    "<p>Hi</p>{% if vip %}<!--{% endif %}</body>",  # open to the end for VIPs
    "<p>Hi</p><!--{% if vip %}-->{% endif %}</body>",  # closed for VIPs only
    "<p>Hi</p>{% if a %}{% if b %}<!--{% endif %}-->{% endif %}</body>",  # nested
    # an arm past the third of an elif chain, which the every-branch readings write out only all together
    "<p>Hi</p>{% if c == 1 %}a{% elif c == 2 %}b{% elif c == 3 %}c{% elif c == 4 %}<!--{% else %}<!-- -->"
    "{% endif %}</body>",
    # a mail client runs no script: what is in <noscript> is markup, its comments too
    "<p>Hi</p><noscript>{% if vip %}<!--{% else %}<!-- -->{% endif %}</noscript></body>",
])
def test_a_comment_begun_and_ended_in_different_branches_is_refused(html_body: str) -> None:
    assert any(reason.startswith(SPLIT) for reason in refusals(html_body)), refusals(html_body)


@pytest.mark.parametrize("html_body", [
    "<p>Hi</p>{% if vip %}<!-- gold -->{% else %}<!-- plain -->{% endif %}</body>",
    "<p>Hi</p><!-- {% if vip %}gold{% else %}plain{% endif %} --></body>",
    # Outlook's conditional comments, as email builders write them, around a condition
    '<!--[if !mso]><!--><meta http-equiv="X-UA-Compatible" content="IE=edge"><!--<![endif]-->'
    "{% if vip %}<p>Gold</p>{% endif %}</body>",
    "<!--> <p>Hi</p>{% if vip %}<p>Gold</p>{% endif %}</body>",  # "<!-->" is a whole (empty) comment
    # "<!--" inside an element whose content is text is no comment
    "<title>Sale <!-- </title><p>Hi</p>{% if vip %}<p>Gold</p>{% endif %}</body>",
])
def test_whole_comments_in_or_around_conditions_pass(html_body: str) -> None:
    assert not [reason for reason in refusals(html_body) if reason.startswith(SPLIT)], refusals(html_body)


@pytest.mark.parametrize("html_body", [
    "<p>Hi</p>{% if vip %}<textarea>{% else %}<textarea></textarea>{% endif %}</body>",
    "<p>Hi</p>{% if vip %}<title>{% endif %}</body>",
    "<p>Hi</p>{% if vip %}<noscript>{% else %}<noscript></noscript>{% endif %}</body>",
    "<p>Hi</p><script>{% if vip %}</script>{% endif %}</body>",
    "<p>Hi</p>{% if vip %}<style>{% else %}<style></style>{% endif %}</body>",
])
def test_an_element_whose_content_is_never_shown_left_open_in_one_branch_is_refused(html_body: str) -> None:
    assert any("opened and closed on different sides" in reason for reason in refusals(html_body)), \
        refusals(html_body)


def test_a_submission_whose_condition_comments_out_the_footer_for_some_members_is_refused() -> None:
    """The reviewer's case through the submission (a 422 `content_refused` at the API): before, screening let it
    through and delivery wrote the footer inside the comment for members in Tallinn."""
    html_body = ('<html><body><p>Hello {{ first_name }}</p>{% if city == "Tallinn" %}<!--{% else %}<!-- -->'
                 "{% endif %}</body></html>")
    content = CampaignContent(subject="News", from_name="Acme", from_email="news@acme.example",
                              html_body=html_body, text_body="Hello")
    lst = domain.ListInfo("news", {"city": "text"})
    state = domain.CampaignState(account_id="acme", campaign_id="c1", status="draft", name="n", list_id="news",
                                 segment={}, content=content)
    verdict = domain.screening_of(state, "c1", lst)
    assert [r.reason for r in verdict.refusals if r.reason.startswith(SPLIT)]
    with pytest.raises(domain.ContentRefused, match="different sides of a template condition"):
        domain.submit(state, "c1", lst, domain.AccountInfo("acme", opened=True, approved=True, plan="monthly"),
                      verdict, None, None, datetime.now(UTC), "ada",
                      senders=domain.Senders(verified=frozenset({"acme.example"})))
