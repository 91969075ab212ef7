"""The inventory: one description of a deployment, from which every config file is rendered.

An operator describes hosts and their roles, the pools of instances, ports, resource limits,
the data tier (PostgreSQL primary and replicas, PgBouncer, Redis primary, replicas and
Sentinel), monitoring and the balancer once, in TOML; ``senex_scale.render`` turns it into the
Quadlet units, nginx/HAProxy, PgBouncer, PostgreSQL, Redis, Prometheus, Grafana and systemd
files. Everything is checked here, at load time, and every problem is reported at once with its
dotted path (``pools.django.limits.memory: ...``), as the policy file does.

Secrets are never written into the inventory: a password is ``{ env = "NAME" }`` (read from the
environment of ``senex-scale render``) or ``{ file = "/path" }`` (a credentials file, e.g. one
systemd ``LoadCredential=`` put in place). An inline string is refused with the field's path,
so an inventory can be committed and reviewed without leaking anything.

Ports use the policy's scheme (``port = "8000 + n"``: instance n listens on 8000+n; parsed by
``senex_scale.policy.models.PortBase``), which, unlike the seed's ``800%i``, is right for n >= 10.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from senex_scale.errors import PolicyError
from senex_scale.plugins import did_you_mean
from senex_scale.policy.loading import format_errors
from senex_scale.policy.models import PortBase


class InventoryError(PolicyError):
    """An inventory file is unreadable or invalid; ``problems`` lists each with its dotted path.

    A ``PolicyError`` (exit 2, same message shape): to the CLI both are bad input.
    """


class Model(BaseModel):
    """Base of every inventory model: frozen, unknown keys rejected ("did you mean")."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- small types

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_SIZE = re.compile(r"^\d+(?:[kKmMgG])?$")
_PERCENT = re.compile(r"^\d+%$")
_TIME = re.compile(r"^\d+(?:ms|s|m|h)$")
_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f'"{value}" is not a name: lower-case letters, digits, "-" and "_", '
            "starting with a letter"
        )
    return value


def _size(value: str) -> str:
    if not _SIZE.match(value):
        raise ValueError(f'"{value}" is not a size (e.g. "1536M", "2G")')
    return value


def _percent(value: str) -> str:
    if not _PERCENT.match(value) or int(value[:-1]) == 0:
        raise ValueError(f'"{value}" is not a CPU quota (e.g. "100%" = one core, "250%")')
    return value


def _time(value: str) -> str:
    if not _TIME.match(value):
        raise ValueError(f'"{value}" is not a time (e.g. "30s", "500ms", "5m")')
    return value


