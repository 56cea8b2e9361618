"""Delivery's HTTP API honours its published OpenAPI document: schemathesis (`--checks all`) against the live
service on the real stack, the tracking endpoints and the staff look-up (with a staff token)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from herald_delivery.api import MessagesOut
from herald_shared.apikeys import hash_secret
from tests.conftest import eventually
from tests.integration.helpers import UNTHROTTLED_API_KEYS, run_schemathesis
from tests.samples import campaign_queued

from .conftest import World

STAFF_TOKEN = "staff-token-of-rita-0123456789"
STAFF = {"Authorization": f"Bearer {STAFF_TOKEN}"}

# A look-up names its person by exactly one of two optional query parameters, which no OpenAPI schema can say:
# a schema-valid request naming neither or both is refused 422 (and a cursor no page gave, too). Its account is
# acme's: a generated account id is unknown (404 before anything else), so the look-up itself would go untested.
LOOK_UP_IN_ACME = {"include-path": "/v1/staff/accounts/{account_id}/messages",
                   "parameters": {"path.account_id": "acme"},
                   "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "401", "404", "422"]}}}


async def test_the_tracking_endpoints_and_the_staff_look_up_honour_their_openapi_document(
        start_delivery: Any, relay: Any, world: World, tmp_path: Path) -> None:
    # schemathesis sends wrong staff tokens again and again
    running = await start_delivery(HERALD_STAFF_TOKENS=f"rita={hash_secret(STAFF_TOKEN)}", **UNTHROTTLED_API_KEYS)
    await world.open_account("acme")
    await world.add_list("acme", "news", [("s1", "anna@example.org")])
    await world.publish(campaign_queued("acme", "c1"))
    await eventually(relay.mailed, bool, what="c1 sent")
    # Generated account ids are never this one: its answer is checked against the documented model here.
    answer = await eventually(lambda: running.http.get("/v1/staff/accounts/acme/messages",
                                                       params={"subscriber_id": "s1"}, headers=STAFF),
                              lambda a: a.status_code == 200 and [m["state"] for m in a.json()["messages"]] == ["sent"],
                              what="s1's message recorded sent")
    MessagesOut.model_validate(answer.json())
    await run_schemathesis(running.service.app, tmp_path, headers=STAFF, max_examples=15,
                           operations=[LOOK_UP_IN_ACME])
