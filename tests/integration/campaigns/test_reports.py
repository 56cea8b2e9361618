"""A campaign's report on the real stack, from delivery's and subscriptions' events published as those services
publish them: counts by kind and class, unique and total engagement (a mail scanner's apart), exact when events
are redelivered, and no answer ever says who complained."""

from __future__ import annotations

from typing import Any

import httpx

from herald_campaigns.store import CampaignsProjection, CampaignsStore, ReportsProjection
from herald_shared.contract import Event
from herald_shared.contract.billing import SendingBlocked
from herald_shared.contract.delivery import (
    CampaignDeliveryFinished,
    ComplaintReceived,
    DeliveryHeld,
    LinkClicked,
    MessageBounced,
    MessageDeferred,
    MessageOpened,
    MessageSent,
)
from herald_shared.contract.subscriptions import SubscriberUnsubscribed
from herald_shared.mongo import rebuild
from tests.conftest import eventually

from .conftest import Platform, draft

CLIENT = {"ip": "198.51.100.7", "user_agent": "Mozilla/5.0"}  # not placed: no country, no device
IN_RIGA = {"ip": "203.0.113.9", "user_agent": "Mozilla/5.0 (iPhone)", "device": "mobile", "browser": "Mobile Safari",
           "country": "LV", "city": "Riga"}
SCANNER = {"client": {"ip": "203.0.113.5", "user_agent": "Barracuda Sentinel (EE)"}, "automated": True,
           "automated_reason": "scanner:barracuda"}
COMPLAINER = "s5"


def ref(i: int, campaign: str = "c1", kind: str = "campaign") -> dict[str, Any]:
    return {"message_id": f"m-{campaign}-{i}", "kind": kind, "campaign_id": campaign if kind == "campaign" else None,
            "subscriber_id": f"s{i}", "list_id": "news"}


def delivery_events() -> list[Event]:
    env: dict[str, Any] = {"account_id": "acme", "producer": "delivery"}
    events: list[Event] = [MessageSent(**env, payload={**ref(i), "recipient_domain": "example.org",
                                                       "smtp_code": 250}) for i in range(10)]
    events += [
        MessageBounced(**env, payload={**ref(10), "bounce_class": "hard", "smtp_code": 550,
                                       "diagnostic": "550 5.1.1 no such user", "source": "smtp_reply"}),
        MessageBounced(**env, payload={**ref(1), "bounce_class": "block", "diagnostic": "listed", "source": "dsn"}),
        MessageBounced(**env, payload={**ref(2), "bounce_class": "soft", "diagnostic": "full", "source": "dsn"}),
        MessageBounced(**env, payload={**ref(3), "bounce_class": "undetermined", "diagnostic": "?",
                                       "source": "dsn"}),
        MessageOpened(**env, payload={**ref(0), "client": CLIENT}),
        MessageOpened(**env, payload={**ref(0), "client": CLIENT}),
        MessageOpened(**env, payload={**ref(1), "client": IN_RIGA}),
        LinkClicked(**env, payload={**ref(0), "url": "https://acme.example/a", "link_index": 0, "client": CLIENT}),
        LinkClicked(**env, payload={**ref(0), "url": "https://acme.example/a", "link_index": 0, "client": CLIENT}),
        LinkClicked(**env, payload={**ref(4), "url": "https://acme.example/b", "link_index": 1, "client": IN_RIGA}),
        # A mail scanner's (delivery marked them automated): counted apart, and message 2 stays unopened.
        MessageOpened(**env, payload={**ref(2), **SCANNER}),
        LinkClicked(**env, payload={**ref(2), "url": "https://acme.example/b", "link_index": 1, **SCANNER}),
        ComplaintReceived(**env, payload={**ref(5), "feedback_type": "abuse", "reporting_domain": "isp.example"}),
        # The same message reported again (a relay's event after the provider's report): one complaint.
        ComplaintReceived(**env, payload={**ref(5), "feedback_type": "abuse", "reporting_domain": "relay.example"}),
        # Not this campaign's: a confirmation email, and another campaign's message.
        MessageSent(**env, payload={**ref(20, kind="confirmation"), "recipient_domain": "example.org",
                                    "smtp_code": 250}),
        MessageSent(**env, payload={**ref(21, campaign="c2"), "recipient_domain": "example.org", "smtp_code": 250}),
    ]
    subscriptions: dict[str, Any] = {"account_id": "acme", "producer": "subscriptions"}
    events += [SubscriberUnsubscribed(**subscriptions, payload={"list_id": "news", "subscriber_id": "s6",
                                                                "source": "one_click", "campaign_id": "c1"}),
               SubscriberUnsubscribed(**subscriptions, payload={"list_id": "news", "subscriber_id": "s7",
                                                                "source": "api", "campaign_id": "c1"})]
    return events


