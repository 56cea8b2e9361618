"""One scheduling round queues every due campaign but the one that fails: a campaign whose decision or publishing
raises for a reason of its own is logged once with its id, counted and held back, and the others due go out in
the same round; Kafka or MongoDB away still ends the round, for the scheduler's loop to wait it out
(`herald_shared.lifecycle.every`). The service's real `queue_due` and domain, with stand-ins for the store and the
recorder."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from prometheus_client import REGISTRY

from herald_campaigns import domain
from herald_campaigns.domain import CampaignState, ListInfo
from herald_campaigns.handlers import CampaignsService, HeldBack
from herald_shared.contract import Event
from herald_shared.contract.campaigns import CampaignQueued
from herald_shared.readmodel import compose, stored_time_key

NOW = datetime(2026, 12, 7, 18, 0, tzinfo=UTC)


def scheduled(account_id: str, campaign_id: str, minutes_ago: int) -> dict[str, Any]:
    """A scheduled campaign as the read model stores it."""
    return {"account_id": account_id, "campaign_id": campaign_id, "status": "scheduled", "name": campaign_id,
            "list_id": "news", "segment": {}, "send_at": NOW - timedelta(minutes=minutes_ago),
            "content": {"subject": "Our news", "from_name": "Acme", "from_email": "news@acme.example",
                        "html_body": "<p>Hello</p>", "text_body": "Hello"}}


class Store:
    """The schedule listing and the campaigns' documents, earliest due first: A (first in line), then B, then C."""

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = {(d["account_id"], d["campaign_id"]): d for d in docs}
        self.schedule = sorted(compose(stored_time_key(d["send_at"]), d["account_id"], d["campaign_id"])
                               for d in docs)

    async def due(self, now: datetime, after: str | None = None, limit: int = 100) -> list[str]:
        return [k for k in self.schedule if after is None or k > after][:limit]

    async def campaign_state(self, account_id: str, campaign_id: str) -> CampaignState | None:
        doc = self.docs.get((account_id, campaign_id))
        return domain.state_of(doc) if doc is not None else None

    async def list_info(self, account_id: str, list_id: str) -> ListInfo:
        return ListInfo(list_id, {})

    async def sending_domains_named(self, account_id: str, names: list[str]) -> list[dict[str, Any]]:
        return []

    async def relist(self, key: str, listing: str = "schedule") -> None:
        pass


class Recorder:
    """Commits are folded at once: a queued campaign leaves the schedule. `refusing`: campaigns whose events
    the broker refuses, with the error it raises."""

    def __init__(self, store: Store, refusing: dict[str, Exception] | None = None) -> None:
        self.store, self.refusing = store, refusing or {}
        self.queued: list[str] = []

    @asynccontextmanager
    async def serialised(self, key: str) -> AsyncIterator[None]:
        yield

    async def commit(self, events: Sequence[Event]) -> None:
        for event in events:
            assert isinstance(event, CampaignQueued)
            if event.payload.campaign_id in self.refusing:
                raise self.refusing[event.payload.campaign_id]
            self.queued.append(event.payload.campaign_id)
            self.store.schedule = [k for k in self.store.schedule if not k.endswith("/" + event.payload.campaign_id)]


def service(store: Store, recorder: Recorder) -> CampaignsService:
    campaigns = CampaignsService(store, recorder, dns=None, screening=None,  # type: ignore[arg-type]
                                 shared_sending_domains=frozenset({"acme.example"}))
    # A clock that stands still: a campaign held back waits for the test, not for a second of a loaded machine.
    campaigns.queueing, campaigns.completing = HeldBack(clock=lambda: 0.0), HeldBack(clock=lambda: 0.0)
    return campaigns


def scheduler_failures() -> float:
    return REGISTRY.get_sample_value("herald_campaigns_scheduler_failures_total", {"step": "queue"}) or 0.0


def unreadable(doc: dict[str, Any]) -> dict[str, Any]:
    """A document no code reads any more (deciding on it raises KeyError)."""
    return {k: v for k, v in doc.items() if k != "content"}


@pytest.mark.parametrize("failing", ["decision", "publishing"])
async def test_one_campaign_failing_leaves_the_others_due_queued_in_the_same_round(
        failing: str, caplog: pytest.LogCaptureFixture) -> None:
    a, b, c = scheduled("acme", "cA", 30), scheduled("beta", "cB", 20), scheduled("gamma", "cC", 10)
    store = Store([unreadable(a) if failing == "decision" else a, b, c])
    recorder = Recorder(store, {"cA": MessageSizeTooLargeError("1048627 bytes")} if failing == "publishing" else {})
    campaigns = service(store, recorder)
    counted = scheduler_failures()
    with caplog.at_level(logging.ERROR, logger="herald.campaigns"):
        assert await campaigns.queue_due(NOW) == 2
    assert recorder.queued == ["cB", "cC"]
    assert scheduler_failures() == counted + 1
    # (herald.campaigns' records only: on a pytest-xdist worker, asyncio may log an earlier test's unclosed client)
    logged, = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "herald.campaigns"]
    assert (getattr(logged, "campaign", None), getattr(logged, "account_id", None)) == ("cA", "acme")
    assert logged.exc_info is not None  # the traceback, this first time
    # held back: the next round does not try it again at once (nor log it), and has nothing else left to do
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="herald.campaigns"):
        assert await campaigns.queue_due(NOW) == 0
    assert [r for r in caplog.records if r.name == "herald.campaigns"] == [] and scheduler_failures() == counted + 1


async def test_kafka_away_ends_the_round_for_the_loop_to_wait_it_out() -> None:
    store = Store([scheduled("acme", "cA", 30), scheduled("beta", "cB", 20), scheduled("gamma", "cC", 10)])
    recorder = Recorder(store, {"cA": KafkaConnectionError("no broker")})
    campaigns = service(store, recorder)
    counted = scheduler_failures()
    with pytest.raises(KafkaConnectionError):
        await campaigns.queue_due(NOW)
    assert recorder.queued == [] and len(campaigns.queueing) == 0 and scheduler_failures() == counted
    recorder.refusing.clear()  # back: the next round queues all three, A first
    assert await campaigns.queue_due(NOW) == 3
    assert recorder.queued == ["cA", "cB", "cC"]
