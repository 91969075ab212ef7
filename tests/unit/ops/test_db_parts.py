"""The pure parts of ``db report``: WHERE parsing, index names and statements, redundancy."""

from __future__ import annotations

import pytest

from senex_scale.ops.db import (
    Filter,
    IndexInfo,
    covered,
    create_index_sql,
    drop_index_sql,
    index_name,
    parse_filter,
    pg_stats_distinct,
    redundant_indexes,
)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            "SELECT id FROM orders WHERE customer_id = $1",
            Filter(None, "orders", ("customer_id",), None),
        ),
        (
            'select * from "public"."Orders" o where o.customer_id = $1 and o.created_at > $2'
            " order by id limit $3",
            Filter("public", "Orders", ("customer_id",), "created_at"),
        ),
        ("UPDATE orders SET amount = $1 WHERE id = $2", Filter(None, "orders", ("id",), None)),
        ("DELETE FROM orders WHERE status IN ($1, $2)", Filter(None, "orders", ("status",), None)),
        (
            "SELECT count(*) FROM t WHERE a = $1 AND b BETWEEN $2 AND $3 AND c = $4",
            Filter(None, "t", ("a", "c"), "b"),
        ),
        ("SELECT * FROM t WHERE deleted_at IS NULL", Filter(None, "t", ("deleted_at",), None)),
    ],
)
def test_parse_filter(query: str, expected: Filter) -> None:
    """Single-table statements: equality columns in order, then one range column."""
    assert parse_filter(query) == expected


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM a JOIN b ON a.x = b.y WHERE a.z = $1",
        "SELECT * FROM t WHERE a = $1 OR b = $2",
        "SELECT * FROM t WHERE id IN (SELECT id FROM u WHERE v = $1)",
        "SELECT * FROM a, b WHERE a.x = b.y",
        "SELECT * FROM t",
        "SELECT * FROM t WHERE lower(name) = $1",
        "SELECT * FROM t x WHERE other.col = $1",
    ],
)
def test_parse_filter_skips_what_one_index_cannot_serve(query: str) -> None:
    """Joins, OR, subqueries, several tables, no WHERE, expressions, foreign qualifiers: None."""
    assert parse_filter(query) is None


def test_filter_columns_put_the_range_last_and_cap_at_three() -> None:
    assert Filter(None, "t", ("a", "b", "c"), "d").columns == ("a", "b", "c")
    assert Filter(None, "t", ("a",), "d").columns == ("a", "d")


def test_create_index_sql_quotes_identifiers() -> None:
    """Mixed case, spaces and quotes survive as quoted identifiers; CONCURRENTLY always."""
    statement = create_index_sql("My Schema", 'Or"ders', ["customer id", "Status"])
    assert statement == (
        'CREATE INDEX CONCURRENTLY "idx_or_ders_customer_id_status" ON "My Schema"."Or""ders"'
        ' ("customer id", "Status")'
    )
    assert drop_index_sql("public", "x y") == 'DROP INDEX CONCURRENTLY "public"."x y"'


def test_index_name_is_at_most_63_bytes_and_unique() -> None:
    long = index_name("t" * 60, ["column_one", "column_two"])
    assert len(long) == 63
    assert index_name("orders", ["a"], taken={"idx_orders_a"}) == "idx_orders_a_1"
    assert len(index_name("t" * 60, ["c"], taken={index_name("t" * 60, ["c"])})) <= 63


def _ix(name: str, cols: tuple[str, ...], **kw: object) -> IndexInfo:
    base: dict[str, object] = {
        "schema": "public", "table": "t", "name": name, "columns": cols, "method": "btree",
        "unique": False, "constraint": False, "partial": False, "scans": 0, "size_bytes": 8192,
    }  # fmt: skip
    base.update(kw)
    return IndexInfo(**base)  # type: ignore[arg-type]


def test_redundant_duplicates_and_prefixes() -> None:
    """(a) twice: the later name is reported once; (a) under (a, b): prefix; a unique or
    constraint index is never reported; other tables and methods do not count."""
    found = redundant_indexes(
        [
            _ix("a1", ("a",)),
            _ix("a2", ("a",)),
            _ix("ab", ("a", "b")),
            _ix("pk", ("id",), unique=True, constraint=True),
            _ix("id_again", ("id",)),
            _ix("u_c", ("c",), unique=True),
            _ix("cd", ("c", "d")),
            _ix("hash_e", ("e",), method="hash"),
            _ix("e", ("e",)),
            _ix("other_a", ("a",), table="other"),
        ]
    )
    kinds = {(r.index, r.kind, r.covered_by) for r in found}
    assert ("a2", "duplicate", "a1") in kinds
    assert ("a1", "prefix", "ab") in kinds
    assert ("id_again", "duplicate", "pk") in kinds
    names = {r.index for r in found}
    assert not names & {"pk", "u_c", "cd", "hash_e", "e", "other_a", "ab"}


def test_covered_by_an_index_leading_with_the_first_column() -> None:
    assert covered(("a", "b"), [_ix("ab", ("a", "b"))])
    assert not covered(("b",), [_ix("ab", ("a", "b"))])
    assert not covered(("a",), [_ix("pa", ("a",), partial=True)])


def test_pg_stats_distinct_negative_is_a_fraction() -> None:
    assert pg_stats_distinct(-0.5, 10_000) == 5000
    assert pg_stats_distinct(250, 10_000) == 250
