"""One-click unsubscribe (RFC 8058) and the page with a button; suppression from delivery's bounces and
complaints; a suppressed address comes back only through the person's fresh double opt-in."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from herald_shared.contract.delivery import ComplaintReceived, MessageBounced
from herald_shared.contract.subscriptions import ConfirmationRequested, SubscriberSuppressed, SubscriberUnsubscribed
from herald_shared.kafka import DLQ_REASON, read_from_start
from tests.conftest import eventually
from tests.integration.helpers import form_token
from tests.integration.subscriptions.conftest import SECRET, Platform, Tenant


async def _member(tenant: Tenant, subscriber_id: str) -> dict[str, object]:
    return (await tenant.http.get(f"/v1/subscribers/{subscriber_id}")).json()  # type: ignore[no-any-return]


async def test_one_click_unsubscribe_records_the_campaign_and_is_idempotent(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list()
    anna = (await acme.subscribe("anna@example.com")).json()["subscriber_id"]
    link = urlsplit(platform.service.service.links.unsubscribe_url("acme", anna, "c1", "m-c1-anna")).path

    page = await platform.pages.get(link)
    assert page.status_code == 200 and '<button type="submit"' in page.text
    assert (await _member(acme, anna))["status"] == "active"  # opening the page changes nothing

    one_click = await platform.pages.post(link, data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200 and one_click.text == "Unsubscribed."
    again = await platform.pages.post(link, data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200
    member = await _member(acme, anna)
    assert (member["status"], member["unsubscribe_source"]) == ("unsubscribed", "one_click")

    unsubscribes = [e for e in await platform.events() if isinstance(e, SubscriberUnsubscribed)]
    assert len(unsubscribes) == 1
    assert (unsubscribes[0].payload.campaign_id, unsubscribes[0].payload.message_id) == ("c1", "m-c1-anna")


async def test_unsubscribe_page_button_and_forged_links(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list()
    ben = (await acme.subscribe("ben@example.com")).json()["subscriber_id"]
    link = urlsplit(platform.service.service.links.unsubscribe_url("acme", ben, "c2")).path
    done = await platform.submit(link, {"confirm": "yes"})
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    assert (await _member(acme, ben))["unsubscribe_source"] == "unsubscribe_page"
    forged = await platform.pages.post(link[:-3] + "abc", data={"List-Unsubscribe": "One-Click"})
    assert forged.status_code == 400


async def _dead_letters(platform: Platform) -> list[str]:
    reasons = []
    async for records in read_from_start(platform.settings, [platform.settings.topics.dead_letter("herald.delivery")]):
        reasons += [dict(r.headers)[DLQ_REASON].decode() for r in records]
    return reasons


async def test_hard_bounce_suppresses_the_address_for_the_whole_account(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list("news")
    await acme.create_list("offers")
    anna = (await acme.subscribe("anna@example.com", list_id="news")).json()["subscriber_id"]
    anna_offers = (await acme.subscribe("anna@example.com", list_id="offers")).json()["subscriber_id"]
    await platform.publisher.publish_many([
        MessageBounced(account_id="acme", producer="delivery", payload={  # type: ignore[arg-type]
            "message_id": "m1", "campaign_id": "c1", "subscriber_id": anna, "list_id": "news", "bounce_class": "soft",
            "diagnostic": "mailbox full", "source": "dsn"}),
        MessageBounced(account_id="acme", producer="delivery", payload={  # type: ignore[arg-type]
            "message_id": "m2", "campaign_id": "c1", "subscriber_id": anna, "list_id": "news", "bounce_class": "hard",
            "smtp_code": 550, "enhanced_status_code": "5.1.1", "diagnostic": "user unknown", "source": "smtp_reply"}),
        MessageBounced(account_id="acme", producer="delivery", payload={  # type: ignore[arg-type]
            "message_id": "m3", "campaign_id": "c1", "subscriber_id": "s-nobody", "bounce_class": "hard",
            "diagnostic": "user unknown", "source": "dsn"}),
    ])
    await eventually(lambda: _member(acme, anna_offers), lambda m: m["status"] == "suppressed",
                     what="suppression on every list of the account")
    assert (await _member(acme, anna))["status"] == "suppressed"
    suppressed = [e for e in await platform.events() if isinstance(e, SubscriberSuppressed)]
    assert len(suppressed) == 1 and suppressed[0].payload.reason == "hard_bounce"
    assert suppressed[0].payload.message_id == "m2"

    reasons = await eventually(lambda: _dead_letters(platform), lambda r: len(r) == 1, what="unknown subscriber")
    assert reasons == ["rejected: MessageBounced for unknown subscriber 's-nobody' of account 'acme'"]

    refused = await acme.subscribe("anna@example.com", list_id="news")
    assert refused.status_code == 409 and refused.json()["type"].endswith("/suppressed")
    new_list = await acme.create_list("third")
    assert new_list["list_id"] == "third"
    assert (await acme.subscribe("anna@example.com", list_id="third")).status_code == 409


async def test_complaint_suppresses_and_unsubscribes_and_only_a_fresh_double_opt_in_lifts_it(
        platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list("news", opt_in="single")
    cara = (await acme.subscribe("cara@example.com")).json()["subscriber_id"]
    complaint = ComplaintReceived(account_id="acme", producer="delivery", payload={  # type: ignore[arg-type]
        "message_id": "m9", "campaign_id": "c7", "subscriber_id": cara, "list_id": "news", "feedback_type": "abuse",
        "reporting_domain": "mail.example.net"})
    await platform.publisher.publish_many([complaint, complaint])  # a redelivered report
    await eventually(lambda: _member(acme, cara), lambda m: m["status"] == "suppressed", what="suppressed")
    events = await platform.events()
    unsubscribes = [e for e in events if isinstance(e, SubscriberUnsubscribed)]
    assert len(unsubscribes) == 1
    assert (unsubscribes[0].payload.source, unsubscribes[0].payload.campaign_id) == ("complaint", "c7")
    assert unsubscribes[0].causation_id == complaint.event_id
    assert [e.type for e in events].count("SubscriberSuppressed") == 1

    # Who complained is never disclosed (PRODUCT.md): the complainer reads as a hard-bounced member does, with
    # no cause, no unsubscribe of the complaint, and none in the GDPR export either.
    dan = (await acme.subscribe("dan@example.com")).json()["subscriber_id"]
    await platform.publisher.publish(MessageBounced(account_id="acme", producer="delivery", payload={  # type: ignore[arg-type]
        "message_id": "m8", "campaign_id": "c7", "subscriber_id": dan, "list_id": "news", "bounce_class": "hard",
        "diagnostic": "user unknown", "source": "dsn"}))
    bounced = await eventually(lambda: _member(acme, dan), lambda m: m["status"] == "suppressed", what="dan suppressed")
    complained = await _member(acme, cara)
    assert complained.keys() == bounced.keys()
    assert not {"suppressed_reason", "unsubscribe_source", "unsubscribe_campaign_id", "unsubscribed_at"} & \
        complained.keys()
    export = (await acme.http.get("/v1/gdpr/export", params={"email": "cara@example.com"})).json()
    assert "complaint" not in str(export) and export["suppression"].keys() == {"suppressed_at"}
    assert [m["status"] for m in export["memberships"]] == ["suppressed"]
    # Their activity too: the hard bounce and the complaint are each one neutral `suppressed` entry.
    entries = []
    for email in ("cara@example.com", "dan@example.com"):
        held = await eventually(lambda email=email: _export(acme, email),  # type: ignore[misc]
                                lambda e: len(e["activity"]) == 1, what=f"{email}'s activity")
        entries += [{k: v for k, v in entry.items() if k not in ("at", "subscriber_id")} for entry in held["activity"]]
    assert entries == [{"type": "suppressed", "kind": "campaign", "list_id": "news"}] * 2

    # The person subscribes again on the hosted form: even on a single opt-in list they must confirm.
    form = await platform.submit("/subscribe/acme/news", {"email": "cara@example.com", "consent": "yes"})
    assert "Check your inbox" in form.text
    assert (await _member(acme, cara))["status"] == "suppressed"
    request = [e for e in await platform.events() if isinstance(e, ConfirmationRequested)][-1]
    confirmed = await platform.submit(urlsplit(str(request.payload.confirm_url)).path)
    assert "Subscription confirmed" in confirmed.text
    assert (await _member(acme, cara))["status"] == "active"

    # Back on the list, a new hard bounce suppresses the person again.
    await platform.publisher.publish(MessageBounced(account_id="acme", producer="delivery", payload={  # type: ignore[arg-type]
        "message_id": "m10", "campaign_id": "c8", "subscriber_id": cara, "bounce_class": "hard",
        "diagnostic": "user unknown", "source": "dsn"}))
    await eventually(lambda: _member(acme, cara), lambda m: m["status"] == "suppressed", what="suppressed again")


async def test_hosted_forms_refuse_posts_without_their_token_or_from_another_site(platform: Platform) -> None:
    """CSRF: the confirm, unsubscribe and preference forms need their page's token and a same-site post; only the
    RFC 8058 one-click POST needs neither (mail providers send it from their servers)."""
    acme = await platform.tenant("acme")
    await acme.create_list("news", opt_in="double")
    await acme.create_list("offers")
    pending = (await acme.subscribe("nora@example.com")).json()["subscriber_id"]
    active = (await acme.subscribe("nora@example.com", list_id="offers")).json()["subscriber_id"]
    confirm = urlsplit(platform.service.service.links.confirm_url("acme", pending)[0]).path
    unsubscribe = urlsplit(platform.service.service.links.unsubscribe_url("acme", active, "c9")).path
    preferences = unsubscribe.replace("/unsubscribe/", "/preferences/")
    other_site = {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}

    for path, data in ((confirm, {}), (unsubscribe, {"confirm": "yes"}), (preferences, {"list_id": "offers"})):
        without = await platform.pages.post(path, data=data)
        from_elsewhere = await platform.submit(path, data, headers=other_site)
        another_forms = await platform.pages.post(path, data={**form_token(SECRET, "/subscribe/acme/news"), **data})
        assert (without.status_code, from_elsewhere.status_code, another_forms.status_code) == (403, 403, 403), path
        assert "Reload the page" in without.text
    assert (await _member(acme, pending))["status"] == "pending"
    assert (await _member(acme, active))["status"] == "active"

    # The page's own form, served to the person, works; and one-click works from anywhere, once.
    served = await platform.pages.get(confirm)
    token = re.search(r'name="form_token" value="([^"]+)"', served.text)
    assert token is not None
    assert "Subscription confirmed" in (await platform.pages.post(confirm, data={"form_token": token[1]})).text
    one_click = await platform.pages.post(unsubscribe, data={"List-Unsubscribe": "One-Click"}, headers=other_site)
    assert one_click.status_code == 200 and (await _member(acme, active))["status"] == "unsubscribed"
    assert [e.type for e in await platform.events()].count("SubscriberUnsubscribed") == 1


async def _export(tenant: Tenant, email: str) -> dict[str, Any]:
    response = await tenant.http.get("/v1/gdpr/export", params={"email": email})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]
