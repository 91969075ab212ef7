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
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from senex_scale.errors import PolicyError
from senex_scale.plugins import did_you_mean
from senex_scale.policy.loading import format_errors, load_toml, read_input
from senex_scale.policy.models import PortBase


class InventoryError(PolicyError):
    """An inventory file is unreadable or invalid; ``problems`` lists each with its dotted path.

    A ``PolicyError`` (exit 2, same message shape): to the CLI both are bad input.
    """


class Model(BaseModel):
    """Base of every inventory model: frozen, unknown keys rejected ("did you mean").

    Integers and booleans are strict (``StrictInt``, ``StrictBool``): ``quorum = "2"`` or
    ``ip_hash = "yes"`` is refused by its path, never converted on its way into a config file.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- small types

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$", re.ASCII)
_SIZE = re.compile(r"^\d+(?:[kKmMgG])?$", re.ASCII)
_PERCENT = re.compile(r"^\d+%$", re.ASCII)
_TIME = re.compile(r"^\d+(?:ms|s|m|h)$", re.ASCII)
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$", re.ASCII)
_IMAGE = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::\d{1,5})?/)?"  # registry[:port]/
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"  # path
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"  # :tag
    r"(?:@sha256:[0-9a-f]{64})?$",  # @digest
    re.ASCII,
)
_URL_PATH = re.compile(r"^/[A-Za-z0-9._~/%+:@=-]*$", re.ASCII)
_WORD = re.compile(r"^[^\s\x00-\x1f\x7f\"'\\;#{}`$]+$")
_PATH_CHARS = re.compile(r"^/[^\s\x00-\x1f\x7f\"'\\;#{}`$]*$")
_SERVER_NAME = re.compile(r"^(?:\*\.)?[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*(?:\.\*)?$", re.ASCII)
_CALENDAR_WORDS = {
    "minutely",
    "hourly",
    "daily",
    "monthly",
    "weekly",
    "yearly",
    "quarterly",
    "semiannually",
    "annually",
}
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = {
    **{d: d for d in _DAYS},
    "monday": "mon",
    "tuesday": "tue",
    "wednesday": "wed",
    "thursday": "thu",
    "friday": "fri",
    "saturday": "sat",
    "sunday": "sun",
}
REDIS_POLICIES = (
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
)


def _digits(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also takes other scripts' digits; no server does)."""
    return text.isascii() and text.isdigit()


def _quoted(value: str) -> str:
    """A value in a message: JSON-quoted, so a newline shows as \\n and never breaks a line."""
    return json.dumps(value if len(value) <= 60 else value[:57] + "...", ensure_ascii=False)


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(
            f'{_quoted(value)} is not a name: lower-case letters, digits, "-" and "_", '
            "starting with a letter"
        )
    return value


def _size(value: str) -> str:
    if not _SIZE.fullmatch(value) or int(value.rstrip("kKmMgG")) == 0:
        raise ValueError(f'{_quoted(value)} is not a size (e.g. "1536M", "2G")')
    return value


def _percent(value: str) -> str:
    if not _PERCENT.fullmatch(value) or int(value[:-1]) == 0:
        raise ValueError(f'{_quoted(value)} is not a CPU quota (e.g. "100%" = one core, "250%")')
    return value


def _time(value: str) -> str:
    if not _TIME.fullmatch(value) or int(value.rstrip("mshd")) == 0:
        raise ValueError(
            f'{_quoted(value)} is not a time longer than 0 (e.g. "30s", "500ms", "5m")'
        )
    return value


