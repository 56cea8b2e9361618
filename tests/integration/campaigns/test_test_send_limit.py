"""The daily limit of test messages is counted in MongoDB, so a restart of campaigns does not reset it: an account
that sent its limit, then the service restarted, is refused 429 with Retry-After; another account is not (from a
review: the count lived in the process, a restart or a second replica started it again)."""

from __future__ import annotations

import httpx

from herald_campaigns.main import Campaigns
from herald_shared.contract.campaigns import CampaignTestRequested
from herald_shared.kafka import EventPublisher
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually

from .conftest import DnsServer, Platform, campaigns_settings, draft

LIMIT = 7


async def test_the_daily_test_limit_holds_across_a_restart(settings: HeraldSettings, dns_server: DnsServer) -> None:
    overrides = {"HERALD_DNS_NAMESERVERS": dns_server.address, "HERALD_DNS_TIMEOUT_SECONDS": 2,
                 "HERALD_CAMPAIGNS_TEST_SENDS_PER_DAY": LIMIT}
    first = Campaigns(campaigns_settings(settings, **overrides))
    await first.start()
    try:
        platform = Platform(first, EventPublisher(first.producer, settings.topics), dns_server)
        acme = await platform.tenant("acc-limit", "news", account="paid")
        other = await platform.tenant("acc-limit-other", "news", account="paid")
        for tenant in (acme, other):
            assert (await tenant.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c1"})).status_code == 201
        for recipients in (5, 2):
            sent = await acme.http.post("/v1/campaigns/c1/tests", json={
                "recipients": [f"r{recipients}.{i}@example.net" for i in range(recipients)]})
            assert sent.status_code == 202, sent.text
        over = await acme.http.post("/v1/campaigns/c1/tests", json={"recipients": ["late@example.net"]})
        assert over.status_code == 429
    finally:
        await first.stop()

    second = Campaigns(campaigns_settings(settings, **overrides))
    await second.start()
    try:
        async def on_second(key: str) -> httpx.AsyncClient:
            await eventually(lambda: second.apikeys.authenticate(key), lambda account: account is not None,
                             what="the key known after the restart")
            return httpx.AsyncClient(transport=httpx.ASGITransport(app=second.app), base_url="http://campaigns",
                                     headers={"Authorization": f"Bearer {key}"})

        async with await on_second(acme.key) as again:
            refused = await again.post("/v1/campaigns/c1/tests", json={"recipients": ["after@example.net"]})
        assert refused.status_code == 429 and refused.json()["type"].endswith("/test_sends_exhausted"), refused.text
        assert 23 * 3600 < int(refused.headers["Retry-After"]) <= 24 * 3600  # the first 5 leave in a day
        async with await on_second(other.key) as other_again:
            fine = await other_again.post("/v1/campaigns/c1/tests", json={"recipients": ["other@example.net"]})
        assert fine.status_code == 202, fine.text
        tests = [e for e in await Platform(second, EventPublisher(second.producer, settings.topics),
                                           dns_server).events() if isinstance(e, CampaignTestRequested)]
        assert sum(len(e.payload.recipients) for e in tests if e.account_id == "acc-limit") == LIMIT
    finally:
        await second.stop()
