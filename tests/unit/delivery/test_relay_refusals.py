"""Our relay refusing Herald (relaying denied, AUTH, our sender) is the platform's problem, deferred and never a
bounce; a receiver's refusal relayed back synchronously stays the bounce it is. The replies are the wordings of
Postfix, Sendmail, Exim, qmail, Exchange Online, Gmail's SMTP relay, Amazon SES and SendGrid."""

from __future__ import annotations

from typing import Literal

import pytest

from herald_delivery.domain import SmtpReply, classify, classify_bounce, refuses_us, relay_refused

Stage = Literal["connect", "mail", "rcpt", "data"]

OUR_RELAY_REFUSES_US: list[tuple[Stage, int, str]] = [
    ("rcpt", 554, "5.7.1 <anna@example.org>: Relay access denied"),  # Postfix reject_unauth_destination
    ("rcpt", 553, "5.7.1 <news@acme.example>: Sender address rejected: not owned by user herald"),  # login mismatch
    ("rcpt", 450, "4.1.8 <b+x@bounces.example>: Sender address rejected: Domain not found"),  # 4xx: deferred anyway
    ("rcpt", 550, "5.1.8 <b+x@bounces.example>: Sender address rejected: Domain not found"),
    ("rcpt", 550, "5.1.0 <b+x@bounces.example>: Sender address rejected: User unknown in local recipient table"),
    ("rcpt", 550, "5.7.1 <anna@example.org>... Relaying denied. Proper authentication required."),  # Sendmail
    ("rcpt", 550, "relay not permitted"),  # Exim
    ("rcpt", 550, "relaying to <anna@example.org> prohibited by administrator"),  # Exim
    ("rcpt", 553, "sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"),  # qmail
    ("rcpt", 550, "5.7.54 SMTP; Unable to relay recipient in non-accepted domain"),  # Exchange Online
    ("rcpt", 550, "5.7.64 TenantAttribution; Relay Access Denied"),  # Exchange Online
    ("rcpt", 530, "5.7.57 Client not authenticated to send mail. [AM0PR01CA0001.eurprd01.prod.exchangelabs.com]"),
    ("data", 550, "5.7.60 SMTP; Client does not have permissions to send as this sender"),  # Exchange Online
    ("rcpt", 550, "5.7.1 Unable to relay"),  # Exchange on premises
    ("rcpt", 550, "5.7.0 Mail relay denied [203.0.113.5]. Invalid credentials for relay for one of the domains "
                  "in: acme.example (as obtained from HELO and MAIL FROM)."),  # Gmail's SMTP relay
    ("rcpt", 550, "5.7.1 Invalid credentials for relay [203.0.113.5]. The IP address you've registered in your "
                  "Workspace SMTP Relay service doesn't match the domain of the account this email is being sent "
                  "from."),  # Gmail's SMTP relay
    ("rcpt", 530, "5.7.0 Authentication Required. Learn more at https://support.google.com/mail/?p=WantAuthError"),
    ("data", 530, "5.7.0 Must issue a STARTTLS command first"),  # RFC 3207
    ("data", 535, "5.7.8 Username and Password not accepted."),  # RFC 4954, Gmail
    ("data", 554, "Message rejected: Email address is not verified. The following identities failed the check "
                  "in region EU-WEST-1: news@acme.example"),  # Amazon SES
    ("data", 554, "Message rejected: Sending paused for this account. For more information, please check the AWS "
                  "Management Console."),  # Amazon SES
    ("data", 554, "Access denied: User `arn:aws:iam::123456789012:user/herald' is not authorized to perform "
                  "`ses:SendRawEmail' on resource"),  # Amazon SES
    ("data", 535, "Authentication Credentials Invalid"),  # Amazon SES
    ("data", 550, "The from address does not match a verified Sender Identity. Mail cannot be sent until this "
                  "error is resolved."),  # SendGrid
    ("rcpt", 550, "Unauthenticated senders not allowed"),  # SendGrid
    ("data", 535, "Authentication failed: Bad username / password"),  # SendGrid
]

THE_RECIPIENT_REFUSES: list[tuple[Stage, int, str, str]] = [
    ("data", 550, "5.7.1 message rejected as spam by the recipient's server", "block"),
    ("data", 550, "5.7.1 [203.0.113.5] Our system has detected that this message is likely unsolicited mail.",
     "block"),  # Gmail as the receiver
    ("data", 550, "5.7.26 Unauthenticated email from acme.example is not accepted due to domain's DMARC policy.",
     "block"),  # Gmail as the receiver: "unauthenticated" is no relay refusal
    ("data", 550, "5.7.1 Unauthenticated email is not accepted from this domain.", "block"),
    ("rcpt", 554, "5.7.1 Service unavailable; Client host [203.0.113.5] blocked using zen.spamhaus.org", "block"),
    ("rcpt", 550, "5.7.606 Access denied, banned sending IP [203.0.113.5].", "block"),  # Microsoft as receiver
    ("data", 550, "5.7.1 The user or domain that you are sending to (or from) has a policy that prohibited the mail "
                  "that you sent.", "block"),
    ("rcpt", 554, "5.7.1 <anna@example.org>: Recipient address rejected: Access denied", "block"),
    ("rcpt", 550, "5.4.1 Recipient address rejected: Access denied. AS(201806281)", "hard"),  # Microsoft 365
    ("rcpt", 550, "5.1.1 <anna@example.org>: Recipient address rejected: User unknown in relay recipient table",
     "hard"),  # Postfix relay_recipient_maps: the relay knows the recipient is gone
    ("rcpt", 550, "5.1.1 The email account that you tried to reach does not exist.", "hard"),
    ("data", 552, "5.2.2 The email account that you tried to reach is over quota.", "soft"),
]


@pytest.mark.parametrize(("stage", "code", "text"), OUR_RELAY_REFUSES_US)
def test_our_relay_refusing_us_is_deferred_never_a_bounce(stage: Stage, code: int, text: str) -> None:
    """PRODUCT.md: accounts are suspended for their own sending, not the platform's configuration."""
    reply = SmtpReply(code, text, stage=stage)
    assert classify(reply) == "deferred"
    assert refuses_us(reply) == (code >= 500)


@pytest.mark.parametrize(("stage", "code", "text", "bounce_class"), THE_RECIPIENT_REFUSES)
def test_a_receivers_refusal_relayed_back_stays_its_bounce(stage: Stage, code: int, text: str,
                                                            bounce_class: str) -> None:
    reply = SmtpReply(code, text, stage=stage)
    assert not relay_refused(reply) and not refuses_us(reply)
    assert classify(reply) == ("deferred" if bounce_class == "soft" and code < 500 else "bounced")
    verdict = classify_bounce(status=reply.enhanced_status, smtp_code=code, text=text, permanent=True)
    assert verdict.bounce_class == bounce_class


def test_a_refusal_of_our_mail_from_is_about_us_and_a_local_one_is_not() -> None:
    assert refuses_us(SmtpReply(550, "5.7.1 Sender rejected", stage="mail"))
    assert classify(SmtpReply(550, "5.7.1 Sender rejected", stage="mail")) == "deferred"
    local = SmtpReply(553, "5.6.7 address cannot be sent without SMTPUTF8", stage="mail", local=True)
    assert not refuses_us(local)
    assert not refuses_us(SmtpReply(None, "connection refused", stage="connect"))
