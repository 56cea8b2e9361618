"""What counts as an email sent: the one definition billing's quotas count (the trial's emails, credits, the
monthly cap) and delivery's send allowance counts before each message, so the two counts cannot drift apart."""

from __future__ import annotations

from herald_shared.contract import Event
from herald_shared.contract.billing import SentKind
from herald_shared.contract.delivery import MessageBounced, MessageSent

# What a plan may count; confirmations and account notices never.
SENT_KINDS: tuple[SentKind, ...] = ("campaign", "test")


def email_sent(event: Event | None) -> bool:
    """Whether a delivery outcome is a campaign email or a test send of one that was sent, which a plan may count.
    PRODUCT.md: "every email sent consumes a credit, even if the receiving server blocks it": a message the relay
    accepted (MessageSent), and one the receiving server refused when it was sent (MessageBounced `smtp_reply`, a
    5xx to RCPT TO or DATA; delivery publishes no MessageSent for it). Not a bounce reported later (`dsn`): its
    message was accepted and its MessageSent counted. Not one given up after retrying (`retry_expired`): no
    server took or refused it for good (temporary refusals, no connection, or a refusal of our sender at MAIL
    FROM, which delivery retries), so it was never sent. Nor one that never left Herald (`local`). Confirmations
    and account notices are never counted."""
    if isinstance(event, MessageSent):
        return event.payload.kind in SENT_KINDS
    if isinstance(event, MessageBounced):
        return event.payload.kind in SENT_KINDS and event.payload.source == "smtp_reply"
    return False
