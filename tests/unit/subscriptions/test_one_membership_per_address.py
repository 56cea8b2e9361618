"""One membership per address and list, as subscriptions decides it (`domain.member_id_for`, `domain.subscribe`);
a re-add keeps the opt-in's proof (`evolve_member`); and a membership whose add was recorded without its second half
(a publish cut off) is completed by the retry, under ids a second retry repeats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from herald_shared.contract import Event
from herald_shared.contract.subscriptions import ConsentEvidence, SubscriberConfirmed
from herald_subscriptions import domain
from herald_subscriptions.domain import ConfirmationsSent, ConfirmLink, ListState, MemberState, SubscribeRequest
from tests.samples import sample

NOW = datetime(2026, 11, 2, tzinfo=UTC)
ADDED_AT = datetime(2026, 11, 1, 10, 0, 0, 123000)  # as the store gives it back: naive UTC, milliseconds
CONSENT = ConsentEvidence(source="api", collected_at=NOW, method="checkout checkbox")
LINK = ConfirmLink("https://herald.example/confirm/token", NOW + timedelta(days=7))
ANNA = "anna@example.com"


def a_list(opt_in: str = "single") -> ListState:
    return ListState("acc", "l1", "News", opt_in, {})  # type: ignore[arg-type]


def request(channel: str = "import") -> SubscribeRequest:
    return SubscribeRequest(email=ANNA, consent=CONSENT, channel=channel)  # type: ignore[arg-type]


def pending(opt_in: str, subscriber_id: str = "s1", **extra: Any) -> MemberState:
    return MemberState(subscriber_id, "l1", domain.email_sha256(ANNA), "pending", opt_in=opt_in,  # type: ignore[arg-type]
                       added_at=ADDED_AT, **extra)


def decide(member: MemberState | None, opt_in: str = "single", channel: str = "import",
           sent: ConfirmationsSent | None = None) -> domain.Decision:
    return domain.subscribe(a_list(opt_in), member, False, request(channel), "Acme", lambda: LINK, sent, NOW)


def test_a_subscribe_is_decided_on_the_membership_another_producer_holds_the_address_on_the_list_by() -> None:
    memberships = [{"subscriber_id": "crm-7", "list_id": "l1", "email_sha256": domain.email_sha256(ANNA),
                    "status": "active"}]
    assert domain.member_id_for(memberships, "acc", "l1", ANNA) == "crm-7"
    member = MemberState("crm-7", "l1", domain.email_sha256(ANNA), "active")
    decision = decide(member, channel="api")
    assert (decision.events, decision.outcome, decision.subscriber_id) == ([], "already_active", "crm-7")


def test_without_a_membership_of_the_list_the_deterministic_id_is_used() -> None:
    erased = [{"subscriber_id": "crm-7", "list_id": "l1", "status": "erased"},
              {"subscriber_id": "crm-8", "list_id": "other", "email_sha256": domain.email_sha256(ANNA),
               "status": "active"}]
    assert domain.member_id_for(erased, "acc", "l1", ANNA) == domain.subscriber_id_for("acc", "l1", ANNA)


def test_a_single_opt_in_membership_left_pending_by_a_cut_publish_is_confirmed_by_the_retry() -> None:
    decision = decide(pending("single"))
    [confirmed] = decision.events
    assert isinstance(confirmed, SubscriberConfirmed) and decision.outcome == "active"
    assert confirmed.payload.method == "single_opt_in" and confirmed.payload.subscriber_id == "s1"
    assert [e.event_id for e in decide(pending("single")).events] == [confirmed.event_id]  # a retry: the same event


def test_the_first_decision_and_the_retry_give_the_confirmation_one_id() -> None:
    first = decide(None)
    added, confirmed = first.events
    member = pending("single", first.subscriber_id)
    member = MemberState(**{**member.__dict__, "added_at": domain.stored_time(added.occurred_at).replace(tzinfo=None)})
    assert [e.event_id for e in decide(member).events] == [confirmed.event_id]


def test_a_double_opt_in_membership_never_asked_to_confirm_gets_its_confirmation_email_within_the_caps() -> None:
    decision = decide(pending("double"), opt_in="double")
    assert [e.type for e in decision.events] == ["ConfirmationRequested"] and decision.outcome == "already_pending"
    assert decide(pending("double"), opt_in="double").events[0].event_id == decision.events[0].event_id
    capped = decide(pending("double"), opt_in="double", sent=ConfirmationsSent(None, (NOW,) * 3))
    assert capped.events == [] and capped.confirmation_withheld


def test_a_pending_membership_asked_to_confirm_or_that_opted_out_gets_nothing_again() -> None:
    asked = pending("double", awaiting_confirmation=True, confirmation_requested_at=ADDED_AT)
    assert decide(asked, opt_in="double").events == []
    assert decide(pending("double", opted_out="unsubscribed"), opt_in="double").events == []
    assert decide(pending("single", opted_out="unsubscribed")).events == []


def ev(type_name: str, at: datetime, **payload: Any) -> Event:
    event = sample(type_name, occurred_at=at.isoformat())
    return type(event).model_validate({**event.model_dump(), "payload": {**event.payload.model_dump(), **payload}})


def test_the_same_person_added_again_keeps_when_and_how_they_opted_in_and_takes_the_new_profile() -> None:
    first = ev("SubscriberAdded", NOW, subscriber_id="s1", first_name="Anna")
    again = ev("SubscriberAdded", NOW + timedelta(hours=1), subscriber_id="s1", first_name="Ann",
               consent={**CONSENT.model_dump(), "method": "CRM sync", "collected_at": NOW + timedelta(hours=1)})
    for between in ([], [ev("SubscriberConfirmed", NOW, subscriber_id="s1")]):
        doc = None
        for event in [first, *between, again]:
            doc = domain.evolve_member(doc, event)
        assert doc is not None
        assert doc["added_at"] == NOW and doc["consent"] == first.payload.consent.model_dump(mode="json")  # type: ignore[attr-defined]
        assert doc["first_name"] == "Ann"


def test_a_person_re_added_after_unsubscribing_brings_the_new_opt_in_s_evidence() -> None:
    later = NOW + timedelta(days=1)
    doc = None
    for event in [ev("SubscriberAdded", NOW, subscriber_id="s1"), ev("SubscriberUnsubscribed", NOW, subscriber_id="s1"),
                  ev("SubscriberAdded", later, subscriber_id="s1", consent={**CONSENT.model_dump(), "method": "form"})]:
        doc = domain.evolve_member(doc, event)
    assert doc is not None and doc["added_at"] == later and doc["consent"]["method"] == "form"
