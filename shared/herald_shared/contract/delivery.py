"""Events of the delivery service (topic `herald.delivery`): sending outcomes, bounces, complaints, engagement."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, StringConstraints

from .campaigns import DkimPublicKey, DkimSelector, DomainName
from .envelope import (
    Count,
    EmailHash,
    Event,
    HttpUrl,
    Identifier,
    Instant,
    Name,
    Payload,
    ShortText,
    StorableInt,
    personal_data,
)

SmtpCode = Annotated[int, Field(ge=200, le=599)]
EnhancedStatus = Annotated[str, StringConstraints(pattern=r"^[245]\.[0-9]{1,3}\.[0-9]{1,3}$")]
Domain = Annotated[str, StringConstraints(min_length=1, max_length=255)]
# "test": a test send of a campaign (CampaignTestRequested); reported, never counted in rates or reports, nor in quotas
# but the trial's 100 emails.
MessageKind = Literal["campaign", "confirmation", "account_notice", "test"]


class DeliveryEvent(Event):
    topic: ClassVar[str] = "herald.delivery"


class MessageRef(Payload):
    """Ties an outcome to its message; campaign and subscriber are absent for account notices, the subscriber
    for test sends (kind "test")."""

    message_id: Identifier = Field(description="Deterministic: the same campaign and subscriber give the same id.")
    kind: MessageKind = "campaign"
    campaign_id: Identifier | None = None
    subscriber_id: Identifier | None = None
    list_id: Identifier | None = None


class MessageSentPayload(MessageRef):
    recipient_domain: Domain
    smtp_code: SmtpCode
    smtp_reply: ShortText | None = None
    attempt: Annotated[int, Field(ge=1), StorableInt] = 1


class MessageSent(DeliveryEvent):
    """The relay accepted the message (2xx). Counts as one email sent against quotas and credits."""

    type: Literal["MessageSent"] = "MessageSent"
    payload: MessageSentPayload


class MessageDeferredPayload(MessageRef):
    smtp_code: SmtpCode | None = Field(default=None, description="Absent when the connection failed.")
    enhanced_status_code: EnhancedStatus | None = None
    diagnostic: ShortText
    attempt: Annotated[int, Field(ge=1), StorableInt]
    next_attempt_at: Instant


class MessageDeferred(DeliveryEvent):
    type: Literal["MessageDeferred"] = "MessageDeferred"
    payload: MessageDeferredPayload


BounceClass = Literal["hard", "soft", "block", "undetermined"]


class MessageBouncedPayload(MessageRef):
    bounce_class: BounceClass = Field(description=(
        "hard: the address is invalid (suppressed, counts toward the hard-bounce rate); soft: a temporary "
        "failure (reported only); block: the receiver refused our mail, not the address (policy, spam, "
        "reputation, authentication; counts toward the block rate); undetermined: a report tied to the message "
        "that nothing classifies (reported only)."))
    smtp_code: SmtpCode | None = None
    enhanced_status_code: EnhancedStatus | None = None
    diagnostic: ShortText
    source: Literal["smtp_reply", "dsn", "retry_expired", "local"] = Field(description=(
        "smtp_reply: the relay refused the message in the SMTP transaction; dsn: a report that came back "
        "later (the message was sent); retry_expired: deferred until the give-up age; local: never handed to "
        "the relay, whose path cannot carry the address (5.6.7: a non-ASCII address and no SMTPUTF8)."))
    reporting_mta: Domain | None = None


class MessageBounced(DeliveryEvent):
    type: Literal["MessageBounced"] = "MessageBounced"
    payload: MessageBouncedPayload


class ComplaintReceivedPayload(MessageRef):
    feedback_type: Literal["abuse", "fraud", "virus", "not-spam", "other"]
    reporting_domain: Domain
    arrival_date: Instant | None = None


class ComplaintReceived(DeliveryEvent):
    """A feedback-loop (ARF) report. Who complained is never shown to the customer: reports give counts only."""

    type: Literal["ComplaintReceived"] = "ComplaintReceived"
    payload: ComplaintReceivedPayload


class ClientContext(Payload):
    ip: str | None = personal_data("IP address of the opening/clicking client.", default=None)
    user_agent: ShortText | None = personal_data("User agent of the client.", default=None)
    device: Literal["desktop", "mobile", "tablet", "bot", "other"] | None = None
    browser: Annotated[str, StringConstraints(max_length=100)] | None = None
    country: Annotated[str, StringConstraints(max_length=2)] | None = None
    city: Annotated[str, StringConstraints(max_length=100)] | None = personal_data("City, where known.",
                                                                                  default=None)


class EngagementPayload(MessageRef):
    """An open or a click: who asked, and whether a machine rather than the reader did."""

    client: ClientContext
    automated: bool = Field(default=False, description=(
        "Made by a machine, not the reader: a mail scanner fetching the image or following the link (known by "
        "its user agent), or a request with no user agent. It got the same image or redirect; reports count it "
        "apart from the readers' opens and clicks. False on events from before the mark existed."))
    automated_reason: Annotated[str, StringConstraints(max_length=100)] | None = Field(default=None, description=(
        "Why it is marked: `no_user_agent`, or `scanner:<name>` (e.g. scanner:proofpoint); null when "
        "`automated` is false."))


class MessageOpenedPayload(EngagementPayload):
    pass


class MessageOpened(DeliveryEvent):
    type: Literal["MessageOpened"] = "MessageOpened"
    payload: MessageOpenedPayload


class LinkClickedPayload(EngagementPayload):
    url: HttpUrl
    link_index: Annotated[int, Field(ge=0), StorableInt]


class LinkClicked(DeliveryEvent):
    type: Literal["LinkClicked"] = "LinkClicked"
    payload: LinkClickedPayload


class DeliveryHeldPayload(Payload):
    campaign_id: Identifier | None = None
    gate: Literal["account_suspended", "sending_blocked", "account_review", "campaign_review", "send_allowance"]
    reason: ShortText
    messages_held: Count


class DeliveryHeld(DeliveryEvent):
    """A closed gate holds messages; none is dropped, and they go out when it opens."""

    type: Literal["DeliveryHeld"] = "DeliveryHeld"
    payload: DeliveryHeldPayload


class UnsubscribeRequestedPayload(MessageRef):
    channel: Literal["mailto"] = Field(description="How the recipient asked: a mail to the message's "
                                                   "List-Unsubscribe mailto address (RFC 2369).")


class UnsubscribeRequested(DeliveryEvent):
    """A recipient asked to unsubscribe by mail; subscriptions unsubscribes them (it owns the membership)."""

    type: Literal["UnsubscribeRequested"] = "UnsubscribeRequested"
    payload: UnsubscribeRequestedPayload


class CampaignDeliveryFinishedPayload(Payload):
    """How each message of the campaign ended: recipients = sent + bounced + skipped + failed + cancelled."""

    campaign_id: Identifier
    recipients: Count = Field(description="Messages the campaign was expanded into: one per member of its "
                                          "audience when it was queued (0 when nobody was).")
    sent: Count = Field(description="Accepted by the relay (MessageSent).")
    bounced: Count = Field(description=(
        "Refused by the receiving server when sent, or given up after the retry period, or never handed to the "
        "relay (MessageBounced with source smtp_reply, retry_expired or local). A bounce reported later about "
        "an accepted message stays in `sent` (its MessageBounced says so)."))
    skipped: Count = Field(description="Not sent: the member left the audience (unsubscribed, suppressed, "
                                       "erased, or the list was deleted) after the campaign was queued and "
                                       "before their message's turn.")
    failed: Count = Field(description="Not sent: the message could not be made (the member's values broke a "
                                      "render limit, the stored content no longer compiles).")
    cancelled: Count = Field(description="Not sent: the campaign was cancelled, or rejected by staff, first.")


class CampaignDeliveryFinished(DeliveryEvent):
    """Delivery is done with a campaign: every message it was expanded into has a final outcome (none is
    pending, held behind a closed gate or deferred for a retry). Published once per campaign, with an event
    id derived from the account and campaign; `occurred_at` is when the last outcome was recorded. Not for
    test sends or transactional mail."""

    type: Literal["CampaignDeliveryFinished"] = "CampaignDeliveryFinished"
    payload: CampaignDeliveryFinishedPayload


class StaffViewedMessagesPayload(Payload):
    """Who looked, and whom they looked up: one of the two is set, as the look-up named the person. Never an
    address: staff look a person up by the membership's id or the contract's hash of the address."""

    staff: Name = Field(description="The staff member (their credential's name).")
    subscriber_id: Identifier | None = Field(default=None, description=(
        "The membership looked up, when the look-up named a subscriber id; null otherwise."))
    email_sha256: EmailHash | None = Field(default=None, description=(
        "The person looked up (every membership of the address in the account), when the look-up named the "
        "sha256 of their address lower-cased, as SubscriberAdded's `email_sha256`; null otherwise."))


class StaffViewedMessages(DeliveryEvent):
    """Audit: a member of the platform staff read the delivery record of one person's messages in the account
    (support: was it sent, when, why not). Published before the answer leaves; billing's audit log shows it to
    the account's owner."""

    type: Literal["StaffViewedMessages"] = "StaffViewedMessages"
    payload: StaffViewedMessagesPayload


