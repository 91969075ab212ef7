"""Metric sources: one module per kind of server, behind the small ``MetricSource`` protocol.

A source is built once from its ``[sources.NAME]`` table (``build_source``), validates its own
settings then (errors name ``sources.NAME.FIELD``), and answers ``query(request, now)`` with
timestamped samples, each for the pool (``instance=None``) or one of its instances. Any
failure is a ``SourceError`` (temporary or permanent): the core then treats the metric as
missing, never as zero.

Which source reads what (``metric.query`` of a rule)::

    prometheus    a PromQL expression; vector results mapped to instances by a label
    celery-redis  queue names, comma-separated: tasks waiting at every priority + reserved
    redis         "used_memory_ratio" (% of maxmemory, or of the memory limit), per node
    postgres      cpu | connections | replication_lag_bytes | replication_lag_seconds
                  | cache_hit_ratio
    pgbouncer     clients_waiting | max_wait_seconds | pool_use
    process       CPU % (or memory MiB) per instance from cgroups, psutil or podman stats
    scrape        a metric name read from each instance's own /metrics
    disk          used % of a path, per path (several, comma-separated; aggregate "max")
"""

from senex_scale.sources.base import (
    MetricRequest,
    MetricSource,
    build_source,
    instance_from_address,
)

__all__ = ["MetricRequest", "MetricSource", "build_source", "instance_from_address"]
