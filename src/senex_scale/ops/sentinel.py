"""``senex-scale sentinel status``: is the Redis Sentinel group able to fail over right now?

The seed sets up a primary, two replicas and three sentinels with a quorum of 2 and stops
there. What an operator needs to know before trusting it: every sentinel answers and names
the same master; the master is not marked down; at least one replica is linked and up (a
failover needs somewhere to go); and the sentinels can authorize a failover
(``SENTINEL CKQUORUM``: the quorum is reachable and a majority of sentinels agree). Exit 1
when any of that is false, so the command fits a monitoring check or a runbook.

Each sentinel is asked on its own (``SENTINEL MASTER``, ``REPLICAS``, ``SENTINELS``,
``CKQUORUM``); a sentinel that does not answer is a problem, not an error of the command.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

import typer
from rich.table import Table

from senex_scale.contrib.django.settings import parse_sentinels
from senex_scale.errors import InputError
from senex_scale.ops.common import out, print_json, read_secret

app = typer.Typer(help="Redis Sentinel: the group's health.", no_args_is_help=True)

DOWN_FLAGS = {"s_down", "o_down", "disconnected"}


@dataclass(frozen=True, slots=True)
class Node:
    """A Redis server as a sentinel sees it."""

    address: str
    flags: tuple[str, ...]
    link: str = "ok"
    """``master-link-status`` of a replica (``ok`` or ``err``)."""

    @property
    def up(self) -> bool:
        return not (DOWN_FLAGS & set(self.flags)) and self.link == "ok"


@dataclass(frozen=True, slots=True)
class SentinelView:
    """What one sentinel says (``error`` when it did not answer)."""

    address: str
    master: Node | None = None
    replicas: tuple[Node, ...] = ()
    sentinels: tuple[str, ...] = ()
    quorum: int | None = None
    ckquorum: str | None = None
    quorum_ok: bool = False
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Health:
    """The group's verdict: healthy when ``problems`` is empty."""

    name: str
    master: str | None
    replicas: list[dict[str, Any]] = field(default_factory=list)
    sentinels: list[dict[str, Any]] = field(default_factory=list)
    quorum: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"healthy": self.healthy}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _flags(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, (list, tuple, set)):
        return tuple(sorted(_text(f) for f in raw))
    return tuple(f for f in _text(raw).split(",") if f)


def assess(name: str, views: list[SentinelView]) -> Health:
    """The verdict from every sentinel's view (pure: the unit tests feed it views)."""
    problems: list[str] = []
    answering = [v for v in views if v.error is None and v.master is not None]
    for view in views:
        if view.error is not None:
            problems.append(f"sentinel {view.address}: {view.error}")
    if not answering:
        problems.append(f"no sentinel answers for {name}")
        return Health(name, None, problems=problems)
    masters = {v.master.address for v in answering if v.master is not None}
    reference = answering[0]
    assert reference.master is not None
    if len(masters) > 1:
        per = ", ".join(
            f"{v.address} -> {v.master.address}" for v in answering if v.master is not None
        )
        problems.append(f"sentinels disagree on the master: {per}")
    if not reference.master.up:
        problems.append(
            f"master {reference.master.address} is down ({','.join(reference.master.flags)})"
        )
    for replica in reference.replicas:
        if not replica.up:
            problems.append(
                f"replica {replica.address} is down ({','.join(replica.flags)}, "
                f"link {replica.link})"
            )
    if not any(r.up for r in reference.replicas):
        problems.append("no replica is up: a failover would have nowhere to go")
    for view in answering:
        if not view.quorum_ok:
            problems.append(f"sentinel {view.address}: CKQUORUM: {view.ckquorum}")
    known = {reference.address, *reference.sentinels}
    return Health(
        name=name,
        master=reference.master.address,
        replicas=[asdict(r) | {"up": r.up} for r in reference.replicas],
        sentinels=[
            {"address": v.address, "answers": v.error is None, "quorum_ok": v.quorum_ok}
            for v in views
        ]
        + [
            {"address": a, "answers": None, "quorum_ok": None}
            for a in sorted(known - {v.address for v in views})
        ],
        quorum=reference.quorum,
        problems=problems,
    )


