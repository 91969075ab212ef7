"""SCRAM-SHA-256 secrets (RFC 5802, RFC 7677) as PostgreSQL and PgBouncer store them.

The seed's PgBouncer ``userlist.txt`` holds ``md5`` hashes, which PostgreSQL deprecates. A
SCRAM secret lets PgBouncer check a client's password without knowing it, and, when the very
same secret is the role's password on the server, log in to PostgreSQL with the client's proof
(PgBouncer's SCRAM pass-through). So the renderer writes one secret per user to both
``userlist.txt`` and ``roles.sql`` (``ALTER ROLE ... PASSWORD 'SCRAM-SHA-256$...'``), and keeps
the salt of a secret already rendered for the same password, so a re-render changes nothing.

Format: ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` (base64), with
SaltedPassword = PBKDF2-HMAC-SHA256(SASLprep(password), salt, iterations),
StoredKey = SHA-256(HMAC(SaltedPassword, "Client Key")),
ServerKey = HMAC(SaltedPassword, "Server Key").

Why not scramp (pg8000's SCRAM library): its SASLprep differs from PostgreSQL's, so its
secret is not the one libpq and the server make for some passwords. It drops the B.1
characters before mapping C.1.2 spaces (U+200B, in both tables: PostgreSQL maps it to a
space), and it raises on a prohibited or badly bidirectional password where PostgreSQL uses
the password unprepared. What is left once SASLprep is right is PBKDF2 and two HMACs from
the standard library. ``tests/integration/render/test_scram_libpq.py`` checks this module
against libpq's own ``PQencryptPasswordConn`` and a real server's SCRAM login.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import stringprep
import unicodedata

ITERATIONS = 4096
"""PostgreSQL's default ``scram_iterations``."""
SALT_BYTES = 16
"""PostgreSQL's salt length."""

_SECRET = re.compile(
    r"^SCRAM-SHA-256\$(?P<iter>\d+):(?P<salt>[A-Za-z0-9+/=]+)"
    r"\$(?P<stored>[A-Za-z0-9+/=]+):(?P<server>[A-Za-z0-9+/=]+)$"
)


_PROHIBITED = (
    stringprep.in_table_c12,
    stringprep.in_table_c21_c22,
    stringprep.in_table_c3,
    stringprep.in_table_c4,
    stringprep.in_table_c5,
    stringprep.in_table_c6,
    stringprep.in_table_c7,
    stringprep.in_table_c8,
    stringprep.in_table_c9,
    stringprep.in_table_a1,
)


def saslprep(password: str) -> str:
    """SASLprep (RFC 4013) exactly as PostgreSQL's ``pg_saslprep`` (src/common/saslprep.c)
    applies it, for libpq and the server alike:

    - an all-ASCII password is used as is (no check at all);
    - each character of the non-ASCII space table (C.1.2) becomes a space, *then* each of
      the "mapped to nothing" table (B.1) is dropped: U+200B is in both, and PostgreSQL
      makes it a space (RFC order and scramp's drop it: a different secret);
    - nothing left: the password is used unprepared;
    - NFKC; then any prohibited character (C.1.2, C.2-C.9, unassigned A.1) or a bad
      bidirectional string (RFC 3454 section 6) means: the password is used unprepared.
    """
    if password.isascii():
        return password
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch
        for ch in password
        if stringprep.in_table_c12(ch) or not stringprep.in_table_b1(ch)
    )
    if not mapped:  # nothing left: PostgreSQL refuses an empty result, uses the input
        return password
    normal = unicodedata.normalize("NFKC", mapped)
    if any(check(ch) for ch in normal for check in _PROHIBITED):
        return password
    rand_al = [stringprep.in_table_d1(ch) for ch in normal]
    if any(rand_al):
        if any(stringprep.in_table_d2(ch) for ch in normal):
            return password
        if not (rand_al[0] and rand_al[-1]):
            return password
    return normal


def _keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return stored_key, server_key


def scram_secret(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The SCRAM-SHA-256 secret of ``password`` (a random salt unless one is given)."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    stored, server = _keys(password, salt, iterations)

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored)}:{b64(server)}"


def verify(secret: str, password: str) -> bool:
    """True when ``secret`` is a SCRAM-SHA-256 secret of ``password``."""
    match = _SECRET.match(secret)
    if not match:
        return False
    try:
        salt = base64.b64decode(match.group("salt"), validate=True)
        stored = base64.b64decode(match.group("stored"), validate=True)
        server = base64.b64decode(match.group("server"), validate=True)
    except ValueError:
        return False
    want_stored, want_server = _keys(password, salt, int(match.group("iter")))
    return hmac.compare_digest(stored, want_stored) and hmac.compare_digest(server, want_server)


def secret_for(password: str, previous: str | None) -> str:
    """``previous`` if it is a secret of ``password`` (stable re-renders), else a new one."""
    if previous is not None and verify(previous, password):
        return previous
    return scram_secret(password)
