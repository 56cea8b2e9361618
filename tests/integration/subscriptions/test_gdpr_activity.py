"""A person's activity in the GDPR export (PRODUCT.md, "Data protection": IP, country/city, device, browser and the
times of opens, clicks and bounces are collected; export and erasure of one subscriber's data on request; a purged
account leaves nothing): delivery's events folded into the `activity` read model, on the real stack."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from herald_shared.contract import Event
from herald_shared.contract.billing import AccountPurged
from herald_shared.contract.delivery import (
    ComplaintReceived,
    LinkClicked,
    MessageBounced,
    MessageOpened,
    MessageSent,
)
from herald_shared.readmodel import prefix_range
from herald_subscriptions.activity import mark_erasures
from herald_subscriptions.domain import stored_time
from tests.conftest import eventually
from tests.integration.helpers import documents_holding
from tests.integration.subscriptions.conftest import Platform, Tenant

IP, UA = "198.51.100.23", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"
CLIENT = {"ip": IP, "user_agent": UA, "device": "mobile", "browser": "Safari", "country": "LV", "city": "Jurmala"}


def message(cls: type[Event], account_id: str, subscriber_id: str, at: datetime, message_id: str = "m1",
            **fields: Any) -> Event:
    ref = {"message_id": message_id, "campaign_id": "c1", "subscriber_id": subscriber_id, "list_id": "news"}
    return cls(account_id=account_id, producer="delivery", occurred_at=at,  # type: ignore[call-arg]
               payload={**ref, **fields})


def sent(account_id: str, subscriber_id: str, at: datetime, message_id: str = "m1") -> Event:
    return message(MessageSent, account_id, subscriber_id, at, message_id, recipient_domain="example.org",
                   smtp_code=250)


def opened(account_id: str, subscriber_id: str, at: datetime, message_id: str = "m1") -> Event:
    return message(MessageOpened, account_id, subscriber_id, at, message_id, client=CLIENT)


async def export(tenant: Tenant, email: str) -> dict[str, Any]:
    response = await tenant.http.get("/v1/gdpr/export", params={"email": email})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def activity_of(platform: Platform, *prefix: str) -> list[dict[str, Any]]:
    return await platform.service.db["activity"].find({"_id": prefix_range(*prefix)}).to_list()


async def test_the_export_holds_the_persons_messages_bounces_opens_and_clicks_and_erasure_removes_them(
        platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list("news")
    ann = (await acme.subscribe("ann@example.org")).json()["subscriber_id"]
    bob = (await acme.subscribe("bob@example.org")).json()["subscriber_id"]
    t = datetime.now(UTC) - timedelta(hours=1)
    click = message(LinkClicked, "acme", ann, t + timedelta(minutes=3), url="https://acme.example/offer",
                    link_index=0, client=CLIENT)
    await platform.publisher.publish_many([
        # A complaint: who complained is never disclosed; it reads as a hard bounce does (`suppressed`).
        message(ComplaintReceived, "acme", ann, t + timedelta(minutes=4), "m0", feedback_type="abuse",
                reporting_domain="mail.example.net"),
        sent("acme", ann, t),
        message(MessageBounced, "acme", ann, t + timedelta(minutes=1), "m2", bounce_class="soft",
                diagnostic="452 4.2.2 mailbox full", source="dsn", smtp_code=452),
        opened("acme", ann, t + timedelta(minutes=2)),
        click,
    ])
    held = await eventually(lambda: export(acme, "ann@example.org"), lambda e: len(e["activity"]) == 5,
                            what="ann's activity exported")
    # newest first
    assert [a["type"] for a in held["activity"]] == ["suppressed", "clicked", "opened", "bounced", "sent"]
    assert held["activity_truncated"] is False
    suppressed, clicked, opened_, bounced, sent_ = held["activity"]
    assert suppressed == {"type": "suppressed", "at": suppressed["at"], "kind": "campaign", "subscriber_id": ann,
                          "list_id": "news"}
    assert {k: clicked[k] for k in ("subscriber_id", "campaign_id", "message_id", "kind", "url", "ip", "user_agent",
                                    "device", "browser", "country", "city")} == {
        "subscriber_id": ann, "campaign_id": "c1", "message_id": "m1", "kind": "campaign",
        "url": "https://acme.example/offer", **CLIENT}
    assert (opened_["ip"], opened_["user_agent"]) == (IP, UA)
    assert datetime.fromisoformat(opened_["at"]) == stored_time(t + timedelta(minutes=2))
    assert (bounced["bounce_class"], bounced["diagnostic"], bounced["bounce_source"]) == (
        "soft", "452 4.2.2 mailbox full", "dsn")
    assert sent_["message_id"] == "m1" and "ip" not in sent_
    assert "m0" not in str(held["activity"]) and "abuse" not in str(held)  # no trace of the complaint
    assert (await export(acme, "bob@example.org"))["activity"] == []

    # A copy of an event (redelivered, or published again) adds nothing.
    await platform.publisher.publish_many([click, sent("acme", bob, t)])
    await eventually(lambda: export(acme, "bob@example.org"), lambda e: len(e["activity"]) == 1, what="bob's")
    assert len((await export(acme, "ann@example.org"))["activity"]) == 5

    erased = await acme.http.post("/v1/gdpr/erase", json={"email": "ann@example.org"})
    assert erased.status_code == 200, erased.text
    after = await export(acme, "ann@example.org")
    assert (after["memberships"], after["activity"], after["activity_truncated"]) == ([], [], False)
    assert await activity_of(platform, "acme", ann) == []  # deleted by the time the erasure is answered
    db = platform.service.db
    assert await documents_holding(db, IP, UA, "mailbox full") == []

    # An open of the old message after the erasure brings nothing of the person back.
    await platform.publisher.publish_many([opened("acme", ann, datetime.now(UTC)),
                                           opened("acme", bob, datetime.now(UTC), "m9")])
    await eventually(lambda: export(acme, "bob@example.org"), lambda e: len(e["activity"]) == 2,
                     what="bob's open, handled after ann's")
    assert await activity_of(platform, "acme", ann) == []
    assert [d for d in await documents_holding(db, IP) if ann in d] == []


async def test_a_purged_accounts_activity_is_deleted_and_another_accounts_stays(platform: Platform) -> None:
    acme, other = await platform.tenant("acme"), await platform.tenant("other")
    for tenant in (acme, other):
        await tenant.create_list("news")
    ann = (await acme.subscribe("ann@example.org")).json()["subscriber_id"]
    cara = (await acme.subscribe("cara@example.org")).json()["subscriber_id"]
    ann_elsewhere = (await other.subscribe("ann@example.org")).json()["subscriber_id"]
    now = datetime.now(UTC)
    await platform.publisher.publish_many([sent("acme", ann, now), opened("acme", ann, now), sent("acme", cara, now),
                                           opened("other", ann_elsewhere, now)])
    await eventually(lambda: export(other, "ann@example.org"), lambda e: len(e["activity"]) == 1, what="other's")
    await eventually(lambda: export(acme, "ann@example.org"), lambda e: len(e["activity"]) == 2, what="acme's")
    await acme.http.post("/v1/gdpr/erase", json={"email": "cara@example.org"})  # leaves an erasure's tombstone
    erasures = platform.service.db["activity_erased"]
    assert [d["subscriber_id"] for d in await erasures.find({"_id": prefix_range("acme")}).to_list()] == [cara]

    await platform.publisher.publish(AccountPurged(account_id="acme", producer="billing", payload={  # type: ignore[arg-type]
        "reason": "deleted", "since": "2026-08-01T00:00:00Z"}))
    await eventually(lambda: activity_of(platform, "acme"), lambda docs: docs == [], what="acme's activity purged")
    # Deleted after the activity, in the same purge (one consumer's or the other's): waited for, not raced.
    await eventually(lambda: erasures.find({"_id": prefix_range("acme")}).to_list(), lambda docs: docs == [],
                     what="acme's erasure tombstones purged")
    assert [d["subscriber_id"] for d in await activity_of(platform, "other")] == [ann_elsewhere]

    # A late event of the purged account is dropped.
    await platform.publisher.publish_many([opened("acme", ann, datetime.now(UTC), "m7"),
                                           sent("other", ann_elsewhere, datetime.now(UTC), "m8")])
    await eventually(lambda: activity_of(platform, "other"), lambda docs: len(docs) == 2, what="other's later send")
    assert await activity_of(platform, "acme") == []


async def test_members_erased_before_the_activity_existed_get_their_tombstones_once(platform: Platform) -> None:
    """The activity consumer of a new deployment reads herald.delivery from offset 0: the opens of people erased
    before then must not come back."""
    acme = await platform.tenant("acme")
    await acme.create_list("news")
    ann = (await acme.subscribe("ann@example.org")).json()["subscriber_id"]
    bob = (await acme.subscribe("bob@example.org")).json()["subscriber_id"]
    assert (await acme.http.post("/v1/gdpr/erase", json={"email": "ann@example.org"})).status_code == 200
    db = platform.service.db
    await db["activity_erased"].delete_many({})  # as a database of the version before holds it
    await db["read_model_format"].delete_one({"_id": "activity_erased"})

    await mark_erasures(db)
    [tombstone] = await db["activity_erased"].find({}).to_list()
    assert (tombstone["subscriber_id"], set(tombstone)) == (ann, {"_id", "account_id", "subscriber_id", "erased_at"})
    await platform.publisher.publish_many([opened("acme", ann, datetime.now(UTC) - timedelta(days=30)),
                                           opened("acme", bob, datetime.now(UTC))])
    await eventually(lambda: activity_of(platform, "acme", bob), lambda docs: len(docs) == 1, what="bob's open")
    assert await activity_of(platform, "acme", ann) == []


async def test_a_re_add_after_the_erasure_is_a_return_only_once_the_person_confirms(platform: Platform) -> None:
    """README: a delivery event that comes after the erasure is not stored unless the person joined the list again.
    Anyone can post the hosted form with an address: until the person confirms, an open of a message they got
    before the erasure brings nothing back; from their confirmation on, their activity is theirs again."""
    from urllib.parse import urlsplit

    from herald_shared.contract.subscriptions import ConfirmationRequested

    acme = await platform.tenant("acme")
    await acme.create_list("news", opt_in="double")
    ann = (await acme.subscribe("ann@example.org")).json()["subscriber_id"]
    bob = (await acme.subscribe("bob@example.org")).json()["subscriber_id"]
    assert (await acme.http.post("/v1/gdpr/erase", json={"email": "ann@example.org"})).status_code == 200
    form = await platform.submit("/subscribe/acme/news", {"email": "ann@example.org", "consent": "yes"})
    assert "Check your inbox" in form.text
    assert (await acme.http.get(f"/v1/subscribers/{ann}")).json()["status"] == "pending"

    await platform.publisher.publish_many([opened("acme", ann, datetime.now(UTC), "m-old"),
                                           opened("acme", bob, datetime.now(UTC), "m-bob")])
    await eventually(lambda: activity_of(platform, "acme", bob), lambda docs: len(docs) == 1,
                     what="bob's open, handled after ann's")
    assert await activity_of(platform, "acme", ann) == []

    requests = [e for e in await platform.events() if isinstance(e, ConfirmationRequested)
                and e.payload.subscriber_id == ann]
    confirmed = await platform.submit(urlsplit(str(requests[-1].payload.confirm_url)).path)
    assert "Subscription confirmed" in confirmed.text
    await eventually(lambda: acme.http.get(f"/v1/subscribers/{ann}"), lambda r: r.json()["status"] == "active",
                     what="ann confirmed")
    await platform.publisher.publish(opened("acme", ann, datetime.now(UTC), "m-new"))
    kept = await eventually(lambda: activity_of(platform, "acme", ann), lambda docs: len(docs) == 1,
                            what="ann's open after her confirmation")
    assert kept[0]["message_id"] == "m-new"
