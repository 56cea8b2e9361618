"""An account over its tier's subscriber limit gets back under it by removing members (PRODUCT.md: "Subscribers
stored above the tier's limit restrict the account (no sending) until it upgrades or removes subscribers"). Billing
and subscriptions on the real stack: unsubscribing a member keeps it stored (still counted, still blocked);
removing it from the list (`DELETE /v1/lists/{list_id}/subscribers/{subscriber_id}`) takes it off the count and
billing opens sending again (SendingUnblocked)."""

from __future__ import annotations

from pathlib import Path

from herald_shared.contract.billing import SendingBlocked, SendingUnblocked
from herald_shared.settings import HeraldSettings
from herald_subscriptions.main import Subscriptions
from tests.conftest import eventually

from .helpers import account, running_billing
from .test_pending_members import subscriptions_api, two_subscriber_tier  # noqa: F401 (a fixture)


async def test_an_account_over_its_tier_removes_members_and_may_send_again(
        settings: HeraldSettings, subscriptions: Subscriptions, two_subscriber_tier: Path) -> None:  # noqa: F811
    async with running_billing(settings, HERALD_BILLING_PLANS_FILE=str(two_subscriber_tier)) as platform:
        ada = await platform.sign_up("ada")
        approved = await platform.staff().post(f"/v1/staff/accounts/{ada.account_id}/approval", json={})
        assert approved.status_code == 200, approved.text
        await ada.http.put("/v1/account/payment-method", json={"provider": "simulated", "reference": "sim-card-ok"})
        assert (await ada.http.put("/v1/account/plan", json={"subscribers": 2})).status_code == 200
        key = (await ada.http.post("/v1/account/api-keys", json={})).json()["key"]
        await eventually(lambda: subscriptions.apikeys.authenticate(key), lambda a: a is not None, what="the key")
        api = subscriptions_api(subscriptions, key)
        created = await api.post("/v1/lists", json={"list_id": "news", "name": "News", "opt_in": "single"})
        assert created.status_code == 201, created.text
        ids = []
        for n in range(4):
            added = await api.post("/v1/lists/news/subscribers", json={
                "email": f"p{n}@example.net", "consent": {"method": "checkout checkbox"}})
            assert added.status_code == 201, added.text
            ids.append(added.json()["subscriber_id"])
        await eventually(lambda: account(ada), lambda a: (a["usage"]["subscribers"], a["sending_blocked"]) == (
            4, ["subscriber_limit_exceeded"]), what="4 counted, the tier's block")

        # Unsubscribed, a member is still stored: counted, and the account stays blocked.
        assert (await api.post(f"/v1/subscribers/{ids[0]}/unsubscribe")).status_code == 200
        assert (await api.delete(f"/v1/lists/news/subscribers/{ids[1]}")).status_code == 204
        # Folded in order after the unsubscribe: 3 counted means both were folded.
        three = await eventually(lambda: account(ada), lambda a: a["usage"]["subscribers"] == 3, what="3 counted")
        assert three["sending_blocked"] == ["subscriber_limit_exceeded"]

        # The unsubscribed member removed too: 2 of 2, sending open again.
        assert (await api.delete(f"/v1/lists/news/subscribers/{ids[0]}")).status_code == 204
        await eventually(lambda: account(ada), lambda a: (a["usage"]["subscribers"], a["sending_blocked"]) == (2, []),
                         what="2 counted, sending open")
        gates = await eventually(
            platform.events, lambda es: any(isinstance(e, SendingUnblocked) and e.account_id == ada.account_id
                                            for e in es), what="SendingUnblocked")
        # By event id: a gate decided again before its first decision was folded is published again under its
        # episode's fixed id (`domain.gate`), a copy every consumer passes over.
        decided = {e.event_id: (e.type, e.payload.reason) for e in gates
                   if isinstance(e, SendingBlocked | SendingUnblocked) and e.account_id == ada.account_id}
        assert list(decided.values()) == [("SendingBlocked", "subscriber_limit_exceeded"),
                                          ("SendingUnblocked", "subscriber_limit_exceeded")]
