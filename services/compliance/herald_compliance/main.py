"""Bootstrap of the compliance processor: settings, the faust app (agent and tables) inside the service's own
event loop, the staff HTTP API (rates, reinstatement), health and metrics, shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable
from typing import Any, NoReturn

import aiohttp
import faust
from pydantic import AnyHttpUrl, Field, field_validator

from herald_shared.commands import PUBLISH_TIMEOUT
from herald_shared.consuming import broker_readiness
from herald_shared.http import add_health_routes, api_app
from herald_shared.kafka import (
    TRANSIENT_ERRORS,
    BrokerProbe,
    DeadLetters,
    EventPublisher,
    ensure_topics,
    expect_dead_letters,
    make_producer,
)
from herald_shared.lifecycle import run_service
from herald_shared.settings import HeraldSettings
from herald_shared.staff import StaffTokens

from . import metrics
from .api import build_staff_api
from .continuity import Continuity
from .domain import AccountState, Policy, as_fraction, default_rules
from .faust_adapter import (
    FACT_STORE_URL,
    STORE_URL,
    TRANSPORT_SCHEME,
    Acknowledgements,
    ChangelogTable,
    FactTable,
    TableManager,
)
from .processor import (
    DEAD_LETTERED_AS,
    INPUT_TOPICS,
    PARTITIONS,
    SERVICE,
    Announcements,
    Processor,
    account_partition,
    is_purged,
)

log = logging.getLogger(__name__)
SWEEP_SECONDS = 600  # how often the facts past the dedupe horizon are forgotten
# A member learns that the group is rebalancing (another worker joined or left) from its next heartbeat's answer,
# and the joining worker waits until then: at session_timeout / 5 (2 s) a second worker started a moment after
# the first waited up to 2 s before its first event. Heartbeats are tiny requests to the group coordinator.
HEARTBEAT_SECONDS = 0.5


class ComplianceSettings(HeraldSettings):
    hard_bounce_threshold: float = Field(default=8.0, ge=8.0, le=15.0, alias="HERALD_HARD_BOUNCE_THRESHOLD_PERCENT",
                                         description="Suspend at a hard-bounce rate of this or more (the terms "
                                                     "allow 8-15).")
    abuse_threshold: float = Field(default=0.5, gt=0, lt=100, alias="HERALD_ABUSE_THRESHOLD_PERCENT",
                                   description="Suspend above this complaint rate.")
    unsubscribe_threshold: float = Field(default=1.0, gt=0, lt=100, alias="HERALD_UNSUBSCRIBE_THRESHOLD_PERCENT",
                                         description="Suspend above this unsubscribe rate.")
    hard_bounce_warnings: list[float] = Field(default=[5.0], alias="HERALD_HARD_BOUNCE_WARNINGS_PERCENT")
    abuse_warnings: list[float] = Field(default=[0.1, 0.3], alias="HERALD_ABUSE_WARNINGS_PERCENT",
                                        description="Gmail's and Yahoo's bulk-sender spam-rate levels.")
    unsubscribe_warnings: list[float] = Field(default=[0.5], alias="HERALD_UNSUBSCRIBE_WARNINGS_PERCENT")
    block_threshold: float = Field(default=5.0, gt=0, lt=100, alias="HERALD_BLOCK_THRESHOLD_PERCENT",
                                   description="Suspend at a block rate (receivers refusing our mail: policy, "
                                               "spam, blocklists) of this or more.")
    block_warnings: list[float] = Field(default=[2.0], alias="HERALD_BLOCK_WARNINGS_PERCENT")
    minimum_sent: int = Field(default=500, ge=1, alias="HERALD_RATE_MINIMUM_SENT",
                              description="The volume a rate is judged against at least: below it, counts are "
                                          "divided by it (40 hard bounces of 100 sent are 8% of 500).")
    windows_hours: list[int] = Field(default=[24, 168], alias="HERALD_RATE_WINDOWS_HOURS",
                                     description="Rolling windows of the account, in hours.")
    campaign_retention_days: int = Field(default=30, ge=1, alias="HERALD_CAMPAIGN_RETENTION_DAYS")
    one_off_deleted_within_hours: int = Field(default=168, ge=1, alias="HERALD_ONE_OFF_DELETED_WITHIN_HOURS")
    one_off_followed_within_hours: int = Field(default=720, ge=1, alias="HERALD_ONE_OFF_FOLLOWED_WITHIN_HOURS")
    one_off_overlap: float = Field(default=80.0, gt=0, le=100, alias="HERALD_ONE_OFF_OVERLAP_PERCENT")
    one_off_minimum_members: int = Field(default=20, ge=1, alias="HERALD_ONE_OFF_MINIMUM_MEMBERS")
    one_off_maximum_sends: int = Field(default=1, ge=1, le=9, alias="HERALD_ONE_OFF_MAXIMUM_SENDS",
                                       description="A list sent at most this many campaigns (each reaching "
                                                   "HERALD_ONE_OFF_SEND_REACH_PERCENT of it) can be one-off "
                                                   "sending (\"after one send\").")
    one_off_send_reach: float = Field(default=50.0, gt=0, le=100, alias="HERALD_ONE_OFF_SEND_REACH_PERCENT",
                                      description="A campaign counts as a send to its list when it reached this "
                                                  "share of the list's members at its first message.")
    one_off_check_members: int = Field(default=50, ge=1, le=256, alias="HERALD_ONE_OFF_CHECK_MEMBERS",
                                       description="A new list is compared with the lists sent to recently when it "
                                                   "reaches this many members, and at its first campaign.")
    batch_size: int = Field(default=2000, ge=1, alias="HERALD_COMPLIANCE_BATCH_SIZE")
    batch_seconds: float = Field(default=0.05, gt=0, alias="HERALD_COMPLIANCE_BATCH_SECONDS")
    session_timeout: float = Field(default=10.0, ge=6, alias="HERALD_COMPLIANCE_SESSION_TIMEOUT_SECONDS",
                                   description="How long a vanished worker keeps its partitions before another "
                                               "takes them over.")
    max_facts: int = Field(default=10_000_000, ge=100, alias="HERALD_COMPLIANCE_MAX_FACTS", description=(
        "Facts this worker remembers for deduplication (standby copies included; 60-70 bytes each) before it "
        "forgets the oldest hours early; a fact of that time it no longer remembers is then late, not counted."))
    facts_check_seconds: float = Field(default=5.0, gt=0, alias="HERALD_COMPLIANCE_FACTS_CHECK_SECONDS")
    standby_replicas: int = Field(default=0, ge=0, le=3, alias="HERALD_COMPLIANCE_STANDBY_REPLICAS", description=(
        "Standby copies of each partition's tables kept by other workers (faust's table_standby_replicas, "
        "whose default is 1): a standby takes over a dead worker's partitions without reading their changelogs, "
        "but every worker then also applies the other workers' changelog records and holds their facts. "
        "Measured on 2 cores: two workers did 1.63-1.66 x one without standby copies, 0.83-0.94 x with one."))
    lag_report_seconds: float = Field(default=5.0, gt=0, alias="HERALD_COMPLIANCE_LAG_REPORT_SECONDS",
                                      description="How often the lag of each partition (from the broker's end "
                                                  "offsets) and the running table recovery's time are reported, "
                                                  "whatever the stream is doing.")
    stall_seconds: float = Field(default=5.0, gt=0, alias="HERALD_COMPLIANCE_STALL_SECONDS",
                                 description="A partition with records past the last one processed and nothing "
                                             "delivered for this long is read straight from Kafka.")
    advertised_url: AnyHttpUrl | None = Field(
        default=None, alias="HERALD_COMPLIANCE_ADVERTISED_URL",
        description="How the other workers reach this one's HTTP API: a staff request for an account this worker "
                    "holds is forwarded here by the worker it reached. Default http://<HERALD_HTTP_HOST>:"
                    "<HERALD_HTTP_PORT>, the host name when it listens on every address.")
    staff_tokens: str = Field(default="", alias="HERALD_STAFF_TOKENS",
                              description="Staff who may read rates and reinstate: 'name=scrypt-hash,...' "
                                          "(hashes from herald_shared.apikeys.hash_secret).")

    @field_validator("hard_bounce_warnings", "abuse_warnings", "unsubscribe_warnings", "block_warnings",
                     "windows_hours", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return [v for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    def worker_url(self) -> str:
        if self.advertised_url is not None:
            return str(self.advertised_url).rstrip("/")
        host = self.http_host if self.http_host not in ("0.0.0.0", "::", "") else socket.gethostname()
        return f"http://{host}:{self.http_port}"

    def policy(self) -> Policy:
        return Policy(
            rules=default_rules(as_fraction(self.hard_bounce_threshold), as_fraction(self.abuse_threshold),
                                as_fraction(self.unsubscribe_threshold),
                                tuple(map(as_fraction, self.hard_bounce_warnings)),
                                tuple(map(as_fraction, self.abuse_warnings)),
                                tuple(map(as_fraction, self.unsubscribe_warnings)),
                                as_fraction(self.block_threshold), tuple(map(as_fraction, self.block_warnings))),
            minimum_sent=self.minimum_sent, windows_hours=tuple(self.windows_hours),
            campaign_retention_seconds=self.campaign_retention_days * 86400,
            one_off_deleted_within_seconds=self.one_off_deleted_within_hours * 3600,
            one_off_followed_within_seconds=self.one_off_followed_within_hours * 3600,
            one_off_overlap=as_fraction(self.one_off_overlap),
            one_off_minimum_members=self.one_off_minimum_members,
            one_off_maximum_sends=self.one_off_maximum_sends,
            one_off_send_reach=as_fraction(self.one_off_send_reach),
            one_off_check_members=self.one_off_check_members)



def broker_credentials(settings: HeraldSettings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """What faust's own clients authenticate with: the same as every aiokafka client's
    (`HeraldSettings.kafka_client_options`)."""
    protocol, context = settings.kafka_security_protocol, settings.kafka_ssl_context()
    if protocol.startswith("SASL_"):
        return faust.SASLCredentials(username=settings.kafka_username, ssl_context=context,
                                     password=settings.kafka_password.get_secret_value(),
                                     mechanism=settings.kafka_sasl_mechanism)
    return faust.SSLCredentials(context) if context is not None else None


class Compliance:
    """The wired service: `start()` creates the topics and starts the faust app in this event loop."""

    def __init__(self, settings: ComplianceSettings) -> None:
        self.settings = settings
        self.policy = settings.policy()  # invalid thresholds stop the process here, with the reason
        topics = settings.topics
        self.producer = make_producer(settings, SERVICE)
        self.publisher = EventPublisher(self.producer, topics)
        servers = settings.kafka_bootstrap_servers.split(",")
        brokers = [f"{TRANSPORT_SCHEME}://{b.strip()}" for b in servers if b.strip()]
        app_id = f"{settings.topic_prefix}herald-compliance"
        self.faust = faust.App(
            # Tables live in memory and in their changelog topics; faust still creates its data folder, so it
            # goes to the temporary folder, not wherever the process was started.
            # No faust web server: `canonical_url` is the service's own HTTP API, which the group's assignment
            # tells every worker (app.router), so that staff requests reach the worker holding the account.
            app_id, broker=brokers, store=STORE_URL, web_enabled=False, canonical_url=settings.worker_url(),
            broker_credentials=broker_credentials(settings),
            datadir=os.path.join(tempfile.gettempdir(), f"{app_id}-data"),
            topic_partitions=PARTITIONS, topic_replication_factor=settings.kafka_replication_factor,
            processing_guarantee="at_least_once", consumer_auto_offset_reset="earliest", producer_acks=-1,
            table_standby_replicas=settings.standby_replicas,
            stream_wait_empty=True, autodiscover=False, broker_session_timeout=settings.session_timeout,
            broker_heartbeat_interval=HEARTBEAT_SECONDS, TableManager=TableManager)
        schema: Any = faust.Schema(key_type=str, value_type=bytes, key_serializer="raw", value_serializer="raw")
        self.accounts = ChangelogTable(self.faust.Table("accounts", schema=schema, partitions=PARTITIONS,
                                                          help="Counts, windows and decisions per account."),
                                         self.producer)
        self.facts = FactTable(self.faust.Table("facts", schema=schema, partitions=PARTITIONS, store=FACT_STORE_URL,
                                                help="Where each counted fact was first seen (dedupe)."),
                               self.producer)
        self.lists = ChangelogTable(self.faust.Table("lists", schema=schema, partitions=PARTITIONS,
                                                       help="Lists: created, sent to, deleted; member sketch."),
                                      self.producer)
        self.announcements = Announcements(settings)
        self.continuity = Continuity(settings, self.faust.conf.id)
        dead_letterer = f"{settings.topic_prefix}{SERVICE}"
        # its series exist at 0 from the start: one born at the first dead letter starts at 1, and
        # HeraldDeadLettersGrowing (increase()) would miss it, after every restart too
        expect_dead_letters(dead_letterer, [topics(t) for t in INPUT_TOPICS], DEAD_LETTERED_AS)
        self.processor = Processor(self.policy, topics, self.accounts, self.facts, self.lists, self.announcements,
                                   self.publisher, DeadLetters(self.producer, dead_letterer),
                                   self._highwater, self.continuity,
                                   Acknowledgements(lambda: self.faust.consumer))
        source = self.faust.topic(*(topics(t) for t in INPUT_TOPICS), key_type=bytes, value_type=bytes,
                                  key_serializer="raw", value_serializer="raw", partitions=PARTITIONS)
        self.faust.agent(source, name="compliance")(self._agent)
        self.faust.on_partitions_assigned.connect(self._on_assigned)
        self.faust.on_partitions_revoked.connect(self._on_revoked)
        self.faust.on_rebalance_complete.connect(self._on_recovered)
        self._assigned_at: float | None = None
        self._recovering_since: float | None = None  # the first assignment whose recovery has not ended yet
        self.app = api_app("Herald compliance", "Staff API of the compliance processor: per-account rates, "
                           "reinstatement. Errors are RFC 9457 problem documents (application/problem+json).")
        staff_tokens = StaffTokens.from_setting(settings.staff_tokens, settings.address_attempts())
        self.app.include_router(build_staff_api(self, staff_tokens))
        # "kafka": a broker answers a metadata request (one every 2 s at most): a worker that cannot reach it
        # processes nothing and cannot record a reinstatement; "tables": started, and not recovering them
        self.broker = BrokerProbe(self.producer)
        add_health_routes(self.app, {"kafka": broker_readiness(self.broker), "tables": self._tables_ready})
        self._sweeper: asyncio.Task[None] | None = None
        self._catcher: asyncio.Task[None] | None = None
        self._reporter: asyncio.Task[None] | None = None
        self._started = False
        self.failed: str | None = None
        self.on_failure: Callable[[], None] | None = None

    # --- the stream ---------------------------------------------------------------------------------------------

    async def _agent(self, stream: Any) -> None:
        async for events in stream.take_events(self.settings.batch_size, within=self.settings.batch_seconds):
            try:
                await self.processor.handle(events)
            except Exception:
                # A bug, not bad input (that is dead-lettered). faust would acknowledge the batch on the way out
                # and could commit it unprocessed; leaving at once keeps it for the next start to redo.
                _exit_at_once("batch failed; exiting without committing it")

    async def _on_assigned(self, sender: Any, /, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        self._assigned_at = time.monotonic()
        if self._recovering_since is None:  # a rebalance during a recovery does not restart its clock
            self._recovering_since = self._assigned_at
        await self.processor.assigned(args[0] if args else kwargs.get("assigned", ()))

    async def _on_recovered(self, sender: Any, /, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        if self._assigned_at is not None:  # faust sends this when the tables are recovered (or needed nothing)
            metrics.RECOVERY_SECONDS.set(time.monotonic() - self._assigned_at)
            self._assigned_at = None
        self._recovering_since = None
        self._report_recovery()

    def _report_recovery(self) -> None:
        metrics.RECOVERY_RUNNING_SECONDS.set(recovery_running(self._recovering_since, time.monotonic()))

    async def _report_progress(self) -> None:
        """Every HERALD_COMPLIANCE_LAG_REPORT_SECONDS, in its own task, whatever the agent is doing (a batch that
        does not end, a table recovery that does not end, a stream that stopped delivering): the lag of each owned
        partition from the broker's end offsets, and how long the table recovery in progress has run. A batch
        reports the lag too, but a worker that processes nothing would keep its last value (about 0)."""
        while True:
            self._report_recovery()
            try:
                await asyncio.wait_for(self.processor.report_lag(), timeout=max(self.settings.lag_report_seconds, 5))
            except TRANSIENT_ERRORS as exc:  # a rebalance, the broker away: the next round
                log.info("lag not reported", extra={"error": repr(exc)})
            except Exception:
                log.exception("lag not reported")  # a report is no reason to stop processing
            await asyncio.sleep(self.settings.lag_report_seconds)

    async def _on_revoked(self, sender: Any, /, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        try:
            await self.processor.revoked(args[0] if args else kwargs.get("revoked", ()))
        except Exception:
            _exit_at_once("the tables of revoked partitions could not be written; exiting")

    def _highwater(self, tp: Any) -> int | None:
        try:
            value = self.faust.consumer.highwater(tp)
        except Exception:  # no fetch for this partition yet
            return None
        return int(value) if value is not None else None

    async def _catch_up(self) -> None:
        while True:
            await asyncio.sleep(self.settings.stall_seconds / 2)
            if self.faust.in_recovery or not self.faust.consumer.assignment():
                continue  # the stream is not expected to deliver yet
            try:
                await self.processor.catch_up(self.settings.stall_seconds)
            except TRANSIENT_ERRORS as exc:
                log.warning("catching up failed; trying again", extra={"error": repr(exc)})
            except Exception:
                _exit_at_once("catching up failed; exiting")

    async def _sweep(self) -> None:
        """Every HERALD_COMPLIANCE_FACTS_CHECK_SECONDS, keep the fact index within HERALD_COMPLIANCE_MAX_FACTS;
        every 10 minutes, forget the facts past the dedupe horizon. Never while the tables are being recovered
        (a value read then may be missing or old)."""
        swept = time.monotonic()
        while True:
            await asyncio.sleep(self.settings.facts_check_seconds)
            if self.faust.in_recovery or not self.faust.consumer.assignment():
                continue
            try:
                await self.processor.limit_facts(self.settings.max_facts, time.time())
            except TRANSIENT_ERRORS as exc:  # the deletions are written next time
                log.warning("keeping the fact index within its limit failed", extra={"error": repr(exc)})
            except Exception:
                _exit_at_once("keeping the fact index within its limit failed; exiting")
            if time.monotonic() - swept < SWEEP_SECONDS or self.faust.in_recovery:
                continue
            swept = time.monotonic()
            try:
                removed = await self.processor.sweep_facts(self.policy.longest_window_seconds, time.time())
            except TRANSIENT_ERRORS as exc:
                log.warning("forgetting expired facts failed", extra={"error": repr(exc)})
                continue
            except Exception:
                _exit_at_once("forgetting expired facts failed; exiting")
            if removed:
                log.info("forgot expired facts", extra={"removed": removed})

    # --- lifecycle ----------------------------------------------------------------------------------------------

    async def _tables_ready(self) -> bool:
        return self._started and not self.faust.in_recovery

    async def start(self) -> None:
        await ensure_topics(self.settings)
        await self.producer.start()
        # before faust starts: a first recovery that never ends is reported too
        self._reporter = asyncio.create_task(self._report_progress(), name="report-progress")
        await self.faust.start()
        self._sweeper = asyncio.create_task(self._sweep(), name="sweep-facts")
        self._catcher = asyncio.create_task(self._catch_up(), name="catch-up")
        self._started = True

    def request_stop(self) -> None:
        log.info("stopping")

    async def stop(self) -> None:
        for task in (self._sweeper, self._catcher, self._reporter):
            if task is not None:
                task.cancel()
        await self.faust.stop()
        await self.continuity.stop()
        await self.producer.stop()

    # --- HTTP ---------------------------------------------------------------------------------------------------

    def held_here(self, account_id: str) -> bool:
        """Only the worker holding an account's partition answers for it: its tables also hold standby copies of
        other partitions, which may lag."""
        return not self.faust.in_recovery and account_partition(account_id) in self.processor.owned

    def account(self, account_id: str) -> AccountState | None:
        stored = self.accounts.get(account_id)
        return None if stored is None or is_purged(stored) else AccountState.from_json(stored)

    @property
    def url(self) -> str:
        return str(self.faust.conf.canonical_url)

    def holder_url(self, account_id: str) -> str | None:
        partition = account_partition(account_id)
        try:
            hosts = self.faust.router.table_metadata("accounts")  # {worker URL: {changelog topic: partitions}}
        except KeyError:  # no assignment yet
            return None
        holder = next((url for url, topics in hosts.items() if any(partition in p for p in topics.values())), None)
        return None if holder is None or holder == self.url else holder

    @property
    def holders(self) -> WorkerClient:
        return WorkerClient(self.faust.http_client)


def recovery_running(since: float | None, now: float) -> float:
    """How long the table recovery in progress has run (0 when none is)."""
    return 0.0 if since is None else max(0.0, now - since)


class WorkerClient:
    """Requests to another worker, over faust's own aiohttp session."""

    # Longer than the holder's own deadline for recording the look (PUBLISH_TIMEOUT, 15 s): with the broker away
    # the holder answers 503 dependency_unavailable then, and that answer, Retry-After included, comes back
    # rather than this worker's holder_unreachable for a holder that did answer.
    TIMEOUT = aiohttp.ClientTimeout(total=PUBLISH_TIMEOUT + 5)

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes,
                      ) -> tuple[int, dict[str, str], bytes]:
        try:
            async with self.session.request(method, url, headers=headers, data=body or None,
                                            timeout=self.TIMEOUT, allow_redirects=False) as response:
                return response.status, {k.lower(): v for k, v in response.headers.items()}, await response.read()
        except aiohttp.ClientError as exc:
            raise ConnectionError(f"{method} {url}: {exc!r}") from exc



def _exit_at_once(why: str) -> NoReturn:
    """Leave without faust's shutdown (which acknowledges what is in hand): the next start redoes it."""
    log.critical(why, exc_info=True)
    logging.shutdown()
    os._exit(70)


def main() -> None:
    run_service(SERVICE, ComplianceSettings, Compliance)
