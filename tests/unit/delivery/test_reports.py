"""What inbound reports say: DSN (RFC 3464), ARF (RFC 5965), other bounce formats (flufl.bounce)."""

from __future__ import annotations

import email

import pytest

from herald_delivery.inbound import NotABounce, NotTied, ReportReader
from herald_delivery.render import MessageTokens

TOKENS = MessageTokens("unit-test-secret-0123456789")
READER = ReportReader(TOKENS, "bounces.example")
MESSAGE_ID = "0e6f3f0a-7f4f-5a59-9d8d-2b8f7c0c4b11"


def dsn(action: str, status: str) -> email.message.Message:
    return email.message_from_string(
        "Content-Type: multipart/report; report-type=delivery-status; boundary=B\n\n--B\nContent-Type: text/plain\n\n"
        "failed\n--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.org\n\n"
        f"Final-Recipient: rfc822; a@example.org\nAction: {action}\nStatus: {status}\n"
        f"Diagnostic-Code: smtp; 550 {status} no such user\n\n--B--\n")


def test_a_failed_5xx_dsn_is_a_hard_bounce_and_a_4xx_one_soft() -> None:
    hard = READER.findings(dsn("failed", "5.1.1"))
    assert [(f.kind, f.bounce_class, f.status, f.smtp_code, f.reporting) for f in hard] == [
        ("bounce", "hard", "5.1.1", 550, "mx.example.org")]
    assert READER.findings(dsn("delayed", "4.4.7"))[0].bounce_class == "soft"
    assert READER.findings(dsn("failed", "4.4.7"))[0].bounce_class == "soft"


def test_a_dsn_that_reports_only_deliveries_is_not_a_bounce() -> None:
    with pytest.raises(NotTied, match="only successful delivery"):
        READER.findings(dsn("delivered", "2.0.0"))


def test_an_arf_report_is_a_complaint_with_its_feedback_type() -> None:
    report = email.message_from_string(
        "Content-Type: multipart/report; report-type=feedback-report; boundary=F\n\n--F\nContent-Type: text/plain\n\n"
        "abuse\n--F\nContent-Type: message/feedback-report\n\nFeedback-Type: fraud\nVersion: 1\n"
        "Reporting-MTA: dns; fbl.isp.example\n\n--F\nContent-Type: text/rfc822-headers\n\n"
        f"Message-ID: <{MESSAGE_ID}@bounces.example>\n\n--F--\n")
    finding = READER.findings(report)[0]
    assert (finding.kind, finding.feedback_type, finding.reporting) == ("complaint", "fraud", "fbl.isp.example")
    # Our Message-ID alone does not tie it: message ids are deterministic, so an outsider could compute them.
    assert READER.message_ids([], report) == []
    unsubscribe = f"List-Unsubscribe: <mailto:{TOKENS.tagged_local_part('u', MESSAGE_ID)}@bounces.example>"
    quoting = email.message_from_string(report.as_string().replace("Message-ID:", unsubscribe + "\nMessage-ID:"))
    assert READER.message_ids([], quoting) == [MESSAGE_ID]


def test_a_non_standard_bounce_is_recognised_by_flufl_bounce() -> None:
    qmail = email.message_from_string(
        "From: MAILER-DAEMON@mx.example.org\nSubject: failure notice\n\n"
        "Hi. This is the qmail-send program at mx.example.org.\nI'm afraid I wasn't able to deliver your "
        "message to the following addresses.\nThis is a permanent error; I've given up. Sorry it didn't work "
        "out.\n\n<gone@example.org>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"
        "--- Below this line is a copy of the message.\n")
    assert READER.findings(qmail)[0].bounce_class == "hard"


def test_mail_to_a_return_path_that_nothing_classifies_is_undetermined_and_an_auto_reply_is_no_bounce() -> None:
    """Tied mail is recorded whatever its format; only an automatic reply (RFC 3834) with nothing of a bounce
    in it is not a report at all."""
    chat = email.message_from_string("From: a@example.org\nSubject: hello\n\njust chatting\n")
    assert [f.bounce_class for f in READER.findings(chat)] == ["undetermined"]
    away = email.message_from_string("From: a@example.org\nSubject: Out of office\nAuto-Submitted: auto-replied\n\n"
                                     "I am away until Monday.\n")
    with pytest.raises(NotABounce):
        READER.findings(away)


@pytest.mark.parametrize("body", [
    "I am out of the office until 14 November.\n\n--\nThis email has been checked for viruses by Avast.\n",
    "I am away until Monday; my calendar is blocked for the conference.\n",
    "I'm away this week. If you don't hear back, please check your junk folder.\n",
    "I am temporarily away from my desk and will reply on Monday.\n",
    "Out of office. Spam filters may hold my replies; policy questions to hr@corp.example.\n",
    "Ich bin bis 5.7.25 nicht im Buero; mein Kalender ist blockiert.\n",
    "My calendar is blocked this week.\nMobile: 555-0134\n",
])
def test_an_auto_reply_is_no_bounce_whatever_words_it_uses(body: str) -> None:
    """An out-of-office reply's words alone never make a block or soft bounce (a block counts toward the
    account's suspension): only a failure code or a recognised bounce format does."""
    away = email.message_from_string("From: Jane <jane@corp.example>\nSubject: Automatic reply: News\n"
                                     f"Auto-Submitted: auto-replied\nX-Autoreply: yes\n\n{body}")
    with pytest.raises(NotABounce):
        READER.findings(away)
    refused = email.message_from_string("From: postmaster@corp.example\nSubject: Undeliverable\n"
                                        "Auto-Submitted: auto-replied\n\nDelivery failed: 550 5.7.1 blocked "
                                        "by policy\n")
    assert [f.bounce_class for f in READER.findings(refused)] == ["block"]  # an auto-submitted refusal is one
    said = email.message_from_string("From: postmaster@corp.example\nSubject: Undeliverable\nAuto-Submitted: "
                                     "auto-replied\n\nremote host said: 550 mailbox unavailable\n")
    assert [f.bounce_class for f in READER.findings(said)] == ["hard"]


def test_mail_that_crashes_the_bounce_detectors_is_still_classified_by_its_text() -> None:
    """flufl.bounce's detectors choke on a mail without From; its text still says what happened."""
    finding = READER.findings(email.message_from_string("Subject: failure\n\n550 5.1.1 no such user\n"))[0]
    assert (finding.bounce_class, finding.status, finding.smtp_code) == ("hard", "5.1.1", 550)


def test_only_signed_return_paths_name_a_message() -> None:
    good = f"{TOKENS.tagged_local_part('b', MESSAGE_ID)}@bounces.example"
    assert READER.message_ids([good], email.message_from_string("\n")) == [MESSAGE_ID]
    forged = f"b+{MESSAGE_ID}.aaaaaaaaaaaaaaaa@bounces.example"
    assert READER.message_ids([forged], email.message_from_string("\n")) == []
