"""Settings shared by every Herald process, read from environment variables only."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .topics import TopicNames


class HeraldSettings(BaseSettings):
    """Each service extends this with its own fields; the README's configuration table lists them all."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True, populate_by_name=True)

    kafka_bootstrap_servers: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers.")
    kafka_replication_factor: int = Field(default=1, ge=1, alias="HERALD_KAFKA_REPLICATION_FACTOR",
                                          description="Replication factor for topics Herald creates.")
    mongodb_url: str = Field(default="mongodb://127.0.0.1:27017", description="MongoDB connection URL.")
    topic_prefix: str = Field(default="", alias="HERALD_TOPIC_PREFIX",
                              description="Prefix of every topic name (tests, shared clusters).")
    database_prefix: str = Field(default="herald_", alias="HERALD_DATABASE_PREFIX",
                                 description="Prefix of every service's MongoDB database name.")
    http_host: str = Field(default="127.0.0.1", alias="HERALD_HTTP_HOST")
    http_port: int = Field(default=8080, alias="HERALD_HTTP_PORT")
    log_level: str = Field(default="INFO", alias="HERALD_LOG_LEVEL")
    log_format: str = Field(default="json", alias="HERALD_LOG_FORMAT", pattern="^(json|text)$")

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.topic_prefix)

    def database_name(self, service: str) -> str:
        return f"{self.database_prefix}{service}"
