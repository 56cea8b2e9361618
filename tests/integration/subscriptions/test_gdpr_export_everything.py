"""The GDPR export gives everything held about the person (PRODUCT.md, "Subject rights: export ... of one subscriber's
data"): the activity past the first page, by following `next_cursor`, the oldest entries (with the client's IP and
user agent) included; and the deferrals, with the receiving server's reply, erased with the rest. Through the real
API, delivery's events folded by the real activity consumer, on the real stack."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from herald_shared.contract import Event
from herald_shared.contract.delivery import MessageDeferred, MessageOpened, MessageSent
from herald_subscriptions.activity import EXPORT_LIMIT
from herald_subscriptions.domain import stored_time
from tests.conftest import eventually
from tests.integration.helpers import documents_holding
from tests.integration.subscriptions.conftest import Platform, Tenant

IP, UA = "198.51.100.23", "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0"
CLIENT = {"ip": IP, "user_agent": UA, "device": "desktop", "browser": "Firefox", "country": "LV", "city": "Riga"}
REPLY = "452 4.2.2 Mailbox of address is over quota"


def message(cls: type[Event], subscriber_id: str, list_id: str, at: datetime, message_id: str,
            **fields: Any) -> Event:
    ref = {"message_id": message_id, "campaign_id": f"c-{message_id}", "subscriber_id": subscriber_id,
           "list_id": list_id}
    return cls(account_id="acme", producer="delivery", occurred_at=at,  # type: ignore[call-arg]
               payload={**ref, **fields})


async def export_pages(tenant: Tenant, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
    pages: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        response = await tenant.http.get(path, params={**params, **({"activity_cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        pages.append(response.json())
        cursor = pages[-1]["next_cursor"]
        assert pages[-1]["activity_truncated"] is (cursor is not None)
        if cursor is None:
            return pages
        assert len(pages) < 10, "the cursors go round"


async def test_following_next_cursor_exports_every_entry_once_the_oldest_included(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    for list_id in ("news", "offers"):
        await acme.create_list(list_id)
    ann = {list_id: (await acme.subscribe("ann@example.org", list_id)).json()["subscriber_id"]
           for list_id in ("news", "offers")}
    bob = (await acme.subscribe("bob@example.org")).json()["subscriber_id"]
    # Both of ann's memberships hear of each campaign at the same instant (a page may end between the two), and one
    # entry newer than all makes the first page end inside such a pair.
    t0 = datetime.now(UTC) - timedelta(days=800)
    oldest = message(MessageOpened, ann["offers"], "offers", t0, "m0", client=CLIENT)
    events: list[Event] = [oldest, message(MessageSent, bob, "news", t0, "m-bob", recipient_domain="example.org",
                                           smtp_code=250)]
    pairs = (EXPORT_LIMIT + 300) // 2
    for i in range(1, pairs + 1):
        at = t0 + timedelta(hours=2 * i)
        events += [message(MessageSent, ann[list_id], list_id, at, f"m{i}", recipient_domain="example.org",
                           smtp_code=250) for list_id in ("news", "offers")]
    events.append(message(MessageDeferred, ann["news"], "news", t0 + timedelta(hours=2 * pairs + 1), "m-late",
                          smtp_code=452, enhanced_status_code="4.2.2", diagnostic=REPLY, attempt=1,
                          next_attempt_at=t0 + timedelta(hours=2 * pairs + 2)))
    started = time.monotonic()
    for start in range(0, len(events), 2000):
        await platform.publisher.publish_many(events[start:start + 2000])
    held = len(events) - 1  # bob's is not ann's
    activity = platform.service.db["activity"]
    await eventually(lambda: activity.count_documents({"subscriber_id": {"$in": list(ann.values())}}),
                     lambda n: n == held, within=60, what="ann's activity folded")
    print(f"{len(events)} events folded in {time.monotonic() - started:.1f} s")

    started = time.monotonic()
    pages = await export_pages(acme, "/v1/gdpr/export", {"email": "ann@example.org"})
    print(f"{len(pages)} pages exported in {time.monotonic() - started:.1f} s")
    given = [entry for page in pages for entry in page["activity"]]
    assert [len(page["activity"]) for page in pages] == [EXPORT_LIMIT, held - EXPORT_LIMIT]
    split = f"m{pairs - EXPORT_LIMIT // 2 + 1}"  # the pair the first page ends inside
    assert {(e["subscriber_id"], e["message_id"]) for e in given[EXPORT_LIMIT - 1:EXPORT_LIMIT + 1]} == {
        (ann["news"], split), (ann["offers"], split)}
    assert len({(e["subscriber_id"], e["message_id"]) for e in given}) == held  # each once
    assert {e["subscriber_id"] for e in given} == set(ann.values())  # bob's is not hers
    times = [datetime.fromisoformat(e["at"]) for e in given]
    assert times == sorted(times, reverse=True)  # newest first, across the pages
    assert (given[0]["type"], given[0]["diagnostic"], given[0]["smtp_code"]) == ("deferred", REPLY, 452)
    assert given[-1] == {"type": "opened", "at": stored_time(t0).isoformat(), "kind": "campaign",
                         "subscriber_id": ann["offers"], "list_id": "offers", "campaign_id": "c-m0",
                         "message_id": "m0", **CLIENT, "automated": False}
    assert all(page["memberships"] == pages[0]["memberships"] for page in pages)

    by_hash = await export_pages(acme, f"/v1/gdpr/export/{hashlib.sha256(b'ann@example.org').hexdigest()}", {})
    assert [page["activity"] for page in by_hash] == [page["activity"] for page in pages]
    assert by_hash[0]["email"] == "ann@example.org"


async def test_a_cursor_that_is_none_is_refused_with_a_problem_document(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    for cursor in ("x", "20261102T093000000000Z.not-a-uuid.s1", "20261102T093000000000Z"):
        refused = await acme.http.get("/v1/gdpr/export", params={"email": "ann@example.org", "activity_cursor": cursor})
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert [e["location"] for e in refused.json()["errors"]] == ["query.activity_cursor"]
    spec = platform.service.app.openapi()
    for path in ("/v1/gdpr/export", "/v1/gdpr/export/{email_sha256}"):
        assert "activity_cursor" in [p["name"] for p in spec["paths"][path]["get"]["parameters"]]
        assert "422" in spec["paths"][path]["get"]["responses"]
    assert "next_cursor" in spec["components"]["schemas"]["ExportOut"]["properties"]


async def test_a_deferral_is_exported_with_the_servers_reply_and_erased_with_the_rest(platform: Platform) -> None:
    """A deferral's reply is what delivery's ledger holds about the person (addresses replaced by delivery)."""
    acme = await platform.tenant("acme")
    await acme.create_list("news")
    pia = (await acme.subscribe("pia@example.org")).json()["subscriber_id"]
    cara = (await acme.subscribe("cara@example.org")).json()["subscriber_id"]
    t = datetime.now(UTC) - timedelta(hours=1)
    await platform.publisher.publish_many([
        message(MessageDeferred, pia, "news", t, "m1", smtp_code=452, enhanced_status_code="4.2.2", diagnostic=REPLY,
                attempt=1, next_attempt_at=t + timedelta(minutes=5)),
        message(MessageSent, pia, "news", t + timedelta(minutes=5), "m1", recipient_domain="example.org",
                smtp_code=250, attempt=2)])
    exported = await eventually(lambda: acme.http.get("/v1/gdpr/export", params={"email": "pia@example.org"}),
                                lambda r: len(r.json()["activity"]) == 2, what="pia's activity")
    sent, deferred = exported.json()["activity"]
    assert sent["type"] == "sent"
    assert deferred == {"type": "deferred", "at": stored_time(t).isoformat(), "kind": "campaign",
                        "subscriber_id": pia, "list_id": "news", "campaign_id": "c-m1", "message_id": "m1",
                        "smtp_code": 452, "enhanced_status_code": "4.2.2", "diagnostic": REPLY, "attempt": 1}

    erased = await acme.http.post("/v1/gdpr/erase", json={"email": "pia@example.org"})
    assert erased.status_code == 200, erased.text
    assert (await acme.http.get("/v1/gdpr/export", params={"email": "pia@example.org"})).json()["activity"] == []
    assert await documents_holding(platform.service.db, REPLY) == []
    # A retry's deferral reported after the erasure brings nothing back.
    await platform.publisher.publish_many([
        message(MessageDeferred, pia, "news", datetime.now(UTC), "m2", smtp_code=452, diagnostic=REPLY, attempt=1,
                next_attempt_at=datetime.now(UTC) + timedelta(minutes=5)),
        message(MessageSent, cara, "news", datetime.now(UTC), "m3", recipient_domain="example.org", smtp_code=250)])
    await eventually(lambda: acme.http.get("/v1/gdpr/export", params={"email": "cara@example.org"}),
                     lambda r: len(r.json()["activity"]) == 1, what="cara's, folded after pia's late deferral")
    assert await documents_holding(platform.service.db, REPLY) == []
