"""Dead-letter entries as the AsyncAPI document describes them (DeadLetterHeaders): one of a record read from a
topic says where it was read (topic, partition, offset); one that came from no topic (delivery's inbound SMTP
server, its sender) names its origin instead, and is replayed to the topic whose dead-letter topic holds it.
And which errors a consumer waits out (the infrastructure's) rather than sets an event aside for."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from bson.errors import InvalidDocument
from jsonschema import Draft202012Validator
from pymongo.errors import AutoReconnect, BulkWriteError, NetworkTimeout, OperationFailure, ServerSelectionTimeoutError

from herald_shared.cli import replay_target
from herald_shared.contract.publish import asyncapi_document
from herald_shared.kafka import DLQ_ORIGIN, DLQ_SOURCE_TOPIC, DeadLetters, EventPublisher, is_transient
from herald_shared.settings import HeraldSettings
from herald_shared.topics import TopicNames


class Producer:
    """Keeps what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_and_wait(self, topic: str, **record: Any) -> None:
        self.sent.append({"topic": topic, **record})


def headers_schema() -> Draft202012Validator:
    return Draft202012Validator(asyncapi_document()["components"]["schemas"]["DeadLetterHeaders"])


def as_object(headers: list[tuple[str, bytes]]) -> dict[str, str]:
    return {name: value.decode() for name, value in headers}


async def test_an_entry_from_no_topic_names_its_origin_and_fits_the_asyncapi_format() -> None:
    producer = Producer()
    await EventPublisher(producer, TopicNames("t1.")).dead_letter(  # type: ignore[arg-type]
        "herald.delivery", b"From: x\n\nnot a report\n", "no signed return path", origin="inbound-smtp",
        consumer="delivery.inbound", key=b"inbound", headers=[("herald.inbound.recipients", b"b+x@bounces.test")])
    (entry,) = producer.sent
    headers = as_object(entry["headers"])
    assert entry["topic"] == "t1.herald.delivery.dlq"
    assert headers[DLQ_ORIGIN] == "inbound-smtp" and DLQ_SOURCE_TOPIC not in headers
    assert list(headers_schema().iter_errors(headers)) == []


async def test_an_entry_of_a_consumed_record_says_where_it_was_read_and_fits_the_asyncapi_format() -> None:
    producer = Producer()
    record = SimpleNamespace(topic="t1.herald.billing", partition=2, offset=41, key=b"acc-1", value=b"{",
                             headers=[("type", b"PlanChanged")])
    await DeadLetters(producer, "t1.billing.projection").send(record, "not JSON", "invalid")  # type: ignore[arg-type]
    headers = as_object(producer.sent[0]["headers"])
    assert (headers["herald.dlq.source_topic"], headers["herald.dlq.source_partition"],
            headers["herald.dlq.source_offset"]) == ("t1.herald.billing", "2", "41")
    assert DLQ_ORIGIN not in headers
    assert list(headers_schema().iter_errors(headers)) == []


def test_the_asyncapi_format_refuses_an_entry_that_says_neither_where_nor_what_from() -> None:
    assert list(headers_schema().iter_errors({"herald.dlq.reason": "x", "herald.dlq.source_topic": "inbound-smtp"}))


@pytest.mark.parametrize(("headers", "target"), [
    ({DLQ_SOURCE_TOPIC: "t1.herald.billing"}, "t1.herald.billing"),
    ({DLQ_ORIGIN: "inbound-smtp"}, "t1.herald.delivery"),
    # written before the origin header was: the source named something that is no topic
    ({DLQ_SOURCE_TOPIC: "inbound-smtp"}, "t1.herald.delivery"),
    ({DLQ_SOURCE_TOPIC: "sender"}, "t1.herald.delivery"),
    ({}, "t1.herald.delivery"),
], ids=["read from a topic", "origin", "old inbound entry", "old sender entry", "no header"])
def test_replay_sends_an_entry_back_to_its_topic_or_to_the_dead_letter_topics_own(
        headers: dict[str, str], target: str) -> None:
    settings = HeraldSettings(kafka_bootstrap_servers="127.0.0.1:1", mongodb_url="mongodb://127.0.0.1:1",
                              topic_prefix="t1.")
    entry = SimpleNamespace(headers=[(name, value.encode()) for name, value in headers.items()])
    assert replay_target(settings, entry, "t1.herald.delivery.dlq") == target


REFUSED_WRITE = {"writeErrors": [{"index": 0, "code": 2, "errmsg": "invalid value: +Inf"}], "writeConcernErrors": []}
STEPPED_DOWN = {"writeErrors": [{"index": 0, "code": 189, "errmsg": "primary stepped down"}]}


@pytest.mark.parametrize(("error", "transient"), [
    (AutoReconnect("connection refused"), True),
    (NetworkTimeout("timed out"), True),
    (ServerSelectionTimeoutError("no servers"), True),
    (ConnectionRefusedError(), True),
    (TimeoutError(), True),
    (OperationFailure("not primary", code=10107), True),
    (BulkWriteError(STEPPED_DOWN), True),
    (BulkWriteError({"writeErrors": [], "writeConcernErrors": [{"code": 64}]}), True),
    (OverflowError("MongoDB can only handle up to 8-byte ints"), False),
    (InvalidDocument("key '$x' must not start with '$'"), False),
    (BulkWriteError(REFUSED_WRITE), False),
    (OperationFailure("invalid key", code=2), False),
    (KeyError("nModified"), False),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v))
def test_only_the_infrastructures_errors_are_waited_out(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient
