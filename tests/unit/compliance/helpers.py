"""What the one-off sending unit tests share: an account's decisions over a lists table kept as a dict, and the
events of a list created, sent to and deleted."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from herald_compliance.domain import AccountState, Decision, Input, ListRecord, Policy, decide, default_rules
from herald_shared.contract import Event
from herald_shared.contract.compliance import AccountWarned
from herald_shared.contract.delivery import MessageSent
from herald_shared.contract.subscriptions import ListCreated, ListDeleted, SubscriberAdded

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
POLICY = Policy(default_rules(), minimum_sent=100)
ACCOUNT = "acc-f1"


class Lists(dict[str, ListRecord]):
    """The lists table as a dict; `loads` counts the records read, to show the comparisons stay few."""

    loads = 0

    def get(self, list_id: str, default: Any = None) -> ListRecord:  # type: ignore[override]
        self.loads += 1
        return ListRecord.from_json(super().get(list_id, ListRecord()).to_json())  # a copy, as the table gives

    def put(self, list_id: str, record: ListRecord) -> None:
        self[list_id] = record


class Account:
    def __init__(self, policy: Policy = POLICY) -> None:
        self.state, self.facts, self.lists, self.policy = AccountState(), dict[str, Any](), Lists(), policy
        self.offsets: dict[str, int] = {}

    def decide(self, *events: Event, published_at: datetime | None = None) -> list[AccountWarned]:
        return [e for e in self.decision(*events, published_at=published_at).announcements
                if isinstance(e, AccountWarned)]

    def decision(self, *events: Event, published_at: datetime | None = None) -> Decision:
        """The events as one batch read from their topics (one partition each), and what the domain made of it."""
        items = []
        for event in events:
            source = f"{event.topic}:0"
            offset = self.offsets[source] = self.offsets.get(source, -1) + 1
            items.append(Input(event, source, offset, int((published_at or event.occurred_at).timestamp())))
        return decide(ACCOUNT, self.state, items, self.facts, self.lists, self.policy, set(), T0)

    def run(self, *steps: Iterable[Event]) -> list[AccountWarned]:
        """Each step a batch, as the processor may read them."""
        return [w for step in steps for w in self.decide(*step)]


def env(at: datetime) -> dict[str, Any]:
    return {"account_id": ACCOUNT, "producer": "test", "occurred_at": at}


def address(i: int) -> str:
    return hashlib.sha256(f"person{i}@example.com".encode()).hexdigest()


def new_list(list_id: str, people: Iterable[int], at: datetime, *, create: bool = True) -> list[Event]:
    events: list[Event] = [ListCreated(**env(at), payload={"list_id": list_id, "name": list_id, "opt_in": "single"})]
    for i in people:
        events.append(SubscriberAdded(**env(at), payload={
            "list_id": list_id, "subscriber_id": f"{list_id}-s{i}", "email": f"person{i}@example.com",
            "email_sha256": address(i), "opt_in": "single",
            "consent": {"source": "import", "collected_at": "2026-11-01T00:00:00Z", "method": "test"}}))
    return events if create else events[1:]


def blast(list_id: str, campaign: str, people: Iterable[int], at: datetime) -> list[Event]:
    return [MessageSent(**env(at), payload={"message_id": f"{campaign}-m{i}", "campaign_id": campaign,
                                            "subscriber_id": f"{list_id}-s{i}", "list_id": list_id,
                                            "recipient_domain": "example.com", "smtp_code": 250}) for i in people]


def deleted(list_id: str, at: datetime, members: int = 100) -> list[Event]:
    return [ListDeleted(**env(at), payload={"list_id": list_id, "members_at_deletion": members})]
