"""The SQLite store: executions, steps and signals in one WAL-mode file shared by threads and processes."""
from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

from . import migrations, schema
from .base import (PENDING, SLEEPING, TERMINAL, WAITING, Change, CodeVersion, ConflictError, Execution,
                   InvalidStateError, NotFoundError, Signal, StepRecord, Store, StoreError, call_record, taken_over)
from .faults import point
from .statements import CHANGING, Statements, read_back, reads_back
from .rows import (_BLOB_COLUMNS, _EXECUTION_COLUMNS, _JSON, _LIVE, _SIGNAL_COLUMNS,
                   _STEP_COLUMNS, _BadText, _cell, _columns, _encode, _execution, _signal, _step)

_T = TypeVar("_T")


def _is_busy(error: sqlite3.Error) -> bool:
    text = str(error)
    return "locked" in text or "busy" in text


class _Connection(sqlite3.Connection):
    """A connection the store can reference weakly (plain sqlite3 connections cannot be)."""


def _text_factory(data: bytes) -> str:
    """How connections read text: a cell that is not UTF-8 is damage in its row, not an exception
    that fails the whole query."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return _BadText(data.decode("utf-8", "replace"))


def missing_store(path: str) -> str:
    return (f"no store at {path} (the default store is .durable/durable.db under the current directory, or the URL "
            "in $DURABLE_STORE; pass --store URL to use another; `durable run` and `durable worker` create a store)")


def _sync_folder(folder: str) -> None:
    """Make a new directory entry durable (POSIX; elsewhere the filesystem sees to it)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _json_list(column: str) -> str:
    """SQL for ``column`` as a JSON list for ``json_each``: a cell that is not text holding a JSON list reads as
    ``[]`` (json_each would fail the whole claim on it; the run is read with its damage)."""
    return (f"CASE WHEN typeof({column}) <> 'text' OR NOT json_valid({column}) THEN '[]' "
            f"WHEN json_type({column}) = 'array' THEN {column} ELSE '[]' END")


# Runnable: see Store.claim. Ordered by how long it has been runnable: a due timer since wake_at,
# anything else since its last transition. A wait for several names (waits) is woken by a signal named by a
# string element of that JSON list; a cell that is not a JSON list wakes it for none.
_CLAIM = """
SELECT id, lease_owner FROM executions
WHERE status IN ({live})
  AND (lease_until IS NULL OR lease_until <= :now)
  AND (held_until IS NULL OR held_until <= :now OR cancel_requested)
  AND (status = :pending
       OR cancel_requested
       OR (status IN (:sleeping, :waiting) AND wake_at <= :now)
       OR (status = :waiting AND EXISTS (
             SELECT 1 FROM signals
             WHERE signals.execution_id = executions.id AND signals.name = executions.waiting_for
               AND NOT signals.consumed))
       OR (status = :waiting AND waits IS NOT NULL AND EXISTS (
             SELECT 1 FROM json_each({waits}) AS w
             JOIN signals ON signals.execution_id = executions.id AND signals.name = w.value
               AND NOT signals.consumed
             WHERE w.type = 'text')))
  {only}{blocked}
ORDER BY CASE WHEN wake_at <= :now THEN wake_at ELSE updated_at END, created_at, rowid
LIMIT :limit
""".replace("{waits}", _json_list("waits"))


# Claims given skip_keys also pass over runs blocked on one of them (unless a cancel was requested): the
# string elements of the blocked_on list. A cell that is not a JSON list blocks no one (the run is claimed,
# and read with its damage).
_NOT_BLOCKED = """
  AND (blocked_on IS NULL OR cancel_requested OR NOT EXISTS (
        SELECT 1 FROM json_each({blocked_on}) AS b
        WHERE b.type = 'text' AND b.value IN ({keys})))""".replace("{blocked_on}", _json_list("blocked_on"))


