"""An event's position (the record it was read from) lives in pydantic's private store without a declared
`PrivateAttr` (see the envelope); these fail loudly if a pydantic upgrade or a change of the envelope breaks
what the rest of Herald relies on."""

from __future__ import annotations

import pickle

from herald_shared.contract import parse_event
from herald_shared.contract.envelope import RecordPosition, position_of
from tests.samples import sample

WHERE = RecordPosition("herald.delivery", 3, 1234)


def test_an_event_made_here_has_no_position_and_a_read_one_has_its_own() -> None:
    event = sample("MessageSent")
    assert event.position is None and position_of(event) is None
    event.read_at(WHERE)
    assert event.position == position_of(event) == WHERE
    parsed = parse_event(event.model_dump_json().encode())
    assert parsed.position is None, "a parsed event does not inherit a position it was not read at"


def test_the_position_is_not_part_of_what_the_event_says() -> None:
    event = sample("MessageSent")
    plain = event.model_copy(deep=True)
    event.read_at(WHERE)
    assert event == plain and hash(event) == hash(plain)
    assert event.model_dump() == plain.model_dump()
    assert event.model_dump_json() == plain.model_dump_json()
    assert "position" not in event.model_dump_json()


def test_copies_and_pickles_keep_the_position() -> None:
    event = sample("MessageOpened")
    event.read_at(WHERE)
    assert event.model_copy().position == WHERE
    assert event.model_copy(update={"producer": "tool"}).position == WHERE
    restored = pickle.loads(pickle.dumps(event))
    assert restored.position == WHERE and restored == event
