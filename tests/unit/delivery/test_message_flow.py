"""A message belongs to the flow of the event that asked for it (README, "Every answer names its request"): a
campaign's messages to the CampaignQueued's that made their jobs, a confirmation, notice or test send to its
request's. The sender's events about them carry that correlation and name the event as their cause, and what is
logged while one is sent or while a campaign is expanded names the correlation. In-memory ports; the real stack's
test is tests/integration/delivery/test_campaign_correlation.py."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import pytest

from herald_delivery.completion import CampaignCompletion
from herald_delivery.domain import AccountState, Member, MessageFlow
from herald_delivery.handlers import AudienceJobs, Expansion, Expansions, GateBook
from herald_delivery.queue import JobQueue
from herald_shared import correlation
from herald_shared.contract.campaigns import CampaignQueued
from herald_shared.contract.delivery import CampaignDeliveryFinished, DeliveryHeld, MessageSent
from tests.samples import sample
from tests.unit.delivery.helpers import T0, Announcements, Relay, campaign_job, job_of_test_send, sender

QUEUED = uuid.uuid4()
FLOW = MessageFlow(uuid.uuid4(), QUEUED)


def test_a_campaigns_flow_is_its_queueings_correlation_or_its_id_and_survives_its_document() -> None:
    queued = sample("CampaignQueued", correlation_id=FLOW.correlation_id)
    assert isinstance(queued, CampaignQueued)
    assert MessageFlow.of(queued) == MessageFlow(FLOW.correlation_id, queued.event_id)
    first = sample("CampaignQueued")
    assert MessageFlow.of(first) == MessageFlow(first.event_id, first.event_id)  # the first of its flow
    assert MessageFlow.from_document({"flow": FLOW.stored()}) == FLOW
    # A campaign queued before flows were kept, or a document gone bad: no flow, never a failure.
    assert MessageFlow.from_document({}) is None
    assert MessageFlow.from_document({"flow": {"correlation_id": "x", "queued_event_id": "y"}}) is None


async def test_a_campaign_messages_events_carry_its_flow_and_name_its_queueing_as_their_cause() -> None:
    send, _, publisher = sender(AccountState("acme", approved=True))
    send._gates.flows["acme:c1"] = FLOW
    job = campaign_job("m1", "s1")
    send._jobs.push([job])
    await send._deliver(job, Member("s1", "news", "ann@example.org", "active"), Relay())  # type: ignore[arg-type]
    [event] = publisher.events
    assert isinstance(event, MessageSent)
    assert (event.correlation_id, event.causation_id) == (FLOW.correlation_id, QUEUED)


async def test_a_test_sends_message_is_in_its_requests_flow_not_the_campaigns() -> None:
    """A test send is its CampaignTestRequested's (the test request's id), not the campaign's queueing (which may
    come after it, or never); a job written before jobs kept their flow is in none."""
    send, _, publisher = sender(AccountState("acme", approved=True))
    send._gates.flows["acme:c1"] = FLOW
    asked = MessageFlow(uuid.uuid4(), uuid.uuid4())
    job, older = {**job_of_test_send("tm1", "owner@acme.example"), "flow": asked.stored()}, job_of_test_send(
        "tm2", "owner@acme.example")
    send._jobs.push([job, older])
    await send._deliver(job, None, Relay())  # type: ignore[arg-type]
    await send._deliver(older, None, Relay())  # type: ignore[arg-type]
    of_request, of_none = publisher.events
    assert (of_request.correlation_id, of_request.causation_id) == (asked.correlation_id, asked.cause)
    assert of_none.correlation_id != FLOW.correlation_id and of_none.causation_id is None


async def test_a_confirmations_and_a_members_notices_jobs_keep_the_flow_of_the_event_that_asked() -> None:
    """So the subscribe request's id is on the MessageSent of its confirmation: a support look-up by request id
    ("was it sent, when, why not") finds the email too."""
    store = KeptJobs()
    gates = GateBook()
    gates.accounts["acme"] = AccountState("acme", registered_email="owner@acme.example")
    audience = AudienceJobs(store, JobQueue(asyncio.Event()), gates)  # type: ignore[arg-type]  # fakes of the ports
    request = uuid.uuid4()
    with correlation.flow(request):
        asked = [sample("ConfirmationRequested", account_id="acme"),
                 sample("MembershipNoticeRequested", account_id="acme")]
    for event in asked:
        await audience.handle(event)
    await audience.flush()
    assert [MessageFlow.from_document(job) for job in store.jobs] == [MessageFlow(request, e.event_id) for e in asked]


class KeptJobs:
    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []

    async def add_jobs(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.jobs += docs
        return list(docs)


async def test_a_message_is_sent_in_its_campaigns_flow_so_its_log_lines_name_it(
        caplog: pytest.LogCaptureFixture) -> None:
    send, _, publisher = sender(AccountState("acme", approved=True))
    send._gates.flows["acme:c1"] = FLOW
    caplog.handler.addFilter(correlation.CorrelationFilter())
    huge = Member("s1", "news", "huge@example.org", "active", custom_fields={"bio": "x" * 2_000_001})
    fine = Member("s2", "news", "fine@example.org", "active", custom_fields={"bio": "hi"})
    jobs = [campaign_job("m1", "s1"), campaign_job("m2", "s2"), job_of_test_send("tm1", "owner@acme.example")]
    send._jobs.push(jobs)
    for job, member in zip(jobs, (huge, fine, None), strict=True):
        send._outstanding += 1
        send._queue.put_nowait((job, member, time.monotonic(), "claim"))
    worker = asyncio.create_task(send._worker(Relay()))  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="herald_delivery"):
        await asyncio.wait_for(send._queue.join(), 10)
    worker.cancel()
    [skipped] = [r for r in caplog.records if r.getMessage().startswith("a message is not sent")]
    assert getattr(skipped, "correlation_id", None) == str(FLOW.correlation_id)
    assert [e.correlation_id == FLOW.correlation_id for e in publisher.events] == [True, False]
    assert correlation.current() is None  # nothing of a message's flow outlives its sending


async def test_held_messages_and_a_campaigns_end_carry_its_flow() -> None:
    send, _, publisher = sender(AccountState("acme", approved=False))
    send._gates.flows["acme:c1"] = FLOW
    send._jobs.push([campaign_job("m1", "s1")])
    assert send._jobs.take_due(T0, 10, send._gate_of) == []  # parked behind the closed gate
    await send.announce_held()
    [held] = publisher.events
    assert isinstance(held, DeliveryHeld) and held.payload.gate == "account_review"
    assert (held.correlation_id, held.causation_id) == (FLOW.correlation_id, QUEUED)

    ends = CampaignCompletion(Announcements(), send._jobs, publisher, flow=send._gates.flow)  # type: ignore[arg-type]
    await ends.ledger_loaded({})
    await ends.expanded("acme", "c2", 0, "t")  # no audience: it ends at once
    send._gates.flows["acme:c3"] = FLOW
    await ends.expanded("acme", "c3", 0, "t")
    no_flow, of_flow = publisher.events[1:]
    assert isinstance(of_flow, CampaignDeliveryFinished) and no_flow.correlation_id is None
    assert (of_flow.correlation_id, of_flow.causation_id) == (FLOW.correlation_id, QUEUED)


async def test_each_expansion_runs_in_its_own_campaigns_flow() -> None:
    """The expansions' task starts in the flow of the CampaignQueued that submitted the first: each expansion runs
    in its own campaign's, a campaign queued before flows were kept in none."""
    seen: dict[str, Any] = {}
    started = asyncio.Event()

    async def expand(expansion: Expansion) -> None:
        await started.wait()
        seen[expansion.campaign_id] = correlation.current()

    expansions = Expansions(expand)
    other = MessageFlow(uuid.uuid4(), uuid.uuid4())
    with correlation.flow(FLOW.correlation_id):
        for campaign_id, flow in (("c1", FLOW), ("c2", other), ("c3", None)):
            expansions.submit(Expansion("acme", campaign_id, "news", {}, T0, "t", flow=flow))
    started.set()
    await asyncio.wait_for(expansions.idle(), 10)
    assert seen == {"c1": FLOW.correlation_id, "c2": other.correlation_id, "c3": None}