def _claim_query(execution_id: str | None, now: float, limit: int,
                 keys: Sequence[str] = ()) -> tuple[str, dict[str, Any]]:
    params: dict[str, Any] = {f"live{i}": status for i, status in enumerate(_LIVE)}
    params.update(now=now, pending=PENDING, sleeping=SLEEPING, waiting=WAITING, id=execution_id, limit=limit)
    params.update((f"key{i}", key) for i, key in enumerate(keys))
    live = ", ".join(f":live{i}" for i in range(len(_LIVE)))
    blocked = _NOT_BLOCKED.format(keys=", ".join(f":key{i}" for i in range(len(keys)))) if keys else ""
    return _CLAIM.format(live=live, only="" if execution_id is None else "AND id = :id", blocked=blocked), params


class SQLiteStore(Store):
    """A store in one SQLite file. Each thread gets its own connection; processes coordinate
    through SQLite's locks (every write is a ``BEGIN IMMEDIATE`` transaction).

    ``version`` and ``updated_at`` mark transitions: create and commit set both, claim bumps the
    version only. renew, send_signal and request_cancel leave both alone, so the lease holder's next
    commit (which names the version it claimed) still applies.

    A missing file becomes a new store (built aside and moved in place whole, so a store file always
    has its tables) unless ``create`` is False. ``readonly=True`` opens an existing store for reading
    only: it never creates, migrates or reconfigures the file (``PRAGMA query_only``), reads an older
    schema as it is when it has the columns needed, and refuses every write."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0, readonly: bool = False,
                 create: bool = True) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.url = "sqlite:///" + self.path
        self.timeout = timeout
        self.readonly = readonly
        self.create_missing = create and not readonly
        # readonly on an older schema: the columns it does not have yet, read as NULL; no code_versions table
        self._absent: dict[str, frozenset[str]] = {}
        self._versions_table = True
        self._local = threading.local()
        self._lock = threading.Lock()
        # every thread's connection, with the process that opened it (close() closes ours only)
        self._connections: weakref.WeakKeyDictionary[_Connection, int] = weakref.WeakKeyDictionary()
        self._inherited: list[_Connection] = []
        self._closed = False
        self._sql = Statements(mark="?", prefix="", insertion="rowid", encode=_encode, store=self.path,
                               integrity=sqlite3.IntegrityError, detail=str, chain=True)
        self._open()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- connections and transactions

    def _open(self) -> None:
        """Check the file, configure it and bring its schema up to date (first connection only)."""
        if not os.path.exists(self.path):
            if not self.create_missing:
                raise StoreError(missing_store(self.path))
            self._create_file()
        elif os.path.isfile(self.path) and os.path.getsize(self.path) == 0:
            raise StoreError(f"{self.path} is empty (0 bytes): not a durable store; a store created by durable "
                             "always has its tables — delete the file to start a new store")
        conn = self._connect()
        try:
            with self._errors():
                version = self._retry_busy(lambda: self._read_version(conn))
                schema.check_supported(version, self.path)
                if self.readonly:
                    self._absent = self._absent_columns(conn, version)
                    self._versions_table = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'"
                                                        " AND name = 'code_versions'").fetchone() is not None
                else:
                    self._configure(conn)
                    if version < schema.LATEST:
                        schema.migrate(conn, self.path)
        except BaseException:
            conn.close()
            raise
        self._adopt(conn)

    def _create_file(self) -> None:
        """Build a new store in a file of its own next to ``path``, then link it in place: other
        processes see no file or a whole store, never an empty or half-made one. When another
        process's store got there first, that one is kept."""
        folder, name = os.path.split(self.path)
        building = os.path.join(folder, f".{name}.new-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            conn = self._connect(building)
            try:
                with self._errors():
                    self._configure(conn)
                    schema.migrate(conn, self.path)
            finally:
                conn.close()  # the last connection: SQLite checkpoints and removes its -wal and -shm
            try:
                os.link(building, self.path)  # fails when the path exists: never replaces a store
            except FileExistsError:
                pass
            except OSError:  # no hard links on this filesystem: rename, checking first (a narrow race)
                if not os.path.exists(self.path):
                    os.replace(building, self.path)
            _sync_folder(folder)
        except OSError as e:
            raise StoreError(f"cannot create store {self.path}: {e.strerror or e}") from None
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                try:
                    os.unlink(building + suffix)
                except OSError:
                    pass

    def _absent_columns(self, conn: _Connection, version: int) -> dict[str, frozenset[str]]:
        """Read-only on an older schema: the columns added since, which read as NULL; a StoreError
        when a column this code needs is missing (a writing command migrates the store)."""
        if version == schema.LATEST:
            return {}
        if version == 0:
            raise StoreError(f"{self.path} is a SQLite database without tables, not yet a store: "
                             "`durable run` or `durable worker` make it one")
        return migrations.absent_columns(lambda table: {row[1] for row in conn.execute(f"PRAGMA table_info({table})")},
                                         schema.ADDED_COLUMNS, version, schema.LATEST, self.path)

    def _read_version(self, conn: _Connection) -> int:
        conn.execute("BEGIN")  # one consistent read, before changing anything
        try:
            return schema.read_version(conn, self.path)
        finally:
            self._rollback(conn)

    def _retry_busy(self, attempt: Callable[[], _T]) -> _T:
        """Retry while SQLite says busy, up to the timeout: a process switching a new file to WAL
        mode makes the others fail at once, without SQLite's busy handler waiting for it."""
        deadline = time.monotonic() + self.timeout
        delay = 0.001
        while True:
            try:
                return attempt()
            except sqlite3.OperationalError as e:
                if not _is_busy(e) or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _connect(self, path: str | None = None) -> _Connection:
        with self._errors():
            if self.readonly:  # mode=ro: never creates the file
                conn = sqlite3.connect(Path(self.path).as_uri() + "?mode=ro", uri=True, timeout=self.timeout,
                                       isolation_level=None, check_same_thread=False, factory=_Connection)
            else:
                conn = sqlite3.connect(path or self.path, timeout=self.timeout, isolation_level=None,
                                       check_same_thread=False, factory=_Connection)
        conn.text_factory = _text_factory
        if self.readonly:
            try:
                with self._errors():
                    conn.execute("PRAGMA query_only = ON")
            except BaseException:
                conn.close()
                raise
        return conn

    def _configure(self, conn: _Connection) -> None:
        if self.readonly:
            return  # the file stays as it is
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":  # once per file: WAL mode is persistent
            mode = self._retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        if str(mode).lower() != "wal":
            raise StoreError(f"store {self.path}: SQLite could not switch it to WAL journal mode "
                             f"(it stays {mode!r}); put the store on a local filesystem")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")

    def _adopt(self, conn: _Connection) -> None:
        self._local.conn = conn
        self._local.pid = os.getpid()
        with self._lock:
            self._connections[conn] = os.getpid()

    def _conn(self) -> _Connection:
        """This thread's connection (a new one in a new thread, or in a forked child)."""
        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None and local.pid == os.getpid():
            return conn
        if conn is not None:
            # Inherited across fork: SQLite forbids using it, and closing it could disturb the
            # parent's locks, so keep it alive and unused.
            self._inherited.append(conn)
        conn = self._connect()
        try:
            with self._errors():
                self._configure(conn)
        except BaseException:
            conn.close()
            raise
        self._adopt(conn)
        return conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn sqlite3 exceptions into StoreErrors that say what happened to which store."""
        try:
            yield
        except sqlite3.Error as e:
            raise StoreError(self._describe(e)) from e
        except UnicodeEncodeError as e:  # binding text that is not Unicode (a lone surrogate)
            raise StoreError(f"store {self.path}: {e.object[:60]!r} contains a lone surrogate "
                             f"({e.object[e.start:e.end]!r}): SQLite text is UTF-8, so it can be neither "
                             "stored nor looked up") from None

    def _describe(self, error: sqlite3.Error) -> str:
        text = str(error)
        if "not a database" in text:
            return f"{self.path} is not a SQLite database ({text}): point the store at another file"
        if "malformed" in text or "corrupt" in text:
            return (f"store {self.path} is damaged ({text}): restore it from a backup; "
                    f"`sqlite3 {self.path} .recover` may save what is left")
        if _is_busy(error):
            return (f"store {self.path}: {text} (another process or thread kept it locked; "
                    f"the store waits up to {self.timeout:g} s)")
        if "unable to open" in text:
            return f"cannot open store {self.path}: {text} (does its directory exist, and may we write there?)"
        if "readonly" in text:
            return f"store {self.path} is read-only ({text}): it needs write access to the file and its directory"
        return f"store {self.path}: {text}"

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; BEGIN IMMEDIATE takes the write lock before the first read, so
        a read-modify-write never interleaves with another process's."""
        if self.readonly:
            raise StoreError(f"store {self.path} was opened read-only: nothing can be written to it this way")
        conn = self._conn()
        with self._errors():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                self._rollback(conn)
                raise

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # keep the original exception; SQLite rolls back on its own when it must

    def _rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        """A read: one statement, atomic on its own in autocommit mode."""
        conn = self._conn()
        with self._errors():
            return conn.execute(sql, params).fetchall()

    # -- reading rows

    def _select(self, table: str, leave_out: frozenset[str] = frozenset()) -> str:
        """The column list of a SELECT of whole rows (NULL for those left out, or absent from an
        older schema read as it is)."""
        names = {"executions": _EXECUTION_COLUMNS, "steps": _STEP_COLUMNS, "signals": _SIGNAL_COLUMNS}[table]
        return _columns(names, leave_out | self._absent.get(table, frozenset()))

    def _fetch(self, conn: sqlite3.Connection, execution_id: str) -> Execution:
        row = conn.execute(f"SELECT {self._select('executions')} FROM executions WHERE id = ?",
                           (execution_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no execution {execution_id!r} in store {self.path}")
        return _execution(row)

    def _status(self, conn: sqlite3.Connection, execution_id: str) -> str:
        row = conn.execute("SELECT status FROM executions WHERE id = ?", (execution_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no execution {execution_id!r} in store {self.path}")
        return str(row[0])

    def _exists(self, conn: sqlite3.Connection, execution_id: str) -> bool:
        return conn.execute("SELECT 1 FROM executions WHERE id = ?", (execution_id,)).fetchone() is not None

    # -- executions

    def create(self, function: str, args: Sequence[Any], *, now: float, execution_id: str | None = None,
               mac: bytes | None = None, kwargs: dict[str, Any] | None = None) -> Execution:
        if isinstance(args, (str, bytes)):
            raise TypeError(f"args must be a sequence of arguments, not {type(args).__name__}")
        encoded_args = _encode("args", call_record(args, kwargs))
        with self._write() as conn:
            new_id = self._new_id(conn, execution_id)
            conn.execute("INSERT INTO executions (id, function, args, status, version, created_at, updated_at, mac)"
                         " VALUES (?, ?, ?, ?, 1, ?, ?, ?)", (new_id, function, encoded_args, PENDING, now, now, mac))
            point("create.inserted")
            return self._fetch(conn, new_id)

    def _new_id(self, conn: sqlite3.Connection, given: str | None) -> str:
        if given is not None:
            if not isinstance(given, str) or not given:
                raise ValueError(f"execution_id must be a non-empty string, not {given!r}")
            if self._exists(conn, given):
                raise ConflictError(f"execution {given!r} already exists in store {self.path}")
            return given
        while True:  # 48 random bits: a collision is rare, but cheap to rule out
            candidate = uuid.uuid4().hex[:12]
            if not self._exists(conn, candidate):
                return candidate

    def get(self, execution_id: str) -> Execution:
        rows = self._rows(f"SELECT {self._select('executions')} FROM executions WHERE id = ?", (execution_id,))
        if not rows:
            raise NotFoundError(f"no execution {execution_id!r} in store {self.path}")
        return _execution(rows[0])

    def list(self, status: str | None = None, limit: int | None = None) -> list[Execution]:
        sql, params = self._sql.list_query(self._select("executions", _BLOB_COLUMNS), status, limit)
        return [_execution(row) for row in self._rows(sql, params)]

    def _lease(self, owner: str, *, now: float, lease: float, limit: int, execution_id: str | None,
               keys: list[str]) -> list[Execution]:
        sql, params = _claim_query(execution_id, now, limit, keys)
        claimed: list[Execution] = []
        with self._write() as conn:
            rows = conn.execute(sql, params).fetchall()
            if not rows and execution_id is not None and not self._exists(conn, execution_id):
                raise NotFoundError(f"no execution {execution_id!r} in store {self.path}")
            for claimed_id, previous in rows:
                point("claim.selected")
                conn.execute("UPDATE executions SET lease_owner = ?, lease_until = ?, version = version + 1"
                             " WHERE id = ?", (owner, now + lease, claimed_id))
                point("claim.updated")
                claimed.append(taken_over(self._fetch(conn, claimed_id), previous, owner))
        return claimed

    def renew(self, owner: str, execution_ids: Sequence[str], *, until: float) -> list[str]:
        if not execution_ids:
            return []
        lost: list[str] = []
        with self._write() as conn:
            for execution_id in execution_ids:
                cursor = conn.execute("UPDATE executions SET lease_until = ? WHERE id = ? AND lease_owner = ?",
                                      (until, execution_id, owner))
                if cursor.rowcount != 1:
                    lost.append(execution_id)
            point("renew.updated")
        return lost

    def commit(self, change: Change, *, now: float) -> Execution:
        with self._write() as conn:
            execution = self._apply(conn, change, now)
            point("commit.before_commit")
        point("commit.after_commit")
        return execution

    def commit_many(self, changes: Sequence[Change], *, now: float) -> list[Execution | StoreError]:
        """See Store.commit_many: one transaction, each change inside a savepoint of its own."""
        if len({change.execution_id for change in changes}) != len(changes):
            raise ValueError("commit_many takes at most one change per execution")
        results: list[Execution | StoreError] = []
        with self._write() as conn:
            for change in changes:
                # the UPDATE goes first: a conflict there wrote nothing, and a step that cannot be written
                # aborts the whole transaction; only a signal found consumed after the UPDATE applied needs a
                # savepoint to undo it
                alone = change.consume_signal is None
                if not alone:
                    conn.execute("SAVEPOINT change")
                try:
                    results.append(self._apply(conn, change, now))
                except (ConflictError, NotFoundError) as exc:
                    if not alone:
                        conn.execute("ROLLBACK TO change")
                    results.append(exc)
                if not alone:
                    conn.execute("RELEASE change")
            point("commit.before_commit")
        point("commit.after_commit")
        return results

    def _apply(self, conn: sqlite3.Connection, change: Change, now: float) -> Execution:
        """One change, inside the caller's transaction: the compare-and-swap update, its steps, its signal, its
        code versions."""
        update_sql, update_params = self._sql.execution_update(change, now)
        steps = self._sql.step_statements(change)
        versions = self._sql.versions_insert(change)
        quick = reads_back(change)
        if quick:
            update_sql += f" RETURNING {CHANGING}"
        cursor = conn.execute(update_sql, update_params)
        returned = cursor.fetchone() if quick else None
        if (returned is None) if quick else cursor.rowcount != 1:
            raise ConflictError(self._sql.conflict_reason(conn, change, now))
        self._sql.finish(conn, change, steps, versions)
        execution = None if returned is None else read_back(change, now, returned, update_params)
        return self._fetch(conn, change.execution_id) if execution is None else execution

    def release(self, owner: str, execution_ids: Sequence[str] | None = None) -> int:
        with self._write() as conn:
            if execution_ids is None:
                cursor = conn.execute("UPDATE executions SET lease_owner = NULL, lease_until = NULL"
                                      " WHERE lease_owner = ?", (owner,))
                return cursor.rowcount
            released = 0
            for execution_id in execution_ids:
                released += conn.execute("UPDATE executions SET lease_owner = NULL, lease_until = NULL"
                                         " WHERE id = ? AND lease_owner = ?", (execution_id, owner)).rowcount
            return released

    def next_wake(self, now: float) -> float | None:
        """See Store.next_wake: the smallest of four index lookups."""
        row = self._rows(
            "SELECT MIN(t) FROM ("
            " SELECT MIN(wake_at) AS t FROM executions WHERE status IN (?, ?) AND wake_at > ?"
            " UNION ALL SELECT MIN(held_until) FROM executions WHERE held_until IS NOT NULL AND held_until > ?"
            " UNION ALL SELECT MIN(lease_until) FROM executions WHERE lease_owner IS NOT NULL AND lease_until > ?)",
            (SLEEPING, WAITING, now, now, now))
        return None if row[0][0] is None else float(row[0][0])

    def prune(self, *, finished_before: float, batch: int = 1000) -> int:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch!r}")
        ended = ", ".join("?" for _ in TERMINAL)
        deleted = 0
        while True:
            with self._write() as conn:
                ids = [row[0] for row in conn.execute(
                    f"SELECT id FROM executions WHERE status IN ({ended}) AND updated_at < ? LIMIT ?",
                    (*TERMINAL, finished_before, batch))]
                if not ids:
                    return deleted
                marks = ", ".join("?" for _ in ids)
                for table, column in (("steps", "execution_id"), ("signals", "execution_id"), ("executions", "id")):
                    conn.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", ids)
                point("prune.batch_deleted")
            deleted += len(ids)

    # -- code versions

    def _code_versions(self, function: str, version: str | None = None, source_digest: str | None = None,
                       limit: int | None = None) -> list[CodeVersion]:
        if not self._versions_table:  # read-only, on a store older than code versions
            return []
        return self._sql.code_versions(self._rows, function, version, source_digest, limit)

    # -- steps

    def steps(self, execution_id: str) -> list[StepRecord]:
        rows = self._rows(f'SELECT {self._select("steps")} FROM steps WHERE execution_id = ? ORDER BY "index"',
                          (execution_id,))
        return [_step(row) for row in rows]

    def step(self, execution_id: str, index: int) -> StepRecord | None:
        rows = self._rows(f'SELECT {self._select("steps")} FROM steps WHERE execution_id = ? AND "index" = ?',
                          (execution_id, index))
        return _step(rows[0]) if rows else None

    # -- signals and cancellation

    def send_signal(self, execution_id: str, name: str, payload: Any, *, now: float) -> Signal:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a signal name must be a non-empty string, not {name!r}")
        encoded = _encode("payload", payload)
        with self._write() as conn:
            self._check_live(conn, execution_id, f"send signal {name!r} to")
            cursor = conn.execute("INSERT INTO signals (execution_id, name, payload, created_at) VALUES (?, ?, ?, ?)",
                                  (execution_id, name, encoded, now))
            signal_id = cursor.lastrowid
            point("signal.inserted")
        assert signal_id is not None
        return Signal(id=signal_id, execution_id=execution_id, name=name, payload=_cell(_JSON, encoded),
                      created_at=float(now))

    def _check_live(self, conn: sqlite3.Connection, execution_id: str, action: str) -> None:
        status = self._status(conn, execution_id)
        if status in TERMINAL:
            raise InvalidStateError(f"cannot {action} execution {execution_id!r}: it is already {status}")

    def next_signal(self, execution_id: str, name: str, exclude: int | None = None) -> Signal | None:
        rows = self._rows(f"SELECT {self._select('signals')} FROM signals"
                          " WHERE execution_id = ? AND name = ? AND NOT consumed AND id IS NOT ?"
                          " ORDER BY id LIMIT 1", (execution_id, name, exclude))
        return _signal(rows[0]) if rows else None

    def signals(self, execution_id: str) -> list[Signal]:
        rows = self._rows(f"SELECT {self._select('signals')} FROM signals WHERE execution_id = ? ORDER BY id",
                          (execution_id,))
        return [_signal(row) for row in rows]

    def request_cancel(self, execution_id: str, *, now: float) -> Execution:
        with self._write() as conn:
            self._check_live(conn, execution_id, "cancel")
            conn.execute("UPDATE executions SET cancel_requested = 1 WHERE id = ?", (execution_id,))
            point("cancel.updated")
            return self._fetch(conn, execution_id)

    def close(self) -> None:
        """Close every thread's connection; call it when no other thread is using the store."""
        with self._lock:
            self._closed = True
            connections = [conn for conn, pid in self._connections.items() if pid == os.getpid()]
            self._connections.clear()
        for conn in connections:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()
