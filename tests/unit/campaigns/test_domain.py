"""Campaign drafts' rules, pure: targets and segments checked against the account's lists, drafts only."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from herald_campaigns import domain
from herald_campaigns.domain import CampaignState, Draft, ListInfo
from herald_shared.campaign_links import MAX_TRACKED_LINKS, text_links, tracked_links
from herald_shared.contract.campaigns import CampaignCreated, CampaignDeleted, CampaignEdited
from herald_shared.contract.envelope import Event

NEWS = ListInfo("news", {"city": "text"})
# The sending domains these drafts go From, verified.
ACME = domain.Senders(verified=frozenset({"acme.example", "shop.example"}))
DRAFT = Draft(name="November", list_id="news", subject="Our news", from_name="Acme", from_email="news@acme.example",
              html_body="<h1>Hello</h1><p>Our <b>news</b>:</p><ul><li>one</li><li>two</li></ul>",
              segment={"city": "Riga"})
AT = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def state_after(*events: object) -> CampaignState:
    doc = None
    for event in events:
        doc = domain.evolve(doc, event, AT)  # type: ignore[arg-type]
    assert doc is not None
    return CampaignState(account_id="acme", campaign_id=str(doc["campaign_id"]), status=doc["status"],  # type: ignore[arg-type]
                         name=str(doc["name"]), list_id=str(doc["list_id"]), segment=doc["segment"],  # type: ignore[arg-type]
                         content=domain.CampaignContent.model_validate(doc["content"]))


def test_a_draft_for_a_list_of_the_account_is_created_with_a_text_part_derived_from_its_html() -> None:
    [created] = domain.create("acme", "c1", DRAFT, NEWS, None, senders=ACME)
    assert isinstance(created, CampaignCreated)
    assert created.payload.segment.field_equals == {"city": "Riga"}
    text = created.payload.content.text_body
    assert "Hello" in text and "news" in text and "<" not in text
    assert text.index("one") < text.index("two")


def test_the_derived_text_part_keeps_every_links_address_after_its_label() -> None:
    """A reader of the text part must be able to follow each link: `Shop <https://...>`, in the form delivery
    tracks (`campaign_links.text_link`); the unsubscribe link stays a merge tag delivery fills per message."""
    text = domain.text_of('<p>Our sale: <a href="https://shop.example/sale?a=1&amp;b=2">see the offers</a></p>'
                          '<ul><li><a href="https://acme.example/">https://acme.example/</a></li>'
                          '<li><a href="mailto:help@acme.example">Write to us</a></li></ul>'
                          '<a href="https://acme.example/logo"><img src="logo.png" alt="Acme"></a>'
                          '<p><a href="#top">Top</a> <a href="javascript:void(0)">Menu</a> '
                          '<a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
                          '<div style="display:none"><a href="https://hidden.example/">hidden</a></div>')
    assert "see the offers <https://shop.example/sale?a=1&b=2>" in text
    assert "<https://acme.example/>" in text and "https://acme.example/ <" not in text  # the label is the URL
    assert "Write to us <mailto:help@acme.example>" in text
    assert "<https://acme.example/logo>" in text  # a linked image: the address alone
    assert "Top Menu Unsubscribe <{{ unsubscribe_url }}>" in text  # no page anchor nor script written out
    assert "hidden" not in text


def test_a_derived_text_part_names_links_so_delivery_tracks_them_as_the_html_part() -> None:
    html_body = ('<p><a href="https://shop.example/">Shop</a> <a href="https://acme.example/">Home</a> '
                 '<a href="https://shop.example/">Shop again</a></p>')
    [created] = domain.create("acme", "c1", Draft(**{**DRAFT.__dict__, "html_body": html_body}), NEWS, None,
                              senders=ACME)
    text = created.payload.content.text_body  # type: ignore[attr-defined]
    assert [(text[start:end], index) for start, end, index in text_links(text, tracked_links(html_body))] == [
        ("https://shop.example/", 0), ("https://acme.example/", 1), ("https://shop.example/", 2)]


@pytest.mark.parametrize(("lst", "draft", "error"), [
    (None, DRAFT, domain.UnknownList),
    (ListInfo("news", {"city": "text"}, deleted=True), DRAFT, domain.UnknownList),
    (ListInfo("news", {}), DRAFT, domain.UnknownField),
    (ListInfo("news", {"city": "number"}), DRAFT, domain.InvalidSegment),
    (ListInfo("news", {"city": "text", "vip": "boolean"}), Draft(**{**DRAFT.__dict__, "segment": {"vip": "yes"}}),
     domain.InvalidSegment),
])
def test_a_draft_must_target_a_live_list_of_the_account_and_its_fields(lst: ListInfo | None, draft: Draft,
                                                                        error: type[Exception]) -> None:
    with pytest.raises(error):
        domain.create("acme", "c1", draft, lst, None, senders=ACME)


def test_an_id_in_use_conflicts_and_a_given_text_part_is_kept() -> None:
    created = domain.create("acme", "c1", DRAFT, NEWS, None, senders=ACME)
    with pytest.raises(domain.CampaignExists):
        domain.create("acme", "c1", DRAFT, NEWS, state_after(*created), senders=ACME)
    [own_text] = domain.create("acme", "c2", Draft(**{**DRAFT.__dict__, "text_body": "Plain"}), NEWS, None,
                               senders=ACME)
    assert own_text.payload.content.text_body == "Plain"  # type: ignore[attr-defined]


@pytest.mark.parametrize("sender", ["news@gmail.com", "News@GMAIL.COM", "shop@yahoo.co.uk", "a@outlook.com",
                                    "info@inbox.lv"])
def test_a_from_at_a_mailbox_providers_domain_is_refused_at_saving_testing_and_submitting(sender: str) -> None:
    """Such mail fails DMARC when another platform sends it (the provider publishes the policy and the keys)."""
    with pytest.raises(domain.SenderRefused) as refused:
        domain.create("acme", "c1", Draft(**{**DRAFT.__dict__, "from_email": sender}), NEWS, None, senders=ACME)
    assert refused.value.errors == [("body.from_email", str(refused.value))]
    assert "mailbox provider" in str(refused.value)
    state = state_after(*domain.create("acme", "c1", DRAFT, NEWS, None, senders=ACME))
    with pytest.raises(domain.SenderRefused):
        domain.edit(state, "c1", Draft(**{**DRAFT.__dict__, "from_email": sender}), NEWS, senders=ACME)
    # A draft saved before the rule (its event holds the From): refused when tested or submitted.
    old = CampaignState(**{**state.__dict__, "content": state.content.model_copy(update={"from_email": sender})})
    for attempt in (lambda: domain.testable(old, "c1", NEWS, senders=ACME),
                    lambda: domain.submittable(old, "c1", NEWS, senders=ACME)):
        with pytest.raises(domain.SenderRefused):
            attempt()


@pytest.mark.parametrize("sender", ["news@acme.example", "news@mail.gmail.com.acme.example", "gmail.com@acme.example",
                                    "news@notgmail.com"])
def test_a_from_at_another_domain_is_not_a_mailbox_providers(sender: str) -> None:
    senders = domain.Senders(verified=frozenset({"acme.example", "notgmail.com"}))
    [created] = domain.create("acme", "c1", Draft(**{**DRAFT.__dict__, "from_email": sender}), NEWS, None,
                              senders=senders)
    assert created.payload.content.from_email == sender  # type: ignore[attr-defined]


def test_edit_duplicate_and_delete_apply_to_drafts_only() -> None:
    created = domain.create("acme", "c1", DRAFT, NEWS, None, senders=ACME)
    state = state_after(*created)
    assert domain.edit(state, "c1", DRAFT, NEWS, senders=ACME) == []  # the same edit again records nothing
    [edited] = domain.edit(state, "c1", Draft(**{**DRAFT.__dict__, "subject": "Fresh"}), NEWS, senders=ACME)
    assert isinstance(edited, CampaignEdited) and edited.payload.content.subject == "Fresh"
    [copy] = domain.duplicate(state, "c1", "c9")
    assert (copy.payload.campaign_id, copy.payload.name) == ("c9", "November (copy)")  # type: ignore[attr-defined]
    [deleted] = domain.delete(state, "c1")
    assert isinstance(deleted, CampaignDeleted)
    gone = state_after(*created, deleted)
    for refused in (lambda: domain.edit(gone, "c1", DRAFT, NEWS, senders=ACME),
                    lambda: domain.duplicate(gone, "c1", "c2"), lambda: domain.delete(gone, "c1"),
                    lambda: domain.edit(None, "c1", DRAFT, NEWS, senders=ACME)):
        with pytest.raises(domain.CampaignNotFound):
            refused()


def test_the_fold_ignores_edits_after_deletion_and_a_second_creation() -> None:
    created = domain.create("acme", "c1", DRAFT, NEWS, None, senders=ACME)
    state = state_after(*created)
    [edited] = domain.edit(state, "c1", Draft(**{**DRAFT.__dict__, "name": "Renamed"}), NEWS, senders=ACME)
    [deleted] = domain.delete(state, "c1")
    doc = None
    for event in (*created, deleted, edited, *created):
        doc = domain.evolve(doc, event, AT)
    assert doc is not None and (doc["status"], doc["name"]) == ("deleted", "November")


def test_what_each_event_adds_to_its_campaigns_report() -> None:
    from tests.samples import sample

    sent, bounced, opened, clicked = (sample(t) for t in ("MessageSent", "MessageBounced", "MessageOpened",
                                                           "LinkClicked"))
    dsn_block = bounced.model_copy(update={"payload": bounced.payload.model_copy(update={  # type: ignore[attr-defined]
        "bounce_class": "block", "source": "dsn"})})
    assert domain.report_counts(sent) == {"sent": 1, "accepted": 1}
    assert domain.report_counts(bounced) == {"bounced_hard": 1, "sent": 1}  # refused at SMTP time: handed over
    assert domain.report_counts(dsn_block) == {}  # once per message: `firsts`
    assert domain.firsts(dsn_block) == [domain.First({"failed_later": 1, "bounced_block": 1},
                                                     f"f:{dsn_block.payload.message_id}")]  # type: ignore[attr-defined]
    never_left = bounced.model_copy(update={"payload": bounced.payload.model_copy(update={  # type: ignore[attr-defined]
        "bounce_class": "undetermined", "source": "local"})})
    assert domain.report_counts(never_left) == {"bounced_undetermined": 1}  # neither sent nor failed later
    assert domain.report_counts(opened) == {"opens_total": 1}
    assert domain.report_counts(clicked) == {"clicks_total": 1, "clicks_link_0": 1}
    assert domain.firsts(opened) == [domain.First(  # the sample's reader: a phone in Riga
        {"opens_unique": 1, "opens_unique_country_LV": 1, "opens_unique_device_mobile": 1},
        f"o:{opened.payload.message_id}")]  # type: ignore[attr-defined]
    notice = sent.model_copy(update={"payload": sent.payload.model_copy(update={  # type: ignore[attr-defined]
        "kind": "account_notice", "campaign_id": None})})
    assert domain.report_campaign(sent) == "c1" and domain.report_campaign(notice) is None


def test_a_mail_scanners_open_or_click_is_counted_apart_and_never_as_the_readers_first() -> None:
    """Issue 20: opens and clicks marked `automated` (mail-scanner prefetches) do not inflate reports."""
    from tests.samples import sample

    mark = {"automated": True, "automated_reason": "scanner:barracuda"}
    opened, clicked = (sample(t) for t in ("MessageOpened", "LinkClicked"))
    scanner_open, scanner_click = (e.model_copy(update={"payload": e.payload.model_copy(update=mark)})  # type: ignore[attr-defined]
                                   for e in (opened, clicked))
    assert domain.report_counts(scanner_open) == {"opens_automated": 1}
    assert domain.report_counts(scanner_click) == {"clicks_automated": 1}
    assert domain.firsts(scanner_open) == [] and domain.firsts(scanner_click) == []
    assert domain.firsts(clicked)[0].marker == f"c:{clicked.payload.message_id}"  # type: ignore[attr-defined]
    out = domain.report({"opens_automated": 3, "clicks_automated": 2, "clicks_total": 1, "clicks_unique": 1,
                         "clicks_link_0": 1}, '<a href="https://shop.example/">Shop</a>')
    assert out["opens"] == {"unique": 0, "total": 0, "automated": 3, "by_country": {}, "by_device": {}}
    assert out["clicks"] == {"unique": 1, "total": 1, "automated": 2, "by_country": {}, "by_device": {},
                             "per_link": [{"link_index": 0, "url": "https://shop.example/", "clicks": 1}]}


def test_a_message_complained_about_twice_is_one_complaint_and_not_spam_none() -> None:
    """As compliance counts the abuse rate (a fact per message): two reports of one message are one complaint."""
    from tests.samples import sample

    complaint = sample("ComplaintReceived")
    again = complaint.model_copy(update={"event_id": uuid.uuid4()})
    assert domain.report_counts(complaint) == {}
    assert domain.firsts(complaint) == domain.firsts(again) == [domain.First(
        {"complaints": 1}, f"x:{complaint.payload.message_id}")]  # type: ignore[attr-defined]
    not_spam = complaint.model_copy(update={"payload": complaint.payload.model_copy(  # type: ignore[attr-defined]
        update={"feedback_type": "not-spam"})})
    assert domain.report_counts(not_spam) == {} and domain.firsts(not_spam) == []


def test_a_recipient_unsubscribing_again_after_coming_back_is_one_unsubscribe_of_the_campaign() -> None:
    """R3 #3: unsubscribed, back by double opt-in, then the old message's link pressed again: compliance counts one
    unsubscribe (a fact per list and member); the report counted two. Now both carry one marker."""
    from tests.samples import sample

    left = sample("SubscriberUnsubscribed")
    again = left.model_copy(update={"event_id": uuid.uuid4()})
    payload = left.payload  # type: ignore[attr-defined]
    assert domain.report_counts(left) == {}
    assert domain.firsts(left) == domain.firsts(again) == [domain.First(
        {"unsubscribes": 1}, f"u:{payload.list_id}:{payload.subscriber_id}")]


def test_a_report_gives_counts_and_rates_of_what_was_handed_over_and_never_who() -> None:
    counts = {"sent": 200, "accepted": 190, "failed_later": 4, "bounced_hard": 10, "bounced_block": 4,
              "opens_unique": 50, "opens_total": 80, "clicks_unique": 20, "clicks_total": 30, "clicks_link_1": 10,
              "clicks_link_0": 20, "complaints": 1, "unsubscribes": 2}
    out = domain.report(counts, None)
    assert (out["sent"], out["delivered"]) == (200, 186)
    assert out["clicks"] == {"unique": 20, "total": 30, "automated": 0, "by_country": {}, "by_device": {},
                             "per_link": [{"link_index": 0, "url": None, "clicks": 20},
                                          {"link_index": 1, "url": None, "clicks": 10}]}
    assert out["rates"] == {"hard_bounce_rate": 0.05, "block_rate": 0.02, "abuse_rate": 0.005,
                            "unsubscribe_rate": 0.01}
    assert domain.report({}, None)["rates"] == {"hard_bounce_rate": None, "block_rate": None, "abuse_rate": None,
                                                "unsubscribe_rate": None}


def test_reports_of_one_failed_message_in_two_classes_are_one_failure_in_the_class_of_the_first() -> None:
    """R5 #1: a relay and its backup MX reporting one accepted message as 5.1.1 (hard) and 5.7.1 (block) took it
    twice off `delivered` and showed two bounces. Now both reports carry the message's one failure marker: the
    report's consumer counts the first (its class) and passes over the second, as it does a second complaint."""
    from tests.samples import sample

    bounced = sample("MessageBounced")

    def dsn(bounce_class: str) -> Event:
        return bounced.model_copy(update={"event_id": uuid.uuid4(), "payload": bounced.payload.model_copy(
            update={"bounce_class": bounce_class, "source": "dsn"})})  # type: ignore[attr-defined]

    hard, block, undetermined = dsn("hard"), dsn("block"), dsn("undetermined")
    [first], [second], [third] = (domain.firsts(e) for e in (hard, block, undetermined))
    assert first.marker == second.marker == third.marker == f"f:{bounced.payload.message_id}"  # type: ignore[attr-defined]
    assert (first.counts, second.counts) == ({"failed_later": 1, "bounced_hard": 1},
                                             {"failed_later": 1, "bounced_block": 1})
    assert all(domain.report_counts(e) == {} for e in (hard, block, undetermined))
    # A delay report (soft) is no failure: once per message too, under a marker of its own.
    [delay] = domain.firsts(dsn("soft"))
    assert delay == domain.First({"bounced_soft": 1}, f"w:{bounced.payload.message_id}")  # type: ignore[attr-defined]


