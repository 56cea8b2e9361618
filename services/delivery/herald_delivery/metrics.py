"""Delivery's own Prometheus metrics (labels are bounded: kinds, classes, gates, never accounts)."""

from __future__ import annotations

from typing import get_args

from prometheus_client import Counter, Gauge, Histogram

from herald_shared.contract import Event
from herald_shared.contract.delivery import ComplaintReceived, MessageBounced

from .domain import MessageKind

MESSAGES = Counter("herald_delivery_messages_total", "Message outcomes, by kind and outcome.", ["kind", "outcome"])
# Every outcome series exported from the start, at 0: a sender restarted that sends nothing would otherwise
# export none, and HeraldDeliveryStalled (no outcome in 15 minutes) would have nothing to find at 0.
for _kind in get_args(MessageKind):
    for _outcome in ("sent", "bounced", "deferred"):
        MESSAGES.labels(_kind, _outcome)
BOUNCES = Counter("herald_delivery_bounces_total", "Bounces, by class (hard/soft/block/undetermined) and source.",
                  ["bounce_class", "source"])
COMPLAINTS = Counter("herald_delivery_complaints_total", "Feedback-loop complaints received.", ["feedback_type"])
SKIPPED = Counter("herald_delivery_skipped_total", "Messages not sent because the member left the audience.",
                  ["reason"])
SMTP_SECONDS = Histogram("herald_delivery_smtp_seconds", "One SMTP transaction (MAIL to the end of DATA).",
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
RENDER_SECONDS = Histogram("herald_delivery_render_seconds", "Rendering and DKIM-signing one message.",
                           buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1))
UNRECORDED_WINDOW = Histogram(
    "herald_delivery_unrecorded_window_seconds",
    "From the relay's acceptance to the ledger recording it: a crash inside this window resends the message.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1))
UNANSWERED = Counter("herald_delivery_unanswered_total", "Messages whose end of DATA the relay did not answer in "
                     "time (HERALD_SMTP_DATA_TIMEOUT) or answered by closing the connection: sent again, so "
                     "each is a possible second copy.")
RELAY_REFUSED = Counter("herald_delivery_relay_refused_total",
                        "Transactions our relay refused for Herald itself (relaying denied, AUTH, our sender), by "
                        "stage: deferred and retried, never a bounce; the platform's configuration to fix.",
                        ["stage"])
for _stage in ("mail", "rcpt", "data"):
    RELAY_REFUSED.labels(_stage)
STALE_SESSIONS = Counter("herald_delivery_smtp_stale_sessions_total",
                         "Pooled relay sessions found closed by the relay (idle timeout, a NAT drop, a limit of "
                         "messages) at a message's first command: the message went at once on a new session.")
IN_DOUBT = Counter("herald_delivery_in_doubt_total", "Messages found claimed but unrecorded after a restart.")
QUEUE_DEPTH = Gauge("herald_delivery_queue_depth", "Messages waiting to be sent (due or not), by kind of gate.",
                    ["held_by"])
WAITING_FOR_GATES = Gauge("herald_delivery_sender_waiting_for_gates",
                          "1 while the sender waits for the gates to be current (the control consumer reading "
                          "billing, compliance and campaigns to their end) before it loads its queue: nothing is "
                          "sent, and herald_delivery_queue_depth does not count the queue yet.")
POOL_CONNECTIONS = Gauge("herald_delivery_smtp_connections", "SMTP connections, by state.", ["state"])
EXPANSIONS = Gauge("herald_delivery_expansions", "Campaign expansions waiting or under way.")
EXPANSION_FAILURES = Counter("herald_delivery_expansion_failures_total",
                             "Campaign expansions that failed and will be tried again.")
INBOUND = Counter("herald_delivery_inbound_total", "Mails received by the inbound server, by result.", ["result"])
TRACKING = Counter("herald_delivery_tracking_total", "Tracking hits, by kind and result.", ["kind", "result"])


def record_report(event: Event) -> None:
    """Count a bounce or complaint event as it is published."""
    if isinstance(event, MessageBounced):
        BOUNCES.labels(event.payload.bounce_class, event.payload.source).inc()
    elif isinstance(event, ComplaintReceived):
        COMPLAINTS.labels(event.payload.feedback_type).inc()
