"""Kafka adapters on aiokafka: topic creation, an idempotent event publisher, and the consumer loop.

The consumer loop is at-least-once in, effectively-once out: offsets are committed only after a batch
was handled and flushed; events already seen (by event_id) are skipped, but for another event under an id
already seen (`content_digest`); anything that cannot be parsed, validated or handled goes to the topic's
dead-letter topic, byte for byte, with the reason in headers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, get_args, runtime_checkable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import RecordMetadata
from prometheus_client import Counter, Histogram
from pymongo.errors import BulkWriteError, OperationFailure, PyMongoError, WriteConcernError

from . import correlation, metrics
from .aiokafka_adapter import hold_idle_fetches
from .contract import Event, InvalidEvent, parse_event, serialize_event
from .contract.envelope import MAX_REQUEST_BYTES as MAX_REQUEST_BYTES  # defined with the contract, which bounds by it
from .contract.envelope import RecordPosition
from .settings import HeraldSettings
from .topics import ALL_TOPICS, DLQ_SUFFIX, EVENT_TOPICS, TopicNames, TopicSpec

log = logging.getLogger(__name__)

# Header names of a dead-letter entry; the value is the original message, byte for byte. An entry of a record
# read from a topic says where (topic, partition, offset); one that comes from no record says what it came from
# instead (`DLQ_ORIGIN`: a mail received, an outcome that could not become its event).
DLQ_REASON = "herald.dlq.reason"
DLQ_SOURCE_TOPIC = "herald.dlq.source_topic"
DLQ_SOURCE_PARTITION = "herald.dlq.source_partition"
DLQ_SOURCE_OFFSET = "herald.dlq.source_offset"
DLQ_ORIGIN = "herald.dlq.origin"
DLQ_CONSUMER = "herald.dlq.consumer"
DLQ_FAILED_AT = "herald.dlq.failed_at"
MAX_REASON_CHARS = 2_000  # of a dead-letter reason (an exception's text can quote a whole header)
DeadLetterCategory = Literal["invalid", "rejected", "handler_failed"]
DEAD_LETTER_CATEGORIES: tuple[DeadLetterCategory, ...] = get_args(DeadLetterCategory)
# How often a consumer reports its lag and position from the broker's end offsets, whatever its loop is doing: a
# handler that waits out an infrastructure error holds the loop (and its report after each poll) for as long as
# that lasts.
LAG_REPORT_SECONDS = 15.0
# Errors of the infrastructure, not of the event: a handler hitting one is retried until it passes.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (PyMongoError, KafkaError, OSError, TimeoutError)
# Of the errors the server answers (OperationFailure), those of a server briefly unable to write, not of what
# was written: MongoDB's codes PyMongo retries (a primary stepping down or shutting down, a network error
# between members), time limits (50, 262), write concern (64), write conflicts (112); and InternalError (1),
# what FerretDB answers when PostgreSQL under it is away.
TRANSIENT_CODES = frozenset({1, 6, 7, 50, 64, 89, 91, 112, 134, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436})


class EventsRefused(Exception):
    """A handler's flush found events of the batch that a rule of its own refuses (not the store): the consumer
    sets the batch aside at once, without retrying it or logging a traceback, and takes its events again one at a
    time, so that the handler refuses those (dead-lettered with its reason) and folds the rest."""


def is_transient(exc: BaseException) -> bool:
    """Whether an error is the infrastructure's (MongoDB or the broker away, a time limit: waited out) rather
    than a refusal of what was written, which no retry changes: a value the store cannot keep (OverflowError,
    bson's InvalidDocument) or a write the server refuses (a BulkWriteError or WriteError of another code)."""
    if isinstance(exc, BulkWriteError):
        details = exc.details or {}
        codes = {error.get("code") for error in details.get("writeErrors", [])}
        return bool(details.get("writeConcernErrors")) or (bool(codes) and codes <= TRANSIENT_CODES)
    if isinstance(exc, WriteConcernError):
        return True
    if isinstance(exc, OperationFailure):
        return exc.code in TRANSIENT_CODES or any(
            exc.has_error_label(label) for label in ("RetryableWriteError", "TransientTransactionError"))
    return isinstance(exc, TRANSIENT_ERRORS)


async def ensure_topics(settings: HeraldSettings, specs: Iterable[TopicSpec] = ALL_TOPICS) -> dict[str, str]:
    """Create every missing topic of the registry; idempotent. Returns topic → 'created' | 'exists'."""
    names = settings.topics
    wanted = {names(spec.name): spec for spec in specs}
    admin = AIOKafkaAdminClient(**settings.kafka_client_options(), client_id="herald-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(name=name, num_partitions=spec.partitions,
                            replication_factor=settings.kafka_replication_factor, topic_configs=spec.config())
                   for name, spec in wanted.items() if name not in existing]
        result = {name: "exists" for name in wanted if name in existing}
        if missing:
            response = await admin.create_topics(missing)
            for name, code, message in _topic_errors(response):
                if code == 36:  # TOPIC_ALREADY_EXISTS: created concurrently, which is fine
                    result[name] = "exists"
                elif code != 0:
                    raise KafkaError(f"creating topic {name} failed: error {code} {message or ''}".strip())
                else:
                    result[name] = "created"
        # A topic created here must be served whole; one that existed, known (however its partitions stand:
        # one without a leader while a broker is away is no reason not to start).
        await until_led(admin.describe_topics, {name: spec.partitions if result[name] == "created" else 0
                                                for name, spec in wanted.items()})
        return dict(sorted(result.items()))
    finally:
        await admin.close()


# How long a topic created here may take to be served (a leader for each partition), or one that existed to be known.
TOPICS_LED_TIMEOUT = 30.0


