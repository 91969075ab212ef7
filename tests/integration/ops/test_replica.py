"""``senex-scale replica add|status|remove`` against a real primary: the replica it makes
streams, reads what the primary writes, is registered for the Django router, and goes away."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import psycopg.sql
import pytest

from senex_scale.contrib.django.registry import read_registry
from senex_scale.lab import Postgres, free_port

from .conftest import cli

pytestmark = pytest.mark.integration

PASSWORD = "repl-Secret-93ab1c"


def test_replica_add_status_remove(primary: Postgres, workdir: Path) -> None:
    """add makes a streaming replica that serves the primary's rows; status shows its lag;
    remove unregisters, stops and purges it."""
    registry = workdir / "replicas.json"
    datadir = workdir / "replica-a" / "data"
    port = free_port()
    env = {"SENEX_REPLICATION_PASSWORD": PASSWORD}
    with primary.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY, note text)")
    added = cli(
        "replica",
        "add",
        "--primary",
        primary.dsn(),
        "--datadir",
        datadir,
        "--port",
        port,
        "--name",
        "replica_a",
        "--registry",
        registry,
        env=env,
    )
    print(added.stdout, added.stderr)
    assert added.returncode == 0, added.stderr
    assert PASSWORD not in added.stdout + added.stderr
    assert "base backup" in added.stderr  # the progress bar
    # the default --wal-keep-size 1GB is set with ALTER SYSTEM, but the lab's command line wins
    assert "warning: wal_keep_size is still 64MB: set on the command line" in added.stdout
    assert "added to" in added.stdout
    assert "host    replication  replicator  127.0.0.1/32" in added.stdout
    try:
        # the registry lists it, in the router's format, without secrets
        entries = read_registry(registry)
        assert [(e.alias, e.host, e.port) for e in entries] == [("replica_a", "127.0.0.1", port)]
        assert PASSWORD not in registry.read_text()
        # the role exists with a SCRAM verifier, and the password is nowhere in the datadir's
        # world-readable files
        auto = datadir / "postgresql.auto.conf"
        assert stat.S_IMODE(auto.stat().st_mode) & 0o077 == 0
        # a row written on the primary is readable on the replica
        with primary.connect() as conn:
            conn.execute("INSERT INTO t VALUES (1, 'from the primary')")
        replica_dsn = primary.dsn().replace(f"port={primary.port}", f"port={port}")
        row = None
        for _ in range(100):
            with psycopg.connect(replica_dsn, autocommit=True) as conn:
                assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
                row = conn.execute("SELECT note FROM t WHERE id = 1").fetchone()
            if row is not None:
                break
            time.sleep(0.1)
        assert row == ("from the primary",)
        # a Django process with the router and this registry reads from the new replica
        probe = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("router_probe.py")),
             str(primary.port), str(registry)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert probe.returncode == 0, probe.stderr[-2000:]
        routed = json.loads(probe.stdout)
        print("router:", routed)
        assert routed == {
            "alias": "replica_a", "in_recovery": True, "port": port, "note": "from the primary",
        }  # fmt: skip
        # status: streaming, with lag numbers, exit 0
        status = cli(
            "replica", "status", "--primary", primary.dsn(), "--registry", registry, "--json"
        )
        print(status.stdout, status.stderr)
        assert status.returncode == 0, status.stderr
        doc = json.loads(status.stdout)
        (state,) = doc["replicas"]
        assert state["name"] == "replica_a"
        assert state["state"] == "streaming"
        assert state["in_recovery"] is True
        assert state["lag_bytes"] is not None
        assert state["lag_bytes"] >= 0
        assert state["lag_seconds"] is not None
        assert state["lag_seconds"] >= 0
        # replay paused on the replica: the primary's new WAL shows as lag in bytes
        with psycopg.connect(replica_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_pause()")
        try:
            with primary.connect() as conn:
                conn.execute("INSERT INTO t SELECT g, 'lag' FROM generate_series(2, 2000) g")
            lagging = json.loads(
                cli("replica", "status", "--primary", primary.dsn(), "--registry", registry,
                    "--json").stdout
            )["replicas"][0]  # fmt: skip
            print("paused:", lagging)
            assert lagging["lag_bytes"] > 0
        finally:
            with psycopg.connect(replica_dsn, autocommit=True) as conn:
                conn.execute("SELECT pg_wal_replay_resume()")
        # the WAL receiver cut (primary_conninfo to a dead port): the replica has replayed
        # all it received, yet it is behind, and status must not call it 0 s behind
        with psycopg.connect(replica_dsn, autocommit=True) as conn:
            (conninfo,) = conn.execute("SHOW primary_conninfo").fetchone()  # type: ignore[misc]
            conn.execute("ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=1'")
            conn.execute("SELECT pg_reload_conf()")
        try:
            time.sleep(1.0)
            with primary.connect() as conn:
                conn.execute("INSERT INTO t SELECT g, 'cut' FROM generate_series(3000, 4000) g")
            cut = json.loads(
                cli("replica", "status", "--primary", primary.dsn(), "--registry", registry,
                    "--json").stdout
            )["replicas"][0]  # fmt: skip
            print("receiver cut:", cut)
            assert cut["lag_bytes"] > 0
            assert cut["lag_seconds"] is None or cut["lag_seconds"] > 0, cut
        finally:
            with psycopg.connect(replica_dsn, autocommit=True) as conn:
                restore = psycopg.sql.SQL("ALTER SYSTEM SET primary_conninfo = {}")
                conn.execute(restore.format(psycopg.sql.Literal(conninfo)))
                conn.execute("SELECT pg_reload_conf()")
        table = cli("replica", "status", "--primary", primary.dsn(), "--registry", registry)
        assert "replica_a" in table.stdout
        assert "streaming" in table.stdout
        # running add again for the same replica changes nothing (a runbook may fire twice)
        again = cli(
            "replica",
            "add",
            "--primary",
            primary.dsn(),
            "--datadir",
            datadir,
            "--port",
            port,
            "--name",
            "replica_a",
            "--registry",
            registry,
            env=env,
        )
        assert again.returncode == 0, again.stderr
        assert "nothing to do" in again.stdout
    finally:
        removed = cli(
            "replica",
            "remove",
            "--primary",
            primary.dsn(),
            "--name",
            "replica_a",
            "--registry",
            registry,
            "--purge",
        )
        print(removed.stdout, removed.stderr)
    assert removed.returncode == 0, removed.stderr
    assert read_registry(registry) == []
    assert not datadir.exists()


def test_replica_add_refuses_bad_input(primary: Postgres, workdir: Path) -> None:
    """A non-empty data directory, a missing password or a bad name: exit 2, nothing made."""
    registry = workdir / "bad.json"
    busy = workdir / "busy"
    busy.mkdir()
    (busy / "file").write_text("x")
    base = ["replica", "add", "--primary", primary.dsn(), "--port", str(free_port())]
    env = {"SENEX_REPLICATION_PASSWORD": PASSWORD}
    cases = {
        "--datadir": cli(*base, "--datadir", busy, "--registry", registry, env=env),
        "replication password": cli(
            *base,
            "--datadir",
            workdir / "new",
            "--registry",
            registry,
            "--password-env",
            "NOPE_UNSET",
        ),
        "--name": cli(*base, "--datadir", workdir / "new", "--name", "bad-name", env=env),
        "primary's alias": cli(*base, "--datadir", workdir / "new", "--name", "default", env=env),
    }
    for field, result in cases.items():
        assert result.returncode == 2, (field, result.stderr)
        assert result.stderr.startswith("Error: "), result.stderr
        assert field in result.stderr, result.stderr
    assert not (workdir / "new").exists()
    assert not registry.exists()
    with primary.connect() as conn:
        assert conn.execute("SELECT count(*) FROM pg_stat_replication").fetchone() == (0,)


def test_replica_add_says_when_the_primary_needs_a_restart(workdir: Path) -> None:
    """max_wal_senders 1 leaves no room: ALTER SYSTEM, then exit 1 saying what to restart;
    no data directory, no registry entry."""
    registry = workdir / "restart.json"
    datadir = workdir / "restart-replica"
    with Postgres(workdir / "small", settings={"max_wal_senders": "1"}) as small:
        result = cli(
            "replica", "add", "--primary", small.dsn(), "--datadir", datadir,
            "--port", str(free_port()), "--registry", registry, "--wal-keep-size", "64MB",
            env={"SENEX_REPLICATION_PASSWORD": PASSWORD},
        )  # fmt: skip
        print(result.stdout, result.stderr)
        assert result.returncode == 1
        assert "needs a restart" in result.stderr
        assert "max_wal_senders 1 -> 10" in result.stderr
        auto = (small.datadir / "postgresql.auto.conf").read_text()
        assert "max_wal_senders = '10'" in auto
    assert not datadir.exists()
    assert not registry.exists()
