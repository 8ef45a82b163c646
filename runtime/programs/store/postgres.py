"""The PostgreSQL store: executions, steps and signals in a schema of a database shared by workers on many machines."""
from __future__ import annotations

import inspect
import os
import random
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from . import migrations, pg_schema, pg_url
from .base import (PENDING, TERMINAL, Change, CodeVersion, ConflictError, Execution, InvalidStateError,
                   NotFoundError, Signal, StepRecord, Store, StoreError, call_record, taken_over)
from .faults import point
from .rows import (_BLOB_COLUMNS, _BOOL_COLUMNS, _EXECUTION_COLUMNS, _FREE_TEXT, _JSON,
                   _SIGNAL_COLUMNS, _STEP_COLUMNS, _cell, _columns, _encode, _execution, _signal, _step)
from .statements import CHANGING, Statement, Statements, StepStatement, read_back, reads_back

_T = TypeVar("_T")
LIVE, ENDED = pg_schema.LIVE, pg_schema.ENDED
RETRIES = 5                # attempts of a transaction that met a serialization failure or a deadlock
LISTEN_POLL = 0.1          # wait_for_work looks at its stop event this often
# psycopg 3.2 added notifies(timeout=...); with an older one wait_for_work just waits (workers poll anyway)
_NOTIFIES_TIMEOUT = "timeout" in inspect.signature(psycopg.Connection.notifies).parameters
_README = 'see "PostgreSQL: many machines" in README.md'

# Runnable: see Store.claim. The candidates come from four index lookups (pending; due timers; requested
# cancels; waiting runs one of whose signals arrived: named waiting_for, or one of the names in waits, read
# by pg_schema's waits_on), so a store of mostly ended runs never reads the ended ones;
# the full condition is checked again on the row locked, which is the version another claimer may just
# have written. SKIP LOCKED under the LIMIT: the statement locks at most what it returns, and claimers
# racing for the same runs each take other ones instead of queueing.
_CANDIDATES = """
WITH candidates AS (
    SELECT id FROM {s}.executions WHERE status = 'pending'
    UNION SELECT id FROM {s}.executions WHERE status IN ('sleeping', 'waiting') AND wake_at <= %(now)s
    UNION SELECT id FROM {s}.executions WHERE cancel_requested AND status IN {live}
    UNION SELECT e.id FROM {s}.signals AS g JOIN {s}.executions AS e ON e.id = g.execution_id
          WHERE NOT g.consumed AND e.status = 'waiting'
            AND (g.name = e.waiting_for OR (e.waits IS NOT NULL AND {s}.waits_on(e.waits, g.name)))
),"""
_CLAIM = """
{candidates}{with_} picked AS (
    SELECT e.id, e.lease_owner, CASE WHEN e.wake_at <= %(now)s THEN e.wake_at ELSE e.updated_at END AS due,
           e.created_at, e.seq
    FROM {s}.executions AS e
    WHERE {which}
      AND e.status IN {live}
      AND (e.lease_until IS NULL OR e.lease_until <= %(now)s)
      AND (e.held_until IS NULL OR e.held_until <= %(now)s OR e.cancel_requested)
      AND (e.status = 'pending'
           OR e.cancel_requested
           OR (e.status IN ('sleeping', 'waiting') AND e.wake_at <= %(now)s)
           OR (e.status = 'waiting' AND EXISTS (
                 SELECT 1 FROM {s}.signals AS g
                 WHERE g.execution_id = e.id AND NOT g.consumed
                   AND (g.name = e.waiting_for OR (e.waits IS NOT NULL AND {s}.waits_on(e.waits, g.name)))))){blocked}
    ORDER BY due, e.created_at, e.seq
    LIMIT %(limit)s
    FOR UPDATE OF e {skip}
)
UPDATE {s}.executions AS x
SET lease_owner = %(owner)s, lease_until = %(until)s, version = x.version + 1
FROM picked
WHERE x.id = picked.id
RETURNING {columns}, picked.lease_owner, picked.due, picked.created_at, picked.seq
"""

# Claims given skip_keys also pass over runs blocked on one of them, unless a cancel was requested (see
# pg_schema's blocked_for: a cell that is not a JSON list blocks no one, and the claim returns it with its damage).
_NOT_BLOCKED = """
      AND (e.blocked_on IS NULL OR e.cancel_requested OR NOT {s}.blocked_for(e.blocked_on, %(keys)s))"""