def test_a_deferral_counts_its_message_once_and_is_taken_back_when_the_message_settles() -> None:
    """R5 #2: nothing said a message was being retried (up to 72 hours). A message's deferrals are one
    `deferred_messages`; its send, refusal or giving up after one is one `deferred_settled`, counted only after
    its deferral's marker (a first attempt's send looks nothing up)."""
    from tests.samples import sample

    deferred, sent, bounced = sample("MessageDeferred"), sample("MessageSent"), sample("MessageBounced")
    message = sent.payload.message_id  # type: ignore[attr-defined]
    assert domain.report_campaign(deferred) == "c1" and domain.report_counts(deferred) == {}
    assert domain.firsts(deferred) == [domain.First({"deferred_messages": 1}, f"d:{message}")]
    settled = domain.First({"deferred_settled": 1}, f"r:{message}", after=f"d:{message}")
    later = sent.model_copy(update={"payload": sent.payload.model_copy(update={"attempt": 3})})  # type: ignore[attr-defined]
    assert domain.firsts(sent) == [] and domain.firsts(later) == [settled]
    expired = bounced.model_copy(update={"payload": bounced.payload.model_copy(  # type: ignore[attr-defined]
        update={"bounce_class": "soft", "source": "retry_expired"})})
    assert domain.firsts(bounced) == domain.firsts(expired) == [settled]
    out = domain.report({"sent": 5, "accepted": 5, "deferred_messages": 3, "deferred_settled": 1}, None)
    assert out["deferred"] == 2


