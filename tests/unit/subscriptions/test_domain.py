"""Subscriptions' pure rules (PRODUCT.md, "Lists and subscribers"): every transition, the illegal ones too."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from herald_shared.contract.subscriptions import (
    ConfirmationRequested,
    ConsentEvidence,
    CustomFieldDefinition,
    ListCreated,
    SubscriberAdded,
    SubscriberConfirmed,
    SubscriberErased,
    SubscriberSuppressed,
    SubscriberUnsubscribed,
)
from herald_subscriptions import domain
from herald_subscriptions.domain import (
    ConfirmLink,
    ListState,
    MemberState,
    SubscribeRequest,
)

NOW = datetime(2026, 11, 2, tzinfo=UTC)
CONSENT = ConsentEvidence(source="api", collected_at=NOW, method="checkout checkbox")
LINK = ConfirmLink("https://herald.example/confirm/token", NOW)


def a_list(opt_in: str = "single", **fields: str) -> ListState:
    return ListState("acc", "l1", "News", opt_in, dict(fields))  # type: ignore[arg-type]


def request(channel: str = "api", consent: ConsentEvidence | None = CONSENT, **extra: object) -> SubscribeRequest:
    return SubscribeRequest(email="anna@example.com", consent=consent, channel=channel, **extra)  # type: ignore[arg-type]


def member(status: str, awaiting: bool = False) -> MemberState:
    return MemberState("s1", "l1", domain.email_sha256("anna@example.com"), status, awaiting)  # type: ignore[arg-type]


def types(events: list) -> list[str]:  # type: ignore[type-arg]
    return [e.type for e in events]


def subscribe(lst: ListState | None = None, m: MemberState | None = None, suppressed: bool = False,
              req: SubscribeRequest | None = None) -> domain.Decision:
    return domain.subscribe(lst or a_list(), m, suppressed, req or request(), "Acme", lambda: LINK)


def test_email_is_checked_and_normalised() -> None:
    assert domain.normalise_email("  Anna@Example.COM ") == "anna@example.com"
    with pytest.raises(domain.InvalidEmail):
        domain.normalise_email("anna@")
    with pytest.raises(domain.InvalidEmail):
        domain.normalise_email("two@@example.com")


def test_subscriber_id_is_deterministic_per_account_list_and_address() -> None:
    one = domain.subscriber_id_for("acc", "l1", "anna@example.com")
    assert one == domain.subscriber_id_for("acc", "l1", "anna@example.com")
    assert one != domain.subscriber_id_for("acc", "l2", "anna@example.com")
    assert one != domain.subscriber_id_for("other", "l1", "anna@example.com")


def test_single_opt_in_is_active_at_once() -> None:
    decision = subscribe()
    assert decision.outcome == "active"
    assert types(decision.events) == ["SubscriberAdded", "SubscriberConfirmed"]
    added, confirmed = decision.events
    assert isinstance(added, SubscriberAdded) and added.payload.opt_in == "single"
    assert isinstance(confirmed, SubscriberConfirmed) and confirmed.payload.method == "single_opt_in"


def test_double_opt_in_stays_pending_and_asks_for_confirmation() -> None:
    decision = subscribe(a_list("double"))
    assert decision.outcome == "pending"
    assert types(decision.events) == ["SubscriberAdded", "ConfirmationRequested"]
    request_event = decision.events[1]
    assert isinstance(request_event, ConfirmationRequested)
    assert str(request_event.payload.confirm_url) == LINK.url
    assert request_event.payload.company_name == "Acme"


def test_consent_evidence_is_required() -> None:
    with pytest.raises(domain.ConsentMissing):
        subscribe(req=request(consent=None))


def test_consent_collected_before_2000_is_a_placeholder_not_evidence() -> None:
    for placeholder in (datetime(1, 1, 1, tzinfo=UTC), datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)):
        consent = ConsentEvidence(source="import", collected_at=placeholder, method="old crm")
        with pytest.raises(domain.InvalidConsent, match="before 2000-01-01"):
            subscribe(req=request("import", consent=consent))
    earliest = ConsentEvidence(source="import", collected_at=datetime(2000, 1, 1, tzinfo=UTC), method="old crm")
    assert subscribe(req=request("import", consent=earliest)).outcome == "active"


def test_unknown_list_or_deleted_list_refuses() -> None:
    with pytest.raises(domain.ListNotFound):
        domain.subscribe(None, None, False, request(), "Acme", lambda: LINK)
    deleted = ListState("acc", "l1", "News", "single", {}, deleted=True)
    with pytest.raises(domain.ListNotFound):
        subscribe(deleted)


def test_custom_fields_must_be_defined_and_typed() -> None:
    lst = a_list(city="text", age="number", vip="boolean", born="date")
    ok = request(custom_fields={"city": "Riga", "age": 41, "vip": True, "born": "1985-02-01"})
    assert subscribe(lst, req=ok).outcome == "active"
    for bad in ({"shoe": "42"}, {"age": "forty"}, {"vip": "yes"}, {"born": "yesterday"}, {"age": True}):
        with pytest.raises(domain.InvalidCustomField):
            subscribe(lst, req=request(custom_fields=bad))


def test_subscribing_twice_is_idempotent() -> None:
    assert subscribe(m=member("active")).events == []
    assert subscribe(m=member("active")).outcome == "already_active"
    assert subscribe(a_list("double"), m=member("pending")).events == []


def test_a_pending_person_asking_again_on_the_form_gets_the_confirmation_again() -> None:
    decision = subscribe(a_list("double"), m=member("pending"), req=request("form"))
    assert types(decision.events) == ["ConfirmationRequested"]


@pytest.mark.parametrize("channel", ["api", "import"])
def test_a_suppressed_address_cannot_come_back_by_api_or_import(channel: str) -> None:
    with pytest.raises(domain.AddressSuppressed):
        subscribe(suppressed=True, req=request(channel))
    with pytest.raises(domain.AddressSuppressed):
        subscribe(m=member("suppressed"), req=request(channel))


def test_only_a_fresh_double_opt_in_by_the_person_lifts_a_suppression() -> None:
    decision = subscribe(a_list("single"), m=member("suppressed"), req=request("form"))
    assert decision.outcome == "pending"
    assert types(decision.events) == ["SubscriberAdded", "ConfirmationRequested"]
    events, outcome = domain.confirm("acc", a_list("double"), member("suppressed", awaiting=True), ip="203.0.113.1")
    assert outcome == "confirmed" and types(events) == ["SubscriberConfirmed"]


@pytest.mark.parametrize("channel", ["api", "import"])
def test_a_person_who_unsubscribed_is_not_re_added_by_the_customer(channel: str) -> None:
    with pytest.raises(domain.PreviouslyUnsubscribed):
        subscribe(m=member("unsubscribed"), req=request(channel))


def test_a_person_who_unsubscribed_can_come_back_through_double_opt_in() -> None:
    decision = subscribe(a_list("single"), m=member("unsubscribed"), req=request("form"))
    assert types(decision.events) == ["SubscriberAdded", "ConfirmationRequested"]


def test_an_erased_subscriber_can_subscribe_anew() -> None:
    assert subscribe(m=member("erased")).outcome == "active"


def erased_after(opted_out: str) -> MemberState:
    return MemberState("s1", "l1", domain.email_sha256("anna@example.com"), "erased",
                       opted_out=opted_out)  # type: ignore[arg-type]


@pytest.mark.parametrize("channel", ["api", "import"])
def test_erasure_does_not_let_the_customer_re_add_someone_who_opted_out(channel: str) -> None:
    """PRODUCT.md, "Lists and subscribers": an unsubscribe or suppression outlives erasure, as before it."""
    with pytest.raises(domain.PreviouslyUnsubscribed):
        subscribe(m=erased_after("unsubscribed"), req=request(channel))
    with pytest.raises(domain.AddressSuppressed):
        subscribe(m=erased_after("suppressed"), req=request(channel))


def test_after_erasure_the_person_who_opted_out_comes_back_through_double_opt_in_as_before() -> None:
    for opted_out in ("unsubscribed", "suppressed"):
        assert domain.needs_confirmation_history(a_list("single"), erased_after(opted_out), False)
        before = subscribe(a_list("single"), m=member(opted_out), req=request("form"))
        after = subscribe(a_list("single"), m=erased_after(opted_out), req=request("form"))
        assert types(after.events) == types(before.events) == ["SubscriberAdded", "ConfirmationRequested"]
        assert after.outcome == before.outcome == "pending"


def test_confirmation_transitions() -> None:
    events, outcome = domain.confirm("acc", a_list("double"), member("pending"), ip=None)
    assert outcome == "confirmed" and isinstance(events[0], SubscriberConfirmed)
    assert events[0].payload.method == "double_opt_in"
    assert domain.confirm("acc", a_list("double"), member("active"), ip=None) == ([], "already_confirmed")
    for gone in (None, member("erased"), member("unsubscribed"), member("suppressed")):
        with pytest.raises(domain.LinkNoLongerValid):
            domain.confirm("acc", a_list("double"), gone, ip=None)


def test_a_confirmation_link_of_a_deleted_or_missing_list_is_no_longer_valid() -> None:
    """A deleted list no longer takes subscribers: its confirmation links are dead, like an erased membership's,
    and record nothing."""
    deleted = ListState("acc", "l1", "News", "double", {}, deleted=True)
    for lst in (deleted, None):
        for status in ("pending", "active"):
            with pytest.raises(domain.LinkNoLongerValid):
                domain.confirm("acc", lst, member(status), ip=None)
        with pytest.raises(domain.LinkNoLongerValid):
            domain.confirm("acc", lst, member("suppressed", awaiting=True), ip=None)


def a_deleted_accounts_list(opt_in: str = "double") -> ListState:
    return ListState("acc", "l1", "News", opt_in, {}, account_deleted=True)  # type: ignore[arg-type]


def test_only_a_live_list_of_a_live_account_takes_members() -> None:
    assert domain.takes_members(a_list())
    assert not domain.takes_members(None)
    assert not domain.takes_members(ListState("acc", "l1", "News", "single", {}, deleted=True))
    assert not domain.takes_members(a_deleted_accounts_list())


def test_a_deleted_accounts_lists_take_no_subscriber_on_any_channel_and_send_no_confirmation() -> None:
    """PRODUCT.md: "Herald processes subscriber data only for the customer's purposes"; a deleted account has none."""
    for opt_in in ("single", "double"):
        for channel in ("api", "form", "import"):
            for m, suppressed in ((None, False), (member("pending"), False), (member("unsubscribed"), False),
                                  (None, True)):
                with pytest.raises(domain.ListNotFound):
                    subscribe(a_deleted_accounts_list(opt_in), m, suppressed, request(channel))
    with pytest.raises(domain.ListNotFound):
        domain.rename_list(a_deleted_accounts_list(), "Weekly")
    with pytest.raises(domain.ListNotFound):
        domain.delete_list(a_deleted_accounts_list(), 3)


def test_a_confirmation_link_of_a_deleted_accounts_list_is_no_longer_valid() -> None:
    """A link mailed before the account was deleted confirms nobody after it."""
    for m in (member("pending"), member("active"), member("suppressed", awaiting=True),
              member("unsubscribed", awaiting=True)):
        with pytest.raises(domain.LinkNoLongerValid):
            domain.confirm("acc", a_deleted_accounts_list(), m, ip="203.0.113.9")


def test_a_deleted_accounts_member_still_unsubscribes_and_nobody_is_notified() -> None:
    """The person's opt-out is recorded whatever became of the sender; its owner is mailed no notice of it."""
    from dataclasses import replace

    assert types(domain.unsubscribe("acc", member("active"), "one_click")) == ["SubscriberUnsubscribed"]
    assert types(domain.unsubscribe("acc", member("pending"), "unsubscribe_page")) == ["SubscriberUnsubscribed"]
    notifying = replace(a_deleted_accounts_list(), notify_subscribes=True, notify_unsubscribes=True)
    assert domain.membership_notice(notifying, "s1", "a@example.org", "unsubscribed", "one_click") == []


