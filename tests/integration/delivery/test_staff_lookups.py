"""Staff support look-ups on the real stack with a real relay (PRODUCT.md "Data protection": "support look-ups (was
it sent, when, why blocked)"; "Accounts, users, access": every access by platform staff to an account's data is
written to an audit log): a member sent, one skipped because unsubscribed, one deferred, one bounced, one held by a
suspension, each answered as it is; every look-up on herald.delivery as StaffViewedMessages first."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from herald_delivery.api import MessagesOut
from herald_shared.apikeys import hash_secret, new_api_key
from herald_shared.contract.campaigns import CampaignApproved
from herald_shared.contract.compliance import AccountSuspended
from herald_shared.contract.delivery import StaffViewedMessages
from herald_shared.contract.subscriptions import SubscriberUnsubscribed
from tests.conftest import eventually
from tests.samples import campaign_queued, confirmation_request

from .conftest import World, dsn, held, mail_inbound

STAFF_TOKEN = "staff-token-of-rita-0123456789"
STAFF = {"Authorization": f"Bearer {STAFF_TOKEN}"}
# Deferred messages are tried again 30-60 minutes later: the one deferred here stays deferred while the test
# looks.
LOOK_UPS = {"HERALD_STAFF_TOKENS": f"rita={hash_secret(STAFF_TOKEN)}", "HERALD_RETRY_FIRST_DELAY_SECONDS": 3600,
            "HERALD_RETRY_MAX_DELAY_SECONDS": 3600}


def sha256(address: str) -> str:
    return hashlib.sha256(address.encode()).hexdigest()


async def look_up(http: httpx.AsyncClient, account_id: str, **person: str) -> dict[str, Any]:
    answer = await http.get(f"/v1/staff/accounts/{account_id}/messages", params=person, headers=STAFF)
    assert answer.status_code == 200, answer.text
    return MessagesOut.model_validate(answer.json()).model_dump(mode="json")


async def test_a_look_up_says_of_each_message_whether_it_was_sent_when_and_why_not(
        start_delivery: Any, relay: Any, world: World) -> None:
    running = await start_delivery(**LOOK_UPS)
    http, store = running.http, running.service.store
    relay.behaviour.script["defer@example.org"] = [("rcpt", "451 4.2.0 mailbox busy, try later")]
    relay.behaviour.script["bounce@example.org"] = [("rcpt", "550 5.1.1 user unknown")]
    await world.open_account("acme")
    await world.add_list("acme", "news", [("s-sent", "sent@example.org"), ("s-unsub", "unsub@example.org"),
                                          ("s-defer", "defer@example.org"), ("s-bounce", "bounce@example.org")])
    # Held for review first, so that the member who unsubscribes meanwhile has a message to be skipped.
    await world.publish(campaign_queued("acme", "c1", review_required=True))
    await world.wait_for(lambda es: bool(held(es, "campaign_review")), "c1 held for review")
    waiting, = (await look_up(http, "acme", subscriber_id="s-unsub"))["messages"]
    assert (waiting["state"], waiting["held_by"], waiting["final"]) == ("held", "campaign_review", False)

    await world.publish(SubscriberUnsubscribed(account_id="acme", producer="subscriptions", payload={
        "list_id": "news", "subscriber_id": "s-unsub", "source": "one_click"}))
    await running.service.audience_caught_up()
    await world.publish(CampaignApproved(account_id="acme", producer="campaigns",
                                         payload={"campaign_id": "c1", "reviewer": "staff"}))
    outcomes = store.db["outcomes"]
    await eventually(lambda: outcomes.count_documents({"campaign_id": "c1"}), lambda n: n == 4,
                     what="an outcome of each of c1's four messages")

    sent = await look_up(http, "acme", email_sha256=sha256("sent@example.org"))
    assert sent["memberships"] == [{"subscriber_id": "s-sent", "list_id": "news", "status": "active",
                                    "erased_at": None}]
    message, = sent["messages"]
    assert (message["campaign_id"], message["state"], message["final"]) == ("c1", "sent", True)
    assert [(a["outcome"], a["smtp_code"]) for a in message["attempts"]] == [("sent", 250)]
    assert sent["confirmations"] == [] and sent["next_cursor"] is None
    # A report to the inbound server after the relay had accepted it: still sent, and the later bounce is shown.
    return_path = next(r.mail_from for r in relay.received if r.recipient == "sent@example.org")
    await mail_inbound(running, return_path, dsn(return_path, "failed", "5.1.1", "550 5.1.1 user unknown"))
    reported, = (await look_up(http, "acme", subscriber_id="s-sent"))["messages"]
    assert (reported["state"], reported["reported_bounces"]) == ("sent", ["hard"])

    skipped, = (await look_up(http, "acme", subscriber_id="s-unsub"))["messages"]
    assert (skipped["state"], skipped["reason"], skipped["final"]) == ("skipped", "member_unsubscribed", True)
    assert skipped["attempts"][0]["smtp_code"] is None  # never handed to the relay

    deferred, = (await look_up(http, "acme", email_sha256=sha256("defer@example.org")))["messages"]
    assert (deferred["state"], deferred["final"]) == ("deferred", False)
    next_attempt = datetime.fromisoformat(deferred["next_attempt_at"])
    assert timedelta(minutes=25) < next_attempt - datetime.now(UTC) <= timedelta(hours=1)  # the delay's jitter
    tried, = deferred["attempts"]
    assert tried["smtp_code"] == 451 and "mailbox busy" in tried["smtp_reply"]

    bounced, = (await look_up(http, "acme", subscriber_id="s-bounce"))["messages"]
    assert (bounced["state"], bounced["bounce_class"], bounced["attempts"][0]["smtp_code"]) == ("bounced", "hard", 550)
    assert "bounce@example.org" not in repr(bounced)

    # Another account, suspended before its campaign: the message is held, and says by what.
    await world.open_account("beta")
    await world.add_list("beta", "news", [("b-held", "held@example.org")])
    await world.publish(AccountSuspended(account_id="beta", producer="compliance", payload={
        "metric": "hard_bounce_rate", "value": 0.09, "threshold": 0.08, "reason": "hard bounces 9% >= 8%"}))
    await eventually(lambda: store.accounts(["beta"]), lambda a: "beta" in a and a["beta"].suspended,
                     what="beta's suspension stored")
    await world.publish(campaign_queued("beta", "c9"))
    await world.wait_for(lambda es: any(h.account_id == "beta" for h in held(es, "account_suspended")),
                         "c9 held by the suspension")
    held_message, = (await look_up(http, "beta", subscriber_id="b-held"))["messages"]
    assert (held_message["campaign_id"], held_message["state"], held_message["held_by"]) == (
        "c9", "held", "account_suspended")
    assert held_message["reason"] == "account suspended: hard bounces 9% >= 8%" and held_message["attempts"] == []

    # beta's subscriber is nobody in acme, by id or by address.
    for person in ({"subscriber_id": "b-held"}, {"email_sha256": sha256("held@example.org")}):
        answer = await http.get("/v1/staff/accounts/acme/messages", params=person, headers=STAFF)
        assert (answer.status_code, answer.json()["type"]) == (404, "https://herald.dev/problems/unknown_subscriber")

    # Every look-up is on the account's events, with who looked and whom they looked up, never an address.
    recorded = await world.wait_for(lambda es: sum(isinstance(e, StaffViewedMessages) for e in es) == 9,
                                    "the nine look-ups audited")
    audited = [(e.account_id, e.payload.staff, e.payload.subscriber_id, e.payload.email_sha256)
               for e in recorded if isinstance(e, StaffViewedMessages)]
    # acme's and beta's events may be on different partitions: each account's in the order looked up
    assert [a for a in audited if a[0] == "acme"] == [
        ("acme", "rita", "s-unsub", None), ("acme", "rita", None, sha256("sent@example.org")),
        ("acme", "rita", "s-sent", None), ("acme", "rita", "s-unsub", None),
        ("acme", "rita", None, sha256("defer@example.org")), ("acme", "rita", "s-bounce", None),
        ("acme", "rita", "b-held", None), ("acme", "rita", None, sha256("held@example.org"))]
    assert [a for a in audited if a[0] != "acme"] == [("beta", "rita", "b-held", None)]
    assert not [e for e in recorded if isinstance(e, StaffViewedMessages) and "@" in e.model_dump_json()]


async def test_only_staff_may_look_up_and_a_confirmation_email_is_found_under_its_subscriber(
        start_delivery: Any, relay: Any, world: World) -> None:
    """A customer's API key is no staff credential; a look-up of an account delivery never saw shows nothing and is
    not audited; a confirmation email is keyed under its subscriber (`recipient_jobs`), so it is found too."""
    running = await start_delivery(**LOOK_UPS)
    await world.open_account("acme")
    await world.publish(*confirmation_request("acme", "s1", "anna@example.org"))
    await eventually(relay.mailed, lambda r: "anna@example.org" in r, what="the confirmation email")
    path = "/v1/staff/accounts/acme/messages"
    for headers in ({}, {"Authorization": f"Bearer {new_api_key()[1]}"}):
        answer = await running.http.get(path, params={"subscriber_id": "s1"}, headers=headers)
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
    unknown = await running.http.get("/v1/staff/accounts/nobody/messages", params={"subscriber_id": "s1"},
                                     headers=STAFF)
    assert (unknown.status_code, unknown.json()["type"]) == (404, "https://herald.dev/problems/unknown_account")
    # The audience consumer may fold anna's membership after the confirmation went: 404 until it has.
    answer = await eventually(lambda: running.http.get(path, params={"email_sha256": sha256("anna@example.org")},
                                                       headers=STAFF),
                              lambda a: a.status_code == 200 and [c["state"] for c in a.json()["confirmations"]] == [
                                  "sent"], what="the confirmation found, recorded sent")
    found = MessagesOut.model_validate(answer.json()).model_dump(mode="json")
    confirmation, = found["confirmations"]
    assert (confirmation["kind"], confirmation["subscriber_id"], confirmation["campaign_id"]) == (
        "confirmation", "s1", None)
    assert found["messages"] == [] and "anna@example.org" not in repr(found)
    # Only look-ups of a known account are audited.
    audited = await world.wait_for(lambda es: any(isinstance(e, StaffViewedMessages) for e in es), "the look-up")
    assert {e.account_id for e in audited if isinstance(e, StaffViewedMessages)} == {"acme"}