async def until_led(describe: Callable[[list[str]], Awaitable[list[Any]]], partitions: Mapping[str, int],
                    within: float = TOPICS_LED_TIMEOUT) -> None:
    """Returns once the broker's metadata shows every topic, with at least as many partitions led as `partitions`
    gives it (0: known will do); KafkaError naming those that are not after `within` s. The controller answers
    CreateTopics before the brokers' metadata holds the new topic: a consumer subscribing in between is assigned
    none of its partitions, and waits for the next metadata refresh (5 minutes) to see them (a CI run's service
    folded nothing for 15 s and answered 503)."""
    loop = asyncio.get_running_loop()
    give_up, pause = loop.time() + within, 0.02
    while True:
        served = {topic["topic"]: topic for topic in await describe(sorted(partitions))}
        unled = [why for name, count in sorted(partitions.items())
                 if (why := _not_served(name, served.get(name), count)) is not None]
        if not unled:
            return
        if loop.time() >= give_up:
            raise KafkaError(f"topics not served within {within:g} s: {'; '.join(unled)}")
        await asyncio.sleep(min(pause, max(0.0, give_up - loop.time())))
        pause = min(pause * 2, 1.0)


def _not_served(name: str, topic: Mapping[str, Any] | None, partitions: int) -> str | None:
    """Why a topic's metadata (describe_topics' entry) is not yet what consumers need, or None."""
    if topic is None or topic["error_code"]:
        return f"{name}: error {topic['error_code'] if topic else 'no answer'}"
    led = sum(1 for p in topic["partitions"] if p["error_code"] == 0 and p["leader"] >= 0)
    return None if led >= partitions else f"{name}: {led} of {partitions} partitions led"


def _topic_errors(response: Any) -> list[tuple[str, int, str | None]]:
    rows = []
    for item in response.topic_errors:
        name, code = item[0], item[1]
        rows.append((name, code, item[2] if len(item) > 2 else None))
    return rows


# How long the broker may hold a fetch that finds nothing new. aiokafka keeps one fetch in flight per broker
# and leaves a partition that still has unconsumed records out of it; so while a consumer handles a batch,
# the fetch out is for its idle partitions only, and the busy partition's next records wait until that fetch
# comes back: up to this long (the default, 500 ms, halved a rebuild's rate and put a tail on every
# read-your-writes request).
FETCH_MAX_WAIT_MS = 50
# The same for an EventConsumer holding no records: every partition is in its fetch, which the broker answers as
# soon as any has new records, so this long delays nothing, and an idle consumer sends 2 fetches a second, not 20
# (aiokafka_adapter.hold_idle_fetches). It does hold the connection's other requests (end offsets) behind it.
IDLE_FETCH_MAX_WAIT_MS = 500


# The bytes a partition's batch holds before it is sent without waiting out `linger_ms` (aiokafka's default).
BATCH_BYTES = 16 * 1024
# For a producer that publishes thousands of events to one partition at once (an import: an account's events
# all go to its partition). With 16 KB, 6,000 events of ~0.4 KB made ~150 produce requests, one after the
# other, and the import's decisions waited on them: 3,873 -> 8,768 rows/s decided, 3,832 -> 4,820 visible
# (200,000 rows, 2026-12-05, bench.import_visible). Not for delivery: its outcomes, a few at a time, went out
# later (2,434 and 2,546 msg/s with 16 KB, 1,927 and 2,095 with this). Below the broker's message.max.bytes.
BULK_BATCH_BYTES = 512 * 1024


def make_producer(settings: HeraldSettings, client_id: str, *, batch_bytes: int = BATCH_BYTES) -> AIOKafkaProducer:
    """Idempotent (no duplicates from retries), acks from all in-sync replicas; a record of at most
    MAX_REQUEST_BYTES (what campaigns' `MAX_EVENT_BYTES` and the contract's longest texts are bounded by), named
    rather than left to aiokafka's default."""
    return AIOKafkaProducer(**settings.kafka_client_options(), client_id=client_id,
                            enable_idempotence=True, acks="all", linger_ms=5, max_batch_size=batch_bytes,
                            max_request_size=MAX_REQUEST_BYTES)


# How long readiness waits for a broker's answer (below /readyz's 2 s per check), and how long an answer is kept:
# probes every 5 s from the kubelet, and any other caller, cost the broker a metadata request every 2 s at most.
BROKER_ANSWER_SECONDS = 1.0
BROKER_ANSWER_KEPT_SECONDS = 2.0


