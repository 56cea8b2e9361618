"""`herald`: the operator's command line — topics, publishing events, tailing, dead letters, schemas, status."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from . import masking
from .contract import Event, InvalidEvent, parse_event, serialize_event
from .contract import publish as contract_files
from .contract.billing import StaffAccessed, StaffAccessedPayload
from .kafka import (
    DLQ_ORIGIN,
    DLQ_REASON,
    DLQ_SOURCE_OFFSET,
    DLQ_SOURCE_PARTITION,
    DLQ_SOURCE_TOPIC,
    REPLAYED_FROM,
    EventPublisher,
    ensure_topics,
    event_headers,
    make_producer,
    partition_ids,
    read_from_start,
)
from .settings import HeraldSettings
from .topics import ALL_TOPICS, DLQ_SUFFIX, strimzi_manifests


class CliError(Exception):
    """Something the operator must fix; printed without a traceback, exit code 1."""


def _out(line: str) -> None:
    print(line, flush=True)


async def cmd_topics_create(settings: HeraldSettings, _: argparse.Namespace) -> None:
    for name, state in (await ensure_topics(settings)).items():
        _out(f"{state:8} {name}")


async def cmd_topics_list(settings: HeraldSettings, _: argparse.Namespace) -> None:
    for spec in ALL_TOPICS:
        retention = "forever" if spec.retention_ms < 0 else f"{spec.retention_ms // 86_400_000}d"
        _out(f"{settings.topics(spec.name):32} partitions={spec.partitions:<3} retention={retention:8} "
             f"owner={spec.owner}")


def cmd_topics_manifests(_: argparse.Namespace) -> int:
    sys.stdout.write(strimzi_manifests())
    return 0


STATUS_COLUMNS = ("service", "URL", "API docs", "metrics", "state")


def _service_state(url: str) -> str:
    """ready (/readyz answers 200), starting (it answers, not ready yet), or down (no answer)."""
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer:
            return "ready" if answer.status == 200 else "starting"
    except urllib.error.HTTPError:
        return "starting"
    except (urllib.error.URLError, OSError):
        return "down"


def status_table(rows: Sequence[tuple[str, str, str]]) -> list[str]:
    """The lines `herald status` prints: (service, base URL, state) each."""
    lines = [(name, url, f"{url}/docs", f"{url}/metrics", state) for name, url, state in rows]
    widths = [max(len(str(line[i])) for line in [STATUS_COLUMNS, *lines]) for i in range(len(STATUS_COLUMNS))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            for line in [STATUS_COLUMNS, *lines]]


def installed_services() -> list[str]:
    """The services installed here, in scripts/run's order: each package installs a console script
    `herald-<service>` (the one scripts/run starts), and run goes through their folders by name."""
    return sorted(script.name.removeprefix("herald-") for script in entry_points(group="console_scripts")
                  if script.name.startswith("herald-"))


def run_layout(services: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """NAME=PORT of each service where scripts/run serves it: ports one after another from HERALD_RUN_BASE_PORT
    (8081), in the order given. What `herald status` looks at when told nothing."""
    base = environ.get("HERALD_RUN_BASE_PORT") or "8081"
    if not base.isdigit():
        raise CliError(f"HERALD_RUN_BASE_PORT={base!r}: not a port number")
    return [f"{name}={int(base) + offset}" for offset, name in enumerate(services)]


def cmd_status(args: argparse.Namespace) -> int:
    services: list[tuple[str, str]] = []
    for item in args.services or run_layout(installed_services(), os.environ):
        name, _, port = item.partition("=")
        if not name or not port.isdigit():
            raise CliError(f"{item!r}: give each service as NAME=PORT")
        services.append((name, f"http://{args.host}:{port}"))
    deadline = time.monotonic() + args.wait
    while True:
        states = [(name, url, _service_state(url)) for name, url in services]
        if all(state == "ready" for *_, state in states) or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    for line in status_table(states):
        _out(line)
    return 0 if all(state == "ready" for *_, state in states) else 1


def _read_events_json(source: str) -> list[dict[str, Any]]:
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{source}: not JSON: {exc}") from None
    items = data if isinstance(data, list) else [data]
    if not all(isinstance(item, dict) for item in items):
        raise CliError(f"{source}: expected an event object or a list of them")
    return items


async def cmd_publish(settings: HeraldSettings, args: argparse.Namespace) -> None:
    events: list[Event] = []
    for index, item in enumerate(_read_events_json(args.file)):
        item.setdefault("producer", args.producer)
        try:
            events.append(parse_event(item))
        except InvalidEvent as exc:
            raise CliError(f"event #{index + 1} refused, nothing published: {exc.reason}") from None
    producer = make_producer(settings, CLI_PRODUCER)
    await producer.start()
    try:
        results = await EventPublisher(producer, settings.topics).publish_many(events)
    finally:
        await producer.stop()
    for event, meta in zip(events, results, strict=True):
        _out(f"published {event.type} {event.event_id} -> {meta.topic}[{meta.partition}]@{meta.offset}")


# What the CLI's own events name as their producer (`herald publish` too, when an event names none).
CLI_PRODUCER = "herald-cli"
# How long recording a staff access may take before the CLI gives up (and shows nothing of the account).
ACCESS_RECORD_SECONDS = 30.0


ACCOUNT_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")  # the envelope's AccountId: a record's key names its account


@dataclass(frozen=True)
class Shown:
    """One record as the CLI reads it: its event (None when the contract refuses its value, `refused` says why)
    and the account it belongs to (the event's; else the record's key, if it can name one)."""

    record: Any
    event: Event | None
    refused: str | None
    account: str | None

    @classmethod
    def of(cls, record: Any) -> Shown:
        try:
            event = parse_event(record.value or b"")
        except InvalidEvent as exc:
            key = bytes(record.key or b"").decode(errors="replace")
            return cls(record, None, exc.reason, key if ACCOUNT_KEY.match(key) else None)
        return cls(record, event, None, event.account_id)


class Viewer:
    """How `herald tail` and `herald dlq list` show what they read: personal data masked (`masking`), or, with
    --reveal --staff NAME, as it is, once the look is in the account's audit log: one billing StaffAccessed
    (what=event_log) per account per command, published before anything of that account is printed. A record
    that names no account is shown masked either way (there is no account to record the look in)."""

    def __init__(self, settings: HeraldSettings, staff: str | None) -> None:
        self.settings, self.staff = settings, staff
        self.recorded: set[str] = set()
        self._producer: AIOKafkaProducer | None = None

    def revealed(self, shown: Shown) -> bool:
        return shown.account is not None and shown.account in self.recorded

    async def record_access(self, batch: Sequence[Shown]) -> None:
        """With --reveal: the look at every account of `batch` not yet recorded, recorded (all or none printed
        unmasked: a refusal raises CliError before any line of the batch)."""
        if self.staff is None:
            return
        accounts = sorted({s.account for s in batch if s.account is not None} - self.recorded)
        if not accounts:
            return
        events = [StaffAccessed(account_id=account, producer=CLI_PRODUCER,
                                payload=StaffAccessedPayload(staff=self.staff, what="event_log"))
                  for account in accounts]
        try:
            if self._producer is None:
                self._producer = make_producer(self.settings, CLI_PRODUCER)
                await asyncio.wait_for(self._producer.start(), ACCESS_RECORD_SECONDS)
            await asyncio.wait_for(EventPublisher(self._producer, self.settings.topics).publish_many(events),
                                   ACCESS_RECORD_SECONDS)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise CliError(f"could not record the staff access (StaffAccessed, event_log) of account(s) "
                           f"{', '.join(accounts)}: {type(exc).__name__}: {exc}; nothing of them was printed "
                           f"unmasked") from None
        self.recorded.update(accounts)

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def print_lines(self, records: Sequence[Any], lines: Callable[[Shown, bool], list[str]]) -> None:
        batch = [Shown.of(record) for record in records]
        await self.record_access(batch)
        for shown in batch:
            for line in lines(shown, self.revealed(shown)):
                _out(line)


def _summary(shown: Shown, revealed: bool) -> str:
    value: bytes = shown.record.value or b""
    if shown.event is None:
        if revealed:
            return f"INVALID ({shown.refused}) {value[:120]!r}"
        return f"INVALID ({masking.mask_addresses_in(shown.refused or '')}) {masking.mask_raw(value)[:120]}"
    event = shown.event
    data = event.model_dump(mode="json")
    payload = json.dumps(data["payload"] if revealed else masking.mask_event(data)["payload"], separators=(",", ":"),
                         ensure_ascii=False)
    return (f"{event.occurred_at.isoformat(timespec='seconds')} {event.type} account={event.account_id} "
            f"id={event.event_id} {payload[:300]}")


def _tail_lines(shown: Shown, revealed: bool) -> list[str]:
    record = shown.record
    return [f"{record.topic}[{record.partition}]@{record.offset} {_summary(shown, revealed)}"]


async def cmd_tail(settings: HeraldSettings, args: argparse.Namespace) -> None:
    topic = settings.topics(args.topic)
    viewer = Viewer(settings, args.staff if args.reveal else None)
    try:
        if args.lines is not None:
            await _tail_latest(settings, viewer, topic, args.lines, follow=args.follow)
            return
        async for records in read_from_start(settings, [topic], follow=args.follow):
            await viewer.print_lines(records, _tail_lines)
    finally:
        await viewer.close()


async def _tail_latest(settings: HeraldSettings, viewer: Viewer, topic: str, count: int, *, follow: bool) -> None:
    """The latest `count` events of `topic`, as `tail -n` prints a file's last lines: the last ones written of all
    its partitions together (by the time their producer wrote them, oldest first); with `follow`, then every one
    written after. Reads only the end of each partition, however long the topic's history."""
    tps = [TopicPartition(topic, p) for p in (await partition_ids(settings, [topic]))[topic]]
    consumer = AIOKafkaConsumer(**settings.kafka_client_options(), group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed", client_id="herald-cli")
    await consumer.start()
    try:
        consumer.assign(tps)
        starts, ends = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
        latest: list[Any] = []
        for tp in tps:
            latest += await _last_records(consumer, tp, starts[tp], ends[tp], count)
        latest.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
        await viewer.print_lines(latest[len(latest) - count:], _tail_lines)
        if not follow:
            return
        for tp in tps:
            consumer.seek(tp, ends[tp])
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            await viewer.print_lines([r for tp in sorted(batches, key=lambda t: t.partition) for r in batches[tp]],
                                     _tail_lines)
    finally:
        await consumer.stop()


async def _last_records(consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int, count: int,
                        ) -> list[Any]:
    """The last `count` records of one partition before offset `end`. An offset is not a record: a transaction's
    commit marker takes one too, and aborted records are never read, so it reads back from the end in windows that
    double until it has `count` or reaches `start`."""
    found: list[Any] = []
    stop, window = end, max(count, 1)
    while len(found) < count and stop > start:
        begin = max(start, stop - window)
        found = await _read_between(consumer, tp, begin, stop) + found
        stop, window = begin, window * 2
    return found[len(found) - count:] if count else []


async def _read_between(consumer: AIOKafkaConsumer, tp: TopicPartition, begin: int, stop: int) -> list[Any]:
    """The records of offsets `begin` to `stop` (excluded) of one partition."""
    consumer.seek(tp, begin)
    records: list[Any] = []
    while await consumer.position(tp) < stop:
        batch = (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])
        records += [record for record in batch if record.offset < stop]
    return records


