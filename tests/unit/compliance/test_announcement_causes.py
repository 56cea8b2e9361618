"""What compliance announces carries the flow of the event that caused it (README, "Every answer names its
request"): a suspension or a warning the `correlation_id` of the bounce, complaint or unsubscribe that tipped its
rate, and that event's id as its `causation_id`; one-off sending the event about the new list it was found on."""

from __future__ import annotations

import uuid
from typing import Any

from herald_shared.contract import Event
from herald_shared.contract.compliance import AccountSuspended, AccountWarned
from herald_shared.contract.delivery import ComplaintReceived, MessageBounced, MessageSent
from herald_shared.contract.subscriptions import SubscriberAdded
from tests.unit.compliance import helpers
from tests.unit.compliance.helpers import T0, Account, env

FLOW, OTHER = uuid.uuid4(), uuid.uuid4()


def sent(i: int, campaign: str, flow: uuid.UUID | None) -> MessageSent:
    return MessageSent(**env(T0), correlation_id=flow, payload={
        "message_id": f"{campaign}-m{i}", "campaign_id": campaign, "subscriber_id": f"s{i}", "list_id": "l1",
        "recipient_domain": "example.com", "smtp_code": 250})


def bounced(i: int, campaign: str, flow: uuid.UUID | None) -> MessageBounced:
    return MessageBounced(**env(T0), correlation_id=flow, payload={
        "message_id": f"{campaign}-m{i}", "campaign_id": campaign, "subscriber_id": f"s{i}", "list_id": "l1",
        "bounce_class": "hard", "smtp_code": 550, "diagnostic": "5.1.1", "source": "smtp_reply"})


def complained(i: int, campaign: str, flow: uuid.UUID | None) -> ComplaintReceived:
    return ComplaintReceived(**env(T0), correlation_id=flow, payload={
        "message_id": f"{campaign}-m{i}", "campaign_id": campaign, "subscriber_id": f"s{i}", "list_id": "l1",
        "feedback_type": "abuse", "reporting_domain": "mail.example.net"})


def added(i: int, flow: uuid.UUID) -> SubscriberAdded:
    return SubscriberAdded(**env(T0), correlation_id=flow, payload={
        "list_id": "l2", "subscriber_id": f"x{i}", "email": f"x{i}@example.com", "email_sha256": f"{i:064x}",
        "opt_in": "single", "consent": {"source": "import", "collected_at": "2026-11-01T00:00:00Z", "method": "t"}})


def announced(decision: Any, kind: type[Event]) -> list[Any]:
    return [e for e in decision.announcements if isinstance(e, kind)]


def test_a_suspension_carries_the_flow_of_the_bounce_that_breached_and_names_it_as_its_cause() -> None:
    account = Account()
    # Another campaign's sends and an unrelated list's member in the same batch, after the breaching bounces:
    # the cause is the last bounce of the breaching rate, not the last event read.
    bounces = [bounced(i, "c1", FLOW) for i in range(8)]
    decision = account.decision(*(sent(i, "c1", FLOW) for i in range(100)), *bounces,
                              *(sent(i, "c2", OTHER) for i in range(5)), added(1, OTHER))
    [suspension] = announced(decision, AccountSuspended)
    assert suspension.payload.metric == "hard_bounce_rate"
    assert (suspension.correlation_id, suspension.causation_id) == (FLOW, bounces[-1].event_id)


def test_a_cause_without_a_correlation_is_the_first_of_its_flow_and_gives_its_id() -> None:
    account = Account()
    decision = account.decision(*(sent(i, "c1", None) for i in range(100)), *(bounced(i, "c1", None) for i in range(8)))
    [suspension] = announced(decision, AccountSuspended)
    assert suspension.causation_id is not None and suspension.correlation_id == suspension.causation_id


def test_a_campaigns_rate_is_caused_by_that_campaigns_fact_and_a_warning_carries_its_cause_too() -> None:
    """Gmail's and Yahoo's spam-rate levels warn before the threshold: the warning names the complaint."""
    account = Account()
    complaint = complained(1, "c1", FLOW)
    decision = account.decision(*(sent(i, "c1", FLOW) for i in range(1000)), complaint,
                              *(sent(i, "c2", OTHER) for i in range(3)))
    warnings = announced(decision, AccountWarned)
    assert warnings and not announced(decision, AccountSuspended)
    assert {(w.correlation_id, w.causation_id) for w in warnings} == {(FLOW, complaint.event_id)}


def test_one_off_sending_carries_the_flow_of_the_event_about_the_new_list() -> None:
    account = helpers.Account()
    people = range(100)
    account.run(helpers.new_list("jan", people, helpers.T0), helpers.blast("jan", "c-jan", people,
                                                                           helpers.T0 + helpers.HOUR),
                helpers.deleted("jan", helpers.T0 + 3 * helpers.HOUR))
    again = [e.model_copy(update={"correlation_id": FLOW})
             for e in helpers.new_list("feb", people, helpers.T0 + 4 * helpers.HOUR)]
    [warning] = account.decide(*again)
    assert warning.payload.metric == "one_off_sending"
    assert warning.correlation_id == FLOW and warning.causation_id in {e.event_id for e in again[1:]}

