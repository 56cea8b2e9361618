"""The review and schedule state machine, pure: who goes to staff review and why, what each state allows, send
times in named zones across DST, queueing once at the due time, cancellation, and what a report shows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from herald_campaigns import domain
from herald_campaigns.domain import AccountInfo, CampaignState, Draft, ListInfo
from herald_campaigns.screening import Match, Refusal, Screening
from herald_shared import correlation
from herald_shared.contract.billing import AccountApproved, AccountOpened, PlanChanged, SendingBlocked
from herald_shared.contract.campaigns import (
    CampaignApproved,
    CampaignCancelled,
    CampaignQueued,
    CampaignRejected,
    CampaignReturned,
    CampaignSubmitted,
    CampaignTestRequested,
)
from herald_shared.contract.compliance import AccountReinstated, AccountSuspended
from herald_shared.contract.delivery import DeliveryHeld
from herald_shared.contract.envelope import Event

NEWS = ListInfo("news", {"city": "text"})
DRAFT = Draft(name="November", list_id="news", subject="News for {{ first_name | default('you') }}",
              from_name="Acme", from_email="news@acme.example", html_body="<p>Hello {{ city }}</p>",
              segment={"city": "Riga"})
NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
CLEAN = Screening(matches=(), refusals=())
FLAGGED = Screening(matches=(Match(category="gambling", matched="online casino", where="html_body",
                                   rule="online casino"),), refusals=())
PAID = AccountInfo("acme", opened=True, approved=True, plan="monthly")
ACME = domain.Senders(verified=frozenset({"acme.example"}))  # the domain these drafts go From, verified


def fold(*events: Event, doc: dict[str, Any] | None = None) -> dict[str, Any]:
    for event in events:
        doc = domain.evolve(doc, event, event.occurred_at)
    assert doc is not None
    return doc


def draft_doc() -> dict[str, Any]:
    return fold(*domain.create("acme", "c1", DRAFT, NEWS, None, senders=ACME))


def submitted(account: AccountInfo | None = PAID, screening: Screening = CLEAN,
              send_at: datetime | None = None) -> tuple[Event, dict[str, Any]]:
    doc = draft_doc()
    [event] = domain.submit(domain.state_of(doc), "c1", NEWS, account, screening, send_at, None, NOW, "api",
                            senders=ACME)
    return event, fold(event, doc=doc)


@pytest.mark.parametrize(("account", "screening", "reasons"), [
    (PAID, CLEAN, []),
    (None, CLEAN, ["account_not_approved"]),
    (AccountInfo("acme", opened=True, approved=False, plan="monthly"), CLEAN, ["account_not_approved"]),
    (AccountInfo("acme", opened=True, approved=True), CLEAN, ["trial"]),
    (AccountInfo("acme", opened=True, approved=True, plan="trial"), CLEAN, ["trial"]),
    (AccountInfo("acme", opened=True, approved=False, plan="trial"), FLAGGED,
     ["account_not_approved", "trial", "flagged"]),
    (PAID, FLAGGED, ["flagged"]),
])
def test_who_goes_to_staff_review_and_why(account: AccountInfo | None, screening: Screening,
                                          reasons: list[str]) -> None:
    event, doc = submitted(account, screening)
    assert isinstance(event, CampaignSubmitted)
    assert event.payload.review_reasons == reasons
    assert event.payload.review_required is bool(reasons)
    assert doc["status"] == ("in_review" if reasons else "scheduled")
    assert [m.category for m in event.payload.screening] == [m.category for m in screening.matches]


def test_content_hiding_the_footer_is_refused_with_where_and_what() -> None:
    refused = Screening(matches=(), refusals=(Refusal(reason="hidden unsubscribe link", where="html_body",
                                                      matched='<a style="display:none"'),))
    with pytest.raises(domain.ContentRefused) as caught:
        domain.submit(domain.state_of(draft_doc()), "c1", NEWS, PAID, refused, None, None, NOW, "api", senders=ACME)
    assert caught.value.errors == [("body.html_body", 'hidden unsubscribe link (<a style="display:none")')]


def test_a_template_naming_a_field_the_list_no_longer_has_is_refused_at_submit_with_its_line() -> None:
    state = domain.state_of(draft_doc())
    with pytest.raises(domain.InvalidTemplate) as caught:
        domain.submit(state, "c1", ListInfo("news", {}), PAID, CLEAN, None, None, NOW, "api", senders=ACME)
    errors = caught.value.errors or []
    # the text part was derived from the HTML, merge tag and all
    assert [where for where, _ in errors] == ["body.html_body", "body.text_body"]
    assert all("line 1" in message and "city" in message for _, message in errors)
    with pytest.raises(domain.UnknownList):
        domain.submit(state, "c1", ListInfo("news", {"city": "text"}, deleted=True), PAID, CLEAN, None, None,
                      NOW, "api", senders=ACME)


def test_each_state_allows_only_its_transitions() -> None:
    _, scheduled = submitted()
    state = domain.state_of(scheduled)
    for refused in (lambda: domain.submit(state, "c1", NEWS, PAID, CLEAN, None, None, NOW, "api", senders=ACME),
                    lambda: domain.edit(state, "c1", DRAFT, NEWS, senders=ACME), lambda: domain.delete(state, "c1"),
                    lambda: domain.approve(state, "c1", "rita", None),
                    lambda: domain.reject(state, "c1", "rita", ["no"])):
        with pytest.raises(domain.WrongState):
            refused()
    assert domain.duplicate(state, "c1", "c2")  # any campaign can start a new draft


def test_staff_approve_into_the_schedule_or_reject_back_to_an_editable_campaign() -> None:
    _, in_review = submitted(None)
    [approved] = domain.approve(domain.state_of(in_review), "c1", "rita", "fine")
    assert isinstance(approved, CampaignApproved) and fold(approved, doc=dict(in_review))["status"] == "scheduled"
    [rejected] = domain.reject(domain.state_of(in_review), "c1", "rita", ["pharmacy offer"])
    assert isinstance(rejected, CampaignRejected)
    doc = fold(rejected, doc=dict(in_review))
    assert (doc["status"], doc["rejection"]) == ("rejected", ["pharmacy offer"])
    [edited] = domain.edit(domain.state_of(doc), "c1", Draft(**{**DRAFT.__dict__, "subject": "Fixed"}), NEWS,
                           senders=ACME)
    doc = fold(edited, doc=doc)
    assert doc["status"] == "draft"
    [again] = domain.submit(domain.state_of(doc), "c1", NEWS, PAID, CLEAN, None, None, NOW, "api", senders=ACME)
    assert fold(again, doc=doc)["status"] == "scheduled"


def test_staffs_approval_note_is_kept_for_the_customer_until_the_next_submission() -> None:
    """R3 #5: staff's note with an approval (a condition, a limit) reaches the author with the campaign."""
    _, in_review = submitted(None)
    assert in_review["review_note"] is None
    [approved] = domain.approve(domain.state_of(in_review), "c1", "rita", "licensed pharmacy: no POM adverts")
    doc = fold(approved, doc=dict(in_review))
    assert (doc["status"], doc["review_note"]) == ("scheduled", "licensed pharmacy: no POM adverts")
    [cancelled] = domain.cancel(domain.state_of(doc), "c1", "api", None)
    assert fold(cancelled, doc=dict(doc))["review_note"] == "licensed pharmacy: no POM adverts"
    [without] = domain.approve(domain.state_of(in_review), "c1", "rita", None)
    assert fold(without, doc=dict(in_review))["review_note"] is None


