"""A campaign too large for Kafka, on the real stack: refused 413 at the bound (`domain.MAX_EVENT_BYTES`) rather
than stored and then never queued, and one stored before the rule goes back to its author at its time and delays
no other account's campaign (R7, findings 1 and 2: it failed every scheduling round, first in line, and nothing
else was queued; then it was held back, `scheduled` for ever, retried every 15 minutes)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError
from prometheus_client import REGISTRY

from herald_shared.contract.campaigns import CampaignCreated, CampaignQueued, CampaignReturned, CampaignSubmitted
from herald_shared.kafka import MAX_REQUEST_BYTES
from tests.conftest import eventually

from .conftest import Platform, Tenant, draft

LIMIT = 1_000_000


def body(chars: int, **changes: Any) -> dict[str, Any]:
    return draft(name="N", html_body="<p>" + "a" * chars + "</p>", text_body="b", **changes)


def failures() -> float:
    return REGISTRY.get_sample_value("herald_campaigns_scheduler_failures_total", {"step": "queue"}) or 0.0


async def status(tenant: Tenant, campaign_id: str) -> str:
    return str((await tenant.http.get(f"/v1/campaigns/{campaign_id}")).json()["status"])


async def stored_as_before_the_rule(platform: Platform, account_id: str) -> str:
    """A draft as large as its CampaignCreated could be published, as the API took it before the size rule; its
    CampaignQueued (a send time more, no name) is larger than Kafka takes. Its id."""
    # A body the contract takes, at most MAX_REQUEST_BYTES characters with its <p></p>, is the search's top.
    low, high, largest = 1_040_000, MAX_REQUEST_BYTES - 7, None
    while high - low > 1:
        chars = (low + high) // 2
        campaign_id = f"cbig{chars}"
        try:
            await platform.publisher.publish(CampaignCreated(account_id=account_id, producer="campaigns", payload={  # type: ignore[arg-type]
                "campaign_id": campaign_id, "name": "N", "list_id": "news",
                "content": {"subject": "Big", "from_name": "Acme", "from_email": "news@acme.example",
                            "html_body": "<p>" + "a" * chars + "</p>", "text_body": "b"}}))
        except MessageSizeTooLargeError:
            high = chars
        else:
            low, largest = chars, campaign_id
    assert largest is not None
    return largest


async def test_an_oversized_campaign_goes_back_to_its_author_and_another_accounts_is_queued_on_time(
        platform: Platform) -> None:
    """A campaign saved before the size rule, scheduled, could never be queued: it stayed `scheduled`, tried every
    15 minutes, with no word to its author. It goes back to draft at its time (content_too_large, with the sizes),
    once, and the campaign due with it is queued."""
    acme = await platform.tenant("acme-big", "news", account="paid")
    other = await platform.tenant("other-small", "news", account="paid", sending_domains=("other.example",))
    big = await stored_as_before_the_rule(platform, acme.account_id)
    await eventually(lambda: status(acme, big), lambda s: s == "draft", what="the big draft projected")
    created = await other.http.post("/v1/campaigns", json=draft(from_email="news@other.example"))
    assert created.status_code == 201, created.text
    small = created.json()["campaign_id"]
    # both due at the same moment, the big one first in line (its key: due time/acme-big/...)
    due = datetime.now(UTC) + timedelta(seconds=3)
    before = failures()
    await platform.publisher.publish(CampaignSubmitted(account_id=acme.account_id, producer="campaigns", payload={  # type: ignore[arg-type]
        "campaign_id": big, "submitted_by": "api", "review_required": False, "send_at": due}))
    submitted = await other.http.post(f"/v1/campaigns/{small}/submission", json={"send_at": due.isoformat()})
    assert submitted.json()["status"] == "scheduled", submitted.text
    await eventually(lambda: status(acme, big), lambda s: s == "scheduled", what="the big campaign scheduled")

    back = await eventually(lambda: acme.http.get(f"/v1/campaigns/{big}"), lambda r: r.json()["status"] == "draft",
                            within=30, what="the big campaign back to draft at its time")
    await eventually(lambda: status(other, small), lambda s: s == "queued", within=15,
                     what="the other account's campaign queued")
    returned = back.json()["returned"]
    events = await platform.events()
    [queued] = [e for e in events if isinstance(e, CampaignQueued) and e.payload.campaign_id == small]
    assert queued.occurred_at - due < timedelta(seconds=10), (queued.occurred_at, due)  # on time
    [sent_back] = [e for e in events if isinstance(e, CampaignReturned) and e.account_id == acme.account_id]
    assert not [e for e in events if isinstance(e, CampaignQueued) and e.account_id == acme.account_id]
    assert sent_back.payload.reason == returned["reason"] == "content_too_large"
    assert sent_back.payload.detail == returned["detail"] and back.json()["send_at"] is None
    size = int(re.search(r"would be ([0-9,]+) bytes", returned["detail"])[1].replace(",", ""))  # type: ignore[index]
    assert LIMIT < size <= MAX_REQUEST_BYTES + 1_000, returned["detail"]  # its CampaignQueued, a little over 1 MiB
    assert f"over the {LIMIT:,} bytes an event may hold" in returned["detail"]
    assert datetime.fromisoformat(returned["at"]) >= due
    assert failures() == before  # known before publishing: not a failure held back and retried
    # the author's to fix: too large to submit again as it is, taken once edited smaller
    assert (await acme.http.post(f"/v1/campaigns/{big}/submission", json={})).status_code == 413
    assert (await acme.http.put(f"/v1/campaigns/{big}", json=draft())).status_code == 200
    assert (await acme.http.post(f"/v1/campaigns/{big}/submission", json={})).json()["status"] == "scheduled"


async def test_a_draft_one_byte_over_the_bound_is_refused_413_and_one_at_the_bound_is_taken_and_queued(
        platform: Platform) -> None:
    acme = await platform.tenant("acme-bound", "news", account="paid")
    probe = await acme.http.post("/v1/campaigns", json=body(LIMIT - 100))  # within the characters, over in bytes
    assert probe.status_code == 413, probe.text
    assert probe.headers["content-type"] == "application/problem+json"
    refused = probe.json()
    assert (refused["type"], refused["limit_bytes"]) == ("https://herald.dev/problems/campaign_too_large", LIMIT)
    at_bound = LIMIT - 100 - (refused["encoded_bytes"] - LIMIT)  # an `a` is one byte of the event

    over = await acme.http.post("/v1/campaigns", json=body(at_bound + 1))
    assert over.status_code == 413, over.text
    assert (over.json()["encoded_bytes"], over.json()["limit_bytes"]) == (LIMIT + 1, LIMIT)
    assert "1,000,001 bytes" in over.json()["detail"]
    assert [e["location"] for e in over.json()["errors"]] == ["body.html_body", "body.text_body"]

    taken = await acme.http.post("/v1/campaigns", json=body(at_bound))  # an id of the server's, as the probe's
    assert taken.status_code == 201, taken.text
    campaign_id = taken.json()["campaign_id"]
    assert (await acme.http.put(f"/v1/campaigns/{campaign_id}", json=body(at_bound + 1))).status_code == 413
    tested = await acme.http.post(f"/v1/campaigns/{campaign_id}/tests", json={
        "recipients": [f"tester{n}@acme.example" for n in range(5)]})
    assert tested.status_code == 202, tested.text
    submitted = await acme.http.post(f"/v1/campaigns/{campaign_id}/submission", json={})
    assert submitted.json()["status"] == "scheduled", submitted.text
    await eventually(lambda: status(acme, campaign_id), lambda s: s == "queued",
                     what="the campaign at the bound queued")


async def test_the_derived_text_part_and_a_tests_values_count_413_not_500(platform: Platform) -> None:
    """R7 finding 2: 600,007 characters of HTML (the text part derived from it doubles the event) answered 500."""
    acme = await platform.tenant("acme-600k", "news", account="paid")
    refused = await acme.http.post("/v1/campaigns", json=draft(html_body="<p>" + "a" * 600_000 + "</p>"))
    assert refused.status_code == 413, refused.text
    assert refused.json()["encoded_bytes"] > 1_200_000
    assert [e["location"] for e in refused.json()["errors"]] == ["body.html_body"]

    assert (await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c1"})).status_code == 201
    values = {f"field{n}": "v" * 1000 for n in range(1001)}
    tested = await acme.http.post("/v1/campaigns/c1/tests", json={"recipients": ["me@acme.example"],
                                                                  "values": values})
    assert tested.status_code == 413, tested.text
    assert tested.json()["event"] == "CampaignTestRequested"
    assert (await acme.http.post("/v1/campaigns/c1/tests", json={"recipients": ["me@acme.example"]})).status_code == 202


async def test_a_campaign_scheduled_before_the_link_rules_goes_back_to_its_author_naming_the_link(
        platform: Platform) -> None:
    """Published as the API took it before 2026-12-07 (a link host a member's value writes) and scheduled: it went
    out so. It goes back to draft at its time (content_refused, the link named), never queued."""
    acme = await platform.tenant("acme-links", "news", account="paid")
    campaign_id = "ctemplatedhost"
    await platform.publisher.publish(CampaignCreated(account_id=acme.account_id, producer="campaigns", payload={  # type: ignore[arg-type]
        "campaign_id": campaign_id, "name": "N", "list_id": "news",
        "content": {"subject": "News", "from_name": "Acme", "from_email": "news@acme.example",
                    "html_body": '<p><a href="https://{{ city }}/offer">Offer</a></p>', "text_body": "b"}}))
    await eventually(lambda: status(acme, campaign_id), lambda s: s == "draft", what="the old draft projected")
    due = datetime.now(UTC) + timedelta(seconds=2)
    await platform.publisher.publish(CampaignSubmitted(account_id=acme.account_id, producer="campaigns", payload={  # type: ignore[arg-type]
        "campaign_id": campaign_id, "submitted_by": "api", "review_required": False, "send_at": due}))
    back = await eventually(lambda: acme.http.get(f"/v1/campaigns/{campaign_id}"),
                            lambda r: r.json()["status"] == "draft" and r.json()["returned"] is not None,
                            within=30, what="the campaign back to draft at its time")
    assert back.json()["returned"]["reason"] == "content_refused"
    assert "https://{{ city }}/offer" in back.json()["returned"]["detail"]
    events = await platform.events()
    assert not [e for e in events if isinstance(e, CampaignQueued) and e.account_id == acme.account_id]
    assert len([e for e in events if isinstance(e, CampaignReturned) and e.account_id == acme.account_id]) == 1
