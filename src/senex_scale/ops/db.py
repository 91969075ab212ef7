"""``senex-scale db report`` and ``db slow-log``: the seed's "Database Query Optimization".

The seed turns slow-query logging on by hand, reads ``pg_stat_statements`` by hand and looks
for missing indexes with a ``pg_stats`` query (``n_distinct > 100 AND abs(correlation) <
0.5``) that lists every high-cardinality column of every table, used or not. This report
starts from what the server did instead:

1. the top statements by mean and by total execution time (``pg_stat_statements``; how to
   enable it when it is missing);
2. tables read by sequential scans that each read many rows (``pg_stat_user_tables``);
3. for those tables, the columns the top statements filter on (the WHERE clause of the
   normalized statement text, parsed cheaply: single-table statements, ``AND`` only) that no
   index leads with: a ``CREATE INDEX CONCURRENTLY`` statement each, identifiers quoted by
   ``psycopg.sql``; then the seed's ``pg_stats`` heuristic on the same tables, marked as a
   weaker hint;
4. indexes never scanned since the statistics were reset (not unique, not backing a
   constraint) and indexes duplicated by another (same columns) or made redundant by one
   that starts with the same columns.

Everything is read-only except ``db slow-log`` (``ALTER SYSTEM`` + ``pg_reload_conf()``).
Index usage counters are per server: an index unused on the primary may serve reads on a
replica, so check there too before dropping one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

import psycopg
import typer
from psycopg import sql
from rich.table import Table

from senex_scale.errors import InputError, PermanentError
from senex_scale.ops.common import connect, err, human_bytes, out, print_json

MARK = "/* senex-scale db report */ "
"""Prefix of the report's own statements, so pg_stat_statements' top lists leave them out."""

ENABLE_HINT = (
    "pg_stat_statements is not available. Enable it: add pg_stat_statements to "
    "shared_preload_libraries (ALTER SYSTEM SET shared_preload_libraries = "
    "'pg_stat_statements'; Debian: apt install postgresql-contrib), restart PostgreSQL, then "
    "CREATE EXTENSION pg_stat_statements; in this database."
)

app = typer.Typer(
    help="PostgreSQL: the database report and slow-query logging.", no_args_is_help=True
)


# --------------------------------------------------------------------------- pure parts


@dataclass(frozen=True, slots=True)
class Statement:
    """One row of pg_stat_statements (times in milliseconds)."""

    queryid: int
    query: str
    calls: int
    total_ms: float
    mean_ms: float
    rows: int


@dataclass(frozen=True, slots=True)
class TableScan:
    """Sequential-scan statistics of one table."""

    schema: str
    table: str
    seq_scan: int
    seq_tup_read: int
    idx_scan: int
    live_rows: int
    size_bytes: int

    @property
    def rows_per_scan(self) -> float:
        return self.seq_tup_read / self.seq_scan if self.seq_scan else 0.0


@dataclass(frozen=True, slots=True)
class IndexInfo:
    """One index of a user table."""

    schema: str
    table: str
    name: str
    columns: tuple[str, ...]
    """Key columns in order; an expression column is ``"(expr)"``."""
    method: str
    unique: bool
    constraint: bool
    """Backs a primary key, unique or exclusion constraint."""
    partial: bool
    scans: int
    size_bytes: int
    valid: bool = True


@dataclass(frozen=True, slots=True)
class Filter:
    """What a statement filters one table on: equality columns first, then one range column."""

    schema: str | None
    table: str
    equality: tuple[str, ...]
    range: str | None

    @property
    def columns(self) -> tuple[str, ...]:
        cols = list(self.equality)
        if self.range is not None and self.range not in cols:
            cols.append(self.range)
        return tuple(cols[:3])


@dataclass(frozen=True, slots=True)
class Candidate:
    """A missing index: where, why, and the statement that adds it."""

    schema: str
    table: str
    columns: tuple[str, ...]
    source: str
    """``"where"`` (columns a top statement filters on) or ``"pg_stats"`` (the seed's hint)."""
    reason: str
    statement: str


@dataclass(frozen=True, slots=True)
class Redundant:
    """An index that another makes unnecessary."""

    schema: str
    table: str
    index: str
    covered_by: str
    kind: str
    """``"duplicate"`` (same columns) or ``"prefix"`` (the other starts with these columns)."""
    size_bytes: int
    statement: str


_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_TABLE = re.compile(
    rf"\b(?:FROM|UPDATE)\s+(?P<name>{_IDENT}(?:\s*\.\s*{_IDENT})?)"
    rf"(?:\s+(?:AS\s+)?(?P<alias>(?!WHERE\b|SET\b|ORDER\b|GROUP\b|LIMIT\b){_IDENT}))?",
    re.IGNORECASE,
)
_WHERE = re.compile(
    r"\bWHERE\b(?P<body>.*?)(?=\bGROUP\s+BY\b|\bORDER\s+BY\b|\bLIMIT\b|\bOFFSET\b|\bFOR\s+"
    r"(?:UPDATE|SHARE|NO\s+KEY|KEY)\b|\bRETURNING\b|$)",
    re.IGNORECASE | re.DOTALL,
)
_CONDITION = re.compile(
    rf"^\(*\s*(?:(?P<qual>{_IDENT})\s*\.\s*)?(?P<col>{_IDENT})\s*"
    r"(?P<op>=|<=|>=|<|>|\bIN\b|\bBETWEEN\b|\bLIKE\b|\bIS\s+NULL\b)",
    re.IGNORECASE,
)
_NOT_SINGLE = re.compile(
    r"\bJOIN\b|\bUNION\b|\(\s*SELECT\b|\bOR\b|,\s*" + _IDENT + r"\s+WHERE", re.I
)


def _unquote(ident: str) -> str:
    ident = ident.strip()
    if ident.startswith('"'):
        return ident[1:-1].replace('""', '"')
    return ident.lower()


def parse_filter(query: str) -> Filter | None:
    """The table and filter columns of a single-table statement's WHERE clause, or None.

    Cheap by design: statements with a join, a subquery, a UNION or an OR are skipped (one
    index does not serve them), as is any condition that is not ``column op value``."""
    if _NOT_SINGLE.search(query):
        return None
    table = _TABLE.search(query)
    where = _WHERE.search(query)
    if table is None or where is None:
        return None
    rest = query[table.end() :].lstrip()
    if rest.startswith(","):
        return None  # FROM a, b
    parts = [_unquote(p) for p in re.split(r"\s*\.\s*", table.group("name"))]
    schema, name = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])
    alias = _unquote(table.group("alias")) if table.group("alias") else None
    equality: list[str] = []
    ranged: str | None = None
    body = re.sub(r"\bBETWEEN\b(.*?)\bAND\b", r"BETWEEN \1 ", where.group("body"), flags=re.I)
    for condition in re.split(r"\bAND\b", body, flags=re.IGNORECASE):
        match = _CONDITION.match(condition.strip())
        if match is None:
            continue
        qual = match.group("qual")
        if qual is not None and _unquote(qual) not in {alias, name}:
            continue
        col = _unquote(match.group("col"))
        op = match.group("op").upper()
        if op in ("=", "IN") or op.startswith("IS"):
            if col not in equality:
                equality.append(col)
        elif ranged is None and op != "LIKE":
            ranged = col
    if not equality and ranged is None:
        return None
    return Filter(schema, name, tuple(equality), ranged)