EXPECTED = {"campaign_id": "c1", "status": "draft", "recipients": None, "sent": 11, "delivered": 8, "deferred": 0,
            "skipped": None, "failed": None, "cancelled": None,
            "bounces": {"hard": 1, "soft": 1, "block": 1, "undetermined": 1},
            "opens": {"unique": 2, "total": 3, "automated": 1, "by_country": {"LV": 1, "unknown": 1},
                      "by_device": {"mobile": 1, "unknown": 1}},
            "clicks": {"unique": 2, "total": 3, "automated": 1, "by_country": {"LV": 1, "unknown": 1},
                       "by_device": {"mobile": 1, "unknown": 1},
                       "per_link": [{"link_index": 0, "url": "https://acme.example/a", "clicks": 2},
                                    {"link_index": 1, "url": "https://acme.example/b", "clicks": 1}]},
            "complaints": 1, "unsubscribes": 1,
            "rates": {"hard_bounce_rate": 1 / 11, "block_rate": 1 / 11, "abuse_rate": 1 / 11,
                      "unsubscribe_rate": 1 / 11}}


async def test_a_report_counts_each_kind_once_even_when_events_are_redelivered(platform: Platform) -> None:
    acme = await platform.tenant("acme", "news")
    linked = draft(html_body='<p><a href="https://acme.example/a">A</a> <a href="https://acme.example/b">B</a></p>')
    assert (await acme.http.post("/v1/campaigns", json={**linked, "campaign_id": "c1"})).status_code == 201
    events = delivery_events()
    await platform.publisher.publish_many(events)

    async def report() -> dict[str, Any]:
        return (await acme.http.get("/v1/campaigns/c1/report")).json()  # type: ignore[no-any-return]

    assert await eventually(report, lambda r: r == EXPECTED, what="the report") == EXPECTED
    # Every event again (a publisher's retry: same ids), then one more send to know they were all read.
    await platform.publisher.publish_many(events)
    await platform.publisher.publish(MessageSent(account_id="acme", producer="delivery", payload={
        **ref(11), "recipient_domain": "example.org", "smtp_code": 250}))
    after = await eventually(report, lambda r: r["sent"] == 12, what="the extra send counted")
    assert after == {**EXPECTED, "sent": 12, "delivered": 9,
                     "rates": {k: 1 / 12 for k in EXPECTED["rates"]}}  # type: ignore[attr-defined]

    # Who complained is never in any answer (PRODUCT.md, Termination 1): only how many.
    for response in (await acme.http.get("/v1/campaigns/c1/report"), await acme.http.get("/v1/campaigns/c1"),
                     await acme.http.get("/v1/campaigns")):
        assert COMPLAINER not in response.text and "m-c1-5" not in response.text
    rival = await platform.tenant("rival", "news")
    assert (await rival.http.get("/v1/campaigns/c1/report")).status_code == 404

    # Folded again from offset 0 into an empty database, the read model says the same.
    settings = platform.service.settings
    db = platform.service.mongo[settings.database_name("campaigns_rebuilt")]
    topics = ["herald.campaigns", "herald.subscriptions", "herald.delivery"]
    for projection in (CampaignsProjection(db), ReportsProjection(db)):
        await rebuild(projection, settings, topics)
    live, rebuilt = platform.service.service.store, CampaignsStore(db)
    assert await rebuilt.report_counts("acme", "c1") == await live.report_counts("acme", "c1")
    assert await rebuilt.campaign("acme", "c1") == await live.campaign("acme", "c1")


