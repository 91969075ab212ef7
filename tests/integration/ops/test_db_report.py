"""``senex-scale db report`` and ``db slow-log`` against a real PostgreSQL with
pg_stat_statements: the report finds the index a sequential-scan workload is missing, and the
statement it prints makes the planner use an index."""

from __future__ import annotations

import json

import psycopg
import pytest

from senex_scale.lab import Postgres

from .conftest import cli

pytestmark = pytest.mark.integration

ROWS = 60_000


@pytest.fixture(scope="module")
def shop(primary: Postgres) -> str:
    """Database ``shop``: ``orders`` (60k rows, no index on customer_id) read by customer
    many times, and ``items`` with a duplicate and an unused index."""
    primary.create_database("shop")
    with primary.connect("shop") as conn:
        conn.execute(
            'CREATE TABLE orders (id bigserial PRIMARY KEY, "customer_id" int NOT NULL,'
            " amount numeric NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(
            "INSERT INTO orders (customer_id, amount, created_at)"
            " SELECT (i * 7919) % 5000, i % 100, now() - i * interval '1 second'"
            f" FROM generate_series(1, {ROWS}) i"
        )
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, sku text, qty int)")
        conn.execute("CREATE INDEX items_sku ON items (sku)")
        conn.execute("CREATE INDEX items_sku_again ON items (sku)")
        conn.execute("CREATE INDEX items_sku_qty ON items (sku, qty)")
        conn.execute("CREATE EXTENSION pg_stat_statements")
        conn.execute("ANALYZE")
        conn.execute("SELECT pg_stat_statements_reset()")
    dsn = primary.dsn(dbname="shop")
    # the workload: the application's query, with a parameter, by many customers
    with psycopg.connect(dsn, autocommit=True) as conn:
        for customer in range(40):
            conn.execute(
                "SELECT id, amount FROM orders WHERE customer_id = %s", [customer]
            ).fetchall()
    return dsn


def test_report_finds_missing_index_and_the_fix_works(shop: str) -> None:
    """The report names orders.customer_id with a CREATE INDEX CONCURRENTLY; after running it
    the same query's plan uses the index."""
    result = cli("db", "report", "--dsn", shop, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["pg_stat_statements"]["available"] is True
    assert any("WHERE customer_id" in s["query"] for s in doc["top_by_total"])
    assert [t["table"] for t in doc["seq_scan_tables"]] == ["orders"]
    (where,) = [c for c in doc["missing_indexes"] if c["source"] == "where"]
    assert where["table"] == "orders"
    assert where["columns"] == ["customer_id"]
    statement = where["statement"]
    assert statement == (
        'CREATE INDEX CONCURRENTLY "idx_orders_customer_id" ON "public"."orders" ("customer_id")'
    )
    assert doc["statements"][0] == statement
    # duplicate and redundant indexes on items; unused ones listed
    redundant = {(r["index"], r["kind"]) for r in doc["redundant_indexes"]}
    assert ("items_sku_again", "duplicate") in redundant or ("items_sku", "duplicate") in redundant
    assert any(kind == "prefix" for _, kind in redundant)
    assert "items_sku_qty" in {i["name"] for i in doc["unused_indexes"]}
    # the table view prints the statement as well
    text = cli("db", "report", "--dsn", shop)
    assert text.returncode == 0, text.stderr
    assert statement + ";" in text.stdout
    print(text.stdout)
    # run the statement: the plan now uses the index
    with psycopg.connect(shop, autocommit=True) as conn:
        plan_before = "\n".join(
            r[0]
            for r in conn.execute("EXPLAIN SELECT id, amount FROM orders WHERE customer_id = 7")
        )
        conn.execute(statement)  # type: ignore[arg-type]
        conn.execute("ANALYZE orders")
        plan = "\n".join(
            r[0]
            for r in conn.execute("EXPLAIN SELECT id, amount FROM orders WHERE customer_id = 7")
        )
    print(plan_before, plan, sep="\n")
    assert "Seq Scan" in plan_before
    assert "idx_orders_customer_id" in plan
    assert "Seq Scan" not in plan
    # and the report no longer asks for it
    again = json.loads(cli("db", "report", "--dsn", shop, "--json").stdout)
    assert not [c for c in again["missing_indexes"] if c["source"] == "where"]


def test_report_without_pg_stat_statements_says_how(primary: Postgres) -> None:
    """In a database without the extension the report still runs and says how to enable it."""
    primary.create_database("plain")
    result = cli("db", "report", "--dsn", primary.dsn(dbname="plain"), "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["pg_stat_statements"]["available"] is False
    assert "CREATE EXTENSION pg_stat_statements" in doc["pg_stat_statements"]["hint"]


def test_slow_log_on_and_off(primary: Postgres) -> None:
    """slow-log on sets log_min_duration_statement without a restart; off resets it."""
    on = cli("db", "slow-log", "on", "--ms", "250", "--dsn", primary.dsn(), "--json")
    assert on.returncode == 0, on.stderr
    assert json.loads(on.stdout)["log_min_duration_statement_ms"] == 250
    with primary.connect() as conn:
        assert conn.execute("SHOW log_min_duration_statement").fetchone() == ("250ms",)
    off = cli("db", "slow-log", "off", "--dsn", primary.dsn(), "--json")
    assert off.returncode == 0, off.stderr
    assert json.loads(off.stdout)["log_min_duration_statement_ms"] == -1
    bad = cli("db", "slow-log", "maybe", "--dsn", primary.dsn())
    assert bad.returncode == 2
    assert "state" in bad.stderr
