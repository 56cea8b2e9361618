"""Events no read model's store can keep, on herald.subscriptions (an integer beyond 64 bits in a custom field or
a count, Infinity or NaN in a custom field, a reason with a '.' as a map key), each before a valid event of the
same account: the contract refuses them, so every consumer of the topic in a real `herald-subscriptions` and
`herald-delivery` process dead-letters them with why and folds what follows (they held the subscriptions
projection and delivery's audience back for good: the flush was retried for ever)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from herald_shared.contract import serialize_event
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually
from tests.samples import sample

from .conftest import ServiceProcess, behind, dead_letters

ACCOUNT = "acc-unstorable"
BEYOND = 2**70


def _raw(type_name: str, change: Callable[[dict[str, Any]], Any]) -> bytes:
    doc = json.loads(serialize_event(sample(type_name, ACCOUNT)))
    change(doc["payload"])
    return json.dumps(doc).encode()  # Python's JSON writes NaN and Infinity as such


UNSTORABLE = {
    "custom field 2**70": _raw("SubscriberAdded", lambda p: p["custom_fields"].update(city=BEYOND)),
    "custom field Infinity": _raw("SubscriberAdded", lambda p: p["custom_fields"].update(city=float("inf"))),
    "custom field NaN": _raw("SubscriberAdded", lambda p: p["custom_fields"].update(city=float("nan"))),
    "rows_total 2**70": _raw("ImportCompleted", lambda p: p.update(rows_total=BEYOND)),
    "reason key 'a.b'": _raw("ImportCompleted", lambda p: p.update(rejected_by_reason={"a.b": 1})),
}
CONSUMERS = {"subscriptions": ["subscriptions.projection"],
             "delivery": ["delivery.audience", "delivery.confirmations"]}


@pytest.mark.parametrize("service", sorted(CONSUMERS))
async def test_an_event_no_store_keeps_is_dead_lettered_and_the_partition_goes_on(
        settings: HeraldSettings, producer: AIOKafkaProducer, services: Any, service: str) -> None:
    topic, key = settings.topics("herald.subscriptions"), ACCOUNT.encode()
    offsets = {}
    for what, raw in UNSTORABLE.items():
        offsets[(await producer.send_and_wait(topic, raw, key=key)).offset] = what
        await producer.send_and_wait(topic, serialize_event(sample("ListCreated", ACCOUNT)), key=key)
    process: ServiceProcess = services[service]
    process.start()
    await process.ready()
    for group in CONSUMERS[service]:
        await eventually(lambda g=settings.topic_prefix + group: behind(settings, g, ["herald.subscriptions"]),  # type: ignore[misc]
                         lambda gaps: not gaps, within=60, every=0.3, what=f"{group} past the unstorable events")
        letters = {d.offset: d.reason for d in await dead_letters(settings, "herald.subscriptions")
                   if d.consumer == settings.topic_prefix + group}
        assert set(letters) == set(offsets), f"{group}: {letters}"
        for offset, reason in letters.items():
            assert reason.startswith("invalid "), (offsets[offset], reason)
            assert any(why in reason for why in ("beyond signed 64 bits", "finite number", "should match pattern")), \
                (offsets[offset], reason)
    assert process.alive, process.tail()