def test_unsubscribe_records_its_campaign_and_is_idempotent() -> None:
    events = domain.unsubscribe("acc", member("active"), "one_click", campaign_id="c1", message_id="m1")
    assert isinstance(events[0], SubscriberUnsubscribed)
    assert (events[0].payload.campaign_id, events[0].payload.source) == ("c1", "one_click")
    assert types(domain.unsubscribe("acc", member("pending"), "api")) == ["SubscriberUnsubscribed"]
    for status in ("unsubscribed", "suppressed", "erased"):
        assert domain.unsubscribe("acc", member(status), "one_click") == []
    assert domain.unsubscribe("acc", None, "one_click") == []


def test_hard_bounce_suppresses_once_and_complaint_also_unsubscribes() -> None:
    cause = ListCreated(account_id="acc", producer="delivery", payload={  # type: ignore[arg-type]
        "list_id": "l1", "name": "x", "opt_in": "single"})
    bounce = domain.suppress("acc", member("active"), False, "hard_bounce", cause, "m1", "c1")
    assert types(bounce) == ["SubscriberSuppressed"]
    assert isinstance(bounce[0], SubscriberSuppressed) and bounce[0].causation_id == cause.event_id
    assert domain.suppress("acc", member("active"), True, "hard_bounce", cause, "m1", "c1") == []
    complaint = domain.suppress("acc", member("active"), False, "complaint", cause, "m1", "c1")
    assert types(complaint) == ["SubscriberSuppressed", "SubscriberUnsubscribed"]
    assert types(domain.suppress("acc", member("unsubscribed"), True, "complaint", cause, "m1", "c1")) == []


