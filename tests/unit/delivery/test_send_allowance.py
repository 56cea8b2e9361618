"""The send allowance as delivery keeps it (PRODUCT.md, "Plans and billing": the trial's 100 emails, a credit per
email): billing's `remaining`, less what this sender sent of the counted kinds since billing's count, less what is
in flight, must leave room for one before a message starts its SMTP transaction; otherwise the message is held."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from herald_delivery import domain
from herald_delivery.domain import AccountState, Member, SendAllowance, SmtpReply
from herald_delivery.handlers import GateBook, account_until_stored
from herald_shared.contract.billing import SendAllowanceChanged
from herald_shared.contract.delivery import MessageBounced, MessageDeferred, MessageSent
from herald_shared.sent import email_sent
from tests.unit.delivery.helpers import T0, Relay, job_of_test_send, sender

TRIAL = ("campaign", "test")
PAID = ("campaign",)


def campaign_job(message_id: str, subscriber_id: str) -> dict[str, Any]:
    return {"_id": message_id, "account_id": "acme", "kind": "campaign", "campaign_id": "c1",
            "subscriber_id": subscriber_id, "list_id": "news", "attempts": 0, "next_attempt_at": T0}


def member(n: int) -> Member:
    return Member(f"s{n}", "news", f"r{n}@example.org", "active", custom_fields={"bio": "hi"})


class ScriptedRelay(Relay):
    """Answers each recipient as scripted (else 250)."""

    def __init__(self, answers: dict[str, SmtpReply]) -> None:
        super().__init__()
        self.answers = answers

    async def send(self, mail_from: str, recipient: str, data: bytes) -> SmtpReply:
        await super().send(mail_from, recipient, data)
        return self.answers.get(recipient, SmtpReply(250, "2.0.0 OK"))


def test_room_is_billings_remaining_less_own_sends_since_its_count_less_those_in_flight() -> None:
    allowance = SendAllowance(10, TRIAL, as_of_campaign=40, as_of_test=2, sequence=3)
    assert domain.allowance_room(allowance, {"campaign": 40, "test": 2}, {}, None) == 10
    assert domain.allowance_room(allowance, {"campaign": 45, "test": 3}, {"campaign": 2}, None) == 2
    # Sends billing counted already but this sender does not know of (a count lost) take nothing twice.
    assert domain.allowance_room(allowance, {"campaign": 30}, {}, None) == 10
    assert domain.allowance_room(None, {"campaign": 500}, {}, None) is None  # no allowance yet: not limited here
    assert domain.allowance_room(SendAllowance(None, PAID), {"campaign": 500}, {}, None) is None


def test_only_the_kinds_billing_counts_take_from_it() -> None:
    """On the trial a test send counts toward the 100; on a paid plan tests are free, and never held by it."""
    spent_trial = SendAllowance(5, TRIAL, as_of_campaign=0, as_of_test=0, sequence=1)
    assert domain.allowance_room(spent_trial, {"campaign": 3, "test": 2}, {}, None) == 0
    assert domain.allowance_holds(spent_trial, "test", {"campaign": 3, "test": 2}, {}, None)
    paid = SendAllowance(5, PAID, sequence=2)
    assert domain.allowance_room(paid, {"campaign": 3, "test": 200}, {}, None) == 2
    assert not domain.allowance_holds(SendAllowance(0, PAID), "test", {}, {}, None)
    assert domain.allowance_holds(SendAllowance(0, PAID), "campaign", {}, {}, None)


def test_nothing_counted_starts_from_the_allowances_until_on() -> None:
    """Credits expiring or a trial ending stop sending when they fall due, not at billing's next look at its clock:
    from `until` on no room is left, whatever the counts say, until billing tells a newer allowance."""
    expiring = SendAllowance(50, PAID, sequence=2, until=T0 + timedelta(hours=1))
    assert domain.allowance_room(expiring, {}, {}, T0) == 50
    assert domain.allowance_room(expiring, {}, {}, T0 + timedelta(minutes=59, seconds=59)) == 50
    assert domain.allowance_room(expiring, {}, {}, T0 + timedelta(hours=1)) == 0
    assert domain.allowance_holds(expiring, "campaign", {}, {}, T0 + timedelta(hours=1))
    assert not domain.allowance_holds(expiring, "test", {}, {}, T0 + timedelta(hours=2))  # tests are free here
    assert domain.allowance_room(SendAllowance(None, PAID, until=T0), {}, {}, T0 + timedelta(days=1)) is None
    now = [T0]
    gates = GateBook(clock=lambda: now[0])
    gates.accounts["acme"] = AccountState("acme", approved=True, allowance=expiring)
    assert gates.gate_for("acme", "c1") is None and gates.reserve("acme", "campaign") is True
    now[0] = T0 + timedelta(hours=1)
    assert gates.gate_for("acme", "c1") == "send_allowance" and gates.reserve("acme", "campaign") is False
    assert "allowed until" in domain.gate_reason("send_allowance", gates.account("acme"))


def test_an_allowance_waiting_to_be_stored_keeps_the_earlier_end() -> None:
    """A larger allowance ending later holds only once stored; meanwhile the one in force ends when it ends, and a
    staged one ending sooner ends it sooner."""
    current = AccountState("acme", approved=True, allowance=SendAllowance(50, PAID, sequence=4, until=T0))
    later = AccountState("acme", approved=True, allowance=SendAllowance(500, PAID, sequence=5,
                                                                          until=T0 + timedelta(days=30)))
    assert account_until_stored(current, later, {}).allowance == current.allowance
    sooner = AccountState("acme", approved=True, allowance=SendAllowance(500, PAID, sequence=5,
                                                                           until=T0 - timedelta(hours=1)))
    assert current.allowance is not None
    assert account_until_stored(current, sooner, {}).allowance == replace(current.allowance,
                                                                          until=T0 - timedelta(hours=1))
    unlimited = AccountState("acme", approved=True, allowance=SendAllowance(None, PAID, sequence=5))
    assert account_until_stored(current, unlimited, {}).allowance == current.allowance


def test_what_billing_counts_as_sent_is_what_the_allowance_counts() -> None:
    """One definition for both (`herald_shared.sent`): billing's quotas and delivery's allowance cannot drift."""
    ref = {"message_id": "m1", "kind": "campaign", "campaign_id": "c1", "subscriber_id": "s1"}
    envelope: dict[str, Any] = {"account_id": "acme", "producer": "delivery"}
    sent = MessageSent(**envelope, payload={**ref, "recipient_domain": "example.org", "smtp_code": 250})
    refused = MessageBounced(**envelope, payload={**ref, "bounce_class": "hard", "source": "smtp_reply",
                                                      "diagnostic": "550 5.1.1 no such user"})
    local = MessageBounced(**envelope, payload={**ref, "bounce_class": "undetermined", "source": "local",
                                                    "diagnostic": "no SMTPUTF8"})
    given_up = MessageBounced(**envelope, payload={**ref, "bounce_class": "soft", "source": "retry_expired",
                                                       "diagnostic": "gave up"})
    deferred = MessageDeferred(**envelope, payload={**ref, "attempt": 1, "next_attempt_at": T0,
                                                    "diagnostic": "451 try later"})
    notice = MessageSent(**envelope, payload={"message_id": "n1", "kind": "account_notice",
                                              "recipient_domain": "acme.example", "smtp_code": 250})
    assert [email_sent(e) for e in (sent, refused, local, given_up, deferred, notice, None)] == [
        True, True, False, False, False, False, False]


def test_reservations_end_with_the_outcome_counted_or_given_back() -> None:
    gates = GateBook()
    gates.accounts["acme"] = AccountState("acme", approved=True, allowance=SendAllowance(2, PAID, sequence=1))
    first, second = gates.reserve("acme", "campaign"), gates.reserve("acme", "campaign")
    assert (first, second, gates.reserve("acme", "campaign")) == (True, True, False)
    assert gates.gate_for("acme", "c1") == "send_allowance"
    gates.changed.clear()
    assert gates.settle("acme", "campaign", first, counted=False) is None  # deferred: given back
    assert gates.changed.is_set() and gates.room("acme") == 1
    assert gates.settle("acme", "campaign", second, counted=True) == 1  # sent: counted
    assert gates.room("acme") == 1 and "acme" not in gates.in_flight
    assert gates.reserve("acme", "account_notice") is None  # never counted, never limited
    assert gates.reserve("acme", "test") is None  # not a kind this allowance counts


def test_own_counts_never_fall_below_billings_and_a_read_back_count_never_lowers_them() -> None:
    gates = GateBook()
    gates.note_sent("acme", "campaign", 7)
    gates.note_sent("acme", "campaign", 5)
    assert gates.sent["acme"] == {"campaign": 7}
    gates.accounts["acme"] = AccountState("acme", allowance=SendAllowance(10, PAID, as_of_campaign=20, sequence=4))
    assert gates.room("acme") == 10
    assert gates.settle("acme", "campaign", True, counted=True) == 21  # counted from billing's 20, not from 7


def test_a_smaller_allowance_holds_at_once_a_larger_one_once_stored_and_an_older_one_changes_nothing() -> None:
    current = AccountState("acme", approved=True, allowance=SendAllowance(50, PAID, sequence=4))
    smaller = AccountState("acme", approved=True, allowance=SendAllowance(0, PAID, sequence=5))
    larger = AccountState("acme", approved=True, allowance=SendAllowance(500, PAID, sequence=5))
    assert account_until_stored(current, smaller, {}).allowance == smaller.allowance
    assert account_until_stored(current, larger, {}).allowance == current.allowance
    assert account_until_stored(AccountState("acme"), smaller, {}).allowance == smaller.allowance
    older = SendAllowanceChanged(account_id="acme", producer="billing", payload={
        "remaining": 9_999, "counts": ["campaign"], "as_of": {"campaign": 0, "test": 0}, "sequence": 3})
    assert domain.evolve_account(current, older) == current
    newer = older.model_copy(update={"payload": older.payload.model_copy(update={"sequence": 6})})
    assert domain.evolve_account(current, newer).allowance == SendAllowance(9_999, PAID, 0, 0, 6)


def test_of_two_allowances_counting_different_kinds_the_one_leaving_less_room_holds_until_stored() -> None:
    """A trial with 50 left becoming pay-as-you-go with 10 credits: the 10 hold at once, whatever kinds count."""
    trial = AccountState("acme", approved=True, allowance=SendAllowance(50, TRIAL, sequence=4))
    credits = AccountState("acme", approved=True, allowance=SendAllowance(10, PAID, sequence=5))
    assert account_until_stored(trial, credits, {}).allowance == credits.allowance
    assert account_until_stored(credits, trial, {}).allowance == credits.allowance


async def test_the_sender_sends_exactly_the_allowance_and_holds_the_rest() -> None:
    send, store, publisher = sender(AccountState("acme", approved=True, allowance=SendAllowance(2, TRIAL, 10, 0, 1)))
    relay = Relay()
    send._gates.note_sent("acme", "campaign", 10)
    jobs = [campaign_job(f"m{n}", f"s{n}") for n in range(3)]
    send._jobs.push(jobs)
    for n, job in enumerate(jobs):
        await send._deliver(job, member(n), relay)  # type: ignore[arg-type]
    assert relay.recipients == ["r0@example.org", "r1@example.org"]
    assert [(o["message_id"], o.get("counted_kind"), o.get("counted_total")) for o in store.recorded] == [
        ("m0", "campaign", 11), ("m1", "campaign", 12)]
    assert "m2" in send._jobs and send._gate_of(jobs[2]) == "send_allowance"  # held: no outcome, not dropped
    assert len(publisher.events) == 2 and "acme" not in send._gates.in_flight


async def test_a_deferral_gives_its_reservation_back_and_a_refusal_at_send_time_counts() -> None:
    answers = {"r0@example.org": SmtpReply(451, "4.7.1 try later"),
               "r1@example.org": SmtpReply(550, "5.1.1 no such user")}
    send, store, _ = sender(AccountState("acme", approved=True, allowance=SendAllowance(1, PAID, 0, 0, 1)))
    relay = ScriptedRelay(answers)
    jobs = [campaign_job(f"m{n}", f"s{n}") for n in range(3)]
    send._jobs.push(jobs)
    for n, job in enumerate(jobs):
        await send._deliver(job, member(n), relay)  # type: ignore[arg-type]
    assert relay.recipients == ["r0@example.org", "r1@example.org"]  # the deferral took none of the one allowed
    assert [(o["outcome"], o.get("counted_total")) for o in store.recorded] == [("deferred", None), ("bounced", 1)]
    assert send._gates.room("acme") == 0


async def test_a_trial_test_send_with_nothing_left_is_refused_not_held() -> None:
    send, store, publisher = sender(AccountState("acme", approved=True, allowance=SendAllowance(0, TRIAL, 0, 0, 1)))
    relay = Relay()
    job = job_of_test_send("tm1", "owner@acme.example")
    send._jobs.push([job])
    await send._deliver(job, None, relay)  # type: ignore[arg-type]
    assert relay.sent == [] and publisher.events == []
    assert [(o["outcome"], o["reason"]) for o in store.recorded] == [("skipped", "send_allowance")]


async def test_an_account_billing_told_nothing_is_not_limited_by_it() -> None:
    send, store, _ = sender(AccountState("acme", approved=True))
    relay = Relay()
    jobs = [campaign_job(f"m{n}", f"s{n}") for n in range(3)]
    send._jobs.push(jobs)
    for n, job in enumerate(jobs):
        await send._deliver(job, member(n), relay)  # type: ignore[arg-type]
    assert len(relay.sent) == 3 and [o.get("counted_total") for o in store.recorded] == [1, 2, 3]