def _dlq_topic(settings: HeraldSettings, base: str) -> str:
    return settings.topics.dead_letter(base)


def _header(record: Any, name: str) -> str:
    for key, value in record.headers or ():
        if key == name:
            return bytes(value).decode(errors="replace")
    return ""


def _dlq_lines(shown: Shown, revealed: bool) -> list[str]:
    r = shown.record
    origin = (f"{_header(r, DLQ_SOURCE_TOPIC)}[{_header(r, DLQ_SOURCE_PARTITION)}]"
              f"@{_header(r, DLQ_SOURCE_OFFSET)}" if _header(r, DLQ_SOURCE_PARTITION)
              else _header(r, DLQ_ORIGIN) or _header(r, DLQ_SOURCE_TOPIC))
    reason, value = _header(r, DLQ_REASON), bytes(r.value or b"")
    if revealed:
        return [f"{r.partition}:{r.offset} from {origin} reason: {reason}", f"    value: {value[:200]!r}"]
    return [f"{r.partition}:{r.offset} from {origin} reason: {masking.mask_addresses_in(reason)}",
            f"    value: {masking.mask_raw(value)[:200]}"]


async def cmd_dlq_list(settings: HeraldSettings, args: argparse.Namespace) -> None:
    topic = _dlq_topic(settings, args.topic)
    count = 0
    viewer = Viewer(settings, args.staff if args.reveal else None)
    try:
        async for records in read_from_start(settings, [topic]):
            count += len(records)
            await viewer.print_lines(records, _dlq_lines)
    finally:
        await viewer.close()
    _out(f"{count} dead-letter entr{'y' if count == 1 else 'ies'} in {topic}")


