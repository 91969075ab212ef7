"""Secrets and DSNs in the data-tier commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from senex_scale.errors import InputError
from senex_scale.ops.common import parse_dsn, read_secret, redact_dsn, with_params


def test_read_secret_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPS_TEST_SECRET", "s3cret")
    assert read_secret("OPS_TEST_SECRET", None, "pw") == "s3cret"
    path = tmp_path / "pw"
    path.write_text("from-file\nignored\n")
    path.chmod(0o600)
    assert read_secret("OPS_TEST_SECRET", path, "pw") == "from-file"


def test_read_secret_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A world-readable file, an empty file, an unset variable: InputError naming the option."""
    monkeypatch.delenv("OPS_TEST_UNSET", raising=False)
    with pytest.raises(InputError, match="OPS_TEST_UNSET is not set"):
        read_secret("OPS_TEST_UNSET", None, "replication password")
    loose = tmp_path / "loose"
    loose.write_text("x\n")
    loose.chmod(0o644)
    with pytest.raises(InputError, match="readable by other users"):
        read_secret(None, loose, "pw")
    empty = tmp_path / "empty"
    empty.write_text("")
    empty.chmod(0o600)
    with pytest.raises(InputError, match="is empty"):
        read_secret(None, empty, "pw")


def test_dsn_helpers_mask_passwords() -> None:
    assert "hunter2" not in redact_dsn("postgresql://u:hunter2@h:5432/db")
    assert "hunter2" not in redact_dsn("host=h password=hunter2")
    assert parse_dsn(with_params("host=h port=1 password=x", port=2, password=None)) == {
        "host": "h",
        "port": "2",
    }
    with pytest.raises(InputError, match="--primary"):
        parse_dsn("host='unterminated", "--primary")
