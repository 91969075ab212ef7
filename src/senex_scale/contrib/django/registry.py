"""The replica registry: a small JSON file listing the read replicas, re-read when it changes.

The data-tier commands (``senex-scale replica add``) write this file when they add or remove a
replica; the router stats it at most every ``HEALTH_TTL`` seconds and picks up a new list
without a restart. The file holds no secret: a replica logs in with the primary's user, and
with the password of the environment variable its entry names (``password_env``); the
primary's password only when the router's ``INHERIT_PASSWORD`` says so. Format (``version``
is optional and must be 1)::

    {
      "version": 1,
      "replicas": [
        {"alias": "replica_1", "host": "10.0.0.12", "port": 6432},
        {"alias": "replica_2", "host": "10.0.0.13", "port": 6432, "dbname": "senextrader",
         "user": "reader", "password_env": "REPLICA_2_PASSWORD", "max_lag_seconds": 10}
      ]
    }

Writers should replace the file atomically (write a temporary file, then rename) so a reader
never sees half a file; a file that does not parse keeps the previous list and is reported.

Whoever can write this file decides where the application's reads go, so it is trusted only
when it could not have been written by someone else: ``read_registry`` refuses a file (or
its directory) that is owned by anyone but root or the reading user, or that is writable by
group or others. An alias is never ``default`` (Django's primary) nor, in the router, an
alias ``DATABASES`` already has: an entry cannot redirect the primary or another database.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from senex_scale.errors import InputError
from senex_scale.ops.files import replace_file
from senex_scale.plugins import did_you_mean

ALIAS_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
RESERVED_ALIASES = frozenset({"default"})
"""Django's ``DEFAULT_DB_ALIAS``: the primary, never a replica."""
ENV_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_FIELDS = {"alias", "host", "port", "dbname", "user", "password_env", "max_lag_seconds"}


@dataclass(frozen=True)
class ReplicaEntry:
    """One replica: where it listens; everything not given is taken from the primary."""

    alias: str
    host: str
    port: int | None = None
    dbname: str | None = None
    user: str | None = None
    password_env: str | None = None
    """Name of the environment variable holding this replica's password (never the password)."""
    max_lag_seconds: float | None = None
    """Overrides the router's ``MAX_LAG_SECONDS`` for this replica."""


def parse_registry(data: Any, source: str) -> list[ReplicaEntry]:
    """Validated entries from the decoded JSON; every problem named by its path, all at once."""
    problems: list[str] = []
    if isinstance(data, Mapping):
        unknown = sorted(set(data) - {"version", "replicas"})
        problems += [f'unknown key "{key}"' for key in unknown]
        if data.get("version", 1) != 1:
            problems.append(f"version: {data.get('version')!r} is not supported (only 1)")
        raw = data.get("replicas", [])
    else:
        raw = data
    if not isinstance(raw, list):
        raise InputError(f"{source}: replicas: must be a list of objects")
    entries: list[ReplicaEntry] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        entry = _entry(item, f"replicas[{index}]", problems)
        if entry is None:
            continue
        if entry.alias in seen:
            problems.append(f'replicas[{index}].alias: "{entry.alias}" is listed twice')
            continue
        seen.add(entry.alias)
        entries.append(entry)
    if problems:
        body = "\n".join(f"  {p}" for p in problems)
        raise InputError(f"{source}: {len(problems)} problem(s)\n{body}")
    return entries


def _entry(item: Any, where: str, problems: list[str]) -> ReplicaEntry | None:
    if not isinstance(item, Mapping):
        problems.append(f"{where}: must be an object")
        return None
    before = len(problems)
    problems += [
        f'{where}: unknown key "{key}"{did_you_mean(str(key), _FIELDS)}'
        for key in sorted(set(item) - _FIELDS)
    ]
    alias = item.get("alias")
    if not isinstance(alias, str) or not ALIAS_PATTERN.fullmatch(alias):
        problems.append(f"{where}.alias: {alias!r} is not a name (letters, digits, _)")
    elif alias in RESERVED_ALIASES:
        problems.append(f"{where}.alias: \"{alias}\" is the primary's alias, not a replica's")
    host = item.get("host")
    if not isinstance(host, str) or not host:
        problems.append(f"{where}.host: required (a host name or address)")
    port = item.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)):
        problems.append(f"{where}.port: {port!r} is not an integer")
    elif port is not None and not 1 <= port <= 65535:
        problems.append(f"{where}.port: {port} is not in 1..65535")
    for key in ("dbname", "user"):
        value = item.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            problems.append(f"{where}.{key}: must be a non-empty string")
    env = item.get("password_env")
    if env is not None and (not isinstance(env, str) or not ENV_PATTERN.fullmatch(env)):
        problems.append(f"{where}.password_env: {env!r} is not an environment variable name")
    lag = item.get("max_lag_seconds")
    if lag is not None and (isinstance(lag, bool) or not isinstance(lag, int | float) or lag <= 0):
        problems.append(f"{where}.max_lag_seconds: {lag!r} must be a number above 0")
    if len(problems) > before:
        return None
    assert isinstance(alias, str) and isinstance(host, str)
    return ReplicaEntry(
        alias=alias,
        host=host,
        port=port,
        dbname=item.get("dbname"),
        user=item.get("user"),
        password_env=env,
        max_lag_seconds=float(lag) if lag is not None else None,
    )


