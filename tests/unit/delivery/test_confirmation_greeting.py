"""The confirmation email holds only the request to confirm (PRODUCT.md "Lists and subscribers"). Anyone may post
the public subscribe form for any address, and bots put offers and links in its name field so that the
platform's confirmation carries them ("signup-form spam"): the email greets no one by name, whatever the name.
The list's and the company's names, the customer's choice, appear only as plain labels."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest

from herald_delivery.domain import plain_label
from herald_delivery.render import MessageTokens, Renderer, RenderSettings
from herald_delivery.sender import confirmation_subject, confirmation_text
from herald_shared.links import LinkSigner

SECRET = "unit-test-secret-0123456789"
CONFIRM_URL = "https://lists.herald.example/confirm/abc"


def confirmation_body(job: dict[str, object]) -> str:
    r = Renderer(RenderSettings("https://t.herald.example", "bounces.herald.example"), MessageTokens(SECRET),
                 LinkSigner(SECRET, "https://lists.herald.example"), {})
    rendered = r.transactional_message(message_id="m1", kind="confirmation", account_id="acme",
                                       recipient="victim@example.org", from_name="Acme",
                                       from_email="no-reply@herald.example", subject=confirmation_subject(job),
                                       text=confirmation_text(job), feedback_group="news")
    message = email.message_from_bytes(rendered.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message.get_content()


@pytest.mark.parametrize("first_name", [
    "Buy at evil.com", "Anna", "Visit evil.com", "Cheap pills", "Ann-Marie O'Neil", "Jānis", None, "",
])
def test_a_confirmation_greets_with_hello_and_never_the_form_name(first_name: str | None) -> None:
    job = {"greeting_name": first_name, "company_name": "Acme", "list_name": "News", "confirm_url": CONFIRM_URL}
    body = confirmation_body(job)
    assert body.startswith("Hello,\n") or body.startswith("Hello,\r\n")
    if first_name:
        assert first_name not in body
    assert "evil.com" not in body and "pills" not in body.lower()
    assert body.count("http") == 1 and CONFIRM_URL in body and "emails from Acme (list: News)." in body


@pytest.mark.parametrize(("label", "shown"), [
    ("https://evil.example", False), ("HTTPS://EVIL.EXAMPLE", False), ("http:/evil.example", False),
    ("https:\\\\evil.example", False), ("ftp://evil.example", False), ("WWW.evil.example", False),
    ("\uff57\uff57\uff57\uff0eevil\uff0eexample", False),  # fullwidth "www."
    ("Deals ¥900", False), ("Only ₹99", False), ("Save 50 %", False),
    ("Booking.com", False), ("Ziņas un piedāvājumi", True), ("Acme & Co.", True),
])
def test_a_plain_label_refuses_a_url_with_a_scheme_or_www_and_any_currency_sign(label: str, shown: bool) -> None:
    assert (plain_label(label) is not None) is shown
