"""Header lines within RFC 5322 2.1.1: at most 998 octets always (Exim and others refuse a longer one, and the
refusal costs the customer a credit), 78 characters where the value can be folded at its spaces; a value with
a run too long for a line, or not ASCII, in RFC 2047 encoded words. DKIM signs the folded head (dkimpy verifies)."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable
from email.header import decode_header, make_header
from email.message import EmailMessage

import pytest

from herald_delivery.domain import Member
from herald_delivery.render import DkimKey, MessageTokens, Renderer, RenderSettings, compile_campaign
from herald_shared.contract.campaigns import CampaignContent
from herald_shared.links import LinkSigner
from herald_shared.templating import RenderError
from tests.unit.delivery.helpers import acme_dkim_keys, dkim_verified

SECRET = "unit-test-secret-0123456789"
MESSAGE_ID = "0e6f3f0a-7f4f-5a59-9d8d-2b8f7c0c4b11"
ANNA = Member("s1", "news", "anna@example.org", "active", first_name="Anna-Katharina Maria")
# The contract's longest: Identifier 128, AccountId 64, an address of 251 octets (labels of 63).
LONGEST_ID = "c" * 128
LONGEST_ACCOUNT = "a" * 64
LONGEST_ADDRESS = "r" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 50 + ".example"


def renderer(keys: dict[str, list[DkimKey]] | None = None, lists_url: str = "https://lists.herald.example"
             ) -> Renderer:
    return Renderer(RenderSettings("https://t.herald.example", "bounces.herald.example"), MessageTokens(SECRET),
                    LinkSigner(SECRET, lists_url), keys or {})


def campaign_message(r: Renderer, member: Member = ANNA, account: str = "acme", campaign: str = "c1",
                     **changes: str) -> bytes:
    fields = {"subject": "News", "from_name": "Acme", "from_email": "news@acme.example", "text_body": "Hello",
              "html_body": "<p>Hello</p>", **changes}
    template = compile_campaign(account, campaign, CampaignContent.model_validate(fields), footer=True,
                                settings=r.settings)
    return r.campaign_message(template, member, MESSAGE_ID).data


def head_lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def header_lines(data: bytes, name: bytes) -> list[bytes]:
    """The lines of one header: its first and the folded ones after it."""
    lines = head_lines(data)
    start = next(i for i, line in enumerate(lines) if line.lower().startswith(name.lower() + b":"))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(b" ")), len(lines))
    return lines[start:end]


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_a_long_ascii_subject_is_folded_at_its_spaces() -> None:
    """The reviewer's case: "Sale" 196 times and a first name, one Subject line of 1,009 octets before."""
    subject = " ".join(["Sale"] * 196) + " {{ first_name }}"
    data = campaign_message(renderer(), subject=subject)
    assert all(len(line) <= 78 for line in header_lines(data, b"Subject"))
    assert max(map(len, head_lines(data))) <= 998
    assert parsed(data)["Subject"] == " ".join(["Sale"] * 196) + " Anna-Katharina Maria"
    static = campaign_message(renderer(), subject=" ".join(["Sale"] * 196))  # the campaign's own Subject line
    assert all(len(line) <= 78 for line in header_lines(static, b"Subject"))


def test_a_short_subject_stays_on_one_line() -> None:
    data = campaign_message(renderer(), subject="November news for {{ first_name }}")
    assert header_lines(data, b"Subject") == [b"Subject: November news for Anna-Katharina Maria"]


@pytest.mark.parametrize("subject", ["x" * 980 + "{{ first_name }}",  # a run no folding can break
                                     "Ziemassvētku piedāvājums {{ first_name }}! " * 22])  # not ASCII
def test_a_subject_that_cannot_be_folded_at_spaces_goes_in_encoded_words(subject: str) -> None:
    member = Member("s1", "news", "anna@example.org", "active", first_name="AnnaKatharina")
    data = campaign_message(renderer(), member, subject=subject)
    lines = header_lines(data, b"Subject")
    assert len(lines) > 10 and all(len(line) <= 78 for line in lines)
    assert lines[0].startswith(b"Subject: =?utf-8?")
    assert parsed(data)["Subject"] == " ".join(subject.replace("{{ first_name }}", "AnnaKatharina").split())


@pytest.mark.parametrize("name", ['Acme "Best", Inc. \\ Riga ' * 8, "😀" * 200, "Āboli SIA — Ziemassvētku piedāvājumi"])
def test_a_long_sender_name_is_folded(name: str) -> None:
    """A name of 200 characters of UTF-8 was one encoded word of ~1,090 octets."""
    data = campaign_message(renderer(), from_name=name)
    lines = header_lines(data, b"From")
    assert all(len(line) <= 78 for line in lines)
    sender = parsed(data)["From"].addresses[0]
    assert sender.addr_spec == "news@acme.example"
    if name.isascii():
        assert sender.display_name == " ".join(name.split())
    else:  # as RFC 2047 readers join encoded words (Python's address parser puts a space between them)
        display = b"".join(lines).decode()[len("From:"):].rsplit("<", 1)[0].strip()
        assert str(make_header(decode_header(display))) == " ".join(name.split())


