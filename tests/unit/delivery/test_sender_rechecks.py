"""What the sender checks again after a message's waits (the account's rate limit, the DKIM signing thread):
the member (left the audience meanwhile: skipped, never mailed) and the campaign (cancelled or rejected
meanwhile: recorded cancelled, never sent), with the real hand-out and workers, an in-memory store and relay."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from herald_delivery.domain import AccountState, CampaignState, Member, RetryPolicy, TokenBucket
from herald_delivery.handlers import GateBook
from herald_delivery.queue import JobQueue
from herald_delivery.render import MessageTokens, Rendered, Renderer, RenderSettings
from herald_delivery.sender import MEMBER_RECHECK_SECONDS, Sender, SenderConfig
from herald_delivery.smtp import RelayConfig
from herald_shared.links import LinkSigner
from tests.unit.delivery.helpers import Publisher, Relay

SECRET = "unit-test-secret-0123456789"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
CONTENT = {"subject": "News", "from_name": "Acme", "from_email": "news@acme.example",
           "text_body": "Hi {{ first_name }}"}


class Store:
    """The audience (as delivery's projection holds it) and the ledger, in memory."""

    def __init__(self, members: int) -> None:
        self.audience = {f"s{i}": Member(f"s{i}", "news", f"p{i}@example.org", "active", first_name=f"P{i}")
                         for i in range(1, members + 1)}
        self.recorded: list[dict[str, Any]] = []
        self.member_reads = 0

    async def open_claim(self, claim: str, ids: list[str], now: datetime) -> None:
        return None

    async def members(self, account_id: str, ids: list[str]) -> dict[str, Member]:
        self.member_reads += 1
        return {s: self.audience[s] for s in ids if s in self.audience}

    async def deleted_lists(self, lists: Any) -> set[tuple[str, str]]:
        return set()

    async def record(self, outcome: dict[str, Any]) -> None:
        self.recorded.append(outcome)

    async def campaign(self, account_id: str, campaign_id: str) -> Any:
        return {"content": CONTENT}

    def outcomes(self) -> list[tuple[str, str, str | None]]:
        return sorted((o["message_id"], o["outcome"], o.get("reason")) for o in self.recorded)


def sender(members: int, concurrency: int = 1) -> tuple[Sender, Store, GateBook]:
    gates = GateBook()
    gates.accounts["acme"] = AccountState("acme", approved=True)
    gates.campaigns["acme:c1"] = CampaignState("c1", queued=True)
    store = Store(members)
    renderer = Renderer(RenderSettings("https://t.example", "bounces.example"), MessageTokens(SECRET),
                        LinkSigner(SECRET, "https://lists.example"), {})
    send = Sender(store, gates, JobQueue(gates.changed), renderer, RelayConfig("127.0.0.1"),  # type: ignore[arg-type]
                  Publisher(), RetryPolicy(), SenderConfig(concurrency=concurrency))  # type: ignore[arg-type]
    # The account's rate limit, drained after one message: every later one waits 100 ms for its token.
    send._account_buckets["acme"] = TokenBucket(10.0, 1.0)
    send._jobs.push([{"_id": f"m{i}", "account_id": "acme", "kind": "campaign", "campaign_id": "c1",
                      "subscriber_id": f"s{i}", "list_id": "news", "attempts": 0, "next_attempt_at": T0}
                     for i in range(1, members + 1)])
    return send, store, gates


async def send_all(send: Sender, relay: Relay, workers: int = 1) -> None:
    """The real hand-out (one claim, one member read for the batch) and workers, until the batch is done."""
    await send._template("acme", "c1")  # compiled before: the first message's render takes no token's time
    await send._hand_out(send._jobs.take_due(datetime.now(UTC), 40, send._gate_of))
    tasks = [asyncio.create_task(send._worker(relay)) for _ in range(workers)]  # type: ignore[arg-type]
    try:
        async with asyncio.timeout(10):
            await send._queue.join()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_member_who_leaves_while_their_message_waits_for_the_rate_limit_is_not_mailed() -> None:
    """PRODUCT.md: a campaign goes only to confirmed, non-suppressed subscribers. The batch's members are read
    at the hand-out; one who unsubscribes, one erased and one suppressed while their messages wait for the
    account's rate limit are skipped (the member is read again after the wait), never mailed."""
    send, store, _ = sender(members=4)

    async def members_leave() -> None:  # as delivery's audience projection stores them
        store.audience["s2"] = replace(store.audience["s2"], status="erased", email=None, first_name=None)
        store.audience["s3"] = replace(store.audience["s3"], status="unsubscribed")
        store.audience["s4"] = replace(store.audience["s4"], status="suppressed")

    relay = Relay(on_first=members_leave)
    await send_all(send, relay)
    assert relay.recipients == ["p1@example.org"]
    assert store.outcomes() == [("m1", "sent", None), ("m2", "skipped", "member_erased"),
                                ("m3", "skipped", "member_unsubscribed"), ("m4", "skipped", "member_suppressed")]


@pytest.mark.parametrize("suspended", [False, True], ids=["cancelled", "cancelled_and_suspended"])
async def test_a_campaign_cancelled_while_its_messages_wait_for_the_rate_limit_sends_none_of_them(
        suspended: bool) -> None:
    """Messages past their first check and waiting for the rate limit when the campaign is cancelled (and, at
    the same time, the account suspended) are recorded cancelled, never sent."""
    send, store, gates = sender(members=4, concurrency=2)
    second_waits = asyncio.Event()
    take_tokens = send._respect_rate_limits

    async def observed(account_id: str, recipient: str) -> float:
        if recipient != "p1@example.org":
            second_waits.set()  # its token reserved, it waits 100 ms for it
        return await take_tokens(account_id, recipient)

    send._respect_rate_limits = observed  # type: ignore[method-assign]

    async def cancelled() -> None:  # while m2 waits; as ControlHandler handles CampaignCancelled
        await second_waits.wait()
        gates.campaigns["acme:c1"] = CampaignState("c1", queued=True, cancelled=True)
        if suspended:
            gates.accounts["acme"] = AccountState("acme", approved=True, suspended=True)

    relay = Relay(on_first=cancelled)
    await send_all(send, relay, workers=2)
    assert relay.recipients == ["p1@example.org"]
    assert store.outcomes() == [("m1", "sent", None)] + [
        (f"m{i}", "cancelled", "campaign_cancelled") for i in (2, 3, 4)]


@pytest.mark.parametrize(("change", "outcome"), [
    ("cancelled", ("cancelled", "campaign_cancelled")),
    ("rejected", ("cancelled", "campaign_rejected")),
    ("suspended", None),  # held: parked until the gate opens, nothing recorded
])
async def test_what_changes_during_the_signing_wait_is_seen_before_the_smtp_transaction(
        change: str, outcome: tuple[str, str] | None) -> None:
    """The DKIM signature is made on a thread while the control consumer goes on: a cancellation, rejection or
    suspension handled meanwhile stops the message before its SMTP transaction."""
    send, store, gates = sender(members=1)
    render = send._render

    async def signed_meanwhile(job: dict[str, Any], member: Member | None) -> Rendered:
        rendered = await render(job, member)
        if change == "suspended":
            gates.accounts["acme"] = AccountState("acme", approved=True, suspended=True)
        else:
            gates.campaigns["acme:c1"] = CampaignState("c1", queued=True, **{change: True})
        return rendered

    send._render = signed_meanwhile  # type: ignore[method-assign]
    relay = Relay()
    job = send._jobs.take_due(datetime.now(UTC), 1, send._gate_of)[0]
    await send._deliver(job, store.audience["s1"], relay)  # type: ignore[arg-type]
    assert relay.recipients == []
    if outcome is None:
        assert store.recorded == [] and "m1" in send._jobs
        assert send._jobs.take_due(datetime.now(UTC), 1, send._gate_of) == []  # parked behind the gate
    else:
        assert store.outcomes() == [("m1", *outcome)] and "m1" not in send._jobs


async def test_a_member_read_older_than_the_recheck_bound_is_read_again_and_a_fresh_one_is_not() -> None:
    """A message that waited in the queue behind others (their rate-limit waits, a slow relay) is not sent on
    a read older than MEMBER_RECHECK_SECONDS; one handed out just now is sent on the batch's read (no read more
    per message where nothing waits)."""
    send, store, _ = sender(members=2)
    send._account_buckets.clear()  # no rate limit: nothing waits
    relay = Relay()
    first, second = send._jobs.take_due(datetime.now(UTC), 2, send._gate_of)
    handed_out = store.audience["s1"]
    store.audience["s1"] = replace(handed_out, status="unsubscribed")
    await send._deliver(first, handed_out, relay, time.monotonic() - 2 * MEMBER_RECHECK_SECONDS)  # type: ignore[arg-type]
    assert store.member_reads == 1 and relay.recipients == []
    await send._deliver(second, store.audience["s2"], relay, time.monotonic())  # type: ignore[arg-type]
    assert store.member_reads == 1 and relay.recipients == ["p2@example.org"]
    assert store.outcomes() == [("m1", "skipped", "member_unsubscribed"), ("m2", "sent", None)]


async def test_messages_that_will_not_go_take_no_token_of_the_accounts_rate() -> None:
    """A message skipped at its render (its campaign's content gone, here) is recorded at once: it neither waits
    for the account's rate limit nor takes a token from the account's other messages."""
    send, store, _ = sender(members=6)

    async def no_campaign(account_id: str, campaign_id: str) -> None:
        return None

    store.campaign = no_campaign  # type: ignore[method-assign]
    await send._hand_out(send._jobs.take_due(datetime.now(UTC), 40, send._gate_of))
    relay = Relay()
    worker = asyncio.create_task(send._worker(relay))  # type: ignore[arg-type]
    try:
        async with asyncio.timeout(10):
            await send._queue.join()
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
    assert relay.recipients == []
    assert {(outcome, reason) for _, outcome, reason in store.outcomes()} == {("skipped", "campaign_unknown")}
    assert send._account_buckets["acme"].reserve(time.monotonic()) == 0  # the bucket's one token is still there
