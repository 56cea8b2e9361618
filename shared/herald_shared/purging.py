"""Retention (PRODUCT.md, "Data protection"): when billing purges an account (AccountPurged), every service
deletes all of that account's data and ignores its events from then on, in a rebuild from offset 0 too.

`PurgedAccounts` keeps one tombstone document per purged account (`purged_accounts`, holding only the id and
when) and remembers them in memory; it is not part of any projection, so dropping a projection to rebuild it
keeps them. `PurgingHandler` wraps a consumer's handler (or a projection, for `mongo.rebuild`): an
AccountPurged makes the handler write what it holds, deletes the account's data (the service's `purge`), and
records the tombstone; any later event of that account is dropped before the handler sees it. The order
matters across topics: in a rebuild, the subscriptions events of an account may be read after billing's
AccountPurged, and are dropped then; those read before are folded and deleted with the rest.

A purge whose first write (the handler's flush) the store refuses (something the batch staged before it: see
`kafka.EventConsumer` on a batch the store refuses) waits for the batch's flush instead of failing the event,
which would dead-letter the purge itself.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

from pymongo.asynchronous.database import AsyncDatabase

from .contract import Event
from .contract.billing import AccountPurged
from .kafka import is_transient
from .readmodel import prefix_range

log = logging.getLogger(__name__)
Document = dict[str, Any]
PURGED = "purged_accounts"


class Handler(Protocol):
    async def handle(self, event: Event) -> None: ...

    async def flush(self) -> None: ...


class PurgedAccounts:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._collection = db[PURGED]
        self._known: set[str] | None = None

    async def load(self) -> set[str]:
        """The purged accounts (read once: a tombstone per purged account, a small collection)."""
        if self._known is None:
            self._known = {str(doc["_id"]) async for doc in self._collection.find({}, {"_id": 1})}
        return self._known

    async def add(self, account_id: str, at: datetime) -> None:
        await self._collection.update_one({"_id": account_id}, {"$setOnInsert": {"purged_at": at}}, upsert=True)
        (await self.load()).add(account_id)


async def delete_by_account_prefix(db: AsyncDatabase[Document], account_id: str, collections: Iterable[str]) -> None:
    """Delete every document whose `_id` starts with `account/` in each collection (an `_id` range)."""
    for name in collections:
        await db[name].delete_many({"_id": prefix_range(account_id)})


class PurgingHandler:
    """`handle`/`flush` of the wrapped handler, with the account's purge in between (see the module); also
    `drop`/`ensure_indexes` of a wrapped projection, so `mongo.rebuild` can fold through it."""

    def __init__(self, inner: Handler, purged: PurgedAccounts, purge: Callable[[str], Awaitable[None]]) -> None:
        self.inner = inner
        self.purged = purged
        self._purge = purge
        self.dropped = 0  # events of purged accounts dropped (for tests and logs)
        # Purges waiting for the flush, since the store refused what the batch staged before them.
        self._waiting: dict[str, AccountPurged] = {}

    async def handle(self, event: Event) -> None:
        known = await self.purged.load()
        if isinstance(event, AccountPurged):
            # Every time, even when the tombstone is there: consumers sharing the tombstones purge different
            # data, and a purge finds nothing the second time.
            try:
                await self.inner.flush()  # what the batch folded of the account so far, then deleted with it
            except Exception as exc:
                if is_transient(exc):
                    raise
                # Refused for an event before it: the batch's flush purges once it passes, or the consumer sets
                # the batch aside (`forget`) and hands this event over again, alone.
                self._waiting[event.account_id] = event
                return
            await self._purge_account(event)
            return
        if event.account_id in known or event.account_id in self._waiting:
            self.dropped += 1
            return
        await self.inner.handle(event)

    async def _purge_account(self, event: AccountPurged) -> None:
        await self._purge(event.account_id)
        await self.purged.add(event.account_id, datetime.now(UTC))
        log.info("account purged", extra={"account_id": event.account_id, "reason": event.payload.reason})

    async def flush(self) -> None:
        await self.inner.flush()
        for account_id, event in list(self._waiting.items()):
            await self._purge_account(event)
            del self._waiting[account_id]

    @property
    def forget(self) -> Callable[[], Awaitable[None]] | None:
        """The wrapped handler's `forget` (`kafka.ForgetfulHandler`), which also drops the purges waiting for the
        flush (their events are handed over again); None when it has none, so that the consumer keeps retrying
        a batch the store refuses rather than setting it aside (it asks with getattr)."""
        inner: Callable[[], Awaitable[None]] | None = getattr(self.inner, "forget", None)
        if inner is None:
            return None

        async def forget() -> None:
            await inner()
            self._waiting.clear()

        return forget

    async def drop(self) -> None:
        await self.inner.drop()  # type: ignore[attr-defined]

    async def ensure_indexes(self) -> None:
        await self.inner.ensure_indexes()  # type: ignore[attr-defined]
