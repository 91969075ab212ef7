"""What ``replica add`` writes as root, against symlinks the ``postgres`` account can plant.

As root, ``replica add`` edits the primary's pg_hba.conf (in a directory postgres owns),
creates the replica's data directory and hands it to postgres, and rewrites the replica
registry. Each test plants, as the postgres user, a symbolic link where a writer used to
follow one, points it at a root-only file or directory (the victim), runs the real writer on
the real file system and asserts the victim is untouched. Root only: the attack is a user
planting links for root to follow.
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from senex_scale.contrib.django.registry import ReplicaEntry, read_registry, write_registry
from senex_scale.errors import PermanentError, SenexError
from senex_scale.lab import Postgres, lab_dir
from senex_scale.ops import replica
from senex_scale.ops.replica import AddRequest, Host

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the attack is on root: run as root"),
]

SECRET = b"root's secret\n"


def postgres_ids() -> tuple[int, int]:
    user = pwd.getpwnam("postgres")
    return user.pw_uid, user.pw_gid


def plant_link(link: Path, target: Path) -> None:
    """A symbolic link made and owned by the postgres user (``lchown``: as postgres made it)."""
    os.symlink(target, link)
    os.lchown(link, *postgres_ids())


def give_to_postgres(path: Path) -> None:
    os.chown(path, *postgres_ids())


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A root-only file (0600) in a root-only directory (0700)."""
    private = tmp_path / "root-only"
    private.mkdir(mode=0o700)
    secret = private / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    return secret


def untouched(path: Path, mode: int) -> bool:
    info = path.lstat()
    return (
        info.st_uid == 0
        and info.st_gid == 0
        and stat.S_IMODE(info.st_mode) == mode
        and (not stat.S_ISREG(info.st_mode) or path.read_bytes() == SECRET)
    )


# --------------------------------------------------------------------------- pg_hba.conf


@pytest.fixture(scope="module")
def primary() -> Iterator[Postgres]:
    root = lab_dir("senex-hba-")
    with Postgres(root / "primary") as server:
        yield server


def hba_file(primary: Postgres) -> Path:
    with primary.connect() as conn:
        return Path(str(conn.execute("SHOW hba_file").fetchone()[0]))  # type: ignore[index]


def add_rule(primary: Postgres, role: str) -> str:
    with primary.connect() as conn:
        conn.autocommit = True
        return replica.prepare_hba(conn, role, "127.0.0.9", True, f"r_{role}")


def test_pg_hba_edit_ignores_a_planted_temporary_link(primary: Postgres, victim: Path) -> None:
    """A link at the old fixed temporary name is neither written through, chmod-ed nor chown-ed:
    the rule lands in pg_hba.conf and the root-only file keeps its bytes, 0600 and root."""
    hba = hba_file(primary)
    plant_link(hba.with_name(f".{hba.name}.senex.tmp"), victim)
    try:
        done = add_rule(primary, "planted_tmp")
    finally:
        hba.with_name(f".{hba.name}.senex.tmp").unlink(missing_ok=True)
    assert "added to" in done
    assert "planted_tmp" in hba.read_text()
    assert untouched(victim, 0o600)
    info = hba.lstat()
    assert stat.S_ISREG(info.st_mode)
    assert (info.st_uid, info.st_gid) == postgres_ids()  # the owner it had


def test_pg_hba_that_is_a_link_is_refused(primary: Postgres, victim: Path) -> None:
    """pg_hba.conf swapped for a link to a root-only file: refused, naming the file and the
    line to add by hand; the link and its target stay as they were."""
    hba = hba_file(primary)
    keep = hba.with_name("pg_hba.conf.keep")
    hba.rename(keep)
    plant_link(hba, victim)
    line = "host    replication  via_link  127.0.0.9/32  scram-sha-256"
    try:
        with pytest.raises(PermanentError) as failure:
            replica.replace_hba_file(hba, line, "r_via_link")
    finally:
        hba.unlink()
        keep.rename(hba)
    assert str(hba) in str(failure.value)
    assert "symbolic link" in str(failure.value)
    assert line in str(failure.value)
    assert untouched(victim, 0o600)


def test_pg_hba_with_a_second_hard_link_is_refused(primary: Postgres, tmp_path: Path) -> None:
    """A pg_hba.conf with another name elsewhere (a hard link) is refused: the edit would
    reach that other name's readers too."""
    hba = hba_file(primary)
    other = hba.with_name("other-name")
    os.link(hba, other)
    try:
        with pytest.raises(PermanentError, match="hard link"):
            add_rule(primary, "hard_linked")
    finally:
        other.unlink()
    assert "hard_linked" not in hba.read_text()


