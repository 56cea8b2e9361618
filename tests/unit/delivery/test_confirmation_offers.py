"""A confirmation email holds only the request to confirm, no advertising (PRODUCT.md "Lists and subscribers"): a
list or company name that carries an offer, a bare domain or a telephone number is not named in its From name,
subject or body ("this list", "this sender" instead), and plain names still are."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest

from herald_delivery.domain import AccountState, plain_label
from tests.unit.delivery.helpers import T0, Relay, sender

OFFER_LIST = "Half price on all shoes at shoedeals.example - today only"
OFFER_COMPANY = "Acme Shoes - 2 for 1 all week, call 555 0100"


@pytest.mark.parametrize("name", [
    OFFER_LIST, OFFER_COMPANY,
    # each rule alone
    "shoedeals.example", "Booking.com", "Grāmatas bücher.de", "Acme at xn--bcher-kva.example",
    "Call 555 0100", "+371 2000 0000", "Acme (555) 010-0100", "Acme 67 123 456",
    "Summer sale", "FREE shipping club", "Shoes 20 off", "Discount club", "Cheap flights", "Half price Tuesdays",
    "Today only", "Buy one get one", "Acme 3 for 2", "Clearance corner", "Coupons weekly",
    "Lielā atlaižu diena", "Atlaides", "Bezmaksas piegāde", "Par brīvu", "Izpārdošana", "IZPARDOSANA", "Akcija",
    "Lēti un ātri", "Tikai šodien", "Viss puscenā", "2 par 1",
])
def test_a_name_with_an_offer_a_bare_domain_or_a_phone_number_is_not_a_plain_label(name: str) -> None:
    assert plain_label(name) is None


@pytest.mark.parametrize("name", [
    "Riga Bakery news", "Latvijas Banka", "AS Latvenergo", "Akciju sabiedrība Latvenergo", "Acme & Co.",
    "J.P. Morgan", "St. Peter's choir", "Web 2.0 weekly", "Pasta Kiosk Nr. 2", "Class of 1999", "Sales team",
    "News and offers", "Ziņas un piedāvājumi", "Offline readers", "Freedom House", "Tea for 2", "Jānis Bērziņš",
])
def test_a_neutral_name_stays_a_plain_label(name: str) -> None:
    assert plain_label(name) == name


def confirmation_job(company: str, list_name: str) -> dict[str, Any]:
    return {"_id": "cm1", "account_id": "acme", "kind": "confirmation", "list_id": "news", "subscriber_id": "s1",
            "recipient": "anna@example.org", "greeting_name": None, "company_name": company, "list_name": list_name,
            "confirm_url": "https://lists.example/confirm/abc", "expires_at": datetime.now(UTC) + timedelta(days=7),
            "attempts": 0, "next_attempt_at": T0}


async def mailed(company: str, list_name: str) -> EmailMessage:
    send, _, _ = sender(AccountState("acme", approved=True))
    relay = Relay()
    job = confirmation_job(company, list_name)
    send._jobs.push([job])
    await send._deliver(job, None, relay)  # type: ignore[arg-type]
    (_, data), = relay.sent
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


async def test_the_reviewer_s_offers_reach_neither_the_from_name_nor_the_subject_nor_the_body() -> None:
    message = await mailed(OFFER_COMPANY, OFFER_LIST)
    body = message.get_content()
    seen = f"{message['From']}\n{message['Subject']}\n{body}".lower()
    for part in ("half price", "shoedeals", "today only", "2 for 1", "555", "acme shoes"):
        assert part not in seen
    assert message["From"].addresses[0].display_name == "Herald"
    assert message["Subject"] == "Please confirm your subscription"
    assert "emails from this sender." in body and body.count("http") == 1


async def test_plain_names_are_still_named_in_the_from_name_subject_and_body() -> None:
    message = await mailed("AS Latvenergo", "Riga Bakery news")
    assert message["From"].addresses[0].display_name == "AS Latvenergo"
    assert message["Subject"] == "Please confirm your subscription to Riga Bakery news"
    assert "emails from AS Latvenergo (list: Riga Bakery news)." in message.get_content()


async def test_a_deleted_accounts_confirmation_is_skipped_not_mailed() -> None:
    """A confirmation queued before the deletion, or another producer's after it: nothing more goes out in a deleted
    account's name (review, 2026-12-07)."""
    send, store, _ = sender(AccountState("acme", approved=True, blocked_reasons=frozenset({"account_deleted"})))
    relay = Relay()
    job = confirmation_job("Acme", "News")
    send._jobs.push([job])
    await send._deliver(job, None, relay)  # type: ignore[arg-type]
    assert relay.sent == []
    assert [(o["outcome"], o.get("reason")) for o in store.recorded] == [("skipped", "account_deleted")]
