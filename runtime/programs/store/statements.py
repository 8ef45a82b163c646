"""The SQL statements the SQLite and PostgreSQL stores share, parametrized by what differs between them."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

from .base import STATUSES, Change, CodeVersion, ConflictError, Execution, NotFoundError, StepRecord, StoreError
from .faults import point
from .rows import (_CODE_VERSION_COLUMNS, _EXECUTION_COLUMNS, _EXECUTION_KINDS, _FIXED_EXECUTION, _FIXED_STEP,
                   _STEP_COLUMNS, _cell, _check_field, _code_version, _columns, _Damaged)

# What a commit with Change.base reads back: what others may have changed since the writer read the row.
CHANGING = "version, cancel_requested, lease_owner, lease_until"
Statement = tuple[str, list[Any]]
StepStatement = tuple[int, str, list[Any]]  # (step index, SQL, parameters)


class Cursor(Protocol):
    """What the statements use of a cursor (sqlite3's or psycopg's)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...


class Connection(Protocol):
    """What the statements use of a connection (sqlite3's or psycopg's)."""

    def execute(self, sql: str, params: Sequence[Any], /) -> Cursor: ...


def reads_back(change: Change) -> bool:
    """True when a commit can answer from the writer's ``change.base`` instead of reading the row."""
    return change.base is not None and change.base.damage is None


def read_back(change: Change, now: float, row: Sequence[Any], update_params: list[Any]) -> Execution | None:
    """What a commit wrote, from ``change.base`` and the change, with the CHANGING columns as the update
    returned them; None when a field does not read back as it was given (the row must be read)."""
    version, cancel_requested, lease_owner, lease_until = row
    try:  # each field as reading its cell would give it back
        fields = {name: _cell(_EXECUTION_KINDS[name], encoded) for name, encoded in zip(change.fields, update_params)}
    except _Damaged:
        return None
    assert change.base is not None
    return dataclasses.replace(change.base, **{**fields, "version": version, "updated_at": now,  # the row's own win
                                               "cancel_requested": bool(cancel_requested), "lease_owner": lease_owner,
                                               "lease_until": lease_until, "taken_from": None})


