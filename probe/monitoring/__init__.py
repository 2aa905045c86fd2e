"""Prometheus from stored results: the collector (metrics), one-shot export (Pushgateway,
textfile) and the daemon that measures on a schedule and serves /metrics."""