def index_name(table: str, columns: Sequence[str], taken: Iterable[str] = ()) -> str:
    """``idx_<table>_<columns>``, cut to PostgreSQL's 63 bytes, unique among ``taken``."""
    used = set(taken)
    base = re.sub(r"[^a-z0-9_]+", "_", f"idx_{table}_{'_'.join(columns)}".lower()).strip("_")
    base = base[:63]
    name, n = base, 1
    while name in used:
        suffix = f"_{n}"
        name = base[: 63 - len(suffix)] + suffix
        n += 1
    return name


def create_index_sql(
    schema: str, table: str, columns: Sequence[str], taken: Iterable[str] = ()
) -> str:
    """``CREATE INDEX CONCURRENTLY "name" ON "schema"."table" ("col", ...)``, quoted properly."""
    statement = sql.SQL("CREATE INDEX CONCURRENTLY {} ON {}.{} ({})").format(
        sql.Identifier(index_name(table, columns, taken)),
        sql.Identifier(schema),
        sql.Identifier(table),
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
    )
    return statement.as_string()


def drop_index_sql(schema: str, index: str) -> str:
    """``DROP INDEX CONCURRENTLY "schema"."index"``."""
    return (
        sql.SQL("DROP INDEX CONCURRENTLY {}.{}")
        .format(sql.Identifier(schema), sql.Identifier(index))
        .as_string()
    )


