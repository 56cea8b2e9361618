"""Claims on the store that hold the daily confirmation caps and the one notice per membership change across every
process deciding subscribes (the folding ones and the `subscriptions-api` replicas).

A process's locks and the read model cannot do it alone: two replicas deciding on one address at once both read
what was folded before either recorded anything. A claim is a document inserted under an `_id` that names what it
allows; the store refuses a second insert of one `_id` (unique `_id`: atomic on FerretDB without transactions,
where a read-then-update such as `$inc` is not), so of the processes that claim one thing, one gets it.

`_id`s start with the UTC day, so the claims of days gone are one `_id` range to delete: a process deletes the
ones before yesterday the first time it claims on a new day (`ClaimDocuments`). What is claimed:
- `day/account/email hash/list/list id`: the day's confirmation email to the address for that list (at most one);
- `day/account/email hash/slot/n`, n in 1..CONFIRMATIONS_PER_ADDRESS_PER_DAY: one of the address's confirmation
  emails of the day across the account's lists;
- `day/account/notice/subscriber id/version`: the customer's notice of the change decided on the membership as
  it stood (`version`: the last event folded into it, `new` for none), so the same change decided twice notifies
  once and a later change of the same membership again.
A calendar day's claims allow what the caps' rolling 24 hours allow within it (any confirmations of one day are
less than 24 hours apart); the rolling window itself is `domain.ConfirmationsSent`, on the read model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from pymongo.asynchronous.database import AsyncDatabase

from herald_shared.mongo import Document
from herald_shared.readmodel import compose, insert_new, prefix_range

from .domain import CONFIRMATIONS_PER_ADDRESS_PER_DAY

CLAIMS = "claims"
KEPT_DAYS = 2  # today's and yesterday's: a process whose clock is a little behind still claims on yesterday


def day_of(now: datetime) -> str:
    return now.date().isoformat()


class ClaimStore(Protocol):
    async def take(self, ids: Sequence[str], now: datetime) -> set[str]: ...

    async def release(self, ids: Iterable[str]) -> None: ...


@dataclass
class _Asked:
    ids: Sequence[str]
    now: datetime
    answer: asyncio.Future[set[str]]


class ClaimDocuments:
    """Insert-only claims by `_id`, and the deletion of the days gone.

    The claims asked for while an insert is out go together in the next one (as `KeyedReader`'s reads do), so
    concurrent subscribes share inserts as the fold shares its writes among them."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._collection = db[CLAIMS]
        self._cleaned_on: str | None = None
        self._asked: list[_Asked] = []
        self._inserting: asyncio.Task[None] | None = None

    async def take(self, ids: Sequence[str], now: datetime) -> set[str]:
        """Which of `ids` this call claimed (the others someone holds, or an earlier call of the same insert)."""
        if not ids:
            return set()
        answer: asyncio.Future[set[str]] = asyncio.get_running_loop().create_future()
        self._asked.append(_Asked(ids, now, answer))
        if self._inserting is None:
            self._inserting = asyncio.create_task(self._insert(), name="insert claims")
        return await answer

    async def _insert(self) -> None:
        asked: list[_Asked] = []
        try:
            while self._asked:
                asked, self._asked = self._asked, []
                docs = {i: {"_id": i, "at": a.now} for a in asked for i in a.ids}
                try:
                    await self._clean(asked[0].now)
                    held = await insert_new(self._collection, list(docs.values()))
                except Exception as exc:  # every caller of this round gets the error, none hangs
                    for a in asked:
                        if not a.answer.done():
                            a.answer.set_exception(exc)
                    continue
                given: set[str] = set()
                for a in asked:
                    mine = {i for i in a.ids if i not in held and i not in given}
                    given |= mine
                    if not a.answer.done():
                        a.answer.set_result(mine)
        finally:
            self._inserting = None
            for a in asked:  # cancelled mid-round (shutting down): its callers do not hang
                a.answer.cancel()

    async def _clean(self, now: datetime) -> None:
        day = day_of(now)
        if self._cleaned_on != day:
            oldest_kept = day_of(now - timedelta(days=KEPT_DAYS - 1))
            await self._collection.delete_many({"_id": {"$lt": compose(oldest_kept, "")}})
            self._cleaned_on = day

    async def release(self, ids: Iterable[str]) -> None:
        """Give back claims this process took and will not use (a request that recorded nothing)."""
        if wanted := list(ids):
            await self._collection.delete_many({"_id": {"$in": wanted}})

    async def purge(self, account_id: str, now: datetime) -> None:
        """Retention: the account's claims of the days kept (older ones go with their day)."""
        for back in range(KEPT_DAYS + 1):
            await self._collection.delete_many({"_id": prefix_range(day_of(now - timedelta(days=back)), account_id)})


class Claims:
    """What a subscribe, a confirmation or an unsubscribe claims before it publishes what it decided."""

    def __init__(self, documents: ClaimStore) -> None:
        self.documents = documents

    async def release(self, claims: Iterable[str]) -> None:
        await self.documents.release(claims)

    async def confirmations(self, account_id: str, wanted: Sequence[tuple[str, str]],
                            now: datetime) -> list[list[str] | None]:
        """For each (list id, email hash), the claims that let it send a confirmation email now, or None when the
        day's email for that list or the address's day across the lists is taken. The list first: of concurrent
        requests for one membership, only the one that has it goes on to take an address's slot."""
        day = day_of(now)
        by_list = [compose(day, account_id, email_hash, "list", list_id) for list_id, email_hash in wanted]
        waiting = _holders(by_list, await self.documents.take(list(dict.fromkeys(by_list)), now))
        slots: dict[int, str] = {}
        for slot in range(1, CONFIRMATIONS_PER_ADDRESS_PER_DAY + 1):
            if not waiting:
                break
            asked = [compose(day, account_id, wanted[n][1], "slot", str(slot)) for n in waiting]
            # One address asked for twice (two of its lists in one call): the slot is the first's.
            got = _holders(asked, await self.documents.take(list(dict.fromkeys(asked)), now))
            slots |= {waiting[k]: asked[k] for k in got}
            waiting = [n for k, n in enumerate(waiting) if k not in got]
        await self.documents.release(by_list[n] for n in waiting)  # the address had its day: its list's is unused
        return [[by_list[n], slots[n]] if n in slots else None for n in range(len(wanted))]

    async def notice(self, account_id: str, subscriber_id: str, version: str, now: datetime) -> str | None:
        """The claim on the customer's notice of a change decided on the membership at `version`, or None when
        another request decided the same change first."""
        claim = compose(day_of(now), account_id, "notice", subscriber_id, version)
        return claim if await self.documents.take([claim], now) else None


def _holders(asked: Sequence[str], taken: set[str]) -> list[int]:
    """The positions in `asked` that hold a claim taken: the first of each `_id` (a later copy holds nothing)."""
    first = {claim: n for n, claim in reversed(list(enumerate(asked)))}
    return sorted(first[claim] for claim in taken if claim in first)
