"""Events of the compliance stream processor (topic `herald.compliance`): warnings, suspensions, flags."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, StringConstraints

from .envelope import (
    Count,
    Event,
    FiniteFloat,
    Identifier,
    KeysNamedByPattern,
    MapKey,
    Name,
    Payload,
    ShortText,
    StorableNumber,
)

Metric = Literal["hard_bounce_rate", "abuse_rate", "unsubscribe_rate", "block_rate", "one_off_sending",
                 "blocklisting", "anti_spam_rules", "inbox_placement"]
Rate = Annotated[float, Field(ge=0.0, le=1.0, description="A fraction: 0.08 is 8%.")]


class RateScope(Payload):
    """Where a rate was measured: one campaign, or a rolling window of the account."""

    kind: Literal["campaign", "rolling_window"]
    campaign_id: Identifier | None = None
    window: Annotated[str, StringConstraints(pattern=r"^[0-9]+[hd]$")] | None = Field(
        default=None, description="Rolling window length, e.g. '24h' or '7d'.")


class RateCounts(Payload):
    sent: Count
    hard_bounces: Count = 0
    complaints: Count = 0
    unsubscribes: Count = 0
    blocks: Count = Field(default=0, description="Bounces of class block: the receiver refused our mail.")


class ComplianceEvent(Event):
    topic: ClassVar[str] = "herald.compliance"


class AccountWarnedPayload(Payload):
    metric: Metric
    value: Rate | None = None
    warning_level: Rate | None = Field(default=None, description="The warning level that was crossed.")
    threshold: Rate | None = Field(default=None, description="The suspension threshold it is approaching.")
    scope: RateScope | None = None
    counts: RateCounts | None = None
    evidence: Annotated[dict[MapKey, Annotated[ShortText | int | FiniteFloat, StorableNumber]],
                        KeysNamedByPattern()] = Field(default_factory=dict)


class AccountWarned(ComplianceEvent):
    type: Literal["AccountWarned"] = "AccountWarned"
    payload: AccountWarnedPayload


class AccountSuspendedPayload(Payload):
    metric: Metric
    value: Rate | None = None
    threshold: Rate | None = None
    scope: RateScope | None = None
    counts: RateCounts | None = None
    reason: ShortText
    notify_account: bool = Field(default=True, description="Email the account's registered address.")


class AccountSuspended(ComplianceEvent):
    """Sending stops until staff reinstate the account; unsent messages are held, not dropped."""

    type: Literal["AccountSuspended"] = "AccountSuspended"
    payload: AccountSuspendedPayload


class StaffViewedRatesPayload(Payload):
    staff: Name = Field(description="The staff member (their credential's name).")


class StaffViewedRates(ComplianceEvent):
    """Audit: a member of the platform staff read the account's counts and rates (billing's audit log shows it
    to the account's owner)."""

    type: Literal["StaffViewedRates"] = "StaffViewedRates"
    payload: StaffViewedRatesPayload


class AccountReinstatedPayload(Payload):
    reinstated_by: Name
    reason: ShortText
    suspension_event_id: Identifier | None = None


class AccountReinstated(ComplianceEvent):
    type: Literal["AccountReinstated"] = "AccountReinstated"
    payload: AccountReinstatedPayload


class ContentMatch(Payload):
    category: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    rule: ShortText
    excerpt: ShortText


class ContentFlaggedPayload(Payload):
    campaign_id: Identifier
    matches: list[ContentMatch] = Field(min_length=1)
    action: Literal["blocked_for_review"] = "blocked_for_review"


class ContentFlagged(ComplianceEvent):
    """Screening found prohibited content; the campaign cannot be queued until staff review it."""

    type: Literal["ContentFlagged"] = "ContentFlagged"
    payload: ContentFlaggedPayload
