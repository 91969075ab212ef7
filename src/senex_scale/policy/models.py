"""The policy file as validated, frozen models.

Everything downstream (the core, the controller, the simulator) trusts these models: each value
is checked once here, at load time, and every problem is reported with its dotted path by
``senex_scale.policy.loading``. Durations are float seconds; names are the TOML keys.

Shape of a policy::

    [controller]        how often to tick, where state lives, gap and staleness bounds
    [sources.NAME]      metric sources by name (type + driver settings, checked by the driver's
                        settings model: ``senex-scale validate`` runs it without connecting)
    [hosts.NAME]        machines instances run on: address, transport (local, ssh, nsenter)
    [pools.NAME]        groups of identical instances: runtime, balancer, ports, min/max, timing,
                        and the hosts they may run on (placement: spread)
    [[rules]]           threshold (hysteresis band), target (HPA), predictive (the learned
                        trading day) or action (notify/runbook)
    [[schedules]]       cron or market-relative windows that raise or lower a pool's min/max
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    Tag,
    field_validator,
    model_validator,
)

from senex_scale.plugins import REGISTRY, Kind, unknown_name
from senex_scale.policy.durations import format_duration, parse_duration

Duration = Annotated[float, BeforeValidator(parse_duration)]


class Priority(StrEnum):
    """How urgent a rule's action is; decisions come out ordered critical first."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for critical up to 3 for low: sort key, smallest first."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {Priority.CRITICAL: 0, Priority.HIGH: 1, Priority.MEDIUM: 2, Priority.LOW: 3}


