"""Events of the subscriptions service (topic `herald.subscriptions`): lists, opt-in, consent, suppression, GDPR."""

from __future__ import annotations

import hashlib
from typing import Annotated, ClassVar, Literal

from pydantic import Field, StringConstraints, model_validator

from .envelope import (
    ApiKeyRefusedPayload,
    Count,
    Email,
    EmailHash,
    Event,
    FiniteFloat,
    HttpUrl,
    Identifier,
    Instant,
    KeysNamedByPattern,
    MapKey,
    Name,
    Payload,
    ShortText,
    StorableNumber,
    personal_data,
)

OptInMode = Literal["single", "double"]
FieldValue = Annotated[str | int | FiniteFloat | bool | None, StorableNumber]
FieldName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class CustomFieldDefinition(Payload):
    name: FieldName
    kind: Literal["text", "number", "date", "boolean"] = "text"


class ConsentEvidence(Payload):
    """How the person opted in (PRODUCT.md: imports only for people who opted in, with evidence)."""

    source: Literal["api", "form", "import"]
    collected_at: Instant
    method: ShortText = Field(description="Where consent was given, e.g. 'signup form on example.com'.")
    ip: str | None = personal_data("IP address the consent came from, where known.", default=None)
    user_agent: ShortText | None = personal_data("Browser user agent at consent, where known.", default=None)


class SubscriptionsEvent(Event):
    topic: ClassVar[str] = "herald.subscriptions"


class ListCreatedPayload(Payload):
    list_id: Identifier
    name: Name
    opt_in: OptInMode
    custom_fields: list[CustomFieldDefinition] = Field(default_factory=list)


class ListCreated(SubscriptionsEvent):
    type: Literal["ListCreated"] = "ListCreated"
    payload: ListCreatedPayload


class ListRenamedPayload(Payload):
    list_id: Identifier
    name: Name


class ListRenamed(SubscriptionsEvent):
    type: Literal["ListRenamed"] = "ListRenamed"
    payload: ListRenamedPayload


# An origin that may frame a list's hosted subscribe form (CSP frame-ancestors): scheme, host, optional port.
FrameOrigin = Annotated[str, StringConstraints(
    pattern=r"^https?://(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*(:[0-9]{1,5})?$",
    max_length=300)]
FormChallenge = Literal["none", "proof_of_work"]


class ListFormConfiguredPayload(Payload):
    list_id: Identifier
    frame_ancestors: list[FrameOrigin] = Field(default_factory=list, max_length=20, description=(
        "Origins whose pages may embed the hosted subscribe form in a frame; none by default."))
    challenge: FormChallenge = Field(default="none", description=(
        "A check every post of the hosted form must pass: proof_of_work makes the browser solve a small "
        "hash puzzle (a cost per post for a bot)."))


class ListFormConfigured(SubscriptionsEvent):
    """The list's hosted subscribe form: who may frame it and which challenge guards it (replaces the last)."""

    type: Literal["ListFormConfigured"] = "ListFormConfigured"
    payload: ListFormConfiguredPayload


class ListDeletedPayload(Payload):
    list_id: Identifier
    members_at_deletion: Count = Field(description="Members the list had; kept for one-off-sending checks.")


class ListDeleted(SubscriptionsEvent):
    type: Literal["ListDeleted"] = "ListDeleted"
    payload: ListDeletedPayload


class SubscriberAddedPayload(Payload):
    list_id: Identifier
    subscriber_id: Identifier
    email: Email = personal_data("The subscriber's address; delivery needs it to send.")
    email_sha256: EmailHash = Field(description=(
        "sha256 (hex) of the address lower-cased: how the person is found again (export, erasure, suppression "
        "across lists). A producer's hash that is not that (e.g. of the address in its own case) is read as "
        "the sha256 of the address lower-cased."))
    first_name: Name | None = personal_data("First name, for merge tags.", default=None)
    last_name: Name | None = personal_data("Last name, for merge tags.", default=None)
    phone: Annotated[str, StringConstraints(max_length=40)] | None = personal_data("Phone number.", default=None)
    custom_fields: dict[FieldName, FieldValue] = personal_data("Custom field values.", default_factory=dict)
    opt_in: OptInMode
    consent: ConsentEvidence

    @model_validator(mode="after")
    def _hash_of_the_address(self) -> SubscriberAddedPayload:
        # A producer (a CRM) hashing the address as written, in its case, would make a member no export or
        # erasure of the person's address can find. Read as the hash it stands for rather than refused: events
        # recorded before this rule are folded again in a rebuild, and every consumer then sees one hash.
        expected = hashlib.sha256(self.email.lower().encode()).hexdigest()
        if expected != self.email_sha256:
            object.__setattr__(self, "email_sha256", expected)
        return self


class SubscriberAdded(SubscriptionsEvent):
    """A person joined a list: active at once with single opt-in (SubscriberConfirmed follows), pending with double."""

    type: Literal["SubscriberAdded"] = "SubscriberAdded"
    payload: SubscriberAddedPayload


class ConfirmationRequestedPayload(Payload):
    list_id: Identifier
    subscriber_id: Identifier
    email: Email = personal_data("Where the confirmation email goes.")
    greeting_name: Name | None = personal_data("Name for the greeting line, if known.", default=None)
    list_name: Name
    company_name: Name
    confirm_url: HttpUrl = Field(description="Signed, expiring link; the email's only link.")
    expires_at: Instant


class ConfirmationRequested(SubscriptionsEvent):
    """Double opt-in: send the confirmation email, which carries only the request to confirm."""

    type: Literal["ConfirmationRequested"] = "ConfirmationRequested"
    payload: ConfirmationRequestedPayload


