"""A person's activity for the GDPR export (PRODUCT.md, "Data protection": IP, country/city, device, browser, times
of opens, clicks and bounces are collected; export and erasure on request): which delivery events are the
person's, what an entry keeps of each, and what an erasure leaves out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from herald_subscriptions import domain
from herald_subscriptions.activity import activity_key
from herald_subscriptions.api import activity_out
from tests.samples import T0, sample

CLIENT_FIELDS = {"ip": "198.51.100.7", "user_agent": "Mozilla/5.0 (iPhone)", "device": "mobile", "browser": "Safari",
                 "country": "LV", "city": "Riga"}
MESSAGE = {"account_id": "acc-1", "subscriber_id": "s1", "at": T0, "kind": "campaign", "message_id": "msg-c1-s1",
           "campaign_id": "c1", "list_id": "l1"}


def test_a_sent_message_is_kept_with_its_message_and_time() -> None:
    assert domain.activity_entry(sample("MessageSent")) == {**MESSAGE, "type": "sent"}


def test_a_bounce_keeps_its_class_diagnostic_and_source() -> None:
    soft = sample("MessageBounced", payload={**sample("MessageBounced").payload.model_dump(), "bounce_class": "soft",
                                             "smtp_code": 452, "enhanced_status_code": "4.2.2",
                                             "diagnostic": "mailbox full"})
    assert domain.activity_entry(soft) == {
        **MESSAGE, "type": "bounced", "bounce_class": "soft", "diagnostic": "mailbox full",
        "bounce_source": "smtp_reply", "smtp_code": 452, "enhanced_status_code": "4.2.2"}


SUPPRESSED = {k: v for k, v in MESSAGE.items() if k not in ("message_id", "campaign_id")} | {"type": "suppressed"}


def test_a_hard_bounce_and_a_complaint_read_alike_as_one_neutral_suppressed_entry() -> None:
    """PRODUCT.md: who complained is never disclosed to the customer. Both suppress the address; were the hard
    bounce shown as such, a suppressed member without one would be a complainer."""
    hard, complaint = domain.activity_entry(sample("MessageBounced")), domain.activity_entry(
        sample("ComplaintReceived"))
    assert hard == complaint == SUPPRESSED  # not even the message: an open of it would tell a complaint


def test_a_hard_bounce_an_earlier_version_stored_reads_as_suppressed_in_the_export() -> None:
    stored = {**MESSAGE, "_id": "acc-1/s1/t/e1", "type": "bounced", "bounce_class": "hard",
              "diagnostic": "user unknown", "bounce_source": "dsn", "smtp_code": 550}
    complained = {**SUPPRESSED, "_id": "acc-1/s1/t/e2"}
    assert activity_out(stored) == activity_out(complained) == {
        "subscriber_id": "s1", "type": "suppressed", "kind": "campaign", "list_id": "l1", "at": T0.isoformat()}
    soft = {**stored, "bounce_class": "soft"}
    assert activity_out(soft)["bounce_class"] == "soft"  # a bounce that suppresses nothing stays as it was


def test_an_open_keeps_the_client_it_came_from() -> None:
    assert domain.activity_entry(sample("MessageOpened")) == {
        **MESSAGE, "type": "opened", **CLIENT_FIELDS, "automated": False}


def test_a_click_keeps_the_client_and_the_link() -> None:
    assert domain.activity_entry(sample("LinkClicked")) == {
        **MESSAGE, "type": "clicked", **CLIENT_FIELDS, "automated": False, "url": "https://acme.example/offer",
        "link_index": 0}


def test_a_confirmation_email_is_the_persons_activity_too() -> None:
    event = sample("MessageSent", payload={"message_id": "m-conf", "kind": "confirmation", "subscriber_id": "s1",
                                           "list_id": "l1", "recipient_domain": "example.com", "smtp_code": 250})
    assert domain.activity_entry(event) == {"account_id": "acc-1", "subscriber_id": "s1", "at": T0,
                                            "kind": "confirmation", "message_id": "m-conf", "list_id": "l1",
                                            "type": "sent"}


@pytest.mark.parametrize("type_name", ["UnsubscribeRequested", "SubscriberAdded",
                                       "CampaignDeliveryFinished"])
def test_other_events_are_no_activity(type_name: str) -> None:
    assert domain.activity_entry(sample(type_name)) is None


@pytest.mark.parametrize("ref", [
    {"message_id": "m-notice", "kind": "account_notice", "subscriber_id": "s1"},  # to the customer, about s1
    {"message_id": "m-test", "kind": "test", "campaign_id": "c1"},
    {"message_id": "m-none", "kind": "campaign", "campaign_id": "c1"},  # names no subscriber
])
def test_a_message_not_to_a_subscribers_mailbox_is_no_activity(ref: dict[str, Any]) -> None:
    event = sample("MessageOpened", payload={**ref, "client": CLIENT_FIELDS})
    assert domain.activity_entry(event) is None


def test_an_entry_leaves_out_what_the_event_did_not_collect() -> None:
    event = sample("MessageOpened", payload={"message_id": "m1", "subscriber_id": "s1", "client": {},
                                             "automated": True, "automated_reason": "no_user_agent"})
    entry = domain.activity_entry(event)
    assert entry is not None and "ip" not in entry and "user_agent" not in entry and "campaign_id" not in entry
    assert (entry["automated"], entry["automated_reason"]) == (True, "no_user_agent")


ERASED = datetime(2026, 11, 10, tzinfo=UTC)
DAY = timedelta(days=1)


def test_activity_of_a_membership_never_erased_is_kept() -> None:
    assert domain.activity_kept(ERASED + DAY, None, None)


@pytest.mark.parametrize("at", [ERASED - DAY, ERASED, ERASED + DAY])
def test_activity_of_an_erased_membership_is_not_kept_whenever_it_happened(at: datetime) -> None:
    """An open of an old message after the erasure would bring the person's IP back."""
    assert not domain.activity_kept(at, ERASED, None)
    assert not domain.activity_kept(at, ERASED, ERASED - 2 * DAY)  # added before the erasure: not a return


