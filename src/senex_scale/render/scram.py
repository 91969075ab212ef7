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


def saslprep(password: str) -> str:
    """SASLprep (RFC 4013) as PostgreSQL applies it: a prohibited result means "use as is"."""
    if password.isascii() and password.isprintable():
        return password
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch
        for ch in password
        if not stringprep.in_table_b1(ch)
    )
    normal = unicodedata.normalize("NFKC", mapped)
    prohibited = (
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
    if any(check(ch) for ch in normal for check in prohibited):
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
