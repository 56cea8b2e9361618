"""DKIM over-signing (RFC 6376 5.4 and 8.15): a header added to a signed message, or one changed that a reader
decodes the body by, breaks the signature of every kind of message Herald sends, whatever the keys (dkimpy, the
independent verifier, checks); untampered, each verifies. The review's replay (R4, finding 2): a second Subject,
To or Date, a Reply-To the message had none of, and a single-part message's Content-Transfer-Encoding changed
all still verified."""

from __future__ import annotations

from collections.abc import Callable

import dkim
import pytest

from herald_delivery.domain import Member
from herald_delivery.render import DkimKey, MessageTokens, Renderer, RenderSettings, compile_campaign
from herald_shared.contract.campaigns import CampaignContent
from herald_shared.links import LinkSigner
from tests.unit.delivery.helpers import acme_dkim_keys, dkim_verified

SECRET = "unit-test-secret-0123456789"
MESSAGE_ID = "0e6f3f0a-7f4f-5a59-9d8d-2b8f7c0c4b11"
ANNA = Member("s1", "news", "anna@example.org", "active", first_name="Anna")
Keys = tuple[dict[str, DkimKey], Callable[..., bytes]]


@pytest.fixture(scope="module")
def keys() -> Keys:
    return acme_dkim_keys()


def verified(message: bytes, lookup: Callable[..., bytes]) -> list[bool]:
    return dkim_verified(message, lookup)


def message(kind: str, signers: list[DkimKey]) -> bytes:
    """One message of a kind Herald sends, from acme.example, signed by `signers`."""
    r = Renderer(RenderSettings("https://t.herald.example", "bounces.herald.example"), MessageTokens(SECRET),
                 LinkSigner(SECRET, "https://lists.herald.example"), {"acme.example": signers})
    fields = {"subject": "News for {{ first_name }}", "from_name": "Acme", "from_email": "news@acme.example",
              "text_body": "Hello {{ first_name }}", "html_body": "<p>Hello</p><a href='https://acme.example/'>x</a>"}
    if kind == "text-only campaign":
        del fields["html_body"]
    if kind == "campaign with a Reply-To":
        fields["reply_to"] = "help@acme.example"
    if kind in ("confirmation", "notice"):
        return r.transactional_message(
            message_id=MESSAGE_ID, kind=kind, account_id="acme", recipient="anna@example.org", from_name="Acme",
            from_email="no-reply@acme.example", subject="Please confirm", text="Confirm: https://lists.herald.example/c/x",
            feedback_group="news", subscriber_id="s1" if kind == "confirmation" else None).data
    template = compile_campaign("acme", "c1", CampaignContent.model_validate(fields), footer=True, settings=r.settings)
    if kind == "test send":
        return r.test_message(template, "anna@example.org", {"first_name": "Anna"}, MESSAGE_ID, "t1").data
    return r.campaign_message(template, ANNA, MESSAGE_ID).data


KINDS = ["campaign", "campaign with a Reply-To", "text-only campaign", "test send", "confirmation", "notice"]
SIGNERS = {"rsa": ["rsa1"], "ed25519": ["ed1"], "dual": ["ed1", "rsa1"]}


def above(added: bytes) -> Callable[[bytes], bytes]:
    """The header put above all others but the signatures: above the signed instance of its name."""
    def change(data: bytes) -> bytes:
        at = data.index(b"\r\nFrom:") + 2
        return data[:at] + added + b"\r\n" + data[at:]
    return change


def below(added: bytes) -> Callable[[bytes], bytes]:
    """The header put last in the head: where a verifier picks the first instance of its name."""
    def change(data: bytes) -> bytes:
        head, _, body = data.partition(b"\r\n\r\n")
        return head + b"\r\n" + added + b"\r\n\r\n" + body
    return change


TAMPERING: dict[str, Callable[[bytes], bytes]] = {
    "a second From above": above(b"From: Acme Billing <billing@acme.example>"),
    "a second Subject above": above(b"Subject: Your invoice is overdue - pay now"),
    "a second Subject below": below(b"Subject: Your invoice is overdue - pay now"),
    "a second To above": above(b"To: everyone@acme.example"),
    "a second Date above": above(b"Date: Mon, 01 Jan 2035 00:00:00 +0000"),
    "a second Message-ID above": above(b"Message-ID: <other@acme.example>"),
    "a Reply-To added": above(b"Reply-To: attacker@evil.example"),
    "a Reply-To added below": below(b"Reply-To: attacker@evil.example"),
    "a Cc added": below(b"Cc: someone@evil.example"),
    "a second List-Unsubscribe above": above(b"List-Unsubscribe: <https://evil.example/u>"),
    "a top-level Content-Transfer-Encoding added": below(b"Content-Transfer-Encoding: base64"),
    "a second Content-Type above": above(b"Content-Type: text/html; charset=utf-8"),
    "a second MIME-Version above": above(b"MIME-Version: 2.0"),
    "an Auto-Submitted added": above(b"Auto-Submitted: auto-replied"),
    "a test's mark added": above(b"X-Herald-Test: yes"),
}


@pytest.mark.parametrize("signers", SIGNERS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_message_verifies_untampered(keys: Keys, kind: str, signers: str) -> None:
    by_selector, lookup = keys
    data = message(kind, [by_selector[s] for s in SIGNERS[signers]])
    assert verified(data, lookup) == [True] * len(SIGNERS[signers])
    head = data.split(b"\r\n\r\n")[0]
    assert all(len(line) <= 78 for line in head.split(b"\r\n") if line.startswith((b"\t", b"DKIM-Signature")))


@pytest.mark.parametrize("tampering", TAMPERING)
@pytest.mark.parametrize("kind", KINDS)
def test_a_header_added_to_a_signed_message_breaks_every_signature(keys: Keys, kind: str, tampering: str) -> None:
    """RFC 6376 8.15: each signed header is listed in h= once more than the message has it."""
    by_selector, lookup = keys
    data = message(kind, [by_selector["ed1"], by_selector["rsa1"]])
    tampered = TAMPERING[tampering](data)
    assert tampered != data
    assert verified(tampered, lookup) == [False, False]


@pytest.mark.parametrize("kind", ["text-only campaign", "confirmation", "notice"])
@pytest.mark.parametrize("signers", SIGNERS)
def test_a_single_part_messages_transfer_encoding_is_signed(keys: Keys, kind: str, signers: str) -> None:
    """Its body read as base64 instead of 7bit would be other content under the same signature."""
    by_selector, lookup = keys
    data = message(kind, [by_selector[s] for s in SIGNERS[signers]])
    assert b"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n" in data
    tampered = data.replace(b"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n",
                            b"\r\nContent-Transfer-Encoding: base64\r\n\r\n", 1)
    assert verified(tampered, lookup) == [False] * len(SIGNERS[signers])


def test_the_mime_headers_are_signed(keys: Keys) -> None:
    by_selector, lookup = keys
    data = message("campaign", [by_selector["rsa1"]])
    header = dkim.DKIM(data).headers[0][1]
    names = dkim.util.parse_tag_value(header)[b"h"].replace(b" ", b"").replace(b"\t", b"").replace(b"\r\n", b"")
    for name in (b"mime-version", b"content-type", b"content-transfer-encoding", b"reply-to", b"cc"):
        assert name in names.split(b":")
    tampered = data.replace(b"MIME-Version: 1.0", b"MIME-Version: 1.1", 1)
    assert verified(tampered, lookup) == [False]