class SubscriberConfirmedPayload(Payload):
    list_id: Identifier
    subscriber_id: Identifier
    method: Literal["single_opt_in", "double_opt_in"]
    ip: str | None = personal_data("IP the confirmation link was opened from.", default=None)


class SubscriberConfirmed(SubscriptionsEvent):
    type: Literal["SubscriberConfirmed"] = "SubscriberConfirmed"
    payload: SubscriberConfirmedPayload


class SubscriberUnsubscribedPayload(Payload):
    list_id: Identifier
    subscriber_id: Identifier
    source: Literal["one_click", "unsubscribe_page", "preference_page", "api", "complaint", "mailto"]
    campaign_id: Identifier | None = Field(default=None, description="Campaign whose link was used; counts "
                                           "towards that campaign's unsubscribe rate.")
    message_id: Identifier | None = None


class SubscriberUnsubscribed(SubscriptionsEvent):
    type: Literal["SubscriberUnsubscribed"] = "SubscriberUnsubscribed"
    payload: SubscriberUnsubscribedPayload


class SubscriberSuppressedPayload(Payload):
    subscriber_id: Identifier
    email_sha256: EmailHash
    reason: Literal["hard_bounce", "complaint", "manual"]
    message_id: Identifier | None = None
    campaign_id: Identifier | None = None


class SubscriberSuppressed(SubscriptionsEvent):
    """The address may not be mailed by this account again, on any list, until a fresh double opt-in."""

    type: Literal["SubscriberSuppressed"] = "SubscriberSuppressed"
    payload: SubscriberSuppressedPayload


class SubscriberErasedPayload(Payload):
    subscriber_id: Identifier
    list_id: Identifier | None = None
    email_sha256: EmailHash = Field(description="Kept so a suppression still applies after erasure.")
    requested_by: Literal["subscriber", "account", "retention_policy"]


class SubscriberErased(SubscriptionsEvent):
    """GDPR erasure: every projection drops this subscriber's personal data."""

    type: Literal["SubscriberErased"] = "SubscriberErased"
    payload: SubscriberErasedPayload


class ImportCompletedPayload(Payload):
    import_id: Identifier
    list_id: Identifier
    rows_total: Count
    rows_imported: Count
    rows_rejected: Count
    rejected_by_reason: Annotated[dict[MapKey, Count], KeysNamedByPattern()] = Field(default_factory=dict)
    started_at: Instant


class ImportCompleted(SubscriptionsEvent):
    type: Literal["ImportCompleted"] = "ImportCompleted"
    payload: ImportCompletedPayload


class ListNotificationsConfiguredPayload(Payload):
    list_id: Identifier
    subscribes: bool = Field(description=(
        "Email the account's registered address when someone subscribes to the list (a confirmation by the "
        "subscriber, or the customer's API adding an active member); imports never notify."))
    unsubscribes: bool = Field(description=(
        "Email the account's registered address when a member unsubscribes (link, page, List-Unsubscribe); "
        "not for the customer's own API call, nor a complaint (who complained is never disclosed)."))


class ListNotificationsConfigured(SubscriptionsEvent):
    """Which membership changes of the list the customer is emailed about (PRODUCT.md: "The customer is notified
    of subscribes and unsubscribes when it asked to be"); replaces the last. A new list notifies of nothing."""

    type: Literal["ListNotificationsConfigured"] = "ListNotificationsConfigured"
    payload: ListNotificationsConfiguredPayload


class MembershipNoticeRequestedPayload(Payload):
    list_id: Identifier
    list_name: Name
    subscriber_id: Identifier
    email: Email = personal_data("Who subscribed or unsubscribed: the notice names them.")
    change: Literal["subscribed", "unsubscribed"]
    how: Literal["double_opt_in", "form", "api", "one_click", "unsubscribe_page", "preference_page", "mailto"] = (
        Field(description="How it happened: a confirmation link, the hosted form (single opt-in), the API, or "
                          "the unsubscribe route the member used."))


class MembershipNoticeRequested(SubscriptionsEvent):
    """Email the customer that someone subscribed to or unsubscribed from a list whose notifications ask for it;
    delivery sends it to the account's registered address."""

    type: Literal["MembershipNoticeRequested"] = "MembershipNoticeRequested"
    payload: MembershipNoticeRequestedPayload


class RecipientOptedOutOfTestsPayload(Payload):
    email_sha256: EmailHash = Field(description="sha256 of the address the test went to, lower-cased (the address "
                                                "itself is not kept).")
    source: Literal["one_click", "unsubscribe_page"]
    campaign_id: Identifier | None = Field(default=None, description="The campaign the test was of.")
    message_id: Identifier | None = Field(default=None, description="The test message whose link was used.")


class RecipientOptedOutOfTests(SubscriptionsEvent):
    """Whoever received a test message of the account used its unsubscribe link: that address wants no more test
    messages from this account (campaigns refuses them). No subscription changes: a test names no subscriber."""

    type: Literal["RecipientOptedOutOfTests"] = "RecipientOptedOutOfTests"
    payload: RecipientOptedOutOfTestsPayload


class ApiKeyRefusedBySubscriptions(SubscriptionsEvent):
    """Audit: the subscriptions API refused an API key of the account (billing's audit log shows it to the
    account's owner as a failed attempt)."""

    type: Literal["ApiKeyRefusedBySubscriptions"] = "ApiKeyRefusedBySubscriptions"
    payload: ApiKeyRefusedPayload