@pytest.mark.parametrize(("local", "zone", "utc"), [
    (datetime(2026, 12, 24, 9, 0), "Europe/Riga", datetime(2026, 12, 24, 7, 0, tzinfo=UTC)),  # EET, +2
    (datetime(2027, 6, 1, 9, 0), "Europe/Riga", datetime(2027, 6, 1, 6, 0, tzinfo=UTC)),  # EEST, +3
    (datetime(2027, 3, 28, 4, 30), "Europe/Riga", datetime(2027, 3, 28, 1, 30, tzinfo=UTC)),  # just after
    (datetime(2026, 12, 24, 9, 0), "America/New_York", datetime(2026, 12, 24, 14, 0, tzinfo=UTC)),
    (datetime(2026, 12, 24, 9, 0), None, datetime(2026, 12, 24, 9, 0, tzinfo=UTC)),
    (datetime(2026, 12, 24, 9, 0, tzinfo=UTC), None, datetime(2026, 12, 24, 9, 0, tzinfo=UTC)),
    (datetime(2026, 12, 24, 9, 0, tzinfo=timezone(timedelta(hours=3))), None,
     datetime(2026, 12, 24, 6, 0, tzinfo=UTC)),
])
def test_send_times_in_a_named_zone(local: datetime, zone: str | None, utc: datetime) -> None:
    assert domain.send_time(local, zone, NOW) == utc