async def _fetch_one(settings: HeraldSettings, topic: str, partition: int, offset: int) -> Any:
    consumer = AIOKafkaConsumer(**settings.kafka_client_options(), group_id=None,
                                enable_auto_commit=False, client_id="herald-cli")
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        if offset >= end:
            raise CliError(f"{topic}[{partition}] has no offset {offset} (end is {end})")
        consumer.seek(tp, offset)
        record = await asyncio.wait_for(consumer.getone(tp), timeout=10)
        if record.offset != offset:
            raise CliError(f"{topic}[{partition}]@{offset} no longer exists (retention)")
        return record
    finally:
        await consumer.stop()


def replay_target(settings: HeraldSettings, record: Any, dlq_topic: str) -> str:
    """The topic a dead-letter entry goes back to: the one its record was read from; an entry that came from no
    topic (`herald.dlq.origin`: a mail received, an outcome; or, written before that header was, a source
    naming no topic of the registry, e.g. `inbound-smtp`) goes to the topic whose dead-letter topic holds it."""
    source = _header(record, DLQ_SOURCE_TOPIC)
    if source in {settings.topics(spec.name) for spec in ALL_TOPICS}:
        return source
    return dlq_topic.removesuffix(DLQ_SUFFIX)


async def cmd_dlq_replay(settings: HeraldSettings, args: argparse.Namespace) -> None:
    topic = _dlq_topic(settings, args.topic)
    try:
        partition, offset = (int(x) for x in args.entry.split(":"))
    except ValueError:
        raise CliError(f"entry must be PARTITION:OFFSET as `herald dlq list` prints it, got {args.entry!r}") from None
    record = await _fetch_one(settings, topic, partition, offset)
    target = replay_target(settings, record, topic)
    value: bytes = record.value or b""
    if args.value_file:
        value = await asyncio.to_thread(Path(args.value_file).read_bytes)
    headers = [(k, v) for k, v in record.headers or () if not k.startswith("herald.dlq.")]
    headers.append((REPLAYED_FROM, f"{topic}:{partition}:{offset}".encode()))
    key = record.key
    try:
        event = parse_event(value)
        if settings.topics(event.topic) != target:
            raise InvalidEvent(f"{event.type} belongs on {settings.topics(event.topic)}, not {target}")
        key = event.account_id.encode()
        headers = [(k, v) for k, v in headers if k not in {h for h, _ in event_headers(event)}]
        headers += event_headers(event)
        value = serialize_event(event) if args.value_file else value
    except InvalidEvent as exc:
        if not args.force:
            raise CliError(f"still invalid, not replayed: {exc.reason} (fix it with --value-file, "
                           f"or --force to replay as is)") from None
    producer = make_producer(settings, "herald-cli")
    await producer.start()
    try:
        meta = await producer.send_and_wait(target, value=value, key=key, headers=headers)
    finally:
        await producer.stop()
    _out(f"replayed {topic} {partition}:{offset} -> {meta.topic}[{meta.partition}]@{meta.offset}")


