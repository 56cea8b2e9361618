"""Subscribing through the API and the hosted pages, on the real stack: single and double opt-in,
confirmation links (valid, used, forged, expired), idempotency, and the events recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from prometheus_client import REGISTRY

from herald_shared.contract.subscriptions import ConfirmationRequested, SubscriberAdded, SubscriberConfirmed
from herald_shared.links import CONFIRM_SALT
from tests.integration.subscriptions.conftest import SECRET, Platform


async def test_single_opt_in_subscriber_is_active_at_once(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list(opt_in="single", custom_fields=[{"name": "city", "kind": "text"}])
    labels = {"channel": "api", "opt_in": "single"}
    before = REGISTRY.get_sample_value("herald_subscriptions_subscribes_total", labels) or 0.0
    response = await acme.subscribe("Anna@Example.com", first_name="Anna", custom_fields={"city": "Riga"})
    assert REGISTRY.get_sample_value("herald_subscriptions_subscribes_total", labels) == before + 1
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["status"], body["outcome"], body["email"]) == ("active", "active", "anna@example.com")
    assert body["consent"]["source"] == "api" and body["consent"]["method"] == "signup form on acme.example"

    events = [e for e in await platform.events() if e.type.startswith("Subscriber")]
    assert [e.type for e in events] == ["SubscriberAdded", "SubscriberConfirmed"]
    added = events[0]
    assert isinstance(added, SubscriberAdded) and added.account_id == "acme"
    assert added.payload.custom_fields == {"city": "Riga"} and added.payload.opt_in == "single"


async def test_subscribing_twice_is_idempotent(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list(opt_in="single")
    first = await acme.subscribe("anna@example.com")
    again = await acme.subscribe("ANNA@example.com")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["outcome"] == "already_active"
    assert again.json()["subscriber_id"] == first.json()["subscriber_id"]
    assert [e.type for e in await platform.events()].count("SubscriberAdded") == 1


async def test_double_opt_in_is_pending_until_the_confirmation_link_is_opened(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list(opt_in="double")
    pending = await acme.subscribe("ben@example.com", first_name="Ben")
    assert pending.status_code == 201 and pending.json()["status"] == "pending"
    request = next(e for e in await platform.events() if isinstance(e, ConfirmationRequested))
    assert request.payload.greeting_name == "Ben" and request.payload.company_name == "acme Ltd"
    link = urlsplit(str(request.payload.confirm_url)).path

    opened = await platform.pages.get(link)  # a mail scanner or the person opening the link
    assert opened.status_code == 200 and "Confirm subscription</button>" in opened.text
    assert (await acme.http.get(f"/v1/subscribers/{pending.json()['subscriber_id']}")).json()["status"] == "pending"
    confirmed = await platform.submit(link)
    assert confirmed.status_code == 200 and "Subscription confirmed" in confirmed.text
    subscriber = await acme.http.get(f"/v1/subscribers/{pending.json()['subscriber_id']}")
    assert subscriber.json()["status"] == "active"
    confirmation = next(e for e in await platform.events() if isinstance(e, SubscriberConfirmed))
    assert confirmation.payload.method == "double_opt_in" and confirmation.payload.ip == "203.0.113.7"

    used = await platform.submit(link)
    assert used.status_code == 200 and "Already confirmed" in used.text
    assert [e.type for e in await platform.events()].count("SubscriberConfirmed") == 1


async def test_forged_and_expired_confirmation_links_change_nothing(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list(opt_in="double")
    subscriber_id = (await acme.subscribe("cara@example.com")).json()["subscriber_id"]

    forged = URLSafeTimedSerializer("not-the-secret-at-all", salt=CONFIRM_SALT).dumps({"a": "acme", "s": subscriber_id})
    response = await platform.pages.post(f"/confirm/{forged}")
    assert response.status_code == 400 and "not valid" in response.text
    assert (await platform.pages.get(f"/confirm/{forged}")).status_code == 400

    class EightDaysAgo(TimestampSigner):
        def get_timestamp(self) -> int:
            return int((datetime.now(UTC) - timedelta(days=8)).timestamp())

    expired = URLSafeTimedSerializer(SECRET, salt=CONFIRM_SALT, signer=EightDaysAgo)
    response = await platform.pages.post(f"/confirm/{expired.dumps({'a': 'acme', 's': subscriber_id})}")
    assert response.status_code == 410 and "expired" in response.text
    assert (await acme.http.get(f"/v1/subscribers/{subscriber_id}")).json()["status"] == "pending"
    assert "SubscriberConfirmed" not in [e.type for e in await platform.events()]


async def test_hosted_form_subscribes_with_consent_evidence(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list(opt_in="double")
    form = await platform.pages.get("/subscribe/acme/news")
    assert form.status_code == 200 and '<label for="email">' in form.text
    response = await platform.submit("/subscribe/acme/news", {"email": "dan@example.com", "consent": "yes"},
                                     headers={"User-Agent": "TestBrowser/1.0"})
    assert response.status_code == 200 and "Check your inbox" in response.text
    added = next(e for e in await platform.events() if isinstance(e, SubscriberAdded))
    assert added.payload.consent.source == "form"
    assert (added.payload.consent.ip, added.payload.consent.user_agent) == ("203.0.113.7", "TestBrowser/1.0")
    no_consent = await platform.submit("/subscribe/acme/news", {"email": "eve@example.com"})
    assert no_consent.status_code == 422


async def test_the_hosted_form_tells_a_person_about_a_bad_address_in_plain_words(platform: Platform) -> None:
    """The form page speaks to a person; the API keeps its exact message for developers."""
    acme = await platform.tenant("acme")
    await acme.create_list(opt_in="double")
    for address in ("anna.example.com", "anna@mail.test"):  # no @; a special-use domain
        refused = await platform.submit("/subscribe/acme/news", {"email": address, "consent": "yes"})
        assert refused.status_code == 422
        assert "Please enter a valid email address, like name@example.com." in refused.text
        assert "dot-atom" not in refused.text and "this API" not in refused.text and address not in refused.text
    api = await acme.subscribe("anna.example.com")
    assert api.status_code == 422
    assert api.json()["errors"] == [{"location": "body.email", "message": (
        "Value error, not an email address this API takes: an ASCII dot-atom local part (at most 64 characters) "
        "@ a domain name whose top level is not special-use")}]
    assert [e for e in await platform.events() if isinstance(e, SubscriberAdded)] == []


async def test_bad_requests_get_problem_documents(platform: Platform) -> None:
    """What the request schema refuses is a 422 naming the field; what the list's state refuses is a 409."""
    acme = await platform.tenant("acme")
    await acme.create_list(opt_in="single", custom_fields=[{"name": "age", "kind": "number"}])
    cases = [
        (await acme.subscribe("not-an-address"), 422, "invalid_request", "body.email"),
        (await acme.subscribe("x@mail.test"), 422, "invalid_request", "body.email"),  # special-use (RFC 6761)
        (await acme.http.post("/v1/lists/news/subscribers", json={"email": "x@example.com"}), 422,
         "invalid_request", "body.consent"),
        (await acme.subscribe("x@example.com", first_name="A\x00"), 422, "invalid_request", "body.first_name"),
        (await acme.subscribe("x@example.com", custom_fields={"age": "old"}), 409, "invalid_custom_field", None),
        (await acme.subscribe("x@example.com", custom_fields={"shoe": 42}), 409, "invalid_custom_field", None),
        (await acme.subscribe("x@example.com", list_id="nope"), 404, "list_not_found", None),
        (await acme.http.post("/v1/lists", json={"name": "x", "surprise": 1}), 422, "invalid_request",
         "body.surprise"),
        (await acme.http.post("/v1/lists", json={"list_id": "news", "name": "Other"}), 409, "list_already_exists",
         None),
        (await acme.http.get("/v1/gdpr/export", params={"email": ""}), 422, "invalid_request", "query.email"),
    ]
    for response, status, code, location in cases:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"].endswith(f"/{code}")
        if location is not None:
            assert location in [e["location"] for e in response.json()["errors"]], response.text