def test_a_report_shows_recipients_and_what_was_not_sent_once_delivery_finished() -> None:
    """R5 #2: the recipients, the skipped and the cancelled were only in delivery's event. They come from
    delivery's CampaignDeliveryFinished (null until then); and nothing is being retried once it finished (a
    deferred message of a cancelled campaign ends cancelled, with no event of its own)."""
    counts = {"sent": 4, "accepted": 4, "deferred_messages": 1}
    during = domain.report(counts, None)
    assert [during[k] for k in ("recipients", "deferred", "skipped", "failed", "cancelled")] == [
        None, 1, None, None, None]
    finished = {"recipients": 20, "sent": 4, "bounced": 0, "skipped": 1, "failed": 0, "cancelled": 15}
    after = domain.report(counts, None, finished)
    assert [after[k] for k in ("recipients", "sent", "deferred", "skipped", "failed", "cancelled")] == [
        20, 4, 0, 1, 0, 15]


def test_a_reports_clicks_per_link_name_each_links_url_as_written_in_the_campaign() -> None:
    """A link index alone does not tell the customer which link was clicked: each entry names its URL, as the
    HTML part writes it (entities decoded), in the order delivery numbers the links."""
    html_body = ('<p><a href="https://shop.example/sale?a=1&amp;b=2">Sale</a> <a href="mailto:x@acme.example">'
                 'Mail</a> <a href="https://shop.example/{{ city }}">Yours</a> <a href="https://acme.example/">'
                 'Home</a> <a href="https://shop.example/sale?a=1&amp;b=2">Sale again</a></p>')
    out = domain.report({"clicks_total": 4, "clicks_link_1": 1, "clicks_link_0": 2, "clicks_link_2": 1},
                        html_body)
    assert out["clicks"]["per_link"] == [  # type: ignore[index]
        {"link_index": 0, "url": "https://shop.example/sale?a=1&b=2", "clicks": 2},
        {"link_index": 1, "url": "https://acme.example/", "clicks": 1},
        {"link_index": 2, "url": "https://shop.example/sale?a=1&b=2", "clicks": 1}]


