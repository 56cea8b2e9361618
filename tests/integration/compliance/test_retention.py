"""Retention (PRODUCT.md, "Data protection"): when billing purges an account, the compliance processor drops its
counts, facts and lists from its tables (and their changelogs), ignores its later events, and a restart that
recovers the tables from the changelogs brings nothing back."""

from __future__ import annotations

import hashlib
from typing import Any

from herald_shared.contract.billing import AccountPurged
from herald_shared.contract.subscriptions import ListCreated, SubscriberAdded
from tests.conftest import eventually

from .conftest import Bus, sent


def sent_in(rates: dict[str, Any], campaign: str) -> int:
    return next((int(s["raw_counts"]["sent"]) for s in rates.get("scopes", [])
                 if s["scope"] == "campaign" and s["name"] == campaign), 0)


async def keys_of(running: Any, account_id: str) -> list[str]:
    service = running.service
    return [k for table in (service.accounts, service.facts, service.lists) for k in table.keys()
            if k == account_id or k.startswith(account_id + "|")]


async def test_a_purged_account_leaves_the_tables_and_stays_out(start_compliance: Any, bus: Bus) -> None:
    running = await start_compliance()
    await bus.publish(ListCreated(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
        "list_id": "l1", "name": "News", "opt_in": "single"}), SubscriberAdded(
        account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
            "list_id": "l1", "subscriber_id": "s1", "email": "anna@example.com",
            "email_sha256": hashlib.sha256(b"anna@example.com").hexdigest(),
            "opt_in": "single", "consent": {"source": "api", "collected_at": "2026-11-01T00:00:00Z", "method": "x"}}))
    await bus.publish(*(sent("acme", "c1", i) for i in range(10)), *(sent("other", "c1", i) for i in range(3)))
    await eventually(lambda: running.rates("acme"), lambda r: sent_in(r, "c1") == 10,
                     what="acme's sends counted")
    assert len(await keys_of(running, "acme")) > 10

    await bus.publish(AccountPurged(account_id="acme", producer="billing", payload={  # type: ignore[arg-type]
        "reason": "deleted", "since": "2026-08-01T00:00:00Z"}))
    await eventually(lambda: keys_of(running, "acme"), lambda keys: keys == ["acme"], what="acme's keys gone")
    assert await running.rates("acme") == {}  # 404
    # Later events of acme are dropped; another account's are counted.
    await bus.publish(*(sent("acme", "c2", i) for i in range(5)), *(sent("other", "c1", i) for i in range(3, 6)))
    await eventually(lambda: running.rates("other"), lambda r: sent_in(r, "c1") == 6,
                     what="other's later sends counted")
    assert await keys_of(running, "acme") == ["acme"]  # the marker only

    # A restart recovers the tables from their changelogs: the purge holds.
    await running.service.stop()
    again = await start_compliance()
    await eventually(lambda: again.rates("other"), lambda r: sent_in(r, "c1") == 6,
                     what="recovered")
    assert await keys_of(again, "acme") == ["acme"] and await again.rates("acme") == {}