def cmd_schemas(args: argparse.Namespace) -> int:
    directory = Path(args.dir) if args.dir else contract_files.SCHEMA_DIR
    if args.action == "generate":
        try:
            written = contract_files.write_files(directory)
        except contract_files.IncompatibleChange as exc:
            raise CliError(str(exc)) from None
        for rel in written:
            _out(f"wrote {directory / rel}")
        _out(f"{len(written)} file(s) changed in {directory}")
        return 0
    stale = contract_files.stale_files(directory)
    for rel in stale:
        _out(f"stale: {directory / rel}")
    gaps = contract_files.upcaster_gaps()
    for gap in gaps:
        _out(f"no upcaster: {gap}")
    if stale or gaps:
        _out("run `herald schemas generate` and commit the result" if stale else
             "register the upcasters (herald_shared.contract.upcasting)")
        return 1
    _out(f"schemas in {directory} are up to date")
    return 0


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of events, 0 or more")
    return int(text)


def _staff_name(text: str) -> str:
    if not text.strip() or len(text) > 200:
        raise argparse.ArgumentTypeError(f"{text!r}: give your name as staff (1 to 200 characters)")
    return text


def _add_reveal(command: argparse.ArgumentParser) -> None:
    command.add_argument("--reveal", action="store_true",
                         help="show personal data (masked by default); needs --staff, and each account's first "
                              "event shown is recorded in its audit log first (StaffAccessed, what=event_log)")
    command.add_argument("--staff", type=_staff_name, metavar="NAME",
                         help="who reveals (with --reveal): the name the audit log records")


