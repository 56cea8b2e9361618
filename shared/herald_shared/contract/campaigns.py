"""Events of the campaigns service (topic `herald.campaigns`): a campaign from draft to review, queue and completion."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, StringConstraints

from .envelope import (
    MAX_REQUEST_BYTES,
    ApiKeyRefusedPayload,
    Count,
    Email,
    Event,
    Identifier,
    Instant,
    Name,
    Payload,
    ShortText,
    personal_data,
)
from .subscriptions import FieldName, FieldValue

Subject = Annotated[str, StringConstraints(min_length=1, max_length=998)]
Preheader = Annotated[str, StringConstraints(max_length=255)]
# A body travels whole in one event, one Kafka record, so no body is longer in characters than a record holds in
# bytes (a character is at least one byte of JSON). Until 2026-12-07 the bound was 2,000,000, more than any record
# carries; no event with a longer body than this could ever be published, so the tighter bound refuses none that
# was (`compat.RECORD_BOUND_LENGTH`). Not campaigns' 1,000,000 bytes an event (`MAX_EVENT_BYTES`): drafts with
# bodies of up to ~1,048,000 characters were published before that rule, and a rebuild would dead-letter them.
Body = Annotated[str, StringConstraints(max_length=MAX_REQUEST_BYTES)]
TimeZone = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class CampaignContent(Payload):
    subject: Subject
    preheader: Preheader | None = Field(
        default=None, description="The preview line inboxes show after the subject (rendered hidden at the top "
                                  "of the HTML part).")
    from_name: Name
    from_email: Email = Field(description="The sender address (the account's, not a subscriber's).")
    reply_to: Email | None = None
    html_body: Body | None = None
    text_body: Body


class Segment(Payload):
    """Which active members of the list get the campaign: custom-field equality, all must match."""

    field_equals: dict[FieldName, FieldValue] = Field(default_factory=dict)


class CampaignsEvent(Event):
    topic: ClassVar[str] = "herald.campaigns"


class CampaignCreatedPayload(Payload):
    campaign_id: Identifier
    name: Name
    list_id: Identifier
    segment: Segment = Segment()
    content: CampaignContent


class CampaignCreated(CampaignsEvent):
    type: Literal["CampaignCreated"] = "CampaignCreated"
    payload: CampaignCreatedPayload


class CampaignEditedPayload(CampaignCreatedPayload):
    """The draft as it is now, whole (name, target and content): folding needs no earlier version."""


class CampaignEdited(CampaignsEvent):
    type: Literal["CampaignEdited"] = "CampaignEdited"
    payload: CampaignEditedPayload


class CampaignDeletedPayload(Payload):
    campaign_id: Identifier


class CampaignDeleted(CampaignsEvent):
    """A draft deleted; a campaign that was submitted or sent is never deleted."""

    type: Literal["CampaignDeleted"] = "CampaignDeleted"
    payload: CampaignDeletedPayload


ReviewReason = Literal["account_not_approved", "trial", "flagged"]


class ScreeningMatch(Payload):
    """One reason content screening flagged a campaign: explainable to staff and to the author."""

    category: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    matched: ShortText = Field(description="The text (or link) that matched, as written.")
    where: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="subject, preheader, html_body, text_body or link.")
    rule: ShortText = Field(description="The phrase or domain of the category's list that it matched.")


class CampaignSubmittedPayload(Payload):
    campaign_id: Identifier
    submitted_by: Name
    review_required: bool = Field(description="True when staff must approve it first (see review_reasons).")
    review_reasons: list[ReviewReason] = Field(
        default_factory=list, description="Why it goes to staff review: the account is not approved yet, it is "
                                          "on trial (every campaign is reviewed), or screening flagged it.")
    screening: list[ScreeningMatch] = Field(default_factory=list,
                                            description="What content screening matched (empty: nothing).")
    send_at: Instant | None = Field(default=None, description="When to send (UTC); now when absent.")
    time_zone: TimeZone | None = Field(default=None, description="The IANA zone the sender scheduled in.")


class CampaignSubmitted(CampaignsEvent):
    type: Literal["CampaignSubmitted"] = "CampaignSubmitted"
    payload: CampaignSubmittedPayload


class CampaignApprovedPayload(Payload):
    campaign_id: Identifier
    reviewer: Name
    note: ShortText | None = None


class CampaignApproved(CampaignsEvent):
    type: Literal["CampaignApproved"] = "CampaignApproved"
    payload: CampaignApprovedPayload


class CampaignRejectedPayload(Payload):
    campaign_id: Identifier
    reviewer: Name
    reasons: list[ShortText] = Field(min_length=1)


class CampaignRejected(CampaignsEvent):
    type: Literal["CampaignRejected"] = "CampaignRejected"
    payload: CampaignRejectedPayload


class StaffViewedPayload(Payload):
    campaign_id: Identifier
    staff: Name = Field(description="The staff member (their credential's name).")
    action: Literal["review_queue", "campaign", "approve", "reject"]


class StaffViewed(CampaignsEvent):
    """Audit: a member of the platform staff looked at (or decided on) a campaign of the account."""

    type: Literal["StaffViewed"] = "StaffViewed"
    payload: StaffViewedPayload


class ApiKeyRefusedByCampaigns(CampaignsEvent):
    """Audit: the campaigns API refused an API key of the account (billing's audit log shows it to the account's
    owner as a failed attempt)."""

    type: Literal["ApiKeyRefusedByCampaigns"] = "ApiKeyRefusedByCampaigns"
    payload: ApiKeyRefusedPayload


class CampaignTestRequestedPayload(Payload):
    """A test send of the campaign as it is now: delivery renders and sends it like any message, marked as a
    test (never counted in reports or rates; in quotas only on the trial, whose 100 emails tests count toward)."""

    campaign_id: Identifier
    test_id: Identifier
    recipients: list[Email] = personal_data("Where the test goes (the customer's own addresses, as a rule).",
                                            min_length=1, max_length=5)
    content: CampaignContent
    sample: dict[FieldName, FieldValue] = Field(
        default_factory=dict, description="The values merge tags render with (a chosen member or a sample).")
    requested_by: Name


class CampaignTestRequested(CampaignsEvent):
    type: Literal["CampaignTestRequested"] = "CampaignTestRequested"
    payload: CampaignTestRequestedPayload


class CampaignQueuedPayload(Payload):
    """Everything delivery needs to send, so it never asks another service."""

    campaign_id: Identifier
    list_id: Identifier
    segment: Segment = Segment()
    content: CampaignContent
    send_at: Instant | None = Field(default=None, description="Not before this time; now when absent.")
    review_required: bool = Field(description="Whether delivery must also see CampaignApproved before sending.")


class CampaignQueued(CampaignsEvent):
    type: Literal["CampaignQueued"] = "CampaignQueued"
    payload: CampaignQueuedPayload


class CampaignCancelledPayload(Payload):
    campaign_id: Identifier
    cancelled_by: Name
    reason: ShortText | None = None


class CampaignCancelled(CampaignsEvent):
    type: Literal["CampaignCancelled"] = "CampaignCancelled"
    payload: CampaignCancelledPayload


class CampaignCompletedPayload(Payload):
    """How each message of the campaign ended, as delivery's CampaignDeliveryFinished counts them: recipients =
    sent + bounced + failed, and `skipped` and `cancelled` say how many of `failed` were not made for those
    reasons (v1's meaning of `failed` is kept: every message neither sent nor bounced). Not the report's figures:
    the report's `sent` is every message handed to a receiving server (`sent` here plus the bounces here but those
    never handed over), its `delivered` is `sent` here less the messages a later report (DSN) said failed, and its
    bounces count those DSNs too."""

    campaign_id: Identifier
    recipients: Count = Field(description="Messages the campaign was expanded into: one per member of its audience "
                                          "when it was queued.")
    sent: Count = Field(description="Accepted by the receiving server (MessageSent); a bounce reported later about "
                                    "one of them stays counted here.")
    bounced: Count = Field(description="Refused when sent, given up after the retry period, or never handed to the "
                                       "relay (MessageBounced with source smtp_reply, retry_expired or local).")
    failed: Count = Field(default=0, description=(
        "Neither sent nor bounced: the message could not be made (a member's values broke a render limit, the "
        "stored content no longer compiles), or was skipped or cancelled (the two fields below, parts of this "
        "one; failed - skipped - cancelled could not be made)."))
    skipped: Count = Field(default=0, description=(
        "Of `failed`: the member left the audience (unsubscribed, suppressed, erased, the list deleted) after the "
        "campaign was queued. 0 in events published before 2026-12-07, which had no such field."))
    cancelled: Count = Field(default=0, description=(
        "Of `failed`: the campaign was cancelled or rejected first (a completed campaign has none today: one "
        "cancelled is never completed). 0 in events published before 2026-12-07."))


class CampaignCompleted(CampaignsEvent):
    type: Literal["CampaignCompleted"] = "CampaignCompleted"
    payload: CampaignCompletedPayload


# Why a scheduled campaign went back to draft. A value added here is a compatible change (no new version), but a
# consumer running the contract of before refuses an event carrying it (dead-lettered, replayable once upgraded):
# deploy the consumers of herald.campaigns (campaigns, delivery) before the producer (README, "The event contract").
ReturnReason = Literal["sender_unverified", "content_too_large", "content_refused", "too_many_links",
                       "list_deleted"]


class CampaignReturnedPayload(Payload):
    campaign_id: Identifier
    reason: ReturnReason = Field(
        description="sender_unverified: at its send time, the From address was at no verified sending domain of "
                    "the account any more (removed after the submission). content_too_large: its CampaignQueued "
                    "would be larger than one event may be (a draft stored before campaigns' size rule of "
                    "2026-12-07); the author makes the content smaller and submits it again. content_refused: a "
                    "link takes its scheme or host from template code, and too_many_links: the HTML holds more "
                    "tracked links than a campaign may (both refused at save and submission since 2026-12-07; "
                    "the campaign was scheduled before); the author edits it and submits it again. list_deleted: "
                    "the list it goes to was deleted after the submission; the author chooses another list and "
                    "submits it again.")
    detail: ShortText = Field(description="What the author reads: which domain, or the event's encoded size and "
                                          "the limit, and how to send it again.")


class CampaignReturned(CampaignsEvent):
    """A scheduled campaign that could not be queued at its time goes back to a draft (never to delivery): the
    author fixes it and submits it again."""

    type: Literal["CampaignReturned"] = "CampaignReturned"
    payload: CampaignReturnedPayload


class CampaignUnscheduledPayload(Payload):
    campaign_id: Identifier
    unscheduled_by: Name
    reason: ShortText | None = None


class CampaignUnscheduled(CampaignsEvent):
    """Its author took a campaign in review or scheduled back to a draft, before it was queued (delivery never had
    it): it is edited and submitted again, reviewed again where the account's rules say so. A queued campaign is
    only ever cancelled."""

    type: Literal["CampaignUnscheduled"] = "CampaignUnscheduled"
    payload: CampaignUnscheduledPayload


# Sending domains: an account sends From a domain it proved it controls (a DNS TXT record), or a subdomain of one.

# Lower case, each international label as its A-label (IDNA), no trailing dot; at most 232 characters, so that
# `_herald-verification.<domain>` is a name DNS can hold (253).
DomainName = Annotated[str, StringConstraints(min_length=3, max_length=232,
                                              pattern=r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*"
                                                      r"[a-z0-9])?)+$")]
VerificationToken = Annotated[str, StringConstraints(min_length=16, max_length=64, pattern=r"^[a-z0-9]+$")]


class VerificationRecord(Payload):
    """The DNS record that proves an account controls a domain: TXT `herald-verification=<token>` at
    `_herald-verification.<domain>`."""

    type: Literal["TXT"] = "TXT"
    name: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    value: Annotated[str, StringConstraints(min_length=1, max_length=255)]


class SendingDomainAddedPayload(Payload):
    domain: DomainName
    token: VerificationToken = Field(
        description="Random (128 bits, base32): the account publishes TXT `herald-verification=<token>` at "
                    "`_herald-verification.<domain>`. Not a secret: it is shown to the account.")


class SendingDomainAdded(CampaignsEvent):
    """An account added a domain to send From: pending until its verification record is found in DNS."""

    type: Literal["SendingDomainAdded"] = "SendingDomainAdded"
    payload: SendingDomainAddedPayload


class SendingDomainVerifiedPayload(Payload):
    domain: DomainName
    record: VerificationRecord = Field(description="The record found in DNS when it was verified.")


class SendingDomainVerified(CampaignsEvent):
    """The domain's verification record was found: the account's campaigns may go From it and its subdomains."""

    type: Literal["SendingDomainVerified"] = "SendingDomainVerified"
    payload: SendingDomainVerifiedPayload


class SendingDomainRemovedPayload(Payload):
    domain: DomainName


class SendingDomainRemoved(CampaignsEvent):
    """The account removed a sending domain: no campaign of it is queued From it (or a subdomain) any more."""

    type: Literal["SendingDomainRemoved"] = "SendingDomainRemoved"
    payload: SendingDomainRemovedPayload


# Per-customer DKIM keys: delivery makes a key pair for each sending domain added (DkimKeyCreated, on
# herald.delivery), campaigns shows its public half as a DNS record to publish and checks DNS for it.

# A DKIM selector as Herald names its own (`herald1`): one DNS label, lower case.
DkimSelector = Annotated[str, StringConstraints(min_length=1, max_length=63,
                                                pattern=r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")]
# A public key as DKIM's p= tag carries it: base64 of its DER (SubjectPublicKeyInfo, for RSA).
DkimPublicKey = Annotated[str, StringConstraints(min_length=16, max_length=2048, pattern=r"^[A-Za-z0-9+/]+={0,2}$")]


class DkimRecord(Payload):
    """The DNS record of a sending domain's DKIM key: TXT `v=DKIM1; k=rsa; p=<public key>` at
    `<selector>._domainkey.<domain>`."""

    type: Literal["TXT"] = "TXT"
    name: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    value: Annotated[str, StringConstraints(min_length=1, max_length=2100)]


class SendingDomainDkimVerifiedPayload(Payload):
    domain: DomainName
    selector: DkimSelector
    public_key: DkimPublicKey = Field(description="The key (delivery's DkimKeyCreated) whose record was found.")
    record: DkimRecord = Field(description="The record found in DNS when it was verified.")


class SendingDomainDkimVerified(CampaignsEvent):
    """The DKIM record of a sending domain's key was found in its DNS: delivery signs the account's mail From the
    domain (and its subdomains) with that key, `d=<domain>`, which DMARC aligns with the From."""

    type: Literal["SendingDomainDkimVerified"] = "SendingDomainDkimVerified"
    payload: SendingDomainDkimVerifiedPayload