@dataclass(frozen=True)
class Statements:
    """A store's statements. ``mark`` is its placeholder, ``prefix`` what precedes a table's name (a
    quoted schema and a dot, or nothing), ``insertion`` the column that orders rows as they were inserted,
    ``encode`` how a field's value is bound, ``store`` how messages name the store; a step its driver
    refuses raises ``integrity``, told by ``detail``, and becomes a StoreError with it as the cause when
    ``chain``."""

    mark: str
    prefix: str
    insertion: str
    encode: Callable[[str, Any], Any]
    store: str
    integrity: type[Exception]
    detail: Callable[[Exception], str]
    chain: bool

    def list_query(self, columns: str, status: str | None, limit: int | None) -> Statement:
        """Store.list: executions in the order they were created, of one status or all, ``limit`` at most."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        sql = f"SELECT {columns} FROM {self.prefix}executions"
        params: list[Any] = []
        if status is not None:
            sql += f" WHERE status = {self.mark}"
            params.append(status)
        sql += f" ORDER BY created_at, {self.insertion}"
        if limit is not None:
            sql += f" LIMIT {self.mark}"
            params.append(max(0, int(limit)))
        return sql, params

    def execution_update(self, change: Change, now: float) -> Statement:
        """The compare-and-swap UPDATE of a commit; its parameters start with the change's fields, encoded."""
        mark = self.mark
        assignments: list[str] = []
        params: list[Any] = []
        for name, value in change.fields.items():
            _check_field("Execution", name, _EXECUTION_COLUMNS, _FIXED_EXECUTION)
            if name == "status" and value not in STATUSES:
                raise ValueError(f"status {value!r} is not one of {', '.join(STATUSES)}")
            assignments.append(f'"{name}" = {mark}')
            params.append(self.encode(name, value))
        if change.release:
            assignments += ["lease_owner = NULL", "lease_until = NULL"]
        elif change.lease_until is not None and change.owner is not None:
            assignments.append(f"lease_until = {mark}")  # a transition is news from the lease holder
            params.append(change.lease_until)
        assignments += ["version = version + 1", f"updated_at = {mark}"]
        params.append(now)
        sql = f"UPDATE {self.prefix}executions SET {', '.join(assignments)} WHERE id = {mark} AND version = {mark}"
        params += [change.execution_id, change.expected_version]
        if change.owner is not None:
            sql += f" AND lease_owner = {mark} AND lease_until > {mark}"
            params += [change.owner, now]
        return sql, params

    def versions_insert(self, change: Change) -> Statement | None:
        """The INSERT of the change's code versions (None when it has none): one row per key, the first
        given of each; a key already recorded is left as it is (the first writer wins)."""
        rows: dict[tuple[str, str, str], CodeVersion] = {}
        for version in change.versions:
            _check_version(version)
            rows.setdefault((version.function, version.version, version.source_digest), version)
        if not rows:
            return None
        # in key order: two transactions recording the same versions wait for each other in the same order
        ordered = [rows[key] for key in sorted(rows)]
        marks = "(" + ", ".join(self.mark for _ in _CODE_VERSION_COLUMNS) + ")"
        params = [self.encode(name, getattr(version, name)) for version in ordered for name in _CODE_VERSION_COLUMNS]
        return (f"INSERT INTO {self.prefix}code_versions ({_columns(_CODE_VERSION_COLUMNS)})"
                f" VALUES {', '.join(marks for _ in ordered)}"
                " ON CONFLICT (function, version, source_digest) DO NOTHING", params)

    def code_versions(self, rows: Callable[[str, list[Any]], list[tuple[Any, ...]]], function: str,
                      version: str | None = None, source_digest: str | None = None, limit: int | None = None
                      ) -> list[CodeVersion]:
        """Store.code_version (with ``version``, ``limit`` 1) and Store.code_versions, read with ``rows``."""
        sql, params = self.code_versions_query(_columns(_CODE_VERSION_COLUMNS), function, version, source_digest)
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_code_version(row) for row in rows(sql, params)]

    def code_versions_query(self, columns: str, function: str, version: str | None = None,
                            source_digest: str | None = None) -> Statement:
        """The rows of ``function`` in ``code_versions``, in the order they were recorded (ties by version and
        digest)."""
        sql = f"SELECT {columns} FROM {self.prefix}code_versions WHERE function = {self.mark}"
        params: list[Any] = [function]
        if version is not None:
            sql += f" AND version = {self.mark}"
            params.append(version)
        if source_digest is not None:
            sql += f" AND source_digest = {self.mark}"
            params.append(source_digest)
        return sql + " ORDER BY recorded_at, version, source_digest", params

    def step_statements(self, change: Change) -> list[StepStatement]:
        """The steps the change inserts (``new_step``, then ``new_steps``), then those it updates
        (``step_update``, then ``step_updates``), in the order they are written."""
        inserts, updates = change_steps(change)
        statements: list[StepStatement] = [(step.index, *self.step_insert(step)) for step in inserts]
        for index, values in updates:
            statements.append((index, *self.step_update(change.execution_id, index, values)))
        return statements

    def step_insert(self, step: StepRecord) -> Statement:
        params = [self.encode(name, getattr(step, name)) for name in _STEP_COLUMNS]
        marks = ", ".join(self.mark for _ in _STEP_COLUMNS)
        return f"INSERT INTO {self.prefix}steps ({_columns(_STEP_COLUMNS)}) VALUES ({marks})", params

    def step_update(self, execution_id: str, index: int, values: dict[str, Any]) -> Statement:
        mark = self.mark
        for name in values:
            _check_field("StepRecord", name, _STEP_COLUMNS, _FIXED_STEP)
        assignments = ", ".join(f'"{name}" = {mark}' for name in values)
        params = [self.encode(name, value) for name, value in values.items()]
        return (f'UPDATE {self.prefix}steps SET {assignments} WHERE execution_id = {mark} AND "index" = {mark}',
                params + [execution_id, index])

    def finish(self, conn: Connection, change: Change, steps: Sequence[StepStatement],
               versions: Statement | None) -> None:
        """The rest of a commit whose UPDATE applied: its steps, its signal, then its code versions (last,
        so a change that fails records none)."""
        point("commit.updated")
        if steps:
            for step in steps:
                self.write_step(conn, change.execution_id, *step)
            point("commit.step_written")
        if change.consume_signal is not None:
            self.consume(conn, change.execution_id, change.consume_signal)
            point("commit.signal_consumed")
        if versions is not None:
            conn.execute(*versions)

    def write_step(self, conn: Connection, execution_id: str, index: int, sql: str, params: list[Any]) -> None:
        try:
            count = conn.execute(sql, params).rowcount
        except self.integrity as e:
            raise StoreError(f"commit: step {index} of execution {execution_id!r} cannot be inserted "
                             f"({self.detail(e)}); nothing was written") from (e if self.chain else None)
        if count != 1:
            raise StoreError(f"commit: execution {execution_id!r} has no step {index}; nothing was written")

    def consume(self, conn: Connection, execution_id: str, signal_id: int) -> None:
        cursor = conn.execute(f"UPDATE {self.prefix}signals SET consumed = true"
                              f" WHERE id = {self.mark} AND execution_id = {self.mark} AND NOT consumed",
                              (signal_id, execution_id))
        if cursor.rowcount != 1:
            raise ConflictError(f"signal {signal_id} of execution {execution_id!r} is already consumed or "
                                f"does not exist; nothing was written")

    def conflict_reason(self, conn: Connection, change: Change, now: float) -> str:
        """Why a commit's UPDATE applied to no row; NotFoundError when there is no such execution."""
        row = conn.execute(f"SELECT version, lease_owner, lease_until FROM {self.prefix}executions"
                           f" WHERE id = {self.mark}", (change.execution_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no execution {change.execution_id!r} in store {self.store}")
        version, owner, until = row
        where = f"execution {change.execution_id!r}"
        if version != change.expected_version:
            return (f"{where} is at version {version}, not {change.expected_version}: "
                    f"it changed since it was read; nothing was written")
        if owner != change.owner:
            holder = "nobody" if owner is None else repr(owner)
            return f"{where} is leased to {holder}, not {change.owner!r}; nothing was written"
        return f"the lease of {owner!r} on {where} lapsed at {until} (now {now}); nothing was written"


def change_steps(change: Change) -> tuple[list[StepRecord], list[tuple[int, dict[str, Any]]]]:
    """The steps ``change`` inserts (``new_step``, then ``new_steps``) and the (index, values) of those it
    updates (``step_update``, then ``step_updates``), in order. ValueError for a step of another execution,
    or for ``new_step`` with ``step_update`` alone (as before ``new_steps`` and ``step_updates``: a change that
    inserts and updates says so with one of those)."""
    if change.new_step is not None and change.step_update is not None and not (change.new_steps or
                                                                                 change.step_updates):
        raise ValueError("a Change may insert a step or update one, not both (to do both, give the inserts in "
                         "new_steps or the updates in step_updates)")
    inserts = ([] if change.new_step is None else [change.new_step]) + list(change.new_steps)
    for position, step in enumerate(inserts):
        if step.execution_id != change.execution_id:
            given = "new_step" if position == 0 and change.new_step is not None else f"new_steps step {step.index}"
            raise ValueError(f"{given} belongs to execution {step.execution_id!r}, not {change.execution_id!r}")
    return inserts, ([] if change.step_update is None else [change.step_update]) + list(change.step_updates)


def _check_version(version: CodeVersion) -> None:
    """Refuse a code version whose fields do not fit their columns (TypeError), before anything is written."""
    if not isinstance(version, CodeVersion):
        raise TypeError(f"Change.versions must hold CodeVersion records, not {type(version).__name__}")
    for name in ("function", "version", "source_digest", "manifest"):
        if not isinstance(getattr(version, name), str):
            raise TypeError(f"CodeVersion.{name} must be a string, not {type(getattr(version, name)).__name__}")
    if version.source is not None and not isinstance(version.source, str):
        raise TypeError(f"CodeVersion.source must be a string or None, not {type(version.source).__name__}")
    line = version.first_line
    if line is not None and (isinstance(line, bool) or not isinstance(line, int) or not -2 ** 63 <= line < 2 ** 63):
        raise TypeError(f"CodeVersion.first_line must be a (64-bit) integer or None, not {line!r}")
    if isinstance(version.recorded_at, bool) or not isinstance(version.recorded_at, (int, float)):
        raise TypeError(f"CodeVersion.recorded_at must be a number, not {version.recorded_at!r}")