def test_preview_and_submit_render_custom_fields_with_their_types_as_delivery_does() -> None:
    """Numbers compare as numbers and booleans test as booleans (README, Personalisation): the preview and
    the submit's rendering pass the values typed, as delivery does; as text, `points > 100` failed (so the
    campaign could never be submitted) and `vip: False` showed the VIP branch."""
    from herald_shared.contract.campaigns import CampaignContent

    points = ListInfo("news", {"points": "number", "vip": "boolean"})
    html = ("<html><body>{% if points > 100 %}<p>Gold</p>{% else %}<p>Hi</p>{% endif %}"
            "{% if vip %}<p>VIP price</p>{% else %}<p>Price</p>{% endif %}</body></html>")
    content = CampaignContent(subject="Hi", from_name="Acme", from_email="a@acme.example", html_body=html,
                              text_body="Hi")
    state = CampaignState("acme", "c1", "draft", "November", "news", {}, content)
    domain.check_templates(content, points)
    assert "<p>Hi</p>" in (domain.as_rendered(state, "c1", points)["html_body"] or "")  # the sample: 42
    shown = domain.preview(state, "c1", points, {"points": 150, "vip": False})["html_body"] or ""
    assert "<p>Gold</p>" in shown and "<p>Price</p>" in shown and "VIP" not in shown


