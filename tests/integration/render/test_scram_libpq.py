"""``render.scram`` makes the very secret libpq makes, and a real server logs in with it.

libpq's ``PQencryptPasswordConn`` (through psycopg) is the reference: its secret has a random
salt, so the check is that ``scram.verify`` accepts it for the same password (same SASLprep,
same keys); then a role whose password is *our* secret logs in to PostgreSQL 15 over SCRAM
with the plain password (the server checks libpq's client proof against our keys).
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import sql

from senex_scale.lab import Postgres, lab_dir
from senex_scale.render.scram import scram_secret, verify

pytestmark = pytest.mark.integration

TRICKY = [
    "plain-ascii",
    "ascii\twith\x07controls",
    "pass\u200bword",  # U+200B: B.1 and C.1.2; PostgreSQL maps it to a space
    "ab\u200b\u00a0c",
    "\u200b\u00a0x",
    "a\u00a0b",  # NBSP: a space
    "\ufb01ne",  # ligature: NFKC
    "pass\u00adword",  # soft hyphen: mapped to nothing
    "\u00ad\u00ad",  # nothing left after mapping
    "\u0627\u0628",  # right-to-left, well formed
    "\u0627\u0031",  # bad bidi: used unprepared
    "x\U000e0001y",  # prohibited (tag): used unprepared
    "caf\u00e9 \U0001f600",
]


@pytest.fixture(scope="module")
def server() -> Iterator[Postgres]:
    pg = Postgres(lab_dir("senex-scram-") / "pg").start()
    try:
        yield pg
    finally:
        pg.stop()


def libpq_secret(conn: psycopg.Connection[object], password: str) -> str:
    raw = conn.pgconn.encrypt_password(password.encode(), b"u", b"scram-sha-256")
    return raw.decode()


@pytest.mark.parametrize("password", TRICKY)
def test_libpq_secret_verifies_and_ours_logs_in(server: Postgres, password: str) -> None:
    """libpq's secret verifies with our code; our secret is one libpq's login passes."""
    role = f"scram_{TRICKY.index(password)}"
    with server.connect() as conn:
        assert verify(libpq_secret(conn, password), password)
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(scram_secret(password))
            )
        )
    with psycopg.connect(server.dsn(user=role, password=password)) as login:
        assert login.execute("SELECT current_user").fetchone() == (role,)


@settings(max_examples=150, deadline=None)
@given(password=st.text(min_size=1, max_size=12))
def test_random_passwords_match_libpq(server: Postgres, password: str) -> None:
    """For any text password, libpq's secret verifies with ours (same SASLprep and keys)."""
    if "\x00" in password:
        return  # libpq takes a C string
    with server.connect() as conn:
        assert verify(libpq_secret(conn, password), password)
