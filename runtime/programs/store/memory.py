"""The in-memory store: the Store interface in plain Python data, for tests within one process."""
from __future__ import annotations

import threading
import uuid
from typing import Any, Callable, Iterable, NamedTuple, Sequence, TypeVar

from .base import (PENDING, SLEEPING, STATUSES, TERMINAL, WAITING, Change, CodeVersion, ConflictError, Execution,
                   InvalidStateError, NotFoundError, Signal, StepRecord, Store, StoreError, call_record, taken_over)
from .rows import (_ARGS, _BLOB, _BLOB_COLUMNS, _BOOL, _EXECUTION_COLUMNS, _EXECUTION_KINDS, _FIXED_EXECUTION,
                   _FIXED_STEP, _FREE_TEXT, _INT, _JSON, _JSON_COLUMNS, _KEYS, _LIST, _LIST_COLUMNS, _LIVE, _OBJECT,
                   _REAL, _STEP_COLUMNS, _STEP_KINDS, _TEXT, _check_field, _is_utf8, _list_value)
from .statements import _check_version, change_steps

_R = TypeVar("_R")
_WHERE = "the in-memory store"
_EXECUTION_JSON = tuple(name for name in _EXECUTION_COLUMNS if name in _JSON_COLUMNS)
_EXECUTION_NOT_NULL = ("function", "args", "steps_started", "cancel_requested")  # settable NOT NULL columns
_STEP_NOT_NULL = ("execution_id", "index", "function", "call", "policy", "status", "attempts")
_NESTED = (dict, list)
_PLAIN = frozenset({str, float, bool, type(None)})  # JSON values that are their own copy (ints: see _json_value)
_LONG_INT_BITS = 14_000  # from about 4,200 digits: ints the JSON encoder may refuse (sys.set_int_max_str_digits)
_BINDABLE = (int, float, str, bytes, bytearray, memoryview)  # what a SQL cell can hold (None aside)


# ============================================================================ cells: values as the SQL stores keep them
#
# A value is stored as the SQLite store reads it back: JSON values as json.loads(json.dumps(value)) would
# give them (a fresh copy: tuples become lists, keys strings), numbers in REAL columns as floats, flags as
# bools, text that is not UTF-8 refused (or, in free-text columns, escaped). A value of another type than its
# column's is stored as given (SQLite would read it back as damage; nothing is decoded here, so nothing is
# damaged). Stored values are never changed in place, so rows can share them.

class _NotJSON(Exception):
    """A value json.dumps refuses; the message is the one it gives."""


def _lone_surrogate(text: str) -> StoreError:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        surrogate = text[e.start:e.end]
    else:  # pragma: no cover - only called on text that does not encode
        surrogate = ""
    return StoreError(f"{_WHERE}: {text[:60]!r} contains a lone surrogate ({surrogate!r}): store text is UTF-8, "
                      "as in SQLite and PostgreSQL, so it can be neither stored nor looked up")


def _key(value: _R) -> _R:
    """A value a lookup binds: text that is not UTF-8 is refused, as the SQL stores refuse it."""
    if type(value) is str and not value.isascii() and not _is_utf8(value):
        raise _lone_surrogate(value)
    return value


def _int64(value: int) -> int:
    if not -2 ** 63 <= value < 2 ** 63:
        raise OverflowError("Python int too large to convert to SQLite INTEGER")
    return value