def content_with(**changes: object) -> CampaignState:
    from herald_shared.contract.campaigns import CampaignContent

    fields: dict[str, object] = {"subject": "News", "from_name": "Shop", "from_email": "a@shop.example",
                                 "text_body": "hello", "html_body": "<p>hello</p>", **changes}
    return CampaignState("acme", "c1", "draft", "November", "news", {}, CampaignContent.model_validate(fields))


@pytest.mark.parametrize(("changes", "where", "category"), [
    # a branch the sample member (Anna) never takes, in the body and in the subject
    ({"html_body": '<p>{% if first_name != "Anna" %}{{ "online ca" ~ "sino bonus" }}{% endif %}</p>'},
     "html_body", "gambling"),
    ({"html_body": '<p>{{ "" if email == "anna.berzina@example.com" else "online ca" ~ "sino bonus" }}</p>'},
     "html_body", "gambling"),
    ({"subject": '{% if first_name != "Anna" %}{{ "cheap vi" ~ "agra" }}{% endif %} news'}, "subject", "pharmacy"),
    ({"text_body": '{% if city != "Riga" %}{% set p = "online ca" %}{% else %}{% set p = "" %}{% endif %}'
                   '{{ p ~ "sino" }}'}, "text_body", "gambling"),
    ({"preheader": '{{ "Online Ca" ~ "sino" if first_name == "Jānis" }}'}, "preheader", "gambling"),
    # a text the code holds, whichever branch uses it
    ({"html_body": '{% set p = "cheap v\u0131agra" %}{% if first_name == "zz" %}{{ p }}{% endif %}'},
     "html_body", "pharmacy"),
    # the sender's name
    ({"from_name": "Online Casino Bonus - Cheap Viagra"}, "from_name", "gambling"),
])
def test_screening_reads_what_any_member_gets_not_only_the_sample(changes: dict[str, object], where: str,
                                                                 category: str) -> None:
    """PRODUCT.md: "A campaign is screened before it can be queued": every member's campaign, so every branch
    of its template code, and everything the recipient reads, the sender's name included."""
    verdict = domain.screening_of(content_with(**changes), "c1", NEWS, None)
    assert (where, category) in {(m.where, m.category) for m in verdict.matches}, verdict.matches
    assert verdict.refusals == ()


