"""Settings shared by every Herald process, read from environment variables only."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .throttle import (
    API_KEY_ADDRESS_WINDOW,
    API_KEY_FAILURES_PER_ADDRESS,
    API_KEY_FAILURES_PER_KEY,
    API_KEY_KEY_WINDOW,
    CredentialAttempts,
    Throttle,
)
from .topics import TopicNames


class HeraldSettings(BaseSettings):
    """Each service extends this with its own fields; the README's configuration table lists them all."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True, populate_by_name=True)

    kafka_bootstrap_servers: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers.")
    kafka_replication_factor: int = Field(default=1, ge=1, alias="HERALD_KAFKA_REPLICATION_FACTOR",
                                          description="Replication factor for topics Herald creates.")
    kafka_session_timeout: float = Field(
        default=10.0, ge=6, le=300, alias="HERALD_KAFKA_SESSION_TIMEOUT_SECONDS",
        description="How long the consumer group waits for a member that stopped heartbeating (a crashed process) "
                    "before its partitions go to the others; a process restarted after a crash waits as long for "
                    "them. Kafka brokers accept 6-300 s by default (group.min/max.session.timeout.ms).")
    mongodb_url: str = Field(default="mongodb://127.0.0.1:27017", description="MongoDB connection URL.")
    topic_prefix: str = Field(default="", alias="HERALD_TOPIC_PREFIX",
                              description="Prefix of every topic name (tests, shared clusters).")
    database_prefix: str = Field(default="herald_", alias="HERALD_DATABASE_PREFIX",
                                 description="Prefix of every service's MongoDB database name.")
    http_host: str = Field(default="127.0.0.1", alias="HERALD_HTTP_HOST")
    http_port: int = Field(default=8080, alias="HERALD_HTTP_PORT")
    log_level: str = Field(default="INFO", alias="HERALD_LOG_LEVEL")
    log_format: str = Field(default="json", alias="HERALD_LOG_FORMAT", pattern="^(json|text)$")
    forwarded_allow_ips: str = Field(
        default="127.0.0.1", alias="HERALD_FORWARDED_ALLOW_IPS",
        description="Proxies (addresses or networks, comma-separated) whose X-Forwarded-For names the client: the "
                    "address the per-client limits count (SECURITY.md). Set it to the ingress' addresses.")
    auth_failures_per_ip: int = Field(default=API_KEY_FAILURES_PER_ADDRESS, ge=1, alias="HERALD_AUTH_FAILURES_PER_IP",
                                      description="Failed API-key attempts from one client address before it is "
                                                  "refused 429 (in HERALD_AUTH_FAILURES_PER_IP_WINDOW_SECONDS).")
    auth_failures_per_ip_window: float = Field(default=API_KEY_ADDRESS_WINDOW.total_seconds(), gt=0,
                                               alias="HERALD_AUTH_FAILURES_PER_IP_WINDOW_SECONDS")
    auth_failures_per_key: int = Field(default=API_KEY_FAILURES_PER_KEY, ge=1, alias="HERALD_AUTH_FAILURES_PER_KEY",
                                       description="Failed attempts on one API key id before secrets this process "
                                                   "has not verified are refused 429 (in "
                                                   "HERALD_AUTH_FAILURES_PER_KEY_WINDOW_SECONDS).")
    auth_failures_per_key_window: float = Field(default=API_KEY_KEY_WINDOW.total_seconds(), gt=0,
                                                alias="HERALD_AUTH_FAILURES_PER_KEY_WINDOW_SECONDS")

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.topic_prefix)

    def api_key_attempts(self) -> CredentialAttempts:
        """The throttle of failed API-key attempts these settings describe (one per process)."""
        return CredentialAttempts.api_keys(
            self.auth_failures_per_ip, timedelta(seconds=self.auth_failures_per_ip_window),
            self.auth_failures_per_key, timedelta(seconds=self.auth_failures_per_key_window))

    def address_attempts(self) -> Throttle:
        """Failed credentials per client address, for credentials other than API keys (staff tokens)."""
        return Throttle(self.auth_failures_per_ip, timedelta(seconds=self.auth_failures_per_ip_window))

    def database_name(self, service: str) -> str:
        return f"{self.database_prefix}{service}"


class EdgeSettings(HeraldSettings):
    """Settings of a service whose HTTP side (and delivery's inbound SMTP) can run in processes of their own,
    scaled apart from the one(s) that consume: subscriptions and delivery."""

    run_consumers: bool = Field(
        default=True, alias="HERALD_RUN_CONSUMERS",
        description="false: this process serves HTTP (and delivery's inbound SMTP) only: no consumer (and no "
                    "sender in delivery) runs in it. The processes where it is true do that work; at least one "
                    "must run. See the service's README, \"Processes\".")
