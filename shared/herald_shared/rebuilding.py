"""The upgrade of a service's read model to a new format, shared by `herald_<service>.rebuild`: the format's mark
beside the read model, which a process of the new version checks at start, and the rebuild's run, which refuses
while a process consumes in the service's groups, folds the read model again from offset 0 and marks it last."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from pymongo.asynchronous.database import AsyncDatabase

from .consumer_groups import GroupMember, live_members
from .contract import Event, InvalidEvent
from .kafka import has_type, read_from_start, type_name, validate_record
from .mongo import Document, MongoDeduplicator, Rebuildable, make_client, rebuild
from .purging import PurgedAccounts
from .settings import HeraldSettings
from .topics import topic_of

log = logging.getLogger(__name__)

# The marks, one document per read model (`_id` its name). Not a projection collection: a rebuild leaves it.
FORMATS = "read_model_format"
# The exit status of a rebuild refused because processes consume (deploy/k8s/upgrade: the Job is not retried).
REFUSED = 3


class ReadModelOutdated(SystemExit):
    """The read model in the database is of an earlier format; the process cannot serve or fold it."""


@dataclass(frozen=True)
class ReadModelFormat:
    """A read model's format: `version` is what this version folds; `folded` is the collection whose documents
    show that something was folded (a read model without them has nothing to convert)."""

    service: str
    name: str  # the mark's `_id` in FORMATS
    version: int
    folded: str
    what: str  # how the refusal names it: "read model", "audience"

    async def check(self, db: AsyncDatabase[Document]) -> None:
        """Refuse a read model of an earlier format (`ReadModelOutdated`); one holding nothing folded yet is marked
        now. Two reads by `_id`, once at start."""
        mark = await db[FORMATS].find_one({"_id": self.name})
        if mark is not None and mark["format"] == self.version:
            return
        if mark is None and await self.empty(db):
            await self.mark(db)
            return
        raise ReadModelOutdated(
            f"herald-{self.service}: the {self.what} in {db.name!r} is of format {mark['format'] if mark else 1} "
            f"(an earlier one when unmarked), this version reads {self.version}; stop every {self.service} process "
            f"and run `python -m herald_{self.service}.rebuild` once (README, \"Upgrading\")")

    async def mark_if_empty(self, db: AsyncDatabase[Document]) -> None:
        """Mark a read model nothing was folded into yet, left as it is otherwise (`check` judges it)."""
        if await db[FORMATS].find_one({"_id": self.name}) is None and await self.empty(db):
            await self.mark(db)

    async def empty(self, db: AsyncDatabase[Document]) -> bool:
        return await db[self.folded].find_one({"_id": {"$gt": ""}}, {"_id": 1}) is None

    async def mark(self, db: AsyncDatabase[Document]) -> None:
        await db[FORMATS].update_one({"_id": self.name}, {"$set": {"format": self.version}}, upsert=True)

    async def unmark(self, db: AsyncDatabase[Document]) -> None:
        await db[FORMATS].delete_one({"_id": self.name})


async def once_per_database(db: AsyncDatabase[Document], mark: str, step: Callable[[], Awaitable[int]]) -> int | None:
    """A one-time upgrade step of a read model: `step` runs unless its `mark` is in FORMATS, and the mark is
    written after it, so an interrupted step runs again at the next start (each step writes the same when
    repeated, also when two processes start at once). Returns what `step` returned, None when it had run before."""
    if await db[FORMATS].find_one({"_id": mark}) is not None:
        return None
    done = await step()
    await db[FORMATS].update_one({"_id": mark}, {"$set": {"marked": True}}, upsert=True)
    return done


async def events_from_start(settings: HeraldSettings, only: Mapping[str, Collection[type[Event]]], *,
                            batch_size: int = 1000) -> AsyncIterator[list[Event]]:
    """The events of the given types on the given topics (by their names in the contract) from offset 0 to their
    ends now, a fetched batch at a time. The other records are passed over by their type header, unparsed; an
    invalid one is left out (the consumer dead-lettered it when it read it)."""
    kinds = {settings.topics(topic): tuple(types) for topic, types in only.items()}
    wanted = frozenset(type_name(t).encode() for types in kinds.values() for t in types)
    async for records in read_from_start(settings, list(kinds), batch_size=batch_size):
        events: list[Event] = []
        for record in records:
            if not has_type(record, wanted):
                continue
            try:
                event = validate_record(record, settings.topics)
            except InvalidEvent:
                continue
            if isinstance(event, kinds[record.topic]):
                events.append(event)
        yield events


async def learn_from_start(settings: HeraldSettings, db: AsyncDatabase[Document], topic: str,
                           types: Collection[type[Event]], fold: Callable[[list[Event]], Awaitable[None]]) -> int:
    """The events of `types` on `topic` from offset 0 to its end now, handed to `fold` a fetched batch at a time:
    what a consumer that passed them over before it folded them has to learn once (`once_per_database`); the
    purged accounts' events left out. Returns the events folded."""
    purged = await PurgedAccounts(db).load()
    learnt = 0
    async for batch in events_from_start(settings, {topic: types}):
        events = [event for event in batch if event.account_id not in purged]
        if events:
            await fold(events)
            learnt += len(events)
    return learnt


