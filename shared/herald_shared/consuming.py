"""The wiring a service of consumers shares: its MongoDB database and Kafka producer, its consumers run in the
background, readiness, and shutdown (the `lifecycle.Service` a process serves)."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from .http import ReadinessCheck
from .kafka import BATCH_BYTES, EventConsumer, ensure_topics, make_producer
from .lifecycle import WatchedTasks
from .mongo import make_client
from .settings import HeraldSettings


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
        self.consumers: list[EventConsumer] = []
        self._tasks: list[asyncio.Task[None]] = []

    def ready_checks(self) -> dict[str, ReadinessCheck]:
        return {"mongodb": self._mongo_ready, "consumers": self._consumers_ready}

    async def _mongo_ready(self) -> bool:
        await self.db.command("ping")
        return True

    async def _consumers_ready(self) -> bool:
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
