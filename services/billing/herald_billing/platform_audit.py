"""The platform's own audit log, for what belongs to no account: login attempts naming a user nobody is, and staff
looks at what no account holds any more (a purged account's kept invoices) or at this log itself.

Written by the handlers, not folded (a rebuild keeps it), every read and write by `_id` or an `_id` range:
`platform_audit` (`time/sequence+random`, oldest first) and `platform_audit_hours` (`hour`: every attempt of the hour
counted by reason). Bounded against a flood of made-up usernames, which anyone may send unauthenticated: at most
`attempts_per_hour` attempts an hour are written one by one, platform-wide, at most `per_address` of them from one
address (in this process's memory, `herald_shared.throttle`), and none refused unchecked (`locked`: a login
throttle had refused it); the rest are only counted in their hour. So one address cannot fill an hour's bound and
hide the others' attempts. Entries and hours older than `retention` are deleted by the plan clock.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from herald_shared.readmodel import compose, time_key
from herald_shared.throttle import Throttle

Document = dict[str, Any]
ENTRIES, HOURS = "platform_audit", "platform_audit_hours"
# What an entry keeps of what a client sent: a login name is 100 characters at most, an address fits in 64
# (IPv6 with a zone), a user agent's first 256 characters name the client.
USERNAME_MAX, IP_MAX, USER_AGENT_MAX = 100, 64, 256


@dataclass(frozen=True)
class AuditBounds:
    """How much the platform audit log may hold: see the module."""

    attempts_per_hour: int = 100
    retention: timedelta = timedelta(days=90)
    per_address: int = 10


def hour_of(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def storable(text: str | None, most: int) -> str | None:
    """`text` cut to `most` characters, as the store takes it: a NUL (PostgreSQL's JSON refuses it) as U+FFFD, a
    lone surrogate (no UTF-8) as '?'."""
    cut = (text or "")[:most].replace("\x00", "\ufffd")
    return cut.encode("utf-8", "replace").decode("utf-8") or None


def login_entry(at: datetime, username: str | None, ip: str | None, user_agent: str | None,
                reason: str) -> Document:
    """A failed login attempt as the log keeps it: the username as typed, the address and user agent, each cut to
    its bound."""
    return {"at": at, "kind": "login", "result": "failure", "reason": reason,
            "username": storable(username, USERNAME_MAX), "ip": storable(ip, IP_MAX),
            "user_agent": storable(user_agent, USER_AGENT_MAX)}


class PlatformAudit:
    def __init__(self, db: AsyncDatabase[Document], bounds: AuditBounds | None = None) -> None:
        self.db = db
        self.bounds = bounds or AuditBounds()
        self._per_address = Throttle(limit=max(1, self.bounds.per_address), window=timedelta(hours=1))
        # Entries of one instant (a coarse clock, a test's fixed one) keep the order they were written in.
        self._sequence = itertools.count()
        # The hours' counts are written one at a time: FerretDB applies an `$inc` by reading and writing the document
        # back, so concurrent ones lost counts (and handed several attempts the same place in the hour), and
        # concurrent upserts of a new hour failed on its `_id` (a 500 to the login). Billing runs one replica.
        self._counting = asyncio.Lock()

    async def login_attempt(self, at: datetime, username: str | None, ip: str | None, user_agent: str | None,
                            reason: str) -> bool:
        """Count the attempt in its hour and, within the bounds, write it; True when written."""
        itemised = reason != "locked" and not (ip and self._per_address.retry_after(ip, at) > 0)
        if itemised and ip:
            self._per_address.count(ip, at)
        counts: dict[str, int] = {"attempts": 1, f"reasons.{reason}": 1}
        if itemised:
            counts["itemised_tried"] = 1
        key = time_key(hour_of(at))
        async with self._counting:  # each attempt learns its own place in the hour
            hour = await self.db[HOURS].find_one_and_update(
                {"_id": key}, {"$inc": counts, "$setOnInsert": {"hour": hour_of(at)}}, upsert=True,
                return_document=ReturnDocument.AFTER)
        if not itemised or int((hour or {}).get("itemised_tried", 0)) > self.bounds.attempts_per_hour:
            return False
        await self._write(login_entry(at, username, ip, user_agent, reason))
        async with self._counting:
            await self.db[HOURS].update_one({"_id": key}, {"$inc": {"itemised": 1}})
        return True

    async def staff_access(self, at: datetime, staff: str, what: str, **about: str | None) -> None:
        await self._write({"at": at, "kind": "staff_access", "staff": staff, "what": what, **about})

    async def _write(self, entry: Document) -> None:
        key = compose(time_key(entry["at"]), f"{next(self._sequence) % 10**12:012d}{secrets.token_hex(4)}")
        await self.db[ENTRIES].insert_one({"_id": key, **entry})

    async def entries(self, after: str | None, since: datetime | None, limit: int) -> list[Document]:
        """Oldest first, from after the cursor (the last `_id` of the page before) or from `since`."""
        return await self._page(ENTRIES, after, since, limit)

    async def hours(self, after: str | None, since: datetime | None, limit: int) -> list[Document]:
        return await self._page(HOURS, after, hour_of(since) if since is not None else None, limit)

    async def _page(self, collection: str, after: str | None, since: datetime | None, limit: int) -> list[Document]:
        start = max(after or "", time_key(since) if since is not None else "")
        bound = {"$gt": start} if start == after else {"$gte": start}
        cursor = self.db[collection].find({"_id": bound}).sort("_id", 1).limit(limit)
        return [doc async for doc in cursor]

    async def expire(self, now: datetime) -> int:
        """Delete the entries the retention's age reached, and the hours that ended by then (an `_id` range of
        each: '0' sorts after the '/' that follows a key's time); returns the entries deleted."""
        cutoff = now - self.bounds.retention
        done = await self.db[ENTRIES].delete_many({"_id": {"$lt": time_key(cutoff) + "0"}})
        await self.db[HOURS].delete_many({"_id": {"$lt": time_key(cutoff - timedelta(hours=1)) + "0"}})
        return done.deleted_count
