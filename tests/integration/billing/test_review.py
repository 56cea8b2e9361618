"""Staff review of new accounts (PRODUCT.md, "Review"), with every staff look in the account's audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from herald_shared.contract.billing import AccountApproved, AccountRejected, InvoiceIssued, PlanChanged, StaffAccessed
from herald_shared.contract.campaigns import StaffViewed
from herald_shared.contract.compliance import AccountReinstated, StaffViewedRates
from herald_shared.contract.delivery import StaffViewedMessages
from tests.conftest import eventually

from .helpers import Customer, Platform


async def test_staff_approve_a_new_account_from_the_queue(platform: Platform) -> None:
    ada = await platform.sign_up("ada")
    eve = await platform.sign_up("eve", company="Evil Ltd")
    staff = platform.staff()
    assert (await platform.client().get("/v1/staff/account-review")).status_code == 401
    assert (await ada.http.get("/v1/staff/account-review")).status_code == 401  # a customer's session is not staff
    queue = (await staff.get("/v1/staff/account-review")).json()
    assert [a["account_id"] for a in queue["items"]] == [ada.account_id, eve.account_id]
    page = (await staff.get("/v1/staff/account-review", params={"limit": 1})).json()
    assert [a["account_id"] for a in page["items"]] == [ada.account_id] and page["next_cursor"]
    rest = (await staff.get("/v1/staff/account-review", params={"cursor": page["next_cursor"]})).json()
    assert [a["account_id"] for a in rest["items"]] == [eve.account_id] and rest["next_cursor"] is None
    approved = await staff.post(f"/v1/staff/accounts/{ada.account_id}/approval", json={"note": "checked"})
    assert approved.status_code == 200 and approved.json()["review"] == "approved"
    rejected = await staff.post(f"/v1/staff/accounts/{eve.account_id}/rejection", json={"reasons": ["fake company"]})
    assert rejected.status_code == 200 and rejected.json()["review"] == "rejected"
    assert (await staff.post(f"/v1/staff/accounts/{eve.account_id}/rejection",
                             json={"reasons": ["again"]})).status_code == 409
    assert (await staff.get("/v1/staff/account-review")).json()["items"] == []
    assert (await staff.post("/v1/staff/accounts/nobody/approval", json={})).status_code == 404
    events = await platform.events()
    assert [(e.account_id, e.payload.reviewer) for e in events if isinstance(e, AccountApproved)] == [
        (ada.account_id, "rita")]
    assert [e.payload.reasons for e in events if isinstance(e, AccountRejected)] == [["fake company"]]
    seen = [(e.payload.what) for e in events if isinstance(e, StaffAccessed) and e.account_id == ada.account_id]
    assert seen == ["review_queue", "review_queue", "approve"]
    # a refused action is a look too: its answer ("already rejected") shows the account's state
    eve_seen = [e.payload.what for e in events if isinstance(e, StaffAccessed) and e.account_id == eve.account_id]
    assert eve_seen.count("reject") == 2, eve_seen
    assert not [e for e in events if isinstance(e, StaffAccessed) and e.account_id == "nobody"]


async def test_the_owner_sees_every_staff_look_at_the_account(platform: Platform) -> None:
    ada = await platform.sign_up("ada")
    staff = platform.staff()
    assert (await staff.get(f"/v1/staff/accounts/{ada.account_id}")).json()["company_name"] == "Acme Ltd"
    log = (await staff.get(f"/v1/staff/accounts/{ada.account_id}/audit-log")).json()["items"]
    assert [e["kind"] for e in log] == ["login", "staff_access", "staff_access"]  # this look is in it too
    mine = (await ada.http.get("/v1/account/audit-log")).json()["items"]
    assert [(e["kind"], e["staff"], e["what"]) for e in mine if e["kind"] == "staff_access"] == [
        ("staff_access", "rita", "account"), ("staff_access", "rita", "audit_log")]


async def test_the_owner_sees_staff_looks_recorded_by_campaigns_compliance_and_delivery(platform: Platform) -> None:
    """PRODUCT.md: every access by platform staff to an account's data is in the audit log (one log, whichever
    service the staff member looked in)."""
    ada = await platform.sign_up("ada")
    a = ada.account_id
    await platform.publisher.publish_many([
        StaffViewed(account_id=a, producer="campaigns", payload={  # type: ignore[arg-type]
            "campaign_id": "c1", "staff": "rita", "action": "campaign"}),
        StaffViewedRates(account_id=a, producer="compliance", payload={"staff": "sam"}),  # type: ignore[arg-type]
        AccountReinstated(account_id=a, producer="compliance", payload={  # type: ignore[arg-type]
            "reinstated_by": "sam", "reason": "list cleaned"}),
        StaffViewedMessages(account_id=a, producer="delivery", payload={  # type: ignore[arg-type]
            "staff": "sam", "email_sha256": "a" * 64})])
    log = await eventually(lambda: staff_looks(ada), lambda looks: len(looks) == 4, what="the looks in the log")
    assert [(e["service"], e["staff"], e["what"], e["campaign_id"], e["email_sha256"]) for e in log] == [
        ("campaigns", "rita", "campaign", "c1", None), ("compliance", "sam", "rates", None, None),
        ("compliance", "sam", "reinstate", None, None), ("delivery", "sam", "messages", None, "a" * 64)]


async def staff_looks(customer: Customer) -> list[dict[str, Any]]:
    items = (await customer.http.get("/v1/account/audit-log")).json()["items"]
    return [e for e in items if e["kind"] == "staff_access"]


async def test_a_rejected_account_buys_nothing_and_its_plan_ends_with_its_paid_period(platform: Platform) -> None:
    """PRODUCT.md, "Review": a rejected account stays held. It is sold no plan or credits (409 account_rejected),
    and a plan bought while it waited for review is not renewed: it ends at the end of its paid period, never
    charged again."""
    clock = {"now": datetime.fromisoformat("2026-11-02T10:00:00+00:00")}
    platform.set_clock(lambda: clock["now"])
    ada = await platform.sign_up("ada")
    eve = await platform.sign_up("eve", company="Evil Ltd")
    for customer in (ada, eve):
        assert (await customer.http.put("/v1/account/payment-method", json={
            "provider": "simulated", "reference": "sim-card-ok"})).status_code == 204
    assert (await ada.http.put("/v1/account/plan", json={"subscribers": 500})).status_code == 200
    async with platform.staff() as staff:
        for customer in (ada, eve):
            rejected = await staff.post(f"/v1/staff/accounts/{customer.account_id}/rejection",
                                        json={"reasons": ["fake company"]})
            assert rejected.status_code == 200 and rejected.json()["review"] == "rejected"
    for refused in (await eve.http.put("/v1/account/plan", json={"subscribers": 500}),
                    await eve.http.post("/v1/account/credits", json={"credits": 1000}),
                    await ada.http.put("/v1/account/plan", json={"subscribers": 1000})):
        assert refused.status_code == 409 and refused.json()["type"].endswith("/account_rejected"), refused.text
    assert (await eve.http.get("/v1/account")).json()["plan"] == "trial"

    clock["now"] = datetime.fromisoformat("2026-12-02T10:00:10+00:00")  # the paid period is over
    await platform.service.clock.tick()
    ada = await platform.log_in("ada", ada.account_id)
    ended = await eventually(lambda: overview(ada), lambda a: a["plan"] == "none", what="the plan ended")
    assert ended["sending_blocked"] == ["no_plan"] and ended["open_invoices"] == []
    clock["now"] = datetime.fromisoformat("2027-01-02T10:00:10+00:00")
    await platform.service.clock.tick()
    issued = [e.payload.invoice_id for e in await platform.events() if isinstance(e, InvoiceIssued)]
    assert issued == ["2026-000001"]  # the first period only: nothing renewed
    ended_at = [e.payload.effective_at for e in await platform.events()
                if isinstance(e, PlanChanged) and e.payload.plan == "none"]
    assert ended_at == [datetime.fromisoformat("2026-12-02T10:00:00+00:00")]
    documented = (await platform.http.get("/openapi.json")).json()["paths"]
    assert "account_rejected" in documented["/v1/account/plan"]["put"]["responses"]["409"]["description"]
    assert "account_rejected" in documented["/v1/account/credits"]["post"]["responses"]["409"]["description"]


async def overview(customer: Customer) -> dict[str, Any]:
    response = await customer.http.get("/v1/account")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]