def covered(columns: Sequence[str], indexes: Iterable[IndexInfo]) -> bool:
    """An index leads with one of the filter's columns (equality first), so it can serve it."""
    return any(ix.valid and not ix.partial and ix.columns[:1] == (columns[0],) for ix in indexes)


def redundant_indexes(indexes: Sequence[IndexInfo]) -> list[Redundant]:
    """Indexes with the same columns as another (duplicates) or whose columns start another
    index of the same table (prefix): btree, no predicate, not backing a constraint."""
    found: list[Redundant] = []
    plain = [ix for ix in indexes if ix.method == "btree" and not ix.partial and ix.valid]
    for ix in plain:
        if ix.constraint:
            continue
        for other in plain:
            if other is ix or (other.schema, other.table) != (ix.schema, ix.table):
                continue
            same = other.columns == ix.columns
            prefix = len(other.columns) > len(ix.columns) and (
                other.columns[: len(ix.columns)] == ix.columns
            )
            if same and (ix.unique and not other.unique):
                continue  # keep the unique one
            if same and ix.unique == other.unique and not other.constraint and ix.name < other.name:
                continue  # of two equal duplicates, report the later name once
            if prefix and ix.unique:
                continue  # a unique index enforces something the longer one does not
            if same or prefix:
                found.append(
                    Redundant(
                        ix.schema,
                        ix.table,
                        ix.name,
                        other.name,
                        "duplicate" if same else "prefix",
                        ix.size_bytes,
                        drop_index_sql(ix.schema, ix.name),
                    )
                )
                break
    return found


def pg_stats_distinct(n_distinct: float, reltuples: float) -> float:
    """pg_stats' ``n_distinct`` as a count (a negative value is a fraction of the rows)."""
    return -n_distinct * max(reltuples, 0.0) if n_distinct < 0 else n_distinct


# --------------------------------------------------------------------------- the report


@dataclass
class Report:
    """Everything ``db report`` found (``--json`` prints ``as_dict()``)."""

    database: str
    stats_available: bool
    hint: str | None = None
    stats_reset: str | None = None
    top_by_mean: list[Statement] = field(default_factory=list)
    top_by_total: list[Statement] = field(default_factory=list)
    seq_scans: list[TableScan] = field(default_factory=list)
    missing: list[Candidate] = field(default_factory=list)
    unused: list[IndexInfo] = field(default_factory=list)
    redundant: list[Redundant] = field(default_factory=list)

    @property
    def statements(self) -> list[str]:
        return [c.statement for c in self.missing if c.source == "where"] + [
            c.statement for c in self.missing if c.source != "where"
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "pg_stat_statements": {"available": self.stats_available, "hint": self.hint},
            "stats_reset": self.stats_reset,
            "top_by_mean": [asdict(s) for s in self.top_by_mean],
            "top_by_total": [asdict(s) for s in self.top_by_total],
            "seq_scan_tables": [
                asdict(t) | {"rows_per_scan": t.rows_per_scan} for t in self.seq_scans
            ],
            "missing_indexes": [asdict(c) for c in self.missing],
            "unused_indexes": [asdict(i) for i in self.unused],
            "redundant_indexes": [asdict(r) for r in self.redundant],
            "statements": self.statements,
        }


def _q(conn: psycopg.Connection[Any], text: str, params: Sequence[Any] = ()) -> list[Any]:
    return conn.execute(MARK + text, params).fetchall()


def _statements(conn: psycopg.Connection[Any], order: str, limit: int) -> list[Statement]:
    rows = _q(
        conn,
        "SELECT s.queryid, s.query, s.calls, s.total_exec_time, s.mean_exec_time, s.rows"
        " FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
        " WHERE d.datname = current_database() AND s.query NOT LIKE %s"
        f" ORDER BY s.{order} DESC LIMIT %s",
        ["/* senex-scale%", limit],
    )
    return [
        Statement(int(r[0] or 0), r[1], int(r[2]), float(r[3]), float(r[4]), int(r[5]))
        for r in rows
    ]


