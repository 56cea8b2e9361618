"""RFC 2047 encoded words in the Subject and From Herald writes: none longer than 75 characters (section 2;
Python's `Header.encode` made words of 76 and 77, which strict readers show raw), each holding whole characters so
it decodes on its own (section 5), and together the value as written. A value that only looks like an encoded word
(`=?utf-8?q?=41?=`, ASCII) is encoded too, so readers show it literally rather than decode it to "A"."""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import re
from email.header import decode_header, make_header
from email.message import EmailMessage

from hypothesis import given, settings
from hypothesis import strategies as st

from herald_delivery.domain import Member
from herald_delivery.render import MessageTokens, Renderer, RenderSettings, compile_campaign
from herald_shared.contract.campaigns import CampaignContent
from herald_shared.links import LinkSigner

SECRET = "unit-test-secret-0123456789"
MESSAGE_ID = "0e6f3f0a-7f4f-5a59-9d8d-2b8f7c0c4b11"
ENCODED_WORD = re.compile(rb"=\?([^?]+)\?([bBqQ])\?([^?]*)\?=")
# The review's values (R4, finding 3): a member's name and a From name with quotes, a comma, an emoji and an
# injected Bcc, 150 "ü", a subject of 900 "y" in a run.
NASTY = 'Jürgen "The Boss", O\'Neil 🎉\r\nBcc: victim@evil.example\r\n'
REVIEW_SUBJECT = "Héllo {{ first_name }} 🎉 " + "y" * 900 + "\r\nBcc: evil@evil.example"
REVIEW_FROM_NAME = (NASTY + " " + "ü" * 150)[:200]
LOOKS_ENCODED = "=?utf-8?q?=41?="


def renderer() -> Renderer:
    return Renderer(RenderSettings("https://t.herald.example", "bounces.herald.example"), MessageTokens(SECRET),
                    LinkSigner(SECRET, "https://lists.herald.example"), {})


def campaign_message(first_name: str = "Anna", **changes: str) -> bytes:
    r = renderer()
    fields = {"subject": "News", "from_name": "Acme", "from_email": "news@acme.example", "text_body": "Hello",
              **changes}
    template = compile_campaign("acme", "c1", CampaignContent.model_validate(fields), footer=True, settings=r.settings)
    member = Member("s1", "news", "anna@example.org", "active", first_name=first_name)
    return r.campaign_message(template, member, MESSAGE_ID).data


def header(data: bytes, name: bytes) -> tuple[list[bytes], bytes]:
    """The header's lines, and its value unfolded."""
    lines = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    start = next(i for i, line in enumerate(lines) if line.lower().startswith(name.lower() + b":"))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith((b" ", b"\t"))), len(lines))
    return lines[start:end], b"".join(lines[start:end])[len(name) + 1:]


def words_each_decoded(value: bytes) -> list[str]:
    """Each encoded word decoded alone, strictly (a split character, bad padding or base64 fails), after checking
    its length."""
    decoded = []
    for word in ENCODED_WORD.finditer(value):
        assert len(word.group()) <= 75, word.group()
        assert word.group(1).lower() == b"utf-8"
        text = word.group(3)
        if word.group(2) in b"bB":
            raw = base64.b64decode(text, validate=True)
        else:
            assert re.fullmatch(rb"(?:[A-Za-z0-9!*+\-/_]|=[0-9A-F]{2})*", text), text  # RFC 2047 5(3)
            raw = binascii.a2b_qp(text.replace(b"_", b" "))
        decoded.append(raw.decode("utf-8"))
    return decoded


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def display_name(value: bytes) -> str:
    """The From's display name as RFC 2047 readers join its encoded words (without Python's address parser,
    which puts a space between them)."""
    return str(make_header(decode_header(value.decode().rsplit("<", 1)[0].strip())))


def test_the_reviews_subject_and_sender_name_are_in_words_of_at_most_75_each_decoding_alone() -> None:
    data = campaign_message(NASTY, subject=REVIEW_SUBJECT, from_name=REVIEW_FROM_NAME)
    subject_lines, subject = header(data, b"Subject")
    words = words_each_decoded(subject)
    assert len(words) > 10 and "".join(words) == " ".join(REVIEW_SUBJECT.replace("{{ first_name }}", NASTY).split())
    from_lines, sender = header(data, b"From")
    names = words_each_decoded(sender)
    assert "".join(names) == " ".join(REVIEW_FROM_NAME.split())
    assert display_name(sender) == " ".join(REVIEW_FROM_NAME.split())
    assert all(len(line) <= 78 for line in subject_lines + from_lines)
    assert b"\r\nBcc:" not in data


def test_a_notice_and_a_test_send_keep_to_75_too() -> None:
    r = renderer()
    notice = r.transactional_message(message_id=MESSAGE_ID, kind="notice", account_id="acme",
                                     recipient="anna@example.org", from_name="Ā" * 200, from_email="no-reply@h.example",
                                     subject="🎉 Bcc: victim@example.org " * 20, text="A notice.",
                                     feedback_group="g").data
    template = compile_campaign("acme", "c1", CampaignContent.model_validate(
        {"subject": "üü {{ first_name }}", "from_name": "ü" * 60, "from_email": "news@acme.example",
         "text_body": "Hi"}), footer=True, settings=r.settings)
    test = r.test_message(template, "anna@example.org", {"first_name": "ü" * 300}, MESSAGE_ID, "t1").data
    for data in (notice, test):
        for name in (b"Subject", b"From"):
            lines, value = header(data, name)
            assert words_each_decoded(value) and all(len(line) <= 78 for line in lines)
    assert parsed(notice)["Subject"] == " ".join(("🎉 Bcc: victim@example.org " * 20).split())
    assert parsed(test)["Subject"] == "[Test] üü " + "ü" * 300


