"""A request's id reaches the events it recorded, on the real stack, so one id finds a flow's events and logs."""

from __future__ import annotations

import uuid

from herald_shared.contract.subscriptions import ConfirmationRequested, SubscriberAdded
from tests.integration.subscriptions.conftest import Platform


async def test_a_subscribe_requests_events_carry_the_id_its_answer_names(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list(opt_in="double")
    mine = uuid.uuid4()
    given = await acme.http.post("/v1/lists/news/subscribers", headers={"X-Request-ID": str(mine)},
                                 json={"email": "ann@example.com", "consent": {"method": "signup form"}})
    assert given.status_code == 201, given.text
    assert given.headers["X-Request-ID"] == str(mine)
    other = await acme.subscribe("ben@example.com")
    theirs = uuid.UUID(other.headers["X-Request-ID"])
    assert theirs != mine

    events = [e for e in await platform.events() if isinstance(e, SubscriberAdded | ConfirmationRequested)]
    flows = {(e.type, e.payload.subscriber_id): e.correlation_id for e in events}
    ann, ben = given.json()["subscriber_id"], other.json()["subscriber_id"]
    assert flows == {("SubscriberAdded", ann): mine, ("ConfirmationRequested", ann): mine,
                     ("SubscriberAdded", ben): theirs, ("ConfirmationRequested", ben): theirs}
