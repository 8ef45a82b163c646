"""What is SQLite's own (its file, WAL mode, its schema's history, a connection per thread), store URLs of
both kinds, and the fault-point syntax. The Store interface itself is tested on every kind of store by
test_store_conformance.py."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from runtime.programs.store import Change, SQLiteStore, StoreError, open_store
from runtime.programs.store import faults, pg_url, schema, sqlite_path

from test_store_conformance import step_record

ROOT = Path(__file__).resolve().parent.parent


def rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@contextmanager
def opened(url: str | None = None) -> Iterator[SQLiteStore]:
    store = open_store(url)
    assert isinstance(store, SQLiteStore)
    try:
        yield store
    finally:
        store.close()


def run_python(code: str, *args: str, env: dict[str, str] | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop("DURABLE_STORE", None)
    return subprocess.run([sys.executable, "-c", code, *args], env=full_env, capture_output=True, text=True,
                          timeout=timeout)


# -- connections

def test_each_thread_has_its_own_connection(store: SQLiteStore) -> None:
    connections: set[int] = set()
    all_connected = threading.Barrier(4)

    def connect() -> None:
        connections.add(id(store._conn()))
        all_connected.wait()  # all alive at once, so no id is reused

    threads = [threading.Thread(target=connect) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(connections) == 4 and id(store._conn()) not in connections


# -- the file: schema, migrations, bad files

def test_new_store_schema(store: SQLiteStore) -> None:
    assert rows(store.path, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(schema.LATEST),)]
    assert rows(store.path, "PRAGMA journal_mode") == [("wal",)]
    names = {name for (name,) in rows(store.path, "SELECT name FROM sqlite_master")}
    assert {"executions", "steps", "signals", "meta", "executions_claim", "signals_pending"} <= names
    assert store._conn().execute("PRAGMA synchronous").fetchone() == (2,)  # FULL


def version_1_store(path: Path) -> None:
    """A store as version 1 of the schema wrote it (its DDL as it was), with an execution and a step."""
    conn = sqlite3.connect(path)
    with conn:
        for statement in schema.MIGRATIONS[0].statements:
            conn.execute(statement)
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        conn.execute("INSERT INTO executions (id, function, args, status, version, created_at, updated_at)"
                     " VALUES ('old', 'm:main', '[1]', 'pending', 1, 1.0, 1.0)")
        conn.execute("""INSERT INTO steps (execution_id, "index", function, call, policy, status)"""
                     " VALUES ('old', 0, 'm:work', x'90', '{}', 'pending')")
    conn.close()


def test_version_1_store_migrates_to_the_latest_schema(db: Path) -> None:
    version_1_store(db)
    assert "mac" not in {r[1] for r in rows(db, "PRAGMA table_info(executions)")}
    with SQLiteStore(db) as s:
        e = s.get("old")
        assert (e.args, e.mac, e.damage) == ([1], None, None) and s.steps("old")[0].mac is None
        e = s.commit(Change("old", 1, fields={"mac": b"sig-e", "steps_started": 2},
                            new_step=step_record("old", 1, mac=b"sig-1")), now=2.0)
        s.commit(Change("old", e.version, step_update=(0, {"mac": b"sig-0"})), now=3.0)
        assert e.mac == b"sig-e" and s.get("old").mac == b"sig-e"
        assert [st.mac for st in s.steps("old")] == [b"sig-0", b"sig-1"]
        assert e.held_until is None and s.claim("w", now=4.0, lease=5.0).id == "old"
    assert rows(db, "SELECT value FROM meta") == [(str(schema.LATEST),)] and schema.LATEST == 5
    assert rows(db, "SELECT typeof(mac) FROM executions UNION ALL SELECT typeof(mac) FROM steps") == [("blob",)] * 3


def test_not_a_database(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(4096))
    before = junk.read_bytes()
    with pytest.raises(StoreError, match="is not a SQLite database") as info:
        SQLiteStore(junk)
    assert type(info.value) is StoreError and not isinstance(info.value, sqlite3.Error)
    assert junk.read_bytes() == before


def test_foreign_database_and_missing_directory(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a durable-generators store"):
        SQLiteStore(other)
    with pytest.raises(StoreError, match="cannot open store"):
        SQLiteStore(tmp_path / "missing" / "store.db")


# -- URLs

def test_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert sqlite_path("sqlite:///rel/x.db") == "rel/x.db"
    assert sqlite_path("sqlite:////abs/x.db") == "/abs/x.db"
    assert sqlite_path("SQLite:////abs/x.db") == "/abs/x.db"
    assert sqlite_path("plain/x.db") == "plain/x.db"
    assert sqlite_path("/abs/x.db") == "/abs/x.db"
    tmp_path = tmp_path.resolve()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    with opened("sqlite:///sub/a.db") as s:
        assert s.url == f"sqlite:///{tmp_path}/sub/a.db" and (tmp_path / "sub" / "a.db").exists()
    with opened(f"sqlite:///{tmp_path}/b.db") as s:
        assert Path(s.path) == tmp_path / "b.db"
    with opened("c.db") as s:
        assert Path(s.path) == tmp_path / "c.db"
    with opened("sqlite:///new/folder/d.db") as s:  # open_store creates the folder
        assert Path(s.path) == tmp_path / "new" / "folder" / "d.db"


@pytest.mark.parametrize("url, message", [
    ("mysql://host/db", "sqlite:///relative/path.db, sqlite:////absolute/path.db or a plain file path, or "
                        "postgresql://user@host:port/database"),
    ("mysql://me:hunter2@host/db", "'mysql://me:\\*\\*\\*@host/db'"),
    ("postgresql://host/db?schema=1x", "schema '1x' is not a plain name"),
    ("postgresql://host/db?schema=a-b", "schema 'a-b' is not a plain name"),
    ("postgres://host/db?schema=" + "s" * 56, "at most 55 characters"),
    ("postgresql://[::1/db", "cannot be read"),
    ("sqlite://host/x.db", "no host"),
    ("sqlite:///", "names no file"),
    ("sqlite:///:memory:", "in-memory"),
    ("memory:", "in-memory stores cannot be opened by URL"),
    ("", "empty"),
])
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        open_store(url)


def test_default_url_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp_path = tmp_path.resolve()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DURABLE_STORE", raising=False)
    with opened() as s:
        assert Path(s.path) == tmp_path / ".durable" / "durable.db"
    monkeypatch.setenv("DURABLE_STORE", "sqlite:///env.db")
    with opened() as s:
        assert Path(s.path) == tmp_path / "env.db"
    monkeypatch.setenv("DURABLE_STORE", "postgresql://postgres@127.0.0.1:1/db")  # nothing listens on port 1
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL at 127.0.0.1:1"):
        open_store()
    with opened(str(tmp_path / "explicit.db")) as s:
        assert Path(s.path) == tmp_path / "explicit.db"
    assert not (tmp_path / "env.db-wal").exists()


def test_postgres_urls() -> None:
    default = pg_url.parse("postgresql://me@db.example:6543/app")
    assert (default.schema, default.conninfo) == ("durable", "postgresql://me@db.example:6543/app")
    assert default.display == "postgresql://me@db.example:6543/app?schema=durable"
    full = pg_url.parse("postgres://me:s3cret@db.example/app?sslmode=require&schema=Tenant_7&password=again")
    assert full.schema == "Tenant_7"
    assert full.conninfo == "postgres://me:s3cret@db.example/app?sslmode=require&password=again"
    assert full.display == "postgres://me:***@db.example/app?sslmode=require&password=***&schema=Tenant_7"
    assert pg_url.masked("postgresql://me:s3cret@h/db?password=again") == "postgresql://me:***@h/db?password=***"
    assert pg_url.is_postgres("PostgreSQL://h/db") and not pg_url.is_postgres("sqlite:///x.db")


def test_an_unreachable_postgres_is_a_store_error_without_the_password() -> None:
    for options in ({}, {"readonly": True}, {"create": False}):
        with pytest.raises(StoreError) as info:
            open_store("postgresql://me:s3cret@127.0.0.1:1/db?schema=x", **options)
        message = str(info.value)
        assert message.startswith("cannot connect to PostgreSQL at 127.0.0.1:1 (store "
                                  "postgresql://me:***@127.0.0.1:1/db?schema=x): ")
        assert "PostgreSQL must be running" in message and "README.md" in message and "s3cret" not in message


WITHOUT_PSYCOPG = """
import sys
sys.modules["psycopg"] = None  # as if it were not installed
from runtime.programs.store import StoreError, open_store
try:
    open_store(sys.argv[1])
except StoreError as e:
    print(e)
"""


def test_postgres_without_psycopg_names_the_extra() -> None:
    result = run_python(WITHOUT_PSYCOPG, "postgresql://me:s3cret@127.0.0.1:1/db")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("store postgresql://me:***@127.0.0.1:1/db is a PostgreSQL store, which needs "
                                    "psycopg 3 (")
    assert "pip install 'durable-generators[postgres]'" in result.stdout and "s3cret" not in result.stdout


# -- crash points

def test_fault_spec_parsing() -> None:
    assert faults.parse("") == {}
    assert faults.parse("commit.updated:1, claim.selected:3") == {"commit.updated": 1, "claim.selected": 3}
    assert faults.parse("*:5") == {"*": 5}
    for bad in ("commit.updated", "commit.updated:0", ":1", "x:y"):
        with pytest.raises(ValueError, match="DURABLE_FAULTS"):
            faults.parse(bad)


