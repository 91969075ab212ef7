"""The reference app's whole stack on loopback, for ``senex-scale demo`` and the e2e test.

::

    load generator --HTTP/WS--> HAProxy :front --> Daphne django-N :DJANGO_BASE+N  (supervisord)
                                                     |  \\--> Redis (cache, channel layer, broker)
                                                     v
                                 PgBouncer (transaction) --> PostgreSQL primary --> replica
    Celery workers celery-trading-N (queue trading), celery-N (accounts, general)  (supervisord)
    Prometheus scrapes every Daphne and worker /metrics; senex-scale run scales the three pools

Every server comes from ``senex_scale.lab``; supervisord runs the app's processes (declared
with ``numprocs = max``, started by the controller). Passwords are generated per run and
live only in files of mode 0600 (the supervisord config, PgBouncer's userlist) and in the
environment of the processes that need them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from senex_scale.demo.policy import Endpoints, demo_policy_text
from senex_scale.errors import PermanentError
from senex_scale.lab import (
    HAProxy,
    PgBouncer,
    Postgres,
    Prometheus,
    Redis,
    Supervisord,
    free_port,
    free_port_range,
    lab_dir,
    static_job,
)
from senex_scale.lab.haproxy import http_proxy

APP_NAME = "senextrader"
MAX_DJANGO = 5
HANDSHAKE_TIMEOUT = 30
"""Seconds Daphne gives the app to accept a WebSocket (its default: 5), as long as the load
generator's clients wait for the first message (open 10 s + first message 10 s) and more."""
MAX_TRADING = 4
MAX_CELERY = 3
MONITOR_ENV = "SENEX_DEMO_MONITOR_PASSWORD"
"""The controller reads the monitoring role's password from this variable (never a file)."""
NEEDED = {
    "postgres": Path("/usr/lib/postgresql"),
    "pgbouncer": None,
    "redis-server": None,
    "haproxy": None,
    "prometheus": None,
}


def app_dir() -> Path:
    """``demo/senextrader`` of this source checkout (the app is not part of the wheel)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "demo" / APP_NAME
        if (candidate / "manage.py").exists():
            return candidate
    raise PermanentError(
        "demo/senextrader not found: senex-scale demo runs from a source checkout "
        "(git clone, then scripts/setup)"
    )


def missing_packages() -> list[str]:
    """System programs the demo needs that are not installed."""
    missing = []
    for name, where in NEEDED.items():
        if where is not None:
            if not any(where.glob("*/bin/postgres")):
                missing.append("postgresql")
        elif shutil.which(name) is None:
            missing.append(name)
    return missing


def program(
    name: str,
    command: str,
    count: int,
    *,
    root: Path,
    app: Path,
    env: str,
    startsecs: int,
    stopwaitsecs: int,
) -> str:
    """A ``[program:NAME]`` of ``count`` processes ``NAME-1`` .. ``NAME-count``, started by the
    controller (never by supervisord); ``$N`` in ``command`` is the process number."""
    shell = command.replace("$N", "%(process_num)d")
    return f"""