def test_the_fall_back_hour_is_its_first_occurrence() -> None:
    # Riga, 31 Oct 2027: 04:00 EEST → 03:00 EET, so 03:30 comes twice; the first is 00:30 UTC.
    assert domain.send_time(datetime(2027, 10, 31, 3, 30), "Europe/Riga", NOW) == datetime(
        2027, 10, 31, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize(("local", "zone"), [
    (datetime(2027, 3, 28, 3, 30), "Europe/Riga"),  # clocks jump from 03:00 to 04:00: 03:30 never happens
    (datetime(2027, 3, 14, 2, 30), "America/New_York"),
    (datetime(2026, 12, 24, 9, 0), "Mars/Olympus"),
    (datetime(2026, 12, 24, 9, 0), "../../etc/passwd"),
    (datetime(2026, 12, 1, 9, 0), "Europe/Riga"),  # in the past
    (datetime(2030, 1, 1, 9, 0), "Europe"),  # a folder of the zone database, not a zone
    (datetime(9999, 12, 31, 23, 59, 59), "America/Los_Angeles"),  # after year 9999 in UTC
    (datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(-timedelta(hours=23, minutes=59))), None),
])
def test_send_times_that_do_not_exist_or_passed_are_refused(local: datetime, zone: str | None) -> None:
    with pytest.raises(domain.InvalidSchedule):
        domain.send_time(local, zone, NOW)


def test_a_send_time_with_an_offset_and_a_zone_is_refused_naming_both_fields() -> None:
    """R5 #7: until 2026-12-07 the zone was dropped without a word (`+03:00` and Europe/Riga: sent at +03:00)."""
    with pytest.raises(domain.InvalidSchedule) as caught:
        domain.send_time(datetime(2026, 12, 24, 9, 0, tzinfo=timezone(timedelta(hours=3))), "Europe/Riga", NOW)
    assert [where for where, _ in caught.value.errors or []] == ["body.send_at", "body.time_zone"]
    assert "offset" in str(caught.value) and "Europe/Riga" in str(caught.value)


@pytest.mark.parametrize("local", [datetime(2999, 1, 1, 9, 0), NOW.replace(tzinfo=None) + timedelta(days=366)])
def test_a_send_time_more_than_a_year_ahead_is_refused_naming_the_bound(local: datetime) -> None:
    """R5 #7: the year 2999 was scheduled."""
    with pytest.raises(domain.InvalidSchedule) as caught:
        domain.send_time(local, "UTC", NOW)
    assert "365 days" in str(caught.value) and (caught.value.errors or [])[0][0] == "body.send_at"
    at_the_bound = NOW + domain.SCHEDULE_HORIZON
    assert domain.send_time(at_the_bound.replace(tzinfo=None), None, NOW) == at_the_bound


def test_a_campaign_whose_list_was_deleted_after_its_submission_goes_back_to_draft_at_its_time() -> None:
    """R5 #3: it was queued to nobody and ended `done`, 0 sent, with no word to its author."""
    from herald_shared.contract.campaigns import CampaignReturned

    _, doc = submitted(send_at=NOW + timedelta(hours=1))
    state = domain.state_of(doc)
    gone = ListInfo("news", {"city": "text"}, deleted=True)
    assert domain.queue(state, NOW, senders=ACME, lst=gone) == []  # not due yet: nothing said before its time
    for lst in (gone, None):
        [returned] = domain.queue(state, NOW + timedelta(hours=1), senders=ACME, lst=lst)
        assert isinstance(returned, CampaignReturned) and returned.payload.reason == "list_deleted"
        assert "'news' was deleted" in returned.payload.detail
    back = fold(returned, doc=doc)
    assert (back["status"], back["send_at"], back["returned"]["reason"]) == ("draft", None, "list_deleted")
    assert domain.queue(domain.state_of(back), NOW + timedelta(hours=1), senders=ACME, lst=gone) == []


