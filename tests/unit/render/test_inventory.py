"""Inventory loading: the example validates; every problem is reported at once with its dotted
path; secrets are references, never inline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from senex_scale.render.inventory import (
    InventoryError,
    load_inventory,
    resolve_secrets,
    validate_inventory,
)


def problems_of(data: dict[str, Any]) -> list[str]:
    """The problems ``validate_inventory`` reports for ``data`` (fails if it validates)."""
    with pytest.raises(InventoryError) as info:
        validate_inventory(data)
    return info.value.problems


def test_example_validates(example_path: Path) -> None:
    """examples/inventory.toml is a valid inventory with the seed's pools."""
    inv = load_inventory(example_path)
    assert set(inv.pools) == {
        "django",
        "celery-worker",
        "celery-worker-trading",
        "celery-worker-accounts",
        "celery-worker-general",
    }
    assert inv.pools["celery-worker-trading"].concurrency == 8
    assert inv.pools["celery-worker-trading"].max_tasks_per_child == 50
    assert inv.pools["django"].port_of(12) == 8012


def test_every_problem_at_once_with_dotted_paths(example: dict[str, Any]) -> None:
    """Two unrelated mistakes are both reported, each with the path a user finds in the file."""
    example["pools"]["django"]["limits"]["memory"] = "lots"
    example["hosts"]["db02"]["roles"] = ["postgress-replica"]
    problems = problems_of(example)
    assert len(problems) == 2, problems
    assert problems[0].startswith(
        'hosts.db02.roles[0]: unknown role "postgress-replica" (did you mean "postgres-replica"?)'
    )
    assert problems[1] == 'pools.django.limits.memory: "lots" is not a size (e.g. "1536M", "2G")'


def test_unknown_key_gets_did_you_mean(example: dict[str, Any]) -> None:
    """A typo in a key is named with the closest valid key."""
    example["pools"]["django"]["mx"] = 4
    assert problems_of(example) == ['pools.django: unknown key "mx" (did you mean "max"?)']


def test_inline_secret_is_refused_naming_the_field(example: dict[str, Any]) -> None:
    """A password written into the inventory is an error naming its field, not the value."""
    example["redis"]["password"] = "hunter2-in-the-file"
    example["postgres"]["users"]["senex_user"]["password"] = "also-inline-1"
    problems = problems_of(example)
    inline = 'an inline secret is not allowed: use { env = "NAME" } or { file = "/path" }'
    assert f"postgres.users.senex_user.password: {inline}" in problems
    assert f"redis.password: {inline}" in problems
    assert not any("hunter2" in p or "also-inline" in p for p in problems)


def test_secret_reference_needs_exactly_one_source(example: dict[str, Any]) -> None:
    """``{ env, file }`` together is ambiguous."""
    example["redis"]["password"] = {"env": "X", "file": "/run/credentials/x"}
    assert problems_of(example) == [
        'redis.password: give exactly one of env = "NAME" or file = "/path"'
    ]


def test_missing_secrets_are_named_by_path(
    example: dict[str, Any], environ: dict[str, str], tmp_path: Path
) -> None:
    """An unset variable and an unreadable file are both reported, with the inventory path."""
    del environ["SENEX_REDIS_PASSWORD"]
    example["sentinel"]["password"] = {"file": str(tmp_path / "missing")}
    inv = validate_inventory(example)
    with pytest.raises(InventoryError) as info:
        resolve_secrets(inv, environ)
    assert info.value.problems == [
        "redis.password: environment variable SENEX_REDIS_PASSWORD is not set (or empty)",
        f"sentinel.password: cannot read {tmp_path / 'missing'}: No such file or directory",
    ]


def test_secret_from_a_file(
    example: dict[str, Any], environ: dict[str, str], tmp_path: Path
) -> None:
    """A credentials file is read without its trailing newline."""
    secret = tmp_path / "sentinel"
    secret.write_text("from-a-file-123\n")
    example["sentinel"]["password"] = {"file": str(secret)}
    values = resolve_secrets(validate_inventory(example), environ)
    assert values["sentinel.password"] == "from-a-file-123"


def test_port_scheme_is_the_policys(example: dict[str, Any]) -> None:
    """The seed's "800%i" is refused with the policy's message; "BASE + n" must fit at max."""
    example["pools"]["django"]["port"] = "800%i"
    problems = problems_of(example)
    assert problems == [
        "pools.django.port: '800%i' is not a port scheme "
        '(e.g. "8000 + n": instance n listens on 8000+n)'
    ]
    example["pools"]["django"]["port"] = "65530 + n"
    example["pools"]["django"]["max"] = 10
    assert problems_of(example) == ["pools.django: port 65530 + n exceeds 65535 at n = max (10)"]


def test_roles_are_cross_checked(example: dict[str, Any]) -> None:
    """Two primaries, a quorum larger than the sentinels and a schedule beyond max are all
    reported in one run."""
    example["hosts"]["db02"]["roles"] = ["postgres-primary"]
    example["sentinel"]["quorum"] = 4
    example["schedules"][0]["count"] = 9
    problems = problems_of(example)
    assert problems == [
        'hosts: role "postgres-primary" is on 2 hosts (hosts.db01, hosts.db02); give one',
        "sentinel.quorum: 4 is more than the 3 hosts with role sentinel; "
        "failover could never happen",
        "schedules[0].count: 9 is outside pools.django's min..max (2..5)",
    ]


def test_worker_pool_needs_queues(example: dict[str, Any]) -> None:
    """A worker without queues, or a web pool with them, is a mistake."""
    del example["pools"]["celery-worker-general"]["queues"]
    example["pools"]["django"]["queues"] = ["trading"]
    assert problems_of(example) == [
        "pools.django: queues, concurrency and max_tasks_per_child are for workers",
        "pools.celery-worker-general: a worker pool needs queues = [...]",
    ]


@pytest.mark.parametrize(
    ("pool", "fields", "problem"),
    [
        (
            "celery-worker-general",
            {"websocket_connect_timeout": "30s"},
            "websocket_connect_timeout is for web pools (Daphne)",
        ),
        (
            "django",
            {"websocket_connect_timeout": "20s", "command": ["daphne", "app.asgi:application"]},
            "websocket_connect_timeout sets the default Daphne command's option; with"
            " command = [...], pass --websocket_connect_timeout in the command",
        ),
    ],
)
def test_websocket_connect_timeout_only_where_it_applies(
    example: dict[str, Any], pool: str, fields: dict[str, Any], problem: str
) -> None:
    """Daphne's handshake limit is refused where it could not take effect, naming the pool."""
    example["pools"][pool].update(fields)
    assert problems_of(example) == [f"pools.{pool}: {problem}"]


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    """A missing file and a TOML syntax error are InventoryErrors naming the file."""
    with pytest.raises(InventoryError, match="file not found"):
        load_inventory(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[pools\n")
    with pytest.raises(InventoryError, match="not valid TOML"):
        load_inventory(bad)


def test_field_errors_and_references_in_one_run(example: dict[str, Any]) -> None:
    """A bad value and a dangling reference are reported together, not one run apiece."""
    example["pools"]["django"]["limits"]["memory"] = "lots"
    example["nginx"]["pool"] = "djang"
    example["hosts"]["cache02"]["ports"] = {"redis": 26379}
    assert problems_of(example) == [
        'pools.django.limits.memory: "lots" is not a size (e.g. "1536M", "2G")',
        'nginx.pool: unknown pool "djang" (did you mean "django"?)',
        "hosts.cache02: sentinel and redis would both listen on port 26379",
    ]