_NEXT_WAKE = """
SELECT LEAST(
    (SELECT min(wake_at) FROM {s}.executions WHERE status IN ('sleeping', 'waiting') AND wake_at > %(now)s),
    (SELECT min(held_until) FROM {s}.executions WHERE held_until IS NOT NULL AND held_until > %(now)s),
    (SELECT min(lease_until) FROM {s}.executions WHERE lease_owner IS NOT NULL AND lease_until > %(now)s))
"""

_Statements = tuple[Statement, list[StepStatement], Statement | None]  # the update, the steps', the versions' if any

_PRUNE_PICK = """
SELECT id FROM {s}.executions WHERE status IN {ended} AND updated_at < %(before)s
ORDER BY updated_at LIMIT %(batch)s FOR UPDATE SKIP LOCKED
"""


def _value(column: str, value: Any) -> Any:
    """A field's value as its column takes it (JSON as text, flags as booleans, NULs escaped in free text)."""
    encoded = _encode(column, value)
    if encoded is None:
        return None
    if column in _BOOL_COLUMNS:
        return bool(encoded)
    if column in _FREE_TEXT and isinstance(encoded, str) and "\x00" in encoded:
        return encoded.replace("\x00", "\\x00")  # PostgreSQL text cannot hold NUL
    return encoded


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class _Pool:
    """A few connections shared by the store's threads, each lent for one statement or transaction;
    a forked child starts afresh (libpq connections must not cross a fork)."""

    def __init__(self, connect: Callable[[], psycopg.Connection], size: int, wait: float, name: str) -> None:
        self._connect = connect
        self._size = size
        self._wait = wait
        self._name = name
        self._cond = threading.Condition()
        self._idle: list[psycopg.Connection] = []
        self._count = 0
        self._pid = os.getpid()
        self.closed = False

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        conn = self._take()
        try:
            yield conn
        finally:
            self._give(conn)

    def _take(self) -> psycopg.Connection:
        with self._cond:
            self._after_fork()
            deadline = time.monotonic() + self._wait
            while not self._idle and self._count >= self._size and not self.closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StoreError(f"store {self._name}: all {self._size} connections stayed busy for "
                                     f"{self._wait:g} s")
                self._cond.wait(remaining)
            if self.closed:
                raise StoreError(f"store {self._name} is closed")
            if self._idle:
                return self._idle.pop()
            self._count += 1
        try:
            return self._connect()
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _give(self, conn: psycopg.Connection) -> None:
        with self._cond:
            if os.getpid() != self._pid:
                return  # lent before a fork in another process's pool: never closed here
            if conn.broken:  # the server went away (a restart?): the idle ones are likely cut too
                self._count -= len(self._idle)
                stale, self._idle = self._idle, []
            else:
                stale = []
            healthy = not (conn.closed or conn.broken) and conn.info.transaction_status == TransactionStatus.IDLE
            if healthy and not self.closed:
                self._idle.append(conn)
                self._cond.notify()
                return
            self._count -= 1
            self._cond.notify_all()
        for dropped in (conn, *stale):
            dropped.close()

    def _after_fork(self) -> None:
        """In a forked child, forget the parent's connections (dropping them is safe: psycopg finishes a
        connection only in the process that opened it)."""
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._idle = []
            self._count = 0

    def close(self) -> None:
        with self._cond:
            self.closed = True
            idle, self._idle = (self._idle if os.getpid() == self._pid else []), []
            self._count -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            conn.close()


