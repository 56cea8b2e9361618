"""Retention (PRODUCT.md, "Data protection"): when billing purges an account, its campaigns (scheduled or in
review), lists, account, audit log, keys and reports leave the campaigns read model, and its later events are
dropped by both consumers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from herald_shared.contract.billing import AccountPurged
from herald_shared.contract.delivery import MessageSent
from tests.conftest import eventually
from tests.integration.helpers import documents_holding

from .conftest import Platform, draft

ACME = ("'acme'", "'acme/", "acme/")



def sent(n: int, campaign: str = "c1", account: str = "acme") -> MessageSent:
    return MessageSent(account_id=account, producer="delivery", payload={  # type: ignore[arg-type]
        "message_id": f"m{n}", "campaign_id": campaign, "subscriber_id": f"s{n}", "list_id": "news",
        "recipient_domain": "example.org", "smtp_code": 250})


async def test_a_purged_account_leaves_nothing_in_campaigns(platform: Platform) -> None:
    acme = await platform.tenant("acme", "news", account="paid")
    other = await platform.tenant("other", "news", account="paid")
    await platform.tenant("acme-trial", "news", account="trial")  # an id that starts like acme's
    assert (await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c1"})).status_code == 201
    later = (datetime.now(UTC) + timedelta(days=300)).replace(microsecond=0)  # a campaign is scheduled a year ahead
    scheduled = await acme.http.post("/v1/campaigns/c1/submission", json={"send_at": later.isoformat()})
    assert scheduled.json()["status"] == "scheduled"
    assert (await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c2"})).status_code == 201
    assert (await other.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c1"})).status_code == 201
    await platform.publisher.publish_many([sent(n) for n in range(5)] + [sent(9, account="other")])
    db = platform.service.db
    await eventually(lambda: documents_holding(db, "'acme/c1/herald.delivery'"), bool, what="acme's report counted")

    await platform.publisher.publish(AccountPurged(account_id="acme", producer="billing", payload={  # type: ignore[arg-type]
        "reason": "inactive", "since": "2024-11-01T00:00:00Z"}))
    await eventually(lambda: documents_holding(db, *ACME), lambda docs: docs == [],
                     what="acme purged from every collection")
    assert (await acme.http.get("/v1/campaigns")).status_code == 401
    assert (await other.http.get("/v1/campaigns/c1")).status_code == 200
    # Later events of the purged account are dropped by both consumers: a copy of its sends, then another
    # account's, counted after them.
    await platform.publisher.publish_many([*(e.model_copy(update={"event_id": uuid.uuid4()})
                                            for e in (sent(n) for n in range(5))), sent(10, account="other")])
    await eventually(lambda: other.http.get("/v1/campaigns/c1/report"), lambda r: r.json()["sent"] == 2,
                     what="the other account's later send counted")
    assert await documents_holding(db, *ACME) == []
    assert [k async for k in db["schedule"].find({})] == []
    assert await documents_holding(db, "acme-trial/news")  # a neighbour's keys are outside acme's range