def test_a_personalised_campaign_with_conditions_is_not_flagged() -> None:
    html = ('<h1>{% if first_name %}Hi {{ first_name }}{% else %}Hello there{% endif %}</h1>'
            '<p>{{ "Our Riga shop" if city == "Riga" else "Our shops" }} {{ "are open" }} on Sunday.</p>'
            '{% if city == "Riga" %}<p>Fresh bread at Brīvības iela 1.</p>{% elif city %}<p>Visit {{ city }}.</p>'
            '{% endif %}<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>')
    state = content_with(html_body=html, subject="{{ first_name | default('Friend') }}, news for you")
    assert domain.screening_of(state, "c1", NEWS, None).matches == ()


def test_submission_and_test_sends_screen_the_same_way() -> None:
    """A test send is screened as a submission is (README "Test sends"): both go through `screening_of`."""
    import asyncio

    from herald_campaigns.handlers import screened, screening_pool

    state = content_with(html_body='<p>{% if first_name != "Anna" %}{{ "online ca" ~ "sino" }}{% endif %}</p>')
    with screening_pool() as pool:
        assert asyncio.run(screened(pool, state, "c1", NEWS, None)) == domain.screening_of(state, "c1", NEWS, None)
        assert asyncio.run(screened(pool, state, "c1", NEWS, {"first_name": "Anna"})).flagged


