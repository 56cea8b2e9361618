"""The double opt-in confirmation email carries List-Unsubscribe and List-Unsubscribe-Post (RFC 8058) under its DKIM
signature, with the signed claim campaign mail uses (no campaign), so the person whose address a stranger posted to
a form stops it in one click; its body is still the request to confirm alone."""

from __future__ import annotations

import base64
import email
import email.policy
from email.message import EmailMessage

import dkim
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from herald_delivery.render import DkimKey, MessageTokens, Renderer, RenderSettings
from herald_delivery.sender import confirmation_text
from herald_shared.links import LinkSigner

SECRET = "unit-test-secret-0123456789"
LINKS = LinkSigner(SECRET, "https://lists.herald.example")
JOB = {"company_name": "Acme", "list_name": "News", "confirm_url": "https://lists.herald.example/confirm/abc"}


def signed_confirmation(subscriber_id: str | None) -> tuple[bytes, bytes]:
    """A confirmation rendered and signed by the platform's key, and that key's DNS record."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(
        key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
    renderer = Renderer(RenderSettings("https://t.herald.example", "bounces.herald.example"), MessageTokens(SECRET),
                        LINKS, {}, [DkimKey("herald.example", "s1", pem)])
    rendered = renderer.transactional_message(
        message_id="0e6f3f0a-7f4f-5a59-9d8d-2b8f7c0c4b11", kind="confirmation", account_id="acme",
        recipient="anna@example.org", from_name="Acme", from_email="no-reply@herald.example",
        subject="Please confirm your subscription to News", text=confirmation_text(JOB), feedback_group="news",
        subscriber_id=subscriber_id)
    return rendered.data, record


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_a_confirmation_carries_a_signed_one_click_unsubscribe_of_its_membership() -> None:
    """PRODUCT.md: every message carries an unsubscribe link; unsubscribing takes one click (RFC 8058)."""
    data, record = signed_confirmation("s-anna")
    message = parsed(data)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url, mailto = (part.strip(" <>") for part in str(message["List-Unsubscribe"]).split(","))
    assert url.startswith("https://lists.herald.example/unsubscribe/")
    assert mailto.startswith("mailto:u") and mailto.endswith("@bounces.herald.example?subject=unsubscribe")
    claim = LINKS.read_unsubscribe(url.rsplit("/", 1)[1])
    assert (claim.account_id, claim.subscriber_id, claim.campaign_id, claim.message_id, claim.test) == (
        "acme", "s-anna", None, "0e6f3f0a-7f4f-5a59-9d8d-2b8f7c0c4b11", False)
    # The body is unchanged: the request to confirm, its one link, no other call to action.
    body = message.get_content()
    assert body.replace("\r\n", "\n") == confirmation_text(JOB) and body.count("http") == 1

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"s1._domainkey.herald.example."
        return record

    assert dkim.verify(data, dnsfunc=dns)
    signature = str(message["DKIM-Signature"]).replace("\r\n", "").replace(" ", "").replace("\t", "").lower()
    signed = next(tag for tag in signature.split(";") if tag.startswith("h=")).removeprefix("h=").split(":")
    assert "list-unsubscribe" in signed and "list-unsubscribe-post" in signed
    for header, changed in ((b"List-Unsubscribe: <https://lists.herald.example/", b"List-Unsubscribe: <https://x/"),
                            (b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
                             b"List-Unsubscribe-Post: List-Unsubscribe=Two-Clicks")):
        assert header in data
        assert not dkim.verify(data.replace(header, changed, 1), dnsfunc=dns)


def test_a_transactional_message_naming_no_membership_carries_no_list_unsubscribe() -> None:
    data, record = signed_confirmation(None)
    message = parsed(data)
    assert message["List-Unsubscribe"] is None and message["List-Unsubscribe-Post"] is None
    assert dkim.verify(data, dnsfunc=lambda name, timeout=5: record)
