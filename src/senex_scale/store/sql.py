"""The controller's state and audit log, in SQLite (embedded default) or PostgreSQL.

::

    kv          key -> JSON     "memory" (the core's Memory: scale events, HPA recommendations,
                                action firings), "status" (the leader's last tick, for `status`
                                and the page), "status:<controller>" (each controller's, leader
                                or standby), "backoff" (failed pools), "fence" (the newest
                                fencing token handed out: a write carrying an older one fails)
    samples     rule, instance, at, value      what the `for` windows need; unique per time
    pool_ticks  at, pool, current, desired, min, max           instance-count charts
    rule_ticks  at, rule, pool, value, vote, held              metric charts
    decisions   every decision with its reasons and outcome    the audit log (`history`)
    actions     the journal of scale actions: written "running" BEFORE anything is touched,
                finished with the outcome and every step; a row still "running" at start-up
                is an action a crash interrupted (reconciliation repairs what it left)
    shadow_ticks  at, pool, observed, shadow, observed_short, shadow_short, action, reasons:
                what `run --shadow` would have run next to what ran (controller/shadow.py);
                added later, made by the same CREATE IF NOT EXISTS on an older store

Text written here passes the same redaction as the logs (``telemetry.logs.redact_value``):
an error that echoes a connection string keeps no password in the audit log.

Everything a restart needs is here, so a controller killed with SIGKILL continues where it
stopped: the windows keep their samples, cooldowns their scale events, and the interrupted
action is found and reconciled instead of being done again.

Why plain SQL instead of SQLAlchemy: six tables and the same statements on both databases
(only the placeholder and the id column differ), so the stdlib ``sqlite3`` and psycopg 3 are
all it takes. One connection per store behind a lock: the loop writes, the status page reads.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from senex_scale.core.state import Memory, PoolMemory, Sample, ScaleEvent
from senex_scale.errors import FencedError, PermanentError, TemporaryError
from senex_scale.telemetry.logs import redact_value

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    rule TEXT NOT NULL, instance TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
    value DOUBLE PRECISION NOT NULL, UNIQUE (rule, instance, at));
CREATE INDEX IF NOT EXISTS samples_at ON samples (at);
CREATE TABLE IF NOT EXISTS pool_ticks (
    at DOUBLE PRECISION NOT NULL, pool TEXT NOT NULL, current INTEGER NOT NULL,
    desired INTEGER NOT NULL, min INTEGER NOT NULL, max INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS pool_ticks_at ON pool_ticks (at);
CREATE TABLE IF NOT EXISTS rule_ticks (
    at DOUBLE PRECISION NOT NULL, rule TEXT NOT NULL, pool TEXT,
    value DOUBLE PRECISION, vote TEXT NOT NULL, held DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS rule_ticks_at ON rule_ticks (at);
CREATE INDEX IF NOT EXISTS rule_ticks_rule_at ON rule_ticks (rule, at);
CREATE TABLE IF NOT EXISTS decisions (
    id {id}, at DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL, pool TEXT, rule TEXT,
    priority TEXT NOT NULL, current INTEGER, desired INTEGER, direction TEXT,
    outcome TEXT NOT NULL, reasons TEXT NOT NULL, detail TEXT NOT NULL,
    dry_run INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS decisions_at ON decisions (at);
CREATE TABLE IF NOT EXISTS actions (
    id {id}, decision_id BIGINT, pool TEXT NOT NULL, direction TEXT NOT NULL,
    before INTEGER NOT NULL, desired INTEGER NOT NULL, fence BIGINT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL, finished_at DOUBLE PRECISION,
    status TEXT NOT NULL, steps TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS shadow_ticks (
    at DOUBLE PRECISION NOT NULL, pool TEXT NOT NULL, observed INTEGER,
    shadow INTEGER NOT NULL, observed_short INTEGER NOT NULL, shadow_short INTEGER NOT NULL,
    action TEXT NOT NULL, reasons TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS shadow_ticks_at ON shadow_ticks (at);
"""

