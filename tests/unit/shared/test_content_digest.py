"""Which events under one id are the same event (`kafka.content_digest`, `kafka.reused_id`)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

from herald_shared.contract import parse_event, serialize_event
from herald_shared.kafka import content_digest, reused_id
from tests.samples import sample


def _as(value: dict[str, object]) -> str | None:
    return content_digest(parse_event(json.dumps(value).encode()))


def test_a_copy_serialised_again_and_stamped_anew_has_the_same_digest() -> None:
    event = json.loads(serialize_event(sample("SubscriberAdded", producer="crm")))
    again = {key: event[key] for key in reversed(event)} | {"occurred_at": "2026-12-01 08:00Z",
                                                            "event_id": event["event_id"].replace("-", "")}
    again["payload"] = {key: event["payload"][key] for key in reversed(event["payload"])}
    assert _as(event) is not None
    assert _as(again) == _as(event)
    assert not reused_id(_as(event), _as(again))


def test_another_body_under_the_id_is_another_event() -> None:
    event = json.loads(serialize_event(sample("SubscriberAdded", producer="crm")))
    other = {**event, "payload": {**event["payload"], "first_name": "Berta"}}
    assert reused_id(_as(event), _as(other))
    assert reused_id(_as(event), _as({**event, "producer": "another-crm"}))


def test_the_topic_owners_events_have_no_digest_and_are_copies() -> None:
    owners = sample("SubscriberConfirmed", producer="subscriptions")
    assert content_digest(owners) is None
    assert not reused_id(None, content_digest(sample("SubscriberConfirmed", producer="crm")))


def test_a_digest_of_another_schema_version_or_none_kept_is_not_compared() -> None:
    digest = content_digest(sample("SubscriberAdded", producer="crm"))
    assert digest is not None and digest.startswith("1:")
    assert not reused_id("2:" + digest.partition(":")[2][::-1], digest)
    assert not reused_id(None, digest)


def test_times_are_compared_as_instants_and_correlation_and_causation_ids_are_not_content() -> None:
    """A producer sending again may write a time with another offset and give the retry another correlation (or
    causation) id: still the same event (review, 2026-12-07: each was dead-lettered as another)."""
    event = json.loads(serialize_event(sample("SubscriberAdded", producer="crm")))
    collected = datetime.fromisoformat(event["payload"]["consent"]["collected_at"])
    shifted = collected.astimezone(timezone(timedelta(hours=2))).isoformat()
    again = {**event, "correlation_id": str(uuid.uuid4()), "causation_id": str(uuid.uuid4()),
             "payload": {**event["payload"], "consent": {**event["payload"]["consent"], "collected_at": shifted}}}
    assert _as(again) == _as(event)
    later = (collected + timedelta(seconds=1)).isoformat()
    consent = {**event["payload"]["consent"], "collected_at": later}
    moved = {**event, "payload": {**event["payload"], "consent": consent}}
    assert reused_id(_as(event), _as(moved))