def _as_given(column: str, value: Any) -> Any:
    """A value of another type than its column's: kept as it is when a SQL cell could hold it."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return _int64(value)
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, _BINDABLE):
        return value
    raise StoreError(f"{_WHERE}: cannot store {column!r}: type {type(value).__name__!r} is not supported "
                     "(a SQL store cannot bind it either)")


def _text(column: str, value: Any) -> Any:
    if type(value) is str:
        if value.isascii() or _is_utf8(value):
            return value
        if column in _FREE_TEXT:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        raise _lone_surrogate(value)
    if value is None:
        return None
    if isinstance(value, str):
        return _text(column, str.__str__(value))
    return _as_given(column, value)


def _real(column: str, value: Any) -> Any:
    if type(value) is float or value is None:
        return value
    if isinstance(value, int):
        return float(_int64(value))
    if isinstance(value, float):
        return float.__float__(value)
    return _as_given(column, value)


def _integer(column: str, value: Any) -> Any:
    if type(value) is int:
        return _int64(value)
    if value is None:
        return None
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float) and value.is_integer() and -2 ** 63 <= value < 2 ** 63:
        return int(value)  # an INTEGER column keeps an integral real as an integer
    return _as_given(column, value)


def _blob(column: str, value: Any) -> Any:
    if type(value) is bytes or value is None:
        return value
    return _as_given(column, value)


def _flag(column: str, value: Any) -> bool | None:
    return None if value is None else bool(value)


def _json(column: str, value: Any) -> Any:
    """A JSON column's value as the SQL stores read it back; TypeError (as they raise it) when it is not JSON."""
    if value is None:
        return None
    if column in _LIST_COLUMNS:
        value = _list_value(column, value)
    try:
        return _json_value(value)
    except (_NotJSON, ValueError, RecursionError) as e:
        raise TypeError(f"{column} must be JSON-compatible (dict, list, str, int, float, bool, None): "
                        f"{e or type(e).__name__}") from None