def test_pg_hba_behind_a_planted_directory_link_is_refused(
    primary: Postgres, tmp_path: Path
) -> None:
    """A directory on the way to pg_hba.conf swapped for a link postgres owns: refused;
    a pg_hba.conf in the root-only directory it points to is not touched."""
    hba = hba_file(primary)
    conf = hba.parent
    moved = conf.with_name(conf.name + ".moved")
    private = tmp_path / "root-conf"
    private.mkdir(mode=0o700)
    (private / hba.name).write_bytes(SECRET)
    (private / hba.name).chmod(0o600)
    conf.rename(moved)
    plant_link(conf, private)
    try:
        with pytest.raises(PermanentError, match="symbolic link owned by"):
            replica.replace_hba_file(hba, "host replication x 127.0.0.9/32 scram-sha-256", "t")
    finally:
        conf.unlink()
        moved.rename(conf)
    assert untouched(private / hba.name, 0o600)
    assert untouched(private, 0o700)


# --------------------------------------------------------------------------- data directory


def request_for(datadir: Path) -> AddRequest:
    return AddRequest(
        primary="host=127.0.0.1",
        datadir=str(datadir),
        port=1,
        name="replica_1",
        registry=None,
        role="replicator",
        host=Host.make(None, None),
        listen="127.0.0.1",
        advertise="127.0.0.1",
        wal_keep_mb=64,
        pg_bin=None,
    )


def test_datadir_swapped_for_a_link_is_not_handed_over(tmp_path: Path) -> None:
    """The data directory turned into a link to a root-only directory after the emptiness
    check: refused; the root directory keeps its owner and mode 0700."""
    private = tmp_path / "root-dir"
    private.mkdir(mode=0o700)
    parent = tmp_path / "pgdata"
    parent.mkdir()
    give_to_postgres(parent)
    datadir = parent / "replica"
    plant_link(datadir, private)
    with pytest.raises(SenexError, match="symbolic link"):
        replica._make_datadir(request_for(datadir))
    assert untouched(private, 0o700)


def test_datadir_that_is_not_empty_any_more_is_refused(tmp_path: Path) -> None:
    """A file put into the empty data directory after the check: refused, not handed over."""
    datadir = tmp_path / "replica"
    datadir.mkdir(mode=0o700)
    (datadir / "planted").write_text("x")
    with pytest.raises(SenexError, match="not empty"):
        replica._make_datadir(request_for(datadir))
    assert datadir.stat().st_uid == 0


def test_datadir_is_made_for_postgres(tmp_path: Path) -> None:
    """Missing parents are made (root's), the data directory is postgres', mode 0700."""
    datadir = tmp_path / "a" / "b" / "replica"
    replica._make_datadir(request_for(datadir))
    info = datadir.lstat()
    assert stat.S_ISDIR(info.st_mode)
    assert (info.st_uid, info.st_gid) == postgres_ids()
    assert stat.S_IMODE(info.st_mode) == 0o700
    assert (tmp_path / "a").stat().st_uid == 0


# --------------------------------------------------------------------------- registry


def test_registry_write_ignores_planted_temporary_links(tmp_path: Path, victim: Path) -> None:
    """Links at the names of old temporary files (``.NAME.PID.tmp``) are not written through."""
    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "replicas.json"
    for pid in (os.getpid(), *range(os.getpid() - 50, os.getpid() + 50)):
        link = folder / f".{path.name}.{pid}.tmp"
        if not link.is_symlink():
            plant_link(link, victim)
    write_registry(path, [ReplicaEntry("replica_1", "10.0.0.12", 5432)])
    assert untouched(victim, 0o600)
    assert [e.alias for e in read_registry(path)] == ["replica_1"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_registry_that_is_a_link_is_not_replaced_through(tmp_path: Path, victim: Path) -> None:
    """A registry path that is a link is refused (named), the target untouched."""
    path = tmp_path / "replicas.json"
    plant_link(path, victim)
    with pytest.raises(SenexError, match=r"replicas\.json.*symbolic link"):
        write_registry(path, [ReplicaEntry("replica_1", "10.0.0.12", 5432)])
    assert untouched(victim, 0o600)


def test_links_root_owns_are_followed(tmp_path: Path) -> None:
    """A link root made (``/var/run -> /run`` style) is a path, not an attack: followed."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    write_registry(tmp_path / "alias" / "replicas.json", [ReplicaEntry("r_1", "10.0.0.1")])
    assert [e.alias for e in read_registry(real / "replicas.json")] == ["r_1"]


def test_a_registry_postgres_owns_is_not_trusted(tmp_path: Path) -> None:
    """A registry file another account owns could say anything: read_registry refuses it."""
    path = tmp_path / "replicas.json"
    write_registry(path, [ReplicaEntry("r_1", "10.0.0.1")])
    give_to_postgres(path)
    with pytest.raises(SenexError, match=r"owned by uid \d+, not root or this user"):
        read_registry(path)


def test_purge_does_not_follow_a_planted_parent_link(tmp_path: Path) -> None:
    """replica remove --purge as root: a parent directory swapped for a postgres-owned link
    to a root directory holding a directory of the same name: refused, nothing deleted."""
    private = tmp_path / "root-dir"
    (private / "replica").mkdir(parents=True)
    (private / "replica" / "keep").write_bytes(SECRET)
    parent = tmp_path / "pgdata"
    plant_link(parent, private)
    with pytest.raises(PermanentError, match="symbolic link owned by"):
        replica.purge_local(str(parent / "replica"))
    assert (private / "replica" / "keep").read_bytes() == SECRET