class _PassedOverNotRemembered(MongoDeduplicator):
    """A consumer's deduplicator as the service leaves it when the consumer reads only some types of a topic
    (`EventConsumer(only=...)`): the ids of the others, passed over, are not stored."""

    def __init__(self, db: AsyncDatabase[Document], consumer_name: str) -> None:
        super().__init__(db, consumer_name)
        self.passed_over: set[str] = set()  # ids passed over since the last `remember`: one batch's at most

    async def remember(self, event_ids: Sequence[str]) -> None:
        passed, self.passed_over = self.passed_over, set()
        await super().remember([i for i in event_ids if i not in passed])


class _NotingPassedOver:
    """The rebuild's handler, passing over, unremembered, what the consumer does not read
    (`EventConsumer(only=...)`)."""

    def __init__(self, inner: Rebuildable, deduplicator: _PassedOverNotRemembered,
                 only: Mapping[str, Collection[type[Event]]]) -> None:
        self.inner, self.deduplicator = inner, deduplicator
        self.only = {topic: tuple(types) for topic, types in only.items()}

    async def drop(self) -> None:
        await self.inner.drop()

    async def ensure_indexes(self) -> None:
        await self.inner.ensure_indexes()

    async def handle(self, event: Event) -> None:
        wanted = self.only.get(topic_of(event))
        if wanted is not None and not isinstance(event, wanted):
            self.deduplicator.passed_over.add(str(event.event_id))
            return
        await self.inner.handle(event)

    async def flush(self) -> None:
        await self.inner.flush()


async def fold_again(handler: Rebuildable, settings: HeraldSettings, db: AsyncDatabase[Document],
                     topics: Sequence[str], consumer_name: str,
                     self_deduplicated: tuple[type[Event], ...] = (),
                     only: Mapping[str, Collection[type[Event]]] | None = None, lead: Sequence[str] = ()) -> int:
    """`mongo.rebuild` of what the consumer `consumer_name` folds (its `topics`, and of them `only` its types, as
    `EventConsumer`'s arguments; `lead`: those read to their end first, as `mongo.rebuild` takes them), with that
    consumer's deduplicator emptied and refilled as the consumer fills it (not with the ids of `self_deduplicated`,
    which the documents keep), so that the consumer, resuming from its committed offsets, passes over what it reads
    again. The rebuild finds there the copies of what it folded (`mongo.RunCopies`). Returns the events read (those
    passed over included)."""
    deduplicator = _PassedOverNotRemembered(db, consumer_name)
    return await rebuild(_NotingPassedOver(handler, deduplicator, only or {}), settings, topics,
                         deduplicator=deduplicator, self_deduplicated=self_deduplicated, lead=lead)


def refusal(service: str, members: Sequence[GroupMember], outcome: str, stop: str) -> str:
    """What the operator reads when processes consume beside the rebuild: which, where, and what to do (`stop`:
    which processes to stop)."""
    return "\n".join([
        f"herald-{service} rebuild refused ({outcome}): these processes consume in the {service} consumer groups, "
        "and a rebuild beside them leaves a corrupt read model (they fold into what it drops and refills):",
        *(f"  {member}" for member in members),
        f"{stop}, then run the rebuild again. A process killed rather than stopped stays a member until its session "
        "times out (HERALD_KAFKA_SESSION_TIMEOUT_SECONDS, 10 s by default)."])


async def run_rebuild(settings: HeraldSettings, read_model: ReadModelFormat, groups: Sequence[str], stop: str,
                      fold: Callable[[HeraldSettings, AsyncDatabase[Document]], Awaitable[int]]) -> int:
    """The rebuild's command: refused (REFUSED) while the service's `groups` have a member; otherwise `fold` (which
    removes the mark first), then the mark, unless a process joined meanwhile. Returns the exit status."""
    service = read_model.service
    if members := await live_members(settings, groups):
        print(refusal(service, members, "nothing was dropped", stop), file=sys.stderr, flush=True)
        return REFUSED
    mongo = make_client(settings, f"{service}-rebuild")
    try:
        db = mongo[settings.database_name(service)]
        applied = await fold(settings, db)
        # A process that started meanwhile folded beside the rebuild: the format stays unmarked (a process of this
        # version refuses the read model), and the rebuild is run again once it is stopped.
        if members := await live_members(settings, groups):
            print(refusal(service, members, f"they joined while it ran: the {read_model.what} is folded again but "
                                            "left unmarked, refused by this version", stop),
                  file=sys.stderr, flush=True)
            return REFUSED
        await read_model.mark(db)
        log.info("%s %s rebuilt", service, read_model.what, extra={"events": applied})
        return 0
    finally:
        await mongo.close()