class DkimKeyCreatedPayload(Payload):
    domain: DomainName = Field(description="The account's sending domain (SendingDomainAdded) the key signs for.")
    selector: DkimSelector = Field(description="The key's DNS name is `<selector>._domainkey.<domain>`.")
    algorithm: Literal["rsa-sha256"] = "rsa-sha256"
    public_key: DkimPublicKey = Field(description="RSA (2,048 bits): base64 of the DER SubjectPublicKeyInfo, the "
                                                  "DKIM record's p= tag.")
    encrypted_private_key: Annotated[str, StringConstraints(min_length=16, max_length=8192,
                                                            pattern=r"^[A-Za-z0-9+/]+={0,2}$")] = Field(
        description="The private key (PKCS #8 DER) sealed with AES-256-GCM under a key only delivery holds "
                    "(HERALD_DKIM_ENCRYPTION_KEY), base64 of the 12-byte nonce followed by the ciphertext and tag; "
                    "associated data `<account_id> <domain> <selector>` (one space each), so a sealed key moved "
                    "to another account or domain does not open. Useless without that key: a rebuild of "
                    "delivery's store takes its keys from these events.")
    encryption_key_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")] = Field(
        description="The first 8 bytes of the SHA-256 of the key that sealed it, in hex: which key opens it.")
    sending_domain_added_id: Identifier = Field(
        description="event_id of the SendingDomainAdded the key was made for: a domain removed and added again "
                    "gets a new key, and the earlier one is folded by nobody.")


class DkimKeyCreated(DeliveryEvent):
    """Delivery made a DKIM key pair for an account's sending domain. Its event_id is derived from the
    SendingDomainAdded's: the first such event folded is the key (a redelivery may publish again)."""

    type: Literal["DkimKeyCreated"] = "DkimKeyCreated"
    payload: DkimKeyCreatedPayload
