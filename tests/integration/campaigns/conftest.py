"""The campaigns service running in-process against the real stack, with accounts' API keys and lists published
the way billing and subscriptions publish them, and a DNS server of the test's own that the service asks for
sending domains' verification records (each tenant's acme.example is verified through the API)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import httpx
import pytest

from herald_campaigns.main import Campaigns, CampaignsSettings
from herald_shared.apikeys import hash_secret, new_api_key
from herald_shared.contract import Event, parse_event
from herald_shared.contract.billing import AccountApproved, AccountOpened, ApiKeyIssued, PlanChanged
from herald_shared.contract.subscriptions import ListCreated, ListDeleted
from herald_shared.kafka import EventPublisher, read_from_start
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually

STAFF_TOKEN = "staff-token-of-rita-0123456789"
STAFF_HASH = hash_secret(STAFF_TOKEN)
STAFF = {"Authorization": f"Bearer {STAFF_TOKEN}"}


def campaigns_settings(settings: HeraldSettings, **overrides: Any) -> CampaignsSettings:
    return CampaignsSettings(**{**settings.model_dump(), "HERALD_STAFF_TOKENS": f"rita={STAFF_HASH}",
                                "HERALD_CAMPAIGNS_SCHEDULE_INTERVAL_SECONDS": 0.2, **overrides})


def strings(value: str) -> str:
    """A TXT record's text as its character-strings of at most 255 (a DKIM key's record is ~420 characters, split
    as DNS consoles split it; a resolver joins them)."""
    return " ".join(f'"{value[at:at + 255]}"' for at in range(0, max(len(value), 1), 255))


@dataclass
class DnsServer(asyncio.DatagramProtocol):
    """A DNS server on 127.0.0.1 (UDP) answering from what the test fills in: TXT records by name (`txt`),
    SERVFAIL for the names in `failing`, NOERROR without records for a name that only has names below it, and
    NXDOMAIN for any other; `silent`: it reads queries and answers none. Names in lower case, no final dot."""

    txt: dict[str, list[str]] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    silent: bool = False
    asked: list[str] = field(default_factory=list)
    port: int = 0
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # asyncio's own is not a subclass of it
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        self.asked.append(name)
        if self.silent or self.transport is None:
            return
        response = dns.message.make_response(query)
        if name in self.failing:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name in self.txt:
            if question.rdtype == dns.rdatatype.TXT and self.txt[name]:
                response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "TXT",
                                                           *(strings(value) for value in self.txt[name])))
        elif not any(other.endswith("." + name) for other in self.txt):
            response.set_rcode(dns.rcode.NXDOMAIN)
        self.transport.sendto(response.to_wire(), addr)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def publish(self, domain: str, value: str) -> None:
        """A TXT record at the domain's verification name, as its owner publishes it."""
        self.txt.setdefault(f"_herald-verification.{domain}", []).append(value)


@pytest.fixture
async def dns_server() -> AsyncIterator[DnsServer]:
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(DnsServer, local_addr=("127.0.0.1", 0))
    try:
        yield server
    finally:
        transport.close()


def draft(list_id: str = "news", **changes: Any) -> dict[str, Any]:
    return {"name": "November", "list_id": list_id, "subject": "Our November news", "from_name": "Acme",
            "from_email": "news@acme.example", "html_body": "<h1>Hello {{ first_name }}</h1><p>News.</p>",
            **changes}


@dataclass
class Tenant:
    account_id: str
    key: str
    http: httpx.AsyncClient