def test_a_scheduled_or_in_review_campaign_is_unscheduled_back_to_a_draft_and_submitted_again() -> None:
    """R5 #4: a scheduled campaign could only be cancelled for good, or duplicated under a new id."""
    from herald_shared.contract.campaigns import CampaignUnscheduled

    trial = AccountInfo("acme", opened=True, approved=True, plan="trial")
    _, in_review = submitted(trial, send_at=NOW + timedelta(days=2))
    [approved] = domain.approve(domain.state_of(in_review), "c1", "rita", "fine")
    for doc in (in_review, fold(approved, doc=dict(in_review))):
        [unscheduled] = domain.unschedule(domain.state_of(doc), "c1", "api", "wrong date")
        assert isinstance(unscheduled, CampaignUnscheduled)
        assert (unscheduled.payload.unscheduled_by, unscheduled.payload.reason) == ("api", "wrong date")
        back = fold(unscheduled, doc=dict(doc))
        assert (back["status"], back["send_at"], back["time_zone"]) == ("draft", None, None)
        state = domain.state_of(back)
        assert domain.unschedule(state, "c1", "api", None) == []  # the same request again
        assert domain.queue(state, NOW + timedelta(days=3), senders=ACME, lst=NEWS) == []  # never queued
        with pytest.raises(domain.WrongState):
            domain.approve(state, "c1", "rita", None)  # staff can no longer approve what left review
        # Edited, then submitted again: a trial account's goes to staff again, an earlier approval kept nothing.
        [edited] = domain.edit(state, "c1", Draft(**{**DRAFT.__dict__, "subject": "Fixed"}), NEWS, senders=ACME)
        back = fold(edited, doc=back)
        [again] = domain.submit(domain.state_of(back), "c1", NEWS, trial, CLEAN, NOW + timedelta(days=1), None,
                                NOW, "api", senders=ACME)
        resubmitted = fold(again, doc=back)
        assert (resubmitted["status"], resubmitted["send_at"]) == ("in_review", NOW + timedelta(days=1))
        assert resubmitted["content"]["subject"] == "Fixed"


def test_a_queued_done_rejected_or_cancelled_campaign_is_not_unscheduled() -> None:
    _, doc = submitted()
    [queued] = domain.queue(domain.state_of(doc), NOW, senders=ACME, lst=NEWS)
    queued_doc = fold(queued, doc=dict(doc))
    [cancelled] = domain.cancel(domain.state_of(queued_doc), "c1", "api", None)
    _, in_review = submitted(None)
    [rejected] = domain.reject(domain.state_of(in_review), "c1", "rita", ["no"])
    for stuck in (queued_doc, fold(cancelled, doc=dict(queued_doc)), fold(rejected, doc=dict(in_review)),
                  {**queued_doc, "status": "done"}):
        with pytest.raises(domain.WrongState) as caught:
            domain.unschedule(domain.state_of(stuck), "c1", "api", None)
        assert "cancel it instead" in str(caught.value)
    # Folded late (a replay), an unscheduling changes no campaign that moved on.
    from herald_shared.contract.campaigns import CampaignUnscheduled
    late = CampaignUnscheduled(account_id="acme", producer="campaigns", payload={  # type: ignore[arg-type]
        "campaign_id": "c1", "unscheduled_by": "api"})
    assert fold(late, doc=dict(queued_doc))["status"] == "queued"


def test_delivery_takes_an_unscheduling_as_nothing_of_its_own() -> None:
    """Delivery folds every event of herald.campaigns into its campaign state: an unscheduled campaign was never
    queued, and its state there stays as it was (an approval before it judged content edited since, but
    campaigns queues nothing until a new submission is approved again)."""
    from herald_delivery.domain import CampaignState as DeliveryCampaign
    from herald_delivery.domain import evolve_campaign
    from herald_shared.contract.campaigns import CampaignUnscheduled

    late = CampaignUnscheduled(account_id="acme", producer="campaigns", payload={  # type: ignore[arg-type]
        "campaign_id": "c1", "unscheduled_by": "api", "reason": "typo"})
    for state in (DeliveryCampaign("c1"), DeliveryCampaign("c1", approved=True)):
        assert evolve_campaign(state, late) == state