def test_a_person_who_joined_again_after_the_erasure_has_activity_from_then_on() -> None:
    rejoined = ERASED + DAY
    assert domain.activity_kept(rejoined + DAY, ERASED, rejoined)
    assert domain.activity_kept(rejoined, ERASED, rejoined)
    assert not domain.activity_kept(rejoined - timedelta(seconds=1), ERASED, rejoined)


def test_an_entry_key_sorts_by_membership_then_time() -> None:
    early = activity_key("acc", "s1", T0, "ffff")
    late = activity_key("acc", "s1", T0 + timedelta(microseconds=1), "0000")
    assert early.startswith("acc/s1/") and early < late
    assert activity_key("acc", "s1", T0, "e1") < "acc/s1" + chr(ord("/") + 1)  # within the membership's range


def fold_at(*steps: tuple[str, datetime]) -> dict[str, Any]:
    doc = None
    for type_name, at in steps:
        doc = domain.evolve_member(doc, sample(type_name, occurred_at=at.isoformat()))
    assert doc is not None
    return doc


def test_a_re_add_after_the_erasure_that_nobody_confirmed_is_not_a_return() -> None:
    """README: a delivery event that comes after the erasure is not stored unless the person joined again. Anyone
    can post the hosted form with an address; until the person confirms, their opens of old messages stay out."""
    erased = [("SubscriberAdded", ERASED - 2 * DAY), ("SubscriberConfirmed", ERASED - 2 * DAY),
              ("SubscriberErased", ERASED)]
    pending = fold_at(*erased, ("SubscriberAdded", ERASED + DAY), ("ConfirmationRequested", ERASED + DAY))
    assert pending["status"] == "pending" and domain.rejoined_at(pending) is None
    assert not domain.activity_kept(ERASED + 2 * DAY, ERASED, domain.rejoined_at(pending))
    assert domain.rejoined_at(fold_at(*erased)) is None

    back = fold_at(*erased, ("SubscriberAdded", ERASED + DAY), ("ConfirmationRequested", ERASED + DAY),
                   ("SubscriberConfirmed", ERASED + 3 * DAY))
    assert domain.rejoined_at(back) == ERASED + 3 * DAY  # the person's confirmation, not the re-add
    assert not domain.activity_kept(ERASED + 2 * DAY, ERASED, domain.rejoined_at(back))
    assert domain.activity_kept(ERASED + 3 * DAY, ERASED, domain.rejoined_at(back))
    left_again = fold_at(*erased, ("SubscriberAdded", ERASED + DAY), ("ConfirmationRequested", ERASED + DAY),
                         ("SubscriberConfirmed", ERASED + 3 * DAY), ("SubscriberUnsubscribed", ERASED + 4 * DAY))
    assert domain.rejoined_at(left_again) == ERASED + 3 * DAY  # what they did since rejoining stays theirs
