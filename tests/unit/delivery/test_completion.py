"""When delivery is done with a campaign: the pure decision, and its progress kept as messages end, across a
restart, with in-memory fakes."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from herald_delivery import domain
from herald_delivery.completion import CampaignCompletion
from herald_delivery.domain import CampaignProgress, FinalResult, Member
from herald_delivery.handlers import ControlHandler, GateBook
from herald_delivery.queue import JobQueue
from herald_shared.contract import parse_event
from herald_shared.contract.campaigns import CampaignCancelled
from herald_shared.contract.delivery import CampaignDeliveryFinished
from tests.samples import campaign_queued
from tests.unit.delivery.helpers import Publisher

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
RESULTS: tuple[FinalResult, ...] = ("sent", "bounced", "skipped", "failed", "cancelled")


# The decision


def test_each_recorded_outcome_counts_as_how_its_message_ended() -> None:
    assert [domain.final_result(o) for o in ("sent", "bounced", "cancelled", "deferred")] == [
        "sent", "bounced", "cancelled", None]
    for reason in ("member_unsubscribed", "member_suppressed", "member_erased", "not_in_audience"):
        assert domain.final_result("skipped", reason) == "skipped", reason
    for failure in ("render_failed", "template_invalid", "campaign_unknown", None):
        assert domain.final_result("skipped", failure) == "failed", failure


def test_a_campaign_being_expanded_has_not_ended_even_with_nothing_left() -> None:
    assert domain.delivery_finished("acme", "c1", CampaignProgress(sent=5), 0, NOW) is None


def test_a_campaign_with_an_unfinished_message_has_not_ended() -> None:
    """A held, pending or deferred message is tried later: the campaign is not done."""
    assert domain.delivery_finished("acme", "c1", CampaignProgress(expanded_jobs=3, sent=2), 1, NOW) is None


def test_a_campaign_nobody_receives_ends_with_its_expansion() -> None:
    event = domain.delivery_finished("acme", "c1", CampaignProgress(expanded_jobs=0), 0, NOW)
    assert isinstance(event, CampaignDeliveryFinished)
    assert event.payload.model_dump() == {"campaign_id": "c1", "recipients": 0, "sent": 0, "bounced": 0,
                                          "skipped": 0, "failed": 0, "cancelled": 0}


def test_the_end_counts_every_message_once_and_has_one_event_id_per_campaign() -> None:
    progress = CampaignProgress(expanded_jobs=10, sent=5, bounced=2, skipped=1, failed=1, cancelled=1)
    event = domain.delivery_finished("acme", "c1", progress, 0, NOW)
    assert event is not None and event.occurred_at == NOW and event.producer == "delivery"
    assert event.payload.recipients == 10 == sum(getattr(event.payload, r) for r in RESULTS)
    later = domain.delivery_finished("acme", "c1", progress, 0, NOW + timedelta(hours=1))
    assert later is not None and later.event_id == event.event_id == domain.delivery_finished_event_id("acme", "c1")
    assert domain.delivery_finished_event_id("acme", "c2") != event.event_id
    assert domain.delivery_finished_event_id("other", "c1") != event.event_id


# Progress as messages end (the sender's part is played by `finish`: drop from the queue, then count)


class Store:
    """`finished_campaigns` gives the announcements of the open campaigns only: those not closed."""

    def __init__(self) -> None:
        self.expanded: dict[str, int] = {}
        self.finished: dict[str, dict[str, Any]] = {}
        self.closed: list[str] = []
        self.fail_records = 0

    async def mark_expanded(self, account_id: str, campaign_id: str, jobs: int, token: str) -> None:
        self.expanded[f"{account_id}:{campaign_id}"] = jobs

    async def expansions(self) -> dict[str, int]:
        return dict(self.expanded)

    async def finished_campaigns(self) -> list[dict[str, Any]]:
        return [dict(doc) for key, doc in self.finished.items() if key not in self.closed]

    async def announcement(self, key: str) -> bool | None:
        return None if key not in self.finished else bool(self.finished[key].get("published"))

    async def close_campaign(self, key: str) -> None:
        self.closed.append(key)

    async def record_finished(self, doc: dict[str, Any]) -> dict[str, Any]:
        if self.fail_records:
            self.fail_records -= 1
            raise ConnectionError("MongoDB away")
        return self.finished.setdefault(doc["_id"], dict(doc))

    async def mark_finished_published(self, key: str) -> None:
        self.finished[key]["published"] = True


def job(n: int, campaign: str = "c1", kind: str = "campaign") -> dict[str, Any]:
    return {"_id": f"{campaign}-m{n}", "account_id": "acme", "kind": kind, "campaign_id": campaign,
            "next_attempt_at": NOW}


def tracker(store: Store | None = None) -> tuple[CampaignCompletion, JobQueue, Store, Publisher]:
    store, publisher = store or Store(), Publisher()
    queue = JobQueue(asyncio.Event())
    return CampaignCompletion(store, queue, publisher), queue, store, publisher


async def finish(completion: CampaignCompletion, queue: JobQueue, job: dict[str, Any], result: FinalResult) -> None:
    if queue.done(job["_id"]):
        await completion.message_finished(job, result)


def ends(publisher: Publisher) -> list[CampaignDeliveryFinished]:
    return [e for e in publisher.events if isinstance(e, CampaignDeliveryFinished)]


async def test_the_last_message_of_a_campaign_announces_its_end_once() -> None:
    completion, queue, store, publisher = tracker()
    await completion.load()
    await completion.ledger_loaded({})
    jobs = [job(n) for n in range(3)]
    completion.expanding("acme", "c1")
    queue.push(jobs)
    await completion.expanded("acme", "c1", 3, "t")
    await finish(completion, queue, jobs[0], "sent")
    await finish(completion, queue, jobs[1], "bounced")
    assert ends(publisher) == []
    await finish(completion, queue, jobs[2], "sent")
    await finish(completion, queue, jobs[2], "sent")  # the same job again: no longer queued, not counted
    end, = ends(publisher)
    assert (end.payload.recipients, end.payload.sent, end.payload.bounced) == (3, 2, 1)
    assert store.finished["acme:c1"]["published"] is True
    assert parse_event(store.finished["acme:c1"]["event"]) == end
    assert store.closed == ["acme:c1"]  # once published, not before


async def test_a_campaign_queued_again_after_its_end_is_not_announced_again_nor_kept_in_memory() -> None:
    """A redelivered CampaignQueued in the same process: its end is found in the store by key, not in memory."""
    completion, _, store, publisher = tracker()
    await completion.ledger_loaded({})
    completion.expanding("acme", "c1")
    await completion.expanded("acme", "c1", 0, "t")
    assert len(ends(publisher)) == 1 and store.closed == ["acme:c1"]
    assert "acme:c1" not in completion._finished  # what grew with every campaign ever announced
    completion.expanding("acme", "c1")  # listed open again by the redelivered event
    await completion.expanded("acme", "c1", 0, "t")
    assert len(ends(publisher)) == 1
    assert store.closed == ["acme:c1", "acme:c1"]  # closed again
    assert "acme:c1" not in completion._progress


async def test_test_sends_and_other_campaigns_do_not_hold_up_or_count_toward_a_campaign() -> None:
    completion, queue, _, publisher = tracker()
    await completion.ledger_loaded({})
    test_send, other = job(9, kind="test"), job(1, campaign="c2")
    mine = job(1)
    queue.push([test_send, other, mine])
    await completion.expanded("acme", "c1", 1, "t")
    await finish(completion, queue, mine, "sent")
    end, = ends(publisher)
    assert end.payload.campaign_id == "c1" and end.payload.recipients == 1
    await finish(completion, queue, test_send, "sent")
    assert len(ends(publisher)) == 1


async def test_nothing_ends_before_the_sender_has_folded_the_ledger() -> None:
    """Before that the queue does not hold the unfinished messages of earlier runs: zero would be a lie."""
    completion, queue, _, publisher = tracker()
    await completion.load()
    await completion.expanded("acme", "c1", 2, "t")
    assert ends(publisher) == []
    queue.push([job(1)])  # the fold finds one unfinished message; the other ended before the restart
    await completion.ledger_loaded({"acme:c1": {"sent": 1}})
    assert ends(publisher) == []
    await finish(completion, queue, job(1), "cancelled")
    end, = ends(publisher)
    assert (end.payload.recipients, end.payload.sent, end.payload.cancelled) == (2, 1, 1)


async def test_after_a_restart_counts_come_from_the_ledger_and_the_end_is_not_announced_again() -> None:
    completion, queue, store, publisher = tracker()
    await completion.ledger_loaded({})
    queue.push([job(n) for n in range(3)])
    await completion.expanded("acme", "c1", 3, "t")
    await finish(completion, queue, job(0), "sent")
    # Restart: a new process folds the ledger (two ended, one pending) and knows the expansion from the store.
    completion, queue, _, publisher = tracker(store)
    await completion.load()
    queue.push([job(2)])
    await completion.ledger_loaded({"acme:c1": {"sent": 1, "skipped": 1}})
    await finish(completion, queue, job(2), "sent")
    end, = ends(publisher)
    assert (end.payload.recipients, end.payload.sent, end.payload.skipped) == (3, 2, 1)
    # Restart again: announced and published, so nothing is announced, whatever the ledger says.
    completion, queue, _, publisher = tracker(store)
    await completion.load()
    await completion.expanded("acme", "c1", 3, "t")  # a redelivered CampaignQueued expanded again
    await completion.ledger_loaded({"acme:c1": {"sent": 2, "skipped": 1}})
    assert publisher.events == []


async def test_an_end_recorded_but_not_published_before_a_crash_is_published_at_start_with_the_same_id() -> None:
    completion, _, store, publisher = tracker()
    await completion.ledger_loaded({})
    await completion.expanded("acme", "c1", 0, "t")
    first, = ends(publisher)
    store.finished["acme:c1"]["published"] = False  # the process died before marking it
    store.closed.clear()  # and so before closing it
    completion, _, _, publisher = tracker(store)
    await completion.load()
    assert publisher.events == []
    await completion.ledger_loaded({})
    assert publisher.events == [first]
    assert store.finished["acme:c1"]["published"] is True


async def test_an_end_that_could_not_be_recorded_is_announced_on_a_later_try() -> None:
    completion, _, store, publisher = tracker()
    await completion.ledger_loaded({})
    store.fail_records = 1
    await completion.expanded("acme", "c1", 0, "t")
    assert publisher.events == []
    await completion.announce_pending()
    end, = ends(publisher)
    assert end.payload.recipients == 0
    await completion.announce_pending()
    assert len(publisher.events) == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(RESULTS), max_size=12), st.integers(min_value=0, max_value=12),
       st.randoms(use_true_random=False))
def test_in_any_order_of_endings_the_campaign_ends_once_with_exact_counts(
        results: list[FinalResult], expanded_after: int, rng: random.Random) -> None:
    """Messages may end before the expansion has written the last job (the sender is concurrent with it),
    and the same job may be reported twice: one end, after the last message, counting each message once."""

    async def scenario() -> None:
        completion, queue, _, publisher = tracker()
        await completion.ledger_loaded({})
        jobs = [job(n) for n in range(len(results))]
        completion.expanding("acme", "c1")
        queue.push(jobs)
        order = list(zip(jobs, results, strict=True))
        rng.shuffle(order)
        cut = min(expanded_after, len(order))
        for item, result in order[:cut] + order[:min(cut, 1)]:  # one of them reported twice
            await finish(completion, queue, item, result)
        assert ends(publisher) == []
        await completion.expanded("acme", "c1", len(jobs), "t")
        for item, result in order[cut:]:
            assert ends(publisher) == []
            await finish(completion, queue, item, result)
        end, = ends(publisher)
        assert end.payload.recipients == len(results)
        assert {r: getattr(end.payload, r) for r in RESULTS} == {r: results.count(r) for r in RESULTS}

    asyncio.run(scenario())


# The control handler's part: the expansion's end, and a cancellation that does not wait for retries


class AudienceStore:
    def __init__(self, members: list[Member], list_deleted: bool = False) -> None:
        self.campaigns: dict[str, Any] = {}
        self._members = members
        self._list_deleted = list_deleted

    async def campaign(self, account_id: str, campaign_id: str) -> Any:
        return self.campaigns.get(f"{account_id}:{campaign_id}")

    async def save_campaigns(self, docs: list[Any]) -> None:
        self.campaigns.update({d["_id"]: d for d in docs})

    async def save_campaign_states(self, docs: list[Any]) -> None:
        for doc in docs:
            self.campaigns[doc["_id"]] = {**self.campaigns.get(doc["_id"], {}), "state": doc["state"]}

    async def list_deleted(self, account_id: str, list_id: str) -> bool:
        return self._list_deleted

    async def list_members(self, account_id: str, list_id: str) -> Any:
        for member in self._members:
            yield member

    async def active_member_ids(self, account_id: str, list_id: str) -> Any:
        yield [member.subscriber_id for member in self._members]

    async def add_jobs(self, docs: list[Any]) -> list[Any]:
        return docs


async def caught_up() -> None:
    return None


async def test_a_campaign_to_a_deleted_list_or_a_segment_matching_nobody_ends_right_after_its_expansion() -> None:
    for store in (AudienceStore([], list_deleted=True),
                  AudienceStore([Member("s1", "news", "a@example.org", "active", custom_fields={"city": "Oslo"})])):
        completion, queue, _, publisher = tracker()
        await completion.ledger_loaded({})
        handler = ControlHandler(store, GateBook(), queue, caught_up, completion)  # type: ignore[arg-type]
        await handler.handle(campaign_queued("acme", "c1", segment={"city": "Riga"}))
        await handler.expansions.idle()
        end, = ends(publisher)
        assert end.payload.recipients == 0


async def test_a_cancellation_makes_the_campaigns_later_messages_due_now_and_leaves_the_rest() -> None:
    """A scheduled or deferred message of a cancelled campaign is recorded cancelled now, not at its retry,
    so the campaign ends now."""
    store = AudienceStore([Member(f"s{i}", "news", f"r{i}@example.org", "active") for i in range(3)])
    completion, queue, _, _ = tracker()
    gates = GateBook()
    handler = ControlHandler(store, gates, queue, caught_up, completion)  # type: ignore[arg-type]
    later = datetime.now(UTC) + timedelta(hours=4)
    queued = campaign_queued("acme", "c1")
    await handler.handle(queued.model_copy(update={"payload": queued.payload.model_copy(update={"send_at": later})}))
    await handler.expansions.idle()
    queue.push([{**job(1, campaign="c2"), "next_attempt_at": later}])
    assert queue.unfinished("acme", "c1") == 3
    assert queue.take_due(datetime.now(UTC), 10, lambda _: None) == []
    await handler.handle(CampaignCancelled(account_id="acme", producer="campaigns",
                                           payload={"campaign_id": "c1", "cancelled_by": "anna"}))
    await handler.flush()  # brought forward once the cancellation is stored
    due = queue.take_due(datetime.now(UTC), 10, lambda _: None)
    assert sorted(j["subscriber_id"] for j in due) == ["s0", "s1", "s2"]
    assert gates.campaign("acme", "c1").cancelled