class Model(BaseModel):
    """Base of every policy model: frozen, unknown keys rejected, TOML names as aliases.

    Numbers are finite: TOML allows ``nan`` and ``inf``, and either one would reach the core's
    arithmetic (a NaN threshold never fires, an infinite interval never ticks). Integers,
    numbers and booleans are strict (``StrictInt``, ``StrictFloat``, ``StrictBool``): ``"2"``,
    ``2.0`` or ``true`` is not an integer, ``"70"`` not a number, ``"yes"`` or ``1`` not a
    boolean; pydantic's lax mode would quietly convert them and hide the mistake.
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, allow_inf_nan=False
    )


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PATH = re.compile(r"/[!-~]*")
_QUEUE = re.compile(r"[A-Za-z0-9_.:-]+")
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def show_value(value: object) -> str:
    """A value as a TOML file writes it, for messages: "text", 5, true, a table, an array."""
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 60 else value[:57] + "...", ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    text = str(value)
    return text if len(text) <= 30 else "a number too large"


def _names(value: dict[str, Any]) -> dict[str, Any]:
    """Pool and source names: they become unit names, metric labels and URL parts."""
    for name in value:
        if not _KEY.fullmatch(name):
            raise ValueError(
                f"{json.dumps(name)} is not a name: letters, digits, "
                '"_", "." and "-", starting with a letter or digit (e.g. "celery-trading")'
            )
    return value


def _positive(value: float | None) -> float | None:
    if value is not None and value <= 0:
        raise ValueError("must be longer than 0s")
    return value


def _listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ValueError(f'"{value}" is not HOST:PORT with a port 0..65535 (e.g. "127.0.0.1:9308")')
    if any(c.isspace() or not c.isprintable() for c in host):
        raise ValueError(f'"{value}": the host has spaces or control characters')
    return value


def _allowed_host(value: str) -> str:
    if not is_host(value.removeprefix("*.")):
        raise ValueError(
            f'{json.dumps(value)} is not a host name or *.suffix (e.g. "senex.internal")'
        )
    return value


def _env_name(value: str | None) -> str | None:
    if value is not None and not _ENV_NAME.fullmatch(value):
        raise ValueError(f'"{value}" is not an environment variable name (letters, digits and "_")')
    return value


PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
"""A duration that must be longer than 0s (intervals, timeouts)."""


# --------------------------------------------------------------------------- controller


class Controller(Model):
    """Settings of the controller loop itself."""

    interval: PositiveDuration = 15.0
    """Seconds between ticks. 15 s is the HPA sync period: fast enough for a 5 m window."""
    state: str = "sqlite:///var/lib/senex-scale/state.db"
    """Where samples, decisions and the audit log live (sqlite:/// or postgresql://)."""
    max_gap: PositiveDuration | None = None
    """Longest gap between two samples that still counts as one streak; default 3 intervals."""
    stale_after: PositiveDuration | None = None
    """A metric whose newest sample is older than this is missing; default 3 intervals."""
    action_cooldown: Duration = 3600.0
    """Default quiet time after a notify/runbook action fires, so it does not fire every tick."""
    retention: PositiveDuration = 7 * 86400.0
    """How long decisions and samples are kept before pruning."""
    listen: Annotated[str, AfterValidator(_listen)] = "127.0.0.1:9308"
    """Address of the status page and /metrics: loopback unless you mean otherwise."""
    dry_run: StrictBool = False
    leader: str | None = None
    """Who may act: ``file`` (a lock beside the SQLite state, one host), ``postgresql://...``
    (an advisory lock), ``redis://...`` (a lock with a TTL and a fencing token). Default: the
    lock that matches ``state`` (file for SQLite, advisory for PostgreSQL)."""
    leader_ttl: PositiveDuration | None = None
    """Lifetime of a Redis leader lock; default 1.5 intervals, so a standby takes over within
    two intervals of the leader dying."""
    token_env: Annotated[str | None, AfterValidator(_env_name)] = None
    """Environment variable holding the status page's write token (pause/resume). Without
    one the page is read-only."""
    read_token_env: Annotated[str | None, AfterValidator(_env_name)] = None
    """Environment variable holding a token every read of the status page, its API and
    /metrics then needs (bearer, or a cookie set by ``/?token=``). Without one, reading needs
    none: keep ``listen`` on loopback or a private network."""
    allowed_hosts: tuple[Annotated[str, AfterValidator(_allowed_host)], ...] = ()
    """Names the status page is served under besides IP addresses, ``localhost`` and this
    machine's own name (``"senex.internal"``, ``"*.ops.example.com"``); any other ``Host`` is
    refused, so a web page cannot rebind its own domain to the page (DNS rebinding)."""
    backoff: PositiveDuration = 60.0
    """First wait after a failed scale action before the pool is tried again; doubles per
    consecutive failure up to 16 times this."""

    @field_validator("state")
    @classmethod
    def _state_url(cls, value: str) -> str:
        if value in ("sqlite:", "sqlite://", "sqlite:///"):
            raise ValueError(f'"{value}" names no file (e.g. "sqlite:///var/lib/senex/state.db")')
        if not value.startswith(("sqlite:", "postgresql://", "postgres://")):
            raise ValueError(
                f"must be sqlite:PATH or postgresql://..., not {value.split(':', 1)[0]!r}:..."
            )
        return value

    @field_validator("leader")
    @classmethod
    def _leader_url(cls, value: str | None) -> str | None:
        schemes = ("postgresql://", "postgres://", "redis://", "rediss://")
        if value is not None and value != "file" and not value.startswith(schemes):
            raise ValueError(
                f"must be file, postgresql://... or redis://..., not {value.split(':', 1)[0]!r}"
            )
        return value

    @property
    def gap_bound(self) -> float:
        """Effective ``max_gap`` in seconds."""
        return self.max_gap if self.max_gap is not None else 3 * self.interval

    @property
    def stale_bound(self) -> float:
        """Effective ``stale_after`` in seconds."""
        return self.stale_after if self.stale_after is not None else 3 * self.interval


# --------------------------------------------------------------------------- plugins


class _PluginSpec(BaseModel):
    """A driver's settings: ``type`` is checked here, the rest by the driver when it is built."""

    model_config = ConfigDict(frozen=True, extra="allow")
    kind: ClassVar[Kind] = "source"

    type: str

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        kind = cls.kind
        if value not in REGISTRY[kind]:
            raise ValueError(unknown_name(kind, value))
        return value

    @property
    def options(self) -> dict[str, Any]:
        """The driver-specific settings (everything but ``type``)."""
        return dict(self.model_extra or {})


class SourceSpec(_PluginSpec):
    """A named metric source, e.g. ``[sources.prom] type = "prometheus"``."""

    kind: ClassVar[Kind] = "source"


class RuntimeSpec(_PluginSpec):
    """Where a pool's instances run, e.g. systemd template units or supervisor programs."""

    kind: ClassVar[Kind] = "runtime"


class BalancerSpec(_PluginSpec):
    """The load balancer in front of a web pool (nginx upstream or HAProxy backend)."""

    kind: ClassVar[Kind] = "balancer"


# --------------------------------------------------------------------------- hosts


_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def is_host(value: str) -> bool:
    """An IP address, or a DNS name: dot-separated labels of letters, digits, "-" and "_"
    (ssh aliases use "_"), a trailing dot allowed. Nothing else reaches ssh, HAProxy's runtime
    API (where ";" ends a command and a newline the request) or an nginx ``server`` line."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        labels = value.removesuffix(".").split(".")
        return 0 < len(value) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)
    return True


def _host_name(value: str) -> str:
    """A DNS name or an IP address (``is_host``): what ssh connects to, instances answer on
    and the balancers are given as the instances' address."""
    if not is_host(value):
        raise ValueError(
            f"{json.dumps(value)} is not a host name or IP address (letters, digits, "
            '"-", "_" and dots, e.g. "web01.example.com", or "10.0.0.11")'
        )
    return value


def _ssh_option(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*=\S.*", value):
        raise ValueError(f'"{value}" is not an ssh option "Key=Value" (e.g. "Port=2222")')
    return value


def _user_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*\$?", value):
        raise ValueError(f'"{value}" is not a user name')
    return value


def _pid_or_file(value: object) -> int | str:
    """A PID (an integer, never a boolean) or the absolute path of a file holding one."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError("a PID must be greater than 0")
        return value
    if isinstance(value, str):
        if not value.startswith("/"):
            raise ValueError(f'"{value}" is neither a PID nor the absolute path of a PID file')
        return value
    raise ValueError(
        f"must be a PID (an integer) or the absolute path of a PID file, not {show_value(value)}"
    )


HostName = Annotated[str, AfterValidator(_host_name)]
SshOption = Annotated[str, AfterValidator(_ssh_option)]
UserName = Annotated[str, AfterValidator(_user_name)]
PidOrFile = Annotated[int | str, BeforeValidator(_pid_or_file)]
"""``nsenter``: a PID or a PID file (checked before the union, so ``true`` is not PID 1)."""


class Host(Model):
    """A machine that instances run on (``[hosts.web01]``): how its commands get there and
    the address its instances answer on.

    ``transport``: ``ssh`` (the default: OpenSSH, non-interactive, to ``address`` or
    ``ssh_host``), ``local`` (this machine) or ``nsenter`` (inside a container whose init is
    ``nsenter``: the host lab)."""

    address: HostName
    """Where its instances answer (``address:BASE+n``) and, over ssh, where ssh connects."""
    transport: Literal["local", "ssh", "nsenter"] = "ssh"
    ssh_host: HostName | None = None
    """ssh to this name instead of ``address`` (a private interface, an ssh_config alias)."""
    ssh_user: UserName | None = None
    ssh_port: StrictInt | None = Field(default=None, ge=1, le=65535)
    ssh_identity: str | None = Field(default=None, min_length=1)
    """A private key file (``ssh -i``)."""
    known_hosts: str | None = Field(default=None, min_length=1)
    """A known_hosts file: the host key is checked against it (``StrictHostKeyChecking=yes``)."""
    ssh_options: tuple[SshOption, ...] = ()
    """More ``-o Key=Value`` options."""
    nsenter: PidOrFile | None = None
    """transport nsenter: the container's init PID, or a file holding it (read each time)."""
    connect_timeout: PositiveDuration = 5.0
    """How long ssh may take to connect: a powered-off host is noticed after this long."""

    @model_validator(mode="after")
    def _transport(self) -> Host:
        ssh = {
            "ssh_host": self.ssh_host,
            "ssh_user": self.ssh_user,
            "ssh_port": self.ssh_port,
            "ssh_identity": self.ssh_identity,
            "known_hosts": self.known_hosts,
        }
        given = [k for k, v in ssh.items() if v is not None] + (
            ["ssh_options"] if self.ssh_options else []
        )
        if self.transport != "ssh" and given:
            raise ValueError(
                f'{given[0]} needs transport = "ssh" (this host\'s is {self.transport})'
            )
        if self.transport == "nsenter" and self.nsenter is None:
            raise ValueError('transport = "nsenter" needs nsenter (a PID or a PID file)')
        if self.transport != "nsenter" and self.nsenter is not None:
            raise ValueError('nsenter needs transport = "nsenter"')
        return self


def _pool_host(value: object) -> object:
    """``"web01"`` is short for ``{name = "web01"}``."""
    return {"name": value} if isinstance(value, str) else value


class PoolHost(Model):
    """One host a pool may run on, and how many of its instances at most."""

    name: str = Field(min_length=1)
    max: StrictInt | None = Field(default=None, ge=1)
    """At most this many of the pool's instances on this host (default: the pool's
    ``max_per_host``, else no limit but the pool's ``max``)."""


PoolHostEntry = Annotated[PoolHost, BeforeValidator(_pool_host)]


# --------------------------------------------------------------------------- pools

_PORT_SCHEME = re.compile(r"^\s*(\d+)\s*\+\s*n\s*$")


def _parse_port_scheme(value: object) -> int:
    base: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        base = value
    elif isinstance(value, str):
        match = _PORT_SCHEME.match(value)
        if match:
            base = int(match.group(1))
    if base is not None:
        if not 1 <= base <= 65534:
            raise ValueError(
                f"{base} is not a port base: BASE + n must be a port (BASE 1..65534, "
                'e.g. "8000 + n")'
            )
        return base
    shown = repr(value) if isinstance(value, str) else show_value(value)
    raise ValueError(
        f'{shown} is not a port scheme (e.g. "8000 + n": instance n listens on 8000+n)'
    )


PortBase = Annotated[int, BeforeValidator(_parse_port_scheme)]


def _parse_step(value: object) -> int | float:
    """A step is a count of instances (int >= 1) or a percent string ("50%") -> float."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f'{value} is not a step: use a count >= 1 or a percent like "50%"')
        return value
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            pct = float(value.strip()[:-1])
        except ValueError:
            pass
        else:
            if 0 < pct <= 1000:
                return pct / 100.0
    hint = ""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        hint = f" (write {value.strip()} without quotes for a count)"
    raise ValueError(
        f'{show_value(value)} is not a step: use a count >= 1 or a percent like "50%"{hint}'
    )


Step = Annotated[int | float, BeforeValidator(_parse_step)]
"""A step: ``int`` is a count of instances, ``float`` a fraction of the current count."""


def step_size(step: int | float, current: int) -> int:
    """Instances one step adds or removes at ``current`` instances (a percent rounds up, >= 1)."""
    if isinstance(step, int):
        return step
    return max(1, math.ceil(current * step))


class RateLimit(Model):
    """At most ``instances`` (or ``percent`` of the count at the period's start) per ``period``."""

    instances: StrictInt | None = Field(default=None, ge=1)
    percent: StrictFloat | None = Field(default=None, gt=0)
    period: Duration = 15.0

    @model_validator(mode="after")
    def _one_kind(self) -> RateLimit:
        if (self.instances is None) == (self.percent is None):
            raise ValueError("give exactly one of instances or percent")
        if self.period <= 0:
            raise ValueError("period must be longer than 0s")
        return self


def _hpa_scale_out_limits() -> tuple[RateLimit, ...]:
    # Kubernetes HPA default scale-up behavior: 100% or 4 pods per 15 s, whichever is more.
    return (RateLimit(percent=100, period=15), RateLimit(instances=4, period=15))


def _hpa_scale_in_limits() -> tuple[RateLimit, ...]:
    # Kubernetes HPA default scale-down behavior: up to 100% per 15 s.
    return (RateLimit(percent=100, period=15),)


class Fallback(Model):
    """What to do when every metric of a pool has been missing for ``after``."""

    count: StrictInt = Field(ge=0)
    """Scale out to at least this many instances (never in: missing data is not low load)."""
    after: Duration = 300.0


class WebSockets(Model):
    """``[pools.NAME.websockets]``: the pool's instances hold long-lived WebSockets.

    The instances serve ``contrib.django.websockets.WebSocketControl`` at ``control``: the
    controller reads their open connections there (exact, even behind nginx, which cannot
    count them) and asks them to close some with 1012 ("service restart": the client
    reconnects at once, through the balancer, to another instance):

    - on a drain, all of them, paced over ``drain_close`` (at most half the drain_timeout),
      so no client is cut by the stop and the reconnects do not all come in the same second;
    - with ``rebalance``, after a scale-out left the instances uneven (one further than
      ``rebalance_tolerance`` from the mean): the ones above the mean close their excess, at
      most ``rebalance_share`` of the pool's connections per interval (docs/websockets.md).
    """

    control: str = "/senex/websockets/"
    """URL path of the instances' control endpoint (GET: counts; POST: close)."""
    token_env: str | None = None
    """Environment variable holding the endpoint's bearer token (the app's
    ``SENEX_SCALE_ENDPOINTS["TOKEN_ENV"]``); unset: the controller is on an allowed network."""
    drain_close: Duration = 30.0
    """A drained instance's WebSockets are closed over this long (capped at half the
    pool's drain_timeout); 0: all at once."""
    rebalance: StrictBool = True
    rebalance_share: StrictFloat = Field(default=0.25, gt=0, le=1)
    """At most this share of the pool's open WebSockets is closed per interval to rebalance
    (0.25: after 2 -> 4 the new instances hold their share within two intervals)."""
    rebalance_tolerance: StrictFloat = Field(default=0.2, ge=0)
    """Rebalance when an instance holds more or less than the mean by more than this share
    of it (0.2: every instance ends within 20 % of an even share)..."""
    rebalance_min: StrictInt = Field(default=2, ge=1)
    """...and by at least this many connections (no churn over one or two clients)."""

    @field_validator("control")
    @classmethod
    def _control_path(cls, value: str) -> str:
        if not value.startswith("/") or not _PATH.fullmatch(value):
            raise ValueError(
                f'{json.dumps(value)} is not a URL path: it starts with "/" and has no '
                'spaces or control characters (e.g. "/senex/websockets/")'
            )
        return value

    @field_validator("token_env")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        return _env_name(value)

    @field_validator("drain_close")
    @classmethod
    def _not_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must not be negative")
        return value


class Pool(Model):
    """A group of identical instances (``django@1..N``, ``celery-worker-trading@1..N``)."""

    kind: Literal["web", "worker"] = "web"
    """web instances sit behind a balancer and serve HTTP/WebSocket; workers consume queues."""
    runtime: RuntimeSpec | None = None
    balancer: BalancerSpec | None = None
    port: PortBase | None = None
    """Port scheme "BASE + n": instance n listens on BASE+n (works for n >= 10, unlike 800%i)."""
    health: str = "/health/"
    queues: tuple[str, ...] = ()
    """Celery queues a worker pool consumes (queue-specific workers)."""
    min: StrictInt = Field(ge=0)
    max: StrictInt = Field(ge=1)
    priority: Priority = Priority.MEDIUM
    """Priority of bound-driven changes (min/max, schedules) when no rule drove the decision."""
    drain_timeout: PositiveDuration = 120.0
    """Longest wait for a drained instance's connections and in-flight work before stopping it."""
    warmup: Duration = 60.0
    """After start, an instance is not counted as capacity for this long (HPA's cpu init period)."""
    start_timeout: PositiveDuration = 120.0
    """Longest wait for a started instance to pass its health check; then it is stopped again."""
    scale_out_cooldown: Duration = 0.0
    """No rule-driven scale-out until this long after the last scale-out."""
    scale_in_cooldown: Duration = 300.0
    """No rule-driven scale-in until this long after the last scale event in either direction."""
    scale_in_stabilization: Duration = 300.0
    """Target rules scale in to the highest recommendation of this window (HPA default 300 s)."""
    scale_out_limits: tuple[RateLimit, ...] = Field(default_factory=_hpa_scale_out_limits)
    scale_in_limits: tuple[RateLimit, ...] = Field(default_factory=_hpa_scale_in_limits)
    fallback: Fallback | None = None
    hosts: tuple[PoolHostEntry, ...] = ()
    """The hosts (names of ``[hosts]``) the pool may run on: ``["web01", "web02"]`` or
    ``[{ name = "web01", max = 4 }, ...]``. Empty: one host, where the runtime says."""
    max_per_host: StrictInt | None = Field(default=None, ge=1)
    """Default per-host maximum of ``hosts``."""
    placement: Literal["spread"] = "spread"
    """Where a new instance goes: spread = the reachable host with the fewest of the pool's
    instances (a tie: the first listed); a scale-in takes from the host with the most."""
    websockets: WebSockets | None = None
    """The instances hold long-lived WebSockets: clean drains and rebalancing (web pools)."""

    @field_validator("health")
    @classmethod
    def _health_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f'"{value}" is not a path; it must start with "/"')
        if not _PATH.fullmatch(value):
            raise ValueError(
                f"{json.dumps(value)} is not a URL path: no spaces or control characters "
                '(e.g. "/health/")'
            )
        return value

    @field_validator("queues")
    @classmethod
    def _queue_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _QUEUE.fullmatch(name):
                raise ValueError(
                    f"{json.dumps(name)} is not a queue name: letters, digits, "
                    '"_", ".", ":" and "-" (e.g. "trading")'
                )
        return value

    @model_validator(mode="after")
    def _bounds(self) -> Pool:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.websockets is not None and self.kind != "web":
            raise ValueError("websockets: only a web pool's instances hold WebSockets")
        if self.port is not None and self.port + self.max > 65535:
            raise ValueError(f"port {self.port} + n exceeds 65535 at n = max ({self.max})")
        names = [h.name for h in self.hosts]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f'hosts: "{twice[0]}" is listed twice')
        if self.hosts and all(self.host_max(h.name) is not None for h in self.hosts):
            room = sum(self.host_max(h.name) or 0 for h in self.hosts)
            if room < self.min:
                raise ValueError(
                    f"the hosts' maxima add up to {room}, below min ({self.min}): "
                    "min instances cannot be placed"
                )
        return self

    def host_max(self, host: str) -> int | None:
        """At most this many instances on ``host`` (None: only the pool's max bounds it)."""
        for entry in self.hosts:
            if entry.name == host:
                return entry.max if entry.max is not None else self.max_per_host
        return None

    def port_of(self, n: int) -> int | None:
        """The port instance ``n`` listens on, or None when the pool has no port scheme."""
        return None if self.port is None else self.port + n


# --------------------------------------------------------------------------- rules


Signal = Literal[
    "cpu", "connections", "queue", "busy", "memory", "disk", "db_cpu", "requests", "tasks"
]
"""cpu: % of one core per instance; connections: WebSockets per instance; queue: tasks waiting
(pool total); busy: % of worker slots in use; memory: Redis used/max %; disk: used %;
db_cpu: PostgreSQL server CPU %; requests: HTTP requests/s to the pool (total); tasks: tasks
arriving per minute on the pool's queues (total). The last two measure demand itself, not
how the instances cope with it, so they do not saturate: what a predictive rule learns from."""


class Metric(Model):
    """Where a rule's value comes from and how per-instance samples make one pool value."""

    source: str
    query: str = ""
    """Source-specific: a PromQL expression, a queue name, a path, a metric name."""
    aggregate: Literal["avg", "max", "min", "sum"] = "avg"
    """How samples of several instances at one time combine into the pool's value."""
    signal: Signal | None = None
    """What the value means (cpu %, queue length, ...): the simulator and status page use it."""


class Condition(Model):
    """One side of a threshold: ``above`` or ``below`` a value for a sustained window."""

    above: StrictFloat | None = None
    below: StrictFloat | None = None
    for_: Duration = Field(default=0.0, alias="for")
    """Every sample in the last ``for`` must breach (Prometheus ``for:``); 0s: the newest one."""
    step: Step = 1

    @model_validator(mode="after")
    def _one_side(self) -> Condition:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of above or below")
        return self

    def breached(self, value: float) -> bool:
        """True when ``value`` is beyond the threshold."""
        if self.above is not None:
            return value > self.above
        assert self.below is not None
        return value < self.below

    @cached_property
    def text(self) -> str:
        """'> 70 for 5m' style text for reasons (computed once: reasons are built every tick)."""
        op, limit = (">", self.above) if self.above is not None else ("<", self.below)
        text = f"{op} {limit:g}"
        if self.for_:
            text += f" for {format_duration(self.for_)}"
        return text


def _exchange(value: str | None) -> str | None:
    """An exchange calendar name known to exchange-calendars ("XNYS"), with a did-you-mean."""
    if value is None:
        return None
    import exchange_calendars  # imported here: loading pandas is only worth it for calendars

    names = exchange_calendars.get_calendar_names(include_aliases=True)
    if value not in names:
        from senex_scale.plugins import did_you_mean

        hint = (
            f' (did you mean "{value.upper()}"?)'
            if value.upper() in names
            else did_you_mean(value, names)
        )
        raise ValueError(f'unknown exchange calendar "{value}"{hint}')
    return value


def _label(value: str) -> str:
    """A rule or schedule name: it is printed in reasons, logs and metric labels, one line."""
    if value != value.strip() or not value.isprintable():
        raise ValueError(
            f"{json.dumps(value)} is not a name: no control characters (a newline, a tab) "
            "and no spaces at either end"
        )
    return value


Label = Annotated[str, Field(min_length=1), AfterValidator(_label)]


class _RuleBase(Model):
    name: Label
    metric: Metric
    priority: Priority = Priority.MEDIUM
    enabled: StrictBool = True
    description: str = ""


class ThresholdRule(_RuleBase):
    """Scale by a step when the metric stays beyond a threshold (with a hysteresis band)."""

    type: Literal["threshold"] = "threshold"
    pool: str
    scale_out: Condition | None = None
    scale_in: Condition | None = None

    @model_validator(mode="after")
    def _band(self) -> ThresholdRule:
        if self.scale_out is None and self.scale_in is None:
            raise ValueError("give scale_out, scale_in or both")
        out, inn = self.scale_out, self.scale_in
        if out is not None and inn is not None:
            if out.above is not None and inn.below is not None and inn.below >= out.above:
                raise ValueError(
                    f"scale_in.below ({inn.below:g}) must be lower than scale_out.above "
                    f"({out.above:g}), or the pool would oscillate"
                )
            if out.below is not None and inn.above is not None and inn.above <= out.below:
                raise ValueError(
                    f"scale_in.above ({inn.above:g}) must be higher than scale_out.below "
                    f"({out.below:g}), or the pool would oscillate"
                )
        return self

    @cached_property
    def band(self) -> str:
        """'out > 70 for 5m, in < 30 for 10m': the hysteresis band, for reasons."""
        sides = [("out", self.scale_out), ("in", self.scale_in)]
        return ", ".join(f"{name} {cond.text}" for name, cond in sides if cond is not None)


class Tolerance(Model):
    """HPA tolerance per direction: no change while |value/target - 1| is within it."""

    scale_out: StrictFloat = Field(default=0.1, ge=0, lt=1)
    scale_in: StrictFloat = Field(default=0.1, ge=0, lt=1)


def _tolerance(value: object) -> object:
    """One number for both directions, or a table of them; a string or boolean is neither."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"scale_out": value, "scale_in": value}
    if isinstance(value, str | bool):
        shown = f"the string {show_value(value)}" if isinstance(value, str) else show_value(value)
        raise ValueError(
            f"must be a number (e.g. 0.1) or a table of scale_out and scale_in, not {shown}"
        )
    return value


class ScalingRules(Model):
    """One direction of an HPA ``behavior`` (``HPAScalingRules``); unset fields take the HPA's
    defaults for that direction."""

    stabilization: Duration | None = Field(default=None, ge=0)
    """Stabilization window; default 0 s for scale-up, 300 s for scale-down (the HPA's)."""
    select: Literal["max", "min", "disabled"] = "max"
    """Which policy wins (``selectPolicy``): the largest change, the smallest, or none at all."""
    policies: tuple[RateLimit, ...] | None = None
    """Pods (``instances``) or Percent (``percent``) per ``period``; default scale-up
    max(100 %, 4 instances) per 15 s, scale-down 100 % per 15 s."""
    tolerance: StrictFloat | None = Field(default=None, ge=0)
    """Tolerance of this direction (Kubernetes 1.33); default the rule's ``tolerance``. 1 or
    more is allowed: a scale-down tolerance of 1 never scales down."""


class Behavior(Model):
    """The HPA's ``behavior``: per-direction stabilization, rate policies and tolerance."""

    scale_up: ScalingRules = ScalingRules()
    scale_down: ScalingRules = ScalingRules()


class HpaReadiness(Model):
    """The HPA controller's CPU readiness settings (kube-controller-manager flags)."""

    cpu_initialization_period: Duration = 300.0
    """``--horizontal-pod-autoscaler-cpu-initialization-period``: a CPU sample of an instance
    started less than this ago counts only if it is ready and was taken a window after that."""
    initial_readiness_delay: Duration = 30.0
    """``--horizontal-pod-autoscaler-initial-readiness-delay``."""
    metric_window: Duration = 15.0
    """Averaging window of a CPU sample (metrics-server's default resolution, 15 s)."""


class TargetRule(_RuleBase):
    """Target tracking with the Kubernetes HPA algorithm: desired = ceil(current * value / target).

    ``target_type = "average"``: the metric is per instance (CPU %, connections per instance).
    ``target_type = "total"``: the metric is a pool total (queue length); desired =
    ceil(total / target), as HPA's External metric with an AverageValue target.
    With ``mode = "hpa"`` (``senex_scale.core.hpa``) also ``"utilization"`` (per-instance % of
    request, a Resource Utilization target), ``"average_value"`` (per instance, Pods
    AverageValue) and ``"value"`` (one value: ceil(ready instances x value / target)).
    """

    type: Literal["target"] = "target"
    pool: str
    target: StrictFloat = Field(gt=0)
    target_type: Literal["average", "total", "utilization", "average_value", "value"] = "average"
    tolerance: Annotated[Tolerance, BeforeValidator(_tolerance)] = Tolerance()
    mode: Literal["default", "hpa"] = "default"
    """``hpa``: the Kubernetes HPA exactly (replica calculator, ``behavior``); the pool's
    cooldowns, rate limits, stabilization and our guards do not apply to it."""
    behavior: Behavior = Behavior()
    """HPA ``behavior`` (``mode = "hpa"`` only; the pool's own limits apply otherwise)."""
    readiness: HpaReadiness = HpaReadiness()
    """CPU readiness rules of ``mode = "hpa"`` (for a metric whose ``signal`` is ``cpu``)."""
    warmup: StrictBool | None = None
    """Our warm-up: instances inside the pool's ``warmup`` are not capacity. Default: on,
    off in ``hpa`` mode."""
    anti_flap: StrictBool | None = None
    """Our anti-flap veto: no scale-in that would push the average over target + tolerance.
    Default: on, off in ``hpa`` mode."""

    @model_validator(mode="after")
    def _hpa_only(self) -> TargetRule:
        if self.mode != "hpa":
            if self.target_type in ("utilization", "average_value", "value"):
                raise ValueError(f'target_type "{self.target_type}" needs mode = "hpa"')
            if "behavior" in self.model_fields_set or "readiness" in self.model_fields_set:
                raise ValueError('behavior and readiness need mode = "hpa"')
        return self

    @property
    def uses_warmup(self) -> bool:
        """Whether our warm-up applies (explicit, else on outside ``hpa`` mode)."""
        return self.warmup if self.warmup is not None else self.mode != "hpa"

    @property
    def uses_anti_flap(self) -> bool:
        """Whether our anti-flap veto applies (explicit, else on outside ``hpa`` mode)."""
        return self.anti_flap if self.anti_flap is not None else self.mode != "hpa"

    @property
    def per_instance(self) -> bool:
        """True when the metric is sampled per instance."""
        return self.target_type in ("average", "utilization", "average_value")


class PredictiveRule(_RuleBase):
    """Scale out ahead of the trading day's learned shape (``senex_scale.core.forecast``).

    The rule learns the pool's demand (instances needed: ``value / target`` for a ``total``
    metric, ``value x ready instances / target`` for an ``average`` one) per minute of the
    exchange's session from what the controller recorded, and holds the pool at least at
    ``ceil(forecast x (1 + margin))`` for the coming ``lead``. It never scales in: when the
    forecast falls, the pool's other rules decide whether to. It contributes nothing (the pool
    is reactive only, and the decision's reasons say why) while fewer than ``min_sessions``
    sessions are learned, or while the recent error (MAPE) is above ``max_error``.
    ``mode = "forecast-only"`` records the forecast and its error without acting.
    """

    type: Literal["predictive"] = "predictive"
    pool: str
    target: StrictFloat = Field(gt=0)
    """What one instance should carry, in the metric's unit (requests/s, tasks per minute, or
    a per-instance value such as CPU % for ``average``)."""
    target_type: Literal["total", "average"] = "total"
    """``total``: the metric is the pool's demand (a request or task rate; it does not
    saturate, the best to learn from); ``average``: a per-instance value (it saturates at
    100 % while the pool is short, so an under-provisioned session is learned too low)."""
    mode: Literal["on", "forecast-only"] = "forecast-only"
    """``forecast-only`` (the default, as AWS's): record and show the forecast and its error,
    act on nothing, until an operator trusts it and switches it ``on``."""
    lead: Duration | None = Field(default=None, ge=0, le=5400)
    """How far ahead capacity must be there; default ``startup`` + the pool's ``warmup``
    (an instance started now counts as capacity that much later). At most 90 minutes."""
    startup: Duration = Field(default=60.0, ge=0)
    """Start -> healthy of one of the pool's instances (only the default ``lead`` reads it)."""
    margin: StrictFloat = Field(default=0.1, ge=0, le=10)
    """Share added to the forecast before rounding up (0.1: 10 % more)."""
    min_sessions: StrictInt = Field(default=3, ge=1, le=100)
    """Sessions learned before the rule acts; fewer: reactive only."""
    max_error: StrictFloat = Field(default=0.3, gt=0)
    """Largest recent forecast error (MAPE over the last two sessions, 0.3 = 30 %) at which
    the rule still acts; above it: reactive only."""
    half_life: StrictFloat = Field(default=5.0, gt=0, le=100)
    """Recency weighting: a session this many sessions old counts half as much as the last."""
    sessions: StrictInt = Field(default=20, ge=1, le=200)
    """Most sessions learned from (the store keeps ``controller.retention`` of history)."""
    calendar: Annotated[str | None, AfterValidator(_exchange)] = None
    """Exchange calendar (``"XNYS"``); default the first calendar of the policy's schedules,
    else XNYS."""

    def lead_for(self, pool: Pool) -> float:
        """Seconds ahead: ``lead``, else ``startup`` + the pool's ``warmup``."""
        return self.lead if self.lead is not None else self.startup + pool.warmup


class Notify(Model):
    """Tell a person: a webhook (JSON POST) or Alertmanager; the message says what to do."""

    type: Literal["notify"] = "notify"
    message: str = Field(min_length=1)
    url: str | None = None
    """The webhook (http:// or https://); none: Alertmanager from the environment."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number or out of range
        except ValueError:
            parts = urlsplit("")
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or any(c.isspace() or not c.isprintable() for c in value)
        ):
            raise ValueError(
                f"{json.dumps(value)} is not an http:// or https:// URL "
                '(e.g. "https://hooks.example.com/senex")'
            )
        return value


class Runbook(Model):
    """Run a command (argv list, never a shell string), e.g. a playbook that adds a replica."""

    type: Literal["runbook"] = "runbook"
    argv: tuple[str, ...] = Field(min_length=1)
    timeout: PositiveDuration = 600.0
    env: tuple[Annotated[str, AfterValidator(_env_name)], ...] = ()
    """Names of the controller's environment variables the command also gets (``HOME``,
    ``ANSIBLE_CONFIG``). Besides these it gets only ``PATH`` and the decision (``SENEX_*``):
    the controller's own secrets (tokens, the sources' passwords) stay out."""

    @field_validator("argv")
    @classmethod
    def _no_nul(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for i, arg in enumerate(value):
            if "\x00" in arg:
                raise ValueError(f"argv[{i}] contains a NUL character")
        return value


Action = Annotated[Notify | Runbook, Field(discriminator="type")]


class ActionRule(_RuleBase):
    """A rule whose action is not an instance count (notify, runbook)."""

    type: Literal["action"] = "action"
    pool: str | None = None
    when: Condition
    action: Action
    cooldown: Duration | None = None
    """Quiet time after firing; default ``controller.action_cooldown`` (1 h)."""


def _rule_tag(value: Any) -> str:
    if isinstance(value, dict):
        tag = value.get("type")
        if tag is None:
            if "when" in value or "action" in value:
                return "action"
            return "target" if "target" in value else "threshold"
        return str(tag)
    return str(getattr(value, "type", "threshold"))


RULE_TYPES = ("threshold", "target", "action", "predictive")

Rule = Annotated[
    Annotated[ThresholdRule, Tag("threshold")]
    | Annotated[TargetRule, Tag("target")]
    | Annotated[ActionRule, Tag("action")]
    | Annotated[PredictiveRule, Tag("predictive")],
    Discriminator(
        _rule_tag,
        custom_error_type="rule_type",
        custom_error_message='type must be "threshold", "target", "action" or "predictive"',
    ),
]


# --------------------------------------------------------------------------- schedules

_ANCHOR = re.compile(r"^(open|close)\s*(?:([+-])\s*(\S+))?$")


def parse_anchor(text: str) -> tuple[str, float] | None:
    """``"open-90m"`` -> ("open", -5400.0); None when ``text`` is not a market anchor."""
    match = _ANCHOR.match(text.strip())
    if not match:
        return None
    offset = parse_duration(match.group(3)) if match.group(3) else 0.0
    return match.group(1), -offset if match.group(2) == "-" else offset


class Schedule(Model):
    """A window that raises or lowers pools' min/max.

    ``start`` and ``end`` are cron lines (5 fields) in ``timezone``, or, with a ``calendar``,
    market anchors such as ``"open-90m"`` and ``"close+15m"`` that follow half days. With a
    calendar, a window only opens on that exchange's trading sessions (holidays are skipped).
    The window runs from a start to the first end after it.
    """

    name: Label
    pools: tuple[str, ...] = Field(min_length=1)
    start: str
    end: str
    timezone: str = "UTC"
    calendar: str | None = None
    min: StrictInt | None = Field(default=None, ge=0)
    max: StrictInt | None = Field(default=None, ge=1)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f'"{value}" is not an IANA timezone (e.g. "America/New_York")'
            ) from None
        return value

    @field_validator("calendar")
    @classmethod
    def _calendar(cls, value: str | None) -> str | None:
        return _exchange(value)

    @field_validator("start", "end")
    @classmethod
    def _when(cls, value: str) -> str:
        from croniter import croniter

        if parse_anchor(value) is not None:
            return value.strip()
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(
                f'"{value}" is neither a 5-field cron line (e.g. "0 8 * * MON-FRI") '
                'nor a market anchor (e.g. "open-90m", "close+15m")'
            )
        # croniter accepts some lines that never fire (Feb 30); find one match within 5 years.
        try:
            from datetime import datetime

            croniter(value, datetime(2026, 1, 1), max_years_between_matches=5).get_next(datetime)
        except Exception:
            raise ValueError(f'cron line "{value}" never fires') from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Schedule:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        anchored = [f for f in ("start", "end") if parse_anchor(getattr(self, f)) is not None]
        if anchored and self.calendar is None:
            raise ValueError(
                f"{anchored[0]} is a market anchor, which needs a calendar (e.g. XNYS)"
            )
        return self


# --------------------------------------------------------------------------- policy


class Policy(Model):
    """A whole policy file."""

    controller: Controller = Controller()
    hosts: Annotated[dict[str, Host], AfterValidator(_names)] = {}
    sources: Annotated[dict[str, SourceSpec], AfterValidator(_names)] = {}
    pools: Annotated[dict[str, Pool], AfterValidator(_names)] = {}
    rules: tuple[Rule, ...] = ()
    schedules: tuple[Schedule, ...] = ()

    def rules_for(self, pool: str) -> tuple[ThresholdRule | TargetRule, ...]:
        """Enabled instance-count rules of ``pool``, in file order."""
        return tuple(
            r
            for r in self.rules
            if r.enabled and isinstance(r, ThresholdRule | TargetRule) and r.pool == pool
        )

    def predictive_rules(self, pool: str) -> tuple[PredictiveRule, ...]:
        """Enabled predictive rules of ``pool``, in file order."""
        return tuple(
            r for r in self.rules if r.enabled and isinstance(r, PredictiveRule) and r.pool == pool
        )

    def exchange(self, rule: PredictiveRule) -> str:
        """The calendar of a predictive rule: its own, else the schedules' first, else XNYS."""
        if rule.calendar is not None:
            return rule.calendar
        return next((s.calendar for s in self.schedules if s.calendar is not None), "XNYS")

    def action_rules(self) -> tuple[ActionRule, ...]:
        """Enabled rules whose action is not an instance count."""
        return tuple(r for r in self.rules if r.enabled and isinstance(r, ActionRule))