def test_a_scheduled_campaign_is_queued_once_at_its_time_with_all_delivery_needs() -> None:
    at = NOW + timedelta(hours=2)
    _, doc = submitted(send_at=at)
    state = domain.state_of(doc)
    assert domain.queue(state, NOW, senders=ACME, lst=NEWS) == []  # not yet
    [queued] = domain.queue(state, at, senders=ACME, lst=NEWS)
    assert isinstance(queued, CampaignQueued)
    [again] = domain.queue(state, at + timedelta(seconds=5), senders=ACME, lst=NEWS)
    assert queued.event_id == again.event_id  # the same decision after a crash is the same event
    p = queued.payload
    assert (p.campaign_id, p.list_id, p.segment.field_equals, p.send_at, p.review_required) == (
        "c1", "news", {"city": "Riga"}, at, False)
    assert p.content.subject == DRAFT.subject
    doc = fold(queued, doc=doc)
    assert doc["status"] == "queued" and domain.queue(domain.state_of(doc), at, senders=ACME, lst=NEWS) == []


def test_the_scheduler_queues_or_returns_a_campaign_in_its_submissions_flow_caused_by_what_scheduled_it() -> None:
    """README "Every answer names its request": the scheduler queues out of any request, yet a CampaignQueued (or
    the CampaignReturned of one that can no longer go) carries the submission request's id, the customer's handle
    on the whole campaign, and names as its cause the submission, or staff's approval when it went to review."""
    request, review = uuid.uuid4(), uuid.uuid4()
    with correlation.flow(request):
        direct, doc = submitted()
    [queued] = domain.queue(domain.state_of(doc), NOW, senders=ACME, lst=NEWS)
    assert (queued.correlation_id, queued.causation_id) == (request, direct.event_id)
    [returned] = domain.queue(domain.state_of(doc), NOW, senders=ACME, lst=None)
    assert isinstance(returned, CampaignReturned)
    assert (returned.correlation_id, returned.causation_id) == (request, direct.event_id)

    with correlation.flow(request):
        to_review, doc = submitted(screening=FLAGGED)
    with correlation.flow(review):
        [approved] = domain.approve(domain.state_of(doc), "c1", "rita", None)
    assert approved.correlation_id == review
    [queued] = domain.queue(domain.state_of(fold(approved, doc=doc)), NOW, senders=ACME, lst=NEWS)
    assert (queued.correlation_id, queued.causation_id) == (request, approved.event_id) != (request, to_review.event_id)


def test_a_campaign_scheduled_before_its_flow_was_kept_is_queued_in_none() -> None:
    _, doc = submitted()
    older = {k: v for k, v in doc.items() if k not in ("flow", "scheduled_by")}
    [queued] = domain.queue(domain.state_of(older), NOW, senders=ACME, lst=NEWS)
    assert (queued.correlation_id, queued.causation_id) == (None, None)


def test_cancel_before_or_during_sending_not_a_draft() -> None:
    _, doc = submitted()
    [queued] = domain.queue(domain.state_of(doc), NOW, senders=ACME, lst=NEWS)
    doc = fold(queued, doc=doc)
    [cancelled] = domain.cancel(domain.state_of(doc), "c1", "api", "typo")
    assert isinstance(cancelled, CampaignCancelled)
    doc = fold(cancelled, doc=doc)
    assert doc["status"] == "cancelled"
    assert domain.cancel(domain.state_of(doc), "c1", "api", None) == []  # the same request again
    assert domain.queue(domain.state_of(doc), NOW, senders=ACME, lst=NEWS) == []
    with pytest.raises(domain.WrongState):
        domain.cancel(domain.state_of(draft_doc()), "c1", "api", None)


def test_an_approval_after_a_cancellation_changes_nothing() -> None:
    _, in_review = submitted(None)
    [cancelled] = domain.cancel(domain.state_of(in_review), "c1", "api", None)
    [approved] = domain.approve(domain.state_of(in_review), "c1", "rita", None)
    assert fold(cancelled, approved, doc=dict(in_review))["status"] == "cancelled"


def test_a_test_send_goes_to_at_most_five_distinct_addresses() -> None:
    state = domain.state_of(draft_doc())
    [event] = domain.test_send(state, "c1", NEWS, ["A@x.example", "a@x.example", "b@x.example"],
                               {"first_name": "Anna"}, "api", "t1", CLEAN, senders=ACME)
    assert isinstance(event, CampaignTestRequested)
    assert event.payload.recipients == ["a@x.example", "b@x.example"]
    with pytest.raises(domain.WrongState):
        domain.test_send(state, "c1", NEWS, [f"{i}@x.example" for i in range(6)], {}, "api", "t2", CLEAN, senders=ACME)


