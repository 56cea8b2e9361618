"""Retention (PRODUCT.md, "Data protection"): when billing purges an account, delivery forgets it: its
audience, campaigns, held messages and ledger, in MongoDB and in memory; nothing more is sent for it, a
restart brings nothing back, and another account is untouched."""

from __future__ import annotations

from typing import Any

from herald_shared.contract.billing import AccountApproved, AccountPurged
from herald_shared.contract.subscriptions import ConfirmationRequested
from tests.conftest import eventually
from tests.integration.helpers import documents_holding
from tests.samples import campaign_queued

from .conftest import World

ACME = ("'acme'", "'acme/", "'acme:", "owner@acme")  # its id as a value and in keys; its address



async def test_a_purged_account_is_forgotten_and_nothing_more_is_sent_for_it(start_delivery: Any, relay: Any,
                                                                           world: World) -> None:
    running = await start_delivery()
    await world.open_account("acme", approved=False)  # its campaign is held: jobs wait in the ledger and queue
    await world.open_account("other")
    await world.add_list("acme", "news", [(f"s{i}", f"reader{i}@acme-readers.example") for i in range(5)])
    await world.add_list("other", "news", [("s1", "someone@example.org")])
    await world.publish(campaign_queued("acme", "c1"), ConfirmationRequested(
        account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
            "list_id": "news", "subscriber_id": "s9", "email": "new@acme-readers.example", "list_name": "News",
            "company_name": "Acme", "confirm_url": "http://subs.test/confirm/x", "expires_at": "2099-01-01T00:00:00Z"}))
    await eventually(relay.mailed, lambda r: "new@acme-readers.example" in r, what="the confirmation sent")
    db = running.service.db
    await eventually(lambda: db["jobs"].count_documents({"account_id": "acme", "kind": "campaign"}),
                     lambda n: n == 5, what="the held campaign's jobs")

    await world.publish(AccountPurged(account_id="acme", producer="billing", payload={  # type: ignore[arg-type]
        "reason": "deleted", "since": "2026-08-01T00:00:00Z"}))
    await eventually(lambda: documents_holding(db, *ACME, "acme-readers"), lambda docs: docs == [],
                     what="acme gone from every collection")
    assert running.service.jobs.forget_account("acme") == 0  # nothing of it left in the queue
    # Approving the account now (a late event) opens nothing: it is dropped.
    await world.publish(AccountApproved(account_id="acme", producer="billing", payload={"reviewer": "staff"}),  # type: ignore[arg-type]
                        campaign_queued("other", "c1"))
    await eventually(relay.mailed, lambda r: "someone@example.org" in r, what="the other account's campaign")
    assert [r.recipient for r in relay.received if r.recipient.startswith("reader")] == []  # held, then purged
    assert await documents_holding(db, *ACME, "acme-readers") == []

    # A restart folds the ledger and the projections again: still nothing of acme.
    await running.service.stop()
    again = await start_delivery()
    await eventually(lambda: documents_holding(again.service.db, "'other'"), bool, what="the other account still there")
    assert await documents_holding(again.service.db, *ACME, "acme-readers") == []
    assert "acme" not in again.service.gates.accounts
