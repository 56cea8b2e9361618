"""Prometheus metrics every service exposes (served on /metrics): its Kafka traffic, its HTTP requests, and refused
API keys."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_PRODUCED = Counter("herald_events_produced_total", "Events produced.", ["topic", "type"])
EVENTS_CONSUMED = Counter("herald_events_consumed_total", "Events consumed and handled.",
                          ["consumer", "topic", "type"])
EVENTS_DUPLICATE = Counter("herald_events_duplicate_total", "Events skipped because their event_id was seen.",
                           ["consumer", "topic"])
EVENTS_DEAD_LETTERED = Counter("herald_events_dead_lettered_total",
                               "Messages sent to a dead-letter topic, by category: invalid, rejected, handler_failed.",
                               ["consumer", "topic", "category"])
HANDLER_SECONDS = Histogram("herald_handler_seconds", "Time to handle one event.", ["consumer", "topic", "type"],
                            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
CONSUMER_LAG = Gauge("herald_consumer_lag", "Messages between the next offset the consumer will process "
                     "(herald_consumer_position) and the partition's end.", ["consumer", "topic", "partition"])
# Reported with the lag, every 15 s whatever the consumer's loop is doing: a partition whose lag stays above 0 while
# this does not change is stuck (HeraldConsumerStuck), however little is waiting behind it.
CONSUMER_POSITION = Gauge("herald_consumer_position", "The next offset the consumer will process: the first of the "
                          "batch in hand until it is flushed, then the one after it.",
                          ["consumer", "topic", "partition"])
API_KEY_REFUSALS = Counter("herald_api_key_refusals_total",
                           "API-key attempts refused, by reason: bad_key (unknown, revoked, malformed or wrong "
                           "secret: 401), throttled_ip, throttled_key (429, not checked).", ["reason"])
for _reason in ("bad_key", "throttled_ip", "throttled_key"):
    API_KEY_REFUSALS.labels(_reason)  # every series exported from the start, at 0
# Every HTTP request a service's app answers (`http.RequestMetrics`), by its route's template (`unmatched` for a path no
# route takes), method and status: the availability SLI of the 99.5% target (PRODUCT.md) and its latency.
HTTP_REQUESTS = Counter("herald_http_requests_total", "HTTP requests answered, by route template, method and "
                        "status (a request whose handler raised counts as 500).", ["route", "method", "status"])
HTTP_SECONDS = Histogram("herald_http_request_seconds", "Time from a request's arrival to its response's last "
                         "byte, by route template and method.", ["route", "method"],
                         buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
# What every service's HTTP server bounds itself (`herald_shared.serving`, SECURITY.md): connections refused as they
# are accepted, and cut for a request that arrives too slowly or an answer its client does not read. A slowloris, a
# client that does not read, or a NAT'd integration at the per-address cap shows here (HeraldHttpConnectionsRefused).
HTTP_CONNECTIONS = Gauge("herald_http_connections", "HTTP connections the process holds open (at most "
                         "HERALD_HTTP_MAX_CONNECTIONS).")
HTTP_CONNECTIONS_REFUSED = Counter(
    "herald_http_connections_refused_total",
    "HTTP connections closed as they were accepted, by reason: too_many_from_client (the client address holds "
    "HERALD_HTTP_MAX_CONNECTIONS_PER_CLIENT), too_many_connections (the process holds HERALD_HTTP_MAX_CONNECTIONS); "
    "out_of_descriptors counts accept() failing for want of file descriptors (retried a second later, connections "
    "waiting meanwhile).", ["reason"])
HTTP_CONNECTIONS_CUT = Counter(
    "herald_http_connections_cut_total",
    "HTTP connections closed for taking too long, by reason: head_timeout (a request's head, or a first request, "
    "not arrived), body_timeout (a request body arriving too slowly), send_timeout (an answer its client did not "
    "read).", ["reason"])
for _reason in ("too_many_from_client", "too_many_connections", "out_of_descriptors"):
    HTTP_CONNECTIONS_REFUSED.labels(_reason)
for _reason in ("head_timeout", "body_timeout", "send_timeout"):
    HTTP_CONNECTIONS_CUT.labels(_reason)
