"""What the data-tier commands share: connections with errors translated, secrets, output.

A DSN is a libpq key=value string or a ``postgresql://`` URL; its password may also come from
``PGPASSWORD`` or ``~/.pgpass`` as libpq does. Every message shows a DSN with its password
masked. A secret the commands need themselves (the replication role's password) comes from an
environment variable or a file, never from argv, and is never printed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from rich.console import Console

from senex_scale.errors import InputError, TemporaryError

# markup=False: replica names, hosts and server errors are printed as they are, never as
# Rich markup ("[/x]" would crash a command, "[link=...]" reach the terminal)
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def redact_text(text: str) -> str:
    """``senex_scale.telemetry.logs.redact_text``, imported on first use (structlog is slow to
    import and every ``senex-scale`` command imports this module)."""
    from senex_scale.telemetry.logs import redact_text as redact

    return redact(text)


def parse_dsn(dsn: str, field: str = "--dsn") -> dict[str, Any]:
    """The DSN's parameters; ``InputError`` naming ``field`` when libpq cannot parse it."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise InputError(f"{field}: not a libpq DSN or postgresql:// URL: {exc}") from None
    return dict(params)


def redact_dsn(dsn: str) -> str:
    """``dsn`` with any password masked (key=value and URL forms)."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return redact_text(dsn)
    if "password" in params:
        params["password"] = "***"
    return make_conninfo("", **params)


def with_params(dsn: str, **changes: Any) -> str:
    """``dsn`` with some parameters replaced (``None`` removes one)."""
    params = parse_dsn(dsn)
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    return make_conninfo("", **params)


def connect(dsn: str, *, what: str = "PostgreSQL", timeout: int = 5) -> psycopg.Connection[Any]:
    """An autocommit connection; a failure is a ``TemporaryError`` naming the masked DSN."""
    params = parse_dsn(dsn)
    params.setdefault("connect_timeout", timeout)
    try:
        return psycopg.connect(make_conninfo("", **params), autocommit=True)
    except psycopg.Error as exc:
        message = redact_text(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
        raise TemporaryError(f"{what} ({redact_dsn(dsn)}): cannot connect: {message}") from None


def read_secret(env: str | None, file: Path | None, what: str) -> str:
    """A secret from a file (first line) or an environment variable; ``InputError`` naming the
    option when neither gives one. A file readable by other users is refused."""
    if file is not None:
        try:
            mode = file.stat().st_mode
            if mode & 0o077:
                raise InputError(
                    f"{what}: {file} is readable by other users (mode {mode & 0o777:o}); "
                    "chmod 600 it"
                )
            lines = file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise InputError(f"{what}: cannot read {file}: {exc.strerror}") from None
        secret = lines[0].strip() if lines else ""
        if not secret:
            raise InputError(f"{what}: {file} is empty")
        return secret
    if env:
        secret = os.environ.get(env, "")
        if secret:
            return secret
        raise InputError(f"{what}: environment variable {env} is not set (or use the file option)")
    raise InputError(f"{what}: give an environment variable or a file")


def print_json(doc: Any) -> None:
    """JSON on stdout for scripts (never through Rich: no wrapping, no markup)."""
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
    sys.stdout.flush()


def human_bytes(value: float | None) -> str:
    """``1536`` -> ``"1.5 KiB"``; None -> ``"-"``."""
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover - the loop returns