[program:{name}]
command=/bin/sh -c '{shell}'
process_name=%(program_name)s-%(process_num)d
numprocs={count}
numprocs_start=1
directory={app}
environment={env}
autostart=false
autorestart=unexpected
startsecs={startsecs}
stopsignal=TERM
stopwaitsecs={stopwaitsecs}
stdout_logfile={root}/logs/{name}-%(process_num)d.log
redirect_stderr=true
"""


WORKER = (
    "SENEX_CELERY_METRICS_PORT=$(({base} + $N)) exec {venv}/celery -A senextrader worker"
    " -Q {queues} -P threads -c 2 -n {name}-$N@demo --without-gossip --without-mingle"
)


@dataclass
class DemoStack:
    """Start with ``start()`` (or ``with``); everything is stopped and removed by ``stop()``."""

    root: Path = field(default_factory=lambda: lab_dir("senex-demo-"))
    keep: bool = False
    app: Path = field(default_factory=app_dir)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    monitor_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(40))
    servers: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.django_base = free_port_range(MAX_DJANGO)
        self.trading_base = free_port_range(MAX_TRADING)
        self.celery_base = free_port_range(MAX_CELERY)
        self.status_port = free_port()

    # ------------------------------------------------------------------ start / stop

    def __enter__(self) -> DemoStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _up(self, server: Any, what: str, progress: Any) -> Any:
        if progress is not None:
            progress(f"starting {what}")
        server.start()
        self.servers.append(server)
        return server

    def start(self, progress: Any = None) -> DemoStack:
        """Bring everything up (a few seconds each); ``progress(text)`` is told each step."""
        missing = missing_packages()
        if missing:
            raise PermanentError(
                f"the demo needs {', '.join(missing)}: run scripts/services (as root) "
                "or apt-get install " + " ".join(missing)
            )
        try:
            self._start(progress)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, progress: Any) -> None:
        root = self.root
        (root / "logs").mkdir(parents=True, exist_ok=True)
        pg = self._up(Postgres(root / "pg-primary"), "PostgreSQL primary", progress)
        self.postgres = pg
        pg.create_role("app", self.password)
        pg.create_role("monitor", self.monitor_password, member_of=["pg_monitor"])
        pg.create_database(APP_NAME, owner="app")
        if progress is not None:
            progress("starting a streaming replica (pg_basebackup)")
        self.replica = pg.replica(root / "pg-replica")
        self.servers.append(self.replica)
        self.pgbouncer = self._up(
            PgBouncer(
                root / "pgbouncer",
                databases={APP_NAME: f"host=127.0.0.1 port={pg.port} dbname={APP_NAME}"},
                users={"app": self.password},
                settings={"default_pool_size": "20", "max_client_conn": "500"},
            ),
            "PgBouncer",
            progress,
        )
        self.redis = self._up(Redis(root / "redis"), "Redis", progress)
        if progress is not None:
            progress("migrating the app's database")
        self._manage("migrate", "--noinput", database_url=self._primary_url())
        self.haproxy = self._up(
            HAProxy(
                root / "haproxy",
                # leastconn: reconnecting WebSockets (a drain, a rebalance) go to the emptiest
                conf=http_proxy(
                    "django", client_timeout="1h", server_timeout="1h", balance="leastconn"
                ),
            ),
            "HAProxy",
            progress,
        )
        self.supervisord = self._up(
            Supervisord(root / "supervisord", programs=self._programs()),
            "supervisord",
            progress,
        )
        self.prometheus = self._up(
            Prometheus(root / "prometheus", scrape_configs=self._scrape_configs()),
            "Prometheus",
            progress,
        )

    def stop(self) -> None:
        """Stop every server (newest first) and remove the directory unless ``keep``."""
        for server in reversed(self.servers):
            with contextlib.suppress(Exception):
                server.stop()
        self.servers.clear()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ the app

    def _primary_url(self) -> str:
        return f"postgresql://app@127.0.0.1:{self.postgres.port}/{APP_NAME}"

    def app_env(self, database_url: str | None = None) -> dict[str, str]:
        """The app's environment: through PgBouncer, the replica for reads, Redis."""
        replica = f"postgresql://app@127.0.0.1:{self.replica.port}/{APP_NAME}"
        return {
            "SENEX_DATABASE_URL": database_url
            or f"postgresql://app@127.0.0.1:{self.pgbouncer.port}/{APP_NAME}",
            "SENEX_DATABASE_PASSWORD": self.password,
            "SENEX_REPLICA_URLS": f"replica={replica}",
            "SENEX_REDIS_URL": f"redis://127.0.0.1:{self.redis.port}",
            "SENEX_SECRET_KEY": self.secret_key,
            "SENEX_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
        }

    def _manage(self, *args: str, database_url: str | None = None) -> None:
        env = {**os.environ, **self.app_env(database_url)}
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=self.app,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise PermanentError(f"manage.py {' '.join(args)} failed:\n{done.stderr[-2000:]}")

    def _programs(self) -> str:
        env = ",".join(f'{k}="{v}"' for k, v in self.app_env().items())
        venv = Path(sys.executable).parent
        common: dict[str, Any] = {"root": self.root, "app": self.app, "env": env}
        # --websocket_connect_timeout: Daphne's 5 s default refuses a handshake the app has not
        # accepted within 5 s; in a rush on a slow 2-core host that cut clients (HAProxy 502
        # after 5.0 s), and a refused client only comes back, adding to the rush
        daphne = (
            f"SENEX_INSTANCE=$N exec {venv}/daphne -b 127.0.0.1 -p $(({self.django_base} + $N))"
            f" --websocket_connect_timeout {HANDSHAKE_TIMEOUT} senextrader.asgi:application"
        )
        trading = WORKER.format(base=self.trading_base, venv=venv, queues="trading", name="trading")
        general = WORKER.format(
            base=self.celery_base, venv=venv, queues="accounts,general", name="general"
        )
        return "".join(
            [
                program("django", daphne, MAX_DJANGO, startsecs=0, stopwaitsecs=10, **common),
                program(
                    "celery-trading", trading, MAX_TRADING, startsecs=2, stopwaitsecs=30, **common
                ),
                program("celery", general, MAX_CELERY, startsecs=2, stopwaitsecs=30, **common),
            ]
        )

    def _scrape_configs(self) -> list[dict[str, Any]]:
        def ports(base: int, count: int) -> list[str]:
            return [f"127.0.0.1:{base + n}" for n in range(1, count + 1)]

        return [
            static_job("django", ports(self.django_base, MAX_DJANGO)),
            static_job("celery-worker-trading", ports(self.trading_base, MAX_TRADING)),
            static_job("celery-worker", ports(self.celery_base, MAX_CELERY)),
        ]

    # ------------------------------------------------------------------ the controller

    @property
    def state(self) -> str:
        return f"sqlite:{self.root / 'state.db'}"

    @property
    def front(self) -> str:
        """The app's URL, through HAProxy."""
        return f"http://127.0.0.1:{self.haproxy.port}"

    @property
    def status_url(self) -> str:
        return f"http://127.0.0.1:{self.status_port}/"

    def endpoints(self) -> Endpoints:
        return Endpoints(
            state=self.state,
            listen=f"127.0.0.1:{self.status_port}",
            prometheus=self.prometheus.url,
            redis=f"redis://127.0.0.1:{self.redis.port}/0",
            postgres_dsn=(
                f"host=127.0.0.1 port={self.postgres.port} user=monitor dbname={APP_NAME}"
            ),
            disk=str(self.root),
            supervisor=self.supervisord.url,
            haproxy_socket=str(self.haproxy.socket),
            haproxy_config=str(self.haproxy.config),
            django_base=self.django_base,
            trading_base=self.trading_base,
            celery_base=self.celery_base,
            monitor_password_env=MONITOR_ENV,
            max_django=MAX_DJANGO,
            max_trading=MAX_TRADING,
            max_celery=MAX_CELERY,
        )

    def write_policy(self, speed: float = 60.0, *, static: bool = False) -> Path:
        """The demo policy (``demo.policy``) for this stack, as a file."""
        path = self.root / "policy.toml"
        path.write_text(demo_policy_text(self.endpoints(), speed=speed, static=static))
        return path