def _json_value(value: Any) -> Any:
    """``json.loads(json.dumps(value))`` without the text in between (a fresh copy); _NotJSON as json refuses."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is int:
        return value if value.bit_length() < _LONG_INT_BITS else int(int.__repr__(value))
    if kind is dict:
        return {(k if type(k) is str else _json_key(k)): (v if type(v) in _PLAIN else _json_value(v))
                for k, v in value.items()}
    if kind is list or kind is tuple:
        return [(v if type(v) in _PLAIN else _json_value(v)) for v in value]
    if isinstance(value, str):  # subclasses, tested in the order json's encoder tests them
        return str.__str__(value)
    if isinstance(value, int):
        return _json_value(int.__int__(value))
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {_json_key(k): _json_value(v) for k, v in value.items()}
    raise _NotJSON(f"Object of type {kind.__name__} is not JSON serializable")


def _json_key(key: Any) -> str:
    if type(key) is str:
        return key
    if isinstance(key, str):
        return str.__str__(key)
    if isinstance(key, float):
        if key != key:
            return "NaN"
        if key in (float("inf"), float("-inf")):
            return "Infinity" if key > 0 else "-Infinity"
        return float.__repr__(key)
    if key is True or key is False or key is None:
        return {True: "true", False: "false", None: "null"}[key]
    if isinstance(key, int):
        return int.__repr__(key)
    raise _NotJSON(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _fresh(value: Any) -> Any:
    """A copy of a stored JSON value for a caller (who may change it): its lists and dicts are new."""
    if type(value) is dict:
        return {k: (_fresh(v) if type(v) in _NESTED else v) for k, v in value.items()}
    if type(value) is list:
        return [(_fresh(v) if type(v) in _NESTED else v) for v in value]
    return value


_Cell = Callable[[str, Any], Any]
_KINDS: dict[Any, _Cell] = {_TEXT: _text, _INT: _integer, _REAL: _real, _BLOB: _blob, _BOOL: _flag, _JSON: _json,
                            _ARGS: _json, _OBJECT: _json, _LIST: _json, _KEYS: _json}
# a status is checked before it is stored (an execution's) or stored as any text (a step's)
_EXECUTION_CELLS: dict[str, _Cell] = {name: _KINDS.get(kind, _text) for name, kind in _EXECUTION_KINDS.items()}
_STEP_CELLS: dict[str, _Cell] = {name: _KINDS.get(kind, _text) for name, kind in _STEP_KINDS.items()}
_SETTABLE = frozenset(_EXECUTION_COLUMNS) - _FIXED_EXECUTION
_SETTABLE_STEP = frozenset(_STEP_COLUMNS) - _FIXED_STEP


def _copy(record: _R) -> _R:
    """A shallow copy of a dataclass record (faster than copy.copy)."""
    twin = object.__new__(type(record))
    twin.__dict__ = record.__dict__.copy()
    return twin


def _replace(record: _R, changes: dict[str, Any]) -> _R:
    twin = _copy(record)
    twin.__dict__.update(changes)
    return twin


def _execution_out(row: Execution, *, blobs: bool = True) -> Execution:
    """A stored execution as a caller gets it: a copy, with JSON values of its own."""
    values = row.__dict__.copy()
    for name in _EXECUTION_JSON:
        if type(values[name]) in _NESTED:
            values[name] = _fresh(values[name])
    if not blobs:
        values.update(dict.fromkeys(_BLOB_COLUMNS))
    out = object.__new__(Execution)
    out.__dict__ = values
    return out


def _step_out(row: StepRecord) -> StepRecord:
    return _replace(row, {"policy": _fresh(row.policy)})


def _signal_out(row: Signal) -> Signal:
    return _replace(row, {"payload": _fresh(row.payload)})


def _claim_order(row: Execution, now: float) -> float:
    """How long it has been runnable (as the SQL stores order claims): since a due timer, else its last transition."""
    wake_at = row.wake_at
    return wake_at if wake_at is not None and wake_at <= now else row.updated_at


def _conflict(row: Execution, change: Change, now: float) -> ConflictError:
    """Why a commit's compare-and-swap failed on ``row``, in the SQL stores' words."""
    where = f"execution {change.execution_id!r}"
    if row.version != change.expected_version:
        return ConflictError(f"{where} is at version {row.version}, not {change.expected_version}: "
                             f"it changed since it was read; nothing was written")
    if row.lease_owner != change.owner:
        holder = "nobody" if row.lease_owner is None else repr(row.lease_owner)
        return ConflictError(f"{where} is leased to {holder}, not {change.owner!r}; nothing was written")
    return ConflictError(f"the lease of {row.lease_owner!r} on {where} lapsed at {row.lease_until} (now {now}); "
                         "nothing was written")


def _check_not_null(fields: dict[str, Any]) -> None:
    """Refuse None for a column that must hold a value (as the SQL stores' constraints do)."""
    for name in _EXECUTION_NOT_NULL:
        if name in fields:
            _required(f"executions.{name}", fields[name])


def _required(column: str, value: _R) -> _R:
    if value is None:
        raise StoreError(f"{_WHERE}: NOT NULL constraint failed: {column}")
    return value


def _time(column: str, value: Any) -> Any:
    """A time a write records (``now``): a float, never None."""
    return value if type(value) is float else _required(column, _real(column, value))


def _step_error(change: Change, index: Any, reason: str) -> StoreError:
    return StoreError(f"commit: step {index} of execution {change.execution_id!r} cannot be inserted ({reason}); "
                      "nothing was written")


def _code_version_row(version: CodeVersion) -> CodeVersion:
    """A checked code version as stored (its text checked or escaped, its time a float)."""
    return CodeVersion(function=_text("function", version.function), version=_text("version", version.version),
                       source_digest=_text("source_digest", version.source_digest), first_line=version.first_line,
                       source=_text("source", version.source), manifest=_text("manifest", version.manifest),
                       recorded_at=float(version.recorded_at))


class _Plan(NamedTuple):
    """A commit checked against the store, not yet applied: everything it writes, its values as stored."""

    change: Change
    written: Execution            # the execution row as the commit leaves it
    fields: dict[str, Any]        # the change's fields as stored
    steps: list[StepRecord]       # the steps inserted or updated, as stored (each index once, as left)
    signal: Signal | None         # the signal to mark consumed
    versions: list[CodeVersion]   # the code versions to record (unless recorded)


class MemoryStore(Store):
    """A store in this process's memory: dicts of rows, behind one lock, with the SQLite store's semantics
    (claim order, compare-and-swap commits and their errors, leases, holds, blocked runs, code versions,
    values as they read back from SQL). Nothing is decoded, so no row is ever damaged. It cannot be shared
    with another process, so ``open_store`` does not open it.

    Rows are never changed in place: a write replaces the row (the JSON values in it are never changed
    either, and callers get copies of everything), so ``clone`` shares the rows and copies the containers."""

    url = "memory:"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._executions: dict[str, Execution] = {}            # in the order they were created
        self._steps: dict[str, dict[int, StepRecord]] = {}      # per execution, by index
        self._signals: dict[str, dict[int, Signal]] = {}        # per execution, by id (in the order sent)
        self._last_signal = 0                                   # signal ids are never reused
        self._versions: dict[str, dict[tuple[str, str], CodeVersion]] = {}  # per function, by version and digest

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._executions)} executions)"

    def clone(self) -> MemoryStore:
        """An independent copy of everything the store holds (executions with their leases, steps, signals
        and the next signal id, code versions): writes to either do not show in the other. O(rows): the rows
        are shared (no write changes one in place) and their containers copied."""
        twin = MemoryStore()
        with self._lock:
            self._check_open()
            twin._executions = self._executions.copy()
            twin._steps = {key: steps.copy() for key, steps in self._steps.items()}
            twin._signals = {key: signals.copy() for key, signals in self._signals.items()}
            twin._last_signal = self._last_signal
            twin._versions = {key: versions.copy() for key, versions in self._versions.items()}
        return twin

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{_WHERE} is closed")

    def _row(self, execution_id: str) -> Execution:
        row = self._executions.get(execution_id)
        if row is None:
            _key(execution_id)  # only a miss can be text no store holds (ids are checked when created)
            raise NotFoundError(f"no execution {execution_id!r} in {_WHERE}")
        return row

    # -- executions

    def create(self, function: str, args: Sequence[Any], *, now: float, execution_id: str | None = None,
               mac: bytes | None = None, kwargs: dict[str, Any] | None = None) -> Execution:
        if isinstance(args, (str, bytes)):
            raise TypeError(f"args must be a sequence of arguments, not {type(args).__name__}")
        stored_args = _json("args", call_record(args, kwargs))
        with self._lock:
            self._check_open()
            new_id = self._new_id(execution_id)
            at = _time("executions.created_at", now)
            row = Execution(id=new_id, function=_required("executions.function", _text("function", function)),
                            args=stored_args, status=PENDING, version=1, created_at=at, updated_at=at,
                            mac=_blob("mac", mac))
            self._executions[new_id] = row
            return _execution_out(row)

    def _new_id(self, given: str | None) -> str:
        if given is not None:
            if not isinstance(given, str) or not given:
                raise ValueError(f"execution_id must be a non-empty string, not {given!r}")
            if _key(given) in self._executions:
                raise ConflictError(f"execution {given!r} already exists in {_WHERE}")
            return given
        while True:  # as the SQL stores make them: 48 random bits
            candidate = uuid.uuid4().hex[:12]
            if candidate not in self._executions:
                return candidate

    def get(self, execution_id: str) -> Execution:
        with self._lock:
            self._check_open()
            return _execution_out(self._row(execution_id))

    def list(self, status: str | None = None, limit: int | None = None) -> list[Execution]:
        if status is not None and status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        with self._lock:
            self._check_open()
            rows = [row for row in self._executions.values() if status is None or row.status == status]
        rows.sort(key=lambda row: row.created_at)  # stable: ties in the order created
        if limit is not None:
            rows = rows[:max(0, int(limit))]
        return [_execution_out(row, blobs=False) for row in rows]

    # -- claims and leases

    def _lease(self, owner: str, *, now: float, lease: float, limit: int, execution_id: str | None,
               keys: list[str]) -> list[Execution]:
        distinct = frozenset(keys)
        with self._lock:
            self._check_open()
            if execution_id is None:
                candidates: Iterable[Execution] = self._executions.values()
            else:
                candidates = [self._row(execution_id)]
            chosen = self._most_overdue([row for row in candidates if self._runnable(row, now, distinct)], now, limit)
            if chosen:
                _key(owner)
            until = _real("lease_until", now + lease)
            claimed = []
            for row in chosen:
                leased = _replace(row, {"lease_owner": owner, "lease_until": until, "version": row.version + 1})
                self._executions[row.id] = leased
                claimed.append(taken_over(_execution_out(leased), row.lease_owner, owner))
            return claimed

    @staticmethod
    def _most_overdue(rows: list[Execution], now: float, limit: int) -> list[Execution]:
        """Up to ``limit`` of ``rows`` (in the order created), the longest runnable first."""
        if limit == 1 or len(rows) <= 1:
            return [min(rows, key=lambda row: (_claim_order(row, now), row.created_at))] if rows else []
        rows.sort(key=lambda row: (_claim_order(row, now), row.created_at))  # stable: then in the order created
        return rows[:limit]

    def _runnable(self, row: Execution, now: float, keys: frozenset[str]) -> bool:
        """See Store.claim: live, not leased, not held (unless cancelled), due, not blocked for ``keys``."""
        status = row.status
        if status not in _LIVE or (row.lease_until is not None and row.lease_until > now):
            return False
        cancel = row.cancel_requested
        if row.held_until is not None and row.held_until > now and not cancel:
            return False
        if keys and row.blocked_on and not cancel and not keys.isdisjoint(row.blocked_on):
            return False
        if status == PENDING or cancel:
            return True
        if row.wake_at is not None and row.wake_at <= now:
            return True
        return status == WAITING and self._has_signal(row.id, row.waiting_for, row.waits)

    def _has_signal(self, execution_id: str, name: str | None, names: list[str] | None = None) -> bool:
        """An unconsumed signal named ``name`` or one of ``names`` (a wait for several)."""
        return any((signal.name == name or (names is not None and signal.name in names)) and not signal.consumed
                   for signal in self._signals.get(execution_id, {}).values())

    def renew(self, owner: str, execution_ids: Sequence[str], *, until: float) -> list[str]:
        if not execution_ids:
            return []
        lost: list[str] = []
        with self._lock:
            self._check_open()
            _key(owner)
            until = _real("lease_until", until)
            for execution_id in execution_ids:
                row = self._executions.get(_key(execution_id))
                if row is not None and row.lease_owner == owner:
                    self._executions[row.id] = _replace(row, {"lease_until": until})
                else:
                    lost.append(execution_id)
        return lost

    def release(self, owner: str, execution_ids: Sequence[str] | None = None) -> int:
        with self._lock:
            self._check_open()
            _key(owner)
            if execution_ids is None:
                rows = [row for row in self._executions.values() if row.lease_owner == owner]
            else:
                found = (self._executions.get(_key(execution_id)) for execution_id in execution_ids)
                rows = list({row.id: row for row in found if row is not None and row.lease_owner == owner}.values())
            for row in rows:
                self._executions[row.id] = _replace(row, {"lease_owner": None, "lease_until": None})
            return len(rows)

    # -- commits

    def commit(self, change: Change, *, now: float) -> Execution:
        with self._lock:
            self._check_open()
            return self._apply(self._plan(change, now), now)

    def commit_many(self, changes: Sequence[Change], *, now: float) -> list[Execution | StoreError]:
        """See Store.commit_many: every change is checked first, then those that apply are applied, so an
        error that fails the whole group (a step that cannot be written, ...) leaves everything as it was."""
        if len({change.execution_id for change in changes}) != len(changes):
            raise ValueError("commit_many takes at most one change per execution")
        with self._lock:
            self._check_open()
            plans: list[_Plan | StoreError] = []
            for change in changes:
                try:
                    plans.append(self._plan(change, now))
                except (ConflictError, NotFoundError) as exc:
                    plans.append(exc)
            return [plan if isinstance(plan, StoreError) else self._apply(plan, now) for plan in plans]

    def _plan(self, change: Change, now: float) -> _Plan:
        """Check ``change`` (in the order the SQL stores meet its errors) and work out what it writes."""
        fields = self._fields(change.fields) if change.fields else {}
        inserts, updates_of_steps = self._step_values(change)
        versions = self._versions_of(change.versions) if change.versions else []
        row = self._row(change.execution_id)
        owner = change.owner
        if row.version != change.expected_version or owner is not None and not (
                row.lease_owner == owner and row.lease_until is not None and row.lease_until > now):
            raise _conflict(row, change, now)
        if None in fields.values():
            _check_not_null(fields)
        updates = fields.copy()
        if change.release:
            updates["lease_owner"] = updates["lease_until"] = None
        elif change.lease_until is not None and owner is not None:
            updates["lease_until"] = _real("lease_until", change.lease_until)
        updates["version"] = row.version + 1
        updates["updated_at"] = _time("executions.updated_at", now)
        steps: dict[Any, StepRecord] = {}  # by index: the change's steps as it leaves them, in the order written
        for new_step in inserts:
            steps[new_step.index] = self._insertable(change, new_step, steps)
        for index, values in updates_of_steps:
            steps[index] = self._updated_step(change, index, values, steps)
        signal = None if change.consume_signal is None else self._consumable(change.execution_id,
                                                                              change.consume_signal)
        return _Plan(change, _replace(row, updates), fields, list(steps.values()), signal, versions)

    @staticmethod
    def _fields(fields: dict[str, Any]) -> dict[str, Any]:
        """A change's fields as stored; ValueError for a field commit does not set or an unknown status."""
        stored: dict[str, Any] = {}
        for name, value in fields.items():
            if name not in _SETTABLE:
                _check_field("Execution", name, _EXECUTION_COLUMNS, _FIXED_EXECUTION)
            if name != "status":
                stored[name] = _EXECUTION_CELLS[name](name, value)
            elif value in STATUSES:
                stored[name] = value
            else:
                raise ValueError(f"status {value!r} is not one of {', '.join(STATUSES)}")
        return stored

    @staticmethod
    def _step_values(change: Change) -> tuple[list[StepRecord], list[tuple[Any, dict[str, Any]]]]:
        """The steps the change inserts and the (index, values) of those it updates, in order, as stored."""
        given, given_updates = change_steps(change)
        inserts = [StepRecord(**{name: _STEP_CELLS[name](name, getattr(step, name)) for name in _STEP_COLUMNS})
                   for step in given]
        updates = []
        for index, values in given_updates:
            for name in values:
                if name not in _SETTABLE_STEP:
                    _check_field("StepRecord", name, _STEP_COLUMNS, _FIXED_STEP)
            updates.append((index, {name: _STEP_CELLS[name](name, value) for name, value in values.items()}))
        return inserts, updates

    @staticmethod
    def _versions_of(versions: Sequence[CodeVersion]) -> list[CodeVersion]:
        """The change's code versions, checked: the first given of each key."""
        rows: dict[tuple[str, str, str], CodeVersion] = {}
        for version in versions:
            _check_version(version)
            rows.setdefault((version.function, version.version, version.source_digest), version)
        return [_code_version_row(version) for version in rows.values()]

    def _insertable(self, change: Change, step: StepRecord, written: dict[Any, StepRecord]) -> StepRecord:
        """``step``, checked as its INSERT would be after the change's ``written`` steps."""
        for name in _STEP_NOT_NULL:
            if getattr(step, name) is None:
                raise _step_error(change, step.index, f"NOT NULL constraint failed: steps.{name}")
        if step.index in written or step.index in self._steps.get(change.execution_id, {}):
            raise _step_error(change, step.index, "UNIQUE constraint failed: steps.execution_id, steps.index")
        return step

    def _updated_step(self, change: Change, index: Any, values: dict[str, Any],
                      written: dict[Any, StepRecord]) -> StepRecord:
        """Step ``index`` with ``values`` set, as its UPDATE would leave it after the change's ``written`` steps."""
        if not values:  # the SQL stores' UPDATE of no column is a syntax error
            raise StoreError(f"{_WHERE}: the update of step {index} of execution {change.execution_id!r} sets no "
                             "column")
        step = written.get(_key(index))
        if step is None:
            step = self._steps.get(change.execution_id, {}).get(index)
        if step is None:
            raise StoreError(f"commit: execution {change.execution_id!r} has no step {index}; nothing was written")
        for name in _STEP_NOT_NULL:
            if name in values and values[name] is None:
                raise _step_error(change, index, f"NOT NULL constraint failed: steps.{name}")
        return _replace(step, values)

    def _consumable(self, execution_id: str, signal_id: int) -> Signal:
        signal = self._signals.get(execution_id, {}).get(_key(signal_id))
        if signal is None or signal.consumed:
            raise ConflictError(f"signal {signal_id} of execution {execution_id!r} is already consumed or "
                                "does not exist; nothing was written")
        return signal

    def _apply(self, plan: _Plan, now: float) -> Execution:
        """Write a checked change; returns the execution as written."""
        change, written, fields, steps, signal, versions = plan
        execution_id = change.execution_id
        self._executions[execution_id] = written
        if steps:
            stored = self._steps.setdefault(execution_id, {})
            for step in steps:
                stored[step.index] = step
        if signal is not None:
            self._signals[execution_id][signal.id] = _replace(signal, {"consumed": True})
        for version in versions:  # the first writer wins
            self._versions.setdefault(version.function, {}).setdefault((version.version, version.source_digest),
                                                                       version)
        base = change.base
        if base is None or base.damage is not None:
            return _execution_out(written)
        # as the SQL stores build it: the writer's base and the change, with what others may change read back
        values = base.__dict__.copy()
        for name, value in fields.items():
            values[name] = _fresh(value) if type(value) in _NESTED else value
        values["version"], values["updated_at"], values["taken_from"] = written.version, now, None
        values["cancel_requested"] = written.cancel_requested
        values["lease_owner"], values["lease_until"] = written.lease_owner, written.lease_until
        returned = object.__new__(type(base))
        returned.__dict__ = values
        return returned

    # -- timers and pruning

    def next_wake(self, now: float) -> float | None:
        with self._lock:
            self._check_open()
            times = [time for row in self._executions.values() for time in self._timers(row) if time > now]
        return min(times) if times else None

    @staticmethod
    def _timers(row: Execution) -> list[float]:
        """The times at which ``row`` may become runnable: its timer, the end of its hold, of its lease."""
        times = []
        if row.wake_at is not None and row.status in (SLEEPING, WAITING):
            times.append(row.wake_at)
        if row.held_until is not None:
            times.append(row.held_until)
        if row.lease_owner is not None and row.lease_until is not None:
            times.append(row.lease_until)
        return times

    def prune(self, *, finished_before: float, batch: int = 1000) -> int:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch!r}")
        deleted = 0
        while True:  # a batch at a time, as the SQL stores do, so other threads get the lock in between
            with self._lock:
                self._check_open()
                ended = [row.id for row in self._executions.values()
                         if row.status in TERMINAL and row.updated_at < finished_before][:batch]
                for execution_id in ended:
                    del self._executions[execution_id]
                    self._steps.pop(execution_id, None)
                    self._signals.pop(execution_id, None)
            if not ended:
                return deleted
            deleted += len(ended)

    # -- code versions and steps

    def _code_versions(self, function: str, version: str | None = None, source_digest: str | None = None,
                       limit: int | None = None) -> list[CodeVersion]:
        for text in (version, source_digest):
            _key(text)
        with self._lock:
            self._check_open()
            rows = [row for (v, digest), row in self._versions.get(_key(function), {}).items()
                    if (version is None or v == version) and (source_digest is None or digest == source_digest)]
        rows.sort(key=lambda row: (row.recorded_at, row.version, row.source_digest))
        return [_copy(row) for row in rows[:limit if limit is None else int(limit)]]

    def steps(self, execution_id: str) -> list[StepRecord]:
        with self._lock:
            self._check_open()
            rows = list(self._steps.get(_key(execution_id), {}).values())
        rows.sort(key=lambda step: step.index)
        return [_step_out(step) for step in rows]

    def step(self, execution_id: str, index: int) -> StepRecord | None:
        with self._lock:
            self._check_open()
            step = self._steps.get(_key(execution_id), {}).get(index)
        return None if step is None else _step_out(step)

    # -- signals and cancellation

    def send_signal(self, execution_id: str, name: str, payload: Any, *, now: float) -> Signal:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a signal name must be a non-empty string, not {name!r}")
        stored = _json("payload", payload)
        with self._lock:
            self._check_open()
            self._check_live(execution_id, f"send signal {name!r} to")
            self._last_signal += 1
            signal = Signal(id=self._last_signal, execution_id=execution_id, name=_text("name", name),
                            payload=stored, created_at=_time("signals.created_at", now))
            self._signals.setdefault(execution_id, {})[signal.id] = signal
            return _signal_out(signal)

    def _check_live(self, execution_id: str, action: str) -> Execution:
        row = self._row(execution_id)
        if row.status in TERMINAL:
            raise InvalidStateError(f"cannot {action} execution {execution_id!r}: it is already {row.status}")
        return row

    def next_signal(self, execution_id: str, name: str, exclude: int | None = None) -> Signal | None:
        with self._lock:
            self._check_open()
            _key(name)
            found = next((signal for signal in self._signals.get(_key(execution_id), {}).values()
                          if signal.name == name and not signal.consumed and signal.id != exclude), None)
        return None if found is None else _signal_out(found)

    def signals(self, execution_id: str) -> list[Signal]:
        with self._lock:
            self._check_open()
            rows = list(self._signals.get(_key(execution_id), {}).values())
        return [_signal_out(signal) for signal in rows]

    def request_cancel(self, execution_id: str, *, now: float) -> Execution:
        with self._lock:
            self._check_open()
            row = _replace(self._check_live(execution_id, "cancel"), {"cancel_requested": True})
            self._executions[row.id] = row
            return _execution_out(row)

    def close(self) -> None:
        """Refuse every call from now on (the data stays with the object; a clone taken before is unaffected)."""
        with self._lock:
            self._closed = True