def seconds(value: str) -> int:
    """A ``Time`` ("500ms", "30s", "5m", "1h") in whole seconds, rounded up."""
    match = re.match(r"^(\d+)(ms|s|m|h)$", value)
    assert match, value
    number, unit = int(match.group(1)), match.group(2)
    if unit == "ms":
        return -(-number // 1000)
    return number * {"s": 1, "m": 60, "h": 3600}[unit]


def _address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOST.match(value):
            raise ValueError(f'"{value}" is neither an IP address nor a host name') from None
    return value


def _absolute(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f'"{value}" is not an absolute path')
    return value


def _subnet(value: str) -> str:
    try:
        ipaddress.ip_network(value)
    except ValueError:
        raise ValueError(f'"{value}" is not a subnet (e.g. "10.89.0.0/24")') from None
    return value


Name = Annotated[str, AfterValidator(_name)]
Size = Annotated[str, AfterValidator(_size)]
"""A memory size as podman ``--memory`` takes it: bytes, or a number with K, M or G."""
CpuQuota = Annotated[str, AfterValidator(_percent)]
"""systemd ``CPUQuota=``: percent of one CPU (``"200%"`` = two cores)."""
Time = Annotated[str, AfterValidator(_time)]
"""A time for nginx, HAProxy and podman: a number and ms, s, m or h."""
Address = Annotated[str, AfterValidator(_address)]
AbsPath = Annotated[str, AfterValidator(_absolute)]
Port = Annotated[int, Field(ge=1, le=65535)]


# --------------------------------------------------------------------------- secrets


def _no_inline_secret(value: object) -> object:
    if isinstance(value, str | int | float):
        raise ValueError(
            'an inline secret is not allowed: use { env = "NAME" } or { file = "/path" }'
        )
    return value


class _SecretRef(Model):
    env: str | None = None
    """Environment variable of ``senex-scale render`` that holds the secret."""
    file: AbsPath | None = None
    """File holding the secret (trailing newline stripped); keep it mode 0600."""

    @model_validator(mode="after")
    def _one(self) -> _SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError('give exactly one of env = "NAME" or file = "/path"')
        if self.env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.env):
            raise ValueError(f'"{self.env}" is not an environment variable name')
        return self

    def resolve(self, environ: Mapping[str, str]) -> str:
        """The secret's value; ``ValueError`` says what is missing (never the value)."""
        if self.env is not None:
            value = environ.get(self.env)
            if not value:
                raise ValueError(f"environment variable {self.env} is not set (or empty)")
            return value
        assert self.file is not None
        try:
            value = Path(self.file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ValueError(f"cannot read {self.file}: {exc.strerror}") from None
        if not value:
            raise ValueError(f"{self.file} is empty")
        return value

    def __str__(self) -> str:
        return f"env:{self.env}" if self.env else f"file:{self.file}"


SecretRef = Annotated[_SecretRef, BeforeValidator(_no_inline_secret)]
"""A secret by reference: ``{ env = "NAME" }`` or ``{ file = "/path" }``, never inline."""


# --------------------------------------------------------------------------- deployment

ROLES: tuple[str, ...] = (
    "web",
    "worker",
    "beat",
    "balancer",
    "postgres-primary",
    "postgres-replica",
    "pgbouncer",
    "redis-primary",
    "redis-replica",
    "sentinel",
    "prometheus",
    "controller",
)


def _role(value: str) -> str:
    if value not in ROLES:
        raise ValueError(
            f'unknown role "{value}"{did_you_mean(value, ROLES)}; known: {", ".join(ROLES)}'
        )
    return value


Role = Annotated[str, AfterValidator(_role)]


class Deployment(Model):
    """What every container of the application shares."""

    name: Name = "senex"
    """Prefix of container names (``senex-django-3``)."""
    image: str = Field(min_length=1)
    """The application image (Django/Daphne and Celery run from the same image)."""
    project: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")] = "senextrader"
    """The Django project package: ``PROJECT.asgi:application`` and ``celery -A PROJECT``."""
    env_file: AbsPath = "/etc/senex-trader/.env"
    """Environment file of the application containers (Quadlet ``EnvironmentFile=``)."""
    scope: Literal["user", "system"] = "user"
    """user: rootless units in ~/.config/containers/systemd; system: /etc/containers/systemd."""
    volumes: tuple[str, ...] = ()
    """Quadlet ``Volume=`` lines of the application containers (``%h/static:/app/static:z``)."""
    timezone: str = "UTC"
    """Time zone of scheduled-scaling timers (``OnCalendar=... ZONE``)."""
    config_dir: AbsPath = "/etc/senex-scale"
    """Where the PostgreSQL and Redis files are installed on their hosts (mounted read-only)."""


class Network(Model):
    """The Podman network the containers share (rendered as a Quadlet ``.network``)."""

    name: Name = "senex_net"
    subnet: Annotated[str, AfterValidator(_subnet)] | None = None


class HostPorts(Model):
    """Per-host overrides of service ports (several instances of a service on one test host)."""

    postgres: Port | None = None
    pgbouncer: Port | None = None
    redis: Port | None = None
    sentinel: Port | None = None


class Host(Model):
    """One machine and what runs on it."""

    address: Address
    """Address the other hosts reach it at (an IP or a resolvable name)."""
    roles: tuple[Role, ...]
    ports: HostPorts = HostPorts()

    @model_validator(mode="after")
    def _some_role(self) -> Host:
        if not self.roles:
            raise ValueError("roles: give at least one role")
        return self


class Limits(Model):
    """Resource limits of one container, put where Podman 5 and systemd accept them.

    Quadlet has no ``Memory=`` key in ``[Container]`` (Podman 5 refuses the unit): the memory
    limit goes to ``PodmanArgs=--memory=...``; ``CPUQuota=`` is a systemd setting and goes to
    ``[Service]`` (it limits the whole unit: conmon and the container's cgroup under it).
    """

    memory: Size | None = None
    cpu: CpuQuota | None = None


# --------------------------------------------------------------------------- pools


class PoolSpec(Model):
    """A pool of identical template-unit instances: ``NAME@.container`` -> ``NAME@N.service``."""

    kind: Literal["web", "worker"]
    port: PortBase | None = None
    """web only: "BASE + n", instance n publishes BASE+n on the host (the policy's scheme)."""
    container_port: Port = 8000
    """Port Daphne listens on inside the container."""
    health: str = "/health/"
    health_interval: Time = "30s"
    min: int = Field(default=1, ge=0)
    max: int = Field(default=5, ge=1)
    queues: tuple[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")], ...] = ()
    """worker only: the Celery queues it consumes (queue-specific workers)."""
    concurrency: int | None = Field(default=None, ge=1)
    max_tasks_per_child: int | None = Field(default=None, ge=1)
    command: tuple[str, ...] = ()
    """Override the container command; default Daphne (web) or ``celery worker`` (worker)."""
    limits: Limits = Limits()
    stop_timeout: Time = "120s"
    """Time a stopping instance gets to finish requests or tasks (the drain bound)."""

    @model_validator(mode="after")
    def _shape(self) -> PoolSpec:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if not self.health.startswith("/"):
            raise ValueError(f'health: "{self.health}" is not a path; it must start with "/"')
        if self.kind == "web":
            if self.port is None:
                raise ValueError('a web pool needs port = "BASE + n"')
            if self.port + self.max > 65535:
                raise ValueError(f"port {self.port} + n exceeds 65535 at n = max ({self.max})")
            if self.queues or self.concurrency or self.max_tasks_per_child:
                raise ValueError("queues, concurrency and max_tasks_per_child are for workers")
        elif not self.queues:
            raise ValueError("a worker pool needs queues = [...]")
        return self

    @property
    def stop_seconds(self) -> int:
        """``stop_timeout`` in whole seconds (Quadlet's ``StopTimeout=`` unit)."""
        return seconds(self.stop_timeout)

    def port_of(self, n: int) -> int:
        """The host port instance ``n`` publishes (the policy's "BASE + n")."""
        assert self.port is not None
        return self.port + n


class Beat(Model):
    """The single Celery beat scheduler (never scaled: two would send every task twice)."""

    enabled: bool = True
    limits: Limits = Limits()


# --------------------------------------------------------------------------- data tier


class DbUser(Model):
    """A PostgreSQL role that clients use (through PgBouncer)."""

    password: SecretRef
    superuser: bool = False
    monitor: bool = False
    """Member of pg_monitor: for senex-scale's PostgreSQL source and the exporters."""


class Replication(Model):
    """Streaming replication from the primary to the replicas."""

    user: Name = "replicator"
    password: SecretRef
    max_wal_senders: int = Field(default=5, ge=1)
    wal_keep_size: Annotated[str, Field(pattern=r"^\d+(?:kB|MB|GB|TB)$")] = "1GB"
    slots: bool = True
    """One physical replication slot per replica, so the primary keeps WAL a replica needs."""


class Postgres(Model):
    """PostgreSQL: the primary (writes), replicas (reads), in containers."""

    image: str = "docker.io/library/postgres:15"
    port: Port = 5432
    database: Name = "senextrader"
    owner: Name = "senex_user"
    """The application's role; must be one of ``users``."""
    users: dict[Name, DbUser] = Field(min_length=1)
    replication: Replication
    listen_addresses: str = "*"
    client_cidrs: tuple[Annotated[str, AfterValidator(_subnet)], ...] = ()
    """Networks besides the PgBouncer hosts that may log in (pg_hba ``host`` lines)."""
    max_connections: int = Field(default=100, ge=10)
    limits: Limits = Limits()


class PgBouncer(Model):
    """PgBouncer in front of the primary (and a ``DB_replica`` alias per replica)."""

    port: Port = 6432
    listen_addr: str = "*"
    pool_mode: Literal["transaction", "session", "statement"] = "transaction"
    """transaction: what Django needs with CONN_MAX_AGE and no server-side cursors."""
    max_client_conn: int = Field(default=200, ge=1)
    default_pool_size: int = Field(default=25, ge=1)
    reserve_pool_size: int = Field(default=5, ge=0)
    reserve_pool_timeout: int = Field(default=3, ge=0)
    server_idle_timeout: int = Field(default=600, ge=0)
    server_lifetime: int = Field(default=3600, ge=0)
    server_login_retry: int = Field(default=15, ge=0)
    client_login_timeout: int = Field(default=60, ge=0)
    admin_users: tuple[Name, ...] = ()
    stats_users: tuple[Name, ...] = ()
    auth_file: AbsPath = "/etc/pgbouncer/userlist.txt"
    logfile: AbsPath = "/var/log/postgresql/pgbouncer.log"
    pidfile: AbsPath = "/run/postgresql/pgbouncer.pid"
    unix_socket_dir: str = "/run/postgresql"


class Redis(Model):
    """Redis: one primary, replicas (read-only), all with a password."""

    image: str = "docker.io/library/redis:7"
    port: Port = 6379
    password: SecretRef
    bind: str = "* -::*"
    maxmemory: Size | None = None
    maxmemory_policy: str = "noeviction"
    """noeviction: Celery's broker must never lose a task to eviction."""
    dir: AbsPath = "/var/lib/redis"
    limits: Limits = Limits()


class Sentinel(Model):
    """Redis Sentinel: quorum-based failover of the Redis primary."""

    port: Port = 26379
    bind: str = "* -::*"
    master_name: Name = "senex-redis"
    quorum: int = Field(default=2, ge=1)
    down_after_milliseconds: int = Field(default=5000, ge=100)
    failover_timeout: int = Field(default=10000, ge=100)
    """Milliseconds (Sentinel's unit)."""
    parallel_syncs: int = Field(default=1, ge=1)
    password: SecretRef | None = None
    """Sentinel's own ``requirepass`` (clients' ``SENTINEL_KWARGS``); also used between them."""
    dir: AbsPath = "/var/lib/redis-sentinel"


# --------------------------------------------------------------------------- edge, monitoring


class Nginx(Model):
    """nginx on every web host: the pool's upstream and WebSocket proxying."""

    listen: Port = 8000
    """Port nginx listens on (HAProxy's backend port when the balancer is HAProxy)."""
    server_name: str = "_"
    upstream: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] = "django_backend"
    pool: Name = "django"
    ip_hash: bool = True
    max_fails: int = Field(default=3, ge=0)
    fail_timeout: Time = "30s"
    keepalive: int = Field(default=32, ge=0)
    worker_shutdown_timeout: Time = "120s"
    """How long old workers keep serving (WebSockets) after a reload before they are closed."""
    websocket_path: str = "/ws/"
    pid: AbsPath = "/run/nginx.pid"
    error_log: AbsPath = "/var/log/nginx/error.log"
    access_log: AbsPath = "/var/log/nginx/access.log"


class HAProxy(Model):
    """HAProxy on the balancer host, in front of the web hosts' nginx."""

    bind: str = "*:443"
    tls_certificate: AbsPath | None = "/etc/letsencrypt/live/example.com/combined.pem"
    """PEM with certificate and key; none: plain HTTP on ``bind``."""
    admin_socket: AbsPath = "/run/haproxy/admin.sock"
    cookie: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")] = "SERVERID"
    check_interval: Time = "2s"
    check_host: Address | None = None
    """Host header of the health check (Django's ALLOWED_HOSTS must accept it); none: HTTP/1.0
    without one, which Django answers with 400 unless the health view ignores the host."""
    timeout_tunnel: Time = "1h"
    """Idle limit of an upgraded (WebSocket) connection."""


class Balancer(Model):
    """Which balancer faces clients: nginx alone, or HAProxy in front of the web hosts."""

    type: Literal["nginx", "haproxy"] = "nginx"


class Exporters(Model):
    """Ports of the exporters Prometheus scrapes (on the hosts of the matching roles)."""

    node: Port = 9100
    celery: str = "127.0.0.1:9808"
    """celery-exporter (danihodovic/celery-exporter): ``celery_queue_length{queue_name=...}``."""
    redis: Port = 9121
    postgres: Port = 9187
    pgbouncer: Port = 9127


class Prometheus(Model):
    """Scrape config and alert/recording rules."""

    scrape_interval: Time = "15s"
    evaluation_interval: Time = "15s"
    exporters: Exporters = Exporters()
    controller: str = "127.0.0.1:9308"
    """Where senex-scale serves its own /metrics (the policy's controller.listen)."""


class Controller(Model):
    """The senex-scale daemon's own unit."""

    command: AbsPath = "/usr/local/bin/senex-scale"
    policy: AbsPath = "/etc/senex-scale/policy.toml"


class Schedule(Model):
    """A systemd timer that scales a pool to ``count`` (for users who prefer timers)."""

    name: Name
    pool: Name
    on_calendar: str = Field(min_length=1)
    """systemd ``OnCalendar=`` (e.g. "Mon..Fri 08:00"); deployment.timezone is appended."""
    count: int = Field(ge=0)


class Inventory(Model):
    """The whole inventory file."""

    deployment: Deployment
    network: Network = Network()
    hosts: dict[Name, Host] = Field(min_length=1)
    pools: dict[Name, PoolSpec] = Field(min_length=1)
    beat: Beat = Beat()
    postgres: Postgres
    pgbouncer: PgBouncer = PgBouncer()
    redis: Redis
    sentinel: Sentinel = Sentinel()
    balancer: Balancer = Balancer()
    nginx: Nginx = Nginx()
    haproxy: HAProxy = HAProxy()
    prometheus: Prometheus = Prometheus()
    controller: Controller = Controller()
    schedules: tuple[Schedule, ...] = ()

    def hosts_with(self, role: str) -> list[tuple[str, Host]]:
        """(name, host) of every host with ``role``, in file order."""
        return [(name, host) for name, host in self.hosts.items() if role in host.roles]

    def secret_refs(self) -> list[tuple[str, _SecretRef]]:
        """Every secret reference with the dotted path it has in the file."""
        refs: list[tuple[str, _SecretRef]] = [
            (f"postgres.users.{name}.password", user.password)
            for name, user in self.postgres.users.items()
        ]
        refs.append(("postgres.replication.password", self.postgres.replication.password))
        refs.append(("redis.password", self.redis.password))
        if self.sentinel.password is not None:
            refs.append(("sentinel.password", self.sentinel.password))
        return refs


# --------------------------------------------------------------------------- loading


def load_inventory(path: str | Path) -> Inventory:
    """Load and validate the inventory at ``path``; ``InventoryError`` lists every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InventoryError(str(path), ["file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(str(path), [f"cannot read: {exc}"]) from None
    return parse_inventory(text, source=str(path))


def parse_inventory(text: str, *, source: str = "<inventory>") -> Inventory:
    """Validate inventory TOML ``text``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(source, [f"not valid TOML: {exc}"]) from None
    return validate_inventory(data, source=source)


def validate_inventory(data: dict[str, Any], *, source: str = "<inventory>") -> Inventory:
    """Validate a parsed inventory: field errors and cross references, all in one list."""
    references = cross_check(data)
    try:
        inventory = Inventory.model_validate(data)
    except ValidationError as exc:
        raise InventoryError(source, format_errors(exc, Inventory) + references) from None
    if references:
        raise InventoryError(source, references)
    return inventory


def _section(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name)
    return value if isinstance(value, dict) else {}


def _default(model: type[BaseModel], field: str) -> Any:
    return model.model_fields[field].default


def _value(data: Mapping[str, Any], model: type[BaseModel], field: str, kind: type) -> Any:
    """``data[field]`` (or the model's default) when it has type ``kind``, else None."""
    value = data.get(field, _default(model, field))
    if isinstance(value, bool) or not isinstance(value, kind):
        return None
    return value


def cross_check(data: Mapping[str, Any]) -> list[str]:
    """Problems spanning sections: roles present once or at all, names that must exist, ports
    shared on a host. Works on the parsed mapping, so these are reported in the same run as
    the field errors; entries too malformed to read are skipped (the models report them)."""
    problems: list[str] = []
    hosts = {name: host for name, host in _section(data, "hosts").items() if isinstance(host, dict)}
    roles = {
        name: {r for r in host.get("roles", []) if isinstance(r, str)}
        if isinstance(host.get("roles"), list)
        else set()
        for name, host in hosts.items()
    }

    def with_role(role: str) -> list[str]:
        return [name for name in hosts if role in roles[name]]

    def need(role: str, why: str, *, exactly_one: bool = False) -> None:
        found = with_role(role)
        if not found:
            problems.append(f'hosts: no host has role "{role}" ({why})')
        elif exactly_one and len(found) > 1:
            names = ", ".join(f"hosts.{n}" for n in found)
            problems.append(f'hosts: role "{role}" is on {len(found)} hosts ({names}); give one')

    pools = {name: p for name, p in _section(data, "pools").items() if isinstance(p, dict)}
    if hosts:
        need("postgres-primary", "the database", exactly_one=True)
        need("redis-primary", "the broker and cache", exactly_one=True)
        need("pgbouncer", "Django and Celery connect through it")
        kinds = {p.get("kind") for p in pools.values()}
        if "web" in kinds:
            need("web", "where the web pools run")
        if "worker" in kinds:
            need("worker", "where the worker pools run")
        if _section(data, "beat").get("enabled", True) is not False:
            need("beat", "the Celery beat scheduler", exactly_one=True)
        if _section(data, "balancer").get("type") == "haproxy":
            need("balancer", "balancer.type is haproxy")
    quorum = _value(_section(data, "sentinel"), Sentinel, "quorum", int)
    sentinels = with_role("sentinel")
    if sentinels and quorum is not None and len(sentinels) < quorum:
        problems.append(
            f"sentinel.quorum: {quorum} is more than the {len(sentinels)} hosts with role "
            "sentinel; failover could never happen"
        )
    web_pool = _value(_section(data, "nginx"), Nginx, "pool", str)
    if pools and web_pool is not None:
        if web_pool not in pools:
            problems.append(
                f'nginx.pool: unknown pool "{web_pool}"' + did_you_mean(web_pool, list(pools))
            )
        elif pools[web_pool].get("kind") == "worker":
            problems.append(f'nginx.pool: "{web_pool}" is a worker pool, not a web pool')
    problems += _user_references(data)
    problems += _schedule_references(data, pools)
    problems += _port_clashes(data, hosts, roles)
    return problems


def _user_references(data: Mapping[str, Any]) -> list[str]:
    postgres = _section(data, "postgres")
    users = list(_section(postgres, "users"))
    if not users:
        return []  # the model says "postgres.users: required" or too short
    problems: list[str] = []
    owner = _value(postgres, Postgres, "owner", str)
    if owner is not None and owner not in users:
        problems.append(
            f'postgres.owner: "{owner}" is not in postgres.users{did_you_mean(owner, users)}'
        )
    replicator = _section(postgres, "replication").get("user", "replicator")
    if replicator in users:
        problems.append(
            f'postgres.replication.user: "{replicator}" is also a client user in '
            "postgres.users; give replication its own role"
        )
    bouncer = _section(data, "pgbouncer")
    for field in ("admin_users", "stats_users"):
        names = bouncer.get(field, [])
        for i, name in enumerate(names if isinstance(names, list) else []):
            if isinstance(name, str) and name not in users:
                problems.append(
                    f'pgbouncer.{field}[{i}]: "{name}" is not in postgres.users'
                    f"{did_you_mean(name, users)} (PgBouncer needs its password)"
                )
    return problems


def _schedule_references(data: Mapping[str, Any], pools: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    schedules = data.get("schedules")
    seen: dict[str, int] = {}
    for i, schedule in enumerate(schedules if isinstance(schedules, list) else []):
        if not isinstance(schedule, dict):
            continue
        name, pool_name, count = schedule.get("name"), schedule.get("pool"), schedule.get("count")
        if isinstance(name, str):
            if name in seen:
                problems.append(
                    f'schedules[{i}].name: "{name}" is already used by schedules[{seen[name]}]'
                )
            seen.setdefault(name, i)
        if not isinstance(pool_name, str):
            continue
        pool = pools.get(pool_name)
        if pool is None:
            problems.append(
                f'schedules[{i}].pool: unknown pool "{pool_name}"'
                f"{did_you_mean(pool_name, list(pools))}"
            )
            continue
        low = _value(pool, PoolSpec, "min", int)
        high = _value(pool, PoolSpec, "max", int)
        in_range = low is None or high is None or not isinstance(count, int) or low <= count <= high
        if not in_range:
            problems.append(
                f"schedules[{i}].count: {count} is outside pools.{pool_name}'s "
                f"min..max ({low}..{high})"
            )
    return problems


def _port_clashes(
    data: Mapping[str, Any], hosts: Mapping[str, Any], roles: Mapping[str, set[str]]
) -> list[str]:
    """Two services of one host on the same port (the per-host overrides make this possible)."""
    defaults: dict[str, tuple[Mapping[str, Any], type[BaseModel], str]] = {
        "postgres": (_section(data, "postgres"), Postgres, "port"),
        "pgbouncer": (_section(data, "pgbouncer"), PgBouncer, "port"),
        "redis": (_section(data, "redis"), Redis, "port"),
        "sentinel": (_section(data, "sentinel"), Sentinel, "port"),
        "nginx": (_section(data, "nginx"), Nginx, "listen"),
    }
    needs = {
        "postgres": {"postgres-primary", "postgres-replica"},
        "pgbouncer": {"pgbouncer"},
        "redis": {"redis-primary", "redis-replica"},
        "sentinel": {"sentinel"},
        "nginx": {"web"},
    }
    problems: list[str] = []
    for name, host in hosts.items():
        overrides = _section(host, "ports")
        used: dict[int, str] = {}
        for service, wanted in needs.items():
            if not roles[name] & wanted:
                continue
            section, model, field = defaults[service]
            port = overrides.get(service) if service != "nginx" else None
            port = port if isinstance(port, int) else _value(section, model, field, int)
            if port is None:
                continue
            if port in used:
                problems.append(
                    f"hosts.{name}: {service} and {used[port]} would both listen on port {port}"
                )
            used.setdefault(port, service)
    return problems


def resolve_secrets(inv: Inventory, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every secret's value by its dotted path; ``InventoryError`` names each one missing."""
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    problems: list[str] = []
    for path, ref in inv.secret_refs():
        try:
            values[path] = ref.resolve(env)
        except ValueError as exc:
            problems.append(f"{path}: {exc}")
    if problems:
        raise InventoryError("secrets", problems)
    return values