def test_erasure_covers_every_membership_not_yet_erased() -> None:
    events = domain.erase("acc", [member("active"), member("erased"), member("unsubscribed")], "subscriber")
    assert types(events) == ["SubscriberErased", "SubscriberErased"]
    assert isinstance(events[0], SubscriberErased) and events[0].payload.list_id == "l1"


def test_list_creation_rename_and_delete() -> None:
    fields = [CustomFieldDefinition(name="city")]
    assert types(domain.create_list("acc", "l1", "News", "double", fields, None, live_lists=0)) == ["ListCreated"]
    existing = ListState("acc", "l1", "News", "double", {"city": "text"})
    assert domain.create_list("acc", "l1", "News", "double", fields, existing, live_lists=1) == []
    with pytest.raises(domain.ListAlreadyExists):
        domain.create_list("acc", "l1", "Other", "double", fields, existing, live_lists=1)
    assert domain.rename_list(existing, "News") == []
    assert types(domain.rename_list(existing, "Weekly")) == ["ListRenamed"]
    deleted = domain.delete_list(existing, members=12)
    assert deleted[0].payload.members_at_deletion == 12  # type: ignore[attr-defined]
    with pytest.raises(domain.ListNotFound):
        domain.rename_list(ListState("acc", "l1", "News", "double", {}, deleted=True), "x")


