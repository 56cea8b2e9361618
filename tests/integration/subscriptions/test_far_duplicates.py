"""A copy of a membership event published again long after the original (a dead letter replayed, a producer
re-sending by hand) changes nothing, though the consumer stores no id for these events: each membership keeps
the ids of the events applied to it."""

from __future__ import annotations

from herald_shared.contract.subscriptions import SubscriberAdded, SubscriberUnsubscribed
from herald_subscriptions.store import MEMBER_EVENTS
from tests.integration.subscriptions.conftest import Platform


async def test_old_membership_events_published_again_change_nothing(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list()
    member_id = (await acme.subscribe("anna@example.com")).json()["subscriber_id"]
    assert (await acme.http.post(f"/v1/subscribers/{member_id}/unsubscribe")).status_code == 200
    before = (await acme.http.get(f"/v1/subscribers/{member_id}")).json()
    assert before["status"] == "unsubscribed"
    counts = {"pending": 0, "active": 0, "unsubscribed": 1, "suppressed": 0}
    assert (await acme.http.get("/v1/lists/news")).json()["counts"] == counts

    # The membership events so far published again, the add last: folded anew, it would bring the person back.
    history = [e for e in await platform.events() if isinstance(e, MEMBER_EVENTS)]
    assert {SubscriberAdded, SubscriberUnsubscribed} <= {type(e) for e in history}
    history.sort(key=lambda e: isinstance(e, SubscriberAdded))
    await platform.publisher.publish_many(history)
    # A write after the copies: once it is visible, the copies before it in the partition were folded.
    assert (await acme.subscribe("ben@example.com")).status_code == 201

    assert (await acme.http.get(f"/v1/subscribers/{member_id}")).json() == before
    assert (await acme.http.get("/v1/lists/news")).json()["counts"] == {**counts, "active": 1}
    # ... and the consumer stored no id of them: the membership itself recognised them.
    processed = platform.service.db["processed_events.projection"]
    assert await processed.count_documents({"_id": {"$in": [str(e.event_id) for e in history]}}) == 0
