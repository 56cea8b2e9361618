"""Sending domains through the API on the real stack, DNS asked over UDP (the test's own server): a domain is
added, its TXT record looked up when asked for (missing, wrong, then published), and once verified campaigns go
From it and its subdomains, From any other domain never (422 sender_unverified); DNS that does not answer is a
503 within the timeout; an operator's shared domain needs no verification; a domain removed after a submission
sends the campaign back to its author at its time, unsent."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from herald_shared.contract.campaigns import (
    CampaignQueued,
    CampaignReturned,
    SendingDomainAdded,
    SendingDomainRemoved,
    SendingDomainVerified,
)
from tests.conftest import eventually

from .conftest import Platform, draft


def problem_type(answer: Any) -> str:
    return str(answer.json()["type"]).rsplit("/", 1)[1]


async def test_a_domain_is_verified_by_its_txt_record_then_campaigns_go_from_it_and_no_other(
        platform: Platform) -> None:
    acme = await platform.tenant("acc-dom", "news", account="paid", sending_domains=())
    refused = await acme.http.post("/v1/campaigns", json=draft(from_email="news@acme.example"))
    assert refused.status_code == 422 and problem_type(refused) == "sender_unverified", refused.text
    [error] = refused.json()["errors"]
    assert error["location"] == "body.from_email" and "POST /v1/sending-domains" in error["message"]

    added = await acme.http.post("/v1/sending-domains", json={"domain": "Acme.Example."})
    assert added.status_code == 201, added.text
    body = added.json()
    token = body["record"]["value"].removeprefix("herald-verification=")
    assert (body["domain"], body["status"], body["verified_at"]) == ("acme.example", "pending", None)
    assert body["record"] == {"type": "TXT", "name": "_herald-verification.acme.example",
                              "value": f"herald-verification={token}"}
    assert len(token) == 26 and token.isalnum()  # 128 bits, base32
    # Pending: the From is still refused, and the refusal names the record to publish.
    pending = await acme.http.post("/v1/campaigns", json=draft())
    assert problem_type(pending) == "sender_unverified" and body["record"]["value"] in pending.json()["detail"]

    # Nothing published yet: the name does not exist.
    missing = await acme.http.post("/v1/sending-domains/acme.example/verification")
    assert missing.status_code == 409 and problem_type(missing) == "verification_failed", missing.text
    assert "NXDOMAIN" in missing.json()["detail"] and missing.json()["found"] == []
    assert missing.json()["record"] == body["record"]
    assert "_herald-verification.acme.example" in platform.dns.asked
    # Another record at that name (a typo, someone else's token): what was found is said.
    platform.dns.publish("acme.example", "herald-verification=somethingelse")
    platform.dns.publish("acme.example", "v=spf1 -all")
    wrong = await acme.http.post("/v1/sending-domains/acme.example/verification")
    assert wrong.status_code == 409 and sorted(wrong.json()["found"]) == ["herald-verification=somethingelse",
                                                                          "v=spf1 -all"]
    assert "none is" in wrong.json()["detail"]
    # Published as the answer said: verified.
    platform.dns.publish("acme.example", body["record"]["value"])
    verified = await acme.http.post("/v1/sending-domains/acme.example/verification")
    assert verified.status_code == 200, verified.text
    assert verified.json()["status"] == "verified" and verified.json()["verified_at"] is not None
    asked = len(platform.dns.asked)
    assert (await acme.http.post("/v1/sending-domains/acme.example/verification")).json()["status"] == "verified"
    assert len(platform.dns.asked) == asked  # verified already: DNS is not asked again

    for sender in ("news@acme.example", "hello@news.acme.example"):  # the domain and a subdomain
        created = await acme.http.post("/v1/campaigns", json=draft(from_email=sender))
        assert created.status_code == 201, (sender, created.text)
    for sender in ("news@evil-acme.example", "news@acme.example.evil.example", "news@other.example"):
        other = await acme.http.post("/v1/campaigns", json=draft(from_email=sender))
        assert other.status_code == 422 and problem_type(other) == "sender_unverified", (sender, other.text)
        assert sender.rpartition("@")[2] in other.json()["detail"]

    listed = (await acme.http.get("/v1/sending-domains")).json()
    assert [(d["domain"], d["status"]) for d in listed["items"]] == [("acme.example", "verified")]
    assert listed["next_cursor"] is None
    assert (await acme.http.get("/v1/sending-domains/ACME.example")).json() == verified.json()
    events = [e for e in await platform.events() if e.account_id == "acc-dom"]
    [added_event] = [e for e in events if isinstance(e, SendingDomainAdded)]
    [verified_event] = [e for e in events if isinstance(e, SendingDomainVerified)]
    assert (added_event.payload.domain, added_event.payload.token) == ("acme.example", token)
    assert verified_event.payload.record.model_dump() == body["record"]


async def test_a_subdomain_verified_does_not_cover_its_parent_and_a_unicode_domain_is_kept_as_its_a_labels(
        platform: Platform) -> None:
    acme = await platform.tenant("acc-sub", "news", account="paid", sending_domains=("mail.acme.example",))
    assert (await acme.http.post("/v1/campaigns", json=draft(from_email="a@mail.acme.example"))).status_code == 201
    parent = await acme.http.post("/v1/campaigns", json=draft(from_email="a@acme.example"))
    assert problem_type(parent) == "sender_unverified"
    idn = await platform.verified(acme.http, "Bücher.de")
    assert (idn["domain"], idn["record"]["name"]) == ("xn--bcher-kva.de", "_herald-verification.xn--bcher-kva.de")
    assert (await acme.http.get("/v1/sending-domains/bücher.de")).json()["status"] == "verified"


async def test_what_cannot_be_a_sending_domain_is_refused_and_tenants_never_share_one(platform: Platform) -> None:
    acme = await platform.tenant("acc-dom-a", "news", account="paid")  # acme.example verified
    other = await platform.tenant("acc-dom-b", "news", account="paid", sending_domains=())
    for domain, status, kind in (("gmail.com", 422, "sender_refused"), ("Inbox.LV", 422, "sender_refused"),
                                 ("acme", 422, "invalid_domain"), ("acme.test", 422, "invalid_domain"),
                                 ("bad_name.example", 422, "invalid_domain"), ("1.2.3.4", 422, "invalid_domain"),
                                 ("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 40 + ".example", 422,
                                  "invalid_domain"),
                                 ("acme.example", 409, "sending_domain_exists")):
        answer = await acme.http.post("/v1/sending-domains", json={"domain": domain})
        assert answer.status_code == status and problem_type(answer) == kind, (domain, answer.text)
    # A path naming no domain at all names no sending domain: 404, as for one not added.
    assert problem_type(await acme.http.get("/v1/sending-domains/bad_name.example")) == "sending_domain_not_found"
    # acme's verified domain is nobody else's: not listed, not readable, not removable, not a sender for them.
    for method, path in (("get", "/v1/sending-domains/acme.example"),
                         ("post", "/v1/sending-domains/acme.example/verification"),
                         ("delete", "/v1/sending-domains/acme.example")):
        answer = await other.http.request(method, path)
        assert answer.status_code == 404 and problem_type(answer) == "sending_domain_not_found", (method, path)
    assert (await other.http.get("/v1/sending-domains")).json()["items"] == []
    assert problem_type(await other.http.post("/v1/campaigns", json=draft())) == "sender_unverified"
    # Both may prove control of the same domain (an agency and its client), each with its own token.
    mine = (await acme.http.get("/v1/sending-domains/acme.example")).json()["record"]["value"]
    theirs = await platform.verified(other.http, "acme.example")
    assert theirs["record"]["value"] != mine
    assert (await other.http.post("/v1/campaigns", json=draft())).status_code == 201
    # Removed: gone, and a new addition gets a new token.
    assert (await acme.http.delete("/v1/sending-domains/acme.example")).status_code == 204
    assert (await acme.http.get("/v1/sending-domains/acme.example")).status_code == 404
    assert (await acme.http.delete("/v1/sending-domains/acme.example")).status_code == 404
    assert problem_type(await acme.http.post("/v1/campaigns", json=draft())) == "sender_unverified"
    again = await acme.http.post("/v1/sending-domains", json={"domain": "acme.example"})
    assert again.status_code == 201 and again.json()["status"] == "pending"
    assert again.json()["record"]["value"] != mine
    assert [type(e) for e in await platform.events() if isinstance(e, SendingDomainRemoved)] == [SendingDomainRemoved]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"HERALD_DNS_TIMEOUT_SECONDS": 1, "HERALD_CAMPAIGNS_SHARED_SENDING_DOMAINS": "herald-shared.example"}


async def test_dns_that_does_not_answer_is_a_503_within_the_timeout_and_changes_nothing(
        platform: Platform) -> None:
    acme = await platform.tenant("acc-dns", "news", account="paid", sending_domains=())
    record = (await acme.http.post("/v1/sending-domains", json={"domain": "acme.example"})).json()["record"]
    platform.dns.publish("acme.example", record["value"])
    platform.dns.silent = True
    started = time.monotonic()
    away = await acme.http.post("/v1/sending-domains/acme.example/verification")
    took = time.monotonic() - started
    assert away.status_code == 503 and problem_type(away) == "dns_unavailable", away.text
    assert away.headers["Retry-After"] and "within 1 s" in away.json()["detail"]
    assert 0.9 <= took < 3, took  # HERALD_DNS_TIMEOUT_SECONDS=1, and the request's own round trips
    assert platform.dns.asked.count(record["name"]) >= 1
    assert (await acme.http.get("/v1/sending-domains/acme.example")).json()["status"] == "pending"
    # The domain's own name servers failing (the resolver's SERVFAIL) is the domain's answer: 409, said so.
    platform.dns.silent = False
    platform.dns.failing.add(record["name"])
    failed = await acme.http.post("/v1/sending-domains/acme.example/verification")
    assert failed.status_code == 409 and "SERVFAIL" in failed.json()["detail"], failed.text
    platform.dns.failing.clear()
    assert (await acme.http.post("/v1/sending-domains/acme.example/verification")).json()["status"] == "verified"


async def test_a_name_server_nobody_listens_on_is_a_503_not_a_crash(platform: Platform,
                                                                    dns_server: Any) -> None:
    acme = await platform.tenant("acc-dns-gone", "news", account="paid", sending_domains=())
    assert (await acme.http.post("/v1/sending-domains", json={"domain": "acme.example"})).status_code == 201
    assert dns_server.transport is not None
    dns_server.transport.close()  # the port is closed now: the kernel answers "port unreachable"
    started = time.monotonic()
    away = await acme.http.post("/v1/sending-domains/acme.example/verification")
    assert away.status_code == 503 and problem_type(away) == "dns_unavailable", away.text
    assert time.monotonic() - started < 3


async def test_a_shared_domain_and_its_subdomains_need_no_verification(platform: Platform) -> None:
    acme = await platform.tenant("acc-shared", "news", account="paid", sending_domains=())
    for sender in ("news@herald-shared.example", "acme@mail.herald-shared.example"):
        created = await acme.http.post("/v1/campaigns", json=draft(from_email=sender))
        assert created.status_code == 201, (sender, created.text)
    assert problem_type(await acme.http.post("/v1/campaigns", json=draft())) == "sender_unverified"
    assert (await acme.http.get("/v1/sending-domains")).json()["items"] == []  # shared ones are not the account's


async def test_a_domain_removed_after_submission_sends_the_campaign_back_at_its_time_unsent(
        platform: Platform) -> None:
    acme = await platform.tenant("acc-removed", "news", account="paid")
    assert (await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c1"})).status_code == 201
    assert (await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c2"})).status_code == 201
    due = datetime.now(UTC) + timedelta(seconds=2)
    for campaign in ("c1", "c2"):
        submitted = await acme.http.post(f"/v1/campaigns/{campaign}/submission",
                                         json={"send_at": due.isoformat()} if campaign == "c1" else {})
        assert submitted.status_code == 200 and submitted.json()["status"] == "scheduled", submitted.text
    # c2 went at once; c1 waits for its time, and its domain is removed meanwhile.
    await eventually(lambda: acme.http.get("/v1/campaigns/c2"), lambda r: r.json()["status"] == "queued",
                     what="c2 queued")
    assert (await acme.http.delete("/v1/sending-domains/acme.example")).status_code == 204
    returned = await eventually(lambda: acme.http.get("/v1/campaigns/c1"), lambda r: r.json()["status"] == "draft",
                                within=30, what="c1 back to draft at its time")
    body = returned.json()
    assert body["returned"]["reason"] == "sender_unverified" and "acme.example" in body["returned"]["detail"]
    assert body["send_at"] is None and datetime.fromisoformat(body["returned"]["at"]) >= due
    events = [e for e in await platform.events() if e.account_id == "acc-removed"]
    assert [e.payload.campaign_id for e in events if isinstance(e, CampaignQueued)] == ["c2"]
    [back] = [e for e in events if isinstance(e, CampaignReturned)]
    assert back.payload.campaign_id == "c1"
    # The draft is the author's again: submitting it needs a verified domain, and then it goes.
    for method, path, payload in (("post", "/v1/campaigns/c1/submission", {}),
                                  ("post", "/v1/campaigns/c1/tests", {"recipients": ["me@acme.example"]})):
        answer = await acme.http.request(method, path, json=payload)
        assert answer.status_code == 422 and problem_type(answer) == "sender_unverified", answer.text
    await platform.verified(acme.http, "acme.example")
    again = await acme.http.post("/v1/campaigns/c1/submission", json={})
    assert again.status_code == 200 and again.json()["returned"] is None, again.text
    await eventually(lambda: acme.http.get("/v1/campaigns/c1"), lambda r: r.json()["status"] == "queued",
                     what="c1 queued once submitted again")
