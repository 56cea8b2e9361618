"""Counters read an event's position from where pydantic keeps private attributes (the property is ~4 us an
event); this fails loudly if an upgrade of pydantic or a change of the envelope moves it."""

from __future__ import annotations

from herald_shared.contract.envelope import RecordPosition
from herald_shared.readmodel import _position_of
from tests.samples import sample


def test_the_fast_read_of_a_position_is_the_events_position() -> None:
    event = sample("MessageSent")
    assert _position_of(event) is None and event.position is None
    event.read_at(RecordPosition("herald.delivery", 3, 1234))
    assert _position_of(event) == event.position == RecordPosition("herald.delivery", 3, 1234)
