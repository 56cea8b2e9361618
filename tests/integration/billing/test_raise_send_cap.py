"""A tier raised just before the period ends (PRODUCT.md: "Emails sent in a month may not exceed 109 x the tier's
subscriber limit"; "Raising it mid-month charges the difference"): the raise is charged for the hour left, and the
period's cap grows by that hour's worth, not by the new tier's whole month. The review's reproduction, on the real
stack."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from herald_shared.contract.billing import QuotaExhausted
from herald_shared.contract.delivery import MessageSent
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually

from .helpers import account, running_billing

# The shipped tiers' prices at 1/100 of their subscribers: tier 5 (cap 545) and tier 1,000 (cap 109,000).
PLANS = """vat_percent = 21
[[tiers]]
subscribers = 5
monthly_cents = 900
pro_monthly_cents = 1900
[[tiers]]
subscribers = 1000
monthly_cents = 47900
pro_monthly_cents = 59900
"""


@pytest.fixture
def plans_file() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "plans.toml"
        path.write_text(PLANS)
        yield path


def sent(account_id: str, n: int, at: datetime) -> MessageSent:
    return MessageSent(account_id=account_id, producer="delivery", occurred_at=at, payload={
        "message_id": f"m{n}", "campaign_id": "c1", "subscriber_id": f"s{n % 5}", "recipient_domain": "example.com",
        "smtp_code": 250})


async def test_a_raise_an_hour_before_the_period_ends_adds_an_hours_worth_of_the_cap(
        settings: HeraldSettings, plans_file: Path) -> None:
    """At the 5 tier's cap (545 sent), a raise to 1,000 an hour before the period's end (10 March to 10 April in
    Riga: 743 hours, its clocks go forward on 28 March): 109 x (5 x 742 + 1,000 x 1) / 743 = 690.9..., so 691
    emails this period (before: 109,000). The block lifts, and is back at the 691st."""
    now = [datetime.fromisoformat("2027-03-10T10:00:00+00:00")]
    async with running_billing(settings, clock=lambda: now[0], HERALD_BILLING_PLANS_FILE=str(plans_file)) as platform:
        ada = await platform.sign_up("ada")
        await platform.staff().post(f"/v1/staff/accounts/{ada.account_id}/approval", json={})
        await ada.http.put("/v1/account/payment-method", json={"provider": "simulated", "reference": "sim-card-ok"})
        bought = await ada.http.put("/v1/account/plan", json={"subscribers": 5})
        assert bought.status_code == 200, bought.text
        assert bought.json()["monthly"]["monthly_send_cap"] == 545
        period_end = datetime.fromisoformat(bought.json()["monthly"]["period_end"])
        now[0] = period_end - timedelta(hours=1)
        ada = await platform.log_in("ada", ada.account_id)
        await platform.publisher.publish_many([sent(ada.account_id, n, now[0] - timedelta(hours=2))
                                               for n in range(545)])
        await eventually(lambda: account(ada), lambda a: a["sending_blocked"] == ["monthly_quota_reached"],
                         what="the 5 tier's cap reached")

        raised = await ada.http.put("/v1/account/plan", json={"subscribers": 1000})
        assert raised.status_code == 200, raised.text
        assert raised.json()["monthly"]["monthly_send_cap"] == 691
        lifted = await eventually(lambda: account(ada), lambda a: a["sending_blocked"] == [], what="the raise")
        assert lifted["monthly"]["subscriber_limit"] == 1000 and lifted["usage"]["period_emails"] == 545

        await platform.publisher.publish_many([sent(ada.account_id, 1000 + n, now[0] + timedelta(minutes=1))
                                               for n in range(146)])
        blocked = await eventually(lambda: account(ada), lambda a: a["sending_blocked"] != [],
                                   what="the prorated cap reached")
        assert blocked["sending_blocked"] == ["monthly_quota_reached"] and blocked["usage"]["period_emails"] == 691
        announced = [(e.payload.limit, e.payload.used) for e in await platform.events()
                     if isinstance(e, QuotaExhausted)]
        assert announced == [(545, 545), (691, 691)]

        # The next period has the 1,000 tier's whole cap.
        now[0] = period_end + timedelta(minutes=1)
        assert (await account(await platform.log_in("ada", ada.account_id)))["monthly"]["monthly_send_cap"] == 109_000