def test_a_deleted_lists_id_is_not_used_again_and_the_refusal_says_so() -> None:
    """A new list under the id would take in the deleted one's members (they stay recorded under it)."""
    fields = [CustomFieldDefinition(name="city")]
    deleted = ListState("acc", "news", "News", "double", {"city": "text"}, deleted=True)
    for name in ("News", "Other"):  # the deleted list's own settings again too: it does not come back
        with pytest.raises(domain.DeletedListId, match="'news' belonged to a list that was deleted") as refused:
            domain.create_list("acc", "news", name, "double", fields, deleted, live_lists=0)
        assert (refused.value.code, refused.value.http_status) == ("list_id_of_deleted_list", 409)
        assert not isinstance(refused.value, domain.ListAlreadyExists)


def test_a_custom_text_is_at_most_1000_characters_on_every_channel() -> None:
    lst = a_list(notes="text")
    for channel in ("api", "form", "import"):
        with pytest.raises(domain.InvalidCustomField, match="1,001 characters long; at most 1,000"):
            subscribe(lst, req=request(channel, custom_fields={"notes": "n" * 1001}))
    assert subscribe(lst, req=request("import", custom_fields={"notes": "n" * 1000})).outcome == "active"


def test_numbers_must_be_storable() -> None:
    """A number MongoDB cannot store would block the projection for every tenant."""
    lst = a_list(age="number")
    for bad in (10**30, -(2**63) - 1, float("nan"), float("inf")):
        with pytest.raises(domain.InvalidCustomField):
            subscribe(lst, req=request(custom_fields={"age": bad}))
    assert subscribe(lst, req=request(custom_fields={"age": 2**63 - 1})).outcome == "active"