def seconds(value: str) -> int:
    """A ``Time`` ("500ms", "30s", "5m", "1h") in whole seconds, rounded up."""
    match = re.match(r"^(\d+)(ms|s|m|h)$", value)
    assert match, value
    number, unit = int(match.group(1)), match.group(2)
    if unit == "ms":
        return -(-number // 1000)
    return number * {"s": 1, "m": 60, "h": 3600}[unit]


def is_host_name(value: str) -> bool:
    """A DNS host name: dot-separated labels of letters, digits and "-", not all numeric."""
    labels = value.removesuffix(".").split(".")
    if len(value) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return False
    # "10.0.0.300" is a mistyped address, not a name: a name's last label is not a number
    return not labels[-1].isdigit()


def _address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not is_host_name(value):
            raise ValueError(
                f"{_quoted(value)} is neither an IP address nor a host name "
                '(e.g. "10.0.0.11", "web01.example.com")'
            ) from None
    return value


def _host_port(value: str) -> str:
    """``HOST:PORT`` (``[::1]:9308`` for IPv6), port 1..65535."""
    host, sep, port = value.rpartition(":")
    if not sep or not _digits(port) or not 1 <= int(port) <= 65535:
        raise ValueError(
            f'{_quoted(value)} is not HOST:PORT with a port 1..65535 (e.g. "10.0.0.11:9308")'
        )
    _address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
    return value


def _bind(value: str) -> str:
    """HAProxy ``bind``: ``[ADDRESS]:PORT`` (``*:443``, ``:80``, ``10.0.0.5:443``, ``[::]:443``)."""
    host, sep, port = value.rpartition(":")
    if not sep or not _digits(port) or not 1 <= int(port) <= 65535:
        raise ValueError(
            f'{_quoted(value)} is not ADDRESS:PORT with a port 1..65535 (e.g. "*:443")'
        )
    if host not in ("", "*", "[::]"):
        _address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
    return value


def _address_list(separator: str, *, dash: bool = False) -> Any:
    """A validator of a list of addresses (``*`` for all) joined by ``separator``."""

    def check(value: str) -> str:
        items = [i.strip() for i in value.split(separator)] if separator != " " else value.split()
        if not value.strip() or not value.isprintable() or any(not i for i in items):
            raise ValueError(f'{_quoted(value)} is not a list of addresses (e.g. "*")')
        for item in items:
            bare = item[1:] if dash and item.startswith("-") else item
            if bare in ("*", "::*"):
                continue
            try:
                _address(bare)
            except ValueError:
                where = f"{_quoted(value)}: " if item != value else ""
                raise ValueError(f'{where}{_quoted(item)} is neither an address nor "*"') from None
        return value

    return check


def _absolute(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{_quoted(value)} is not an absolute path")
    if not _PATH_CHARS.fullmatch(value):
        raise ValueError(
            f"{_quoted(value)}: a path here has no spaces, quotes, control characters "
            "or any of ; # { } ` $ \\"
        )
    return value


def _subnet(value: str) -> str:
    try:
        ipaddress.ip_network(value)
    except ValueError:
        raise ValueError(f'{_quoted(value)} is not a subnet (e.g. "10.89.0.0/24")') from None
    return value


def _image(value: str) -> str:
    if len(value) > 255 or not _IMAGE.fullmatch(value):
        raise ValueError(
            f"{_quoted(value)} is not an image reference "
            '(e.g. "registry.example.com/senex-trader:1.4", "docker.io/library/redis:7")'
        )
    return value


def _url_path(value: str) -> str:
    if not _URL_PATH.fullmatch(value):
        raise ValueError(
            f'{_quoted(value)} is not a URL path: "/" then letters, digits and . _ ~ / % + : @ = - '
            '(e.g. "/health/")'
        )
    return value


def _word(value: str) -> str:
    if not _WORD.fullmatch(value):
        raise ValueError(
            f"{_quoted(value)} is not one word: no spaces, quotes, control characters "
            "or any of ; # { } ` $ \\ (give each argument as its own string)"
        )
    return value


def _server_name(value: str) -> str:
    if not value.strip() or not value.isprintable():
        raise ValueError('must be host names separated by spaces (use "_" for any name)')
    names = value.split()
    if not names:
        raise ValueError('must not be empty (use "_" for any name)')
    for name in names:
        if name != "_" and not _SERVER_NAME.fullmatch(name):
            try:
                ipaddress.ip_address(name)
            except ValueError:
                raise ValueError(
                    f"{_quoted(value)}: {_quoted(name)} is not a server name "
                    '(host names, "*.example.com", "example.*" or "_", separated by spaces)'
                ) from None
    return value


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f'{_quoted(value)} is not an IANA time zone (e.g. "America/New_York")'
        ) from None
    return value


def _redis_policy(value: str) -> str:
    if value not in REDIS_POLICIES:
        raise ValueError(
            f"{_quoted(value)} is not a maxmemory policy{did_you_mean(value, REDIS_POLICIES)}; "
            f"known: {', '.join(REDIS_POLICIES)}"
        )
    return value


def _calendar_field(text: str, low: int, high: int) -> bool:
    """One field of a systemd calendar: ``*``, N, N..M, lists of those, with ``/STEP``."""
    for item in text.split(","):
        base, _, step = item.partition("/")
        if step and not (_digits(step) and int(step) > 0):
            return False
        if base == "*":
            continue
        first, dots, last = base.partition("..")
        numbers = [first, last] if dots else [first]
        if not all(_digits(n) and low <= int(n) <= high for n in numbers):
            return False
    return True


def _calendar(value: str) -> str:
    """systemd ``OnCalendar=`` without a time zone: ``[WEEKDAYS] [DATE] [TIME]`` or a word."""
    problem = (
        f"{_quoted(value)} is not a systemd calendar event "
        '(e.g. "Mon..Fri 08:00", "*-*-* 23:00", "daily"; deployment.timezone is added)'
    )
    text = value.strip()
    if text.lower() in _CALENDAR_WORDS:
        return value
    parts = text.split()
    if not 1 <= len(parts) <= 3 or any(not p.isprintable() for p in parts):
        raise ValueError(problem)
    if parts[0][0].isalpha():
        for item in parts.pop(0).split(","):
            first, dots, last = item.lower().partition("..")
            if first not in _DAY_NAMES or (dots and last not in _DAY_NAMES):
                raise ValueError(problem)
    if parts and ":" not in parts[0]:
        fields = parts.pop(0).replace("~", "-").split("-")
        limits = [(1970, 2199), (1, 12), (1, 31)][-len(fields) :] if len(fields) <= 3 else []
        if len(fields) < 2 or not all(
            _calendar_field(f, lo, hi) for f, (lo, hi) in zip(fields, limits, strict=False)
        ):
            raise ValueError(problem)
    if parts:
        fields = parts.pop(0).split(":")
        limits = [(0, 23), (0, 59), (0, 59)]
        if not 2 <= len(fields) <= 3 or not all(
            _calendar_field(f, lo, hi) for f, (lo, hi) in zip(fields, limits, strict=False)
        ):
            raise ValueError(problem)
    if parts:
        raise ValueError(problem)
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
Port = Annotated[StrictInt, Field(ge=1, le=65535)]
Image = Annotated[str, AfterValidator(_image)]
"""An OCI image reference: ``[REGISTRY[:PORT]/]PATH[:TAG][@sha256:DIGEST]``."""
UrlPath = Annotated[str, AfterValidator(_url_path)]
Word = Annotated[str, AfterValidator(_word)]
"""One argument or token of a config line: no whitespace, quotes or shell/config syntax."""
HostPort = Annotated[str, AfterValidator(_host_port)]
Zone = Annotated[str, AfterValidator(_zone)]


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
    image: Image
    """The application image (Django/Daphne and Celery run from the same image)."""
    project: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")] = "senextrader"
    """The Django project package: ``PROJECT.asgi:application`` and ``celery -A PROJECT``."""
    env_file: AbsPath = "/etc/senex-trader/.env"
    """Environment file of the application containers (Quadlet ``EnvironmentFile=``)."""
    scope: Literal["user", "system"] = "user"
    """user: rootless units in ~/.config/containers/systemd; system: /etc/containers/systemd."""
    volumes: tuple[Word, ...] = ()
    """Quadlet ``Volume=`` lines of the application containers (``%h/static:/app/static:z``)."""
    timezone: Zone = "UTC"
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
        twice = sorted({r for r in self.roles if self.roles.count(r) > 1})
        if twice:
            raise ValueError(f'roles: "{twice[0]}" is given twice')
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
    health: UrlPath = "/health/"
    health_interval: Time = "30s"
    min: StrictInt = Field(default=1, ge=0)
    max: StrictInt = Field(default=5, ge=1)
    queues: tuple[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")], ...] = ()
    """worker only: the Celery queues it consumes (queue-specific workers)."""
    concurrency: StrictInt | None = Field(default=None, ge=1)
    max_tasks_per_child: StrictInt | None = Field(default=None, ge=1)
    command: tuple[Word, ...] = ()
    """Override the container command; default Daphne (web) or ``celery worker`` (worker)."""
    limits: Limits = Limits()
    stop_timeout: Time = "120s"
    """Time a stopping instance gets to finish requests or tasks (the drain bound)."""
    websocket_connect_timeout: Time = "30s"
    """web only, the default command: how long Daphne holds a WebSocket handshake for the app
    to accept it (``--websocket_connect_timeout``). Daphne's own default, 5 s, refuses the
    handshakes of a connect rush on a busy instance (the client sees HTTP 502 and comes back,
    adding to the rush)."""

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
            if self.command and "websocket_connect_timeout" in self.model_fields_set:
                raise ValueError(
                    "websocket_connect_timeout sets the default Daphne command's option; with"
                    " command = [...], pass --websocket_connect_timeout in the command"
                )
        elif not self.queues:
            raise ValueError("a worker pool needs queues = [...]")
        elif "websocket_connect_timeout" in self.model_fields_set:
            raise ValueError("websocket_connect_timeout is for web pools (Daphne)")
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

    enabled: StrictBool = True
    limits: Limits = Limits()


# --------------------------------------------------------------------------- data tier


class DbUser(Model):
    """A PostgreSQL role that clients use (through PgBouncer)."""

    password: SecretRef
    superuser: StrictBool = False
    monitor: StrictBool = False
    """Member of pg_monitor: for senex-scale's PostgreSQL source and the exporters."""


class Replication(Model):
    """Streaming replication from the primary to the replicas."""

    user: Name = "replicator"
    password: SecretRef
    max_wal_senders: StrictInt = Field(default=5, ge=1)
    wal_keep_size: Annotated[str, Field(pattern=r"^\d+(?:kB|MB|GB|TB)$")] = "1GB"
    slots: StrictBool = True
    """One physical replication slot per replica, so the primary keeps WAL a replica needs."""


class Postgres(Model):
    """PostgreSQL: the primary (writes), replicas (reads), in containers."""

    image: Image = "docker.io/library/postgres:15"
    port: Port = 5432
    database: Name = "senextrader"
    owner: Name = "senex_user"
    """The application's role; must be one of ``users``."""
    users: dict[Name, DbUser] = Field(min_length=1)
    replication: Replication
    listen_addresses: Annotated[str, AfterValidator(_address_list(","))] = "*"
    client_cidrs: tuple[Annotated[str, AfterValidator(_subnet)], ...] = ()
    """Networks besides the PgBouncer hosts that may log in (pg_hba ``host`` lines)."""
    max_connections: StrictInt = Field(default=100, ge=10)
    limits: Limits = Limits()


class PgBouncer(Model):
    """PgBouncer in front of the primary (and a ``DB_replica`` alias per replica)."""

    port: Port = 6432
    listen_addr: Annotated[str, AfterValidator(_address_list(","))] = "*"
    pool_mode: Literal["transaction", "session", "statement"] = "transaction"
    """transaction: what Django needs with CONN_MAX_AGE and no server-side cursors."""
    max_client_conn: StrictInt = Field(default=200, ge=1)
    default_pool_size: StrictInt = Field(default=25, ge=1)
    reserve_pool_size: StrictInt = Field(default=5, ge=0)
    reserve_pool_timeout: StrictInt = Field(default=3, ge=0)
    server_idle_timeout: StrictInt = Field(default=600, ge=0)
    server_lifetime: StrictInt = Field(default=3600, ge=0)
    server_login_retry: StrictInt = Field(default=15, ge=0)
    client_login_timeout: StrictInt = Field(default=60, ge=0)
    admin_users: tuple[Name, ...] = ()
    stats_users: tuple[Name, ...] = ()
    auth_file: AbsPath = "/etc/pgbouncer/userlist.txt"
    logfile: AbsPath = "/var/log/postgresql/pgbouncer.log"
    pidfile: AbsPath = "/run/postgresql/pgbouncer.pid"
    unix_socket_dir: AbsPath = "/run/postgresql"


class Redis(Model):
    """Redis: one primary, replicas (read-only), all with a password."""

    image: Image = "docker.io/library/redis:7"
    port: Port = 6379
    password: SecretRef
    bind: Annotated[str, AfterValidator(_address_list(" ", dash=True))] = "* -::*"
    maxmemory: Size | None = None
    maxmemory_policy: Annotated[str, AfterValidator(_redis_policy)] = "noeviction"
    """noeviction: Celery's broker must never lose a task to eviction."""
    dir: AbsPath = "/var/lib/redis"
    limits: Limits = Limits()


class Sentinel(Model):
    """Redis Sentinel: quorum-based failover of the Redis primary."""

    port: Port = 26379
    bind: Annotated[str, AfterValidator(_address_list(" ", dash=True))] = "* -::*"
    master_name: Name = "senex-redis"
    quorum: StrictInt = Field(default=2, ge=1)
    down_after_milliseconds: StrictInt = Field(default=5000, ge=100)
    failover_timeout: StrictInt = Field(default=10000, ge=100)
    """Milliseconds (Sentinel's unit)."""
    parallel_syncs: StrictInt = Field(default=1, ge=1)
    password: SecretRef | None = None
    """Sentinel's own ``requirepass`` (clients' ``SENTINEL_KWARGS``); also used between them."""
    dir: AbsPath = "/var/lib/redis-sentinel"


# --------------------------------------------------------------------------- edge, monitoring


class Nginx(Model):
    """nginx on every web host: the site (WebSocket proxying, internal paths refused) and its
    upstream: the local HAProxy (``[web_haproxy]``), or the instances themselves when that is
    disabled."""

    listen: Port = 8000
    """Port nginx listens on (HAProxy's backend port when the balancer is HAProxy)."""
    server_name: Annotated[str, AfterValidator(_server_name)] = "_"
    """nginx ``server_name``: host names, ``*.example.com``, ``example.*`` or ``_`` (any)."""
    upstream: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] = "django_backend"
    """The upstream's name; also the local HAProxy's backend of the pool's instances."""
    pool: Name = "django"
    ip_hash: StrictBool = True
    """Without ``[web_haproxy]`` only (nginx's upstream holds the instances): ``ip_hash``."""
    max_fails: StrictInt = Field(default=3, ge=0)
    """Without ``[web_haproxy]`` only: per instance (one upstream server never fails out)."""
    fail_timeout: Time = "30s"
    """Without ``[web_haproxy]`` only: per instance."""
    keepalive: StrictInt = Field(default=32, ge=0)
    """Idle upstream connections kept per worker (0: none)."""
    worker_shutdown_timeout: Time = "120s"
    """How long old workers keep serving (WebSockets) after a reload before they are closed:
    a reload (a deploy, a certificate) cuts the WebSockets left on them after this long, but
    without it old workers would pile up with every reload."""
    websocket_path: UrlPath = "/ws/"
    pid: AbsPath = "/run/nginx.pid"
    error_log: AbsPath = "/var/log/nginx/error.log"
    access_log: AbsPath = "/var/log/nginx/access.log"


class HAProxy(Model):
    """HAProxy on the balancer host, in front of the web hosts' nginx."""

    bind: Annotated[str, AfterValidator(_bind)] = "*:443"
    tls_certificate: AbsPath | None = "/etc/letsencrypt/live/example.com/combined.pem"
    """PEM with certificate and key; none: plain HTTP on ``bind``."""
    admin_socket: AbsPath = "/run/haproxy/admin.sock"
    balance: Literal["leastconn", "roundrobin"] = "leastconn"
    """How new connections pick a web host: leastconn (the default) sends the WebSockets a
    rebalance or a drain asks to reconnect to the host holding the fewest."""
    cookie: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")] | None = None
    """A sticky-session cookie (e.g. "SERVERID"): each client stays on one web host. None (the
    default): Channels and the sessions live in Redis and PostgreSQL, and a sticky client that
    an instance asks to reconnect (1012) would come straight back to the same host."""
    check_interval: Time = "2s"
    check_host: Address | None = None
    """Host header of the health check (Django's ALLOWED_HOSTS must accept it); none: HTTP/1.0
    without one, which Django answers with 400 unless the health view ignores the host."""
    timeout_tunnel: Time = "1h"
    """Idle limit of an upgraded (WebSocket) connection."""


class WebHAProxy(Model):
    """HAProxy on every web host, between nginx and the pool's instances (``haproxy-web.cfg``).

    nginx's upstream is this HAProxy alone, on loopback and static: nginx is reloaded on
    deploys and certificate renewals only, never on scaling. The instances are HAProxy's
    servers, which the controller's ``haproxy`` balancer adds, drains and removes through the
    admin socket (no reload, no restart) and persists in ``config``; ``balance leastconn``
    sends new and reconnecting WebSockets to the instance holding the fewest. ``enabled =
    false`` renders the older layout: nginx's upstream holds the instances and the ``nginx``
    balancer rewrites it and reloads nginx on every scale action, which cuts every WebSocket
    opened before it once ``worker_shutdown_timeout`` expires (fine for HTTP-only pools).
    """

    enabled: StrictBool = True
    listen: Port = 7999
    """Its frontend's port on 127.0.0.1: the one server of nginx's upstream. Below the
    instances' ``BASE + n`` and beside nginx's 8000."""
    config: AbsPath = "/var/lib/senex-scale/haproxy-web.cfg"
    """Where the config is installed: the policy's ``balancer.config``. The controller writes
    it (a checked temporary file beside it, renamed over it), so its directory belongs to the
    controller's user, like the controller's state in /var/lib/senex-scale."""
    admin_socket: AbsPath = "/var/lib/senex-scale/haproxy-web.sock"
    """The admin socket (mode 600, level admin): the policy's ``balancer.socket``. Only its
    owner, the user HAProxy runs as (the controller's), may add and drain servers."""
    admin_port: Port | None = None
    """Also an admin socket on the host's address and this port (``stats socket
    ipv4@ADDRESS:PORT``), for a controller on another host (the policy's ``socket =
    "{address}:PORT"`` with ``per_host``). It has no authentication: firewall it to the
    controller. None: the unix socket only."""
    binary: AbsPath = "/usr/sbin/haproxy"
    timeout_tunnel: Time = "1h"
    """Idle limit of an upgraded (WebSocket) connection, as nginx's proxy_read_timeout on the
    WebSocket path."""
    hard_stop_after: Time = "120s"
    """After a reload (a deploy), the old process keeps its connections for at most this long,
    so old processes never pile up: the counterpart of nginx's ``worker_shutdown_timeout``."""
    check_host: Address | None = None
    """Host header of the health check (Django's ALLOWED_HOSTS must accept it); none: HTTP/1.0
    without one, which Django answers with 400 unless the health view ignores the host."""


def _webhook(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s\x00-\x1f\x7f\"'\\]+", value):
        raise ValueError(f"{_quoted(value)} is not an http(s) URL")
    return value


WebhookURL = Annotated[str, AfterValidator(_webhook)]


class Balancer(Model):
    """Which balancer faces clients: nginx alone, or HAProxy in front of the web hosts."""

    type: Literal["nginx", "haproxy"] = "nginx"


class Exporters(Model):
    """Ports of the exporters Prometheus scrapes (on the hosts of the matching roles)."""

    node: Port = 9100
    celery: HostPort = "127.0.0.1:9808"
    """celery-exporter (danihodovic/celery-exporter): ``celery_queue_length{queue_name=...}``."""
    redis: Port = 9121
    postgres: Port = 9187
    pgbouncer: Port = 9127


class Alertmanager(Model):
    """Alertmanager on the Prometheus host: where it listens, where each priority is sent."""

    listen: HostPort = "127.0.0.1:9093"
    binary: AbsPath = "/usr/bin/prometheus-alertmanager"
    """Debian's package name for the alertmanager binary."""
    webhooks: dict[Literal["critical", "high", "medium", "low"], WebhookURL] = {}
    """Webhook URL per priority; a priority without one is routed to a receiver that sends
    nowhere (the alert shows in Alertmanager only)."""


class Prometheus(Model):
    """Scrape config and alert/recording rules."""

    scrape_interval: Time = "15s"
    evaluation_interval: Time = "15s"
    exporters: Exporters = Exporters()
    alertmanager: Alertmanager = Alertmanager()
    controller: HostPort = "127.0.0.1:9308"
    """Where senex-scale serves its own /metrics (the policy's controller.listen)."""


class Controller(Model):
    """The senex-scale daemon's own unit."""

    command: AbsPath = "/usr/local/bin/senex-scale"
    policy: AbsPath = "/etc/senex-scale/policy.toml"


class Schedule(Model):
    """A systemd timer that scales a pool to ``count`` (for users who prefer timers)."""

    name: Name
    pool: Name
    on_calendar: Annotated[str, AfterValidator(_calendar)]
    """systemd ``OnCalendar=`` (e.g. "Mon..Fri 08:00"); deployment.timezone is appended."""
    count: StrictInt = Field(ge=0)


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
    web_haproxy: WebHAProxy = WebHAProxy()
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
        text = read_input(path)
    except ValueError as exc:
        raise InventoryError(str(path), [str(exc)]) from None
    return parse_inventory(text, source=str(path))


def parse_inventory(text: str, *, source: str = "<inventory>") -> Inventory:
    """Validate inventory TOML ``text``."""
    try:
        data = load_toml(text)
    except ValueError as exc:
        raise InventoryError(source, [str(exc)]) from None
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
        kinds = {p.get("kind") for p in pools.values() if isinstance(p.get("kind"), str)}
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
    problems += _web_haproxy_ports(data, pools)
    problems += _shared_addresses(hosts)
    problems += _user_references(data)
    problems += _schedule_references(data, pools)
    problems += _port_clashes(data, hosts, roles)
    return problems


_PORT_BASE: TypeAdapter[int] = TypeAdapter(PortBase)


def _web_haproxy_ports(data: Mapping[str, Any], pools: Mapping[str, Any]) -> list[str]:
    """The local HAProxy's ports must not be nginx's or any web instance's (``BASE + n``)."""
    section = _section(data, "web_haproxy")
    if section.get("enabled", True) is False:
        return []
    nginx = _value(_section(data, "nginx"), Nginx, "listen", int)
    problems: list[str] = []
    for field in ("listen", "admin_port"):
        port = _value(section, WebHAProxy, field, int)
        if port is None:
            continue
        if port == nginx:
            problems.append(f"web_haproxy.{field}: {port} is also nginx.listen")
        for name, pool in pools.items():
            base = pool.get("port")
            top = _value(pool, PoolSpec, "max", int)
            if pool.get("kind") != "web" or not isinstance(base, str) or top is None:
                continue
            try:
                first = _PORT_BASE.validate_python(base)
            except ValidationError:
                continue  # the model reports a bad port scheme
            if first < port <= first + top:
                problems.append(
                    f"web_haproxy.{field}: {port} is the port of pools.{name} instance "
                    f"{port - first} (BASE + n = {first} + n, n up to {top})"
                )
    admin = _value(section, WebHAProxy, "admin_port", int)
    if admin is not None and admin == _value(section, WebHAProxy, "listen", int):
        problems.append(f"web_haproxy.admin_port: {admin} is also web_haproxy.listen")
    return problems


def _shared_addresses(hosts: Mapping[str, Any]) -> list[str]:
    """Two hosts with one address: every file that names one of them would mean the other.

    Loopback addresses are the exception: a test deployment on one machine gives its hosts
    127.0.0.1 and separate ports (``hosts.NAME.ports``).
    """
    problems: list[str] = []
    seen: dict[str, str] = {}
    for name, host in hosts.items():
        address = host.get("address")
        if not isinstance(address, str):
            continue
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            key = address.lower().removesuffix(".")
            if key == "localhost":
                continue
        else:
            if ip.is_loopback:
                continue
            key = str(ip)
        if key in seen:
            problems.append(
                f'hosts.{name}.address: "{address}" is also the address of hosts.{seen[key]}'
            )
        seen.setdefault(key, name)
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
        whole = isinstance(count, int) and not isinstance(count, bool)
        in_range = low is None or high is None or not whole or low <= count <= high
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
            whole = isinstance(port, int) and not isinstance(port, bool)
            port = port if whole else _value(section, model, field, int)
            if port is None:
                continue
            if port in used:
                problems.append(
                    f"hosts.{name}: {service} and {used[port]} would both listen on port {port}"
                )
            used.setdefault(port, service)
    return problems


def resolve_secrets(
    inv: Inventory, environ: Mapping[str, str] | None = None, *, source: str = "<inventory>"
) -> dict[str, str]:
    """Every secret's value by its dotted path; ``InventoryError`` names each one missing.

    ``source`` is the inventory file, named first in the error like any other problem of it.
    """
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    problems: list[str] = []
    for path, ref in inv.secret_refs():
        try:
            values[path] = ref.resolve(env)
        except ValueError as exc:
            problems.append(f"{path}: {exc}")
    if problems:
        raise InventoryError(source, problems)
    return values
