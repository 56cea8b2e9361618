"""Events of an earlier schema_version are read through upcasters (README, "The event contract"): a version bump
leaves the history readable, a gap in the chain is refused with a reason, and the contract's own chain has no gap
(`herald schemas check` says so too)."""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

import pytest

from herald_shared.contract import (
    CONTRACT,
    EVENT_TYPES,
    UPCASTERS,
    Contract,
    Event,
    InvalidEvent,
    Payload,
    Upcasters,
    parse_event,
    serialize_event,
)
from herald_shared.contract.delivery import MessageSent
from herald_shared.contract.publish import IncompatibleChange, upcaster_gaps, write_files
from tests.samples import sample


class ParcelPayload(Payload):
    recipient_name: str
    weight_grams: int
    insured: bool


class ParcelShipped(Event):
    """At v3: v1 had `name` and `weight` in kilograms, v2 renamed `name` and counted grams, v3 added `insured`."""

    topic: ClassVar[str] = "herald.delivery"
    version: ClassVar[int] = 3
    type: Literal["ParcelShipped"] = "ParcelShipped"
    payload: ParcelPayload


class NotePayload(Payload):
    text: str


class NoteTaken(Event):
    topic: ClassVar[str] = "herald.delivery"
    type: Literal["NoteTaken"] = "NoteTaken"
    payload: NotePayload


def steps() -> Upcasters:
    upcasters = Upcasters()

    @upcasters.register("ParcelShipped", 1)
    def _v1(payload: dict[str, Any]) -> dict[str, Any]:
        return {"recipient_name": payload["name"], "weight_grams": round(payload["weight"] * 1000)}

    @upcasters.register("ParcelShipped", 2)
    def _v2(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "insured": False}

    return upcasters


CONTRACT_OF_PARCELS = Contract({"NoteTaken": NoteTaken, "ParcelShipped": ParcelShipped}, steps())


def recorded(version: int, payload: dict[str, Any]) -> bytes:
    """A ParcelShipped as a producer of `version` wrote it on the topic."""
    return json.dumps({"event_id": "0e6f3f0a-7f4f-5a59-9d8d-2b8f7c0c4b11", "type": "ParcelShipped",
                       "schema_version": version, "occurred_at": "2026-12-06T10:00:00Z", "account_id": "acme",
                       "producer": "depot", "payload": payload}).encode()


def without_payload(version: object) -> bytes:
    """What a careless producer wrote: a version this contract does not know, and no payload at all (a KeyError
    that stopped every consumer, restart after restart, before the reading of earlier versions took care)."""
    event = json.loads(recorded(1, {}))
    del event["payload"]
    return json.dumps({**event, "schema_version": version}).encode()


@pytest.mark.parametrize(("version", "payload"), [
    (1, {"name": "Anna", "weight": 1.25}),
    ("1", {"name": "Anna", "weight": 1.25}),  # the envelope's lax reading of a version in a string
    (2, {"recipient_name": "Anna", "weight_grams": 1250}),
    (3, {"recipient_name": "Anna", "weight_grams": 1250, "insured": False}),
])
def test_an_event_of_an_earlier_version_is_read_as_todays_through_each_step(version: object,
                                                                             payload: dict[str, Any]) -> None:
    event = CONTRACT_OF_PARCELS.parse(recorded(version, payload))  # type: ignore[arg-type]
    assert isinstance(event, ParcelShipped) and event.schema_version == 3
    assert event.payload == ParcelPayload(recipient_name="Anna", weight_grams=1250, insured=False)
    assert str(event.event_id) == "0e6f3f0a-7f4f-5a59-9d8d-2b8f7c0c4b11"  # the same event: deduplicated as one
    assert CONTRACT_OF_PARCELS.parse(json.loads(recorded(version, payload)  # type: ignore[arg-type]
                                                )) == event  # a decoded value the same way