def test_a_test_send_is_refused_what_a_submission_is_refused_but_not_held_for_what_it_flags() -> None:
    """Tests are messages too: content hiding the footer is refused (422) as at submission; a flag for staff
    review (gambling) holds no test to the account's own addresses (tests are how a campaign is prepared for
    review; who else may get one: `domain.check_test_recipients`, test_test_recipients.py)."""
    state = domain.state_of(draft_doc())
    hidden = Screening(matches=(), refusals=(Refusal(reason="This element hides its content (display:none)",
                                                     matched="display:none", where="html_body"),))
    with pytest.raises(domain.ContentRefused, match="hides its content"):
        domain.test_send(state, "c1", NEWS, ["a@x.example"], {}, "api", "t1", hidden, senders=ACME)
    [event] = domain.test_send(state, "c1", NEWS, ["a@x.example"], {}, "api", "t2", FLAGGED, senders=ACME)
    assert isinstance(event, CampaignTestRequested)


def account_doc(*events: Event) -> dict[str, Any] | None:
    doc = None
    for event in events:
        doc = domain.evolve_account(doc, event)
    return doc


def billing(cls: type[Event], **payload: Any) -> Event:
    return cls(account_id="acme", producer="billing", payload=payload)  # type: ignore[call-arg]


def test_the_account_fold_knows_approval_trial_suspension_and_blocks() -> None:
    opened = billing(AccountOpened, company_name="Acme", registered_email="ops@acme.example", main_username="anna",
                     terms_accepted_at=NOW)
    info = domain.account_info(account_doc(opened))
    assert info is not None and info.on_trial and not info.approved
    paid = billing(PlanChanged, plan="monthly", tier_subscriber_limit=1000, effective_at=NOW)
    info = domain.account_info(account_doc(opened, billing(AccountApproved, reviewer="rita"), paid))
    assert info is not None and info.approved and not info.on_trial
    suspended = AccountSuspended(account_id="acme", producer="compliance", payload={  # type: ignore[arg-type]
        "metric": "abuse_rate", "value": 0.01, "threshold": 0.005, "reason": "complaints above 0.5%"})
    info = domain.account_info(account_doc(opened, suspended, billing(SendingBlocked, reason="payment_failed")))
    assert info is not None and info.suspended and info.blocked == ("payment_failed",)


def test_a_reinstatement_lifts_only_the_suspension_it_names() -> None:
    """PRODUCT.md, "Sending suspension": it holds until staff lift it; a reinstatement of an earlier suspension,
    arriving (again) after a newer one, changes nothing, as compliance and delivery read it."""
    def suspension() -> Event:
        return AccountSuspended(account_id="acme", producer="compliance", payload={  # type: ignore[arg-type]
            "metric": "abuse_rate", "value": 0.01, "threshold": 0.005, "reason": "complaints above 0.5%"})

    def reinstatement(suspension_event_id: str | None) -> Event:
        return AccountReinstated(account_id="acme", producer="compliance", payload={  # type: ignore[arg-type]
            "reinstated_by": "rita", "reason": "fixed", "suspension_event_id": suspension_event_id})

    first, second = suspension(), suspension()
    lifts_first = reinstatement(str(first.event_id))
    info = domain.account_info(account_doc(first, lifts_first, second, lifts_first))
    assert info is not None and info.suspended
    info = domain.account_info(account_doc(first, lifts_first, second, reinstatement(str(second.event_id))))
    assert info is not None and not info.suspended
    info = domain.account_info(account_doc(first, second, reinstatement(None)))  # unnamed: the one in force
    assert info is not None and not info.suspended