@pytest.mark.parametrize(("values", "field"), [
    ({"city": 2**70}, "city"),  # a text field given a number
    ({"points": 2**70}, "points"),  # beyond 64 bits: delivery could never store the test's sample
    ({"points": float("inf")}, "points"),
    ({"other": -(2**63) - 1}, "other"),  # a name the list does not declare still carries a storable value
    ({"other": float("nan")}, "other"),
    ({"first_name": 7}, "first_name"),  # the standard fields are text
])
def test_merge_values_no_member_could_hold_are_refused_for_previews_and_tests(values: dict[str, object],
                                                                               field: str) -> None:
    lst = ListInfo("news", {"city": "text", "points": "number"})
    state = content_with(html_body='<p>{{ city }} {{ points }} <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>')
    with pytest.raises(domain.InvalidValues) as refused:
        domain.preview(state, "c1", lst, values)  # type: ignore[arg-type]
    assert refused.value.errors == [(f"body.values.{field}", refused.value.errors[0][1])]
    with pytest.raises(domain.InvalidValues):
        domain.test_send(state, "c1", lst, ["me@acme.example"], values, "ada", "t1",  # type: ignore[arg-type]
                         domain.screening_of(state, "c1", lst, None), senders=ACME)
    fine = {"city": "Riga", "points": 2**63 - 1, "other": 1.5, "first_name": "Ada", "vip": True, "none": None}
    assert domain.preview(state, "c1", lst, fine)["html_body"]  # type: ignore[arg-type]
    assert domain.test_send(state, "c1", lst, ["me@acme.example"], fine, "ada", "t1",  # type: ignore[arg-type]
                            domain.screening_of(state, "c1", lst, None), senders=ACME)


def test_a_readers_first_open_or_click_is_counted_by_country_and_device_and_nothing_else_names_a_counter() -> None:
    """Where readers were and on what, from the client delivery recorded (GeoIP, user agent): unique, so a
    reader opening ten times counts once; a client delivery could not place is `unknown`; only a two-letter
    code becomes part of a counter's name."""
    from tests.samples import sample

    opened = sample("MessageOpened")

    def at(**client: object) -> object:
        return opened.model_copy(update={"payload": opened.payload.model_copy(update={  # type: ignore[attr-defined]
            "client": opened.payload.client.model_copy(update=client)})})  # type: ignore[attr-defined]

    assert domain.firsts(at(country=None, device=None))[0].counts == {  # type: ignore[arg-type]
        "opens_unique": 1, "opens_unique_country_unknown": 1, "opens_unique_device_unknown": 1}
    for odd in ("lv", "L.", "$x", "ÄÖ"):
        assert "opens_unique_country_unknown" in domain.firsts(at(country=odd))[0].counts  # type: ignore[arg-type]
    counts = {"opens_unique": 6, "opens_unique_country_LV": 3, "opens_unique_country_EE": 1,
              "opens_unique_country_unknown": 2, "opens_unique_device_mobile": 4, "opens_unique_device_desktop": 2,
              "clicks_unique": 1, "clicks_unique_country_LV": 1, "clicks_unique_device_tablet": 1}
    out = domain.report(counts, None)
    assert out["opens"]["by_country"] == {"LV": 3, "unknown": 2, "EE": 1}  # type: ignore[index]
    assert list(out["opens"]["by_country"]) == ["LV", "unknown", "EE"]  # type: ignore[index]
    assert out["opens"]["by_device"] == {"mobile": 4, "desktop": 2}  # type: ignore[index]
    assert (out["clicks"]["by_country"], out["clicks"]["by_device"]) == ({"LV": 1}, {"tablet": 1})  # type: ignore[index]


