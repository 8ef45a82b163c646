"""The SQLite store's schema, versioned: ordered migrations recorded in the ``meta`` table."""
from __future__ import annotations

import sqlite3

from . import migrations
from .base import StoreError
from .faults import point
from .migrations import Migration


_INITIAL = (
    """CREATE TABLE executions (
        id TEXT PRIMARY KEY,
        function TEXT NOT NULL,
        args TEXT NOT NULL,
        status TEXT NOT NULL,
        version INTEGER NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        snapshot BLOB,
        request TEXT,
        wake_at REAL,
        waiting_for TEXT,
        steps_started INTEGER NOT NULL DEFAULT 0,
        progress TEXT,
        result BLOB,
        error TEXT,
        error_value BLOB,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_until REAL
    )""",
    "CREATE INDEX executions_claim ON executions (status, wake_at)",
    "CREATE INDEX executions_created ON executions (created_at)",
    """CREATE TABLE steps (
        execution_id TEXT NOT NULL REFERENCES executions (id),
        "index" INTEGER NOT NULL,
        function TEXT NOT NULL,
        call BLOB NOT NULL,
        policy TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        result BLOB,
        error TEXT,
        error_value BLOB,
        started_at REAL,
        finished_at REAL,
        PRIMARY KEY (execution_id, "index")
    )""",
    """CREATE TABLE signals (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        execution_id TEXT NOT NULL REFERENCES executions (id),
        name TEXT NOT NULL,
        payload TEXT,
        created_at REAL NOT NULL,
        consumed INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX signals_pending ON signals (execution_id, name, consumed)",
)

_SIGNATURES = (
    "ALTER TABLE executions ADD COLUMN mac BLOB",
    "ALTER TABLE steps ADD COLUMN mac BLOB",
)

_HOLDS = (
    "ALTER TABLE executions ADD COLUMN held_until REAL",
    # the claim query's runnable sets, each served by its own index (see SQLiteStore.claim_many)
    "CREATE INDEX executions_pending ON executions (updated_at) WHERE status = 'pending'",
    "CREATE INDEX executions_timers ON executions (wake_at) WHERE status IN ('sleeping', 'waiting')",
    "CREATE INDEX executions_cancels ON executions (id) WHERE cancel_requested",
    "CREATE INDEX executions_held ON executions (held_until) WHERE held_until IS NOT NULL",
    "CREATE INDEX executions_leases ON executions (lease_owner) WHERE lease_owner IS NOT NULL",
    "CREATE INDEX executions_ended ON executions (updated_at) WHERE status IN ('finished', 'failed', 'cancelled')",
    "CREATE INDEX signals_unconsumed ON signals (execution_id, name) WHERE NOT consumed",
)

# What each run's code is: its version and frames (informational, for `durable ls`/`show` and plans), the
# code keys of the workers that could not run it (claims pass it over), the migrations applied to it; and
# each code version's manifest and source text, per distinct text, recorded by the first run committed on it.
_VERSIONS = (
    "ALTER TABLE executions ADD COLUMN code_version TEXT",
    "ALTER TABLE executions ADD COLUMN point TEXT",
    "ALTER TABLE executions ADD COLUMN frames TEXT",
    "ALTER TABLE executions ADD COLUMN blocked_on TEXT",
    "ALTER TABLE executions ADD COLUMN migrations TEXT",
    """CREATE TABLE code_versions (
        function TEXT NOT NULL,
        version TEXT NOT NULL,
        source_digest TEXT NOT NULL,
        first_line INTEGER,
        source TEXT,
        manifest TEXT NOT NULL,
        recorded_at REAL NOT NULL,
        PRIMARY KEY (function, version, source_digest)
    )""",
)

# A wait for several signal names (a race of waits): a WAITING run is also runnable when an unconsumed signal
# is named by one of the strings of this JSON list (see sqlite._CLAIM; served by signals_unconsumed).
_WAITS = (
    "ALTER TABLE executions ADD COLUMN waits TEXT",
)

# Columns added by migrations after the first: a store that predates them reads them as NULL (a
# read-only open does not migrate). Likewise a store without the code_versions table has none recorded.
ADDED_COLUMNS: dict[str, frozenset[str]] = {
    "executions": frozenset({"mac", "held_until", "code_version", "point", "frames", "blocked_on", "migrations",
                             "waits"}),
    "steps": frozenset({"mac"}),
}

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema: executions, steps, signals", _INITIAL),
    Migration(2, "signatures: executions.mac, steps.mac (opaque bytes the runner writes)", _SIGNATURES),
    Migration(3, "executions.held_until (runs set aside) and partial indexes for claims, timers, leases, pruning",
              _HOLDS),
    Migration(4, "code versions: executions.code_version, point, frames, blocked_on, migrations; code_versions",
              _VERSIONS),
    Migration(5, "executions.waits (a wait for any of several signal names)", _WAITS),
)
LATEST = MIGRATIONS[-1].version

_META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"


def read_version(conn: sqlite3.Connection, path: str) -> int:
    """The store's schema version: 0 for an empty database. Refuses databases that are not stores."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meta" not in tables:
        if tables - {"sqlite_sequence"}:
            raise StoreError(f"{path} is a SQLite database but not a durable-generators store "
                             f"(it has tables {sorted(tables)} and no meta table): use another path")
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return migrations.recorded_version(row, path, "the file")


def check_supported(version: int, path: str) -> None:
    """Raise SchemaTooNewError when a newer durable-generators wrote the store."""
    migrations.check_supported(version, LATEST, path)


def pending(version: int) -> list[Migration]:
    """The migrations a store at ``version`` still needs, in order."""
    return migrations.pending(MIGRATIONS, version)


def migrate(conn: sqlite3.Connection, path: str) -> int:
    """Apply pending migrations in one transaction (the caller's connection is in autocommit
    mode); returns the version the store is at. Several processes may race here: the write lock
    taken by BEGIN IMMEDIATE makes the second one see the first one's work."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = read_version(conn, path)
        check_supported(version, path)
        for migration in pending(version):
            for statement in migration.statements:
                conn.execute(statement)
        if version < LATEST:
            conn.execute(_META)
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(LATEST),))
            point("migrate.applied")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return LATEST
