"""/metrics through prometheus_client: the daemon's figures (`StreamStats.metric_rows`) as metric families in a
registry of the daemon's own (never the process-wide default one), written in Prometheus' text format by the
library, so the exposition stays valid whatever the names, help texts and label values hold."""
from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

FAMILIES = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}


class RowsCollector:
    """A collector over rows_fn() -> [(name, kind, help, value)], read at every scrape. value: a number; for
    counters and gauges {rank: number} (label `rank`); for kind "histogram" {label: {label value: (cumulative
    buckets [(le, count), ..., (inf, count)], sum)}} (one label, named by the outer key)."""

    def __init__(self, rows_fn: Callable[[], list]):
        self.rows_fn = rows_fn

    def collect(self):
        for name, kind, help_, value in self.rows_fn():
            if kind == "histogram":
                (label, series), = value.items()
                fam = HistogramMetricFamily(name, help_, labels=[label])
                for label_value, (buckets, total) in series.items():
                    fam.add_metric([str(label_value)], [(floatToGoString(le), float(n)) for le, n in buckets],
                                   sum_value=float(total))
            elif isinstance(value, dict):
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
