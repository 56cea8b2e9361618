"""The trial on the real stack (PRODUCT.md, "Plans and billing"): 30 days, 20 subscribers, 100 emails. Usage comes
from the other services' events: subscribers from the subscriptions service itself (driven through its API with
a key billing issued), sends from MessageSent events as delivery publishes them."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from herald_billing.store import BillingProjection
from herald_shared.contract.billing import QuotaExhausted, SendingBlocked, TrialEnded
from herald_shared.contract.delivery import MessageBounced, MessageSent
from herald_shared.contract.subscriptions import ListCreated, ListDeleted, SubscriberAdded
from herald_shared.kafka import EventPublisher
from herald_shared.mongo import rebuild
from herald_shared.settings import HeraldSettings
from herald_subscriptions.main import Subscriptions
from tests.conftest import eventually

from .helpers import Platform, account, running_billing

T = "2026-10-01T10:00:00+00:00"


def subscriptions_api(subscriptions: Subscriptions, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=subscriptions.app), base_url="http://subs",
                             headers={"Authorization": f"Bearer {key}"})


async def import_rows(subscriptions: Subscriptions, key: str, emails: list[str]) -> None:
    http = subscriptions_api(subscriptions, key)
    await eventually(lambda: subscriptions.apikeys.authenticate(key), lambda a: a is not None,
                     what="the key billing issued, known to subscriptions")
    if (await http.get("/v1/lists/news")).status_code == 404:
        created = await http.post("/v1/lists", json={"list_id": "news", "name": "News", "opt_in": "single"})
        assert created.status_code == 201, created.text
    body = "email,consent_method,consent_at\n" + "".join(f"{e},shop checkbox,{T}\n" for e in emails)
    imported = await http.post("/v1/lists/news/imports", content=body.encode(), headers={"Content-Type": "text/csv"})
    assert imported.status_code == 202 and imported.json()["rows_imported"] == len(emails), imported.text


async def test_a_key_billing_issues_is_accepted_by_subscriptions_until_revoked(
        platform: Platform, subscriptions: Subscriptions) -> None:
    ada = await platform.sign_up("ada")
    issued = await ada.http.post("/v1/account/api-keys", json={"label": "crm"})
    assert issued.status_code == 201
    key = issued.json()["key"]
    assert key.startswith("hk_") and "key" not in (await ada.http.get("/v1/account/api-keys")).json()["items"][0]
    await import_rows(subscriptions, key, ["one@example.com"])
    revoked = await ada.http.post(f"/v1/account/api-keys/{issued.json()['key_id']}/revocation", json={})
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    await eventually(lambda: subscriptions.apikeys.authenticate(key), lambda a: a is None,
                     what="the revocation, known to subscriptions")


async def test_the_21st_stored_subscriber_ends_the_trial_for_good(platform: Platform,
                                                                  subscriptions: Subscriptions) -> None:
    ada = await platform.sign_up("ada")
    key = (await ada.http.post("/v1/account/api-keys", json={})).json()["key"]
    await import_rows(subscriptions, key, [f"p{i}@example.com" for i in range(20)])
    # The same people added again (as after an unsubscribe, through the form) are stored once.
    added = [e for e in await platform.events("herald.subscriptions") if isinstance(e, SubscriberAdded)]
    await platform.publisher.publish_many([e.model_copy(update={"event_id": uuid.uuid4()}) for e in added[:5]])
    await eventually(lambda: account(ada), lambda a: a["usage"]["subscribers"] == 20, what="20 subscribers counted")
    assert (await account(ada))["plan"] == "trial"
    await import_rows(subscriptions, key, ["p20@example.com"])
    ended = await eventually(lambda: account(ada), lambda a: a["plan"] == "trial_ended", what="trial ended")
    assert ended["trial"]["ended_reason"] == "subscriber_limit_exceeded"
    assert ended["sending_blocked"] == ["trial_ended"] and ended["usage"]["subscribers"] == 21
    events = [e for e in await platform.events() if isinstance(e, (TrialEnded, SendingBlocked))]
    assert [(type(e), getattr(e.payload, "reason", None)) for e in events] == [
        (TrialEnded, "subscriber_limit_exceeded"), (SendingBlocked, "trial_ended")]
    # Deleting the list afterwards does not bring the trial back.
    assert (await subscriptions_api(subscriptions, key).delete("/v1/lists/news")).status_code == 204
    after = await eventually(lambda: account(ada), lambda a: a["usage"]["subscribers"] == 0, what="list deleted")
    assert after["plan"] == "trial_ended" and after["sending_blocked"] == ["trial_ended"]


@pytest.mark.parametrize("dated", [None, datetime.fromisoformat("2019-06-01T10:00:00+00:00")],
                         ids=["now", "before-the-account-opened"])
async def test_subscribers_deleted_before_billing_looked_do_not_save_the_trial(
        settings: HeraldSettings, producer: AIOKafkaProducer, dated: datetime | None) -> None:
    """PRODUCT.md: the trial ends "as soon as the subscriber limit is exceeded, even if subscribers are deleted
    afterwards": 25 imported and their list deleted while billing was stopped end it once billing caught up
    (its guard decides then, from what it folded: 0 stored, 25 at the most). Dated before the account opened (a
    CRM giving when each person subscribed, or a clock behind), they are stored on the trial all the same."""
    async with running_billing(settings) as platform:
        ada = await platform.sign_up("ada")
    consent = {"source": "import", "collected_at": T, "method": "shop checkbox"}
    added = [SubscriberAdded(account_id=ada.account_id, producer="subscriptions",
                             **({"occurred_at": dated} if dated else {}), payload={  # type: ignore[arg-type]
        "list_id": "news", "subscriber_id": f"s{n}", "email": f"p{n}@example.com",
        "email_sha256": hashlib.sha256(f"p{n}@example.com".encode()).hexdigest(),
        "opt_in": "single", "consent": consent}) for n in range(25)]
    created = ListCreated(account_id=ada.account_id, producer="subscriptions",
                          payload={"list_id": "news", "name": "News", "opt_in": "single"})  # type: ignore[arg-type]
    deleted = ListDeleted(account_id=ada.account_id, producer="subscriptions",
                          payload={"list_id": "news", "members_at_deletion": 25})  # type: ignore[arg-type]
    await EventPublisher(producer, settings.topics).publish_many([created, *added, deleted])
    async with running_billing(settings) as platform:
        ada = await platform.log_in("ada", ada.account_id)
        ended = await eventually(lambda: account(ada), lambda a: a["plan"] == "trial_ended", what="trial ended")
        assert ended["trial"]["ended_reason"] == "subscriber_limit_exceeded" and ended["usage"]["subscribers"] == 0
        decided = {(e.event_id, e.payload.subscribers) for e in await platform.events() if isinstance(e, TrialEnded)}
        assert [n for _, n in decided] == [25]


def sent(account_id: str, n: int, kind: str = "campaign") -> MessageSent:
    return MessageSent(account_id=account_id, producer="delivery", payload={  # type: ignore[arg-type]
        "message_id": f"m{n}-{kind}", "kind": kind, "campaign_id": "c1" if kind == "campaign" else None,
        "subscriber_id": f"s{n}" if kind == "campaign" else None, "recipient_domain": "example.com",
        "smtp_code": 250})


async def test_the_100th_campaign_email_exhausts_the_trial(platform: Platform) -> None:
    ada = await platform.sign_up("ada")
    first = [sent(ada.account_id, n) for n in range(99)]
    # Copies of an event, confirmations and account notices are not counted.
    await platform.publisher.publish_many([*first, *first[:10], sent(ada.account_id, 1, "confirmation"),
                                           sent(ada.account_id, 3, "account_notice")])
    await eventually(lambda: account(ada), lambda a: a["usage"]["trial_emails"] == 99, what="99 emails counted")
    assert (await account(ada))["sending_blocked"] == []
    await platform.publisher.publish(sent(ada.account_id, 99))
    blocked = await eventually(lambda: account(ada), lambda a: a["sending_blocked"] != [], what="trial quota")
    assert blocked["sending_blocked"] == ["trial_quota_reached"] and blocked["plan"] == "trial"
    exhausted = [e for e in await platform.events() if isinstance(e, QuotaExhausted)]
    assert [(e.payload.quota, e.payload.limit, e.payload.used) for e in exhausted] == [("trial_emails", 100, 100)]


async def test_test_sends_count_toward_the_trials_100_emails(platform: Platform) -> None:
    """PRODUCT.md: the trial allows "at most 20 subscribers and 100 emails". A test send is an email (campaigns
    sends tests unreviewed, 50 a day): 60 campaign emails and 40 test sends exhaust the trial, a test send the
    receiving server refused included; a paid plan does not count them (test_plans)."""
    ada = await platform.sign_up("ada")
    refused_test = MessageBounced(account_id=ada.account_id, producer="delivery", payload={  # type: ignore[arg-type]
        "message_id": "m-refused-test", "kind": "test", "bounce_class": "block", "smtp_code": 550,
        "diagnostic": "550 5.7.1 refused", "source": "smtp_reply"})
    await platform.publisher.publish_many([*(sent(ada.account_id, n) for n in range(60)),
                                           *(sent(ada.account_id, n, "test") for n in range(38)), refused_test])
    counted = await eventually(lambda: account(ada), lambda a: a["usage"]["trial_emails"] == 99, what="99 counted")
    assert counted["sending_blocked"] == []
    await platform.publisher.publish(sent(ada.account_id, 38, "test"))
    blocked = await eventually(lambda: account(ada), lambda a: a["sending_blocked"] != [], what="trial quota")
    assert blocked["sending_blocked"] == ["trial_quota_reached"] and blocked["usage"]["trial_emails"] == 100


async def test_the_trial_ends_at_day_30(platform: Platform) -> None:
    ada = await platform.sign_up("ada")
    opened = datetime.fromisoformat((await account(ada))["opened_at"])
    platform.set_clock(lambda: opened + timedelta(days=30) - timedelta(seconds=1))
    assert await platform.service.clock.tick() == 0
    platform.set_clock(lambda: opened + timedelta(days=30))
    assert await platform.service.clock.tick() == 2
    ada = await platform.log_in("ada", ada.account_id)  # the clock moved past the first session's end
    ended = await eventually(lambda: account(ada), lambda a: a["plan"] == "trial_ended", what="trial expired")
    assert ended["trial"]["ended_reason"] == "expired" and ended["sending_blocked"] == ["trial_ended"]
    assert await platform.service.clock.tick() == 0  # no longer on trial: nothing more to decide
    ids = {e.event_id for e in await platform.events() if isinstance(e, TrialEnded)}
    assert len(ids) == 1 and ids == {uuid.uuid5(uuid.UUID("5b0e3c9a-1f7d-4e62-8a4b-c3d2e1f0a9b8"),
                                                f"trial-ended:{ada.account_id}")}


async def test_the_read_model_rebuilt_from_the_topics_equals_the_live_one(platform: Platform,
                                                                        subscriptions: Subscriptions) -> None:
    """Usage and accounts are folded from events only: a rebuild from offset 0 gives the same documents, copies
    of events included (each counted once)."""
    ada = await platform.sign_up("ada")
    key = (await ada.http.post("/v1/account/api-keys", json={})).json()["key"]
    await import_rows(subscriptions, key, [f"p{i}@example.com" for i in range(21)])
    first = [sent(ada.account_id, n) for n in range(30)]
    await platform.publisher.publish_many([*first, *first[:5]])
    await eventually(lambda: account(ada), lambda a: a["plan"] == "trial_ended" and a["usage"]["trial_emails"] == 30,
                     what="the trial ended and 30 emails counted")
    assert (await subscriptions_api(subscriptions, key).delete("/v1/lists/news")).status_code == 204
    await eventually(lambda: account(ada), lambda a: a["usage"]["subscribers"] == 0, what="the list deleted")
    live = platform.service.projection
    rebuilt = BillingProjection(platform.service.mongo[platform.service.settings.database_name("billing_rebuilt")])
    await rebuild(rebuilt, platform.service.settings, ["herald.billing", "herald.subscriptions", "herald.delivery"],
                  lead=["herald.billing"])
    for name in ("accounts", "users", "usage", "members", "lists", "keys", "trials", "review", "audit"):
        assert await dump(rebuilt.db[name]) == await dump(live.db[name]), name


async def dump(collection: Any) -> list[dict[str, Any]]:
    return [doc async for doc in collection.find({}).sort("_id", 1)]
