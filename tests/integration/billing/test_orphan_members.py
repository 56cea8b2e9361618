"""Members of a list the account never created (another producer's, a CRM's, typo'd list id), or of one deleted:
subscriptions dead-letters each (PRODUCT.md: bad input gets "a dead-letter entry with the reason", never a silent
acceptance), and billing counts none of them toward the trial's 20 subscribers or the tier's limit."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from herald_billing.store import CREATED_LISTS_MARK
from herald_shared.contract.subscriptions import SubscriberAdded
from herald_shared.kafka import DLQ_CONSUMER, DLQ_REASON, end_offsets, read_from_start
from herald_shared.rebuilding import FORMATS
from herald_shared.settings import HeraldSettings
from herald_subscriptions import domain
from herald_subscriptions.main import Subscriptions
from tests.conftest import eventually

from .helpers import Customer, Platform, account, running_billing

TYPO = "newsletter-typo"


def crm_added(account_id: str, list_id: str, n: int) -> SubscriberAdded:
    email = f"p{n}@example.com"
    return SubscriberAdded(account_id=account_id, producer="crm", payload={  # type: ignore[arg-type]
        "list_id": list_id, "subscriber_id": domain.subscriber_id_for(account_id, list_id, email), "email": email,
        "email_sha256": hashlib.sha256(email.encode()).hexdigest(), "opt_in": "single",
        "consent": {"source": "import", "collected_at": "2026-10-01T10:00:00Z", "method": "crm sync"}})


async def subscriptions_client(subscriptions: Subscriptions, customer: Customer) -> httpx.AsyncClient:
    key = (await customer.http.post("/v1/account/api-keys", json={"label": "crm"})).json()["key"]
    await eventually(lambda: subscriptions.apikeys.authenticate(key), lambda a: a is not None,
                     what="the key billing issued, known to subscriptions")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=subscriptions.app), base_url="http://subs",
                             headers={"Authorization": f"Bearer {key}"})


async def behind(settings: HeraldSettings, group: str, base: str) -> int:
    """Records of a base topic the consumer group has not committed yet (0: it processed or dead-lettered all)."""
    topic = settings.topics(base)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, client_id="orphan-tests")
    await admin.start()
    try:
        done = {tp: meta.offset for tp, meta in (await admin.list_consumer_group_offsets(
            settings.topic_prefix + group)).items()}
    finally:
        await admin.close()
    return sum(end - max(done.get(TopicPartition(topic, p), 0), 0)
               for p, end in (await end_offsets(settings, topic)).items())


async def dead_letters(settings: HeraldSettings, base: str) -> list[tuple[str, str]]:
    """(consumer, reason) of every dead letter of a base topic."""
    found = []
    async for records in read_from_start(settings, [settings.topics.dead_letter(base)]):
        for record in records:
            headers = {k: bytes(v).decode() for k, v in record.headers}
            found.append((headers[DLQ_CONSUMER].removeprefix(settings.topic_prefix), headers[DLQ_REASON]))
    return found


async def all_folded(settings: HeraldSettings) -> None:
    for group in ("subscriptions.projection", "billing.projection"):
        await eventually(lambda g=group: behind(settings, g, "herald.subscriptions"),  # type: ignore[misc]
                         lambda left: left == 0, what=f"{group} at the end of herald.subscriptions")


async def test_21_members_of_a_list_never_created_are_dead_lettered_and_leave_the_trial_alone(
        settings: HeraldSettings, platform: Platform, subscriptions: Subscriptions) -> None:
    ada = await platform.sign_up("ada")
    http = await subscriptions_client(subscriptions, ada)
    await platform.publisher.publish_many([crm_added(ada.account_id, TYPO, n) for n in range(21)])
    await all_folded(settings)

    letters = await dead_letters(settings, "herald.subscriptions")
    assert len(letters) == 21, letters
    assert {consumer for consumer, _ in letters} == {"subscriptions.projection"}
    assert all(reason.startswith("rejected: SubscriberAdded") and f"list '{TYPO}'" in reason
               and "never created" in reason for _, reason in letters), letters[0]
    after = await account(ada)
    assert (after["plan"], after["usage"]["subscribers"], after["sending_blocked"]) == ("trial", 0, [])
    assert (await http.get(f"/v1/subscribers/{crm_added(ada.account_id, TYPO, 0).payload.subscriber_id}")
            ).status_code == 404
    assert (await http.get("/v1/lists")).json()["items"] == []

    # The list created after all: its own members are taken and counted (20: still within the trial).
    created = await http.post("/v1/lists", json={"list_id": TYPO, "name": "News", "opt_in": "single"})
    assert created.status_code == 201, created.text
    await platform.publisher.publish_many([crm_added(ada.account_id, TYPO, n) for n in range(100, 120)])
    counted = await eventually(lambda: account(ada), lambda a: a["usage"]["subscribers"] == 20, what="20 counted")
    assert counted["plan"] == "trial"
    await eventually(lambda: http.get(f"/v1/lists/{TYPO}"), lambda r: r.json()["counts"]["pending"] == 20,
                     what="the 20 on the list")  # added, not confirmed
    assert len(await dead_letters(settings, "herald.subscriptions")) == 21


async def test_members_of_a_deleted_list_are_dead_lettered_and_not_counted(
        settings: HeraldSettings, platform: Platform, subscriptions: Subscriptions,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A producer's members after the deletion, and the service's own subscribe that read the list just before
    it was deleted (its events recorded after the ListDeleted): refused as "list deleted", answered 404."""
    ada = await platform.sign_up("ada")
    http = await subscriptions_client(subscriptions, ada)
    assert (await http.post("/v1/lists", json={"list_id": "news", "name": "News", "opt_in": "single"})
            ).status_code == 201
    kept = await subscriptions.service.store.list_state(ada.account_id, "news")
    assert (await http.delete("/v1/lists/news")).status_code == 204

    await platform.publisher.publish_many([crm_added(ada.account_id, "news", n) for n in range(21)])
    stale: list[Any] = [kept]
    read = subscriptions.service.store.list_state

    async def list_read_before_the_deletion(account_id: str, list_id: str) -> Any:
        return stale.pop() if stale else await read(account_id, list_id)

    monkeypatch.setattr(subscriptions.service.store, "list_state", list_read_before_the_deletion)
    late = await http.post("/v1/lists/news/subscribers", json={
        "email": "late@example.com", "consent": {"method": "signup form on example.com"}})
    assert late.status_code == 404 and late.json()["type"].endswith("/list_not_found"), late.text
    await all_folded(settings)

    letters = await dead_letters(settings, "herald.subscriptions")
    # 21 of the producer's, and the late subscribe's SubscriberAdded and SubscriberConfirmed (single opt-in)
    assert len(letters) == 23, letters
    assert all(reason.startswith("rejected: ") and "list 'news'" in reason and reason.endswith("list deleted")
               for _, reason in letters), letters
    after = await account(ada)
    assert (after["plan"], after["usage"]["subscribers"], after["sending_blocked"]) == ("trial", 0, [])
    late_id = domain.subscriber_id_for(ada.account_id, "news", "late@example.com")
    assert (await http.get(f"/v1/subscribers/{late_id}")).status_code == 404


