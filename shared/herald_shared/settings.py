"""Settings shared by every Herald process, read from environment variables only."""

from __future__ import annotations

import ssl
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr, model_validator
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

KafkaSecurityProtocol = Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"]
KafkaSaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]


class HeraldSettings(BaseSettings):
    """Each service extends this with its own fields; the README's configuration table lists them all."""

    # hide_input_in_errors: a refusal of the whole model (`_kafka_security_is_whole`) would quote every variable
    # read, HERALD_KAFKA_PASSWORD and the other secrets included, into the log of a process that failed to start.
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True, populate_by_name=True,
                                      hide_input_in_errors=True)

    kafka_bootstrap_servers: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers.")
    kafka_replication_factor: int = Field(default=1, ge=1, alias="HERALD_KAFKA_REPLICATION_FACTOR",
                                          description="Replication factor for topics Herald creates.")
    kafka_session_timeout: float = Field(
        default=10.0, ge=6, le=300, alias="HERALD_KAFKA_SESSION_TIMEOUT_SECONDS",
        description="How long the consumer group waits for a member that stopped heartbeating (a crashed process) "
                    "before its partitions go to the others; a process restarted after a crash waits as long for "
                    "them. Kafka brokers accept 6-300 s by default (group.min/max.session.timeout.ms).")
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        default="PLAINTEXT", alias="HERALD_KAFKA_SECURITY_PROTOCOL",
        description="How clients reach the brokers: PLAINTEXT (no authentication: the local stack), SASL_PLAINTEXT, "
                    "SASL_SSL or SSL. With ACLs on the brokers, SASL is what ties a writer to the topics it may write.")
    kafka_sasl_mechanism: KafkaSaslMechanism = Field(
        default="SCRAM-SHA-512", alias="HERALD_KAFKA_SASL_MECHANISM",
        description="SASL mechanism of the SASL_* protocols: SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN.")
    kafka_username: str = Field(default="", alias="HERALD_KAFKA_USERNAME",
                                description="The SASL user (a KafkaUser in the prod overlay); required by SASL_*.")
    kafka_password: SecretStr = Field(default=SecretStr(""), alias="HERALD_KAFKA_PASSWORD",
                                      description="The SASL user's password; required by SASL_*.")
    kafka_ca_file: str = Field(default="", alias="HERALD_KAFKA_CA_FILE",
                               description="PEM file of the CA that signed the brokers' certificates, for SSL and "
                                           "SASL_SSL (default: the system's CAs).")
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

    @model_validator(mode="after")
    def _kafka_security_is_whole(self) -> Self:
        """A half-configured client would start and then fail on every request (or, worse, connect without the
        credentials someone meant it to use): refuse it before anything starts, saying which variable is wrong."""
        protocol = self.kafka_security_protocol
        sasl, tls = protocol.startswith("SASL_"), protocol.endswith("SSL")
        if sasl and not (self.kafka_username and self.kafka_password.get_secret_value()):
            raise ValueError(f"HERALD_KAFKA_SECURITY_PROTOCOL={protocol} needs HERALD_KAFKA_USERNAME and "
                             "HERALD_KAFKA_PASSWORD (the SASL user and its password)")
        # A password without SASL is a credential someone meant to use. A user name alone is not: the upgrade Jobs
        # name their service's user whatever the overlay, and take the password from its Secret where it exists.
        if not sasl and self.kafka_password.get_secret_value():
            raise ValueError(f"HERALD_KAFKA_PASSWORD is set, but HERALD_KAFKA_SECURITY_PROTOCOL={protocol} sends no "
                             "credentials: set it to SASL_PLAINTEXT or SASL_SSL")
        if self.kafka_ca_file and not tls:
            raise ValueError(f"HERALD_KAFKA_CA_FILE is set, but HERALD_KAFKA_SECURITY_PROTOCOL={protocol} uses no TLS: "
                             "set it to SSL or SASL_SSL")
        if self.kafka_ca_file and not Path(self.kafka_ca_file).is_file():
            raise ValueError(f"HERALD_KAFKA_CA_FILE={self.kafka_ca_file} is no file")
        return self

    def kafka_ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of the *SSL protocols (the CA file's, else the system's CAs); None without TLS."""
        if not self.kafka_security_protocol.endswith("SSL"):
            return None
        return ssl.create_default_context(cafile=self.kafka_ca_file or None)

    def kafka_client_options(self) -> dict[str, Any]:
        """The keyword arguments every aiokafka client (producer, consumer, admin) is built with: the brokers and
        how to authenticate to them. PLAINTEXT gives the brokers alone, so aiokafka's defaults stay as they were."""
        options: dict[str, Any] = {"bootstrap_servers": self.kafka_bootstrap_servers}
        protocol = self.kafka_security_protocol
        if protocol == "PLAINTEXT":
            return options
        options["security_protocol"] = protocol
        options["ssl_context"] = self.kafka_ssl_context()
        if protocol.startswith("SASL_"):
            options.update(sasl_mechanism=self.kafka_sasl_mechanism, sasl_plain_username=self.kafka_username,
                           sasl_plain_password=self.kafka_password.get_secret_value())
        return options

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
