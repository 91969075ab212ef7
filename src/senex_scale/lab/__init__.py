"""Real servers on loopback for the integration tests, the end-to-end test and the demo.

See docs/lab.md. Every class starts its server on a free loopback port with its files under
a directory the caller owns, blocks until the server answers, and leaves nothing running after
``stop()`` or its ``with`` block.
"""

from senex_scale.lab.base import (
    LabError,
    Server,
    free_port,
    free_port_range,
    lab_dir,
    temporary_lab_dir,
)
from senex_scale.lab.haproxy import HAProxy
from senex_scale.lab.nginx import Nginx
from senex_scale.lab.pgbouncer import PgBouncer
from senex_scale.lab.postgres import Postgres, scram_verifier
from senex_scale.lab.prometheus import Prometheus, static_job
from senex_scale.lab.redis import Redis
from senex_scale.lab.sentinel import Sentinel
from senex_scale.lab.supervisord import Supervisord

__all__ = [
    "HAProxy",
    "LabError",
    "Nginx",
    "PgBouncer",
    "Postgres",
    "Prometheus",
    "Redis",
    "Sentinel",
    "Server",
    "Supervisord",
    "free_port",
    "free_port_range",
    "lab_dir",
    "scram_verifier",
    "static_job",
    "temporary_lab_dir",
]
