"""A sending domain's DKIM key (delivery's DkimKeyCreated), pure: folded into the domain it was made for (not an
earlier addition of the same name), its record shown, looked for in DNS by the verification, which records
SendingDomainDkimVerified when DNS holds it; a domain verified now whose DKIM record is missing stays usable,
its DKIM pending; one verified before answers 409 saying what DNS holds."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from herald_campaigns import domain
from herald_campaigns.api import sending_domain_out
from herald_campaigns.domain import DnsAnswer
from herald_shared.contract.campaigns import SendingDomainDkimVerified, SendingDomainVerified
from herald_shared.contract.delivery import DkimKeyCreated
from herald_shared.contract.envelope import Event

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
TOKEN = "k2n7q4x8r5t3w6y9z2b4c6d8f3"
PUBLIC = base64.b64encode(b"\x30\x82" + bytes(range(256)) + b"public-half").decode()
OTHER = base64.b64encode(b"\x30\x82" + bytes(range(255, -1, -1)) + b"other-half").decode()
RECORD = f"v=DKIM1; k=rsa; p={PUBLIC}"


def added(token: str = TOKEN) -> Event:
    [event] = domain.add_sending_domain("acme", "acme.example", None, token)
    return event.model_copy(update={"occurred_at": NOW})


def key_for(addition: Event, public_key: str = PUBLIC) -> DkimKeyCreated:
    return DkimKeyCreated(account_id="acme", producer="delivery", occurred_at=NOW, payload={  # type: ignore[arg-type]
        "domain": "acme.example", "selector": "herald1", "public_key": public_key,
        "encrypted_private_key": base64.b64encode(b"sealed" * 10).decode(), "encryption_key_id": "0123456789abcdef",
        "sending_domain_added_id": str(addition.event_id)})


def fold(*events: Event, doc: dict[str, Any] | None = None) -> dict[str, Any] | None:
    for event in events:
        doc = domain.evolve_sending_domain(doc, event)
    return doc


def txt(name: str, *texts: str, outcome: str = "answered") -> DnsAnswer:
    return DnsAnswer(name, outcome, texts)  # type: ignore[arg-type]


OWNERSHIP = txt("_herald-verification.acme.example", f"herald-verification={TOKEN}")
DKIM_NAME = "herald1._domainkey.acme.example"


def test_the_key_made_for_the_domain_is_folded_and_its_record_shown_pending() -> None:
    first = added()
    doc = fold(first, key_for(first), key_for(first, OTHER))  # a second event of the addition: the first wins
    assert doc is not None and doc["dkim"] == {"selector": "herald1", "public_key": PUBLIC, "status": "pending",
                                               "verified_at": None}
    shown = sending_domain_out({**doc, "_id": "acme/acme.example"})["dkim"]
    assert shown == {"status": "pending", "selector": "herald1", "verified_at": None,
                     "record": {"type": "TXT", "name": DKIM_NAME, "value": RECORD}}
    assert domain.awaiting_dkim(doc) == domain.dkim_record("acme.example", "herald1", PUBLIC)
    # No key yet (or none made): shown as null, and nothing DKIM to look for.
    assert sending_domain_out({**fold(first), "_id": "x"})["dkim"] is None  # type: ignore[dict-item]
    assert domain.awaiting_dkim(fold(first)) is None


def test_a_key_made_for_an_earlier_addition_of_the_domain_is_not_its_own() -> None:
    first, second = added(), added("z" * 26)
    [removed] = domain.remove_sending_domain(fold(first), "acme.example")
    doc = fold(first, removed, second, key_for(first))
    assert doc is not None and "dkim" not in doc
    assert fold(key_for(first), doc=doc) == doc and fold(key_for(second), doc=doc)["dkim"] is not None  # type: ignore[index]


def test_verification_records_both_records_when_dns_holds_both() -> None:
    first = added()
    doc = fold(first, key_for(first))
    assert doc is not None
    verified, dkim = domain.verify_sending_domain(doc, "acme.example", OWNERSHIP, txt(DKIM_NAME, RECORD))
    assert isinstance(verified, SendingDomainVerified) and isinstance(dkim, SendingDomainDkimVerified)
    assert (dkim.payload.domain, dkim.payload.selector, dkim.payload.public_key) == ("acme.example", "herald1", PUBLIC)
    assert dkim.payload.record.name == DKIM_NAME and dkim.payload.record.value == RECORD
    later = NOW + timedelta(minutes=1)
    doc = fold(verified, dkim.model_copy(update={"occurred_at": later}), doc=doc)
    assert doc is not None and doc["status"] == "verified" and doc["dkim"]["status"] == "verified"
    assert doc["dkim"]["verified_at"] == later and domain.awaiting_dkim(doc) is None
    assert domain.verify_sending_domain(doc, "acme.example", None) == []  # nothing left: DNS is not asked


def test_a_domain_verified_now_without_its_dkim_record_is_verified_and_its_dkim_stays_pending() -> None:
    first = added()
    doc = fold(first, key_for(first))
    [verified] = domain.verify_sending_domain(doc, "acme.example", OWNERSHIP, txt(DKIM_NAME, outcome="no_domain"))
    doc = fold(verified, doc=doc)
    assert doc is not None and doc["status"] == "verified" and doc["dkim"]["status"] == "pending"
    # Verified before: a missing DKIM record is a 409 that says what is there and what to publish.
    with pytest.raises(domain.VerificationFailed) as failed:
        domain.verify_sending_domain(doc, "acme.example", None, txt(DKIM_NAME, "v=DKIM1; k=rsa; p=AAAAold"))
    assert failed.value.http_status == 409 and failed.value.record.name == DKIM_NAME
    assert failed.value.found == ("v=DKIM1; k=rsa; p=AAAAold",) and RECORD in failed.value.detail
    with pytest.raises(domain.DnsUnavailable):
        domain.verify_sending_domain(doc, "acme.example", None, txt(DKIM_NAME, outcome="unreachable"))
    # Published later: found.
    [dkim] = domain.verify_sending_domain(doc, "acme.example", None, txt(DKIM_NAME, RECORD))
    assert isinstance(dkim, SendingDomainDkimVerified)


@pytest.mark.parametrize("published", [
    RECORD,
    f"v=DKIM1;k=rsa;p={PUBLIC}",
    f"p={PUBLIC}",  # v= and k= are optional (rsa by default)
    f"v=DKIM1; p={PUBLIC[:200]} {PUBLIC[200:]}; t=s",  # white space inside p=, as some DNS consoles split it
    f"k=RSA; v=DKIM1; h=sha256; p={PUBLIC}",
])
def test_the_dkim_record_is_found_however_it_is_written(published: str) -> None:
    assert domain.dkim_record_found([published], PUBLIC)


@pytest.mark.parametrize("published", [
    f"v=DKIM1; k=rsa; p={PUBLIC[:-4]}", f"v=DKIM1; k=ed25519; p={PUBLIC}", f"v=DKIM2; p={PUBLIC}", "v=DKIM1; p=",
    f"v=spf1 include:{PUBLIC} -all",
])
def test_another_record_is_not_the_dkim_record(published: str) -> None:
    assert not domain.dkim_record_found([published], PUBLIC)


def test_the_verification_of_another_key_changes_nothing() -> None:
    first = added()
    doc = fold(first, key_for(first))
    [_, dkim] = domain.verify_sending_domain(doc, "acme.example", OWNERSHIP, txt(DKIM_NAME, RECORD))
    other = dkim.model_copy(update={"payload": dkim.payload.model_copy(update={"public_key": OTHER})})
    assert fold(other, doc=doc) == doc
