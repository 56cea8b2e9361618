"""The wiring a service of consumers shares: its MongoDB database and Kafka producer, its consumers run in the
background, readiness, and shutdown (the `lifecycle.Service` a process serves)."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from .http import NotReady, ReadinessCheck
from .kafka import BATCH_BYTES, BrokerProbe, EventConsumer, ensure_topics, make_producer
from .lifecycle import WatchedTasks
from .mongo import make_client
from .settings import HeraldSettings


def broker_readiness(probe: BrokerProbe) -> ReadinessCheck:
    """The "kafka" readiness check: a broker answered lately (`BrokerProbe`), or why not."""

    async def kafka() -> bool:
        why = await probe.unreachable()
        if why is not None:
            raise NotReady(why)
        return True

    return kafka


class ConsumingService(WatchedTasks):
    """Subclasses build their consumers into `self.consumers` and their HTTP app into `self.app`, and may pass
    `ready_checks()` to `add_health_routes`; other background tasks they start go through `watched`."""

    app: FastAPI

    def __init__(self, settings: HeraldSettings, name: str, *, batch_bytes: int = BATCH_BYTES) -> None:
        """`batch_bytes`: see `kafka.make_producer`."""
        super().__init__()
        self.settings = settings
        self.mongo = make_client(settings, name)
        self.db = self.mongo[settings.database_name(name)]
        self.producer = make_producer(settings, name, batch_bytes=batch_bytes)
        self.broker = BrokerProbe(self.producer)
        self.consumers: list[EventConsumer] = []
        self._tasks: list[asyncio.Task[None]] = []

    def ready_checks(self) -> dict[str, ReadinessCheck]:
        return {"mongodb": self._mongo_ready, "kafka": broker_readiness(self.broker),
                "consumers": self._consumers_ready}

    async def _mongo_ready(self) -> bool:
        await self.db.command("ping")
        return True

    async def _consumers_ready(self) -> bool:
        # Started is all a consumer can say: its loop goes on while the broker is away ("kafka" says that).
        return all(consumer.started for consumer in self.consumers)

    async def start(self) -> None:
        await ensure_topics(self.settings)
        await self.producer.start()
        self._tasks = [self.watched(asyncio.create_task(c.run(), name=c.name)) for c in self.consumers]

    def request_stop(self) -> None:
        self.stopping = True
        for consumer in self.consumers:
            consumer.request_stop()

    async def stop(self) -> None:
        self.request_stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.producer.stop()
        await self.mongo.close()
