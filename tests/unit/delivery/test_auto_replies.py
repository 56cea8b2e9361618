"""Out-of-office and other automatic replies are no bounce even without RFC 3834's Auto-Submitted (vacation(1)'s
Precedence, Outlook's X-Auto-Response-Suppress, auto-reply subjects in many languages); a report
(multipart/report) or a bounce the detectors recognise is never taken for one."""

from __future__ import annotations

import email

import pytest

from herald_delivery.inbound import NotABounce, ReportReader
from herald_delivery.render import MessageTokens

READER = ReportReader(MessageTokens("unit-test-secret-0123456789"), "bounces.example")


def mail(headers: str, body: str) -> email.message.Message:
    return email.message_from_string(f"From: Jane <jane@corp.example>\n{headers}\n\n{body}")


@pytest.mark.parametrize(("headers", "body"), [
    # vacation(1): Precedence junk, the subject the user chose
    ("Subject: away\nPrecedence: junk", "I am away until Monday; my calendar is blocked for the conference.\n"),
    ("Subject: Re: News\nPrecedence: bulk", "Away this week. Please check your junk folder for my replies.\n"),
    ("Subject: News\nPrecedence: list", "I'm travelling; mail is checked for spam and viruses.\n"),
    # An Outlook rule's reply: X-Auto-Response-Suppress, no Auto-Submitted
    ("Subject: News\nX-Auto-Response-Suppress: All", "This mailbox is checked for spam and viruses.\n"),
    ("Subject: News\nX-Autoresponder: yes", "Blocked until Friday.\n"),
    ("Subject: Automatic reply: News", "I am out of the office. Spam is blocked here.\n"),
    ("Subject: Auto: News", "Blocked until Friday.\n"),
    ("Subject: Out of Office: News", "Blocked until Friday.\n"),
    ("Subject: Abwesenheitsnotiz: News", "Mein Kalender ist blockiert (blocked).\n"),
    ("Subject: Réponse automatique : News", "Absent, spam filtré (spam).\n"),
    ("Subject: =?UTF-8?Q?Autom=C4=81tisk=C4=81_atbilde:_News?=", "Esmu atvaļinājumā. Spam blocked.\n"),
    ("Subject: Automātiskā atbilde: News", "Esmu atvaļinājumā. Spam blocked.\n"),
    ("Subject: =?UTF-8?B?0JDQstGC0L7QvNCw0YLQuNGH0LXRgdC60LjQuSDQvtGC0LLQtdGCOiBOZXdz?=", "Blocked.\n"),
])
def test_an_automatic_reply_without_auto_submitted_is_no_bounce(headers: str, body: str) -> None:
    """README: an automatic reply is not recorded as a bounce, whatever its words (a block counts toward
    suspension)."""
    with pytest.raises(NotABounce):
        READER.findings(mail(headers, body))


def test_a_refusal_code_still_makes_an_automatic_reply_a_bounce() -> None:
    refused = mail("Subject: Automatic reply: News\nPrecedence: bulk", "Delivery failed: 550 5.7.1 blocked by policy\n")
    assert [f.bounce_class for f in READER.findings(refused)] == ["block"]


def test_a_report_is_never_an_automatic_reply() -> None:
    """A multipart/report says Auto-Submitted (RFC 3834 5) and may say little else: its words classify it."""
    report = email.message_from_string(
        "From: MAILER-DAEMON@mx.example.org\nSubject: Automatic reply: Undeliverable\nAuto-Submitted: auto-replied\n"
        "Precedence: bulk\nMIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; "
        "boundary=b\n\n--b\nContent-Type: text/plain\n\nYour message was blocked by the recipient's policy.\n--b--\n")
    assert [f.bounce_class for f in READER.findings(report)] == ["block"]


def test_a_bounce_the_detectors_recognise_is_no_automatic_reply_whatever_its_headers() -> None:
    qmail = email.message_from_string(
        "From: MAILER-DAEMON@mx.example.org\nSubject: failure notice\nPrecedence: bulk\n"
        "X-Auto-Response-Suppress: All\n\nHi. This is the qmail-send program at mx.example.org.\nI'm afraid I "
        "wasn't able to deliver your message to the following addresses.\nThis is a permanent error; I've given "
        "up. Sorry it didn't work out.\n\n<gone@example.org>:\nSorry, no mailbox here by that name.\n\n"
        "--- Below this line is a copy of the message.\n")
    assert [f.bounce_class for f in READER.findings(qmail)] == ["hard"]


def test_ordinary_subjects_are_not_taken_for_automatic_replies() -> None:
    for subject in ("Autumn sale", "Automation news", "Re: your offer", "Auto parts in stock"):
        chat = mail(f"Subject: {subject}", "blocked\n")
        assert [f.bounce_class for f in READER.findings(chat)] == ["block"], subject
