"""The staff look-up route with in-memory reads and publisher (PRODUCT.md "Accounts, users, access": every access by
platform staff to an account's data is written to an audit log): who may ask, what is refused, the audit record
before anything of the person is read, and the pages."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka.errors import KafkaConnectionError

from herald_delivery import api, domain
from herald_delivery.api import MessagesOut, build_staff_api
from herald_delivery.domain import AccountState, CampaignState, QueuedCampaign
from herald_shared.apikeys import hash_secret, new_api_key
from herald_shared.contract import Event
from herald_shared.contract.delivery import StaffViewedMessages
from herald_shared.http import api_app
from herald_shared.staff import StaffTokens

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TOKEN = "staff-token-of-rita-0123456789"
STAFF = {"Authorization": f"Bearer {TOKEN}"}
HASH = hashlib.sha256(b"anna@example.org").hexdigest()
PATH = "/v1/staff/accounts/acme/messages"


class Reads:
    """acme's ledger in memory: subscribers s1 (news) and s2 (offers) are one address; campaigns c0..c2 queued a
    minute apart, c1 and c2 sent to s1, c2 also to s2; and the order of every read."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.members: dict[str, dict[str, Any]] = {
            "s1": {"subscriber_id": "s1", "list_id": "news", "status": "active"},
            "s2": {"subscriber_id": "s2", "list_id": "offers", "status": "unsubscribed"}}
        self.address_members = ["s1", "s2"]
        self.address_erased_at: datetime | None = None
        self.campaigns = [QueuedCampaign(f"c{i}", T0 + timedelta(minutes=i), CampaignState(f"c{i}", queued=True))
                          for i in range(3)]
        pairs = [("c1", "s1"), ("c2", "s1"), ("c2", "s2")]
        self.jobs = {domain.message_id_for("acme", c, s): {
            "_id": domain.message_id_for("acme", c, s), "kind": "campaign", "account_id": "acme", "campaign_id": c,
            "subscriber_id": s, "list_id": self.members[s]["list_id"], "created_at": T0, "next_attempt_at": T0}
            for c, s in pairs}
        self.confirmation = {"_id": "conf-1", "kind": "confirmation", "account_id": "acme", "subscriber_id": "s1",
                             "list_id": "news", "created_at": T0, "next_attempt_at": T0}
        self.outcomes = {message_id: [{"_id": f"{message_id}:1", "message_id": message_id, "attempt": 1,
                                       "outcome": "sent", "final": True, "recorded_at": T0, "smtp_code": 250,
                                       "smtp_reply": "2.0.0 OK"}] for message_id in self.jobs}

    async def accounts(self, account_ids: Collection[str]) -> dict[str, AccountState]:
        self.log.append("accounts")
        return {a: AccountState(a, approved=True) for a in account_ids if a == "acme"}

    async def memberships(self, account_id: str, *, subscriber_id: str | None = None,
                          email_sha256: str | None = None) -> tuple[list[dict[str, Any]], datetime | None]:
        self.log.append("memberships")
        ids = [subscriber_id] if subscriber_id else (self.address_members if email_sha256 == HASH else [])
        return [self.members[s] for s in ids if s in self.members], self.address_erased_at if email_sha256 else None

    async def queued_campaigns(self, account_id: str) -> list[QueuedCampaign]:
        self.log.append("campaigns")
        return list(self.campaigns)

    async def ledger_jobs(self, message_ids: Collection[str]) -> dict[str, dict[str, Any]]:
        self.log.append("jobs")
        return {m: self.jobs[m] for m in message_ids if m in self.jobs}

    async def attempts(self, message_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        self.log.append("attempts")
        return {m: self.outcomes.get(m, []) for m in message_ids}

    async def reported_bounces(self, message_ids: Collection[str]) -> dict[str, list[str]]:
        return {}

    async def confirmation_jobs(self, account_id: str, subscriber_ids: Sequence[str],
                                most: int) -> list[dict[str, Any]]:
        return [self.confirmation] if "s1" in subscriber_ids else []


class Publisher:
    def __init__(self, reads: Reads) -> None:
        self.events: list[Event] = []
        self.reads = reads
        self.away = False

    async def publish(self, event: Event) -> None:
        if self.away:
            raise KafkaConnectionError("the broker is away")
        self.reads.log.append("audit")
        self.events.append(event)


@pytest.fixture(scope="module")
def tokens() -> StaffTokens:
    return StaffTokens({"rita": hash_secret(TOKEN)})


@pytest.fixture
async def service(tokens: StaffTokens) -> AsyncIterator[tuple[httpx.AsyncClient, Reads, Publisher]]:
    reads = Reads()
    publisher = Publisher(reads)
    app = api_app("delivery", "test")
    app.include_router(build_staff_api(reads, publisher, tokens))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://delivery.test") as http:
        yield http, reads, publisher


Service = tuple[httpx.AsyncClient, Reads, Publisher]


@pytest.mark.parametrize("headers", [{}, {"Authorization": f"Bearer {new_api_key()[1]}"},
                                     {"Authorization": "Bearer not-a-staff-token"}])
async def test_without_a_staff_token_nothing_is_read_nor_audited(service: Service, headers: dict[str, str]) -> None:
    """A customer's API key is no staff credential."""
    http, reads, publisher = service
    answer = await http.get(PATH, params={"subscriber_id": "s1"}, headers=headers)
    assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
    assert answer.headers["content-type"] == "application/problem+json"
    assert reads.log == [] and publisher.events == []


@pytest.mark.parametrize("params", [{}, {"subscriber_id": "s1", "email_sha256": HASH},
                                    {"subscriber_id": "s1", "cursor": "20261125T120000000000Z/c1"}])
async def test_a_look_up_names_exactly_one_person_and_a_cursor_a_page_gave(service: Service,
                                                                         params: dict[str, str]) -> None:
    http, reads, publisher = service
    answer = await http.get(PATH, params=params, headers=STAFF)
    assert answer.status_code == 422 and answer.json()["errors"]
    assert reads.log == [] and publisher.events == []


async def test_an_unknown_account_is_404_and_not_audited(service: Service) -> None:
    """No account's data is shown, so there is no access to record (and no account to record it in)."""
    http, _, publisher = service
    answer = await http.get("/v1/staff/accounts/nobody/messages", params={"subscriber_id": "s1"}, headers=STAFF)
    assert (answer.status_code, answer.json()["type"]) == (404, "https://herald.dev/problems/unknown_account")
    assert publisher.events == []


async def test_no_look_up_without_its_audit_record(service: Service) -> None:
    http, reads, publisher = service
    publisher.away = True
    answer = await http.get(PATH, params={"email_sha256": HASH}, headers=STAFF)
    assert (answer.status_code, answer.json()["type"]) == (503, "https://herald.dev/problems/audit_unavailable")
    assert reads.log == ["accounts"], "the person was read without an audit record"


async def test_the_look_up_is_audited_with_the_staff_member_and_the_hash_before_the_person_is_read(
        service: Service) -> None:
    http, reads, publisher = service
    answer = await http.get(PATH, params={"email_sha256": HASH}, headers=STAFF)
    assert answer.status_code == 200
    viewed, = publisher.events
    assert isinstance(viewed, StaffViewedMessages) and viewed.account_id == "acme"
    assert (viewed.payload.staff, viewed.payload.email_sha256, viewed.payload.subscriber_id) == ("rita", HASH, None)
    assert reads.log.index("audit") < reads.log.index("memberships")


async def test_an_unknown_subscriber_is_404_after_the_look_up_is_audited(service: Service) -> None:
    """Whether a person is in the account is the account's data: that look is recorded too."""
    http, _, publisher = service
    answer = await http.get(PATH, params={"subscriber_id": "someone-else"}, headers=STAFF)
    assert (answer.status_code, answer.json()["type"]) == (404, "https://herald.dev/problems/unknown_subscriber")
    assert [e.payload.subscriber_id for e in publisher.events] == ["someone-else"]  # type: ignore[attr-defined]


async def test_pages_go_newest_campaign_first_to_the_last_and_confirmations_come_on_the_first(
        service: Service) -> None:
    """Every membership of the address: c2 reached both (s1, s2), c1 s1 only, c0 neither."""
    http, _, _ = service
    seen: list[tuple[str | None, str | None]] = []
    pages: list[dict[str, Any]] = []
    params: dict[str, Any] = {"email_sha256": HASH, "limit": 2}
    while True:
        answer = await http.get(PATH, params=params, headers=STAFF)
        assert answer.status_code == 200
        page = MessagesOut.model_validate(answer.json())
        pages.append(answer.json())
        seen += [(m.campaign_id, m.subscriber_id) for m in page.messages]
        if page.next_cursor is None:
            break
        params["cursor"] = page.next_cursor
    assert seen == [("c2", min(("s1", "s2"), key=lambda s: domain.message_id_for("acme", "c2", s))),
                    ("c2", max(("s1", "s2"), key=lambda s: domain.message_id_for("acme", "c2", s))), ("c1", "s1")]
    assert len(pages) == 2 and [len(p["messages"]) for p in pages] == [2, 1]
    assert [c["message_id"] for c in pages[0]["confirmations"]] == ["conf-1"] and pages[1]["confirmations"] is None
    assert pages[0]["memberships"] == [
        {"subscriber_id": "s1", "list_id": "news", "status": "active", "erased_at": None},
        {"subscriber_id": "s2", "list_id": "offers", "status": "unsubscribed", "erased_at": None}]
    assert all(m["state"] == "sent" and m["attempts"][0]["smtp_code"] == 250 for p in pages for m in p["messages"])


async def test_a_person_with_few_messages_among_many_campaigns_is_found_in_reads_of_many_campaigns(
        service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ledger is asked for many campaigns' ids at once, not one read per campaign."""
    http, reads, _ = service
    reads.campaigns += [QueuedCampaign(f"x{i}", T0 - timedelta(days=1, minutes=i), CampaignState(f"x{i}", queued=True))
                        for i in range(450)]
    monkeypatch.setattr(api, "CAMPAIGNS_PER_READ", 200)
    answer = await http.get(PATH, params={"subscriber_id": "s1"}, headers=STAFF)
    assert [m["campaign_id"] for m in answer.json()["messages"]] == ["c2", "c1"]
    assert reads.log.count("jobs") == 3  # 453 campaigns, 200 a read


async def test_an_erased_membership_is_shown_erased_and_when_with_nothing_of_its_messages(service: Service) -> None:
    """PRODUCT.md "Subject rights": after an erasure no look-up leads to the person's messages, by the subscriber
    id (its membership says erased, and when) or by the address (it no longer names the membership)."""
    http, reads, _ = service
    erased_at = T0 + timedelta(hours=1)
    reads.members["s1"] = {"subscriber_id": "s1", "list_id": "news", "status": "erased", "erased_at": erased_at}
    answer = await http.get(PATH, params={"subscriber_id": "s1"}, headers=STAFF)
    assert answer.status_code == 200
    assert answer.json()["memberships"] == [{"subscriber_id": "s1", "list_id": "news", "status": "erased",
                                             "erased_at": "2026-11-25T13:00:00Z"}]
    assert (answer.json()["messages"], answer.json()["confirmations"]) == ([], [])
    assert "jobs" not in reads.log and "attempts" not in reads.log, "an erased membership's ledger was read"

    reads.address_members, reads.address_erased_at = ["s2"], erased_at
    answer = await http.get(PATH, params={"email_sha256": HASH}, headers=STAFF)
    assert answer.status_code == 200 and answer.json()["looked_up"]["erased_at"] == "2026-11-25T13:00:00Z"
    assert [m["subscriber_id"] for m in answer.json()["memberships"]] == ["s2"]
    assert [(m["campaign_id"], m["subscriber_id"]) for m in answer.json()["messages"]] == [("c2", "s2")]
    assert answer.json()["confirmations"] == []

    reads.address_members = []
    answer = await http.get(PATH, params={"email_sha256": HASH}, headers=STAFF)
    assert answer.status_code == 200 and answer.json()["memberships"] == [] and answer.json()["messages"] == []


async def test_an_id_added_again_after_its_erasure_shows_only_the_messages_made_since(service: Service) -> None:
    """The message ids are made of the subscriber id, so the new membership's look-up would find the erased
    person's messages: those made before the erasure are left out."""
    http, reads, _ = service
    reads.members["s1"] = {"subscriber_id": "s1", "list_id": "news", "status": "active",
                           "erased_at": T0 + timedelta(seconds=30)}
    reads.jobs[domain.message_id_for("acme", "c2", "s1")]["created_at"] = T0 + timedelta(minutes=2)
    answer = await http.get(PATH, params={"subscriber_id": "s1"}, headers=STAFF)
    assert answer.status_code == 200
    assert [m["campaign_id"] for m in answer.json()["messages"]] == ["c2"]
    assert answer.json()["confirmations"] == []
