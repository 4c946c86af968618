"""Prometheus metrics shared by every service, served on HTTP /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RPC_TOTAL = Counter("kizuna_rpc_total", "RPCs handled", ["service", "method", "code"])
RPC_SECONDS = Histogram(
    "kizuna_rpc_seconds",
    "RPC latency",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
RELAY_LAG = Gauge("kizuna_relay_lag", "Log positions recorded but not yet published", ["stream"])
RELAY_PUBLISHED = Counter("kizuna_relay_published_total", "Events published", ["stream"])
CONSUMER_APPLIED = Counter(
    "kizuna_consumer_applied_total", "Messages applied", ["stream", "durable"]
)
CONSUMER_DEAD_LETTERED = Counter(
    "kizuna_consumer_dead_lettered_total", "Messages given up on", ["stream", "durable"]
)


def serve_metrics(port: int, host: str = "0.0.0.0") -> int:  # noqa: S104 - scraped from outside
    """Starts the /metrics HTTP server in a daemon thread; returns the bound port."""
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_port)
