"""Bad inventories: ``render`` exits 2 naming the file and the dotted path, and writes nothing.

Text that ends up in a config file has a grammar and is refused when it does not fit (a newline
in an image, ``;`` in a server name), so a bad inventory never reaches the rendered files'
own checks (which would be exit 1, naming a rendered file instead of the field).
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from senex_scale.policy.loading import dotted

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "inventory.toml"
SEED = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
SECRETS = {
    "SENEX_DB_PASSWORD": "db-Secret-5e1f7a",
    "SENEX_MONITOR_PASSWORD": "monitor-Secret-4b7e21",
    "SENEX_REPLICATION_PASSWORD": "repl-Secret-8c2d44",
    "SENEX_REDIS_PASSWORD": "redis-Secret-31b9c0",
    "SENEX_SENTINEL_PASSWORD": "sentinel-Secret-77aa02",
}
NEWLINES = st.sampled_from(["\n", "\r", "\x00", "\nExec=/bin/sh"])
TEXT = st.sampled_from(["a; return 500; #", "a b", "", "x{y}", "$(id)", 'a"b'])
BAD: list[tuple[str, tuple[Any, ...], st.SearchStrategy[Any]]] = [
    ("deployment.image", ("deployment", "image"), NEWLINES.map(lambda s: "img:1" + s) | TEXT),
    ("deployment.timezone", ("deployment", "timezone"), st.sampled_from(["Mars/Base", ""])),
    ("deployment.volumes[0]", ("deployment", "volumes", 0), NEWLINES.map(lambda s: "a:b" + s)),
    ("deployment.env_file", ("deployment", "env_file"), NEWLINES.map(lambda s: "/a" + s)),
    (
        "pools.django.command[0]",
        ("pools", "django", "command"),
        (NEWLINES.map(lambda s: "daphne" + s) | TEXT).map(lambda s: [s]),
    ),
    ("pools.django.health", ("pools", "django", "health"), NEWLINES.map(lambda s: "/h" + s)),
    ("pools.django.port", ("pools", "django", "port"), st.integers(max_value=0)),
    ("pools.django.health_interval", ("pools", "django", "health_interval"), st.just("0s")),
    (
        "hosts.web01.address",
        ("hosts", "web01", "address"),
        st.sampled_from(["10.0.0.300", "256.1.1.1", "a..b", "-x", "", "a b"]),
    ),
    ("hosts.web02.address", ("hosts", "web02", "address"), st.just("10.0.0.11")),
    (
        "hosts.web01.ports.redis",
        ("hosts", "web01", "ports"),
        st.integers(max_value=0).map(lambda n: {"redis": n}),
    ),
    ("nginx.server_name", ("nginx", "server_name"), TEXT.filter(lambda s: s != "a b") | NEWLINES),
    ("nginx.websocket_path", ("nginx", "websocket_path"), st.sampled_from(["ws", "/ws/ {"])),
    ("redis.maxmemory_policy", ("redis", "maxmemory_policy"), st.sampled_from(["bogus", "lru"])),
    ("redis.bind", ("redis", "bind"), NEWLINES.map(lambda s: "*" + s) | st.just("x; y")),
    ("postgres.listen_addresses", ("postgres", "listen_addresses"), st.just("*; host all")),
    ("pgbouncer.listen_addr", ("pgbouncer", "listen_addr"), NEWLINES.map(lambda s: "*" + s)),
    ("haproxy.bind", ("haproxy", "bind"), st.sampled_from(["*:99999", "", "x\ny:1"])),
    ("prometheus.controller", ("prometheus", "controller"), st.sampled_from(["x", "h:0", "a b:1"])),
    (
        "schedules[0].on_calendar",
        ("schedules", 0, "on_calendar"),
        st.sampled_from(["bogus", "Mon..Fri 25:00", "*-13-* 08:00", "a\nb", ""]),
    ),
    ("sentinel.quorum", ("sentinel", "quorum"), st.sampled_from([math.nan, 0, "two"])),
    (
        "postgres.users.senex_user.password",
        ("postgres", "users", "senex_user", "password"),
        st.sampled_from(["inline", {"env": "A B"}, {"file": "rel"}, {}]),
    ),
]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_broken_value_is_refused_and_nothing_is_written(run: Any, data: st.DataObject) -> None:
    """One value broken: exit 2 naming its path; the output directory is left as it was."""
    where, path, values = data.draw(st.sampled_from(BAD))
    doc = copy.deepcopy(SEED)
    target = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = data.draw(values)
    with tempfile.TemporaryDirectory() as tmp:
        inventory = Path(tmp) / "inventory.toml"
        inventory.write_text(tomli_w.dumps(doc), encoding="utf-8")
        out = Path(tmp) / "out"
        old = dict(os.environ)
        os.environ.update(SECRETS)
        try:
            result = run(["render", "-i", str(inventory), "-o", str(out)])
        finally:
            os.environ.clear()
            os.environ.update(old)
        assert not out.exists()
    result.assert_refused("inventory.toml", where)


@settings(max_examples=30, deadline=None)
@given(body=st.binary(max_size=200) | st.integers(33, 50000).map(lambda n: b"a = " + b"[" * n))
def test_garbage_and_deep_nesting_never_crash(run: Any, body: bytes) -> None:
    """Random bytes, arrays nested thousands deep: exit 2 naming the file, nothing written."""
    with tempfile.TemporaryDirectory() as tmp:
        inventory = Path(tmp) / "inventory.toml"
        inventory.write_bytes(body + b"]" * body.count(b"["))
        out = Path(tmp) / "out"
        result = run(["render", "-i", str(inventory), "-o", str(out), "--check"])
        assert not out.exists()
    result.assert_refused("inventory.toml")


def test_a_missing_secret_names_the_inventory(run: Any) -> None:
    """A secret that is not set is a problem of the inventory file, by its path."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        result = run(["render", "-i", str(EXAMPLE), "-o", str(out), "--check"])
    result.assert_refused("inventory.toml", "postgres.users.senex_user.password: environment")


def _leaves(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(doc, dict):
        return [p for key, value in doc.items() for p in _leaves(value, (*path, key))]
    if isinstance(doc, list) and doc and all(isinstance(v, dict) for v in doc):
        return [p for i, value in enumerate(doc) for p in _leaves(value, (*path, i))]
    return [path]


LEAVES = _leaves(SEED)


@settings(max_examples=40, deadline=None)
@given(path=st.sampled_from(LEAVES), value=st.sampled_from([{"x": 1}, [[1], ["a"]]]))
def test_a_table_or_array_anywhere_is_refused(run: Any, path: tuple[Any, ...], value: Any) -> None:
    """Any value replaced by a table or a nested array: refused by its path, even where the
    cross-references read it (a pool's kind, a host's roles)."""
    doc = copy.deepcopy(SEED)
    target = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    with tempfile.TemporaryDirectory() as tmp:
        inventory = Path(tmp) / "inventory.toml"
        inventory.write_text(tomli_w.dumps(doc), encoding="utf-8")
        result = run(["render", "-i", str(inventory), "-o", f"{tmp}/out", "--check"])
    result.assert_refused("inventory.toml", dotted(path[:-1]))