OUTCOMES = (
    "hold",
    "dry-run",
    "running",
    "done",
    "partial",
    "failed",
    "interrupted",
    "backoff",
    "standby",
    "shadow",
)
"""What became of a decision: no change needed (hold), recorded only (dry-run), carried out
(done), some instances failed (partial), none did (failed), cut short by a crash and
reconciled at the next start (interrupted), not tried because the pool is backing off after
a failure (backoff), in flight (running), not acted on because another controller leads
(standby), or what ``run --shadow`` would have done (shadow)."""


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """One row of the audit log."""

    id: int
    at: float
    kind: str
    pool: str | None
    rule: str | None
    priority: str
    current: int | None
    desired: int | None
    direction: str | None
    outcome: str
    reasons: tuple[str, ...]
    detail: dict[str, Any]
    dry_run: bool

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of ``history --json`` and the status API."""
        return {
            "id": self.id,
            "at": self.at,
            "kind": self.kind,
            "pool": self.pool,
            "rule": self.rule,
            "priority": self.priority,
            "current": self.current,
            "desired": self.desired,
            "direction": self.direction,
            "outcome": self.outcome,
            "reasons": list(self.reasons),
            "detail": self.detail,
            "dry_run": self.dry_run,
        }


@dataclass(frozen=True, slots=True)
class ActionRow:
    """One entry of the action journal."""

    id: int
    decision_id: int | None
    pool: str
    direction: str
    before: int
    desired: int
    fence: int
    started_at: float
    finished_at: float | None
    status: str
    steps: list[dict[str, Any]]


def memory_to_json(memory: Memory) -> dict[str, Any]:
    """Memory as JSON with exact float times (the observation format rounds them)."""
    return {
        "pools": {
            name: {
                "events": [[e.at, e.before, e.after] for e in mem.events],
                "recommendations": {
                    r: [list(x) for x in v] for r, v in mem.recommendations.items()
                },
            }
            for name, mem in memory.pools.items()
        },
        "actions": dict(memory.actions),
    }


def memory_from_json(doc: dict[str, Any]) -> Memory:
    """Inverse of ``memory_to_json``."""
    pools = {
        name: PoolMemory(
            events=tuple(ScaleEvent(float(a), int(b), int(c)) for a, b, c in mem["events"]),
            recommendations={
                r: tuple((float(t), int(n)) for t, n in v)
                for r, v in mem.get("recommendations", {}).items()
            },
        )
        for name, mem in doc.get("pools", {}).items()
    }
    return Memory(pools=pools, actions={k: float(v) for k, v in doc.get("actions", {}).items()})


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs and the status page)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in userinfo else url


class Store:
    """The state and audit log behind one URL; thread-safe."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.RLock()
        self._conn: Any
        self.path: Path | None
        if url.startswith("sqlite:"):
            self.dialect = "sqlite"
            self.path = sqlite_path(url)
            self._conn = self._open_sqlite(self.path)
        elif url.startswith(("postgresql://", "postgres://")):
            self.dialect = "postgresql"
            self.path = None
            self._conn = self._open_postgres(url)
        else:
            raise PermanentError(f"state {redact_url(url)!r}: use sqlite:PATH or postgresql://...")
        self._migrate()

    # ------------------------------------------------------------------ connections

    @staticmethod
    def _open_sqlite(path: Path) -> sqlite3.Connection:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                # created owner-only: the audit log names hosts and commands
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except (OSError, sqlite3.Error) as exc:
            raise PermanentError(f"state {path}: cannot open: {exc}") from exc
        return conn

    @staticmethod
    def _open_postgres(url: str) -> Any:
        import psycopg

        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as exc:
            message = str(exc).replace(url, redact_url(url)).strip().splitlines()[0]
            raise TemporaryError(f"state {redact_url(url)}: {message}") from exc

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s") if self.dialect == "postgresql" else text

    def _connection(self) -> Any:
        """The open connection; a PostgreSQL one lost earlier is opened again."""
        if self._conn is None:
            self._conn = self._open_postgres(self.url)
        return self._conn

    @contextmanager
    def _failures(self) -> Iterator[None]:
        """Database errors as ``TemporaryError`` naming the store (password masked); a broken
        PostgreSQL connection is dropped, to be opened again by the next call."""
        try:
            yield
        except sqlite3.Error as exc:
            raise TemporaryError(f"state {self.path}: {exc}") from exc
        except Exception as exc:
            import psycopg

            if not isinstance(exc, psycopg.Error):
                raise
            if self._conn is not None and self._conn.closed:
                self._conn = None
            message = str(exc).replace(self.url, redact_url(self.url)).strip()
            lines = message.splitlines() or ["connection lost"]
            raise TemporaryError(f"state {redact_url(self.url)}: {lines[0]}") from exc

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        """A transaction; yields a cursor-like object with ``execute``."""
        with self._lock, self._failures():
            conn = self._connection()
            if self.dialect == "sqlite":
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            else:
                with conn.transaction():
                    yield conn

    def _exec(self, db: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        return db.execute(self._sql(sql), params)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock, self._failures():
            return list(self._connection().execute(self._sql(sql), params).fetchall())

    def _migrate(self) -> None:
        ident = (
            "INTEGER PRIMARY KEY AUTOINCREMENT"
            if self.dialect == "sqlite"
            else "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
        )
        with self._tx() as db:
            if self.dialect == "postgresql":
                # two controllers starting at once must not race on CREATE TABLE
                db.execute("SELECT pg_advisory_xact_lock(7305171)")
            for statement in SCHEMA.format(id=ident).split(";"):
                if statement.strip():
                    db.execute(statement)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()

    # ------------------------------------------------------------------ key/value

    def get(self, key: str, default: Any = None) -> Any:
        """The JSON value stored under ``key``, or ``default``."""
        rows = self._query("SELECT value FROM kv WHERE key = ?", [key])
        return json.loads(rows[0][0]) if rows else default

    def put(self, key: str, value: Any, *, fence: int | None = None) -> None:
        """Store ``value`` (JSON) under ``key`` (refused when ``fence`` is not the newest)."""
        with self._tx() as db:
            self._fenced(db, fence)
            self._put(db, key, value)

    def _put(self, db: Any, key: str, value: Any) -> None:
        self._exec(
            db,
            "INSERT INTO kv (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            # the status snapshot carries error texts; memory is keyed by rule names, which
            # must survive as they are
            [key, json.dumps(redact_value(value) if key.startswith("status") else value)],
        )

    def load_memory(self) -> Memory:
        """The core's memory as last saved (empty on a new store)."""
        doc = self.get("memory")
        return memory_from_json(doc) if doc else Memory()

    def save_memory(self, memory: Memory, *, fence: int | None = None) -> None:
        """Persist the core's memory (refused when ``fence`` is not the newest)."""
        with self._tx() as db:
            self._fenced(db, fence)
            self._put(db, "memory", memory_to_json(memory))

    def next_fence(self) -> int:
        """A fencing token larger than every one handed out before (one per leadership).

        One atomic upsert, so two controllers taking over at once never get the same token
        (a read-then-write would, under PostgreSQL's READ COMMITTED)."""
        with self._tx() as db:
            row = self._exec(
                db,
                "INSERT INTO kv (key, value) VALUES ('fence', '1') ON CONFLICT (key) DO UPDATE"
                " SET value = CAST(CAST(kv.value AS INTEGER) + 1 AS TEXT) RETURNING value",
            ).fetchone()
        return int(json.loads(row[0]))

    def check_fence(self, fence: int) -> None:
        """Raise ``FencedError`` unless ``fence`` is the newest token handed out."""
        with self._tx() as db:
            self._fenced(db, fence)

    def _fenced(self, db: Any, fence: int | None) -> None:
        """Inside a write's transaction: refuse it unless ``fence`` is the newest token.

        Compared with the newest token *issued* (kv "fence"), not the newest one used: a
        standby that took over but has not acted yet already deposes the old leader, and
        pruning cannot lower the bar. On PostgreSQL the row is read ``FOR SHARE``, so a
        ``next_fence`` of a new leader waits for this write to commit, and every write of
        the old leader after that fails (SQLite's ``BEGIN IMMEDIATE`` serialises already)."""
        if fence is None:
            return
        lock = " FOR SHARE" if self.dialect == "postgresql" else ""
        rows = self._exec(db, f"SELECT value FROM kv WHERE key = 'fence'{lock}").fetchall()
        newest = int(json.loads(rows[0][0])) if rows else 0
        if fence != newest:
            raise FencedError(
                f"fencing token {fence} is not the newest ({newest}): another controller leads"
            )

    # ------------------------------------------------------------------ statuses

    def put_status(self, controller: str, status: dict[str, Any], *, leader: bool) -> None:
        """One controller's status snapshot (``status:<id>``); the leader's is also the
        pool picture (``status``) that `status` and the page show. A standby never writes
        that one, so it cannot blank the leader's pools."""
        with self._tx() as db:
            self._put(db, f"status:{controller}", status)
            if leader:
                self._put(db, "status", status)

    def statuses(self) -> dict[str, dict[str, Any]]:
        """Every controller's last status by id (leader and standbys)."""
        rows = self._query("SELECT key, value FROM kv WHERE key LIKE 'status:%'")
        return {key.removeprefix("status:"): json.loads(value) for key, value in rows}

    # ------------------------------------------------------------------ samples

    def add_samples(self, rule: str, samples: Iterable[Sample]) -> None:
        """Append samples of ``rule`` (a sample already stored for that time is kept once)."""
        rows = [(rule, s.instance or "", s.at, s.value) for s in samples]
        if not rows:
            return
        with self._tx() as db:
            sql = self._sql(
                "INSERT INTO samples (rule, instance, at, value) VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING"
            )
            if self.dialect == "sqlite":
                db.executemany(sql, rows)
            else:
                with db.cursor() as cur:
                    cur.executemany(sql, rows)

    def samples(self, rule: str, since: float) -> list[Sample]:
        """Samples of ``rule`` at or after ``since``, oldest first."""
        rows = self._query(
            "SELECT at, value, instance FROM samples WHERE rule = ? AND at >= ? ORDER BY at",
            [rule, since],
        )
        return [Sample(at, value, instance or None) for at, value, instance in rows]

    # ------------------------------------------------------------------ ticks

    def record_tick(
        self,
        at: float,
        pools: Iterable[tuple[str, int, int, int, int]],
        rules: Iterable[tuple[str, str | None, float | None, str, float]],
        status: dict[str, Any],
        *,
        controller: str = "",
        fence: int | None = None,
    ) -> None:
        """One tick's chart rows ((pool, current, desired, min, max) and
        (rule, pool, value, vote, held)) and the leader's status snapshot, in one transaction
        (refused when ``fence`` is not the newest)."""
        with self._tx() as db:
            self._fenced(db, fence)
            for pool, current, desired, low, high in pools:
                self._exec(
                    db,
                    "INSERT INTO pool_ticks (at, pool, current, desired, min, max) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [at, pool, current, desired, low, high],
                )
            for rule, pool_name, value, vote, held in rules:
                self._exec(
                    db,
                    "INSERT INTO rule_ticks (at, rule, pool, value, vote, held) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [at, rule, pool_name, value, vote, held],
                )
            self._put(db, "status", status)
            if controller:
                self._put(db, f"status:{controller}", status)

    def pool_series(self, since: float) -> dict[str, list[tuple[float, int, int]]]:
        """Per pool: (time, current, desired) since ``since``."""
        out: dict[str, list[tuple[float, int, int]]] = {}
        for at, pool, current, desired in self._query(
            "SELECT at, pool, current, desired FROM pool_ticks WHERE at >= ? ORDER BY at",
            [since],
        ):
            out.setdefault(pool, []).append((at, current, desired))
        return out

    def rule_series(self, since: float) -> dict[str, list[tuple[float, float | None]]]:
        """Per rule: (time, value) since ``since`` (None where the metric was missing)."""
        out: dict[str, list[tuple[float, float | None]]] = {}
        for at, rule, value in self._query(
            "SELECT at, rule, value FROM rule_ticks WHERE at >= ? ORDER BY at", [since]
        ):
            out.setdefault(rule, []).append((at, value))
        return out

    def rule_values(self, rule: str, since: float) -> list[tuple[float, float | None]]:
        """One rule's recorded values (time order) since ``since``: a predictive rule's
        demand, which its forecaster learns from after a restart."""
        rows = self._query(
            "SELECT at, value FROM rule_ticks WHERE rule = ? AND at >= ? ORDER BY at",
            [rule, since],
        )
        return [(at, value) for at, value in rows]

    # ------------------------------------------------------------------ shadow mode

    def record_shadow(
        self, at: float, rows: Iterable[tuple[str, int | None, int, bool, bool, str, str]]
    ) -> None:
        """One ``run --shadow`` tick: per pool (pool, real count or None when it could not be
        listed, shadow count, real short, shadow short, would-be action "out"/"in"/"",
        reasons). Never fenced: a shadow holds no lead."""
        with self._tx() as db:
            for pool, real, shadow, real_short, shadow_short, action, reasons in rows:
                shorts = int(real_short), int(shadow_short)
                self._exec(
                    db,
                    "INSERT INTO shadow_ticks (at, pool, observed, shadow, observed_short,"
                    " shadow_short, action, reasons) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [at, pool, real, shadow, *shorts, action, redact_value(reasons)],
                )

    def shadow_ticks(
        self, since: float
    ) -> list[tuple[float, str, int | None, int, bool, bool, str, str]]:
        """``record_shadow`` rows at or after ``since``, oldest first."""
        rows = self._query(
            "SELECT at, pool, observed, shadow, observed_short, shadow_short, action, reasons"
            " FROM shadow_ticks WHERE at >= ? ORDER BY at",
            [since],
        )
        return [(r[0], r[1], r[2], r[3], bool(r[4]), bool(r[5]), r[6], r[7]) for r in rows]

    # ------------------------------------------------------------------ decisions

    def record_decision(
        self,
        at: float,
        decision: dict[str, Any],
        outcome: str,
        detail: dict[str, Any] | None = None,
        *,
        dry_run: bool = False,
        fence: int | None = None,
    ) -> int:
        """Append one decision (``Decision.as_dict()``) with its outcome; its id (refused
        when ``fence`` is not the newest)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        with self._tx() as db:
            self._fenced(db, fence)
            row = self._exec(
                db,
                "INSERT INTO decisions (at, kind, pool, rule, priority, current, desired,"
                " direction, outcome, reasons, detail, dry_run)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                [
                    at,
                    decision["kind"],
                    decision.get("pool"),
                    decision.get("rule"),
                    decision["priority"],
                    decision.get("current"),
                    decision.get("desired"),
                    decision.get("direction"),
                    outcome,
                    json.dumps(redact_value(decision.get("reasons", []))),
                    json.dumps(redact_value(detail or {})),
                    int(dry_run),
                ],
            ).fetchone()
        return int(row[0])

    def set_outcome(
        self,
        decision_id: int,
        outcome: str,
        detail: dict[str, Any],
        *,
        fence: int | None = None,
    ) -> None:
        """Record how a decision ended (refused when ``fence`` is not the newest)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        with self._tx() as db:
            self._fenced(db, fence)
            self._exec(
                db,
                "UPDATE decisions SET outcome = ?, detail = ? WHERE id = ?",
                [outcome, json.dumps(redact_value(detail)), decision_id],
            )

    def history(
        self,
        *,
        pool: str | None = None,
        since: float | None = None,
        outcome: str | None = None,
        acted: bool = False,
        limit: int = 50,
    ) -> list[DecisionRow]:
        """Decisions, newest first, filtered (``acted``: only those that changed something
        or were meant to)."""
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        if pool is not None:
            where.append("pool = ?")
            params.append(pool)
        if since is not None:
            where.append("at >= ?")
            params.append(since)
        if outcome is not None:
            where.append("outcome = ?")
            params.append(outcome)
        if acted:
            where.append("outcome <> 'hold'")
        rows = self._query(
            "SELECT id, at, kind, pool, rule, priority, current, desired, direction, outcome,"
            f" reasons, detail, dry_run FROM decisions WHERE {' AND '.join(where)}"
            " ORDER BY id DESC LIMIT ?",
            [*params, limit],
        )
        return [
            DecisionRow(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                r[7],
                r[8],
                r[9],
                tuple(json.loads(r[10])),
                json.loads(r[11]),
                bool(r[12]),
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ action journal

    def begin_action(
        self,
        decision_id: int | None,
        pool: str,
        direction: str,
        before: int,
        desired: int,
        fence: int,
        at: float,
    ) -> int:
        """Journal an action as running before anything is touched; refuses a stale leader.

        A controller whose fencing token is not the newest one handed out has lost the lead
        (a paused process waking up after a standby took over): it must not act.
        """
        with self._tx() as db:
            self._fenced(db, fence)
            row = self._exec(
                db,
                "INSERT INTO actions (decision_id, pool, direction, before, desired, fence,"
                " started_at, status, steps) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', '[]')"
                " RETURNING id",
                [decision_id, pool, direction, before, desired, fence, at],
            ).fetchone()
        return int(row[0])

    def finish_action(
        self,
        action_id: int,
        status: str,
        steps: list[dict[str, Any]],
        at: float,
        *,
        fence: int | None = None,
    ) -> None:
        """Close a journal entry (done, partial, failed or interrupted) with its steps
        (refused when ``fence`` is not the newest)."""
        with self._tx() as db:
            self._fenced(db, fence)
            self._exec(
                db,
                "UPDATE actions SET status = ?, steps = ?, finished_at = ? WHERE id = ?",
                [status, json.dumps(redact_value(steps)), at, action_id],
            )

    def open_actions(self) -> list[ActionRow]:
        """Journal entries still marked running: actions a crash interrupted."""
        return self._actions("WHERE status = 'running'")

    def actions(self, limit: int = 50) -> list[ActionRow]:
        """The newest journal entries."""
        return self._actions(f"ORDER BY id DESC LIMIT {int(limit)}")

    def _actions(self, tail: str) -> list[ActionRow]:
        rows = self._query(
            "SELECT id, decision_id, pool, direction, before, desired, fence, started_at,"
            f" finished_at, status, steps FROM actions {tail}"
        )
        return [
            ActionRow(
                id=r[0],
                decision_id=r[1],
                pool=r[2],
                direction=r[3],
                before=r[4],
                desired=r[5],
                fence=r[6],
                started_at=r[7],
                finished_at=r[8],
                status=r[9],
                steps=json.loads(r[10]),
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ retention

    def prune(self, before: float) -> int:
        """Delete samples, chart rows, decisions and finished actions older than ``before``."""
        deleted = 0
        with self._tx() as db:
            for table, column in (
                ("samples", "at"),
                ("pool_ticks", "at"),
                ("rule_ticks", "at"),
                ("decisions", "at"),
                ("shadow_ticks", "at"),
            ):
                cur = self._exec(db, f"DELETE FROM {table} WHERE {column} < ?", [before])
                deleted += max(int(cur.rowcount), 0)
            cur = self._exec(
                db, "DELETE FROM actions WHERE status <> 'running' AND started_at < ?", [before]
            )
            deleted += max(int(cur.rowcount), 0)
        return deleted


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:`` URL: ``sqlite:///var/lib/x.db`` is ``/var/lib/x.db``,
    ``sqlite:state.db`` is relative to the working directory."""
    rest = url.removeprefix("sqlite:")
    if rest.startswith("//"):
        rest = rest[2:]
    if not rest:
        raise PermanentError("state: sqlite: needs a file path (sqlite:///path/state.db)")
    return Path(rest)


def open_store(url: str) -> Store:
    """The store behind ``url`` (``sqlite:PATH`` or ``postgresql://...``), schema created."""
    return Store(url)
