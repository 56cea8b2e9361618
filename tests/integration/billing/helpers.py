"""The billing service running in-process against the real stack, driven through its own API (shared by the
billing tests and the cross-service tests that need accounts, plans and payments)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from argon2 import PasswordHasher

from herald_billing.handlers import Passwords
from herald_billing.main import Billing, BillingSettings
from herald_billing.payments import PaymentProvider
from herald_shared.apikeys import hash_secret
from herald_shared.contract import Event, parse_event
from herald_shared.kafka import EventPublisher, read_from_start
from herald_shared.settings import HeraldSettings

STAFF_TOKEN = "staff-token-of-rita-0123456789"
STAFF = {"Authorization": f"Bearer {STAFF_TOKEN}"}
PASSWORD = "correct horse battery"
CLIENT = ("203.0.113.7", 4711)


def billing_settings(settings: HeraldSettings, **overrides: Any) -> BillingSettings:
    return BillingSettings(**{**settings.model_dump(), "HERALD_STAFF_TOKENS": f"rita={hash_secret(STAFF_TOKEN)}",
                              "HERALD_SESSION_SECRET": "test-session-secret-0123456789",
                              "HERALD_PASSWORD_RESET_KEY": "test-password-reset-key-0123456789",
                              "HERALD_BILLING_CLOCK_INTERVAL_SECONDS": 3600, **overrides})


# argon2id still, at its smallest cost: the tests log in hundreds of times.
QUICK_PASSWORDS = Passwords(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


@dataclass
class Customer:
    account_id: str
    username: str
    token: str
    http: httpx.AsyncClient


@dataclass
class Platform:
    service: Billing
    publisher: EventPublisher
    http: httpx.AsyncClient  # no credentials, from CLIENT's address

    def client(self, headers: dict[str, str] | None = None, address: tuple[str, int] = CLIENT) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.service.app, client=address),
                                 base_url="http://billing", headers=headers or {})

    def staff(self) -> httpx.AsyncClient:
        return self.client(STAFF)

    def set_clock(self, now: Callable[[], datetime]) -> None:
        self.service.service.clock = now

    async def sign_up(self, username: str, company: str = "Acme Ltd", **changes: Any) -> Customer:
        body = {"company_name": company, "email": f"{username.split('@')[0]}@acme.example", "username": username,
                "password": PASSWORD, "accept_terms": True, "age_18": True, **changes}
        opened = await self.http.post("/v1/accounts", json=body)
        assert opened.status_code == 201, opened.text
        return await self.log_in(username, opened.json()["account_id"])

    async def log_in(self, username: str, account_id: str, password: str = PASSWORD) -> Customer:
        response = await self.http.post("/v1/sessions", json={"username": username, "password": password},
                                        headers={"User-Agent": "pytest-browser/1.0"})
        assert response.status_code == 201, response.text
        token = response.json()["token"]
        return Customer(account_id, username, token, self.client({"Authorization": f"Bearer {token}"}))

    async def events(self, topic: str = "herald.billing") -> list[Event]:
        settings = self.service.settings
        found: list[Event] = []
        async for records in read_from_start(settings, [settings.topics(topic)]):
            found += [parse_event(r.value) for r in records]
        return found


async def account(customer: Customer) -> dict[str, Any]:
    """The customer's account as GET /v1/account answers it."""
    response = await customer.http.get("/v1/account")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


@asynccontextmanager
async def running_billing(settings: HeraldSettings, payments: PaymentProvider | None = None,
                          clock: Callable[[], datetime] | None = None, **overrides: Any) -> AsyncIterator[Platform]:
    """`clock`: the service's time from its start (else the wall clock until the test sets one)."""
    service = Billing(billing_settings(settings, **overrides), passwords=QUICK_PASSWORDS, payments=payments)
    if clock is not None:
        service.service.clock = clock
    await service.start()
    try:
        # The plan clock's first round (once the projection caught up) done before the test acts: a round of its
        # own later in the test would race with it (the tests' clock interval is an hour).
        await asyncio.wait_for(service.clock.ran.wait(), 120)
        platform = Platform(service, EventPublisher(service.producer, settings.topics), None)  # type: ignore[arg-type]
        platform.http = platform.client()
        yield platform
    finally:
        await service.stop()


async def on_a_monthly_plan(platform: Platform, username: str, company: str = "Acme Ltd") -> Customer:
    """A new account with a working card on the 500-subscriber monthly plan (its first invoice issued)."""
    customer = await platform.sign_up(username, company=company)
    method = await customer.http.put("/v1/account/payment-method", json={"provider": "simulated",
                                                                        "reference": "sim-card-ok"})
    assert method.status_code == 204, method.text
    chosen = await customer.http.put("/v1/account/plan", json={"subscribers": 500})
    assert chosen.status_code == 200, chosen.text
    return customer