def view_of(host: str, port: int, name: str, password: str | None, timeout: float) -> SentinelView:
    """Ask one sentinel everything about master ``name``."""
    import redis

    address = f"{host}:{port}"
    client = redis.Redis(
        host=host, port=port, password=password, socket_timeout=timeout,
        socket_connect_timeout=timeout, decode_responses=True,
    )  # fmt: skip
    # redis-py leaves execute_command untyped
    command: Callable[..., Any] = client.execute_command
    try:
        master = command("SENTINEL", "MASTER", name)
        replicas = command("SENTINEL", "REPLICAS", name)
        sentinels = command("SENTINEL", "SENTINELS", name)
        try:
            ckquorum = _text(command("SENTINEL", "CKQUORUM", name))
            quorum_ok = True
        except redis.ResponseError as exc:
            ckquorum, quorum_ok = str(exc), False
    except redis.ResponseError as exc:
        return SentinelView(address, error=str(exc))
    except (redis.RedisError, OSError) as exc:
        return SentinelView(address, error=f"no answer ({exc})")
    finally:
        client.close()

    def as_dict(raw: Any) -> dict[str, Any]:
        if isinstance(raw, dict):
            return {_text(k): v for k, v in raw.items()}
        items = list(raw)
        return {_text(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}

    def node(raw: Any) -> Node:
        doc = as_dict(raw)
        return Node(
            f"{_text(doc.get('ip'))}:{_text(doc.get('port'))}",
            _flags(doc.get("flags", "")),
            _text(doc.get("master-link-status", "ok")),
        )

    master_doc = as_dict(master)
    return SentinelView(
        address,
        master=node(master_doc),
        replicas=tuple(node(r) for r in replicas),
        sentinels=tuple(
            f"{_text(as_dict(s).get('ip'))}:{_text(as_dict(s).get('port'))}" for s in sentinels
        ),
        quorum=int(_text(master_doc.get("quorum", 0))),
        ckquorum=ckquorum,
        quorum_ok=quorum_ok,
    )


def sentinel_health(
    sentinels: str, name: str, password: str | None = None, timeout: float = 2.0
) -> Health:
    """Ask every sentinel of the list and assess the group."""
    hosts = parse_sentinels(sentinels)
    return assess(name, [view_of(h, p, name, password, timeout) for h, p in hosts])


@app.command("status")
def status_command(
    sentinels: Annotated[
        str, typer.Option("--sentinels", help="host:port,host:port,... of the sentinels.")
    ],
    name: Annotated[
        str, typer.Option("--name", help="The master's name in Sentinel.")
    ] = "mymaster",
    password_env: Annotated[
        str | None,
        typer.Option("--password-env", help="Environment variable with the sentinels' password."),
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per sentinel.")] = 2.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Master, replicas, sentinels and quorum (CKQUORUM); exit 1 when the group is unhealthy."""
    if timeout <= 0:
        raise InputError("--timeout: must be above 0 seconds")
    password = read_secret(password_env, None, "--password-env") if password_env else None
    health = sentinel_health(sentinels, name, password, timeout)
    if json_out:
        print_json(health.as_dict())
    else:
        out.print(f"master {name}: {health.master or '?'} (quorum {health.quorum or '?'})")
        table = Table(title="replicas", title_justify="left")
        for col in ("address", "flags", "link", "up"):
            table.add_column(col)
        for r in health.replicas:
            table.add_row(r["address"], ",".join(r["flags"]), r["link"], "yes" if r["up"] else "no")
        out.print(table)
        table = Table(title="sentinels", title_justify="left")
        for col in ("address", "answers", "CKQUORUM"):
            table.add_column(col)
        for s in health.sentinels:
            answers = {True: "yes", False: "no", None: "not asked"}[s["answers"]]
            quorum = {True: "ok", False: "FAILED", None: "-"}[s["quorum_ok"]]
            table.add_row(s["address"], answers, quorum)
        out.print(table)
        if health.problems:
            out.print("unhealthy:")
            for problem in health.problems:
                out.print(f"  {problem}", markup=False)
        else:
            out.print("healthy: the sentinels agree, a replica is up, the quorum is reachable")
    if not health.healthy:
        raise typer.Exit(1)