# Text a reader shows: no control characters, no separators but the space; letters of many scripts, emoji
# (with modifiers and ZWJ sequences), combining marks, and runs long enough to take several words.
SHOWN = st.characters(blacklist_categories=("Cc", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"))
PIECES = st.one_of(
    st.text(SHOWN, min_size=1, max_size=40),
    st.sampled_from(["🎉", "👩‍👩‍👧‍👦", "👍🏽", "🇱🇻", "e\u0301", "a\u0308\u0323", "漢字かな", "한국어", "עברית",
                     "ü" * 80, "x" * 300, "=?", "?=", "=?utf-8?q?=41?=", "_", '"', ",", " ", "  ", "\u200d", "\ufe0f"]),
    st.text(st.characters(min_codepoint=0x300, max_codepoint=0x36F), min_size=1, max_size=30))
SHOWN_TEXT = st.lists(PIECES, min_size=1, max_size=12).map("".join).filter(lambda text: text.strip() != "")


@settings(max_examples=300, deadline=None)
@given(SHOWN_TEXT)
def test_any_subject_is_in_words_of_at_most_75_each_decoding_alone_and_reads_as_written(value: str) -> None:
    """Hypothesis: a member's value as the whole subject (merged, so the template sees no `{{`)."""
    data = campaign_message(value, subject="{{ first_name }}")
    lines, subject = header(data, b"Subject")
    expected = " ".join(value.split())
    assert all(len(line) <= 78 for line in lines) or not ENCODED_WORD.search(subject)
    words = words_each_decoded(subject)
    if words:
        assert "".join(words) == expected
        assert ENCODED_WORD.sub(b"", subject).strip(b" ") == b""  # nothing left raw beside the words
    else:
        assert value.isascii() and "=?" not in value
    assert parsed(data)["Subject"] == expected


@settings(max_examples=300, deadline=None)
@given(SHOWN_TEXT.filter(lambda text: len(text) <= 200))
def test_any_sender_name_is_in_words_of_at_most_75_each_decoding_alone_and_reads_as_written(value: str) -> None:
    data = campaign_message(from_name=value)
    lines, sender = header(data, b"From")
    expected = " ".join(value.split())
    words = words_each_decoded(sender)
    assert all(len(line) <= 78 for line in lines)
    if words:
        assert "".join(words) == expected and display_name(sender) == expected
    else:
        assert value.isascii() and "=?" not in value
        assert parsed(data)["From"].addresses[0].display_name == expected
    assert parsed(data)["From"].addresses[0].addr_spec == "news@acme.example"


def test_text_that_looks_like_an_encoded_word_shows_literally() -> None:
    """R4, finding 4: `=?utf-8?q?=41?=` went out raw and mail readers showed "A"."""
    static = campaign_message(subject=f"Deals {LOOKS_ENCODED} today", from_name=f"Acme {LOOKS_ENCODED}")
    merged = campaign_message(LOOKS_ENCODED, subject="Hello {{ first_name }}")
    for data, subject in ((static, f"Deals {LOOKS_ENCODED} today"), (merged, f"Hello {LOOKS_ENCODED}")):
        _, value = header(data, b"Subject")
        assert LOOKS_ENCODED.encode() not in value
        assert parsed(data)["Subject"] == subject
        assert "".join(words_each_decoded(value)) == subject
    _, sender = header(static, b"From")
    assert LOOKS_ENCODED.encode() not in sender and display_name(sender) == f"Acme {LOOKS_ENCODED}"
    notice = renderer().transactional_message(
        message_id=MESSAGE_ID, kind="notice", account_id="acme", recipient="anna@example.org",
        from_name=LOOKS_ENCODED, from_email="no-reply@h.example", subject=LOOKS_ENCODED, text="A notice.",
        feedback_group="g").data
    assert parsed(notice)["Subject"] == LOOKS_ENCODED
    assert display_name(header(notice, b"From")[1]) == LOOKS_ENCODED


def test_plain_ascii_still_goes_out_as_written() -> None:
    data = campaign_message(subject="November news: 20% off = today?", from_name="Acme Deals")
    assert header(data, b"Subject")[0] == [b"Subject: November news: 20% off = today?"]
    assert header(data, b"From")[0] == [b"From: Acme Deals <news@acme.example>"]


def test_words_end_between_graphemes_where_they_can() -> None:
    """A reader that shows each word apart still shows a letter with its accent, a flag, a family emoji whole."""
    for value in ("e\u0301" * 40, "🇱🇻" * 20, "x🇱🇻" * 15, "👩‍👩‍👧‍👦" * 10, "👍🏽" * 20, "ā̧" * 30):
        _, subject = header(campaign_message(subject=value), b"Subject")
        words = words_each_decoded(subject)
        assert len(words) > 1 and "".join(words) == value
        for word in words:
            assert not word.startswith(("\u0301", "\u0304", "\u0327", "\u200d", "🏽", "👦")), words
            assert not word.endswith("\u200d")
            assert sum(0x1F1E6 <= ord(char) <= 0x1F1FF for char in word) % 2 == 0, words
