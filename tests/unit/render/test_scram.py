"""SCRAM-SHA-256 secrets: the RFC 7677 exchange checks out with the computed keys."""

from __future__ import annotations

import base64
import hashlib
import hmac

from senex_scale.render.scram import scram_secret, secret_for, verify

# RFC 7677, section 3: user "user", password "pencil".
SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
CLIENT_FIRST_BARE = "n=user,r=rOprNGfwEbeRWgbNEkqO"
SERVER_FIRST = (
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
CLIENT_FINAL_BARE = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
SERVER_SIGNATURE = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_rfc7677_exchange_verifies_against_the_secret() -> None:
    """ServerKey signs the RFC's exchange exactly as the RFC's server does."""
    secret = scram_secret("pencil", salt=SALT)
    head, keys = secret.rsplit("$", 1)
    assert head == "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ=="
    stored, server = (base64.b64decode(k) for k in keys.split(":"))
    auth = f"{CLIENT_FIRST_BARE},{SERVER_FIRST},{CLIENT_FINAL_BARE}".encode()
    signature = hmac.new(server, auth, hashlib.sha256).digest()
    assert base64.b64encode(signature).decode() == SERVER_SIGNATURE
    assert len(stored) == 32


def test_verify_and_reuse() -> None:
    """A secret verifies its own password only; secret_for keeps a matching one."""
    secret = scram_secret("correct horse")
    assert verify(secret, "correct horse")
    assert not verify(secret, "wrong horse")
    assert not verify("md5abc", "correct horse")
    assert secret_for("correct horse", secret) == secret
    fresh = secret_for("new password", secret)
    assert fresh != secret
    assert verify(fresh, "new password")


def test_random_salt_differs() -> None:
    """Two secrets of one password differ (a salt per render, unless kept)."""
    assert scram_secret("same-password") != scram_secret("same-password")


def test_saslprep_maps_spaces_before_dropping_b1_as_postgresql_does() -> None:
    """U+200B is a space (C.1.2 before B.1); ASCII is untouched; a prohibited, badly
    bidirectional or emptied password is used unprepared (pg_saslprep)."""
    from senex_scale.render.scram import saslprep

    assert saslprep("pass\u200bword") == "pass word"
    assert saslprep("a\u00a0b\u00adc") == "a bc"
    assert saslprep("ascii\x07") == "ascii\x07"
    assert saslprep("\u0627\u0031") == "\u0627\u0031"
    assert saslprep("\u00ad") == "\u00ad"
    assert saslprep("\ufb01") == "fi"
