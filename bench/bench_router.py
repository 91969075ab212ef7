"""The replica router's overhead per query, as a ratio to a plain single-database query.

Starts a PostgreSQL primary and a streaming replica (``senex_scale.lab``, loopback, temporary
directory), configures Django in this process and times, in the same run and interleaved:

- plain: ``Position.objects.filter(pk=...).first()`` with no router (one database);
- same-db: the same query through ``ReplicaRouter`` with no replica (answers the primary):
  the router's cost on the very same server, the cleanest overhead figure;
- routed: the same query through ``ReplicaRouter`` (healthy replica, cached health);
- pinned: the same query right after a write in the context (resolved pin: the primary
  until the replica is seen past the write);
- decision: ``db_for_read`` alone (no query), to show where the time goes.

Prints microseconds per query (median of rounds) and each as a ratio to plain. The routed
queries go to the replica, a different server of the same kind on the same machine, so the
ratio is the router's cost plus that server's noise.

Run: .venv/bin/python bench/bench_router.py [--queries 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "demo" / "senextrader"


def _configure(primary_port: int, replica_port: int) -> None:
    import django
    from django.conf import settings

    def db(port: int) -> dict[str, object]:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": "127.0.0.1",
            "PORT": port,
            "NAME": "bench",
            "USER": "postgres",
            "CONN_MAX_AGE": None,
            "OPTIONS": {"connect_timeout": 3},
        }

    sys.path.insert(0, str(DEMO))
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "trading"],
        DATABASES={"default": db(primary_port), "replica": {**db(replica_port), "TEST": {}}},
        DATABASE_ROUTERS=[],
        SENEX_SCALE_ROUTER={"REPLICAS": ["replica"], "HEALTH_TTL": 2.0},
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    )
    django.setup()


def _time(func: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        func()
    return (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--queries", type=int, default=2000, help="queries per round and kind")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from senex_scale.lab import Postgres, lab_dir

    root = lab_dir("senex-bench-router-")
    with Postgres(root / "primary") as primary:
        primary.create_database("bench")
        replica = primary.replica(root / "replica")
        try:
            _configure(primary.port, replica.port)
            run(args.queries, args.rounds)
        finally:
            from django.db import connections

            connections.close_all()
            replica.stop()


def run(queries: int, rounds: int) -> None:
    from django.core.management import call_command
    from django.db import router as django_router
    from trading.models import Position

    from senex_scale.contrib.django.router import ReplicaRouter, RouterConfig, pin_scope

    call_command("migrate", verbosity=0)
    pk = Position.objects.create(user_id=1, symbol="BNCH").pk
    replica_router = ReplicaRouter()
    primary_only = ReplicaRouter(RouterConfig.from_settings({"REPLICAS": []}))

    def use(routers: list[object]) -> None:
        django_router.__dict__["routers"] = routers  # ConnectionRouter.routers is cached

    def query() -> object:
        return Position.objects.filter(pk=pk).first()

    # Warm up: connections open, replica caught up and probed healthy.
    use([replica_router])
    deadline = time.monotonic() + 30
    while query() is None:
        if time.monotonic() > deadline:
            raise SystemExit("the replica did not replay the benchmark row")
        replica_router.monitor.invalidate()
        time.sleep(0.1)
    assert Position.objects.all().db == "replica"
    use([])
    query()

    kinds = ("plain", "same-db", "routed", "pinned", "decision")
    results: dict[str, list[float]] = {kind: [] for kind in kinds}
    batch = max(1, queries // 20)
    # Small batches, the kinds interleaved, many times: load from other processes on the
    # machine hits every kind alike instead of one whole round.
    for _ in range(rounds * 20):
        use([])
        results["plain"].append(_time(query, batch))
        use([primary_only])
        results["same-db"].append(_time(query, batch))
        use([replica_router])
        results["routed"].append(_time(query, batch))
        with pin_scope():
            # A write pins; resolved to the primary's position, reads go to the primary
            # until the next probe sees the replica past it, then to the replica.
            Position.objects.filter(pk=pk).update(symbol="BNCH")
            replica_router.resolve_pin()
            results["pinned"].append(_time(query, batch))
        results["decision"].append(_time(lambda: replica_router.db_for_read(Position), batch))
    use([])

    plain = statistics.median(results["plain"])
    print(f"router overhead per query ({rounds * 20} interleaved batches of {batch}, median)")
    print(f"{'kind':<10}{'us/query':>12}{'ratio to plain':>18}")
    for kind in kinds:
        value = statistics.median(results[kind])
        print(f"{kind:<10}{value * 1e6:>12.1f}{value / plain:>18.3f}")


if __name__ == "__main__":
    main()