def test_every_header_line_stays_within_998_octets_at_the_contracts_limits() -> None:
    """Every header written from a customer's or member's value, at its longest: the longest ids (Feedback-ID,
    the unsubscribe URL's token), a subject grown by values to 2,000 characters, the longest name and
    addresses; campaign mail, a test send and a notice."""
    r = renderer()
    member = Member(LONGEST_ID, "news", LONGEST_ADDRESS, "active", first_name="x" * 500)
    fields = {"subject": "{{ first_name }}" + "y" * 900 + "{{ first_name }}", "from_name": "😀" * 200,
              "reply_to": LONGEST_ADDRESS}
    data = campaign_message(r, member, account=LONGEST_ACCOUNT, campaign=LONGEST_ID, **fields)
    assert parsed(data)["Subject"] == "x" * 500 + "y" * 900 + "x" * 500
    template = compile_campaign(LONGEST_ACCOUNT, LONGEST_ID, CampaignContent.model_validate(
        {"text_body": "Hi", "from_email": "news@acme.example", **fields}), footer=True, settings=r.settings)
    test = r.test_message(template, LONGEST_ADDRESS, {"first_name": "x" * 500}, MESSAGE_ID, LONGEST_ID).data
    notice = r.transactional_message(message_id=MESSAGE_ID, kind="notice", account_id=LONGEST_ACCOUNT,
                                     recipient=LONGEST_ADDRESS, from_name="Ā" * 200, from_email="no-reply@h.example",
                                     subject="Ā" * 2000, text="A notice.",
                                     feedback_group=LONGEST_ID).data
    for message in (data, test, notice):
        assert max(map(len, head_lines(message))) <= 998, max(head_lines(message), key=len)[:60]
    assert parsed(notice)["Subject"] == "Ā" * 2000


def test_list_unsubscribe_is_folded_before_its_mailto_only_when_its_line_would_pass_998() -> None:
    """Its https URL alone passes 78 characters: one line, as usual, unless that line would pass 998 octets;
    a URL too long for any line fails the render (recorded as render_failed) rather than send a bad header."""
    usual = campaign_message(renderer())
    assert len(header_lines(usual, b"List-Unsubscribe")) == 1
    long_base = "https://lists.herald.example/" + "p" * 750
    data = campaign_message(renderer(lists_url=long_base))
    lines = header_lines(data, b"List-Unsubscribe")
    assert len(lines) == 2 and lines[1].startswith(b" <mailto:u+") and max(map(len, lines)) <= 998
    https, mailto = (value.strip(" <>") for value in str(parsed(data)["List-Unsubscribe"]).split(","))
    assert https.startswith(long_base + "/unsubscribe/") and mailto.startswith("mailto:u+")
    with pytest.raises(RenderError, match="unsubscribe URL is too long"):
        campaign_message(renderer(lists_url="https://lists.herald.example/" + "p" * 1000))


@pytest.fixture(scope="module")
def keys() -> tuple[list[DkimKey], Callable[..., bytes]]:
    """acme.example's Ed25519 and RSA keys (dual signing), and the DNS that answers for both."""
    by_selector, lookup = acme_dkim_keys()
    return [by_selector["ed1"], by_selector["rsa1"]], lookup


def verified(message: bytes, lookup: Callable[..., bytes]) -> list[bool]:
    return dkim_verified(message, lookup)


def test_a_folded_head_is_signed_and_each_signature_verifies(keys: tuple[list[DkimKey], Callable[..., bytes]]
                                                             ) -> None:
    """DKIM signs the headers as folded (relaxed canonicalization unfolds them): dkimpy verifies both
    signatures, and changing a word on a folded line breaks both."""
    dkim_keys, lookup = keys
    r = renderer({"acme.example": dkim_keys})
    data = campaign_message(r, subject=" ".join(["Sale"] * 196) + " {{ first_name }}", from_name="😀" * 200)
    assert len(header_lines(data, b"Subject")) > 10 and len(header_lines(data, b"From")) > 10
    assert verified(data, lookup) == [True, True]
    folded_line = header_lines(data, b"Subject")[5]
    tampered = data.replace(folded_line, folded_line.replace(b"Sale", b"Sold", 1), 1)
    assert verified(tampered, lookup) == [False, False]