@dataclass
class Platform:
    service: Campaigns
    publisher: EventPublisher
    dns: DnsServer

    async def tenant(self, account_id: str, *lists: str, account: str = "unknown",
                     sending_domains: tuple[str, ...] = ("acme.example",)) -> Tenant:
        """An account with an API key and these lists (each with a `city` text field). `account`: what billing
        said of it: unknown (nothing), trial (opened, approved, no plan), paid (approved, monthly plan) or
        unapproved (monthly plan, not approved yet). `sending_domains` are added and verified through the API,
        their records published on the test's DNS server (the drafts of `draft()` go From acme.example)."""
        key_id, key, key_hash = new_api_key()
        await self.publisher.publish_many([
            *billing_history(account_id, account),
            ApiKeyIssued(account_id=account_id, producer="billing", payload={  # type: ignore[arg-type]
                "key_id": key_id, "key_hash": key_hash, "issued_by": "owner"}),
            *(ListCreated(account_id=account_id, producer="subscriptions", payload={  # type: ignore[arg-type]
                "list_id": list_id, "name": list_id, "opt_in": "single",
                "custom_fields": [{"name": "city", "kind": "text"}]}) for list_id in lists)])
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.service.app), base_url="http://campaigns",
                                 headers={"Authorization": f"Bearer {key}"})
        if account != "unknown":
            await eventually(lambda: self.service.service.store.account(account_id),
                             lambda info: info is not None and info.approved == (account != "unapproved"),
                             what="account projected")
        await eventually(lambda: self.service.apikeys.authenticate(key), lambda acc: acc == account_id,
                         what="API key projected")
        for list_id in lists:
            await eventually(lambda lid=list_id: self.service.service.store.list_info(account_id, lid),  # type: ignore[misc]
                             lambda info: info is not None, what=f"list {list_id} projected")
        for domain in sending_domains:
            await self.verified(http, domain)
        return Tenant(account_id, key, http)

    async def verified(self, http: httpx.AsyncClient, domain: str) -> dict[str, Any]:
        """Add a sending domain, publish its record as its owner would, and verify it: its answer."""
        added = await http.post("/v1/sending-domains", json={"domain": domain})
        assert added.status_code == 201, added.text
        self.dns.publish(added.json()["domain"], added.json()["record"]["value"])
        verified = await http.post(f"/v1/sending-domains/{added.json()['domain']}/verification")
        assert verified.status_code == 200 and verified.json()["status"] == "verified", verified.text
        return verified.json()  # type: ignore[no-any-return]

    async def delete_list(self, account_id: str, list_id: str) -> None:
        await self.publisher.publish(ListDeleted(account_id=account_id, producer="subscriptions", payload={  # type: ignore[arg-type]
            "list_id": list_id, "members_at_deletion": 0}))
        await eventually(lambda: self.service.service.store.list_info(account_id, list_id),
                         lambda info: info is not None and info.deleted, what="list deletion projected")


    def staff(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.service.app), base_url="http://campaigns",
                                 headers=STAFF)

    async def events(self, topic: str = "herald.campaigns") -> list[Event]:
        settings = self.service.settings
        found: list[Event] = []
        async for records in read_from_start(settings, [settings.topics(topic)]):
            found += [parse_event(r.value) for r in records]
        return found


def billing_history(account_id: str, account: str) -> list[Event]:
    opened = AccountOpened(account_id=account_id, producer="billing", payload={  # type: ignore[arg-type]
        "company_name": f"{account_id} Ltd", "registered_email": f"owner@{account_id}.example",
        "main_username": "owner", "terms_accepted_at": "2026-11-01T00:00:00Z"})
    approved = AccountApproved(account_id=account_id, producer="billing", payload={"reviewer": "staff"})  # type: ignore[arg-type]
    monthly = PlanChanged(account_id=account_id, producer="billing", payload={  # type: ignore[arg-type]
        "plan": "monthly", "tier_subscriber_limit": 1000, "effective_at": "2026-11-02T00:00:00Z"})
    return {"unknown": [], "trial": [opened, approved], "paid": [opened, approved, monthly],
            "unapproved": [opened, monthly]}[account]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Settings of the service a test module changes (by defining this fixture), by field name."""
    return {}


@pytest.fixture
async def platform(settings: HeraldSettings, settings_overrides: dict[str, Any],
                   dns_server: DnsServer) -> AsyncIterator[Platform]:
    service = Campaigns(campaigns_settings(settings, **{"HERALD_DNS_NAMESERVERS": dns_server.address,
                                                        "HERALD_DNS_TIMEOUT_SECONDS": 2, **settings_overrides}))
    await service.start()
    try:
        yield Platform(service, EventPublisher(service.producer, settings.topics), dns_server)
    finally:
        await service.stop()
