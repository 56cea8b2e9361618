"""A request's id, and the correlation of an event being handled, reach the events made and the lines logged
meanwhile (ARCHITECTURE.md, the envelope: `correlation_id` is shared by all events of one flow)."""

from __future__ import annotations

import json
import logging
import uuid

import httpx
import pytest

from herald_shared import correlation
from herald_shared.contract import parse_event, serialize_event
from herald_shared.contract.envelope import Event
from herald_shared.http import api_app
from herald_shared.logs import configure_logging
from tests.samples import sample


def test_an_event_made_in_a_flow_carries_its_id_and_one_made_outside_none() -> None:
    flow_id = uuid.uuid4()
    with correlation.flow(flow_id):
        inside = sample("MessageSent")
    assert inside.correlation_id == flow_id
    assert sample("MessageSent").correlation_id is None


def test_an_id_the_maker_gives_wins_over_the_flows() -> None:
    """`Event.caused()` names the cause's flow: a handler that says so is not overruled."""
    given, flow_id = uuid.uuid4(), uuid.uuid4()
    with correlation.flow(flow_id):
        event = sample("MessageSent", correlation_id=given)
    assert event.correlation_id == given


def test_an_event_read_in_a_flow_stays_as_its_producer_wrote_it() -> None:
    """A record of another producer that leaves `correlation_id` out is read with none, not with the flow of
    whatever work happens to read it."""
    written = json.loads(serialize_event(sample("MessageSent")))
    del written["correlation_id"]
    with correlation.flow(uuid.uuid4()):
        from_json = parse_event(json.dumps(written).encode())
        from_dict = parse_event(written)
    assert from_json.correlation_id is None and from_dict.correlation_id is None


def test_a_clients_request_id_is_kept_when_it_is_a_uuid_and_replaced_otherwise() -> None:
    mine = uuid.uuid4()
    assert correlation.request_id(str(mine)) == mine
    assert correlation.request_id(f" {mine} ") == mine
    for given in (None, "", "abc", "x" * 65, "1; DROP TABLE", "\u00e9"):
        made = correlation.request_id(given)
        assert isinstance(made, uuid.UUID) and made.version == 4


def test_a_line_logged_in_a_flow_names_it_and_one_outside_does_not(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    flow_id = uuid.uuid4()
    try:
        configure_logging("INFO")
        log = logging.getLogger("herald.test")
        with correlation.flow(flow_id):
            log.info("inside")
            log.info("names its own", extra={"correlation_id": "theirs"})
        log.info("outside")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        root.handlers[:], root.level = saved
    assert [(line["msg"], line.get("correlation_id")) for line in lines] == [
        ("inside", str(flow_id)), ("names its own", "theirs"), ("outside", None)]


async def test_every_answer_names_its_request_and_what_the_request_made_and_logged_carries_it(
        caplog: pytest.LogCaptureFixture) -> None:
    app = api_app("Test", "A test app.")
    made: list[Event] = []
    caplog.handler.addFilter(correlation.CorrelationFilter())

    @app.post("/things")
    async def create() -> dict[str, str]:
        made.append(sample("SubscriberAdded"))
        logging.getLogger("herald.test").warning("made a thing")
        return {"made": "yes"}

    mine = uuid.uuid4()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        given = await client.post("/things", headers={"X-Request-ID": str(mine)})
        fresh = await client.post("/things")
        refused = await client.get("/nowhere", headers={"X-Request-ID": "not-a-uuid"})
    assert given.status_code == 200 and given.headers["X-Request-ID"] == str(mine)
    fresh_id = uuid.UUID(fresh.headers["X-Request-ID"])
    assert fresh_id != mine
    assert [event.correlation_id for event in made] == [mine, fresh_id]
    assert [getattr(r, "correlation_id", None) for r in caplog.records if r.msg == "made a thing"] == [
        str(mine), str(fresh_id)]
    assert refused.status_code == 404  # a problem answer names its request too
    assert uuid.UUID(refused.headers["X-Request-ID"]) not in (mine, fresh_id)
    assert correlation.current() is None  # nothing leaks out of a request
