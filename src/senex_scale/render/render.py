"""Render every config file of an inventory, check them, and put them in place atomically.

Output layout: one directory per host holding exactly the files that host needs, by kind::

    OUT/MANIFEST.json                  every file: host, kind, mode, where it is installed
    OUT/web01/quadlet/django@.container ...
    OUT/web01/nginx/nginx.conf, nginx/conf.d/django_backend.conf, nginx/conf.d/senex.conf
    OUT/web01/haproxy/haproxy-web.cfg, systemd/haproxy-web.service   (nginx -> HAProxy -> instances)
    OUT/db01/postgresql/postgresql.conf, pg_hba.conf, roles.sql   pgbouncer/pgbouncer.ini ...

The sequence never leaves a half-written ``--out``: everything is rendered into a temporary
directory next to it, every file is checked (Jinja's StrictUndefined, Quadlet sections and keys
Podman 5 accepts, JSON/YAML syntax, no secret in a world-readable file), and only then is the
new tree swapped in for the old one with one ``renameat2(RENAME_EXCHANGE)`` (two renames where
the kernel lacks it). A failure removes the temporary directory and leaves ``--out`` as it was.
Files holding a secret are mode 0600; the diff never prints their content.

The files' own consumers (``nginx -t``, ``haproxy -c``, ``promtool``, the Quadlet generator,
PgBouncer, PostgreSQL, Redis and Sentinel) are run on the output by the integration tests.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import difflib
import ipaddress
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml

from senex_scale.errors import InputError, SenexError
from senex_scale.render import alertmanager, monitoring, scram
from senex_scale.render.inventory import Host, Inventory, PoolSpec, resolve_secrets, seconds

MANIFEST = "MANIFEST.json"
SECRET_MODE = 0o600
PUBLIC_MODE = 0o644
MIN_SECRET_LENGTH = 8
"""Shorter secrets are refused: they are guessable, and could match ordinary file content."""


class RenderError(SenexError):
    """The rendered files failed a check; nothing was written. ``problems`` lists each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        body = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"rendered files failed their checks; --out is unchanged\n{body}")


@dataclass(frozen=True)
class RenderedFile:
    """One output file: where it goes in OUT, on which host, where it is installed."""

    path: str
    """Relative to OUT: HOST/KIND/NAME."""
    content: str
    host: str
    kind: str
    install: str
    """Where it belongs on the host (``~`` = the deploying user's home)."""
    mode: int = PUBLIC_MODE

    @property
    def secret(self) -> bool:
        """True for files holding a secret (mode 0600, content never shown)."""
        return self.mode == SECRET_MODE


