"""The claims that hold the daily confirmation caps and the one notice per change across processes
(`claims.py`), over an in-memory store that refuses a second insert of one `_id` as the real one does."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from herald_shared.contract.subscriptions import ConfirmationRequested, SubscriberAdded
from herald_subscriptions import domain
from herald_subscriptions.claims import Claims

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


class InMemoryClaims:
    def __init__(self) -> None:
        self.held: set[str] = set()

    async def take(self, ids: Sequence[str], now: datetime) -> set[str]:
        taken = {i for i in ids if i not in self.held}
        self.held |= taken
        return taken

    async def release(self, ids: Iterable[str]) -> None:
        self.held -= set(ids)


async def test_one_confirmation_per_address_and_list_a_day() -> None:
    claims = Claims(InMemoryClaims())
    first = await claims.confirmations("acme", [("news", "h1")], NOW)
    again = await claims.confirmations("acme", [("news", "h1")], NOW.replace(hour=23))
    assert first[0] is not None and again == [None]
    # The refused requests took none of the address's day: two other lists still get theirs.
    assert None not in [*await claims.confirmations("acme", [("sales", "h1")], NOW),
                        *await claims.confirmations("acme", [("events", "h1")], NOW)]
    assert (await claims.confirmations("acme", [("news", "h1")], NOW.replace(day=8))) != [None]  # the next day


async def test_three_confirmations_per_address_a_day_across_the_lists_and_the_refused_lists_are_given_back() -> None:
    store = InMemoryClaims()
    claims = Claims(store)
    granted = [await claims.confirmations("acme", [(f"list{n}", "h1")], NOW) for n in range(5)]
    assert [g != [None] for g in granted] == [True, True, True, False, False]
    # The lists whose email was refused hold no claim: the person may still get one once a slot is given back.
    assert not any("/list/list3" in c or "/list/list4" in c for c in store.held)
    await claims.release(granted[0][0] or [])
    assert (await claims.confirmations("acme", [("list4", "h1")], NOW)) != [None]


async def test_an_import_batch_claims_each_address_once_and_other_accounts_and_addresses_apart() -> None:
    claims = Claims(InMemoryClaims())
    for n in range(2):
        assert await claims.confirmations("acme", [(f"list{n}", "h1")], NOW) != [None]
    batch = await claims.confirmations("acme", [("list2", "h1"), ("list2", "h2"), ("list3", "h1")], NOW)
    assert [b is not None for b in batch] == [True, True, False]  # h1's third of the day, then none left
    assert await claims.confirmations("globex", [("list3", "h1")], NOW) != [None]


async def test_a_notice_is_claimed_once_per_version_of_the_membership() -> None:
    claims = Claims(InMemoryClaims())
    assert await claims.notice("acme", "s1", "new", NOW) is not None
    assert await claims.notice("acme", "s1", "new", NOW) is None  # the same change decided again elsewhere
    assert await claims.notice("acme", "s1", "e-after-erasure", NOW) is not None


def test_a_decision_without_its_confirmation_keeps_the_member_pending_and_says_it_was_withheld() -> None:
    lst = domain.ListState("acme", "news", "News", "double", {})
    decision = domain.subscribe(
        lst, None, False, domain.SubscribeRequest("ann@example.com", domain.consent_evidence(
            source="api", collected_at=NOW, method="form"), "api"), "Acme",
        lambda: domain.ConfirmLink("http://subs/confirm/t", NOW), now=NOW)
    assert [type(e) for e in decision.events] == [SubscriberAdded, ConfirmationRequested]
    withheld = domain.without_confirmation(decision)
    assert ([type(e) for e in withheld.events], withheld.outcome, withheld.confirmation_withheld) == (
        [SubscriberAdded], "pending", True)