def _stats_status(conn: psycopg.Connection[Any]) -> str | None:
    """None when pg_stat_statements can be read, else what to do."""
    installed = _q(conn, "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'")
    preload = _q(conn, "SELECT current_setting('shared_preload_libraries')")[0][0] or ""
    loaded = "pg_stat_statements" in preload
    if installed and loaded:
        return None
    if loaded:
        return (
            "pg_stat_statements is loaded but not created in this database: run "
            "CREATE EXTENSION pg_stat_statements;"
        )
    return ENABLE_HINT


def _indexes(conn: psycopg.Connection[Any]) -> list[IndexInfo]:
    rows = _q(
        conn,
        """
        SELECT n.nspname, t.relname, c.relname, am.amname, i.indisunique,
               EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid),
               i.indpred IS NOT NULL, coalesce(s.idx_scan, 0), pg_relation_size(i.indexrelid),
               i.indisvalid,
               ARRAY(SELECT CASE WHEN k.attnum = 0 THEN '(expr)' ELSE a.attname::text END
                     FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                     LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                     WHERE k.ord <= i.indnkeyatts ORDER BY k.ord)
        FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_class t ON t.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        JOIN pg_am am ON am.oid = c.relam
        LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = i.indexrelid
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
          AND n.nspname NOT LIKE 'pg_temp%%'
        """,
    )
    return [
        IndexInfo(
            schema=r[0],
            table=r[1],
            name=r[2],
            method=r[3],
            unique=bool(r[4]),
            constraint=bool(r[5]),
            partial=bool(r[6]),
            scans=int(r[7]),
            size_bytes=int(r[8]),
            valid=bool(r[9]),
            columns=tuple(r[10]),
        )
        for r in rows
    ]


def _seq_scans(conn: psycopg.Connection[Any], min_rows: int, min_scans: int) -> list[TableScan]:
    rows = _q(
        conn,
        "SELECT schemaname, relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0), n_live_tup,"
        " pg_total_relation_size(relid) FROM pg_stat_user_tables"
        " WHERE n_live_tup >= %s AND seq_scan >= %s ORDER BY seq_tup_read DESC",
        [min_rows, min_scans],
    )
    tables = [
        TableScan(r[0], r[1], int(r[2]), int(r[3]), int(r[4]), int(r[5]), int(r[6])) for r in rows
    ]
    # many rows read per scan: not a scan of a small lookup table or a LIMIT 1
    return [t for t in tables if t.rows_per_scan >= min_rows / 2]


def _resolve(conn: psycopg.Connection[Any], flt: Filter) -> tuple[str, str] | None:
    name = ".".join(
        sql.Identifier(p).as_string(conn)
        for p in ((flt.schema, flt.table) if flt.schema else (flt.table,))
    )
    rows = _q(
        conn,
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.oid = to_regclass(%s)",
        [name],
    )
    return (rows[0][0], rows[0][1]) if rows else None


def _columns_exist(
    conn: psycopg.Connection[Any], schema: str, table: str, cols: Sequence[str]
) -> bool:
    rows = _q(
        conn,
        "SELECT count(*) FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name = %s AND column_name = ANY(%s)",
        [schema, table, list(cols)],
    )
    return int(rows[0][0]) == len(set(cols))