@pytest.mark.parametrize(("html_body", "text_body", "where"), [
    ('<p>{{ city }}</p><a href="https://{{ city }}/">Shop</a>', None, "body.html_body"),
    ('<a href="{{ city }}">Shop</a>', None, "body.html_body"),
    ("<a href='https://{{ city }}.shop.example/'>Shop</a>", None, "body.html_body"),
    ('<a href="https&#58;//{{ city }}/x">Shop</a>', None, "body.html_body"),
    ('<img src="//{{ city }}/banner.png">', None, "body.html_body"),
    # WHATWG URL parsing: after http(s) the host follows however many slashes (or backslashes) come, none too
    ('<a href="https:{{ city }}/offer">Shop</a>', None, "body.html_body"),
    ('<a href="https:/{{ city }}/offer">Shop</a>', None, "body.html_body"),
    ('<a href="HTTPS:{{ city }}">Shop</a>', None, "body.html_body"),
    ('<a href="https:\\{{ city }}/">Shop</a>', None, "body.html_body"),
    ('<img src="https:{{ city }}/p.png">', None, "body.html_body"),
    ('<a href="///{{ city }}/offer">Shop</a>', None, "body.html_body"),
    ('<a href="https://shop.example/">Shop</a>', "Shop <https://{{ city }}/>", "body.text_body"),
])
def test_a_merge_tag_in_a_links_scheme_or_host_is_refused_at_save_and_at_submission(
        html_body: str, text_body: str | None, where: str) -> None:
    """R3 #2: a member's value would choose where the link goes and what its address says, unscreened."""
    draft = Draft(**{**DRAFT.__dict__, "html_body": html_body, "text_body": text_body})
    with pytest.raises(domain.ContentRefused, match="scheme or host") as refusal:
        domain.create("acme", "c1", draft, NEWS, None, senders=ACME)
    assert [location for location, _ in refusal.value.errors or ()] == [where]
    [created] = domain.create("acme", "c1", DRAFT, NEWS, None, senders=ACME)
    with pytest.raises(domain.ContentRefused, match="scheme or host"):
        domain.edit(state_after(created), "c1", draft, NEWS, senders=ACME)
    stored_before = state_after(created, CampaignEdited(account_id="acme", producer="campaigns", payload={  # type: ignore[arg-type]
        "campaign_id": "c1", "name": "November", "list_id": "news", "segment": {"field_equals": {}},
        "content": {**created.payload.content.model_dump(), "html_body": html_body,  # type: ignore[attr-defined]
                    "text_body": text_body or "Shop"}}))
    with pytest.raises(domain.ContentRefused, match="scheme or host"):
        domain.submittable(stored_before, "c1", NEWS, senders=ACME)


@pytest.mark.parametrize("html_body", [
    '<a href="https://shop.example/{{ city }}?who={{ email }}#{{ first_name }}">Yours</a>',
    '<a href="{{ unsubscribe_url }}">Unsubscribe</a> <a href="mailto:{{ email }}">Write</a>',
    '<a href="#{{ city }}">Down</a> <a href="/{{ city }}">Relative</a>',
])
def test_a_merge_tag_in_a_links_path_query_or_an_address_stays_allowed(html_body: str) -> None:
    domain.create("acme", "c1", Draft(**{**DRAFT.__dict__, "html_body": html_body}), NEWS, None, senders=ACME)


def test_more_tracked_links_than_the_bound_are_refused_at_save_and_submission_with_the_count() -> None:
    """Delivery rewrites every tracked link of every message (~17 us each): a bound keeps one campaign from
    taking the sender's CPU from every other account (campaign_links.MAX_TRACKED_LINKS)."""
    def links(n: int) -> str:
        return "".join(f'<a href="https://shop.example/p/{i}">{i}</a>' for i in range(n))

    at_bound = Draft(**{**DRAFT.__dict__, "html_body": links(MAX_TRACKED_LINKS)})
    [created] = domain.create("acme", "c1", at_bound, NEWS, None, senders=ACME)
    over = Draft(**{**DRAFT.__dict__, "html_body": links(MAX_TRACKED_LINKS + 1)})
    with pytest.raises(domain.TooManyLinks) as refusal:
        domain.create("acme", "c2", over, NEWS, None, senders=ACME)
    assert (refusal.value.code, refusal.value.links, refusal.value.limit) == ("too_many_links", 251, 250)
    assert "251 tracked links" in refusal.value.detail and "250" in refusal.value.detail
    with pytest.raises(domain.TooManyLinks):
        domain.edit(state_after(created), "c1", over, NEWS, senders=ACME)
    untracked = "".join(f'<a href="https://shop.example/{{{{ city }}}}/{i}">{i}</a>' for i in range(300))
    domain.create("acme", "c3", Draft(**{**DRAFT.__dict__, "html_body": untracked}), NEWS, None, senders=ACME)
    stored_before = state_after(created, CampaignEdited(account_id="acme", producer="campaigns", payload={  # type: ignore[arg-type]
        "campaign_id": "c1", "name": "November", "list_id": "news", "segment": {"field_equals": {}},
        "content": {**created.payload.content.model_dump(), "html_body": over.html_body}}))  # type: ignore[attr-defined]
    with pytest.raises(domain.TooManyLinks):
        domain.submittable(stored_before, "c1", NEWS, senders=ACME)