def read_registry(path: Path) -> list[ReplicaEntry]:
    """The entries of the registry file; a missing file is an empty list (no replicas yet).

    A file that someone other than root or this user could have written is refused
    (``InputError`` naming it and why: ``check_trusted``)."""
    try:
        with open(path, "rb") as handle:
            check_trusted(path, os.fstat(handle.fileno()))
            raw = handle.read()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise InputError(f"{path}: cannot read the replica registry: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: the replica registry is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: line {exc.lineno}: not JSON: {exc.msg}") from None
    return parse_registry(data, str(path))


def check_trusted(path: Path, info: os.stat_result) -> None:
    """Refuse a registry that another user could have written: the file (``info``: its
    ``fstat``) and its directory (both, when the path is a link: the link's and the file's)
    must be owned by root or this user and not writable by group or others."""
    folders = dict.fromkeys(
        [Path(os.path.abspath(path)).parent, Path(os.path.realpath(path)).parent]
    )
    checked = [("file", path, info)] + [("directory", f, os.stat(f)) for f in folders]
    for what, where, stat_ in checked:
        if stat_.st_uid not in (0, os.geteuid()):
            raise InputError(
                f"{path}: the replica registry's {what} {where} is owned by uid "
                f"{stat_.st_uid}, not root or this user: not trusted"
            )
        if stat_.st_mode & 0o022:
            raise InputError(
                f"{path}: the replica registry's {what} {where} is writable by group or "
                f"others (mode {stat_.st_mode & 0o7777:04o}): not trusted (chmod go-w)"
            )


def write_registry(
    path: Path, entries: Sequence[ReplicaEntry], *, create_parents: bool = False
) -> None:
    """Replace the registry atomically, mode 0644 (no secrets in it), without following a
    link at its name or at a temporary name (``ops.files.replace_file``: a registry path that
    is a link is refused)."""
    payload = {
        "version": 1,
        "replicas": [
            {key: value for key, value in vars(entry).items() if value is not None}
            for entry in entries
        ],
    }
    data = (json.dumps(payload, indent=2) + "\n").encode("utf-8")
    replace_file(path, data, mode=0o644, create_parents=create_parents)


def database_settings(
    entry: ReplicaEntry,
    primary: Mapping[str, Any],
    primary_alias: str = "default",
    *,
    inherit_password: bool = True,
) -> dict[str, Any]:
    """The DATABASES entry of a replica: the primary's, with the entry's address and login.

    The password is the one ``password_env`` names; without one, the primary's only when
    ``inherit_password`` (else none: a registry entry pointing at someone else's server must
    not hand it the primary's password). ``TEST.MIRROR`` points at the primary so a test
    runner does not create a test database on a replica (it could not: replicas are
    read-only).
    """
    conf = {
        key: (dict(value) if isinstance(value, dict) else value) for key, value in primary.items()
    }
    if not inherit_password:
        conf["PASSWORD"] = ""
        if isinstance(conf.get("OPTIONS"), dict):
            conf["OPTIONS"].pop("password", None)
    conf["HOST"] = entry.host
    if entry.port is not None:
        conf["PORT"] = entry.port
    if entry.dbname is not None:
        conf["NAME"] = entry.dbname
    if entry.user is not None:
        conf["USER"] = entry.user
    if entry.password_env is not None:
        password = os.environ.get(entry.password_env)
        if password is None:
            raise InputError(
                f"replica {entry.alias}: environment variable {entry.password_env} is not set"
            )
        conf["PASSWORD"] = password
    test = dict(conf.get("TEST") or {})
    test["MIRROR"] = primary_alias
    conf["TEST"] = test
    return conf
