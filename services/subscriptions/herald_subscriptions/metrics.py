"""Subscriptions' own Prometheus metrics, counted from the events it commits."""

from __future__ import annotations

from prometheus_client import Counter

from herald_shared.contract import Event
from herald_shared.contract.subscriptions import (
    ImportCompleted,
    SubscriberAdded,
    SubscriberConfirmed,
    SubscriberSuppressed,
    SubscriberUnsubscribed,
)

SUBSCRIBES = Counter("herald_subscriptions_subscribes_total", "Subscribers added, by channel and opt-in.",
                     ["channel", "opt_in"])
CONFIRMATIONS = Counter("herald_subscriptions_confirmations_total", "Subscribers confirmed, by method.", ["method"])
UNSUBSCRIBES = Counter("herald_subscriptions_unsubscribes_total", "Unsubscribes, by source.", ["source"])
SUPPRESSIONS = Counter("herald_subscriptions_suppressions_total", "Addresses suppressed, by reason.", ["reason"])
IMPORT_ROWS = Counter("herald_subscriptions_import_rows_total", "Imported CSV rows, by result.", ["result"])
# Subscription bombing and forged posts (issue 20; SECURITY.md): what the hosted pages refused, and the
# confirmation emails held back by the daily caps.
REFUSAL_REASONS = ("honeypot", "too_fast", "no_token", "cross_site", "ip_rate", "address_rate", "challenge",
                   "confirmation_cap")
REFUSED = Counter("herald_subscriptions_refused_total", "Hosted form posts refused as likely abuse, and "
                  "confirmation emails withheld by the daily caps, by reason.", ["reason"])
for _reason in REFUSAL_REASONS:
    REFUSED.labels(_reason)


def record(event: Event) -> None:
    match event:
        case SubscriberAdded(payload=p):
            SUBSCRIBES.labels(p.consent.source, p.opt_in).inc()
        case SubscriberConfirmed(payload=p):
            CONFIRMATIONS.labels(p.method).inc()
        case SubscriberUnsubscribed(payload=p):
            UNSUBSCRIBES.labels(p.source).inc()
        case SubscriberSuppressed(payload=p):
            SUPPRESSIONS.labels(p.reason).inc()
        case ImportCompleted(payload=p):
            IMPORT_ROWS.labels("imported").inc(p.rows_imported)
            IMPORT_ROWS.labels("rejected").inc(p.rows_rejected)
