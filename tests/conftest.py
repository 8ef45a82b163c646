"""Make the project root (``runtime``, ``transpiler``) and this directory (``harness``) importable; the
fixtures of the store tests, SQLite's, PostgreSQL's and the in-memory store's (``any_store`` runs a test on
each; a test that needs SQL on the store, a second store on it or another process runs on SQL_BACKENDS).

PostgreSQL: the tests use the server at ``$DURABLE_TEST_PG`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``), make a database of their own there for the session
(``durable_test_<pid>_<random>``, dropped at the end) and a schema per test. When the server does not
answer, those tests fail with a message saying so; ``DURABLE_TEST_PG=skip`` skips them instead.
"""
from __future__ import annotations

import itertools
import os
import secrets
import sqlite3
import sys
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest

_TESTS = Path(__file__).resolve().parent
for _p in (str(_TESTS.parent), str(_TESTS)):
    if _p not in sys.path:
        sys.path.insert(0, _p)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """The path of a SQLite store file in the test's folder (not created)."""
    return tmp_path / "store.db"


@pytest.fixture
def store(db: Path) -> Iterator["SQLiteStore"]:  # noqa: F821 - imported below, once the root is importable
    """A SQLite store at ``db``, closed after the test."""
    from runtime.programs.store import SQLiteStore

    with SQLiteStore(db) as s:
        yield s


PG_ENV = "DURABLE_TEST_PG"
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"
_schemas = itertools.count()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """The URL of a database made for this session on the test PostgreSQL server (dropped at the end)."""
    server = os.environ.get(PG_ENV) or PG_DEFAULT
    if server == "skip":
        pytest.skip(f"PostgreSQL tests skipped ({PG_ENV}=skip)")
    try:
        import psycopg
    except ImportError as e:
        pytest.fail(f"the PostgreSQL tests need psycopg 3 ({e}): pip install -e '.[test]'", pytrace=False)
    from runtime.programs.store.pg_url import masked

    try:
        admin = psycopg.connect(server, autocommit=True, connect_timeout=5)
    except psycopg.Error as e:
        admin, reason = None, " ".join(str(e).split())
    if admin is None:  # failed outside the except block, so the report is the message alone
        pytest.fail(f"PostgreSQL does not answer at {masked(server)} ({reason}). Start it (README.md, "
                    f'"PostgreSQL: many machines"; .ci/run starts one), point {PG_ENV} at another server, or set '
                    f"{PG_ENV}=skip to skip the PostgreSQL tests", pytrace=False)
    name = f"durable_test_{os.getpid()}_{secrets.token_hex(4)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlsplit(server)._replace(path="/" + name).geturl()
        finally:
            _drop_database(admin, name)


def _drop_database(admin: Any, name: str) -> None:
    import psycopg

    try:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg.errors.SyntaxError:  # before PostgreSQL 13: end its sessions first
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """A PostgreSQL store URL of a schema of its own (not created yet)."""
    separator = "&" if "?" in pg_database else "?"
    return f"{pg_database}{separator}schema=t{next(_schemas)}_{secrets.token_hex(3)}"


class Backend:
    """One kind of store under test: its URL, opening it, and SQL run on its tables directly (as someone
    editing the store by hand would), written with ``?`` placeholders for both kinds."""

    name: str
    url: str
    schema_module: Any

    def open(self, **options: Any) -> Any:
        from runtime.programs.store import open_store

        return open_store(self.url, **options)

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def fingerprint(self) -> Any:
        """Everything the store holds, to check that something changed nothing."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class SQLiteBackend(Backend):
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        from runtime.programs.store import schema

        self.path = path
        self.url = f"sqlite:///{path}"
        self.schema_module = schema

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.path)
        try:
            with conn:
                return conn.execute(statement, params).fetchall()
        finally:
            conn.close()

    def fingerprint(self) -> Any:
        exists = self.path.exists()
        journal = {f"{self.path.name}-wal", f"{self.path.name}-shm"} if exists else set()  # a reader may leave them
        return [self.path.read_bytes() if exists else None,
                sorted(p.name for p in self.path.parent.iterdir() if p.name not in journal)]


class PostgresBackend(Backend):
    name = "postgres"

    def __init__(self, url: str) -> None:
        from runtime.programs.store import pg_schema
        from runtime.programs.store.pg_url import parse

        self.url = url
        self.schema = parse(url).schema
        self.schema_module = pg_schema
        self._conninfo = parse(url).conninfo
        self._conn: Any = None

    def connection(self) -> Any:
        import psycopg

        if self._conn is None:
            self._conn = psycopg.connect(self._conninfo, autocommit=True)
            self._conn.execute(f'SET search_path TO "{self.schema}"')
        return self._conn

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        cursor = self.connection().execute(statement.replace("?", "%s"), params)
        return cursor.fetchall() if cursor.description is not None else []

    def fingerprint(self) -> Any:
        conn = self.connection()
        tables = [row[0] for row in conn.execute(
            "SELECT c.relname || ':' || c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s ORDER BY 1", (self.schema,))]
        columns = conn.execute("SELECT table_name, column_name, data_type FROM information_schema.columns"
                               " WHERE table_schema = %s ORDER BY 1, 2", (self.schema,)).fetchall()
        contents = {}
        for table in ("meta", "executions", "steps", "signals"):
            if f"{table}:r" in tables:
                contents[table] = conn.execute(f'SELECT * FROM "{self.schema}".{table} ORDER BY 1').fetchall()
        return tables, columns, contents

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class MemoryBackend(Backend):
    """The in-memory store: no SQL, and each ``open`` is a new, empty store (nothing outlives the object)."""

    name = "memory"
    url = "memory:"

    def open(self, **options: Any) -> Any:
        from runtime.programs.store import MemoryStore

        assert not options, f"the in-memory store takes no options ({options})"
        return MemoryStore()


BACKENDS = ["sqlite", "postgres", "memory"]
SQL_BACKENDS = ["sqlite", "postgres"]  # the stores in a database: SQL on their tables, several store objects on one


@pytest.fixture
def sqlite_backend(tmp_path: Path) -> SQLiteBackend:
    """A SQLite store's file in the test's folder (not created yet)."""
    return SQLiteBackend(tmp_path / "store.db")


@pytest.fixture
def postgres_backend(pg_url: str) -> Iterator[PostgresBackend]:
    """A PostgreSQL store's schema of its own (not created yet)."""
    made = PostgresBackend(pg_url)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def memory_backend() -> MemoryBackend:
    """The in-memory store (each ``open`` makes a new one)."""
    return MemoryBackend()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each kind of store in turn (the store itself is not opened: see ``any_store``); a test may pick
    the kinds it runs on with ``@pytest.mark.parametrize("backend", [...], indirect=True)``."""
    return request.getfixturevalue(f"{request.param}_backend")


@pytest.fixture
def any_store(backend: Backend) -> Iterator[Any]:
    """A new store of each kind in turn (SQLite, PostgreSQL, in memory), closed after the test."""
    store = backend.open()
    try:
        yield store
    finally:
        store.close()
