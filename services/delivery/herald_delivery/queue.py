"""The sender's in-memory view of the ledger: jobs not finished yet, ordered by when they are due, and those
a closed gate holds, parked per campaign until it opens.

The ledger in MongoDB is append-only (jobs, then outcomes), and this queue is folded from it at start-up;
afterwards new jobs are pushed here as they are written. Nothing is scanned per message: FerretDB 1.x
reads the whole collection for every filter beyond `_id` (even patched), while inserts are cheap.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from .domain import Gate

Job = dict[str, Any]  # a job document of the ledger
GroupKey = tuple[str, str | None]  # (account, campaign or None for transactional mail)

# A queued job is a compact copy of its ledger document: a 1,000,000-message campaign is a million of them.
# Fields the sender never reads from memory stay in the ledger only; the field names, and the values a
# campaign's jobs share (its account, campaign, list, due time), are one object for all of them instead of one
# per job (a document decoded from MongoDB has its own copy of each, names included: 1.8 KB a job against
# ~0.5 KB compact).
LEDGER_ONLY = frozenset({"created_at", "campaign_key", "test_key"})
SHARED_VALUES = frozenset({"account_id", "kind", "campaign_id", "list_id", "next_attempt_at", "company_name",
                           "list_name"})
SHARED_LIMIT = 100_000  # distinct shared values remembered; then forgotten and gathered again


class JobQueue:
    def __init__(self, changed: asyncio.Event) -> None:
        """`changed` is set when jobs are added (the sender waits on it, shared with the gates)."""
        self._jobs: dict[str, Job] = {}
        self._heap: list[tuple[datetime, int, str]] = []
        self._order = itertools.count()
        self._parked: dict[GroupKey, list[str]] = {}
        # Campaign messages not finished, per campaign: when none is left, delivery is done with it.
        self._unfinished: dict[GroupKey, int] = {}
        self._shared: dict[Any, Any] = {}
        self.changed = changed

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, message_id: str) -> bool:
        return message_id in self._jobs

    def push(self, jobs: Iterable[Job], *, compacted: bool = False) -> int:
        """Add jobs not known yet (a job already queued keeps its place); returns how many were added. The
        queue keeps a compact copy of each (`compact`), or the job itself when it is one already."""
        added = 0
        for job in jobs:
            message_id = str(job["_id"])
            if message_id in self._jobs:
                continue
            self._jobs[message_id] = job if compacted else self.compact(job)
            self._schedule(message_id)
            if job["kind"] == "campaign":
                self._unfinished[group_of(job)] = self._unfinished.get(group_of(job), 0) + 1
            added += 1
        if added:
            self.changed.set()
        return added

    def compact(self, job: Job) -> Job:
        """A copy without `LEDGER_ONLY` fields, its field names and `SHARED_VALUES` shared with other jobs."""
        shared = self._shared
        if len(shared) > SHARED_LIMIT:
            shared.clear()
        compact: Job = {}
        for key, value in job.items():
            if key in LEDGER_ONLY:
                continue
            key = shared.setdefault(key, key)
            if key in SHARED_VALUES and value is not None:
                value = shared.setdefault(value, value)
            compact[key] = value
        return compact

    def _schedule(self, message_id: str) -> None:
        due = self._jobs[message_id]["next_attempt_at"]
        assert isinstance(due, datetime)
        heapq.heappush(self._heap, (due, next(self._order), message_id))

    def retry_at(self, message_id: str, when: datetime, **changes: object) -> None:
        """A deferred job: due again at `when`."""
        job = self._jobs[message_id]
        job.update(changes, next_attempt_at=when)
        self._schedule(message_id)

    def done(self, message_id: str) -> bool:
        """The job has a final outcome; False when it was not queued (finished already)."""
        job = self._jobs.pop(message_id, None)
        if job is None:
            return False
        if job["kind"] == "campaign":
            key = group_of(job)
            left = self._unfinished[key] - 1
            if left:
                self._unfinished[key] = left
            else:
                del self._unfinished[key]
        return True

    def unfinished(self, account_id: str, campaign_id: str) -> int:
        """Messages of the campaign not finished yet: pending, in flight, held or deferred."""
        return self._unfinished.get((account_id, campaign_id), 0)

    def bring_forward(self, account_id: str, campaign_id: str, when: datetime) -> int:
        """Make the campaign's jobs due later (a scheduled send, a retry) due at `when`, so a cancelled
        campaign's remaining messages are recorded now rather than at their retry. Jobs due already (pending,
        held, in flight) are left alone; returns how many were moved."""
        moved = [message_id for message_id, job in self._jobs.items()
                 if job["kind"] == "campaign" and job["next_attempt_at"] > when
                 and group_of(job) == (account_id, campaign_id)]
        for message_id in moved:
            self.retry_at(message_id, when)
        if moved:
            self.changed.set()
        return len(moved)

    def forget_recipient(self, account_id: str, subscriber_id: str) -> None:
        """Erasure: queued jobs of the subscriber, or naming them, lose the address, greeting and text they hold
        (the sender skips a job without a recipient)."""
        for job in self._jobs.values():
            if job["account_id"] == account_id and subscriber_id in (job.get("subscriber_id"),
                                                                     job.get("about_subscriber_id")):
                for field in ("recipient", "greeting_name", "subject", "text"):
                    job.pop(field, None)

    def forget_account(self, account_id: str) -> int:
        """Retention: the account's jobs leave the queue (held, due or deferred); returns how many."""
        gone = [message_id for message_id, job in self._jobs.items() if job["account_id"] == account_id]
        self._shared.clear()  # nothing of the account is kept alive by it
        for message_id in gone:
            del self._jobs[message_id]  # its heap entries are skipped when they come up
        for key in [k for k in (*self._parked, *self._unfinished) if k[0] == account_id]:
            self._parked.pop(key, None)
            self._unfinished.pop(key, None)
        return len(gone)

    def take_due(self, now: datetime, limit: int, gate_of: Callable[[Job], Gate | None]) -> list[Job]:
        """Up to `limit` jobs due by `now` whose gates are open; jobs whose gate is closed are parked."""
        taken: list[Job] = []
        while self._heap and len(taken) < limit and self._heap[0][0] <= now:
            due, _, message_id = heapq.heappop(self._heap)
            job = self._jobs.get(message_id)
            if job is None or job["next_attempt_at"] != due:
                continue  # finished, or rescheduled (a newer heap entry stands for it)
            if gate_of(job) is not None:
                self._parked.setdefault(group_of(job), []).append(message_id)
                continue
            taken.append(job)
        return taken

    def unpark(self, gate_of: Callable[[Job], Gate | None]) -> int:
        """Put back the jobs of every group whose gate has opened; returns how many."""
        released = 0
        for key in list(self._parked):
            ids = [i for i in self._parked[key] if i in self._jobs]
            if not ids:
                del self._parked[key]
                continue
            if gate_of(self._jobs[ids[0]]) is None:
                del self._parked[key]
                for message_id in ids:
                    self._schedule(message_id)
                released += len(ids)
        return released

    def held(self, gate_of: Callable[[Job], Gate | None]) -> dict[GroupKey, tuple[Gate, int]]:
        """Parked groups whose gate is still closed: (gate, messages held)."""
        report: dict[GroupKey, tuple[Gate, int]] = {}
        for key, ids in self._parked.items():
            alive = [i for i in ids if i in self._jobs]
            if alive:
                gate = gate_of(self._jobs[alive[0]])
                if gate is not None:
                    report[key] = (gate, len(alive))
        return report

    def pending_by_group(self) -> dict[GroupKey, int]:
        counts: dict[GroupKey, int] = {}
        for job in self._jobs.values():
            counts[group_of(job)] = counts.get(group_of(job), 0) + 1
        return counts


def group_of(job: Job) -> GroupKey:
    campaign = job.get("campaign_id")
    return str(job["account_id"]), str(campaign) if campaign is not None else None
