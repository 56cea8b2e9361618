"""An account's suspension as campaigns reads it from herald.compliance on the real stack: a report shows a queued
campaign `suspended` until staff lift the suspension in force; a reinstatement of an earlier one, published again
after a newer suspension, changes nothing (as compliance and delivery read it)."""

from __future__ import annotations

from typing import Any

from herald_shared.contract import Event
from herald_shared.contract.compliance import AccountReinstated, AccountSuspended
from tests.conftest import eventually

from .conftest import Platform, draft

ACCOUNT = "acc-stale-reinstated"


def suspension() -> AccountSuspended:
    return AccountSuspended(account_id=ACCOUNT, producer="compliance", payload={  # type: ignore[arg-type]
        "metric": "hard_bounce_rate", "value": 0.09, "threshold": 0.08, "reason": "hard bounce rate 9% >= 8%"})


def reinstatement(of: AccountSuspended) -> AccountReinstated:
    return AccountReinstated(account_id=ACCOUNT, producer="compliance", payload={  # type: ignore[arg-type]
        "reinstated_by": "rita", "reason": "list cleaned", "suspension_event_id": str(of.event_id)})


async def test_a_stale_reinstatement_leaves_the_account_suspended(platform: Platform) -> None:
    """PRODUCT.md, "Sending suspension": it holds until staff lift it; lifting an earlier one does not."""
    acme = await platform.tenant(ACCOUNT, "news", account="paid")
    assert (await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c1"})).status_code == 201
    assert (await acme.http.post("/v1/campaigns/c1/submission", json={})).status_code == 200

    async def state() -> str:
        return str((await acme.http.get("/v1/campaigns/c1/report")).json()["status"])

    async def applied(*events: Event) -> None:
        published = await platform.publisher.publish_many(events)
        await platform.service.service.recorder.checkpoints.wait_until_applied(
            [(r.topic, r.partition, r.offset) for r in published])

    await eventually(state, lambda s: s == "queued", what="queued")
    first, second = suspension(), suspension()
    await applied(first, reinstatement(first), second)
    assert await state() == "suspended"
    await applied(reinstatement(first))  # a copy of the first reinstatement, republished after the second suspension
    assert await state() == "suspended"
    account: Any = await platform.service.service.store.account(ACCOUNT)
    assert account is not None and account.suspended
    await applied(reinstatement(second))
    assert await state() == "queued"
