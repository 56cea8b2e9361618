"""Bounce classes (hard, soft, block, undetermined) from SMTP replies and from reports in the formats real MTAs
write: lenient DSNs, plain-text bounces for hyphenated domains, blocks against invalid addresses. The texts are
composed here after those formats."""

from __future__ import annotations

import email

import pytest

from herald_delivery.domain import classify_bounce
from herald_delivery.inbound import ReportReader
from herald_delivery.render import MessageTokens

TOKENS = MessageTokens("unit-test-secret-0123456789")
READER = ReportReader(TOKENS, "bounces.example")
MESSAGE_ID = "0e6f3f0a-7f4f-5a59-9d8d-2b8f7c0c4b11"


@pytest.mark.parametrize(("status", "code", "text", "expected"), [
    # hard: the address is invalid
    ("5.1.1", 550, "5.1.1 <anna@example.org>: Recipient address rejected: User unknown", "hard"),
    (None, 550, "Requested action not taken: mailbox unavailable", "hard"),
    ("5.2.1", 550, "5.2.1 The email account that you tried to reach is disabled.", "hard"),
    (None, 553, "sorry, that domain isn't in my list of allowed rcpthosts", "hard"),
    ("5.4.1", 550, "5.4.1 Recipient address rejected: Access denied. AS(201806281)", "hard"),
    ("5.1.10", 550, "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", "hard"),
    (None, 550, "No such user here", "hard"),
    (None, 556, "the domain does not accept mail (null MX)", "hard"),
    # block: our mail refused, not the address
    ("5.7.1", 550, "5.7.1 Our system has detected that this message is likely unsolicited mail.", "block"),
    ("5.7.26", 550, "5.7.26 This mail is unauthenticated, which poses a security risk to the sender", "block"),
    (None, 554, "Service unavailable; Client host [192.0.2.7] blocked using zen.spamhaus.org", "block"),
    (None, 550, "Message rejected: the sending IP is listed at bl.example-rbl.org", "block"),
    ("5.0.0", 550, "5.0.0 Mail rejected due to poor sender reputation", "block"),
    (None, 554, "rejected by policy: message content filter", "block"),
    ("5.1.8", 553, "5.1.8 <b+x@bounces.example>: Sender address rejected: Domain not found", "block"),
    # soft: temporary, even when refused for now with a 5xx
    ("4.2.0", 450, "4.2.0 <anna@example.org>: Recipient address rejected: Greylisted, try again later", "soft"),
    ("5.2.2", 552, "5.2.2 The email account that you tried to reach is over quota.", "soft"),
    (None, 552, "Requested mail action aborted: exceeded storage allocation", "soft"),
    (None, 452, "Too many recipients received this hour", "soft"),
    ("4.7.0", 421, "4.7.0 [192.0.2.7] Our system has detected an unusual rate of unsolicited mail", "soft"),
    ("5.2.3", 552, "5.2.3 Message size exceeds fixed maximum message size", "soft"),
    # undetermined: nothing says, or the message's content or media (X.6.x), not the address
    ("5.0.0", 554, "5.0.0 Service unavailable", "undetermined"),
    ("5.6.7", 553, "5.6.7 address cannot be sent without SMTPUTF8 (the relay does not offer it)", "undetermined"),
    ("5.6.7", 553, "5.6.7 Non-ASCII addresses not permitted for that recipient: user unknown?", "undetermined"),
    (None, 550, "Requested action not taken", "undetermined"),
])
def test_a_refusal_is_classified_by_its_code_then_its_phrase(status: str | None, code: int | None, text: str,
                                                             expected: str) -> None:
    assert classify_bounce(status=status, smtp_code=code, text=text, permanent=True).bounce_class == expected


def test_codes_are_found_in_text_but_not_in_version_numbers_addresses_or_counts() -> None:
    assert classify_bounce(status=None, smtp_code=None, text="host said: 550 5.1.1 user unknown").bounce_class == "hard"
    # Exim 4.96.1, the IP 5.6.7.8 and "452 messages" are not status or reply codes: nothing classifies this.
    text = "Exim 4.96.1 at 5.6.7.8 tried 452 messages"
    assert classify_bounce(status=None, smtp_code=None, text=text).bounce_class == "undetermined"


def dsn(*blocks: str, human: str = "Your message could not be delivered.") -> email.message.Message:
    fields = "\n".join(f"Final-Recipient: rfc822; anna@t-online.de\n{block}\n" for block in blocks)
    return email.message_from_string(
        "From: MAILER-DAEMON@mx.example.org\nContent-Type: multipart/report; report-type=delivery-status; "
        f"boundary=B\n\n--B\nContent-Type: text/plain\n\n{human}\n--B\nContent-Type: message/delivery-status\n\n"
        f"Reporting-MTA: dns; mx.example.org\n\n{fields}\n--B--\n")


@pytest.mark.parametrize(("block", "expected"), [
    ("Action: failure\nStatus: 5.1.1", ("hard", "5.1.1", None)),
    ("Action: failed (Bad destination mailbox address)\nStatus: 5.1.1 (Bad destination mailbox address)",
     ("hard", "5.1.1", None)),
    ("Action: failed\nStatus: 553\nDiagnostic-Code: smtp; 553 sorry, no mailbox here by that name",
     ("hard", None, 553)),
    ("Action: FAILED\nStatus: 5.0.0\nDiagnostic-Code: smtp; 550-5.7.1 [192.0.2.7] Our system has detected that "
     "this message is likely unsolicited mail.", ("block", "5.0.0", 550)),
    ("Action: failed\nStatus: 5.0.0\nDiagnostic-Code: smtp; 554 5.0.0 Service unavailable", ("undetermined", "5.0.0",
                                                                                           554)),
    ("Action: delayed\nStatus: 4.4.7", ("soft", "4.4.7", None)),
    ("Action: failed\nStatus: 4.4.7\nDiagnostic-Code: smtp; 451 4.4.7 delivery time expired", ("soft", "4.4.7", 451)),
    ("Status: 5.2.1\nDiagnostic-Code: smtp; 550 5.2.1 account disabled", ("hard", "5.2.1", 550)),
])
def test_lenient_dsns_are_read(block: str, expected: tuple[str, str | None, int | None]) -> None:
    [finding] = READER.findings(dsn(block))
    assert (finding.bounce_class, finding.status, finding.smtp_code) == expected
    assert finding.reporting == "mx.example.org"


