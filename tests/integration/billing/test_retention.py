"""Closing an account and retention in billing (PRODUCT.md, "Data protection"): a deleted account's keys stop
working at once and its data is purged 3 months later; an account nobody logged in to for 2 years is purged;
nothing of a purged account comes back, in a rebuild neither."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from herald_billing import domain
from herald_billing.store import BillingProjection
from herald_shared.apikeys import ApiKeyProjection
from herald_shared.contract.billing import AccountPurged, ApiKeyRevoked, InvoiceIssued, LoginSucceeded, PaymentSucceeded
from herald_shared.mongo import rebuild
from herald_shared.purging import PurgedAccounts, PurgingHandler
from tests.conftest import eventually

from .helpers import PASSWORD, Platform, on_a_monthly_plan


async def everything(platform: Platform) -> str:
    """Every document billing holds, as text (to look for an account's traces)."""
    return "\n".join(f"{name}: {doc!r}" for name, doc in await documents(platform.service.db))


async def documents(db: Any) -> list[tuple[str, Any]]:
    found = []
    for name in sorted(await db.list_collection_names()):
        found += [(name, doc) async for doc in db[name].find({})]
    return found


async def traces(db: Any, account_id: str) -> list[str]:
    """Documents naming the account, but its tombstone."""
    return [f"{name}: {doc!r}" for name, doc in await documents(db)
            if account_id in repr(doc) and name != "purged_accounts"]


async def test_a_deleted_account_is_closed_at_once_and_purged_three_months_later(platform: Platform) -> None:
    now = datetime.fromisoformat("2026-11-30T10:00:00+00:00")
    platform.set_clock(lambda: now)
    ada = await platform.sign_up("ada@acme.example", company="Acme Ltd")
    bob = await platform.sign_up("bob", company="Bob Ltd")
    key = (await ada.http.post("/v1/account/api-keys", json={"label": "crm"})).json()
    assert (await ada.http.post("/v1/account/users", json={"username": "cyril", "password": "long secret of c"})
            ).status_code == 201
    assert (await ada.http.delete("/v1/account")).status_code == 204
    assert (await ada.http.get("/v1/account")).status_code == 401
    refused = await platform.http.post("/v1/sessions", json={"username": "ada@acme.example", "password": PASSWORD})
    assert refused.status_code == 401
    apikeys = ApiKeyProjection(platform.service.db)
    assert await apikeys.authenticate(key["key"]) is None
    revoked = [e.payload.key_id for e in await platform.events() if isinstance(e, ApiKeyRevoked)]
    assert revoked == [key["key_id"]]
    # Three months later (the last day of February for a deletion on 30 November), not a moment before.
    now = datetime.fromisoformat("2027-02-28T09:59:59+00:00")
    assert await platform.service.service.purge_due() == 0
    now = datetime.fromisoformat("2027-02-28T10:00:00+00:00")
    assert await platform.service.service.purge_due() == 1
    await eventually(lambda: everything(platform), lambda text: "Acme Ltd" not in text, what="the account purged")
    text = await everything(platform)
    assert await traces(platform.service.db, ada.account_id) == []
    for trace in ("ada@acme.example", "'cyril'"):
        assert trace not in text, trace
    assert "Bob Ltd" in text  # only that account
    purged = [e for e in await platform.events() if isinstance(e, AccountPurged)]
    assert [(e.account_id, e.payload.reason) for e in purged] == [(ada.account_id, "deleted")]
    bob = await platform.log_in("bob", bob.account_id)
    assert (await bob.http.get("/v1/account")).status_code == 200


async def test_no_login_for_two_years_purges_the_account_and_a_rebuild_brings_nothing_back(
        platform: Platform) -> None:
    now = datetime.fromisoformat("2026-12-03T10:00:00+00:00")
    platform.set_clock(lambda: now)
    ada = await platform.sign_up("ada", company="Acme Ltd")
    await eventually(lambda: platform.events(), lambda es: any(isinstance(e, LoginSucceeded) for e in es),
                     what="the login recorded")
    last_login = next(e.occurred_at for e in await platform.events() if isinstance(e, LoginSucceeded))
    now = last_login.replace(year=last_login.year + 2) - timedelta(seconds=1)
    assert await platform.service.service.purge_due() == 0
    now += timedelta(seconds=1)
    assert await platform.service.service.purge_due() == 1
    await eventually(lambda: everything(platform), lambda text: "Acme Ltd" not in text, what="the account purged")
    # Events of the account that come after the purge (a late copy, another topic read later) are dropped.
    opened = next(e for e in await platform.events() if e.account_id == ada.account_id)
    await platform.publisher.publish(opened.model_copy(update={"event_id": __import__("uuid").uuid4()}))
    rebuilt_db = platform.service.mongo[platform.service.settings.database_name("billing_rebuilt")]
    await PurgedAccounts(rebuilt_db).add(ada.account_id, now)  # the tombstones a service keeps across rebuilds
    projection = BillingProjection(rebuilt_db)
    await rebuild(PurgingHandler(projection, PurgedAccounts(rebuilt_db), projection.purge),
                  platform.service.settings, ["herald.billing", "herald.subscriptions", "herald.delivery"])
    assert await traces(rebuilt_db, ada.account_id) == []
    assert await traces(platform.service.db, ada.account_id) == []  # the late copy was dropped live too


async def test_an_account_purged_when_its_period_ends_is_not_charged_for_the_next(platform: Platform) -> None:
    """PRODUCT.md: an account nobody logged in to for 2 years is deleted; fees are not refunded. Used through its
    API key only and paying every month, it is purged when its period ends exactly 2 years after the last login,
    and not charged for the next period; a login a millisecond later keeps it one more period, paid (README,
    "Retention"). Logins are dated by billing's clock."""
    start = datetime.fromisoformat("2026-12-03T10:00:00+00:00")
    now = start
    platform.set_clock(lambda: now)
    ada = await on_a_monthly_plan(platform, "ada")
    assert (await ada.http.post("/v1/account/api-keys", json={"label": "crm"})).status_code == 201
    bob = await on_a_monthly_plan(platform, "bob", company="Bob Ltd")
    now = start + timedelta(milliseconds=1)
    await platform.log_in("bob", bob.account_id)
    logins = {(e.account_id, e.occurred_at) for e in await platform.events() if isinstance(e, LoginSucceeded)}
    assert logins == {(ada.account_id, start), (bob.account_id, start), (bob.account_id, now)}
    store = platform.service.service.store
    for month in range(1, 25):
        now = domain.PLATFORM_CALENDAR.add_months(start, month)
        await platform.service.clock.tick()
        paid = domain.PLATFORM_CALENDAR.add_months(start, month + 1)
        await eventually(lambda: store.account(bob.account_id),
                         lambda a, paid=paid: a is not None and a.paid_until == paid,
                         what=f"bob's period {month + 1} paid")
    await eventually(lambda: store.account(ada.account_id), lambda a: a is None, what="ada purged")
    events = await platform.events()
    purged = [(e.account_id, e.occurred_at) for e in events if isinstance(e, AccountPurged)]
    assert purged == [(ada.account_id, now)]
    for customer, periods in ((ada, 24), (bob, 25)):
        invoices = [e for e in events if isinstance(e, InvoiceIssued) and e.account_id == customer.account_id]
        payments = [e for e in events if isinstance(e, PaymentSucceeded) and e.account_id == customer.account_id]
        assert (len(invoices), len(payments)) == (periods, periods), customer.username