def build_report(
    dsn: str, *, limit: int = 10, min_rows: int = 10_000, min_scans: int = 5
) -> Report:
    """Read the server's statistics and build the report (read-only)."""
    with connect(dsn) as conn:
        database = str(_q(conn, "SELECT current_database()")[0][0])
        hint = _stats_status(conn)
        report = Report(database=database, stats_available=hint is None, hint=hint)
        reset = _q(
            conn, "SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()"
        )
        report.stats_reset = str(reset[0][0]) if reset and reset[0][0] is not None else None
        if hint is None:
            try:
                report.top_by_mean = _statements(conn, "mean_exec_time", limit)
                report.top_by_total = _statements(conn, "total_exec_time", limit)
            except psycopg.errors.InsufficientPrivilege:
                report.hint = "cannot read pg_stat_statements: grant pg_read_all_stats to this role"
        report.seq_scans = _seq_scans(conn, min_rows, min_scans)
        indexes = _indexes(conn)
        taken = {ix.name for ix in indexes}
        scanned = {(t.schema, t.table): t for t in report.seq_scans}
        suggested: set[tuple[str, str, str]] = set()
        statements = {s.queryid: s for s in [*report.top_by_total, *report.top_by_mean]}
        for stmt in sorted(statements.values(), key=lambda s: -s.total_ms):
            flt = parse_filter(stmt.query)
            if flt is None:
                continue
            where = _resolve(conn, flt)
            if where is None or where not in scanned:
                continue
            schema, table = where
            cols = flt.columns
            if not _columns_exist(conn, schema, table, cols):
                continue
            on_table = [ix for ix in indexes if (ix.schema, ix.table) == where]
            if covered(cols, on_table) or (schema, table, cols[0]) in suggested:
                continue
            scan = scanned[where]
            statement = create_index_sql(schema, table, cols, taken)
            taken.add(statement.split('"')[1])
            suggested.add((schema, table, cols[0]))
            report.missing.append(
                Candidate(
                    schema,
                    table,
                    cols,
                    "where",
                    f"{stmt.calls} calls, {stmt.mean_ms:.1f} ms mean filter on "
                    f"{', '.join(cols)}; {table}: {scan.seq_scan} sequential scans of "
                    f"~{scan.rows_per_scan:.0f} rows, no index leads with {cols[0]}",
                    statement,
                )
            )
        # The seed's pg_stats heuristic, only on the tables that are scanned sequentially.
        for (schema, table), scan in scanned.items():
            rows = _q(
                conn,
                "SELECT s.attname, s.n_distinct, s.correlation, c.reltuples FROM pg_stats s"
                " JOIN pg_namespace n ON n.nspname = s.schemaname"
                " JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.tablename"
                " WHERE s.schemaname = %s AND s.tablename = %s",
                [schema, table],
            )
            on_table = [ix for ix in indexes if (ix.schema, ix.table) == (schema, table)]
            for attname, n_distinct, correlation, reltuples in rows:
                distinct = pg_stats_distinct(float(n_distinct or 0), float(reltuples or 0))
                if distinct <= 100 or correlation is None or abs(float(correlation)) >= 0.5:
                    continue
                if covered((attname,), on_table) or (schema, table, attname) in suggested:
                    continue
                statement = create_index_sql(schema, table, (attname,), taken)
                taken.add(statement.split('"')[1])
                suggested.add((schema, table, attname))
                report.missing.append(
                    Candidate(
                        schema,
                        table,
                        (attname,),
                        "pg_stats",
                        f"heuristic: ~{distinct:.0f} distinct values, correlation "
                        f"{float(correlation):.2f}, {scan.seq_scan} sequential scans; add only "
                        "if statements filter on it",
                        statement,
                    )
                )
        report.unused = sorted(
            (
                ix
                for ix in indexes
                if ix.scans == 0 and not ix.unique and not ix.constraint and ix.valid
            ),
            key=lambda ix: -ix.size_bytes,
        )
        report.redundant = redundant_indexes(indexes)
    return report


