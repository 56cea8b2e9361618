"""A test send of an account still under review reaches only the account's own people (PRODUCT.md, "Review"):
its registered address and addresses at a sending domain it verified; a stranger once staff approved the account
and it is on a paid plan. On the real stack, the account's history published as billing publishes it."""

from __future__ import annotations

from typing import Any

import pytest

from herald_shared.contract import Event
from herald_shared.contract.billing import AccountApproved, AccountOpened, PlanChanged
from herald_shared.contract.campaigns import CampaignTestRequested
from tests.conftest import eventually

from .conftest import Platform, draft


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"HERALD_CAMPAIGNS_SHARED_SENDING_DOMAINS": "herald-shared.example"}


def billing(cls: type[Event], account_id: str, **payload: Any) -> Event:
    return cls(account_id=account_id, producer="billing", payload=payload)  # type: ignore[call-arg]


async def test_an_account_under_review_tests_only_to_its_own_addresses_until_approved_on_a_paid_plan(
        platform: Platform) -> None:
    acme = await platform.tenant("acc-tr", "news")  # acme.example verified through the API
    await platform.publisher.publish(billing(AccountOpened, "acc-tr", company_name="Acme",
                                             registered_email="Owner@Acme-Corp.example", main_username="anna",
                                             terms_accepted_at="2026-12-01T00:00:00Z"))
    store = platform.service.service.store
    await eventually(lambda: store.account("acc-tr"), lambda info: info is not None and info.opened,
                     what="account opened projected")
    assert (await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c1"})).status_code == 201

    async def test_to(*recipients: str) -> Any:
        return await acme.http.post("/v1/campaigns/c1/tests", json={"recipients": list(recipients)})

    stranger = await test_to("me@acme.example", "stranger@elsewhere.example", "anyone@herald-shared.example")
    assert stranger.status_code == 422, stranger.text
    problem = stranger.json()
    assert problem["type"].endswith("/test_recipient_not_allowed")
    assert problem["refused"] == ["stranger@elsewhere.example", "anyone@herald-shared.example"]
    assert "owner@acme-corp.example" in problem["detail"].lower() and "Review" in problem["detail"]
    own = await test_to("owner@acme-corp.example", "colleague@mail.acme.example")
    assert own.status_code == 202, own.text

    await platform.publisher.publish(billing(AccountApproved, "acc-tr", reviewer="rita"))
    await eventually(lambda: store.account("acc-tr"), lambda info: info is not None and info.approved,
                     what="approval projected")
    on_trial = await test_to("stranger@elsewhere.example")
    assert on_trial.status_code == 422 and "on trial" in on_trial.json()["detail"], on_trial.text

    await platform.publisher.publish(billing(PlanChanged, "acc-tr", plan="monthly", tier_subscriber_limit=1000,
                                             effective_at="2026-12-02T00:00:00Z"))
    await eventually(lambda: store.account("acc-tr"), lambda info: info is not None and not info.on_trial,
                     what="paid plan projected")
    paid = await test_to("stranger@elsewhere.example")
    assert paid.status_code == 202, paid.text

    tests = await eventually(platform.events, lambda events: len(sent(events)) == 2, what="the two tests sent")
    assert [e.payload.recipients for e in sent(tests)] == [["owner@acme-corp.example", "colleague@mail.acme.example"],
                                                           ["stranger@elsewhere.example"]]


def sent(events: list[Event], account_id: str = "acc-tr") -> list[CampaignTestRequested]:
    return [e for e in events if isinstance(e, CampaignTestRequested) and e.account_id == account_id]


async def test_flagged_content_is_tested_only_to_the_accounts_own_addresses_even_when_approved_on_a_paid_plan(
        platform: Platform) -> None:
    """R3 #3: a never-submitted draft screening flags went to 50 strangers a day as tests. A submission would go
    to staff first, so its test goes only to the account's registered address and verified domains, with the
    flag named in the 422; nothing is published. Clean content still tests to anyone."""
    paid = await platform.tenant("acc-trf", "news", account="paid")  # registered owner@acc-trf.example
    flagged = draft(html_body="<p>Cheap viagra, online casino bonus</p>")
    assert (await paid.http.post("/v1/campaigns", json={**flagged, "campaign_id": "c1"})).status_code == 201
    assert (await paid.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c2"})).status_code == 201

    stranger = await paid.http.post("/v1/campaigns/c1/tests", json={"recipients": ["me@acme.example",
                                                                                   "a@victims.example"]})
    assert stranger.status_code == 422, stranger.text
    problem = stranger.json()
    assert problem["type"].endswith("/test_recipient_not_allowed") and problem["refused"] == ["a@victims.example"]
    assert "screening flagged" in problem["detail"] and "pharmacy" in problem["detail"]
    own = await paid.http.post("/v1/campaigns/c1/tests", json={"recipients": ["owner@acc-trf.example",
                                                                              "me@acme.example"]})
    assert own.status_code == 202, own.text
    clean = await paid.http.post("/v1/campaigns/c2/tests", json={"recipients": ["a@victims.example"]})
    assert clean.status_code == 202, clean.text

    tests = await eventually(platform.events, lambda events: len(sent(events, "acc-trf")) == 2,
                             what="the two tests sent")
    assert [(e.payload.campaign_id, e.payload.recipients) for e in sent(tests, "acc-trf")] == [
        ("c1", ["owner@acc-trf.example", "me@acme.example"]), ("c2", ["a@victims.example"])]