def test_a_report_shows_held_suspended_sending_or_queued_once_queued() -> None:
    _, doc = submitted()
    [queued] = domain.queue(domain.state_of(doc), NOW, senders=ACME, lst=NEWS)
    doc = fold(queued, doc=doc)
    assert domain.display_state(doc, PAID, 0) == "queued"
    assert domain.display_state(doc, PAID, 10) == "sending"
    held = DeliveryHeld(account_id="acme", producer="delivery", payload={  # type: ignore[arg-type]
        "campaign_id": "c1", "gate": "account_review", "reason": "not approved", "messages_held": 10})
    doc = fold(held, doc=doc)
    assert domain.display_state(doc, AccountInfo("acme", opened=True, plan="monthly"), 0) == "held"
    assert domain.display_state(doc, PAID, 0) == "queued"  # approved since: the gate is open again
    assert domain.display_state(doc, AccountInfo("acme", approved=True, suspended=True), 5) == "suspended"
    assert domain.display_state(draft_doc(), PAID, 0) == "draft"
    # Held at the send allowance (the trial's 100 sent): held while billing's block for that quota stands.
    at_quota = fold(DeliveryHeld(account_id="acme", producer="delivery", payload={  # type: ignore[arg-type]
        "campaign_id": "c1", "gate": "send_allowance", "reason": "allowance sent", "messages_held": 3}), doc=doc)
    assert domain.display_state(at_quota, AccountInfo("acme", approved=True, blocked=("trial_emails",)), 100) == "held"
    assert domain.display_state(at_quota, PAID, 100) == "sending"  # credits bought or a plan chosen since


def test_a_report_counts_no_test_message() -> None:
    sent = {"message_id": "m1", "kind": "test", "campaign_id": "c1", "recipient_domain": "x.example",
            "smtp_code": 250}
    from herald_shared.contract.delivery import MessageSent
    assert domain.report_campaign(MessageSent(account_id="acme", producer="delivery", payload=sent)) is None  # type: ignore[arg-type]


def test_state_of_reads_what_the_fold_wrote() -> None:
    _, doc = submitted(None, FLAGGED, NOW + timedelta(days=1))
    state: CampaignState = domain.state_of(doc)
    assert (state.status, state.send_at, state.review_reasons) == ("in_review", NOW + timedelta(days=1),
                                                                   ("account_not_approved", "flagged"))
    assert state.screening[0]["category"] == "gambling"


def finished(**counts: int) -> Event:
    from herald_shared.contract.delivery import CampaignDeliveryFinished
    return CampaignDeliveryFinished(account_id="acme", producer="delivery", payload={  # type: ignore[arg-type]
        "campaign_id": "c1", **{"recipients": 10, "sent": 7, "bounced": 1, "skipped": 1, "failed": 0,
                                "cancelled": 1, **counts}})


def test_a_queued_campaign_delivery_finished_with_completes_once_with_its_counts() -> None:
    from herald_shared.contract.campaigns import CampaignCompleted
    _, doc = submitted()
    [queued] = domain.queue(domain.state_of(doc), NOW, senders=ACME, lst=NEWS)
    assert domain.complete(fold(queued, doc=doc)) == []  # delivery has not finished
    doc = fold(queued, finished(), doc=doc)
    [completed] = domain.complete(doc)
    assert isinstance(completed, CampaignCompleted)
    # v1's `failed` kept (every message neither sent nor bounced: a consumer of before still reads recipients =
    # sent + bounced + failed), skipped and cancelled named as parts of it.
    assert completed.model_dump()["payload"] == {"campaign_id": "c1", "recipients": 10, "sent": 7, "bounced": 1,
                                                 "failed": 2, "skipped": 1, "cancelled": 1}
    assert domain.complete(doc)[0].event_id == completed.event_id  # decided again after a crash: the same event
    doc = fold(completed, doc=doc)
    assert doc["status"] == "done" and domain.complete(doc) == []
    assert domain.display_state(doc, PAID, 7) == "done"
    with pytest.raises(domain.WrongState):
        domain.cancel(domain.state_of(doc), "c1", "api", None)


def test_delivery_finishing_before_the_queueing_is_folded_still_completes_and_a_cancelled_one_stays_so() -> None:
    _, doc = submitted()
    [queued] = domain.queue(domain.state_of(doc), NOW, senders=ACME, lst=NEWS)
    early = fold(finished(), queued, doc=dict(doc))  # delivery's event folded first (another topic)
    assert len(domain.complete(early)) == 1
    [cancelled] = domain.cancel(domain.state_of(fold(queued, doc=dict(doc))), "c1", "api", None)
    stopped = fold(queued, cancelled, finished(sent=3, cancelled=6), doc=dict(doc))
    assert stopped["status"] == "cancelled" and domain.complete(stopped) == []
    assert stopped["delivery"]["cancelled"] == 6