def _statements_table(title: str, rows: list[Statement]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("calls", "mean ms", "total ms", "rows", "query"):
        table.add_column(col, justify="right" if col != "query" else "left")
    for s in rows:
        query = " ".join(s.query.split())
        table.add_row(
            str(s.calls), f"{s.mean_ms:.2f}", f"{s.total_ms:.1f}", str(s.rows), query[:100]
        )
    return table


def print_report(report: Report) -> None:
    """The report as tables, with the statements to run at the end."""
    out.print(f"database {report.database} (statistics since {report.stats_reset or 'start'})")
    if report.hint:
        out.print(f"note: {report.hint}")
    if report.top_by_mean:
        out.print(_statements_table("top statements by mean time", report.top_by_mean))
        out.print(_statements_table("top statements by total time", report.top_by_total))
    table = Table(title="tables read by sequential scans", title_justify="left")
    for col in ("table", "rows", "size", "seq scans", "rows/scan", "index scans"):
        table.add_column(col, justify="left" if col == "table" else "right")
    for t in report.seq_scans:
        table.add_row(
            f"{t.schema}.{t.table}",
            str(t.live_rows),
            human_bytes(t.size_bytes),
            str(t.seq_scan),
            f"{t.rows_per_scan:.0f}",
            str(t.idx_scan),
        )
    out.print(table if report.seq_scans else "no large table is read by sequential scans")
    if report.missing:
        table = Table(title="missing index candidates", title_justify="left")
        for col in ("table", "columns", "from", "why"):
            table.add_column(col)
        for c in report.missing:
            table.add_row(f"{c.schema}.{c.table}", ", ".join(c.columns), c.source, c.reason)
        out.print(table)
    if report.unused:
        table = Table(
            title="unused indexes (0 scans since the statistics reset)", title_justify="left"
        )
        for col in ("index", "table", "size"):
            table.add_column(col)
        for ix in report.unused:
            table.add_row(ix.name, f"{ix.schema}.{ix.table}", human_bytes(ix.size_bytes))
        out.print(table)
    if report.redundant:
        table = Table(title="duplicate and redundant indexes", title_justify="left")
        for col in ("index", "table", "kind", "covered by", "size"):
            table.add_column(col)
        for r in report.redundant:
            table.add_row(
                r.index, f"{r.schema}.{r.table}", r.kind, r.covered_by, human_bytes(r.size_bytes)
            )
        out.print(table)
    if report.statements:
        out.print("suggested (run outside a transaction; check the plan afterwards):")
        for statement in report.statements:
            out.print(f"  {statement};", markup=False)
    if report.redundant:
        out.print("redundant indexes can be dropped (check replicas' usage first):")
        for r in report.redundant:
            out.print(f"  {r.statement};", markup=False)


@app.command("report")
def report_command(
    dsn: Annotated[
        str,
        typer.Option(
            "--dsn", help="libpq DSN or postgresql:// URL (a superuser or pg_read_all_stats)."
        ),
    ],
    limit: Annotated[int, typer.Option("--limit", min=1, help="Statements per top list.")] = 10,
    min_rows: Annotated[
        int,
        typer.Option(
            "--min-rows", min=1, help="A table this large read by sequential scans is a candidate."
        ),
    ] = 10_000,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Top statements, missing-index candidates with CREATE INDEX CONCURRENTLY, unused and
    duplicate indexes."""
    report = build_report(dsn, limit=limit, min_rows=min_rows)
    if json_out:
        print_json(report.as_dict())
    else:
        print_report(report)


# --------------------------------------------------------------------------- slow-query log


def set_slow_log(dsn: str, on: bool, ms: int) -> dict[str, Any]:
    """``ALTER SYSTEM SET log_min_duration_statement`` (or RESET) and reload; the effective
    value read back from a new session, and where it comes from."""
    with connect(dsn) as conn:
        try:
            if on:
                conn.execute(
                    sql.SQL("ALTER SYSTEM SET log_min_duration_statement = {}").format(
                        sql.Literal(ms)
                    )
                )
            else:
                conn.execute("ALTER SYSTEM RESET log_min_duration_statement")
            conn.execute("SELECT pg_reload_conf()")
        except psycopg.errors.InsufficientPrivilege as exc:
            raise PermanentError(
                "db slow-log: ALTER SYSTEM needs a superuser (or GRANT ALTER SYSTEM ON PARAMETER "
                f"log_min_duration_statement): {exc}"
            ) from None
    deadline = time.monotonic() + 5
    want = str(ms) if on else None
    while True:
        with connect(dsn) as conn:
            setting, source = conn.execute(
                "SELECT setting, source FROM pg_settings WHERE name = 'log_min_duration_statement'"
            ).fetchone() or ("", "")
        if want is None or setting == want or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    result = {"log_min_duration_statement_ms": int(setting), "source": source}
    if on and setting != want:
        raise PermanentError(
            f"db slow-log: log_min_duration_statement is still {setting} ms (set on the {source}, "
            "which overrides ALTER SYSTEM)"
        )
    return result


@app.command("slow-log")
def slow_log_command(
    state: Annotated[str, typer.Argument(help="on or off.")],
    dsn: Annotated[str, typer.Option("--dsn", help="libpq DSN or URL of a superuser.")],
    ms: Annotated[
        int, typer.Option("--ms", help="Log statements slower than this (milliseconds).")
    ] = 1000,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Turn slow-statement logging (log_min_duration_statement) on or off, no restart."""
    if state not in ("on", "off"):
        raise InputError(f"state: {state!r} is not on or off")
    if ms < 0:
        raise InputError(f"--ms: {ms} must be 0 or more")
    result = set_slow_log(dsn, state == "on", ms)
    if json_out:
        print_json(result)
        return
    value = result["log_min_duration_statement_ms"]
    if value < 0:
        out.print(
            f"slow-statement log off (log_min_duration_statement -1, from {result['source']})"
        )
    else:
        out.print(f"slow-statement log on: statements over {value} ms are logged")
    if state == "on":
        err.print("turn it off again when done: the log grows with every slow statement")
