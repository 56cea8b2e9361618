"""Bootstrap of the delivery service: settings, wiring, the consumers, the sender, the inbound SMTP server,
the HTTP server (tracking, staff look-ups, health, metrics), shutdown."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import Field, SecretStr

from herald_shared.consuming import broker_readiness
from herald_shared.contract import Event
from herald_shared.contract.billing import AccountPurged
from herald_shared.contract.campaigns import SendingDomainDkimVerified, SendingDomainRemoved
from herald_shared.contract.delivery import DkimKeyCreated
from herald_shared.contract.subscriptions import ConfirmationRequested, MembershipNoticeRequested, SubscriberErased
from herald_shared.http import add_health_routes, api_app
from herald_shared.kafka import BrokerProbe, EventConsumer, EventPublisher, ensure_topics, make_producer, partition_ids
from herald_shared.lifecycle import WatchedTasks, run_service
from herald_shared.links import LinkSigner
from herald_shared.mongo import Checkpoints, MongoDeduplicator, ProjectionGroup, make_client
from herald_shared.password_reset import ResetKey, ResetLinks
from herald_shared.purging import PurgedAccounts, PurgingHandler
from herald_shared.rebuilding import events_from_start, once_per_database
from herald_shared.settings import EdgeSettings
from herald_shared.staff import StaffTokens

from .api import build_staff_api
from .completion import CampaignCompletion
from .customer_dkim import SELECTOR, CustomerDkim, CustomerSigners, EncryptionKeyInvalid, SealingKey
from .customer_dkim import restore as restore_customer_keys
from .domain import RetryPolicy, ascii_domain
from .geoip import GeoLocator, GeoSettingInvalid
from .handlers import AudienceJobs, ControlHandler, GateBook
from .inbound import InboundHandler, InboundSessions, ReportReader
from .queue import JobQueue
from .render import DkimKey, MessageTokens, Renderer, RenderSettings
from .sender import Sender, SenderConfig
from .smtp import RelayConfig
from .store import AUDIENCE, MEMBER_EVENTS, AudienceProjection, CustomerKeyStore, DeliveryStore
from .tracking import build_tracking

SERVICE = "delivery"
log = logging.getLogger(__name__)
AUDIENCE_CATCH_UP_TIMEOUT = 60.0
# What the audience consumer reads (and `herald_delivery.rebuild` folds again): herald.subscriptions, and of
# herald.billing only AccountPurged.
AUDIENCE_TOPICS = ["herald.subscriptions", "herald.billing"]
PURGES: dict[str, list[type[Event]]] = {"herald.billing": [AccountPurged]}
# What a new store learns the customers' DKIM keys from (`customer_dkim.restore`), once (the mark's name).
RESTORED_FROM: dict[str, list[type[Event]]] = {"herald.delivery": [DkimKeyCreated], "herald.campaigns": [
    SendingDomainDkimVerified, SendingDomainRemoved]}
CUSTOMER_KEYS_RESTORED = "delivery.customer_dkim_keys"


class DeliverySettings(EdgeSettings):
    link_secret: str = Field(alias="HERALD_LINK_SECRET", min_length=16,
                             description="Signs unsubscribe, tracking and return-path tokens (shared with "
                                         "subscriptions).")
    public_url: str | None = Field(default=None, alias="HERALD_PUBLIC_URL",
                                   description="Base URL of the tracking endpoints; default http://host:port.")
    subscriptions_url: str = Field(default="http://127.0.0.1:8085", alias="HERALD_SUBSCRIPTIONS_URL",
                                   description="Public base URL of the subscriptions pages (unsubscribe links).")
    password_reset_key: ResetKey = Field(default="", alias="HERALD_PASSWORD_RESET_KEY",
                                         description="Billing's key of password-reset links (the same); empty: "
                                                     "no reset link is mailed (logged, counted as skipped).")
    billing_public_url: str = Field(default="http://127.0.0.1:8081", alias="HERALD_BILLING_PUBLIC_URL",
                                    description="Public base URL of billing's pages (password-reset links).")
    smtp_host: str = Field(default="127.0.0.1", alias="HERALD_SMTP_HOST", description="The relay.")
    smtp_port: int = Field(default=25, alias="HERALD_SMTP_PORT")
    smtp_starttls: bool = Field(
        default=False, alias="HERALD_SMTP_STARTTLS",
        description="Require STARTTLS (refuse a relay that does not offer it); without it, STARTTLS is still used "
                    "whenever the relay offers it.")
    smtp_tls: bool = Field(default=False, alias="HERALD_SMTP_TLS", description="Implicit TLS (port 465).")
    smtp_verify_tls: bool = Field(default=True, alias="HERALD_SMTP_VERIFY_TLS")
    smtp_username: str | None = Field(default=None, alias="HERALD_SMTP_USERNAME", description="AUTH user.")
    smtp_password: str | None = Field(default=None, alias="HERALD_SMTP_PASSWORD")
    smtp_timeout: float = Field(default=60.0, gt=0, alias="HERALD_SMTP_TIMEOUT",
                                description="Seconds for each reply of the relay, but the last.")
    smtp_data_timeout: float = Field(default=600.0, gt=0, alias="HERALD_SMTP_DATA_TIMEOUT",
                                     description="Seconds for the reply to the end of DATA (RFC 5321 4.5.3.2.6).")
    smtp_max_messages: int = Field(default=1000, ge=1, alias="HERALD_SMTP_MAX_MESSAGES",
                                   description="Messages per SMTP session, then QUIT and a new one.")
    concurrency: int = Field(default=10, ge=1, le=500, alias="HERALD_SEND_CONCURRENCY",
                             description="SMTP connections (one worker each).")
    account_rate: float = Field(default=0.0, ge=0, alias="HERALD_ACCOUNT_RATE",
                                description="Messages per second per account; 0 = unlimited.")
    domain_rate: float = Field(default=0.0, ge=0, alias="HERALD_DOMAIN_RATE",
                               description="Messages per second per recipient domain; 0 = unlimited.")
    retry_first_delay: float = Field(default=300.0, gt=0, alias="HERALD_RETRY_FIRST_DELAY_SECONDS")
    retry_max_delay: float = Field(default=4 * 3600.0, gt=0, alias="HERALD_RETRY_MAX_DELAY_SECONDS")
    retry_give_up: float = Field(default=72 * 3600.0, gt=0, alias="HERALD_RETRY_GIVE_UP_SECONDS",
                                 description="Age after which a deferred message soft-bounces (72 h).")
    poll_interval: float = Field(default=1.0, gt=0, alias="HERALD_SEND_POLL_SECONDS")
    bounce_domain: str = Field(default="bounces.herald.localhost", alias="HERALD_BOUNCE_DOMAIN",
                               description="Domain of return paths and Message-IDs; its MX is the inbound server.")
    inbound_host: str = Field(default="127.0.0.1", alias="HERALD_INBOUND_SMTP_HOST")
    inbound_port: int = Field(default=2525, ge=0, alias="HERALD_INBOUND_SMTP_PORT",
                              description="Inbound SMTP for bounces and feedback reports; 0 turns it off.")
    inbound_max_sessions: int = Field(default=100, ge=1, alias="HERALD_INBOUND_MAX_SESSIONS",
                                      description="Inbound SMTP sessions at once; one more is answered 421.")
    inbound_idle_seconds: float = Field(default=60.0, gt=0, alias="HERALD_INBOUND_IDLE_SECONDS",
                                        description="An inbound session from which nothing came for this long is "
                                                    "closed.")
    dkim_keys_dir: Path | None = Field(default=None, alias="HERALD_DKIM_KEYS_DIR",
                                       description="Files <selector>._domainkey.<domain>.pem, one per domain.")
    dkim_default_domain: str | None = Field(default=None, alias="HERALD_DKIM_DEFAULT_DOMAIN",
                                            description="Sign with this domain's key when the sender's "
                                                        "domain has none.")
    dkim_encryption_key: SecretStr = Field(
        default=SecretStr(""), alias="HERALD_DKIM_ENCRYPTION_KEY",
        description="32 bytes in base64 (`openssl rand -base64 32`): seals the DKIM keys delivery makes for "
                    "customers' sending domains (AES-256-GCM); empty: no such keys are made (one INFO line).")
    platform_from: str = Field(default="no-reply@herald.localhost", alias="HERALD_PLATFORM_FROM",
                               description="From address of confirmations and account notices.")
    staff_tokens: str = Field(default="", alias="HERALD_STAFF_TOKENS",
                              description="Staff who may look up a person's messages: 'name=scrypt-hash,...' "
                                          "(hashes from herald_shared.apikeys.hash_secret).")
    geoip_databases: str = Field(default="", alias="HERALD_GEOIP_DATABASES",
                                 description="MaxMind DB files (comma-separated paths: GeoIP2/GeoLite2 City, DB-IP, "
                                             "ip-location-db) giving the country and city of opens and clicks; "
                                             "empty: not looked up.")
    held_report_interval: float = Field(default=5.0, gt=0, alias="HERALD_HELD_REPORT_SECONDS",
                                        description="How often held messages are counted (DeliveryHeld, "
                                                    "queue-depth metrics) and a CampaignDeliveryFinished "
                                                    "that failed is tried again.")


class DkimSettingInvalid(ValueError):
    """A DKIM setting that names no key: refused at start, since mail would otherwise go out unsigned, silently."""


def load_dkim_keys(directory: Path | None) -> dict[str, list[DkimKey]]:
    """`<selector>._domainkey.<domain>.pem` files, RSA or Ed25519: every key of a domain signs its mail (an
    Ed25519 and an RSA key side by side sign twice, RFC 8463: receivers that know only RSA use that one). The
    domain is keyed by its A-labels (`ascii_domain`): a file named for `bücher.de` or for `xn--bcher-kva.de`
    signs mail From either. DkimSettingInvalid when the folder is missing (a misspelt path); an empty one is a
    WARNING (the manifests mount an optional secret there: a deployment whose relay signs needs none)."""
    keys: dict[str, list[DkimKey]] = {}
    if directory is None:
        return keys
    if not directory.is_dir():
        raise DkimSettingInvalid(f"HERALD_DKIM_KEYS_DIR={directory}: no such folder")
    for path in sorted(directory.glob("*._domainkey.*.pem")):
        selector, _, domain = path.name.removesuffix(".pem").partition("._domainkey.")
        domain = ascii_domain(domain)
        keys.setdefault(domain, []).append(DkimKey(domain, selector, path.read_bytes()))
    if not keys:
        log.warning("DKIM: HERALD_DKIM_KEYS_DIR=%s holds no key file (<selector>._domainkey.<domain>.pem): mail "
                    "goes out unsigned unless the relay signs it", directory)
    return keys


def dkim_keys_of(settings: DeliverySettings) -> tuple[dict[str, list[DkimKey]], list[DkimKey]]:
    """The keys of each domain, and the default domain's (HERALD_DKIM_DEFAULT_DOMAIN) that sign the mail of
    other domains; DkimSettingInvalid when a setting names what is not there."""
    keys = load_dkim_keys(settings.dkim_keys_dir)
    if not settings.dkim_default_domain:
        return keys, []
    default = ascii_domain(settings.dkim_default_domain)
    if default not in keys:
        found = ", ".join(sorted(keys)) or "none"
        where = "HERALD_DKIM_KEYS_DIR is not set" if settings.dkim_keys_dir is None else \
            f"HERALD_DKIM_KEYS_DIR={settings.dkim_keys_dir} has keys for: {found}"
        raise DkimSettingInvalid(f"HERALD_DKIM_DEFAULT_DOMAIN={settings.dkim_default_domain}: no key file for "
                                 f"it ({where})")
    return keys, keys[default]


def announce_dkim(renderer: Renderer) -> None:
    """Which domains sign, with which selector and algorithm (never key material): a start-up log line each."""
    for domain, signers in sorted(renderer.dkim_signers.items()):
        log.info("DKIM signs mail from %s and its subdomains: %s", domain,
                 ", ".join(f"s={signer.selector} a={signer.algorithm}" for signer in signers))
    if renderer.default_signers:
        log.info("DKIM signs mail from other domains as %s: %s", renderer.default_signers[0].domain,
                 ", ".join(f"s={signer.selector} a={signer.algorithm}" for signer in renderer.default_signers))
    else:
        log.info("DKIM: mail from other domains goes out unsigned (no HERALD_DKIM_DEFAULT_DOMAIN)"
                 if renderer.dkim_signers else "DKIM: no keys: mail goes out unsigned unless the relay signs it")


def warn_unless_https_unsubscribe(settings: DeliverySettings) -> None:
    """RFC 8058's one-click unsubscription is for https URIs only: Gmail and Yahoo ignore an http
    List-Unsubscribe for it (their bulk-sender rules), so every campaign would fail them. Local runs serve http,
    so this is a start-up warning, not a refusal; the manifests set https."""
    if not settings.subscriptions_url.lower().startswith("https://"):
        log.warning("HERALD_SUBSCRIPTIONS_URL=%s is not https: receivers ignore one-click unsubscription "
                    "(List-Unsubscribe-Post, RFC 8058) at an http URL, and Gmail and Yahoo require it of bulk "
                    "senders; set the subscriptions pages' public https URL", settings.subscriptions_url)


class Delivery(WatchedTasks):
    """The wired service. `start()` runs the consumers, the sender and the inbound server."""

    def __init__(self, settings: DeliverySettings) -> None:
        super().__init__()
        self.settings = settings
        try:  # first: a bad setting stops the process before anything connects
            keys, default_keys = dkim_keys_of(settings)
            sealing = SealingKey.from_setting(settings.dkim_encryption_key.get_secret_value())
            self.places = GeoLocator.from_setting(settings.geoip_databases)
        except (DkimSettingInvalid, GeoSettingInvalid, EncryptionKeyInvalid) as exc:
            log.critical("%s", exc)
            raise SystemExit(f"herald-{SERVICE}: {exc}") from None
        self.mongo = make_client(settings, SERVICE)
        self.db = self.mongo[settings.database_name(SERVICE)]
        self.producer = make_producer(settings, SERVICE)
        self.publisher = EventPublisher(self.producer, settings.topics)
        self.store = DeliveryStore(self.db)
        self.gates = GateBook()
        self.tokens = MessageTokens(settings.link_secret)
        base_url = settings.public_url or f"http://{settings.http_host}:{settings.http_port}"
        self.customer_signers = CustomerSigners()
        self.customer_dkim = None if sealing is None else CustomerDkim(
            CustomerKeyStore(self.db), self.publisher.publish, sealing, self.customer_signers)
        renderer = Renderer(RenderSettings(base_url, settings.bounce_domain), self.tokens,
                            LinkSigner(settings.link_secret, settings.subscriptions_url), keys, default_keys,
                            defer_signing=True, customer_signers=self.customer_signers)
        announce_dkim(renderer)
        if sealing is None:
            log.info("DKIM: no HERALD_DKIM_ENCRYPTION_KEY: no keys are made for customers' sending domains (their "
                     "mail is signed as above)")
        else:
            log.info("DKIM: customers' sending domains get keys of their own (selector %s), sealed with the key %s",
                     SELECTOR, sealing.key_id)
        if self.places.enabled:
            log.info("GeoIP: opens and clicks are placed by %s", settings.geoip_databases)
        else:
            log.info("GeoIP: no HERALD_GEOIP_DATABASES: opens and clicks carry no country or city")
        warn_unless_https_unsubscribe(settings)
        relay = RelayConfig(settings.smtp_host, settings.smtp_port, starttls=settings.smtp_starttls,
                            implicit_tls=settings.smtp_tls, verify_tls=settings.smtp_verify_tls,
                            username=settings.smtp_username, password=settings.smtp_password,
                            timeout=settings.smtp_timeout, data_timeout=settings.smtp_data_timeout,
                            max_messages_per_connection=settings.smtp_max_messages)
        policy = RetryPolicy(first_delay=timedelta(seconds=settings.retry_first_delay),
                             max_delay=timedelta(seconds=max(settings.retry_max_delay, settings.retry_first_delay)),
                             give_up_after=timedelta(seconds=settings.retry_give_up))
        self.jobs = JobQueue(self.gates.changed)
        self.completion = CampaignCompletion(self.store, self.jobs, self.publisher, closed=self.gates.closed,
                                             flow=self.gates.flow)
        self.sender = Sender(self.store, self.gates, self.jobs, renderer, relay, self.publisher, policy,
                             SenderConfig(concurrency=settings.concurrency, account_rate=settings.account_rate,
                                          domain_rate=settings.domain_rate, poll_interval=settings.poll_interval,
                                          platform_from_email=settings.platform_from),
                             ready=self.gates_caught_up, completion=self.completion)
        self.audience_checkpoints = Checkpoints(self.db, "audience")
        # Retention: each consumer reads billing's AccountPurged (and nothing else of herald.billing, but the
        # control consumer), purges the account and drops its later events; one set of tombstones for all.
        self.purged = PurgedAccounts(self.db)
        purges, audience_topics = PURGES, AUDIENCE_TOPICS
        self.audience = EventConsumer(
            settings, name=f"{settings.topic_prefix}{SERVICE}.audience", topics=audience_topics, only=purges,
            handler=PurgingHandler(ProjectionGroup(AudienceProjection(self.db)), self.purged, self.purge),
            producer=self.producer, deduplicator=MongoDeduplicator(self.db, "audience"),
            checkpoints=self.audience_checkpoints, self_deduplicated=MEMBER_EVENTS)  # members keep their ids
        # Of herald.subscriptions, only what AudienceJobs acts on: the rest is passed over unparsed, and no id
        # of it is stored (two per imported subscriber otherwise).
        jobs_only: dict[str, list[type[Event]]] = {**purges, "herald.subscriptions": [
            ConfirmationRequested, MembershipNoticeRequested, SubscriberErased]}
        self.confirmations = EventConsumer(
            settings, name=f"{settings.topic_prefix}{SERVICE}.confirmations", topics=audience_topics, only=jobs_only,
            handler=PurgingHandler(AudienceJobs(self.store, self.jobs, self.gates, self.gates_caught_up),
                                   self.purged, self.purge),
            producer=self.producer, deduplicator=MongoDeduplicator(self.db, "confirmations"))
        self.control_handler = ControlHandler(
            self.store, self.gates, self.jobs, self.audience_caught_up, self.completion,
            ResetLinks(settings.password_reset_key or None, settings.billing_public_url.rstrip("/")),
            customer_dkim=self.customer_dkim)
        self.control_checkpoints = Checkpoints(self.db, "control")
        self.control = EventConsumer(
            settings, name=f"{settings.topic_prefix}{SERVICE}.control",
            topics=["herald.billing", "herald.compliance", "herald.campaigns"],
            handler=PurgingHandler(self.control_handler, self.purged, self.purge),
            producer=self.producer, deduplicator=MongoDeduplicator(self.db, "control"),
            checkpoints=self.control_checkpoints)
        self.inbound = InboundHandler(ReportReader(self.tokens, settings.bounce_domain), self.store, self.publisher,
                                      settings.bounce_domain)
        self.app = api_app("Herald delivery", "Tracking endpoints (opens, clicks) of the delivery service, "
                           "reached from the messages it sends; and the staff look-up of one person's messages. "
                           "Errors are RFC 9457 problem documents (application/problem+json).")
        self.app.include_router(build_tracking(self.tokens, self.store, self.publisher, self.places))
        self.app.include_router(build_staff_api(self.store, self.publisher, StaffTokens.from_setting(
            settings.staff_tokens, settings.address_attempts())))
        add_health_routes(self.app, {"mongodb": self._mongo_ready,
                                     "kafka": broker_readiness(BrokerProbe(self.producer)), "consumers": self._running})
        self._offsets: AIOKafkaConsumer | None = None
        self._partitions: dict[str, list[int]] = {}
        self._inbound_server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def purge(self, account_id: str) -> None:
        """Retention (AccountPurged): the account's audience, campaigns, test sends and ledger, in MongoDB and
        in memory (its queued jobs, gates and campaigns in progress). Idempotent: each consumer calls it."""
        await self.control_handler.expansions.forget_account(account_id)
        self.jobs.forget_account(account_id)
        self.gates.forget_account(account_id)
        self.completion.forget_account(account_id)
        self.sender.forget_account(account_id)
        self.customer_signers.forget_account(account_id)
        await self.store.purge(account_id)

    async def _mongo_ready(self) -> bool:
        await self.db.command("ping")
        return True

    async def _running(self) -> bool:
        if not self.settings.run_consumers:  # an edge process: its HTTP and inbound SMTP answer from the start
            return True
        return all(c.started for c in (self.audience, self.confirmations, self.control)) and self.sender.started

    async def audience_caught_up(self) -> None:
        """Wait until the audience projection has applied everything herald.subscriptions held just now, so a
        campaign queued after its subscribers were added is expanded to them."""
        async with asyncio.timeout(AUDIENCE_CATCH_UP_TIMEOUT):
            await self._caught_up(self.audience_checkpoints, ["herald.subscriptions"])

    async def gates_caught_up(self) -> None:
        """Wait until the control consumer has applied everything billing, compliance and campaigns held at
        start-up: the sender sends nothing before, so a suspension it has not seen yet cannot be bypassed."""
        await self._caught_up(self.control_checkpoints, ["herald.billing", "herald.compliance", "herald.campaigns"])

    async def _caught_up(self, checkpoints: Checkpoints, base_topics: list[str]) -> None:
        assert self._offsets is not None
        topics = [self.settings.topics(t) for t in base_topics]
        missing = [t for t in topics if t not in self._partitions]
        if missing:  # asked once per topic: an admin connection per campaign would be waste
            self._partitions.update(await partition_ids(self.settings, missing))
        partitions = [TopicPartition(topic, p) for topic in topics for p in self._partitions[topic]]
        ends = await self._offsets.end_offsets(partitions)
        await checkpoints.wait_until_applied([(tp.topic, tp.partition, end - 1) for tp, end in ends.items()
                                              if end > 0])

    async def start(self) -> None:
        """Everything, or with HERALD_RUN_CONSUMERS=false the edge only: tracking (HTTP) and inbound SMTP, which
        read the store and publish, and need none of the consumers' or the sender's state (README,
        "Processes")."""
        # An audience of an earlier format is refused, not sent from: it is folded again first (README, "Upgrading").
        await AUDIENCE.check(self.db)
        await ensure_topics(self.settings)
        await self.store.ensure_indexes()
        await self.producer.start()
        if self.settings.run_consumers:
            await self._start_consuming()
        if self.settings.inbound_port:
            loop = asyncio.get_running_loop()
            self._inbound_server = await loop.create_server(
                InboundSessions(self.inbound, self.settings.bounce_domain, self.settings.inbound_max_sessions,
                                self.settings.inbound_idle_seconds),
                self.settings.inbound_host, self.settings.inbound_port)
        if self.settings.run_consumers:
            self._tasks = [asyncio.create_task(c.run(), name=c.name)
                           for c in (self.audience, self.confirmations, self.control)]
            self._tasks.append(asyncio.create_task(self.sender.run(), name="sender"))
            self._tasks.append(asyncio.create_task(self._announce_held(), name="held-announcer"))
        for task in self._tasks:
            self.watched(task)

    async def _start_consuming(self) -> None:
        """What the consumers and the sender need before they run: the offsets client, the campaigns' progress,
        the gates, and the expansions a stop or crash interrupted."""
        self._offsets = AIOKafkaConsumer(**self.settings.kafka_client_options(), group_id=None,
                                         client_id=f"{SERVICE}-offsets", isolation_level="read_committed")
        await self._offsets.start()
        await self.completion.load()
        await self.control_handler.load()  # takes up interrupted expansions: after the completion's state
        if self.customer_dkim is not None:
            restored = await once_per_database(self.db, CUSTOMER_KEYS_RESTORED, self._restore_customer_keys)
            if restored is not None:
                log.info("DKIM: customers' keys learnt from the topics (a new store): %d events", restored)
            await self.customer_dkim.load()

    async def _restore_customer_keys(self) -> int:
        """Once per database: the customers' keys and their signing from DkimKeyCreated (herald.delivery) and the
        campaigns' verifications and removals, from offset 0 (a store lost or rebuilt keeps its keys; at the first
        start of a version with customer keys, herald.delivery is read once, its other records passed over by their
        type header)."""
        purged = await self.purged.load()
        folded = 0
        async for batch in events_from_start(self.settings, RESTORED_FROM):
            folded += await restore_customer_keys(CustomerKeyStore(self.db),
                                                  [e for e in batch if e.account_id not in purged])
        return folded

    async def _announce_held(self) -> None:
        """Held messages, and the end of campaigns whose announcement failed (MongoDB or Kafka away)."""
        while True:
            try:
                await self.sender.announce_held()
                await self.completion.announce_pending()
            except Exception:
                log.exception("announcing held messages failed; trying again")
            await asyncio.sleep(self.settings.held_report_interval)  # a periodic report, not a wait

    def request_stop(self) -> None:
        """SIGTERM: the control consumer and the sender first; `stop()` stops the audience consumers once the
        control consumer and the expansions are done (an expansion waits for the audience)."""
        self.stopping = True
        self.control.request_stop()
        self.sender.request_stop()

    async def stop(self) -> None:
        """The control consumer and the expansions first: an expansion waits for the audience consumer."""
        self.stopping = True
        if self._inbound_server is not None:
            self._inbound_server.close()
        tasks = {task.get_name(): task for task in self._tasks}
        self.control.request_stop()
        if self.control.name in tasks:
            await asyncio.gather(tasks[self.control.name], return_exceptions=True)
        await self.control_handler.expansions.stop()  # its campaign stays pending for the next start
        self.request_stop()
        self.audience.request_stop()
        self.confirmations.request_stop()
        if "held-announcer" in tasks:
            tasks["held-announcer"].cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._offsets is not None:
            await self._offsets.stop()
        await self.producer.stop()
        await self.mongo.close()
        self.places.close()


def main() -> None:
    run_service(SERVICE, DeliverySettings, Delivery)


if __name__ == "__main__":
    main()