class BrokerProbe:
    """Whether the Kafka cluster answers, for readiness: a metadata request over a started producer's connections
    (any broker's answer will do). A consumer cannot say it: its loop and its `started` go on unchanged while its
    fetches retry against a broker that is away. Callers within `kept` seconds of an answer get that answer, and
    those arriving while a request is out wait for it: one request at a time, at most one per `kept` seconds."""

    def __init__(self, producer: AIOKafkaProducer, *, timeout: float = BROKER_ANSWER_SECONDS,
                 kept: float = BROKER_ANSWER_KEPT_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = producer.client  # aiokafka's AIOKafkaClient: its public metadata request
        self._timeout, self._kept, self._clock = timeout, kept, clock
        self._answer: str | None = None
        self._answered_at: float | None = None
        self._asking: asyncio.Future[str | None] | None = None

    async def unreachable(self) -> str | None:
        """None when a broker answered (lately); else why not, for people."""
        if self._answered_at is not None and self._clock() - self._answered_at < self._kept:
            return self._answer
        if self._asking is None:
            self._asking = asyncio.ensure_future(self._ask())
        # Shielded: a caller giving up (its own timeout) leaves the answer to the others waiting.
        return await asyncio.shield(self._asking)

    async def _ask(self) -> str | None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._client.fetch_all_metadata()  # into a fresh ClusterMetadata: the client's is untouched
            answer = None
        except TimeoutError:  # a broker that accepts connections but does not answer (paused, overloaded)
            answer = f"no Kafka broker answered within {self._timeout:g} s"
        except (KafkaError, OSError) as exc:
            answer = f"no Kafka broker reachable ({type(exc).__name__})"
        finally:
            self._asking = None
        self._answer, self._answered_at = answer, self._clock()
        return answer


def event_headers(event: Event) -> list[tuple[str, bytes]]:
    return [("type", event.type.encode()), ("schema_version", str(event.schema_version).encode()),
            ("event_id", str(event.event_id).encode()), ("producer", event.producer.encode())]


def validate_record(record: ConsumerRecord[bytes, bytes], names: TopicNames) -> Event:
    """The event in a record, if it is valid, on its owning topic, and keyed by its account."""
    if record.value is None:
        raise InvalidEvent("empty message value (tombstone)")
    event = parse_event(record.value)
    expected_topic = names(event.topic)
    if record.topic != expected_topic:
        raise InvalidEvent(f"{event.type} belongs on {expected_topic}, not {record.topic}")
    if record.key != event.account_id.encode():
        raise InvalidEvent(f"message key {record.key!r} is not the event's account_id {event.account_id!r}")
    event.read_at(RecordPosition(record.topic, record.partition, record.offset))
    return event


def type_header(record: Any) -> bytes | None:
    """A record's `type` header, None without one (or with a null one). Any record with aiokafka's `headers`
    (pairs of name and bytes): faust's messages carry them the same way."""
    for key, value in record.headers or ():
        if key == "type":
            return bytes(value) if value is not None else None
    return None


def has_type(record: Any, wanted: frozenset[bytes]) -> bool:
    """Whether a record may be one of these types, so it must be read. The `type` header is a routing hint and
    the value decides: a record is passed over unread only when its header names another type and its value
    says that type too (a header that disagrees with its value, a producer's mistake, has the record read).
    True without the header: it is read to know."""
    found = type_header(record)
    if found is None or found in wanted:
        return True
    value = record.value or b""
    return b'"type":"' + found + b'"' not in value and b'"type": "' + found + b'"' not in value


# The producer each topic's own events name: the service that owns it.
_OWNERS = {spec.name: spec.owner for spec in EVENT_TOPICS}


def _canonical(value: Any) -> str:
    """A value `json` cannot write, as a digest reads it: a time as its instant in UTC (the same time written with
    another offset is the same), anything else (ids, addresses, urls) as its text."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if value.tzinfo is not None else value.isoformat()
    return str(value)


# One encoder for every digest: `json.dumps` with options builds one a call (half the digest's time).
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), check_circular=False, default=_canonical)
# What a producer stamps anew when it sends an event again: not part of what the event says.
_NOT_CONTENT = frozenset({"event_id", "occurred_at", "correlation_id", "causation_id"})
# The header `herald dlq replay` puts on a record it publishes again (cli.py).
REPLAYED_FROM = "herald.replayed_from"


def content_digest(event: Event) -> str | None:
    """What tells a copy of an event from another event under the same id, for an event of another producer than
    the topic's owner (a CRM's); None for the owner's own. Another producer's id names one event: a copy of it
    (a redelivery, an outbox replayed, a retry that serialised it again) says the same, but for `occurred_at` and
    the correlation and causation ids, which a producer remaking the event may stamp anew. So the digest is of the
    parsed event (lax spellings read, maps in any key order, times as their UTC instants, fields at their default
    left out, so an optional field added later changes nothing) less those, prefixed with its schema version (a
    digest made under another is not compared). The
    owners' events are left out: their fixed ids name a decision (billing's TrialEnded, delivery's bounce per
    message and class), and a decision taken again after a crash may carry fresher figures yet is the same one."""
    if _OWNERS.get(event.topic) == event.producer:
        return None
    content = event.model_dump(exclude=set(_NOT_CONTENT), exclude_defaults=True)
    content["type"] = event.type  # a default, so left out above
    text = _CANONICAL_JSON.encode(content)
    return f"{event.schema_version}:{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def _replayed(record: Any) -> bool:
    return any(key == REPLAYED_FROM for key, _ in record.headers or ())


def reused_id(first: str | None, digest: str | None) -> bool:
    """Whether an event of `digest` (`content_digest`) is another event than the one handled under its id, whose
    digest was `first`. Not when `first` is None (an owner's event, or remembered before digests were kept: a plain
    copy, as then) nor when it was made under another schema version."""
    if first is None or first == digest:
        return False
    return digest is None or first.partition(":")[0] == digest.partition(":")[0]


def type_name(cls: type[Event]) -> str:
    """The `type` an event class writes (its field's fixed default), as in the record's `type` header."""
    return str(cls.model_fields["type"].default)


class EventPublisher:
    """Publishes events to the topic that owns their type, keyed by account_id."""

    def __init__(self, producer: AIOKafkaProducer, topics: TopicNames) -> None:
        self._producer = producer
        self._topics = topics

    async def publish(self, event: Event) -> RecordMetadata:
        return (await self.publish_many([event]))[0]

    async def publish_many(self, events: Sequence[Event]) -> list[RecordMetadata]:
        """Send all, then wait for all: one round of acknowledgements instead of one per event."""
        pending = []
        for event in events:
            topic = self._topics(event.topic)
            pending.append(await self._producer.send(topic, value=serialize_event(event),
                                                     key=event.account_id.encode(), headers=event_headers(event)))
        results: list[RecordMetadata] = list(await asyncio.gather(*pending))
        for event in events:
            metrics.EVENTS_PRODUCED.labels(event.topic, event.type).inc()
        return results

    async def dead_letter(self, base_topic: str, value: bytes, reason: str, *, origin: str, consumer: str,
                          key: bytes, headers: Sequence[tuple[str, bytes]] = (),
                          category: DeadLetterCategory = "invalid") -> None:
        """A dead-letter entry that comes from no consumed record (a mail received, an outcome that could not
        become its event): `value` as it is, with why (bounded, and written whatever its text holds, so the
        entry always fits and always encodes) and where from (`origin`, not a topic, and `consumer`), on
        `base_topic`'s dead-letter topic; `herald dlq replay` sends it, corrected, to `base_topic`. Counted in
        herald_events_dead_lettered_total as (`consumer`, `base_topic`, `category`): HeraldDeadLettersGrowing
        watches only that (`expect_dead_letters` creates the series at 0 beforehand)."""
        entry = [(DLQ_REASON, reason[:MAX_REASON_CHARS].encode("utf-8", "backslashreplace")),
                 (DLQ_ORIGIN, origin.encode()), (DLQ_CONSUMER, consumer.encode()),
                 (DLQ_FAILED_AT, datetime.now(UTC).isoformat().encode()), *headers]
        await self._producer.send_and_wait(self._topics(base_topic) + DLQ_SUFFIX, value=value, key=key, headers=entry)
        metrics.EVENTS_DEAD_LETTERED.labels(consumer, base_topic, category).inc()


def expect_dead_letters(consumer: str, topics: Iterable[str],
                        categories: Iterable[DeadLetterCategory] = DEAD_LETTER_CATEGORIES) -> None:
    """Export herald_events_dead_lettered_total at 0 for what `consumer` may dead-letter: a series born at its
    first dead letter starts at 1, and increase() over it says 0, so the first one would never alert."""
    wanted = tuple(categories)
    for topic in topics:
        for category in wanted:
            metrics.EVENTS_DEAD_LETTERED.labels(consumer, topic, category)


class Reject(Exception):
    """Raised by a handler for an event it can never handle; the event goes to the dead-letter topic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EventHandler(Protocol):
    async def handle(self, event: Event) -> None:
        """Decide and stage the effects of one event. Raise Reject for a permanent refusal."""

    async def flush(self) -> None:
        """Persist what handle() staged; called before the batch's offsets are committed."""


class ForgetfulHandler(EventHandler, Protocol):
    """A handler that can drop what it staged, so a batch the store refuses can be handled again event by
    event (see EventConsumer)."""

    async def forget(self) -> None:
        """Drop what handle() staged and what a failed flush kept for its next try: the handler is as after
        its last flush that passed, and what it folds next starts from what the store holds (so events
        handled again are not applied twice). What the failed flush wrote ahead of the documents the store
        refused (counts: `readmodel.Counters.take_back`) is taken back, so events handled again, or replayed
        from the dead-letter topic, are counted once. An infrastructure error is raised, and it is asked
        again."""


class Deduplicator(Protocol):
    async def seen(self, event_ids: Sequence[str]) -> set[str]: ...

    async def remember(self, event_ids: Sequence[str]) -> None: ...


@runtime_checkable
class DigestDeduplicator(Deduplicator, Protocol):
    """A deduplicator that keeps each id's `content_digest`, so that the consumer tells a copy from another event
    under a handled id (`mongo.MongoDeduplicator`)."""

    async def seen_digests(self, event_ids: Sequence[str]) -> dict[str, str | None]:
        """The ids of these remembered, each with its digest (None: remembered without one)."""

    async def remember_digests(self, digests: Mapping[str, str | None]) -> None: ...


class CheckpointStore(Protocol):
    def flushed(self, next_offsets: dict[tuple[str, int], int]) -> None:
        """The batch up to these offsets is in the read model (not yet stored as a checkpoint)."""

    async def save(self, next_offsets: dict[tuple[str, int], int]) -> None: ...


class DeadLetters:
    """Writes dead-letter entries: the raw message with why and where it failed."""

    def __init__(self, producer: AIOKafkaProducer, consumer_name: str) -> None:
        self._producer = producer
        self._consumer_name = consumer_name

    async def send(self, record: ConsumerRecord[bytes, bytes], reason: str, category: DeadLetterCategory) -> None:
        """`reason` is free text for people; `category` is the bounded metric label."""
        headers = [(k, v) for k, v in (record.headers or ()) if not k.startswith("herald.dlq.")]
        headers += [
            (DLQ_REASON, reason[:MAX_REASON_CHARS].encode()),
            (DLQ_SOURCE_TOPIC, record.topic.encode()),
            (DLQ_SOURCE_PARTITION, str(record.partition).encode()),
            (DLQ_SOURCE_OFFSET, str(record.offset).encode()),
            (DLQ_CONSUMER, self._consumer_name.encode()),
            (DLQ_FAILED_AT, datetime.now(UTC).isoformat().encode()),
        ]
        target = record.topic if record.topic.endswith(DLQ_SUFFIX) else record.topic + DLQ_SUFFIX
        await self._producer.send_and_wait(target, value=record.value, key=record.key, headers=headers)
        metrics.EVENTS_DEAD_LETTERED.labels(self._consumer_name, record.topic, category).inc()
        log.warning("dead-lettered", extra={"topic": record.topic, "partition": record.partition,
                                            "offset": record.offset, "reason": reason})


class EventConsumer:
    """The consumer loop of a service: poll a batch, validate, deduplicate, handle, flush, commit.

    `only` names, per base topic, the only event types wanted from it: records of other types (by their
    `type` header) are passed over unparsed, and their offsets committed with the batch; a record without
    the header is read as usual. Topics not named give every event.

    `slice_records` (default: the whole batch) splits a batch for parsing, deduplicating and handling: the
    events of one slice are released before the next is parsed (once handled, a handler should keep only
    what it needs of them). Parsing into memory still holding thousands of parsed events costs a large batch
    up to half again per event (cache misses); the flush, the ids remembered, the checkpoint and the commit
    stay once per batch. Each slice costs the deduplicator a look-up: use it with one that answers from
    memory (`WindowDeduplicator`).

    `self_deduplicated` names event types the handler recognises itself when they come again, however far
    apart (a read model that keeps the ids of the events applied to each document, in that document): the
    deduplicator neither looks their ids up nor remembers them, which spares a stored id per event. Copies
    within one batch are still skipped here.

    With a deduplicator that keeps digests (`DigestDeduplicator`), an event under an id handled before (by the
    store, in this batch or the one before) that is not a copy of it (`content_digest`, `reused_id`: another
    producer than the topic's owner reused an id for another event) is dead-lettered as `invalid`, with the reason
    `event_id ... reused with a different body`, rather than passed over as a copy: the first is handled, the other
    is bad input. Not for the `self_deduplicated` types, which the deduplicator never sees.

    `lead` names base topics read to their end before the others, after every assignment (the other topics'
    partitions are paused until then): a fold whose events of one topic need what another says (billing
    counts a send under the plan in force, so it needs the account's history first) sees it in that order when
    it starts from offset 0, not in whatever order the fetches interleave. Caught up, it costs nothing.

    `caught_up` is set once every partition assigned was read to the end offset it had when assigned (and the
    handler flushed once more then): a handler that decides from what it folded (billing's plan guard) waits
    for it, so that a fold from offset 0 decides nothing from the half-folded state on the way.

    A flush is retried while its error is the infrastructure's (`is_transient`: MongoDB or the broker away).
    One that fails `handler_attempts` times with any other error (the store refuses something the batch made:
    an integer beyond 64 bits, a key it cannot hold) would hold the partitions back for good; with a handler
    that can `forget` what it staged (`ForgetfulHandler`: it takes back too what the refused flush counted
    ahead of its documents), the batch's events are handled again one at a time, each flushed alone, and those
    whose flush fails that way are dead-lettered with the error (forgotten the same way, so a replay of the
    dead letter counts them once); the rest are stored, counted once each, and the consumer goes on. A handler
    that cannot forget is retried as for a transient error (handing it the events again would apply them twice).
    """

    def __init__(
        self,
        settings: HeraldSettings,
        *,
        name: str,
        topics: Sequence[str],
        handler: EventHandler,
        producer: AIOKafkaProducer,
        deduplicator: Deduplicator | None = None,
        checkpoints: CheckpointStore | None = None,
        max_records: int = 500,
        handler_attempts: int = 3,
        retry_delay: float = 0.2,
        only: Mapping[str, Collection[type[Event]]] | None = None,
        slice_records: int | None = None,
        self_deduplicated: Collection[type[Event]] = (),
        lead: Collection[str] = (),
        lag_interval: float = LAG_REPORT_SECONDS,
    ) -> None:
        self.name = name
        self._names = settings.topics
        self._topics = [self._names(t) for t in topics]
        if not set(lead) <= set(topics):
            raise ValueError(f"lead: {sorted(set(lead) - set(topics))} not consumed here")
        self._lead = frozenset(self._names(t) for t in lead)
        self._catching_up: dict[TopicPartition, int] = {}  # assigned, not yet read to their end when assigned
        self._paused: set[TopicPartition] = set()  # until the lead topics' partitions are read to their end
        # The partitions this consumer owns, from an assignment to the revocation that ends it. Not the client's
        # assignment(): aiokafka keeps answering the old one between a revocation and the next assignment, and
        # lag reported for a partition in that window would stay behind, its new owner's counted twice.
        self._owned: set[TopicPartition] = set()
        self.caught_up = asyncio.Event()
        self._only: dict[str, frozenset[bytes]] = {}
        for topic, classes in (only or {}).items():
            if topic not in topics or any(cls.topic != topic for cls in classes):
                raise ValueError(f"only: {topic} is not consumed here, or not every type named is on it")
            self._only[self._names(topic)] = frozenset(type_name(cls).encode() for cls in classes)
        self._metrics: dict[tuple[str, str], tuple[Histogram, Counter]] = {}
        self._handler = handler
        self._forget: Callable[[], Awaitable[None]] | None = getattr(handler, "forget", None)
        self._dedupe = deduplicator
        self._digests = deduplicator if isinstance(deduplicator, DigestDeduplicator) else None
        self._checkpoints = checkpoints
        self._dead_letters = DeadLetters(producer, name)
        expect_dead_letters(name, self._topics)
        self._lag_interval = lag_interval
        self._max_records = max_records
        self._slice_records = slice_records or max_records
        self._self_deduplicated = tuple(self_deduplicated)
        self._attempts = handler_attempts
        self._retry_delay = retry_delay
        self._stopping = asyncio.Event()
        self._finishing: asyncio.Task[None] | None = None  # the last batch's `_finish`
        self._remembering: dict[str, str | None] = {}  # the ids it remembers, with their digests
        # The first offset of each partition of the batch in hand, until it is flushed: the client's position is
        # past the batch as soon as it is polled, and a consumer stuck in it would report it as done.
        self._in_hand: dict[TopicPartition, int] = {}
        self._consumer = AIOKafkaConsumer(
            **settings.kafka_client_options(),
            group_id=name,
            client_id=name,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            session_timeout_ms=int(settings.kafka_session_timeout * 1000),
            heartbeat_interval_ms=int(settings.kafka_session_timeout * 1000 / 3),  # Kafka's advice: a third at most
        )
        self.started = False

    def request_stop(self) -> None:
        """Finish the batch in hand, commit it, and leave the group (what SIGTERM does)."""
        self._stopping.set()

    async def run(self) -> None:
        await self._consumer.start()
        hold_idle_fetches(self._consumer, busy_ms=FETCH_MAX_WAIT_MS, idle_ms=IDLE_FETCH_MAX_WAIT_MS)
        self._consumer.subscribe(self._topics, listener=_Assignments(self))
        self.started = True
        lag = asyncio.create_task(self._watch_lag(), name=f"{self.name}: lag")
        try:
            while not self._stopping.is_set():
                if self._catching_up:
                    await self._check_caught_up()
                batches = await self._consumer.getmany(timeout_ms=300, max_records=self._max_records)
                if batches:
                    await self._process(batches)
                elif self._finishing is not None and self._finishing.done():
                    await self._finished()
                await self._report_lag()
            await self._finished()
        finally:
            lag.cancel()
            await asyncio.gather(lag, return_exceptions=True)
            if self._finishing is not None:  # failed elsewhere: the batch is not committed, and is read again
                self._finishing.cancel()
                await asyncio.gather(self._finishing, return_exceptions=True)
                self._finishing = None
            self.started = False
            await self._consumer.stop()

    async def _assigned(self, assigned: Collection[TopicPartition]) -> None:
        """A new assignment: how far each partition goes now; the lead topics' partitions first."""
        self.caught_up.clear()
        self._owned = set(assigned)
        consumer, partitions = self._consumer, list(assigned)
        ends = await self._with_retry("read end offsets", lambda: consumer.end_offsets(partitions)) if assigned else {}
        self._catching_up = {tp: end for tp, end in ends.items() if end > 0}
        self._paused = set()
        if any(tp.topic in self._lead for tp in self._catching_up):
            self._paused = {tp for tp in assigned if tp.topic not in self._lead}
            self._consumer.pause(*self._paused)
        if not self._catching_up:
            self.caught_up.set()

    async def _check_caught_up(self) -> None:
        assignment = self._consumer.assignment()
        for tp, end in list(self._catching_up.items()):
            try:
                done = tp not in assignment or await self._consumer.position(tp) >= end
            except IllegalStateError:  # revoked meanwhile: the next assignment says what is left
                done = True
            if done:
                self._catching_up.pop(tp, None)
        if self._paused and not any(tp.topic in self._lead for tp in self._catching_up):
            self._consumer.resume(*(self._paused & assignment))
            self._paused = set()
        if not self._catching_up:
            self.caught_up.set()
            await self._with_retry("flush", self._handler.flush)  # what waited for it is decided now

    async def _process(self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        """Handle and flush a batch; its ids are remembered, its checkpoint saved and its offsets committed
        in the background (`_finish`) while the next batch is read and handled, in order: a batch's finish
        starts once the one before is done."""
        offsets = {tp: records[-1].offset + 1 for tp, records in batches.items()}
        self._in_hand = {tp: records[0].offset for tp, records in batches.items()}
        handled: dict[str, str | None] = {}  # the ids to remember, with their digests
        passed: list[ConsumerRecord[bytes, bytes]] = []  # the records whose events the handler took, in order
        seen: set[str] = set()  # the batch's handled ids, for copies within it
        for records in self._slices(batches):
            await self._handle_slice(records, seen, handled, passed)
            await asyncio.sleep(0)  # a turn for the rest of the service (its API, a handler's reads ahead)
        refused = await self._flush_or_refusal()
        if refused is not None:
            await self._set_aside(passed, handled, refused)
        if self._checkpoints:  # this process's requests waiting on the batch read it from now on
            self._checkpoints.flushed({(tp.topic, tp.partition): o for tp, o in offsets.items()})
        self._in_hand = {}
        await self._finished()
        self._remembering = handled
        self._finishing = asyncio.create_task(self._finish(offsets, handled), name=f"{self.name}: finish batch")

    async def _finished(self) -> None:
        """Wait for the batch before's finish (raising what stopped it)."""
        if self._finishing is not None:
            await self._finishing
            self._finishing = None
            self._remembering = {}

    async def _finish(self, offsets: dict[TopicPartition, int], handled: dict[str, str | None]) -> None:
        # Once flushed, remembering the ids and saving the checkpoint are independent: a crash between or
        # during them replays the batch, which the projection's idempotence and the ids remembered absorb.
        after_flush = []
        dedupe, digests = self._dedupe, self._digests
        if digests and handled:
            after_flush.append(self._with_retry("remember handled events",
                                                lambda: digests.remember_digests(handled)))
        elif dedupe and handled:
            after_flush.append(self._with_retry("remember handled events", lambda: dedupe.remember(list(handled))))
        if self._checkpoints:
            store, positions = self._checkpoints, {(tp.topic, tp.partition): o for tp, o in offsets.items()}
            after_flush.append(self._with_retry("save checkpoints", lambda: store.save(positions)))
        await asyncio.gather(*after_flush)
        try:
            await self._with_retry("commit offsets", lambda: self._consumer.commit(offsets),
                                   give_up=(CommitFailedError,))
        except CommitFailedError as exc:
            # The partitions moved to another member during a rebalance; it re-reads them and the
            # deduplicator makes that harmless.
            log.warning("commit failed after rebalance", extra={"error": str(exc)})

    def _slices(self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
                ) -> Iterator[list[ConsumerRecord[bytes, bytes]]]:
        """The batch's wanted records (see `only`), `slice_records` at a time."""
        chunk: list[ConsumerRecord[bytes, bytes]] = []
        for tp, records in batches.items():
            wanted = self._only.get(tp.topic)
            for record in records:
                if wanted is None or has_type(record, wanted):
                    chunk.append(record)
                    if len(chunk) == self._slice_records:
                        yield chunk
                        chunk = []
        if chunk:
            yield chunk

    async def _handle_slice(self, records: list[ConsumerRecord[bytes, bytes]], seen: set[str],
                            handled: dict[str, str | None], passed: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Parse (the invalid dead-lettered), deduplicate and handle some records of the batch."""
        staged: list[tuple[ConsumerRecord[bytes, bytes], Event]] = []
        for record in records:
            try:
                event = validate_record(record, self._names)
            except InvalidEvent as exc:
                await self._dead_letter(record, exc.reason, "invalid")
                continue
            wanted = self._only.get(record.topic)
            if wanted is None or event.type.encode() in wanted:  # a type header that lied can bring others
                staged.append((record, event))
        ids = [str(event.event_id) for _, event in staged]
        itself = self._self_deduplicated
        dedupe, digests = self._dedupe, self._digests
        stored: dict[str, str | None] = {}  # the store's digests of this slice's ids it remembers
        if dedupe:
            asked = [i for i, (_, event) in zip(ids, staged, strict=True) if not isinstance(event, itself)]
            if digests:
                stored = await self._with_retry("look up handled events", lambda: digests.seen_digests(asked))
                seen.update(stored)
            else:
                seen.update(await self._with_retry("look up handled events", lambda: dedupe.seen(asked)))
        remembering = self._remembering  # the batch before's ids, handed to the deduplicator in the background
        for (record, event), event_id in zip(staged, ids, strict=True):
            if event_id in seen or event_id in remembering:
                # A record `herald dlq replay` published again is for the consumers that refused it: to those that
                # handled the original it is a copy, whatever the fix changed in it.
                if digests and not isinstance(event, itself) and not _replayed(record):
                    first = (handled[event_id] if event_id in handled else remembering[event_id]
                             if event_id in remembering else stored.get(event_id))
                    if first is not None and reused_id(first, content_digest(event)):
                        await self._dead_letter(record, f"event_id {event_id} reused with a different body (an "
                                                        "event under this id was handled before)", "invalid")
                        continue
                metrics.EVENTS_DUPLICATE.labels(self.name, record.topic).inc()
                continue
            seen.add(event_id)
            if await self._handle(record, event):
                passed.append(record)
                if not isinstance(event, itself):
                    handled[event_id] = content_digest(event) if digests else None

    async def _handle(self, record: ConsumerRecord[bytes, bytes], event: Event, *, again: bool = False) -> bool:
        """True when handled. A refusal or a handler that keeps failing dead-letters the event; an
        infrastructure error (`is_transient`) is waited out without counting against the event. `again`: the
        event was handled (and counted) before, in a batch set aside (`_set_aside`)."""
        failures, wait = 0, self._retry_delay
        while True:
            started = time.perf_counter()
            try:
                with correlation.flow(event.correlation_id or event.event_id):  # what it makes and logs is its flow
                    await self._handler.handle(event)
            except Reject as exc:
                await self._dead_letter(record, f"rejected: {exc.reason}", "rejected")
                return False
            except Exception as exc:
                if is_transient(exc):
                    if self._stopping.is_set():
                        raise
                    log.warning("handler hit an infrastructure error; waiting %.1fs", wait, exc_info=True)
                    await asyncio.sleep(wait)
                    wait = min(wait * 2, 10.0)
                    continue
                failures += 1
                if failures >= self._attempts:
                    await self._dead_letter(
                        record, f"handler failed after {failures} attempts: {type(exc).__name__}: {exc}",
                        "handler_failed")
                    return False
                log.warning("handler failed, retrying", exc_info=True, extra={"event_id": str(event.event_id)})
                await asyncio.sleep(self._retry_delay * 2 ** (failures - 1))
                continue
            if not again:
                seconds, consumed = self._metrics_of(record.topic, event.type)
                seconds.observe(time.perf_counter() - started)
                consumed.inc()
            return True

    async def _flush_or_refusal(self) -> Exception | None:
        """Flush the handler; None once it passed. An infrastructure error is waited out; any other is
        returned once the flush failed `handler_attempts` times with it, if the handler can forget what it
        staged (else it is waited out too: nothing else gets the partition past it)."""
        failures, delay = 0, self._retry_delay
        while True:
            try:
                await self._handler.flush()
                return None
            except Exception as exc:
                if self._stopping.is_set():
                    raise
                if isinstance(exc, EventsRefused) and self._forget is not None:
                    return exc  # a rule's refusal, the same at every attempt: set aside at once, no traceback
                if not is_transient(exc) and self._forget is not None:
                    failures += 1
                    if failures >= self._attempts:
                        return exc
                log.exception("flush failed; retrying in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _set_aside(self, passed: list[ConsumerRecord[bytes, bytes]], handled: dict[str, str | None],
                         refusal: Exception) -> None:
        """The store keeps refusing the batch's flush (`refusal`): the handler forgets it and takes its events
        again one at a time, each flushed alone; an event whose flush is refused is forgotten and dead-lettered
        with why, and not remembered as handled (so its replay, once fixed, is not skipped)."""
        forget = self._forget
        assert forget is not None
        log.warning("the store refuses a batch; its events are handled again one at a time",
                    extra={"events": len(passed), "error": f"{type(refusal).__name__}: {refusal}"})
        await self._with_retry("forget the batch", forget)
        refused: set[str] = set()
        for record in passed:
            event = validate_record(record, self._names)  # the bytes it was read from when it passed
            if await self._handle(record, event, again=True):
                error = await self._flush_or_refusal()
                if error is None:
                    continue
                await self._with_retry("forget the event", forget)
                await self._dead_letter(
                    record, f"not stored after {self._attempts} attempts: {type(error).__name__}: {error}",
                    "handler_failed")
            refused.add(str(event.event_id))
        for event_id in refused:
            handled.pop(event_id, None)

    def _metrics_of(self, topic: str, event_type: str) -> tuple[Histogram, Counter]:
        """The handler-seconds and consumed children of (topic, type), looked up once (labels() per event
        costs a lock and a dictionary lookup each)."""
        children = self._metrics.get((topic, event_type))
        if children is None:
            children = self._metrics[(topic, event_type)] = (
                metrics.HANDLER_SECONDS.labels(self.name, topic, event_type),
                metrics.EVENTS_CONSUMED.labels(self.name, topic, event_type))
        return children

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], reason: str,
                           category: DeadLetterCategory) -> None:
        await self._with_retry("dead-letter", lambda: self._dead_letters.send(record, reason, category))

    async def _with_retry(self, what: str, action: Any, give_up: tuple[type[BaseException], ...] = ()) -> Any:
        """Infrastructure trouble (MongoDB or the broker away) is waited out, never turned into lost events."""
        delay = self._retry_delay
        while True:
            try:
                return await action()
            except give_up:
                raise
            except Exception:
                if self._stopping.is_set():
                    raise
                log.exception("%s failed; retrying in %.1fs", what, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _report_lag(self) -> None:
        """After each poll: the partitions' ends as the last fetch saw them."""
        for tp in list(self._owned):
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                await self._set_lag(tp, highwater)

    async def _watch_lag(self) -> None:
        """Every `lag_interval` seconds, the lag from the broker's end offsets, in its own task: a consumer
        stuck in a batch (a handler waiting out MongoDB) polls nothing, so neither its report after each poll
        nor the last fetch's high watermark would move while events keep arriving."""
        while True:
            await asyncio.sleep(self._lag_interval)
            try:
                await self._report_end_offsets()
            except (KafkaError, OSError, TimeoutError) as exc:  # a rebalance, the broker away: the next round
                log.info("lag not reported", extra={"consumer": self.name, "error": repr(exc)})

    async def _report_end_offsets(self) -> None:
        assigned = list(self._owned)
        if not assigned:
            return
        ends = await self._consumer.end_offsets(assigned)
        for tp, end in ends.items():
            await self._set_lag(tp, end)

    async def _set_lag(self, tp: TopicPartition, end: int) -> None:
        """The partition's lag and the next offset the consumer will process (`herald_consumer_position`): the
        first of the batch in hand while it is handled, so a batch the consumer is stuck in counts as behind."""
        try:
            position = await self._consumer.position(tp)
        except IllegalStateError:  # revoked meanwhile
            return
        position = self._in_hand.get(tp, position)  # read after the await: a batch may have been polled meanwhile
        if tp in self._owned:  # still: a revoked partition is its new owner's to report
            labels = (self.name, tp.topic, str(tp.partition))
            metrics.CONSUMER_LAG.labels(*labels).set(max(0, end - position))
            metrics.CONSUMER_POSITION.labels(*labels).set(position)

    def _revoked(self, revoked: Collection[TopicPartition]) -> None:
        """Partitions taken away stop being reported here: their new owner reports them; a value left behind
        would be this consumer's last word on them, forever."""
        self._owned -= set(revoked)
        for tp in revoked:
            metrics.CONSUMER_LAG.remove(self.name, tp.topic, str(tp.partition))
            metrics.CONSUMER_POSITION.remove(self.name, tp.topic, str(tp.partition))


class _Assignments(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: EventConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        self._consumer._revoked(revoked)

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        await self._consumer._assigned(assigned)


async def read_from_start(
    settings: HeraldSettings, topics: Sequence[str], *, follow: bool = False, batch_size: int = 1000,
    partitions: Sequence[int] | None = None, lead: Collection[str] = (),
) -> Any:
    """Yield batches of records of the given real topic names from offset 0, without a consumer group.

    Without `follow` it stops at the end offsets seen when it started (what a rebuild needs). `partitions`
    limits it to those partition numbers of every topic. `lead` (real topic names): read to their end offsets
    first, then the rest (see EventConsumer's `lead`).
    """
    # The fetch for idle partitions is held FETCH_MAX_WAIT_MS, not aiokafka's 500 ms: while the caller handles a
    # batch, a busy partition's next records wait behind that fetch (see EventConsumer).
    consumer = AIOKafkaConsumer(**settings.kafka_client_options(), enable_auto_commit=False,
                                group_id=None, isolation_level="read_committed", client_id="herald-reader",
                                fetch_max_wait_ms=FETCH_MAX_WAIT_MS)
    await consumer.start()
    try:
        ids = ({topic: list(partitions) for topic in topics} if partitions is not None
               else await partition_ids(settings, topics))
        assigned = [TopicPartition(topic, p) for topic in topics for p in ids[topic]]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        remaining = {tp for tp in assigned if ends[tp] > 0}
        while follow or remaining:
            leading = [tp for tp in remaining if tp.topic in lead]
            batches = await consumer.getmany(*(leading or assigned), timeout_ms=300, max_records=batch_size)
            records = [r for tp in sorted(batches, key=lambda t: (t.topic, t.partition)) for r in batches[tp]]
            if records:
                yield records
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()


async def partition_ids(settings: HeraldSettings, topics: Sequence[str]) -> dict[str, list[int]]:
    """Partition ids of each real topic name; raises KafkaError for a topic that does not exist."""
    admin = AIOKafkaAdminClient(**settings.kafka_client_options(), client_id="herald-admin")
    await admin.start()
    try:
        described = {t["topic"]: t for t in await admin.describe_topics(list(topics))}
    finally:
        await admin.close()
    result = {}
    for topic in topics:
        info = described.get(topic)
        if not info or info.get("error_code") or not info.get("partitions"):
            raise KafkaError(f"topic {topic} does not exist (run `herald topics create`)")
        result[topic] = sorted(p["partition"] for p in info["partitions"])
    return result


async def end_offsets(settings: HeraldSettings, topic: str) -> dict[int, int]:
    """The next offset to be written in each partition of a real topic name (what is there right now)."""
    ids = await partition_ids(settings, [topic])
    consumer = AIOKafkaConsumer(**settings.kafka_client_options(), enable_auto_commit=False,
                                group_id=None, isolation_level="read_committed", client_id="herald-reader")
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in ids[topic]])
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}