async def test_reports_have_their_own_consumer_and_the_campaign_still_sees_its_delivery_held(
        platform: Platform) -> None:
    """DeliveryHeld is on herald.delivery like the sends: the campaigns read model takes it (a report's state),
    the reports' consumer counts the sends, each with its own group, checkpoints and readiness."""
    service = platform.service
    prefix = service.settings.topic_prefix
    assert sorted(c.name for c in [*service.consumers, service.reports]) == [f"{prefix}campaigns.projection",
                                                                            f"{prefix}campaigns.reports"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url="http://campaigns") as http:
        await eventually(lambda: http.get("/readyz"), lambda r: r.status_code == 200, what="both consumers ready")

    acme = await platform.tenant("acc-held", "news", account="paid")
    assert (await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c1"})).status_code == 201
    assert (await acme.http.post("/v1/campaigns/c1/submission", json={})).status_code == 200

    async def report() -> dict[str, Any]:
        return (await acme.http.get("/v1/campaigns/c1/report")).json()  # type: ignore[no-any-return]

    await eventually(report, lambda r: r["status"] == "queued", what="queued")
    env: dict[str, Any] = {"account_id": "acc-held"}
    await platform.publisher.publish_many([
        SendingBlocked(**env, producer="billing", payload={"reason": "monthly_quota_reached"}),
        MessageSent(**env, producer="delivery", payload={**ref(0), "recipient_domain": "example.org",
                                                         "smtp_code": 250}),
        DeliveryHeld(**env, producer="delivery", payload={"campaign_id": "c1", "gate": "sending_blocked",
                                                          "reason": "monthly quota reached", "messages_held": 9})])
    held = await eventually(report, lambda r: r["status"] == "held" and r["sent"] == 1, what="held, one sent")
    assert held["delivered"] == 1


async def test_one_message_reported_failed_twice_is_one_bounce_and_a_deferral_counts_until_it_settles(
        platform: Platform) -> None:
    """R5 #1 and #2: a 5.1.1 and a 5.7.1 report of one accepted message (a relay and its backup MX) took it twice
    off `delivered` and showed two bounces; a message being retried showed nowhere. Each report event is
    published twice as well (a publisher's retry)."""
    acme = await platform.tenant("acc-twice", "news")
    assert (await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c1"})).status_code == 201
    env: dict[str, Any] = {"account_id": "acc-twice", "producer": "delivery"}
    sent = [MessageSent(**env, payload={**ref(i), "recipient_domain": "example.org", "smtp_code": 250})
            for i in range(4)]
    reports = [MessageBounced(**env, payload={**ref(1), "bounce_class": bounce_class, "diagnostic": diagnostic,
                                              "source": "dsn"})
               for bounce_class, diagnostic in (("hard", "550 5.1.1 no such user"), ("block", "550 5.7.1 listed"),
                                                ("soft", "4.2.2 mailbox full"), ("soft", "4.2.2 still full"))]
    deferrals = [MessageDeferred(**env, payload={**ref(4), "smtp_code": 451, "diagnostic": "try later",
                                                 "attempt": attempt, "next_attempt_at": "2026-12-08T00:00:00Z"})
                 for attempt in (1, 2, 3)]
    await platform.publisher.publish_many([*sent, *reports, *reports, *deferrals, *deferrals])

    async def report() -> dict[str, Any]:
        return (await acme.http.get("/v1/campaigns/c1/report")).json()  # type: ignore[no-any-return]

    during = await eventually(report, lambda r: r["deferred"] == 1 and r["bounces"]["soft"] == 1,
                              what="the deferral and the reports counted")
    assert (during["sent"], during["delivered"]) == (4, 3)
    assert during["bounces"] == {"hard": 1, "soft": 1, "block": 0, "undetermined": 0}  # the first class
    assert during["rates"]["hard_bounce_rate"] == 1 / 4 and during["rates"]["block_rate"] == 0
    # The deferred message accepted at its fourth try; another first-try send (no deferral to take back).
    await platform.publisher.publish_many([
        MessageSent(**env, payload={**ref(4), "recipient_domain": "example.org", "smtp_code": 250, "attempt": 4}),
        MessageSent(**env, payload={**ref(5), "recipient_domain": "example.org", "smtp_code": 250})])
    settled = await eventually(report, lambda r: r["sent"] == 6, what="the deferred message sent")
    assert (settled["deferred"], settled["delivered"], settled["recipients"]) == (0, 5, None)


async def test_a_finished_campaigns_report_shows_its_recipients_and_what_was_not_sent(platform: Platform) -> None:
    """R5 #2: the recipients, the skipped and the cancelled were only in delivery's CampaignDeliveryFinished."""
    acme = await platform.tenant("acc-finished", "news", account="paid")
    assert (await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c1"})).status_code == 201
    assert (await acme.http.post("/v1/campaigns/c1/submission", json={})).status_code == 200
    await eventually(lambda: acme.http.get("/v1/campaigns/c1"), lambda r: r.json()["status"] == "queued",
                     within=30, what="queued")
    env: dict[str, Any] = {"account_id": "acc-finished", "producer": "delivery"}
    await platform.publisher.publish_many([
        *(MessageSent(**env, payload={**ref(i), "recipient_domain": "example.org", "smtp_code": 250})
          for i in range(3)),
        MessageDeferred(**env, payload={**ref(3), "smtp_code": 451, "diagnostic": "try later", "attempt": 1,
                                        "next_attempt_at": "2026-12-08T00:00:00Z"}),
        CampaignDeliveryFinished(**env, payload={"campaign_id": "c1", "recipients": 7, "sent": 3, "bounced": 0,
                                                 "skipped": 2, "failed": 1, "cancelled": 1})])
    done = await eventually(lambda: acme.http.get("/v1/campaigns/c1/report"),
                            lambda r: r.json()["status"] == "done" and r.json()["sent"] == 3, within=30,
                            what="done, its sends counted")
    assert {k: done.json()[k] for k in ("recipients", "sent", "deferred", "skipped", "failed", "cancelled")} == {
        "recipients": 7, "sent": 3, "deferred": 0, "skipped": 2, "failed": 1, "cancelled": 1}