@dataclass
class Result:
    """What a render did (or would do)."""

    out: Path
    files: list[RenderedFile]
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    written: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON form for ``--json``."""
        return {
            "out": str(self.out),
            "written": self.written,
            "changed": self.changed,
            "removed": self.removed,
            "files": [
                {
                    "path": f.path,
                    "host": f.host,
                    "kind": f.kind,
                    "mode": f"{f.mode:04o}",
                    "install": f.install,
                }
                for f in self.files
            ],
        }


Validator = Callable[[Sequence[RenderedFile], Mapping[str, str]], list[str]]
"""A check on the rendered files (and the secrets' values): returns problems, empty if fine."""


# --------------------------------------------------------------------------- templates

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("senex_scale.render", "templates"),
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _redis_quote(value: str) -> str:
    """A redis.conf argument in double quotes (sdssplitargs escapes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _libpq_quote(value: str) -> str:
    """A libpq connection-string value in single quotes."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _pg_quote(value: str) -> str:
    """A postgresql.conf string value."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


_ENV.filters.update(redis_quote=_redis_quote, libpq_quote=_libpq_quote, pg_quote=_pg_quote)


@dataclass(frozen=True)
class Node:
    """A host as the templates see it: its name, address and effective service ports."""

    name: str
    address: str
    roles: tuple[str, ...]
    postgres: int
    pgbouncer: int
    redis: int
    sentinel: int

    @property
    def is_ip(self) -> bool:
        """True when the address is an IP (pg_hba gets a /32 or /128 mask)."""
        try:
            ipaddress.ip_address(self.address)
        except ValueError:
            return False
        return True

    @property
    def cidr(self) -> str:
        """pg_hba address: IP/32, IPv6/128, or the host name."""
        if not self.is_ip:
            return self.address
        return f"{self.address}/{ipaddress.ip_address(self.address).max_prefixlen}"

    @property
    def slot(self) -> str:
        """Replication slot name (PostgreSQL allows only [a-z0-9_])."""
        return self.name.replace("-", "_")


def _node(inv: Inventory, name: str, host: Host) -> Node:
    return Node(
        name=name,
        address=host.address,
        roles=host.roles,
        postgres=host.ports.postgres or inv.postgres.port,
        pgbouncer=host.ports.pgbouncer or inv.pgbouncer.port,
        redis=host.ports.redis or inv.redis.port,
        sentinel=host.ports.sentinel or inv.sentinel.port,
    )


def _render(template: str, **context: Any) -> str:
    try:
        return _ENV.get_template(template).render(**context)
    except jinja2.UndefinedError as exc:  # a template bug, reported with its file
        raise RenderError([f"{template}: {exc.message}"]) from None


def _worker_command(inv: Inventory, name: str, pool: PoolSpec) -> str:
    if pool.command:
        return " ".join(pool.command)
    args = [
        "celery",
        "-A",
        inv.deployment.project,
        "worker",
        f"--queues={','.join(pool.queues)}",
        "--loglevel=info",
        # %i: the instance; %H: systemd's host name. Celery's own %h would be systemd's home.
        f"--hostname={name}-%i@%H",
    ]
    if pool.concurrency:
        args.append(f"--concurrency={pool.concurrency}")
    if pool.max_tasks_per_child:
        args.append(f"--max-tasks-per-child={pool.max_tasks_per_child}")
    return " ".join(args)


def _web_command(inv: Inventory, pool: PoolSpec) -> str:
    if pool.command:
        return " ".join(pool.command)
    return (
        f"daphne -b 0.0.0.0 -p {pool.container_port} --access-log - "
        f"--websocket_connect_timeout {seconds(pool.websocket_connect_timeout)} "
        f"{inv.deployment.project}.asgi:application"
    )


# --------------------------------------------------------------------------- rendering


def render_files(
    inv: Inventory,
    secrets: Mapping[str, str],
    *,
    source: str = "inventory.toml",
    previous: Path | None = None,
) -> list[RenderedFile]:
    """Every file of the deployment. ``previous``: an earlier OUT, whose SCRAM salts are kept
    when the password is unchanged (so a re-render with the same secrets changes nothing)."""
    files: list[RenderedFile] = []
    verifiers = _verifiers(inv, secrets, _previous_secrets(previous))
    nodes = {name: _node(inv, name, host) for name, host in inv.hosts.items()}

    def with_role(role: str) -> list[Node]:
        return [nodes[name] for name, _ in inv.hosts_with(role)]

    primary = with_role("postgres-primary")[0]
    pg_replicas = with_role("postgres-replica")
    redis_primary = with_role("redis-primary")[0]
    sentinels = with_role("sentinel")
    user_scope = inv.deployment.scope == "user"
    quadlet_dir = "~/.config/containers/systemd" if user_scope else "/etc/containers/systemd"
    systemd_dir = "~/.config/systemd/user" if user_scope else "/etc/systemd/system"
    base = {
        "inv": inv,
        "dep": inv.deployment,
        "source": source,
        "primary": primary,
        "pg_replicas": pg_replicas,
        "redis_primary": redis_primary,
        "sentinels": sentinels,
        "pgbouncers": with_role("pgbouncer"),
        "web_hosts": with_role("web"),
        "wanted_by": "default.target" if user_scope else "multi-user.target",
        "systemd_dir": systemd_dir,
    }

    def add(
        node: Node, kind: str, rel: str, install: str, text: str, *, mode: int = PUBLIC_MODE
    ) -> None:
        files.append(
            RenderedFile(f"{node.name}/{kind}/{rel}", text, node.name, kind, install, mode)
        )

    for node in nodes.values():
        ctx = {**base, "node": node}
        roles = set(node.roles)
        containers = False
        for name, pool in inv.pools.items():
            if (pool.kind == "web" and "web" in roles) or (
                pool.kind == "worker" and "worker" in roles
            ):
                containers = True
                unit = f"{name}@.container"
                if pool.kind == "web":
                    text = _render(
                        "django@.container.j2",
                        **ctx,
                        name=name,
                        pool=pool,
                        command=_web_command(inv, pool),
                    )
                else:
                    text = _render(
                        "celery-worker@.container.j2",
                        **ctx,
                        name=name,
                        pool=pool,
                        command=_worker_command(inv, name, pool),
                    )
                add(node, "quadlet", unit, f"{quadlet_dir}/{unit}", text)
        if "beat" in roles and inv.beat.enabled:
            containers = True
            text = _render("celery-beat.container.j2", **ctx)
            add(
                node,
                "quadlet",
                "celery-beat.container",
                f"{quadlet_dir}/celery-beat.container",
                text,
            )
        if roles & {"postgres-primary", "postgres-replica"}:
            containers = True
            _postgres(inv, ctx, node, secrets, verifiers, add, quadlet_dir)
        if "pgbouncer" in roles:
            _pgbouncer(inv, ctx, node, verifiers, add)
        if roles & {"redis-primary", "redis-replica", "sentinel"}:
            containers = True
            _redis(inv, ctx, node, secrets, add, quadlet_dir)
        if "web" in roles:
            _nginx(inv, ctx, node, add)
        if "balancer" in roles and inv.balancer.type == "haproxy":
            text = _render("haproxy.cfg.j2", **ctx)
            add(node, "haproxy", "haproxy.cfg", "/etc/haproxy/haproxy.cfg", text)
        if "prometheus" in roles:
            _prometheus(inv, ctx, node, nodes, add)
        if "controller" in roles:
            text = _render("senex-scale.service.j2", **ctx)
            add(node, "systemd", "senex-scale.service", f"{systemd_dir}/senex-scale.service", text)
            for schedule in inv.schedules:
                unit = f"senex-scale-{schedule.name}"
                for suffix in ("timer", "service"):
                    text = _render(f"schedule.{suffix}.j2", **ctx, schedule=schedule)
                    add(node, "systemd", f"{unit}.{suffix}", f"{systemd_dir}/{unit}.{suffix}", text)
        if containers:
            unit = f"{inv.network.name}.network"
            add(
                node, "quadlet", unit, f"{quadlet_dir}/{unit}", _render("network.network.j2", **ctx)
            )
    return files


Add = Callable[..., None]


def _postgres(
    inv: Inventory,
    ctx: dict[str, Any],
    node: Node,
    secrets: Mapping[str, str],
    verifiers: Mapping[str, str],
    add: Add,
    quadlet_dir: str,
) -> None:
    conf_dir = f"{inv.deployment.config_dir}/postgresql"
    replica = "postgres-replica" in node.roles
    text = _render("postgres.container.j2", **ctx, role="replica" if replica else "primary")
    add(node, "quadlet", "postgres.container", f"{quadlet_dir}/postgres.container", text)
    password = secrets["postgres.replication.password"] if replica else None
    text = _render("postgresql.conf.j2", **ctx, replica=replica, replication_password=password)
    add(
        node,
        "postgresql",
        "postgresql.conf",
        f"{conf_dir}/postgresql.conf",
        text,
        mode=SECRET_MODE if replica else PUBLIC_MODE,
    )
    add(
        node,
        "postgresql",
        "pg_hba.conf",
        f"{conf_dir}/pg_hba.conf",
        _render("pg_hba.conf.j2", **ctx),
    )
    if not replica:
        # The PgBouncer secrets become the roles' passwords, so PgBouncer can log in to
        # PostgreSQL with the client's SCRAM proof (pass-through) without knowing a password.
        add(
            node,
            "postgresql",
            "roles.sql",
            f"{conf_dir}/roles.sql",
            _render("roles.sql.j2", **ctx, verifiers=verifiers),
            mode=SECRET_MODE,
        )


def _verifiers(
    inv: Inventory, secrets: Mapping[str, str], previous: Mapping[str, str]
) -> dict[str, str]:
    users = {name: secrets[f"postgres.users.{name}.password"] for name in inv.postgres.users}
    users[inv.postgres.replication.user] = secrets["postgres.replication.password"]
    return {name: scram.secret_for(pw, previous.get(name)) for name, pw in users.items()}


def _previous_secrets(previous: Path | None) -> dict[str, str]:
    """role -> SCRAM secret from an earlier render's roles.sql (empty when none)."""
    found: dict[str, str] = {}
    if previous is None:
        return found
    for path in sorted(previous.glob("*/postgresql/roles.sql")):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        for match in _ROLE_SECRET.finditer(text):
            found.setdefault(match.group(1), match.group(2))
    return found


_ROLE_SECRET = re.compile(r"ALTER ROLE (\w+) .*PASSWORD '(SCRAM-SHA-256\$[^']+)'")


def _pgbouncer(
    inv: Inventory,
    ctx: dict[str, Any],
    node: Node,
    verifiers: Mapping[str, str],
    add: Add,
) -> None:
    clients = {name: verifiers[name] for name in inv.postgres.users}
    add(
        node,
        "pgbouncer",
        "pgbouncer.ini",
        "/etc/pgbouncer/pgbouncer.ini",
        _render("pgbouncer.ini.j2", **ctx),
    )
    add(
        node,
        "pgbouncer",
        "userlist.txt",
        inv.pgbouncer.auth_file,
        _render("userlist.txt.j2", **ctx, verifiers=clients),
        mode=SECRET_MODE,
    )


def _redis(
    inv: Inventory,
    ctx: dict[str, Any],
    node: Node,
    secrets: Mapping[str, str],
    add: Add,
    quadlet_dir: str,
) -> None:
    conf_dir = f"{inv.deployment.config_dir}/redis"
    roles = set(node.roles)
    password = secrets["redis.password"]
    sentinel_password = secrets.get("sentinel.password")
    any_names = any(not n.is_ip for n in [ctx["redis_primary"], *ctx["sentinels"]])
    if roles & {"redis-primary", "redis-replica"}:
        replica = "redis-replica" in roles
        add(
            node,
            "quadlet",
            "redis.container",
            f"{quadlet_dir}/redis.container",
            _render("redis.container.j2", **ctx),
        )
        add(
            node,
            "redis",
            "redis.conf",
            f"{conf_dir}/redis.conf",
            _render("redis.conf.j2", **ctx, replica=replica, password=password),
            mode=SECRET_MODE,
        )
    if "sentinel" in roles:
        add(
            node,
            "quadlet",
            "redis-sentinel.container",
            f"{quadlet_dir}/redis-sentinel.container",
            _render("redis-sentinel.container.j2", **ctx),
        )
        add(
            node,
            "redis",
            "sentinel.conf",
            f"{conf_dir}/sentinel.conf",
            _render(
                "sentinel.conf.j2",
                **ctx,
                password=password,
                sentinel_password=sentinel_password,
                hostnames=any_names,
            ),
            mode=SECRET_MODE,
        )


def initial_members(inv: Inventory, node: Node, web_hosts: Sequence[Node]) -> list[tuple[int, str]]:
    """(n, address) of the instances 1..min of the nginx pool that ``node`` starts with.

    The address is the one the controller gives the instance, so it adopts the rendered
    servers as they are: on one web host every instance at ``127.0.0.1:BASE+n`` (a pool
    without ``hosts``); on several, instance n on web host (n - 1) mod count at that host's
    address (the controller's spread placement and its ``per_host`` balancers).
    """
    pool = inv.pools[inv.nginx.pool]
    numbers = range(1, pool.min + 1)
    if len(web_hosts) <= 1:
        return [(n, f"127.0.0.1:{pool.port_of(n)}") for n in numbers]
    index = [w.name for w in web_hosts].index(node.name)
    host = f"[{node.address}]" if ":" in node.address else node.address
    return [(n, f"{host}:{pool.port_of(n)}") for n in numbers if (n - 1) % len(web_hosts) == index]


def _nginx(inv: Inventory, ctx: dict[str, Any], node: Node, add: Add) -> None:
    """nginx on a web host and, with ``[web_haproxy]``, the local HAProxy behind it."""
    pool = inv.pools[inv.nginx.pool]
    ng = inv.nginx
    install = f"/etc/nginx/conf.d/{ng.upstream}.conf"
    members = initial_members(inv, node, ctx["web_hosts"])
    add(node, "nginx", "nginx.conf", "/etc/nginx/nginx.conf", _render("nginx.conf.j2", **ctx))
    if inv.web_haproxy.enabled:
        # nginx's upstream is the local HAProxy, static (the same file name as the nginx
        # balancer's, so installing it replaces that file on a host that had one)
        text = _render("nginx-upstream.conf.j2", **ctx)
        add(node, "nginx", f"conf.d/{ng.upstream}.conf", install, text)
        _web_haproxy(inv, ctx, node, add, members)
    else:
        add(node, "nginx", f"conf.d/{ng.upstream}.conf", install, _nginx_upstream(inv, members))
    add(
        node,
        "nginx",
        "conf.d/senex.conf",
        "/etc/nginx/conf.d/senex.conf",
        _render("nginx-site.conf.j2", **ctx, health=pool.health),
    )


def _nginx_upstream(inv: Inventory, members: Sequence[tuple[int, str]]) -> str:
    """The upstream of the instances, written by the nginx balancer's own renderer, so the
    controller adopts it as is (marked ``# senex-scale n=N``)."""
    from senex_scale.balancers.base import Member, MemberState
    from senex_scale.balancers.nginx import NginxBalancer
    from senex_scale.policy.models import Pool

    pool = inv.pools[inv.nginx.pool]
    ng = inv.nginx
    balancer = NginxBalancer(
        ng.pool,
        Pool(kind="web", port=pool.port, min=pool.min, max=pool.max, health=pool.health),
        {
            "upstream": ng.upstream,
            "file": f"/etc/nginx/conf.d/{ng.upstream}.conf",
            "ip_hash": ng.ip_hash,
            "max_fails": ng.max_fails,
            "fail_timeout": ng.fail_timeout,
            "keepalive": ng.keepalive,
        },
    )
    return balancer.render([Member(n, address, MemberState.READY) for n, address in members])


def _web_haproxy(
    inv: Inventory,
    ctx: dict[str, Any],
    node: Node,
    add: Add,
    members: Sequence[tuple[int, str]],
) -> None:
    """The local HAProxy of a web host: its config and the systemd unit that runs it.

    Its server lines are the ones the controller's ``haproxy`` balancer writes for a ready
    server (``{pool}-{n} ADDRESS check``: its default prefix, ``cookie = false``), so the
    balancer replaces them in place and the policy needs no ``server_prefix``.
    """
    wh = inv.web_haproxy
    pool = inv.pools[inv.nginx.pool]
    servers = [f"server {inv.nginx.pool}-{n} {address} check" for n, address in members]
    admin_bind = None
    if wh.admin_port is not None:
        family = ("ipv6" if ":" in node.address else "ipv4") if node.is_ip else None
        admin_bind = f"{family + '@' if family else ''}{node.address}:{wh.admin_port}"
    text = _render(
        "haproxy-web.cfg.j2",
        **ctx,
        wh=wh,
        servers=servers,
        health=pool.health,
        admin_bind=admin_bind,
    )
    add(node, "haproxy", "haproxy-web.cfg", wh.config, text)
    unit = "haproxy-web.service"
    text = _render("haproxy-web.service.j2", **ctx, wh=wh)
    add(node, "systemd", unit, f"{ctx['systemd_dir']}/{unit}", text)


def _prometheus(
    inv: Inventory, ctx: dict[str, Any], node: Node, nodes: Mapping[str, Node], add: Add
) -> None:
    web = [(name, pool) for name, pool in inv.pools.items() if pool.kind == "web"]
    text = _render("prometheus.yml.j2", **ctx, web_pools=web, nodes=list(nodes.values()))
    add(node, "prometheus", "prometheus.yml", "/etc/prometheus/prometheus.yml", text)
    pg_hosts = [
        n.name for n in nodes.values() if {"postgres-primary", "postgres-replica"} & set(n.roles)
    ]
    groups = monitoring.rule_groups(
        postgres_hosts=pg_hosts, interval=inv.prometheus.evaluation_interval
    )
    header = _render("_header.j2", **ctx)
    rules = header + yaml.safe_dump(groups, sort_keys=False, width=100)
    add(node, "prometheus", "rules/senex-scale.yml", "/etc/prometheus/rules/senex-scale.yml", rules)
    am = inv.prometheus.alertmanager
    am_config = header + yaml.safe_dump(
        alertmanager.config({str(k): v for k, v in am.webhooks.items()}), sort_keys=False
    )
    add(node, "alertmanager", "alertmanager.yml", "/etc/prometheus/alertmanager.yml", am_config)
    text = _render("alertmanager.service.j2", **ctx)
    add(node, "systemd", "alertmanager.service", f"{ctx['systemd_dir']}/alertmanager.service", text)
    doc = monitoring.dashboard(title=f"Senex Scale: {inv.deployment.name}", web_pool=inv.nginx.pool)
    add(
        node,
        "grafana",
        "senex-scale.json",
        "/var/lib/grafana/dashboards/senex-scale.json",
        json.dumps(doc, indent=2) + "\n",
    )


# --------------------------------------------------------------------------- checks

QUADLET_KEYS: dict[str, frozenset[str]] = {
    "Container": frozenset(
        [
            "AddCapability",
            "AddDevice",
            "Annotation",
            "ContainerName",
            "DropCapability",
            "Environment",
            "EnvironmentFile",
            "Exec",
            "HealthCmd",
            "HealthInterval",
            "HealthOnFailure",
            "HealthRetries",
            "HealthStartPeriod",
            "HealthTimeout",
            "HostName",
            "Image",
            "Label",
            "LogDriver",
            "Network",
            "NoNewPrivileges",
            "Notify",
            "PodmanArgs",
            "PublishPort",
            "Pull",
            "ReadOnly",
            "Secret",
            "StopTimeout",
            "Timezone",
            "User",
            "Volume",
            "WorkingDir",
        ]
    ),
    "Network": frozenset(
        ["NetworkName", "Subnet", "Gateway", "Driver", "Label", "DNS", "IPv6", "Internal"]
    ),
}
"""Quadlet keys this renderer may write (a subset of podman-systemd.unit(5) in Podman 5);
anything else, such as the seed's ``Memory=`` in [Container], is a renderer bug."""
SYSTEMD_SECTIONS = frozenset({"Unit", "Service", "Install", "Timer"})


def check_quadlet(files: Sequence[RenderedFile], secrets: Mapping[str, str]) -> list[str]:
    """Quadlet and systemd units: known sections; in [Container]/[Network] only known keys."""
    problems: list[str] = []
    for f in files:
        if not f.path.endswith((".container", ".network", ".service", ".timer")):
            continue
        section = None
        for number, raw in enumerate(f.content.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                if section not in SYSTEMD_SECTIONS and section not in QUADLET_KEYS:
                    problems.append(f"{f.path}:{number}: unknown section [{section}]")
                continue
            key, eq, _ = line.partition("=")
            if not eq or section is None:
                problems.append(f"{f.path}:{number}: not a key=value line in a section")
                continue
            allowed = QUADLET_KEYS.get(section)
            if allowed is not None and key.strip() not in allowed:
                problems.append(f"{f.path}:{number}: {key.strip()}= is not a [{section}] key")
    return problems


def check_syntax(files: Sequence[RenderedFile], secrets: Mapping[str, str]) -> list[str]:
    """JSON and YAML files parse; every dashboard query names at least one metric."""
    problems: list[str] = []
    for f in files:
        try:
            if f.path.endswith(".json"):
                doc = json.loads(f.content)
                if f.kind == "grafana":
                    for where, expr in monitoring.dashboard_queries(doc):
                        if not monitoring.metric_names(expr):
                            problems.append(f"{f.path}: {where}: no metric in {expr!r}")
            elif f.path.endswith((".yml", ".yaml")):
                yaml.safe_load(f.content)
        except (ValueError, yaml.YAMLError) as exc:
            problems.append(f"{f.path}: does not parse: {exc}")
    return problems


def check_secrets(files: Sequence[RenderedFile], secrets: Mapping[str, str]) -> list[str]:
    """No secret value in a world-readable file."""
    problems: list[str] = []
    for f in files:
        if f.secret:
            continue
        for path, value in secrets.items():
            if value in f.content:
                problems.append(
                    f"{f.path}: contains the value of {path} but is world-readable "
                    f"(mode {f.mode:04o}); use another secret"
                )
    return problems


VALIDATORS: tuple[Validator, ...] = (check_quadlet, check_syntax, check_secrets)


# --------------------------------------------------------------------------- output


def _write_tree(root: Path, files: Sequence[RenderedFile], source: str) -> None:
    for f in files:
        target = root / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        # created with the final mode: a secret file is never readable by others, even briefly
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, f.mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(f.content)
        os.chmod(target, f.mode)
    manifest = {
        "generator": "senex-scale render",
        "inventory": source,
        "files": [
            {
                "path": f.path,
                "host": f.host,
                "kind": f.kind,
                "mode": f"{f.mode:04o}",
                "install": f.install,
            }
            for f in files
        ],
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _check_out(out: Path) -> None:
    """Refuse to replace a directory that is not an earlier render (it would be deleted)."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise InputError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise InputError(
            f"--out {out}: not empty and not made by senex-scale render (no {MANIFEST}); "
            "choose an empty or new directory"
        )


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one step (Linux renameat2); False when not supported."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return bool(rc == 0)


def _swap_in(staged: Path, out: Path) -> None:
    if not out.exists():
        os.rename(staged, out)
        return
    if _exchange(staged, out):
        shutil.rmtree(staged)  # now the old tree
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.rename(out, old)
    os.rename(staged, out)
    shutil.rmtree(old)


def _changes(files: Sequence[RenderedFile], out: Path) -> tuple[list[str], list[str]]:
    changed = []
    for f in files:
        target = out / f.path
        try:
            same = target.read_text(encoding="utf-8") == f.content
            same = same and stat.S_IMODE(target.stat().st_mode) == f.mode
        except OSError:
            same = False
        if not same:
            changed.append(f.path)
    removed: list[str] = []
    if out.is_dir():
        wanted = {f.path for f in files} | {MANIFEST}
        removed = sorted(
            str(p.relative_to(out))
            for p in out.rglob("*")
            if p.is_file() and str(p.relative_to(out)) not in wanted
        )
    return changed, removed


def diff(files: Sequence[RenderedFile], out: Path) -> str:
    """Unified diff of OUT against the rendered files; secret files are named, never shown."""
    chunks: list[str] = []
    changed, removed = _changes(files, out)
    by_path = {f.path: f for f in files}
    for path in changed:
        f = by_path[path]
        target = out / path
        try:
            old = target.read_text(encoding="utf-8")
        except OSError:
            old = None
        if f.secret:
            what = "would be created" if old is None else "differs"
            chunks.append(f"secret file {path} {what} (mode 0600; content not shown)\n")
            continue
        lines = difflib.unified_diff(
            [] if old is None else old.splitlines(keepends=True),
            f.content.splitlines(keepends=True),
            fromfile="/dev/null" if old is None else f"a/{path}",
            tofile=f"b/{path}",
        )
        chunks.append("".join(lines))
        if old is not None and old == f.content:
            chunks.append(f"mode of {path} would change to {f.mode:04o}\n")
    for path in removed:
        chunks.append(f"{path} would be removed\n")
    return "".join(chunks)


def render(
    inv: Inventory,
    out: Path,
    *,
    source: str = "inventory.toml",
    write: bool = True,
    environ: Mapping[str, str] | None = None,
    validators: Sequence[Validator] = VALIDATORS,
) -> Result:
    """Render, check and (``write``) swap the files into ``out``; ``RenderError`` if a check fails.

    With ``write=False`` (``--check``, ``--diff``) the files are rendered and checked in a
    temporary directory that is then removed: ``out`` is only read.
    """
    secrets = resolve_secrets(inv, environ, source=source)
    short = [p for p, v in secrets.items() if len(v) < MIN_SECRET_LENGTH]
    if short:
        from senex_scale.render.inventory import InventoryError

        raise InventoryError(
            source, [f"{p}: shorter than {MIN_SECRET_LENGTH} characters" for p in short]
        )
    _check_out(out)
    files = render_files(inv, secrets, source=source, previous=out if out.is_dir() else None)
    problems = [p for check in validators for p in check(files, secrets)]
    if problems:
        raise RenderError(problems)
    changed, removed = _changes(files, out)
    result = Result(out=out, files=list(files), changed=changed, removed=removed)
    if not write:
        return result
    parent = out.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=parent))
    try:
        os.chmod(staged, 0o755)
        _write_tree(staged, files, source)
        _swap_in(staged, out)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    result.written = True
    return result
