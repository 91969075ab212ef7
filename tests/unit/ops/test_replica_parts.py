"""The pure parts of ``replica add``: progress parsing, settings, pg_hba, passfiles, argv."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from senex_scale.errors import InputError
from senex_scale.ops.replica import (
    HbaRule,
    Host,
    auto_conf_lines,
    hba_allows,
    hba_line,
    insert_hba,
    parse_progress,
    parse_size_mb,
    pgpass_line,
    split_lines,
    wal_changes,
)


def test_parse_progress() -> None:
    """pg_basebackup's progress line, with or without the tablespace path."""
    assert parse_progress("  12345/67890 kB (18%), 0/1 tablespace (/var/lib/x)") == (12345, 67890)
    assert parse_progress("24130/24130 kB (100%), 1/1 tablespace") == (24130, 24130)
    assert parse_progress("pg_basebackup: write-ahead log end point: 0/2000100") is None


def test_split_lines_on_cr_and_lf() -> None:
    """A terminal redraws progress with CR; the unfinished rest is kept."""
    lines, rest = split_lines(b"1/10 kB (10%)\r2/10 kB (20%)\rdone\npartial")
    assert lines == ["1/10 kB (10%)", "2/10 kB (20%)", "done"]
    assert rest == b"partial"


def test_pgpass_line_escapes() -> None:
    assert pgpass_line("rep", r"a:b\c") == "*:*:*:rep:a\\:b\\\\c\n"


@pytest.mark.parametrize(("text", "mb"), [("1GB", 1024), ("64MB", 64), ("512", 512), ("2048kB", 2)])
def test_parse_size_mb(text: str, mb: int) -> None:
    assert parse_size_mb(text) == mb


def test_parse_size_mb_rejects() -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size_mb("lots")


def test_wal_changes() -> None:
    """minimal wal_level and a full set of senders need a restart; wal_keep_size a reload."""
    fine = {"wal_level": "replica", "max_wal_senders": "10", "wal_keep_size": "1024"}
    assert wal_changes(fine, 2, 1024) == []
    changes = wal_changes(
        {"wal_level": "minimal", "max_wal_senders": "2", "wal_keep_size": "0"}, 1, 1024
    )
    assert [(c.name, c.wanted, c.restart) for c in changes] == [
        ("wal_level", "replica", True),
        ("max_wal_senders", "10", True),
        ("wal_keep_size", "1024MB", False),
    ]
    assert (
        wal_changes(
            {"wal_level": "logical", "max_wal_senders": "3", "wal_keep_size": "2048"}, 1, 1024
        )
        == []
    )


def _rule(line: int, kind: str, dbs: tuple[str, ...], users: tuple[str, ...], addr: str | None,
          mask: str | None, method: str) -> HbaRule:  # fmt: skip
    return HbaRule(line, kind, dbs, users, addr, mask, method)


def test_hba_allows_first_match_wins() -> None:
    """'all' does not cover replication; a reject first shadows a later allow; netmasks."""
    rules = [
        _rule(1, "host", ("all",), ("all",), "0.0.0.0", "0.0.0.0", "scram-sha-256"),
        _rule(2, "host", ("replication",), ("rep",), "10.0.0.0", "255.255.255.0", "reject"),
        _rule(3, "host", ("replication",), ("all",), "10.0.0.0", "255.0.0.0", "scram-sha-256"),
        _rule(4, "local", ("replication",), ("rep",), None, None, "peer"),
    ]
    assert hba_allows(rules, "rep", "10.0.0.7") is None  # rule 2 rejects
    allowed = hba_allows(rules, "rep", "10.1.0.7")
    assert allowed is not None
    assert allowed.line == 3
    assert hba_allows(rules, "rep", "192.168.1.1") is None
    socket = hba_allows(rules, "rep", None)
    assert socket is not None
    assert socket.line == 4


def test_hba_line_and_insert_at_the_top() -> None:
    assert hba_line("rep", "10.0.0.7") == "host    replication  rep  10.0.0.7/32  scram-sha-256"
    assert hba_line("rep", "::1").endswith("::1/128  scram-sha-256")
    assert hba_line("rep", None) == "local   replication  rep  scram-sha-256"
    text = "# comment\n\nlocal all all peer\nhost all all 0.0.0.0/0 reject\n"
    new = insert_hba(text, "LINE", "why")
    assert new.splitlines() == ["# comment", "", "# why", "LINE", "local all all peer",
                                "host all all 0.0.0.0/0 reject"]  # fmt: skip


def test_auto_conf_lines_quote() -> None:
    assert auto_conf_lines({"a": "x'y", "port": "5433"}) == "a = 'x''y'\nport = '5433'\n"


def test_host_argv_ssh_is_one_quoted_argument() -> None:
    """Over ssh the remote command (with sudo -u) is one shlex-quoted argument."""
    host = Host.make("postgres@db2", "postgres")
    argv = host.argv(["pg_ctl", "-D", "/data dir", "start"], {"PGPASSFILE": "/tmp/p"})
    assert argv[:2] == ["ssh", "-o"]
    assert argv[-2] == "db2"
    assert "-l" in argv
    assert argv[-1] == "sudo -n -u postgres -- env PGPASSFILE=/tmp/p pg_ctl -D '/data dir' start"


def test_host_local_runs_as_postgres_when_root() -> None:
    host = Host.make(None, None)
    argv = host.argv(["true"])
    if os.geteuid() == 0:
        assert argv == ["runuser", "-u", "postgres", "--", "true"]
    else:
        assert argv == ["true"]


def test_host_make_rejects_a_bad_host() -> None:
    with pytest.raises(InputError, match="--host"):
        Host.make("user@", None)


def test_local_host_helpers(tmp_path: Path) -> None:
    """write_file creates 0600 files; empty_or_missing tells an empty dir from a busy one."""
    host = Host.make(None, os.environ.get("USER") if os.geteuid() != 0 else "root")
    target = tmp_path / "f"
    host.write_file(str(target), "one\n")
    host.write_file(str(target), "two\n", append=True)
    assert target.read_text() == "one\ntwo\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert host.empty_or_missing(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    assert host.empty_or_missing(str(tmp_path / "empty"))
    assert not host.empty_or_missing(str(tmp_path))