@pytest.mark.parametrize(("raw", "reason"), [
    (recorded(4, {"recipient_name": "Anna", "weight_grams": 1, "insured": True}),
     r"invalid ParcelShipped: schema_version: unsupported schema_version 4 \(this contract knows version 3\)"),
    (recorded(1, {"name": "Anna"}), r"upcasting ParcelShipped v1: KeyError: 'weight'"),
    (recorded(1, {"name": "Anna", "weight": "heavy"}), r"upcasting ParcelShipped v1: TypeError"),
    (recorded(2, {"recipient_name": "Anna", "weight_grams": "x"}),
     r"ParcelShipped v2 upcast to v3: payload.weight_grams: Input should be a valid integer"),
    (recorded(2, {"recipient_name": "Anna\u0000", "weight_grams": 1}), r"NUL character"),
    (recorded(1, []), r"invalid ParcelShipped"),  # type: ignore[arg-type]
    (recorded(-1, {"name": "Anna", "weight": 1}), r"unsupported schema_version -1"),
    (without_payload(4), r"unsupported schema_version 4 .*payload: Field required"),
    (without_payload(1), r"invalid ParcelShipped: .*payload: Field required"),
    (without_payload("x"), r"invalid ParcelShipped"),
])
def test_what_no_upcaster_can_read_is_refused_with_the_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        CONTRACT_OF_PARCELS.parse(raw)


def test_a_gap_in_the_chain_is_refused_and_named() -> None:
    gappy = Upcasters()
    gappy.register("ParcelShipped", 2)(lambda payload: {**payload, "insured": False})
    contract = Contract({"NoteTaken": NoteTaken, "ParcelShipped": ParcelShipped}, gappy)
    with pytest.raises(InvalidEvent, match=r"ParcelShipped schema_version 1 is older than this contract's \(3\) "
                                           r"and no upcaster reads v1"):
        contract.parse(recorded(1, {"name": "Anna", "weight": 1}))
    assert contract.parse(recorded(2, {"recipient_name": "Anna", "weight_grams": 5})).payload.insured is False  # type: ignore[attr-defined]
    assert gappy.missing({"NoteTaken": NoteTaken, "ParcelShipped": ParcelShipped}) == ["ParcelShipped v1 -> v2"]
    stray = Upcasters()
    stray.register("NoteTaken", 1)(lambda payload: payload)
    assert stray.missing({"NoteTaken": NoteTaken}) == ["NoteTaken v1 -> v2 (no such type or version)"]
    with pytest.raises(ValueError, match="already has an upcaster"):
        gappy.register("ParcelShipped", 2)(lambda payload: payload)


def test_the_contracts_chain_has_no_gap_and_todays_events_parse_as_before() -> None:
    assert UPCASTERS.missing(EVENT_TYPES) == [] and upcaster_gaps() == []
    assert CONTRACT.types is EVENT_TYPES and CONTRACT.upcasters is UPCASTERS
    event = sample("MessageSent")
    assert parse_event(serialize_event(event)) == event


def test_a_bump_of_the_contracts_own_event_is_read_through_its_upcaster_and_refused_without_one(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """The path every consumer takes (`parse_event`): MessageSent bumped to v2 reads a v1 record through the step
    registered for it; without the step, `herald schemas generate` refuses the bump."""
    event = sample("MessageSent")
    v1 = serialize_event(event)
    monkeypatch.setattr(MessageSent, "version", 2)
    with pytest.raises(InvalidEvent, match="no upcaster reads v1"):
        parse_event(v1)
    with pytest.raises(IncompatibleChange, match="MessageSent v1 -> v2"):
        write_files(tmp_path)
    assert not any(tmp_path.iterdir())  # nothing written
    monkeypatch.setattr(UPCASTERS, "_steps", {("MessageSent", 1): lambda payload: {**payload, "smtp_reply": "v2"}})
    read = parse_event(v1)
    assert isinstance(read, MessageSent) and read.schema_version == 2 and read.payload.smtp_reply == "v2"
    assert read.event_id == event.event_id


def test_herald_schemas_check_fails_on_a_bump_without_its_upcaster(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from herald_shared import cli

    assert cli.main(["schemas", "check"]) == 0
    monkeypatch.setattr(MessageSent, "version", 2)
    assert cli.main(["schemas", "check"]) == 1
    out = capsys.readouterr().out
    assert "no upcaster: MessageSent v1 -> v2" in out and "stale: " in out  # its v2 schema is not written either
    assert cli.main(["schemas", "generate"]) == 1
    assert "register an upcaster" in capsys.readouterr().err