async def test_lists_created_before_billing_followed_them_still_count_their_members(
        settings: HeraldSettings, subscriptions: Subscriptions, mongo: Any) -> None:
    """The upgrade: billing's read model from the version before knows no list as created (it recorded deletions
    only), so at its first start this version learns them from herald.subscriptions; a list's members then
    count as before (here, the 21st ends the trial)."""
    async with running_billing(settings) as platform:
        ada = await platform.sign_up("ada")
        http = await subscriptions_client(subscriptions, ada)
        assert (await http.post("/v1/lists", json={"list_id": "news", "name": "News", "opt_in": "single"})
                ).status_code == 201
        await all_folded(settings)
    db = mongo[settings.database_name("billing")]
    assert await db["lists"].find_one({"_id": f"{ada.account_id}/news"}) == {
        "_id": f"{ada.account_id}/news", "created": True}
    await db["lists"].delete_many({})  # as the version before left it
    await db[FORMATS].delete_one({"_id": CREATED_LISTS_MARK})

    async with running_billing(settings) as platform:
        ada = await platform.log_in("ada", ada.account_id)
        await platform.publisher.publish_many([crm_added(ada.account_id, "news", n) for n in range(21)])
        ended = await eventually(lambda: account(ada), lambda a: a["plan"] == "trial_ended", what="the trial ended")
        assert ended["usage"]["subscribers"] == 21 and ended["trial"]["ended_reason"] == "subscriber_limit_exceeded"
    assert await db[FORMATS].find_one({"_id": CREATED_LISTS_MARK}) is not None
