"""The sender's start-up fold of the ledger (`DeliveryStore.load_pending`) on the real database: which jobs are
pending, with what attempt and due time, which are in doubt, and how the finished ones of each campaign ended.
The kill tests reach it through a crash; here every case is laid out at once.

A ledger written as the service writes it is listed (`job_index`, `open_jobs`): a start reads the open work
only. One written before the lists existed is read whole once, twice here: with message ids as Herald writes
them (uuids: jobs and outcomes merged in `_id` order, memory for the unfinished only) and with ids that are
prefixes of one another, whose outcomes sort apart from their jobs (the fold notices, and holds every finished
message instead); what is open in it is listed then."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from herald_delivery.domain import outcome_event_id
from herald_delivery.handlers import new_job
from herald_delivery.store import (
    CLAIMS,
    FINISHED_CAMPAIGNS,
    JOB_INDEX,
    LEDGER_LISTED,
    OPEN_JOBS,
    OUTCOMES,
    RECIPIENT_JOBS,
    SENDER_STATE,
    DeliveryStore,
)
from herald_shared.contract import serialize_event
from herald_shared.contract.delivery import MessageSent
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually

from .conftest import World

T0 = datetime(2026, 12, 1, 9, tzinfo=UTC)


def outcome(message_id: str, attempt: int, kind: str, *, final: bool, at: datetime, campaign: str = "c1",
            reason: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"_id": f"{message_id}:{attempt}", "message_id": message_id, "account_id": "acme",
                           "campaign_id": campaign, "attempt": attempt, "first_attempt_at": T0, "recorded_at": at,
                           "final": final, "outcome": kind, "smtp_code": 250, "outcome_event": "{}"}
    if reason is not None:
        doc["reason"] = reason
    if not final:
        doc["next_attempt_at"] = at + timedelta(minutes=10)
    return doc


def as_uuid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def as_is(name: str) -> str:
    return name


@pytest.mark.parametrize("ids", [as_uuid, as_is], ids=["uuids, merged in _id order", "prefixes, held"])
async def test_the_fold_finds_pending_deferred_in_doubt_and_finished_messages(
        mongo: Any, settings: HeraldSettings, ids: Callable[[str], str], caplog: pytest.LogCaptureFixture) -> None:
    db = mongo[settings.database_name("delivery")]
    store = DeliveryStore(db)
    await store.ensure_indexes()
    jobs = {name: new_job(ids(name), "acme", "campaign", T0, campaign_id=campaign, campaign_key=f"acme:{campaign}",
                          subscriber_id=f"s-{name}", list_id="news")
            for name, campaign in (("sent", "c1"), ("bounced", "c1"), ("left", "c1"), ("cancelled", "c2"),
                                   ("never-tried", "c1"), ("deferred", "c1"), ("deferred-then-sent", "c1"),
                                   ("claimed-unrecorded", "c1"), ("deferred-then-claimed", "c1"),
                                   ("deferred-twice", "c1"))}
    jobs["notice"] = new_job(ids("notice"), "acme", "account_notice", T0, recipient="owner@acme.example",
                             subject="s", text="t")
    await db["jobs"].insert_many(list(jobs.values()))
    minute = timedelta(minutes=1)
    await db[OUTCOMES].insert_many([
        outcome(ids("purged"), 1, "sent", final=True, at=T0),  # its job is gone: counted nowhere
        outcome(ids("sent"), 1, "sent", final=True, at=T0),
        outcome(ids("bounced"), 1, "bounced", final=True, at=T0),
        outcome(ids("left"), 1, "skipped", final=True, at=T0, reason="member_unsubscribed"),
        outcome(ids("cancelled"), 1, "cancelled", final=True, at=T0, campaign="c2"),
        outcome(ids("deferred"), 1, "deferred", final=False, at=T0),
        outcome(ids("deferred-then-sent"), 2, "sent", final=True, at=T0 + 2 * minute),
        outcome(ids("deferred-then-sent"), 1, "deferred", final=False, at=T0),  # found after the later one
        outcome(ids("deferred-then-claimed"), 1, "deferred", final=False, at=T0),
        outcome(ids("deferred-twice"), 2, "deferred", final=False, at=T0 + 3 * minute),
        outcome(ids("deferred-twice"), 1, "deferred", final=False, at=T0 + minute),
    ])
    await db[CLAIMS].insert_many([
        {"_id": "k1", "message_ids": [ids("claimed-unrecorded"), ids("sent")], "at": T0 - minute},
        {"_id": "k2", "message_ids": [ids("deferred-then-claimed"), ids("deferred")], "at": T0 - minute},
        {"_id": "k3", "message_ids": [ids("deferred-then-claimed")], "at": T0 + 5 * minute},
    ])

    with caplog.at_level(logging.WARNING, logger="herald_delivery.store"):
        fold = await store.load_pending()

    held = any("holding every finished message" in r.getMessage() for r in caplog.records)
    assert held == (ids is as_is)  # the merge is used whenever the ids allow it
    names = {ids(name): name for name in [*jobs, "purged"]}
    pending = {names[job["_id"]]: job for job in fold.pending}
    assert sorted(pending) == ["claimed-unrecorded", "deferred", "deferred-then-claimed", "deferred-twice",
                               "never-tried", "notice"]
    assert pending["never-tried"]["attempts"] == 0 and pending["never-tried"]["next_attempt_at"] == T0
    assert pending["deferred"]["attempts"] == 1 and pending["deferred"]["next_attempt_at"] == T0 + 10 * minute
    assert pending["deferred-twice"]["attempts"] == 2
    assert pending["deferred-twice"]["next_attempt_at"] == T0 + 13 * minute
    assert pending["deferred-twice"]["first_attempt_at"] == T0
    assert pending["notice"]["recipient"] == "owner@acme.example"  # a pending job comes whole
    # In doubt: claimed after its last outcome (or with none); a claim before the deferral is settled.
    assert sorted(names[job["_id"]] for job in fold.in_doubt) == ["claimed-unrecorded", "deferred-then-claimed"]
    assert fold.finished == {"acme:c1": {"sent": 2, "bounced": 1, "skipped": 1}, "acme:c2": {"cancelled": 1}}


async def test_a_listed_ledger_is_read_for_its_open_work_only(mongo: Any, settings: HeraldSettings) -> None:
    db = mongo[settings.database_name("delivery")]
    store = DeliveryStore(db)
    await store.ensure_indexes()
    first = await store.load_pending()  # a new ledger: nothing to read, listed from now on
    assert first.whole and await db[SENDER_STATE].find_one({"_id": LEDGER_LISTED}) is not None
    ids = as_uuid

    def job(name: str, campaign: str = "c1") -> dict[str, Any]:
        return new_job(ids(name), "acme", "campaign", T0, campaign_id=campaign, subscriber_id=f"s-{name}",
                       list_id="news", campaign_key=f"acme:{campaign}")

    def notice(name: str) -> dict[str, Any]:
        return new_job(ids(name), "acme", "account_notice", T0, recipient="owner@acme.example", subject="s", text="t")

    await store.add_jobs([job(name) for name in ("sent", "deferred", "deferred-then-sent", "never-tried",
                                                 "claimed-unrecorded", "bounced")])
    await store.add_jobs([job("ghost", campaign="c0")])  # its campaign was announced finished: never read again
    await store.add_jobs([notice("notice-done"), notice("notice-open")])
    # Listed by an insert that a crash cut short: the id is listed, its job was never written.
    await db[JOB_INDEX].insert_one({"_id": "acme:c1/unwritten", "ids": [ids("unwritten")]})
    await db[FINISHED_CAMPAIGNS].insert_one({"_id": "acme:c0", "published": True})
    minute = timedelta(minutes=1)
    await db[SENDER_STATE].insert_one({"_id": "published", "before": T0 + minute})
    await db[OUTCOMES].insert_many([
        outcome(ids("sent"), 1, "sent", final=True, at=T0),  # before the watermark: published
        outcome(ids("bounced"), 1, "bounced", final=True, at=T0),
        outcome(ids("deferred"), 1, "deferred", final=False, at=T0),
        outcome(ids("deferred-then-sent"), 1, "deferred", final=False, at=T0),
        outcome(ids("deferred-then-sent"), 2, "sent", final=True, at=T0 + 2 * minute),
        outcome(ids("notice-done"), 1, "sent", final=True, at=T0 + 3 * minute),
    ])
    await db[CLAIMS].insert_one({"_id": "k1", "message_ids": [ids("claimed-unrecorded")], "at": T0})

    fold = await store.load_pending()

    names = {ids(name): name for name in ("sent", "deferred", "deferred-then-sent", "never-tried",
                                          "claimed-unrecorded", "bounced", "ghost", "notice-done", "notice-open")}
    assert not fold.whole
    pending = {names[job["_id"]]: job for job in fold.pending}
    assert sorted(pending) == ["claimed-unrecorded", "deferred", "never-tried", "notice-open"]
    assert pending["deferred"]["attempts"] == 1 and pending["deferred"]["next_attempt_at"] == T0 + 10 * minute
    assert pending["never-tried"]["attempts"] == 0
    assert [names[job["_id"]] for job in fold.in_doubt] == ["claimed-unrecorded"]
    assert fold.finished == {"acme:c1": {"sent": 2, "bounced": 1}}
    assert [names[message_id] for message_id in fold.closed] == ["notice-done"]
    # Recorded since the watermark, oldest first: maybe unpublished.
    assert [doc["_id"] for doc in fold.republish] == [f"{ids('deferred-then-sent')}:2", f"{ids('notice-done')}:1"]
    assert all(doc["outcome_event"] == "{}" for doc in fold.republish)

    await store.close_jobs(fold.closed)
    assert [doc["_id"] async for doc in db[OPEN_JOBS].find({})] == [ids("notice-open")]
    again = await store.load_pending()
    assert again.closed == [] and sorted(names[job["_id"]] for job in again.pending) == sorted(pending)


async def test_a_ledger_written_before_the_lists_is_read_whole_once_and_its_open_work_listed(
        mongo: Any, settings: HeraldSettings) -> None:
    db = mongo[settings.database_name("delivery")]
    store = DeliveryStore(db)
    await store.ensure_indexes()
    ids = as_uuid
    jobs = [new_job(ids(name), "acme", "campaign", T0, campaign_id=campaign, subscriber_id=f"s-{name}",
                    list_id="news", campaign_key=f"acme:{campaign}")
            for name, campaign in (("sent", "c1"), ("never-tried", "c1"), ("old", "c0"))]
    jobs.append(new_job(ids("notice"), "acme", "account_notice", T0, recipient="o@acme.example", subject="s",
                        text="t"))
    # More than one list's worth (the fold writes a campaign's list each thousand ids, not all at the end).
    many = [f"many-{i}" for i in range(1_200)]
    jobs += [new_job(ids(name), "acme", "campaign", T0, campaign_id="c1", subscriber_id=f"s-{name}",
                     list_id="news", campaign_key="acme:c1") for name in many]
    await db["jobs"].insert_many(jobs)  # as an older version wrote them: no lists
    await db[OUTCOMES].insert_many([outcome(ids("sent"), 1, "sent", final=True, at=T0),
                                    outcome(ids("old"), 1, "sent", final=True, at=T0, campaign="c0"),
                                    *(outcome(ids(name), 1, "sent", final=True, at=T0) for name in many)])
    await db[FINISHED_CAMPAIGNS].insert_one({"_id": "acme:c0", "published": True})

    whole = await store.load_pending()
    listed = await DeliveryStore(db).load_pending()  # the next start, as a new process

    assert whole.whole and not listed.whole
    for fold in (whole, listed):
        assert sorted(job["_id"] for job in fold.pending) == sorted([ids("never-tried"), ids("notice")])
        assert fold.finished.get("acme:c1") == {"sent": 1 + len(many)}
    assert "acme:c0" not in listed.finished  # announced: its jobs are not listed, nor read again
    lists = [doc async for doc in db[JOB_INDEX].find({})]
    assert {doc["_id"].partition("/")[0] for doc in lists} == {"acme:c1"} and len(lists) == 2
    assert max(len(doc["ids"]) for doc in lists) == 1000
    assert sorted(i for doc in lists for i in doc["ids"]) == sorted(ids(n) for n in ["sent", "never-tried", *many])
    assert [doc["_id"] async for doc in db[OPEN_JOBS].find({})] == [ids("notice")]


async def test_a_start_publishes_again_what_a_crash_left_unpublished_then_closes_its_open_job(
        mongo: Any, settings: HeraldSettings, start_delivery: Any, world: World, relay: Any) -> None:
    """A notice was sent and its outcome recorded, then the process died before the event was published: the
    next start publishes it (with the same id), and only then closes its open job; it is not sent again."""
    db = mongo[settings.database_name("delivery")]
    store = DeliveryStore(db)
    await db[SENDER_STATE].insert_one({"_id": LEDGER_LISTED, "at": T0})  # listed by an earlier start
    message_id = as_uuid("notice")
    await store.add_jobs([new_job(message_id, "acme", "account_notice", T0, recipient="owner@acme.example",
                                  subject="s", text="t")])
    now = datetime.now(UTC)
    await db[SENDER_STATE].insert_one({"_id": "published", "before": now - timedelta(seconds=1)})
    event = MessageSent(event_id=outcome_event_id(message_id, "sent", 1), account_id="acme", producer="delivery",
                        payload={"message_id": message_id, "kind": "account_notice", "recipient_domain": "acme.example",
                                 "smtp_code": 250, "smtp_reply": "2.0.0 OK queued", "attempt": 1})
    recorded = outcome(message_id, 1, "sent", final=True, at=now, campaign="")
    recorded.update(campaign_id=None, outcome_event=serialize_event(event).decode())
    await db[OUTCOMES].insert_one(recorded)
    assert [doc["_id"] async for doc in db[OPEN_JOBS].find({})] == [message_id]

    await start_delivery()

    events = await world.wait_for(lambda es: any(e.event_id == event.event_id for e in es), "the outcome published")
    assert [e for e in events if isinstance(e, MessageSent)] == [event]
    await eventually(lambda: db[OPEN_JOBS].count_documents({}), lambda n: n == 0, what="its open job closed")
    assert relay.recipients() == []  # the relay had it: never sent twice


async def test_an_erasure_finds_the_jobs_holding_the_address_by_their_keys(mongo: Any,
                                                                            settings: HeraldSettings) -> None:
    """Confirmation jobs hold the subscriber's address: an erasure removes it from each of them, found by their
    `recipient_jobs` keys; on a ledger written before the keys, by a scan, until the first start lists them."""
    db = mongo[settings.database_name("delivery")]
    store = DeliveryStore(db)

    def confirmation(name: str, subscriber: str) -> dict[str, Any]:
        return new_job(ids(name), "acme", "confirmation", T0, subscriber_id=subscriber, list_id="news",
                       recipient=f"{subscriber}@example.org", greeting_name="Ann")

    ids = as_uuid
    await db["jobs"].insert_many([confirmation("old-s0", "s0"), confirmation("old-s1", "s1")])  # no keys
    await store.forget_recipient("acme", "s0")  # not listed yet: found by a scan
    await store.load_pending()  # the first start lists them
    assert [doc["_id"] async for doc in db[RECIPIENT_JOBS].find({})] == [f"acme:s1/{ids('old-s1')}"]
    await store.add_jobs([confirmation("new-s1", "s1"), confirmation("new-s2", "s2")])

    await store.forget_recipient("acme", "s1")

    jobs = {doc["_id"]: doc async for doc in db["jobs"].find({})}
    for erased in ("old-s0", "old-s1", "new-s1"):
        assert "recipient" not in jobs[ids(erased)] and "greeting_name" not in jobs[ids(erased)]
    assert jobs[ids("new-s2")]["recipient"] == "s2@example.org"
    assert [doc["_id"] async for doc in db[RECIPIENT_JOBS].find({})] == [f"acme:s2/{ids('new-s2')}"]
