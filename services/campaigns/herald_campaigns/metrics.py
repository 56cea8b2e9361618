"""Prometheus metrics of the campaigns service (issue 14, "Metrics")."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CAMPAIGNS = Gauge("herald_campaigns_by_status", "Campaigns by status, as the read model counts them.", ["status"])
SCREENING = Counter("herald_campaigns_screening_verdicts_total",
                    "Screening verdicts at submit: a category matched, clean, or refused (hidden footer).",
                    ["verdict"])
REVIEW_DEPTH = Gauge("herald_campaigns_review_queue_depth", "Campaigns waiting for staff review.")
REVIEW_AGE = Gauge("herald_campaigns_review_queue_oldest_seconds",
                   "How long the oldest campaign in the review queue has waited (0 when empty).")
SCHEDULE_LAG = Histogram("herald_campaigns_schedule_lag_seconds",
                         "From a campaign's send time to its CampaignQueued being recorded.",
                         buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300))
SCHEDULER_FAILURES = Counter("herald_campaigns_scheduler_failures_total",
                             "Campaigns the scheduler failed to queue or complete for a reason of their own (not "
                             "Kafka or MongoDB being away): each is logged with the campaign and tried again later.",
                             ["step"])
SCHEDULER_HELD_BACK = Gauge("herald_campaigns_scheduler_held_back",
                            "Campaigns whose last try failed for a reason of their own, waiting for their next try.",
                            ["step"])