def test_an_active_member_resubmitting_the_form_is_not_asked_again() -> None:
    assert subscribe(m=member("active"), suppressed=True, req=request("form")).events == []


def test_events_derived_from_one_cause_get_the_same_ids_when_decided_again() -> None:
    cause = ListCreated(account_id="acc", producer="delivery", payload={  # type: ignore[arg-type]
        "list_id": "l1", "name": "x", "opt_in": "single"})
    first = domain.suppress("acc", member("active"), False, "complaint", cause, "m1", "c1")
    again = domain.suppress("acc", member("active"), False, "complaint", cause, "m1", "c1")
    assert [e.event_id for e in first] == [e.event_id for e in again]
    assert len({e.event_id for e in first}) == 2


def test_the_customer_is_notified_only_as_the_list_asks_and_never_of_imports_own_calls_or_complaints() -> None:
    """PRODUCT.md: the customer is notified of subscribes and unsubscribes when it asked to be."""
    from dataclasses import replace

    from herald_shared.contract.subscriptions import ListNotificationsConfigured, MembershipNoticeRequested

    quiet = ListState("acc", "l1", "News", "double", {})
    [configured] = domain.configure_notifications(quiet, True, False)
    assert isinstance(configured, ListNotificationsConfigured)
    assert (configured.payload.subscribes, configured.payload.unsubscribes) == (True, False)
    both = replace(quiet, notify_subscribes=True, notify_unsubscribes=True)
    assert domain.configure_notifications(both, True, True) == []  # the same settings again
    with pytest.raises(domain.ListNotFound):
        domain.configure_notifications(replace(quiet, deleted=True), True, True)

    assert domain.membership_notice(quiet, "s1", "a@example.org", "subscribed", "form") == []  # not asked
    for change, how in (("subscribed", "double_opt_in"), ("subscribed", "form"), ("subscribed", "api"),
                        ("unsubscribed", "one_click"), ("unsubscribed", "unsubscribe_page"),
                        ("unsubscribed", "preference_page"), ("unsubscribed", "mailto")):
        [notice] = domain.membership_notice(both, "s1", "a@example.org", change, how)  # type: ignore[arg-type]
        assert isinstance(notice, MembershipNoticeRequested)
        assert (notice.payload.email, notice.payload.change, notice.payload.how, notice.payload.list_name) == (
            "a@example.org", change, how, "News")
    for change, how in (("subscribed", "import"), ("unsubscribed", "api"), ("unsubscribed", "complaint")):
        assert domain.membership_notice(both, "s1", "a@example.org", change, how) == [], how  # type: ignore[arg-type]
    assert domain.membership_notice(both, "s1", None, "subscribed", "form") == []  # no address known
    cause = domain.confirm("acc", a_list("double"), domain.MemberState("s1", "l1", "h", "pending"), None)[0][0]
    first = domain.membership_notice(both, "s1", "a@example.org", "unsubscribed", "mailto", cause)
    again = domain.membership_notice(both, "s1", "a@example.org", "unsubscribed", "mailto", cause)
    assert first[0].event_id == again[0].event_id  # decided again after a redelivery: the same notice