def test_a_bounce_reports_addresses_are_left_out_of_its_diagnostic() -> None:
    """The message id says whose bounce it is; an address quoted in the report would outlive an erasure."""
    block = ("Action: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 <anna@t-online.de>: Recipient "
             "address rejected; write to postmaster@t-online.de")
    [finding] = READER.findings(dsn(block))
    assert finding.bounce_class == "hard" and "@" not in finding.diagnostic
    assert finding.diagnostic.startswith("550 5.1.1 <address>: Recipient address rejected; write to address [hard")
    [other] = READER.findings(email.message_from_string(QMAIL.format(
        reason="Remote host said: 550 5.1.1 <anna.k@t-online.de>... User unknown", return_path="b@x.example",
        message_id="m@x.example")))
    assert "@" not in other.diagnostic and "User unknown" in other.diagnostic


def test_a_dsn_naming_the_recipient_many_times_gives_one_finding_per_class() -> None:
    report = dsn(*["Action: failed\nStatus: 5.1.1"] * 6, "Action: delayed\nStatus: 4.2.2")
    assert sorted(f.bounce_class or "" for f in READER.findings(report)) == ["hard", "soft"]


def test_a_delivery_status_report_without_usable_fields_is_read_as_any_other_bounce() -> None:
    report = email.message_from_string(
        "From: MAILER-DAEMON@web-de.example\nContent-Type: multipart/report; report-type=delivery-status; "
        "boundary=B\n\n--B\nContent-Type: text/plain\n\n<anna@web-de.example>: host mx.web-de.example said: "
        "550 Requested action not taken: mailbox unavailable\n--B\nContent-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; mx.web-de.example\n\n--B--\n")
    [finding] = READER.findings(report)
    assert (finding.bounce_class, finding.smtp_code) == ("hard", 550)
    assert "mailbox unavailable" in finding.diagnostic


QMAIL = ("From: MAILER-DAEMON@mx.t-online.de\nSubject: failure notice\n\nHi. This is the qmail-send program at "
         "mx.t-online.de.\nI'm afraid I wasn't able to deliver your message to the following addresses.\nThis is a "
         "permanent error; I've given up. Sorry it didn't work out.\n\n<anna.k@t-online.de>:\n{reason}\n\n"
         "--- Below this line is a copy of the message.\n\nReturn-Path: <{return_path}>\nMessage-ID: <{message_id}>\n"
         "Subject: Our spring sale: no spam, just deals\n\nNot blocked by anything, no such user here.\n")


@pytest.mark.parametrize(("reason", "expected"), [
    ("Sorry, no mailbox here by that name. (#5.1.1)", "hard"),
    ("192.0.2.9 does not like recipient.\nRemote host said: 550 5.7.1 Message rejected as spam", "block"),
    ("Remote host said: 554 blocked, your IP is listed on a DNSBL", "block"),
    ("Remote host said: 552 5.2.2 Mailbox full", "soft"),
    # qmail's format says "permanent error" for the address and nothing contradicts it
    ("The mail system could not make sense of this.", "hard"),
])
def test_plain_text_bounces_for_hyphenated_domains_are_classified_from_their_explanation(reason: str,
                                                                                         expected: str) -> None:
    """Only the explanation counts: the quoted original below the marker mentions spam, blocks and users."""
    text = QMAIL.format(reason=reason, return_path="someone@acme.example", message_id="x@acme.example")
    assert [f.bounce_class for f in READER.findings(email.message_from_string(text))] == [expected]


def test_a_bounce_in_no_known_format_with_nothing_to_classify_it_is_undetermined() -> None:
    mail = email.message_from_string("From: postmaster@mail.t-online.de\nSubject: Returned mail\n\n"
                                     "Your mail to anna.k@t-online.de could not be handled.\n")
    [finding] = READER.findings(mail)
    assert (finding.kind, finding.bounce_class) == ("bounce", "undetermined")


def test_a_plain_text_bounce_quoting_our_signed_message_id_or_return_path_names_the_message() -> None:
    by_message_id = QMAIL.format(reason="no mailbox", return_path="someone@acme.example",
                                 message_id=f"{TOKENS.signed_id(MESSAGE_ID)}@bounces.example")
    assert READER.message_ids([], email.message_from_string(by_message_id)) == [MESSAGE_ID]
    by_return_path = QMAIL.format(reason="no mailbox", message_id="x@acme.example",
                                  return_path=f"{TOKENS.tagged_local_part('b', MESSAGE_ID)}@bounces.example")
    assert READER.message_ids([], email.message_from_string(by_return_path)) == [MESSAGE_ID]
    forged = QMAIL.format(reason="no mailbox", return_path="someone@acme.example",
                          message_id=f"{MESSAGE_ID}.aaaaaaaaaaaaaaaa@bounces.example")
    assert READER.message_ids([], email.message_from_string(forged)) == []
