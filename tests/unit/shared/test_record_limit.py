"""One record limit, named once (`MAX_REQUEST_BYTES`): the producer is given it, and the contract's longest texts
(a campaign's bodies) are bounded by it, so the contract refuses no event a producer could ever publish."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from herald_shared import kafka
from herald_shared.contract import InvalidEvent, parse_event, serialize_event
from herald_shared.contract.campaigns import CampaignCreated
from herald_shared.contract.envelope import MAX_REQUEST_BYTES
from herald_shared.kafka import event_headers, make_producer
from herald_shared.settings import HeraldSettings


def created(html_body: str) -> CampaignCreated:
    return CampaignCreated(account_id="acme", producer="campaigns", payload={  # type: ignore[arg-type]
        "campaign_id": "c1", "name": "N", "list_id": "news",
        "content": {"subject": "S", "from_name": "Acme", "from_email": "news@acme.example", "html_body": html_body,
                    "text_body": "b"}})


def record_bytes(event: CampaignCreated) -> int:
    """What the producer measures a record as before sending it (aiokafka's own estimate, which it compares with
    max_request_size)."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(event.account_id.encode(), serialize_event(event),
                                                                event_headers(event)))


def test_the_producer_is_given_the_named_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    made: dict[str, Any] = {}
    monkeypatch.setattr(kafka, "AIOKafkaProducer", lambda **options: made.update(options))
    make_producer(HeraldSettings(kafka_bootstrap_servers="k1:9092"), "campaigns")
    assert made["max_request_size"] == MAX_REQUEST_BYTES == 1_048_576  # aiokafka's default, now named
    assert kafka.MAX_REQUEST_BYTES is MAX_REQUEST_BYTES


def test_the_largest_body_a_producer_takes_is_read_by_the_contract() -> None:
    """Drafts stored before campaigns' size rule carried bodies of more than 1,000,000 characters in events the
    producer took: a rebuild from offset 0 must still read them."""
    low, high = 1_000_000, MAX_REQUEST_BYTES
    while high - low > 1:  # the longest ASCII body whose record the producer takes
        middle = (low + high) // 2
        low, high = (middle, high) if record_bytes(created("a" * middle)) <= MAX_REQUEST_BYTES else (low, middle)
    largest = created("a" * low)
    assert 1_040_000 < low < MAX_REQUEST_BYTES
    assert parse_event(serialize_event(largest)) == largest
    assert record_bytes(created("a" * (low + 1))) > MAX_REQUEST_BYTES


def test_a_body_longer_than_a_record_is_refused_and_could_never_have_been_published() -> None:
    at_bound = json.loads(serialize_event(created("a")))
    at_bound["payload"]["content"]["html_body"] = "a" * MAX_REQUEST_BYTES
    assert parse_event(json.dumps(at_bound).encode()).payload.content.html_body == "a" * MAX_REQUEST_BYTES  # type: ignore[attr-defined]
    # one character more: at least one byte more, so its record is over what the producer sends
    at_bound["payload"]["content"]["html_body"] += "a"
    raw = json.dumps(at_bound).encode()
    assert len(raw) > MAX_REQUEST_BYTES
    with pytest.raises(InvalidEvent, match="at most 1048576 characters"):
        parse_event(raw)
