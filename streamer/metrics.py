"""/metrics through prometheus_client: the daemon's figures (`StreamStats.metric_rows`) as metric families in a
registry of the daemon's own (never the process-wide default one), written in Prometheus' text format by the
library, so the exposition stays valid whatever the names, help texts and label values hold."""
from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

FAMILIES = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}


class RowsCollector:
    """A collector over rows_fn() -> [(name, kind, help, value | {rank: value})], read at every scrape."""

    def __init__(self, rows_fn: Callable[[], list]):
        self.rows_fn = rows_fn

    def collect(self):
        for name, kind, help_, value in self.rows_fn():
            if isinstance(value, dict):
                fam = FAMILIES[kind](name, help_, labels=["rank"])
                for rank, v in value.items():
                    fam.add_metric([str(rank)], float(v))
            else:
                fam = FAMILIES[kind](name, help_, value=float(value))
            yield fam


class Metrics:
    """render() -> the text a Prometheus scrape of /metrics gets."""

    def __init__(self, rows_fn: Callable[[], list]):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(RowsCollector(rows_fn))

    def render(self) -> str:
        return generate_latest(self.registry).decode()