class PostgresStore(Store):
    """A store in a PostgreSQL schema (``durable`` unless the URL says ``?schema=NAME``), shared by
    workers on any number of machines. Same semantics as SQLiteStore: commit is a compare-and-swap on
    the version; claim leases runnable executions with ``FOR UPDATE SKIP LOCKED``, so claimers racing
    for the same runs never take one twice; a lapsed lease is taken over at once.

    Reads run in autocommit; every write is one transaction (retried on a serialization failure or a
    deadlock). Writes that make something runnable now (create, send_signal, request_cancel, release,
    a commit that leaves a run pending and unleased) send a notification on the channel
    ``durable_<schema>``, which ``wait_for_work`` listens to; nothing depends on it arriving.

    ``create=False`` or ``readonly=True``: a missing store is a StoreError and nothing is created;
    read-only never migrates and refuses every write (its connections are read-only too)."""

    def __init__(self, url: str, *, readonly: bool = False, create: bool = True, pool_size: int = 8,
                 timeout: float = 30.0, connect_timeout: float = 10.0) -> None:
        target = pg_url.parse(url)
        self.url = target.display
        self.schema = target.schema
        self.readonly = readonly
        self.create_missing = create and not readonly
        self.timeout = timeout
        self._conninfo = target.conninfo
        self._connect_timeout = connect_timeout
        self._s = pg_schema.quoted(self.schema)
        # readonly on an older schema: the columns it does not have yet, read as NULL; no code_versions table
        self._absent: dict[str, frozenset[str]] = {}
        self._versions_table = True
        self._sql = Statements(mark="%s", prefix=f"{self._s}.", insertion="seq", encode=_value, store=self.url,
                               integrity=psycopg.IntegrityError, detail=_first_line, chain=False)
        self._channel = f"durable_{self.schema}"
        self._pool = _Pool(self._connect, max(1, pool_size), timeout, self.url)
        self._listener: psycopg.Connection | None = None
        self._listener_pid = 0
        self._listen_lock = threading.Lock()
        try:
            self._open()
        except BaseException:
            self._pool.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"

    # -- connections and transactions

    def _connect(self, *, autocommit: bool = True) -> psycopg.Connection:
        options: dict[str, Any] = {"autocommit": autocommit, "application_name": "durable-generators"}
        if "connect_timeout" not in conninfo_to_dict(self._conninfo):
            options["connect_timeout"] = max(1, round(self._connect_timeout))
        try:
            conn = psycopg.connect(self._conninfo, **options)
        except psycopg.Error as e:
            raise StoreError(self._cannot_connect(e)) from None
        if self.readonly:
            try:
                conn.execute("SET default_transaction_read_only = on")
            except psycopg.Error as e:
                conn.close()
                raise StoreError(self._describe(e)) from None
        return conn

    def _cannot_connect(self, error: psycopg.Error) -> str:
        params = conninfo_to_dict(self._conninfo)
        host = params.get("host") or params.get("hostaddr") or "the local socket"
        where = f"{host}:{params.get('port') or 5432}"
        reason = " ".join(str(error).split())
        for secret in (params.get("password"), params.get("sslpassword")):
            if secret:
                reason = reason.replace(str(secret), pg_url.MASK)
        return (f"cannot connect to PostgreSQL at {where} (store {self.url}): {reason}; PostgreSQL must be "
                f"running there and accept this user and database ({_README})")

    def _describe(self, error: BaseException) -> str:
        if isinstance(error, pg_errors.ReadOnlySqlTransaction):
            return f"store {self.url} was opened read-only: nothing can be written to it this way"
        if isinstance(error, pg_errors.InsufficientPrivilege):
            return f"store {self.url}: {_first_line(error)} (the database user needs rights on schema {self.schema!r})"
        if isinstance(error, pg_errors.UndefinedTable):
            return (f"store {self.url}: {_first_line(error)} (the store's tables are gone: was schema "
                    f"{self.schema!r} dropped?)")
        if isinstance(error, psycopg.OperationalError) and error.sqlstate is None:  # on our side: the link
            return (f"store {self.url}: lost the connection to PostgreSQL ({' '.join(str(error).split())}); "
                    "what was being written may or may not have been committed")
        return f"store {self.url}: {_first_line(error)}"

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn psycopg's exceptions into StoreErrors that say what happened to which store."""
        try:
            yield
        except psycopg.Error as e:
            raise StoreError(self._describe(e)) from None
        except UnicodeEncodeError as e:  # text that is not Unicode (a lone surrogate)
            raise StoreError(f"store {self.url}: {e.object[:60]!r} contains a lone surrogate "
                             f"({e.object[e.start:e.end]!r}): PostgreSQL text is UTF-8, so it can be neither "
                             "stored nor looked up") from None

    def _write(self, body: Callable[[psycopg.Connection], _T]) -> _T:
        """Run ``body`` in one transaction; again (a few times) when PostgreSQL reports a serialization
        failure or a deadlock, which roll everything back."""
        if self.readonly:
            raise StoreError(f"store {self.url} was opened read-only: nothing can be written to it this way")
        with self._errors():
            for attempt in range(RETRIES):
                try:
                    with self._pool.connection() as conn, conn.transaction():
                        return body(conn)
                except (pg_errors.SerializationFailure, pg_errors.DeadlockDetected):
                    if attempt == RETRIES - 1:
                        raise
                time.sleep(random.uniform(0.005, 0.02) * (attempt + 1))
        raise AssertionError("unreachable")

    def _rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        """A read: one statement in autocommit; once more on a fresh connection when the one lent had
        been cut (a server restart since it was last used)."""
        with self._errors():
            for attempt in range(2):
                try:
                    with self._pool.connection() as conn:
                        return conn.execute(sql, params).fetchall()
                except psycopg.OperationalError:
                    if attempt or not conn.broken:
                        raise
        raise AssertionError("unreachable")

    def _notify(self, conn: psycopg.Connection, what: str) -> None:
        """Tell listening workers (at commit) that something may be runnable now."""
        conn.execute("SELECT pg_notify(%s, %s)", (self._channel, what))

    # -- opening

    def _open(self) -> None:
        """Check the schema and bring it up to date (several processes may do this at once)."""
        with self._errors(), self._pool.connection() as conn:
            version = pg_schema.read_version(conn, self.schema, self.url)
            if version == 0 and not self.create_missing:
                raise StoreError(pg_schema.missing_store(self.url, self.schema))
            pg_schema.check_supported(version, self.url)
            if not self.readonly and version < pg_schema.LATEST:
                pg_schema.migrate(conn, self.schema, self.url)
            elif version < pg_schema.LATEST:
                self._read_older(conn, version)

    def _read_older(self, conn: psycopg.Connection, version: int) -> None:
        """Read-only on an older schema: the columns added since read as NULL; a StoreError when a column
        this code needs is missing (a writing command migrates the store)."""
        present: dict[str, set[str]] = {}
        for table, column in conn.execute("SELECT table_name, column_name FROM information_schema.columns"
                                          " WHERE table_schema = %s", (self.schema,)):
            present.setdefault(table, set()).add(column)
        self._versions_table = "code_versions" in present
        self._absent = migrations.absent_columns(lambda table: present.get(table, set()), pg_schema.ADDED_COLUMNS,
                                                 version, pg_schema.LATEST, self.url)

    # -- reading rows

    def _select(self, table: str, leave_out: frozenset[str] = frozenset(), alias: str = "") -> str:
        names = {"executions": _EXECUTION_COLUMNS, "steps": _STEP_COLUMNS, "signals": _SIGNAL_COLUMNS}[table]
        columns = _columns(names, leave_out | self._absent.get(table, frozenset()))
        if not alias:
            return columns
        return ", ".join(c if c == "NULL" else f"{alias}.{c}" for c in columns.split(", "))

    def _fetch(self, conn: psycopg.Connection, execution_id: str) -> Execution:
        row = conn.execute(f"SELECT {self._select('executions')} FROM {self._s}.executions WHERE id = %s",
                           (execution_id,)).fetchone()
        if row is None:
            raise NotFoundError(self._not_found(execution_id))
        return _execution(row)

    def _not_found(self, execution_id: str) -> str:
        return f"no execution {execution_id!r} in store {self.url}"

    def _status(self, conn: psycopg.Connection, execution_id: str, lock: str = "") -> str:
        row = conn.execute(f"SELECT status FROM {self._s}.executions WHERE id = %s {lock}", (execution_id,)).fetchone()
        if row is None:
            raise NotFoundError(self._not_found(execution_id))
        return str(row[0])

    # -- executions

    def create(self, function: str, args: Sequence[Any], *, now: float, execution_id: str | None = None,
               mac: bytes | None = None, kwargs: dict[str, Any] | None = None) -> Execution:
        if isinstance(args, (str, bytes)):
            raise TypeError(f"args must be a sequence of arguments, not {type(args).__name__}")
        if execution_id is not None and (not isinstance(execution_id, str) or not execution_id):
            raise ValueError(f"execution_id must be a non-empty string, not {execution_id!r}")
        encoded_args = _encode("args", call_record(args, kwargs))
        sql = (f"INSERT INTO {self._s}.executions (id, function, args, status, version, created_at, updated_at, mac)"
               f" VALUES (%s, %s, %s, '{PENDING}', 1, %s, %s, %s) ON CONFLICT (id) DO NOTHING"
               f" RETURNING {self._select('executions')}")

        def insert(conn: psycopg.Connection) -> Execution:
            while True:  # 48 random bits: a collision is rare, but cheap to rule out
                new_id = execution_id if execution_id is not None else uuid.uuid4().hex[:12]
                row = conn.execute(sql, (new_id, function, encoded_args, now, now, mac)).fetchone()
                if row is not None:
                    break
                if execution_id is not None:
                    raise ConflictError(f"execution {execution_id!r} already exists in store {self.url}")
            point("create.inserted")
            self._notify(conn, "create")
            return _execution(row)

        return self._write(insert)

    def get(self, execution_id: str) -> Execution:
        rows = self._rows(f"SELECT {self._select('executions')} FROM {self._s}.executions WHERE id = %s",
                          (execution_id,))
        if not rows:
            raise NotFoundError(self._not_found(execution_id))
        return _execution(rows[0])

    def list(self, status: str | None = None, limit: int | None = None) -> list[Execution]:
        sql, params = self._sql.list_query(self._select("executions", _BLOB_COLUMNS), status, limit)
        return [_execution(row) for row in self._rows(sql, params)]

    # -- claims and leases

    def claim_statement(self, execution_id: str | None = None, skipping: bool = False) -> str:
        """The claim statement (parameters now, limit, owner, until, id when ``execution_id`` is given, and
        keys, a list of strings, when ``skipping``)."""
        one = execution_id is not None
        return _CLAIM.format(s=self._s, live=LIVE, candidates="" if one else _CANDIDATES.format(s=self._s, live=LIVE),
                             with_="WITH" if one else "", which="e.id = %(id)s" if one else
                             "e.id IN (SELECT id FROM candidates)", skip="" if one else "SKIP LOCKED",
                             blocked=_NOT_BLOCKED.format(s=self._s) if skipping else "",
                             columns=self._select("executions", alias="x"))

    def _lease(self, owner: str, *, now: float, lease: float, limit: int, execution_id: str | None,
               keys: list[str]) -> list[Execution]:
        """See Store._lease: one statement, locking only the rows it leases. Claiming one named execution
        waits for a writer holding its row (claiming any skips it)."""
        sql = self.claim_statement(execution_id, skipping=bool(keys))
        params = {"now": now, "limit": limit, "owner": owner, "until": now + lease, "id": execution_id, "keys": keys}
        width = len(_EXECUTION_COLUMNS)

        def lease_them(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
            rows = conn.execute(sql, params).fetchall()
            if not rows and execution_id is not None:
                self._status(conn, execution_id)  # NotFoundError when there is no such execution
            if rows:
                point("claim.updated")
            return rows

        rows = sorted(self._write(lease_them), key=lambda row: row[width + 1:])  # most overdue first
        return [taken_over(_execution(row[:width]), row[width], owner) for row in rows]

    def renew(self, owner: str, execution_ids: Sequence[str], *, until: float) -> list[str]:
        if not execution_ids:
            return []
        wanted = list(execution_ids)

        def extend(conn: psycopg.Connection) -> set[str]:
            rows = conn.execute(f"UPDATE {self._s}.executions SET lease_until = %s"
                                " WHERE id = ANY(%s) AND lease_owner = %s RETURNING id", (until, wanted, owner))
            renewed = {row[0] for row in rows}
            point("renew.updated")
            return renewed

        renewed = self._write(extend)
        return [execution_id for execution_id in wanted if execution_id not in renewed]

    def release(self, owner: str, execution_ids: Sequence[str] | None = None) -> int:
        sql = f"UPDATE {self._s}.executions SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = %s"
        params: list[Any] = [owner]
        if execution_ids is not None:
            if not execution_ids:
                return 0
            sql += " AND id = ANY(%s)"
            params.append(list(execution_ids))

        def give_up(conn: psycopg.Connection) -> int:
            count = conn.execute(sql, params).rowcount
            if count:
                self._notify(conn, "release")
            return count

        return self._write(give_up)

    def next_wake(self, now: float) -> float | None:
        """See Store.next_wake: the smallest of three index lookups."""
        value = self._rows(_NEXT_WAKE.format(s=self._s), {"now": now})[0][0]
        return None if value is None else float(value)

    def prune(self, *, finished_before: float, batch: int = 1000) -> int:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch!r}")
        pick = _PRUNE_PICK.format(s=self._s, ended=ENDED)

        def delete_batch(conn: psycopg.Connection) -> int:
            ids = [row[0] for row in conn.execute(pick, {"before": finished_before, "batch": batch})]
            if ids:
                for table, column in (("steps", "execution_id"), ("signals", "execution_id"), ("executions", "id")):
                    conn.execute(f"DELETE FROM {self._s}.{table} WHERE {column} = ANY(%s)", (ids,))
                point("prune.batch_deleted")
            return len(ids)

        deleted = 0
        while count := self._write(delete_batch):
            deleted += count
        return deleted

    def query_plans(self, *, now: float) -> dict[str, str]:
        """EXPLAIN of the statements workers run all the time (claim, next_wake, prune's pick), to check
        that indexes serve them."""
        params = {"now": now, "limit": 10, "owner": "explain", "until": now, "id": None, "before": now,
                  "batch": 1000, "keys": ["explain@0"]}
        statements = {"claim": self.claim_statement(), "claim_skipping": self.claim_statement(skipping=True),
                      "next_wake": _NEXT_WAKE.format(s=self._s),
                      "prune": _PRUNE_PICK.format(s=self._s, ended=ENDED)}
        plans: dict[str, str] = {}
        with self._errors(), self._pool.connection() as conn:
            for name, sql in statements.items():
                plans[name] = "\n".join(row[0] for row in conn.execute("EXPLAIN " + sql, params))
        return plans

    # -- commits

    def commit(self, change: Change, *, now: float) -> Execution:
        statements = self._statements(change, now)
        execution = self._write(lambda conn: self._apply(conn, change, now, statements, last=True))
        point("commit.after_commit")
        return execution

    def commit_many(self, changes: Sequence[Change], *, now: float) -> list[Execution | StoreError]:
        """See Store.commit_many: one transaction, each change inside a savepoint of its own."""
        if len({change.execution_id for change in changes}) != len(changes):
            raise ValueError("commit_many takes at most one change per execution")
        prepared = [(change, self._statements(change, now)) for change in changes]

        def apply_all(conn: psycopg.Connection) -> list[Execution | StoreError]:
            results: list[Execution | StoreError] = []
            for change, statements in prepared:
                try:
                    if change.consume_signal is None:
                        # the UPDATE goes first: a conflict there wrote nothing, and a step that cannot be
                        # written aborts the whole transaction; only a signal found consumed after the UPDATE
                        # applied needs a savepoint to undo it
                        results.append(self._apply(conn, change, now, statements))
                    else:
                        with conn.transaction():  # a savepoint, to undo the update when the rest fails
                            results.append(self._apply(conn, change, now, statements))
                except (ConflictError, NotFoundError) as exc:
                    results.append(exc)
            point("commit.before_commit")
            return results

        results = self._write(apply_all)
        point("commit.after_commit")
        return results

    def _statements(self, change: Change, now: float) -> _Statements:
        """Check a change and build its statements before any transaction starts (ValueError, TypeError)."""
        sql = self._sql
        return sql.execution_update(change, now), sql.step_statements(change), sql.versions_insert(change)

    def _apply(self, conn: psycopg.Connection, change: Change, now: float, statements: _Statements,
               last: bool = False) -> Execution:
        """One change, inside the caller's transaction: the compare-and-swap update, its steps, its signal, its
        code versions."""
        (update_sql, update_params), steps, versions = statements
        quick = reads_back(change)
        columns = CHANGING if quick else self._select("executions")
        row = conn.execute(f"{update_sql} RETURNING {columns}", update_params).fetchone()
        if row is None:
            raise ConflictError(self._sql.conflict_reason(conn, change, now))
        self._sql.finish(conn, change, steps, versions)
        execution = read_back(change, now, row, update_params) if quick else _execution(row)
        if execution is None:  # a field that does not read back as it was given: read the row
            execution = self._fetch(conn, change.execution_id)
        if execution.status == PENDING and execution.lease_owner is None:
            self._notify(conn, "commit")
        if last:
            point("commit.before_commit")
        return execution

    # -- code versions

    def _code_versions(self, function: str, version: str | None = None, source_digest: str | None = None,
                       limit: int | None = None) -> list[CodeVersion]:
        if not self._versions_table:  # read-only, on a store older than code versions
            return []
        return self._sql.code_versions(self._rows, function, version, source_digest, limit)

    # -- steps

    def steps(self, execution_id: str) -> list[StepRecord]:
        rows = self._rows(f'SELECT {self._select("steps")} FROM {self._s}.steps WHERE execution_id = %s'
                          ' ORDER BY "index"', (execution_id,))
        return [_step(row) for row in rows]

    def step(self, execution_id: str, index: int) -> StepRecord | None:
        rows = self._rows(f'SELECT {self._select("steps")} FROM {self._s}.steps WHERE execution_id = %s'
                          ' AND "index" = %s', (execution_id, index))
        return _step(rows[0]) if rows else None

    # -- signals and cancellation

    def send_signal(self, execution_id: str, name: str, payload: Any, *, now: float) -> Signal:
        """See Store.send_signal. The execution's row is share-locked while the signal is inserted, so a
        transition to an end waits for it, and a signal never lands on a run that already ended."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a signal name must be a non-empty string, not {name!r}")
        encoded = _encode("payload", payload)

        def insert(conn: psycopg.Connection) -> Signal:
            self._check_live(conn, execution_id, f"send signal {name!r} to", lock="FOR SHARE")
            row = conn.execute(f"INSERT INTO {self._s}.signals (execution_id, name, payload, created_at)"
                               " VALUES (%s, %s, %s, %s) RETURNING id", (execution_id, name, encoded, now)).fetchone()
            point("signal.inserted")
            self._notify(conn, "signal")
            return Signal(id=row[0], execution_id=execution_id, name=name, payload=_cell(_JSON, encoded),
                          created_at=float(now))

        return self._write(insert)

    def _check_live(self, conn: psycopg.Connection, execution_id: str, action: str, lock: str = "") -> None:
        status = self._status(conn, execution_id, lock)
        if status in TERMINAL:
            raise InvalidStateError(f"cannot {action} execution {execution_id!r}: it is already {status}")

    def next_signal(self, execution_id: str, name: str, exclude: int | None = None) -> Signal | None:
        sql = (f"SELECT {self._select('signals')} FROM {self._s}.signals"
               " WHERE execution_id = %s AND name = %s AND NOT consumed")
        params: list[Any] = [execution_id, name]
        if exclude is not None:
            sql += " AND id <> %s"
            params.append(exclude)
        rows = self._rows(sql + " ORDER BY id LIMIT 1", params)
        return _signal(rows[0]) if rows else None

    def signals(self, execution_id: str) -> list[Signal]:
        rows = self._rows(f"SELECT {self._select('signals')} FROM {self._s}.signals WHERE execution_id = %s"
                          " ORDER BY id", (execution_id,))
        return [_signal(row) for row in rows]

    def request_cancel(self, execution_id: str, *, now: float) -> Execution:
        def mark(conn: psycopg.Connection) -> Execution:
            self._check_live(conn, execution_id, "cancel", lock="FOR UPDATE")
            row = conn.execute(f"UPDATE {self._s}.executions SET cancel_requested = true WHERE id = %s"
                               f" RETURNING {self._select('executions')}", (execution_id,)).fetchone()
            point("cancel.updated")
            self._notify(conn, "cancel")
            return _execution(row)

        return self._write(mark)

    # -- notifications

    def wait_for_work(self, timeout: float, stop: threading.Event) -> None:
        """See Store.wait_for_work: returns when a notification arrives on the store's channel (from any
        process, on any machine), ``timeout`` passes or ``stop`` is set (looked at every 0.1 s). Without
        a listening connection (PostgreSQL unreachable) it just waits: polling stays correct."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._listen_lock:
            listener = self._listening()
            while listener is not None and not stop.is_set() and not self._pool.closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                try:
                    if list(listener.notifies(timeout=min(LISTEN_POLL, remaining), stop_after=1)):
                        list(listener.notifies(timeout=0))  # the others that came with it say the same
                        return
                except psycopg.Error:
                    self._drop_listener()
                    listener = None
        stop.wait(max(0.0, deadline - time.monotonic()))

    def _listening(self) -> psycopg.Connection | None:
        """The connection LISTENing on the store's channel (made at first use, again after a fork or a
        lost connection); None when it cannot be made now."""
        if self._listener is not None and self._listener_pid == os.getpid() and not self._listener.closed:
            return self._listener
        self._listener = None
        if self._pool.closed or not _NOTIFIES_TIMEOUT:
            return None
        try:
            conn = self._connect()
            conn.execute(f'LISTEN "{self._channel}"')
        except (StoreError, psycopg.Error):
            return None
        self._listener, self._listener_pid = conn, os.getpid()
        return conn

    def _drop_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and self._listener_pid == os.getpid():
            listener.close()

    def close(self) -> None:
        """Close the store's connections (those other threads are using close when given back)."""
        self._pool.close()
        with self._listen_lock:
            self._drop_listener()