def _check_reveal(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    reveal, staff = getattr(args, "reveal", False), getattr(args, "staff", None)
    if reveal and staff is None:
        parser.error("--reveal needs --staff NAME: who looks at the personal data is recorded in the audit log")
    if staff is not None and not reveal:
        parser.error("--staff goes with --reveal (without it, personal data is masked and nothing is recorded)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="herald", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    topics = sub.add_parser("topics", help="create or list the registry's topics")
    topics_sub = topics.add_subparsers(dest="action", required=True)
    topics_sub.add_parser("create", help="create every missing topic (idempotent)").set_defaults(run=cmd_topics_create)
    topics_sub.add_parser("list", help="the registry: names, partitions, retention").set_defaults(run=cmd_topics_list)
    topics_sub.add_parser("manifests", help="print Strimzi KafkaTopic YAML for the registry").set_defaults(
        sync=cmd_topics_manifests)

    pub = sub.add_parser("publish", help="validate an event (or a JSON list of them) and publish it")
    pub.add_argument("file", help="JSON file, or - for standard input")
    pub.add_argument("--producer", default=CLI_PRODUCER, help="producer name when the event has none")
    pub.set_defaults(run=cmd_publish)

    tail = sub.add_parser("tail", help="print a topic's events as readable lines: all from the beginning, or the "
                                       "latest N (-n)")
    tail.add_argument("topic", help="base topic name, e.g. herald.delivery or herald.delivery.dlq")
    tail.add_argument("--follow", "-f", action="store_true", help="keep waiting for new events")
    tail.add_argument("--lines", "-n", type=_count, default=None, metavar="N",
                      help="only the latest N events of the topic (all its partitions, by the time each was "
                           "written; 0: none), as tail -n does; with -f, then every new one")
    _add_reveal(tail)
    tail.set_defaults(run=cmd_tail)

    dlq = sub.add_parser("dlq", help="dead-letter entries: list them, replay one")
    dlq_sub = dlq.add_subparsers(dest="action", required=True)
    dlq_list = dlq_sub.add_parser("list", help="entries of a topic's dead-letter topic with their reasons")
    dlq_list.add_argument("topic", help="base topic, e.g. herald.delivery")
    _add_reveal(dlq_list)
    dlq_list.set_defaults(run=cmd_dlq_list)
    replay = dlq_sub.add_parser("replay", help="send one entry back to its topic, after a fix")
    replay.add_argument("topic", help="base topic, e.g. herald.delivery")
    replay.add_argument("entry", help="PARTITION:OFFSET of the entry, as `dlq list` prints it")
    replay.add_argument("--value-file", help="replay this corrected JSON instead of the stored bytes")
    replay.add_argument("--force", action="store_true", help="replay even if it still fails validation")
    replay.set_defaults(run=cmd_dlq_replay)

    status = sub.add_parser("status", help="what runs where: each service's URL, API docs, metrics and state")
    status.add_argument("services", nargs="*", metavar="NAME=PORT",
                        help="e.g. billing=8081 campaigns=8082; none: every installed service where scripts/run "
                             "serves it (ports from HERALD_RUN_BASE_PORT, 8081, in name order)")
    status.add_argument("--host", default="127.0.0.1")
    status.add_argument("--wait", type=float, default=0, help="seconds to wait for every service to be ready")
    status.set_defaults(sync=cmd_status)

    schemas = sub.add_parser("schemas", help="the published JSON Schemas and AsyncAPI document")
    schemas.add_argument("action", choices=["generate", "check"])
    schemas.add_argument("--dir", help="output folder (default: shared/schemas)")
    schemas.set_defaults(sync=cmd_schemas)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_reveal(parser, args)
    try:
        if hasattr(args, "sync"):
            return int(args.sync(args))
        asyncio.run(args.run(HeraldSettings(), args))
        return 0
    except (CliError, KeyError, OSError, KafkaError) as exc:
        print(f"herald: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
