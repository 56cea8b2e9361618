"""The sender's handling of one job, with an in-memory store and relay: render failures are recorded, test
sends are sent as tests or refused while the account may not send."""

from __future__ import annotations

import email
import email.policy

import pytest

from herald_delivery.domain import AccountState, Member, SmtpReply
from herald_shared.contract.delivery import CampaignDeliveryFinished, MessageSent
from tests.unit.delivery.helpers import CONTENT, T0, Relay, campaign_job, job_of_test_send, sender


async def test_a_render_limit_hit_by_one_member_is_recorded_for_that_member_and_the_rest_are_sent() -> None:
    """A member whose values make the render exceed its limits is recorded (skipped: render_failed, with why),
    never sent, never retried; the next member is sent as usual."""
    send, store, publisher = sender(AccountState("acme", approved=True))
    relay = Relay()
    huge = Member("s1", "news", "huge@example.org", "active", custom_fields={"bio": "x" * 2_000_001})
    fine = Member("s2", "news", "fine@example.org", "active", first_name="Ann", custom_fields={"bio": "hi"})
    for job, member in ((campaign_job("m1", "s1"), huge), (campaign_job("m2", "s2"), fine)):
        send._jobs.push([job])
        await send._deliver(job, member, relay)  # type: ignore[arg-type]
    skipped, sent = store.recorded
    assert (skipped["message_id"], skipped["outcome"], skipped["reason"]) == ("m1", "skipped", "render_failed")
    assert "longer than 2,000,000" in skipped["detail"]
    assert (sent["message_id"], sent["outcome"]) == ("m2", "sent")
    assert relay.recipients == ["fine@example.org"]
    assert [type(e) for e in publisher.events] == [MessageSent]
    assert "m1" not in send._jobs and "m2" not in send._jobs


async def test_a_test_send_goes_out_marked_before_the_account_is_approved_and_counts_as_a_test() -> None:
    """Review holds campaigns, not tests: a test is how a campaign is prepared for review."""
    send, store, publisher = sender(AccountState("acme", approved=False))
    relay = Relay()
    job = job_of_test_send("tm1", "owner@acme.example")
    send._jobs.push([job])
    await send._deliver(job, None, relay)  # type: ignore[arg-type]
    (recipient, data), = relay.sent
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert recipient == "owner@acme.example" and message["X-Herald-Test"] == "yes"
    assert message["Subject"] == "[Test] News for Sample"
    event, = publisher.events
    assert [(o["message_id"], o["outcome"]) for o in store.recorded] == [("tm1", "sent")]
    assert isinstance(event, MessageSent) and event.payload.kind == "test"
    assert event.payload.campaign_id == "c1" and event.payload.subscriber_id is None


async def test_a_suspended_or_blocked_account_cannot_send_tests() -> None:
    """A suspended account must not use test sends to mail people: the test is refused (recorded), not held."""
    for account, reason in ((AccountState("acme", approved=True, suspended=True), "account_suspended"),
                            (AccountState("acme", approved=True, blocked_reasons=frozenset({"payment_failed"})),
                             "sending_blocked")):
        send, store, publisher = sender(account)
        relay = Relay()
        job = job_of_test_send("tm1", "owner@acme.example")
        send._jobs.push([job])
        await send._deliver(job, None, relay)  # type: ignore[arg-type]
        assert relay.sent == [] and publisher.events == []
        assert [(o["outcome"], o["reason"]) for o in store.recorded] == [("skipped", reason)]
        assert len(send._jobs) == 0


def test_no_gate_parks_a_test_job() -> None:
    """Held messages wait for the gate to open; a test is refused when it comes up instead (above)."""
    send, _, _ = sender(AccountState("acme", approved=False, suspended=True))
    assert send._gate_of(job_of_test_send("tm1", "owner@acme.example")) is None
    assert send._gate_of(campaign_job("m1", "s1")) == "account_suspended"


async def test_the_end_of_a_campaign_is_announced_after_its_last_outcome_event_and_counts_skips() -> None:
    """Every outcome event of a campaign comes before its CampaignDeliveryFinished in the topic."""
    send, _, publisher = sender(AccountState("acme", approved=True), completion=True)
    assert send._completion is not None
    await send._completion.ledger_loaded({})
    relay = Relay()
    jobs = [campaign_job("m1", "s1"), campaign_job("m2", "s2")]
    send._jobs.push(jobs)
    await send._completion.expanded("acme", "c1", 2, "t")
    await send._deliver(jobs[0], Member("s1", "news", None, "unsubscribed"), relay)  # type: ignore[arg-type]
    assert publisher.events == []
    await send._deliver(jobs[1], Member("s2", "news", "b@example.org", "active"), relay)  # type: ignore[arg-type]
    sent, end = publisher.events
    assert isinstance(sent, MessageSent) and isinstance(end, CampaignDeliveryFinished)
    assert (end.payload.recipients, end.payload.sent, end.payload.skipped) == (2, 1, 1)


def test_an_unannounced_outcome_says_what_the_relay_answered_and_why_it_has_no_event() -> None:
    """The record of an attempt whose event could not be made: final, as the relay answered, the next attempt
    number, and a reason the store can keep (a NUL in an exception's text would be refused for good)."""
    from herald_delivery.sender import unannounced_outcome

    job = {"_id": "m1", "account_id": "acme", "campaign_id": "c1", "kind": "campaign", "attempts": 1,
           "first_attempt_at": T0}
    sent = unannounced_outcome(job, SmtpReply(250, "2.0.0 queued as 4FE"), "ValueError: odd\0text")
    assert (sent["_id"], sent["attempt"], sent["outcome"], sent["final"], sent["first_attempt_at"]) == (
        "m1:2", 2, "sent", True, T0)
    assert sent["reason"] == "outcome event not made (ValueError: odd text)" and "bounce_class" not in sent
    refused = unannounced_outcome({**job, "attempts": 0, "first_attempt_at": None}, SmtpReply(554, "no"), "x" * 5000)
    assert (refused["outcome"], refused["bounce_class"], refused["smtp_code"]) == ("bounced", "undetermined", 554)
    assert len(refused["reason"]) == 2000 and refused["first_attempt_at"] == refused["recorded_at"]


async def test_compiled_campaigns_are_bounded_and_a_purged_accounts_leave_memory(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that has sent for months keeps only the most recently used campaigns compiled; a purge
    (AccountPurged) leaves none of the account's content, lists or bucket in memory."""
    from herald_delivery import sender as sender_module

    monkeypatch.setattr(sender_module, "TEMPLATES_KEPT", 3)
    send, store, _ = sender(AccountState("acme", approved=True))
    send._gates.accounts["other"] = AccountState("other", approved=True)
    for n in range(5):
        store.campaigns[f"acme:c{n}"] = store.campaigns[f"other:c{n}"] = {"content": CONTENT}
    for n in (0, 1, 2):
        await send._template("acme", f"c{n}")
    await send._template("acme", "c0")  # used again: the most recent
    await send._template("other", "c3")
    assert [key for key, _ in send._templates] == ["acme:c2", "acme:c0", "other:c3"]
    send._deleted_lists |= {("acme", "news"), ("other", "news")}
    send._lists_checked.update({("acme", "offers"): 1.0, ("other", "offers"): 1.0})
    send.forget_account("acme")
    assert [key for key, _ in send._templates] == ["other:c3"]
    assert send._deleted_lists == {("other", "news")} and list(send._lists_checked) == [("other", "offers")]
