"""The replica registry file: format, validation with paths, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from senex_scale.contrib.django.registry import (
    ReplicaEntry,
    database_settings,
    parse_registry,
    read_registry,
    write_registry,
)
from senex_scale.errors import InputError


def test_a_valid_registry_parses_to_entries() -> None:
    """Every field is read; missing optional ones are None."""
    data = {
        "version": 1,
        "replicas": [
            {"alias": "r1", "host": "10.0.0.1", "port": 6432},
            {"alias": "r2", "host": "h", "dbname": "db", "user": "u", "max_lag_seconds": 2},
        ],
    }
    assert parse_registry(data, "f.json") == [
        ReplicaEntry("r1", "10.0.0.1", 6432),
        ReplicaEntry("r2", "h", None, "db", "u", None, 2.0),
    ]


def test_every_problem_is_reported_with_its_path() -> None:
    """All problems at once, each named like replicas[1].port."""
    data = {
        "replicas": [
            {"alias": "ok", "host": "h"},
            {"alias": "bad name", "host": "", "port": 70000, "pasword": "x"},
            {"alias": "ok", "host": "h"},
        ],
        "extra": 1,
    }
    with pytest.raises(InputError) as err:
        parse_registry(data, "replicas.json")
    text = str(err.value)
    assert text.startswith("replicas.json: 6 problem(s)")
    for part in (
        'unknown key "extra"',
        'replicas[1]: unknown key "pasword" (did you mean "password_env"?)',
        "replicas[1].alias: 'bad name' is not a name",
        "replicas[1].host: required",
        "replicas[1].port: 70000 is not in 1..65535",
        'replicas[2].alias: "ok" is listed twice',
    ):
        assert part in text


def test_a_boolean_is_not_a_port() -> None:
    """JSON true is not silently port 1."""
    with pytest.raises(InputError, match=r"replicas\[0\].port: True is not an integer"):
        parse_registry({"replicas": [{"alias": "a", "host": "h", "port": True}]}, "f")


def test_a_missing_file_means_no_replicas(tmp_path: Path) -> None:
    """Before the first `replica add` there is no file: an empty list, not an error."""
    assert read_registry(tmp_path / "absent.json") == []


def test_a_file_that_is_not_json_names_the_line(tmp_path: Path) -> None:
    """A broken file is reported with its path and line."""
    path = tmp_path / "r.json"
    path.write_text('{\n  "replicas": [,]\n}')
    with pytest.raises(InputError, match=r"r.json: line 2: not JSON"):
        read_registry(path)


def test_written_registries_read_back(tmp_path: Path) -> None:
    """write_registry + read_registry round-trip; no temporary file is left."""
    path = tmp_path / "r.json"
    entries = [ReplicaEntry("r1", "h1", 6432), ReplicaEntry("r2", "h2", password_env="PW_2")]
    write_registry(path, entries)
    assert read_registry(path) == entries
    assert json.loads(path.read_text())["version"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_a_replica_inherits_the_primarys_login() -> None:
    """Host and port from the entry, the rest (password too) from the primary; TEST mirrors."""
    primary = {"NAME": "app", "USER": "app", "PASSWORD": "pw", "HOST": "p", "PORT": 6432,
               "OPTIONS": {"connect_timeout": 3}}  # fmt: skip
    conf = database_settings(ReplicaEntry("r1", "10.0.0.9", 6433), primary, "default")
    assert conf["HOST"] == "10.0.0.9"
    assert conf["PORT"] == 6433
    assert conf["PASSWORD"] == "pw"
    assert conf["TEST"] == {"MIRROR": "default"}
    conf["OPTIONS"]["x"] = 1
    assert "x" not in primary["OPTIONS"]  # a copy, not the primary's dict


def test_a_password_env_that_is_not_set_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variable is named; no password appears anywhere."""
    monkeypatch.delenv("NOPE_PW", raising=False)
    with pytest.raises(InputError, match="replica r1: environment variable NOPE_PW is not set"):
        database_settings(ReplicaEntry("r1", "h", password_env="NOPE_PW"), {"PASSWORD": "pw"})
    monkeypatch.setenv("NOPE_PW", "other")
    conf = database_settings(ReplicaEntry("r1", "h", password_env="NOPE_PW"), {"PASSWORD": "pw"})
    assert conf["PASSWORD"] == "other"


def test_default_is_never_a_replica_alias() -> None:
    """An entry named "default" would rewrite the primary's connection: refused by name."""
    with pytest.raises(InputError, match=r"replicas\[0\].alias: \"default\" is the primary's"):
        parse_registry({"replicas": [{"alias": "default", "host": "evil"}]}, "f.json")


def test_without_inherit_password_no_password_is_handed_on() -> None:
    """inherit_password=False: neither PASSWORD nor OPTIONS.password reach the replica's entry."""
    primary = {"USER": "app", "PASSWORD": "pw", "OPTIONS": {"password": "pw2", "sslmode": "x"}}
    conf = database_settings(ReplicaEntry("r1", "h"), primary, inherit_password=False)
    assert conf["PASSWORD"] == ""
    assert conf["OPTIONS"] == {"sslmode": "x"}
    assert primary["OPTIONS"]["password"] == "pw2"  # the primary's own entry is untouched


def test_a_registry_writable_by_others_is_refused(tmp_path: Path) -> None:
    """A registry file others may write (0666) is not trusted: refused, naming file and mode."""
    path = tmp_path / "r.json"
    write_registry(path, [ReplicaEntry("r1", "h1")])
    path.chmod(0o666)
    with pytest.raises(InputError, match=r"r.json: .*writable by group or others \(mode 0666\)"):
        read_registry(path)


def test_a_registry_in_a_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    """Whoever may write the directory may replace the file: refused as well."""
    folder = tmp_path / "shared"
    folder.mkdir()
    path = folder / "r.json"
    write_registry(path, [ReplicaEntry("r1", "h1")])
    folder.chmod(0o777)
    with pytest.raises(InputError, match=r"directory .*shared is writable by group or others"):
        read_registry(path)
