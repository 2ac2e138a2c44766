"""Prometheus metrics: requests, latency by model and variant, errors.

With several workers, ``ranker serve`` sets PROMETHEUS_MULTIPROC_DIR and each worker writes
its samples there; GET /metrics aggregates them, so a scrape sees the whole server.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("ranker_requests_total", "Rank requests served", ["model", "variant"])
LATENCY = Histogram(
    "ranker_request_seconds",
    "Time to rank one request, parse to response",
    ["model", "variant"],
    buckets=(0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 1.0),
)
# Labelled by route template (``/v1/users/{user_id}/history``), never by the raw path: a
# client must not be able to create series (3,000 unknown paths once made 6,000).
ERRORS = Counter("ranker_errors_total", "Requests answered with an error", ["endpoint", "status"])
EVENTS = Counter("ranker_events_total", "Events accepted", ["type"])
EVENTS_REFUSED = Counter(
    "ranker_events_refused_total", "Events refused by the checks against their ranking", ["reason"]
)
SHED = Counter(
    "ranker_shed_total", "Requests answered 503 to shed load", ["reason"]
)  # busy: too many in flight; deadline: waited too long

COUNTER_KEYS = Counter(
    "ranker_counter_keys_total",
    "Counter keys a Redis replica read, from its bucket cache or from Redis",
    ["source"],
)

# What the worker's feature state holds (all workers hold the same: the largest is shown).
STATE_SIZE = Gauge(
    "ranker_state_entries",
    "Users with a history, keys per counter table",
    ["table"],
    multiprocess_mode="max",
)
EVICTED = Gauge(
    "ranker_state_evicted",
    "Entries forgotten by the memory bounds since the worker started",
    ["table"],
    multiprocess_mode="max",
)


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
