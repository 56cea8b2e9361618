"""Prometheus metrics of the compliance processor (per-account rates are on HTTP, not here: unbounded labels)."""

from __future__ import annotations

from typing import get_args

from prometheus_client import Counter, Gauge, Histogram

from herald_shared.contract.compliance import RateScope

from .domain import RateMetric

SUSPENSIONS = Counter("herald_compliance_suspensions_total", "AccountSuspended emitted, by metric and scope kind.",
                      ["metric", "scope"])
WARNINGS = Counter("herald_compliance_warnings_total", "AccountWarned emitted, by metric and scope kind.",
                   ["metric", "scope"])
# Every series a decision can make, exported from the start at 0: a series born at its first suspension starts
# at 1, and increase() over it says 0 (HeraldSuspensionSpike would miss one per series). Rates are measured
# per campaign or rolling window; one-off sending (a warning) is about lists (processor.py).
SCOPE_KINDS: tuple[str, ...] = get_args(RateScope.model_fields["kind"].annotation)
for _metric in get_args(RateMetric):
    for _scope in SCOPE_KINDS:
        SUSPENSIONS.labels(_metric, _scope)
        WARNINGS.labels(_metric, _scope)
WARNINGS.labels("one_off_sending", "list")
EVENTS = Counter("herald_compliance_events_total",
                 "Input events by type and outcome: counted, duplicate (same fact seen before), replayed (already "
                 "in the state after a restart), late (too old to tell from a duplicate), ignored (nothing to "
                 "count), dead_lettered.",
                 ["topic", "type", "outcome"])
LAG_MESSAGES = Gauge("herald_compliance_lag_messages", "Messages between the last processed offset and the end of "
                     "the partition.", ["topic", "partition"])
LAG_SECONDS = Histogram("herald_compliance_event_age_seconds", "Age of an input event when it is processed "
                        "(produce-to-decision latency).", ["topic"],
                        buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600))
RECOVERY_SECONDS = Gauge("herald_compliance_table_recovery_seconds", "Time from the last partition assignment "
                         "until faust had recovered the tables from their changelogs and resumed the stream.")
RECOVERY_RUNNING_SECONDS = Gauge("herald_compliance_table_recovery_running_seconds", "How long the table recovery "
                                 "in progress has run (0 when none): from the first partition assignment not yet "
                                 "followed by the stream resuming; a recovery that never ends keeps growing.")
BATCH_SECONDS = Histogram("herald_compliance_batch_seconds", "Time to process one batch (all its partitions).",
                          buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
DEDUPE_ENTRIES = Gauge("herald_compliance_dedupe_entries", "Facts remembered for deduplication on this worker "
                       "(standby copies of other workers' partitions included).")
REFETCHED = Counter("herald_compliance_refetched_records_total", "Input records read straight from Kafka because "
                    "the stream skipped them (gap) or stopped delivering a partition (stalled); see continuity.py.",
                    ["reason"])
FORGOTTEN = Counter("herald_compliance_facts_forgotten_total", "Facts forgotten before the dedupe horizon because "
                    "this worker held more than HERALD_COMPLIANCE_MAX_FACTS (the oldest hours first); facts of that "
                    "time no longer remembered are then late, not counted.")
