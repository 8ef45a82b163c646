"""Rows of the stores' tables, shared by the SQLite and PostgreSQL stores: the columns, what each
must hold, encoding values for them and reading cells back (a cell that does not fit is damage in
its row, never an exception)."""
from __future__ import annotations

import json
from dataclasses import fields as dataclass_fields
from typing import Any, Callable, Sequence

from .base import STATUSES, TERMINAL, CodeVersion, Execution, Signal, StepRecord

_NOT_COLUMNS = frozenset({"damage", "taken_from"})  # attributes a read sets, not cells
_EXECUTION_COLUMNS = tuple(f.name for f in dataclass_fields(Execution) if f.name not in _NOT_COLUMNS)
_STEP_COLUMNS = tuple(f.name for f in dataclass_fields(StepRecord) if f.name != "damage")
_SIGNAL_COLUMNS = tuple(f.name for f in dataclass_fields(Signal) if f.name != "damage")
_CODE_VERSION_COLUMNS = tuple(f.name for f in dataclass_fields(CodeVersion) if f.name != "damage")
_JSON_COLUMNS = frozenset({"args", "request", "progress", "policy", "payload", "frames", "blocked_on", "migrations",
                           "waits"})
# JSON lists (blocked_on: of distinct strings; waits: of strings, as given)
_LIST_COLUMNS = frozenset({"frames", "blocked_on", "migrations", "waits"})
_BOOL_COLUMNS = frozenset({"cancel_requested", "consumed"})
_BLOB_COLUMNS = frozenset({"snapshot", "result", "error_value"})  # left out by list()
# text that may be stored with unencodable characters escaped
_FREE_TEXT = frozenset({"error", "point", "source", "manifest"})
# Set by create/claim/renew/commit themselves, never through Change.fields.
_FIXED_EXECUTION = frozenset({"id", "version", "created_at", "updated_at", "lease_owner", "lease_until"})
_FIXED_STEP = frozenset({"execution_id", "index"})
_LIVE = tuple(s for s in STATUSES if s not in TERMINAL)
STEP_STATUSES = ("pending", "done", "failed", "abandoned")

# What each column must hold, to read a row cell by cell (see _record).
_TEXT, _INT, _REAL, _BLOB, _BOOL, _JSON, _ARGS, _OBJECT = "text", "int", "real", "blob", "bool", "json", "args", "obj"
_LIST, _KEYS = "list", "keys"  # a JSON list; a JSON list of strings
_EXECUTION_KINDS: dict[str, Any] = {
    "id": _TEXT, "function": _TEXT, "args": _ARGS, "status": STATUSES, "version": _INT, "created_at": _REAL,
    "updated_at": _REAL, "snapshot": _BLOB, "request": _OBJECT, "wake_at": _REAL, "waiting_for": _TEXT,
    "steps_started": _INT, "progress": _JSON, "result": _BLOB, "error": _TEXT, "error_value": _BLOB,
    "cancel_requested": _BOOL, "lease_owner": _TEXT, "lease_until": _REAL, "mac": _BLOB, "held_until": _REAL,
    "code_version": _TEXT, "point": _TEXT, "frames": _LIST, "blocked_on": _KEYS, "migrations": _LIST,
    "waits": _KEYS,
}
_STEP_KINDS: dict[str, Any] = {
    "execution_id": _TEXT, "index": _INT, "function": _TEXT, "call": _BLOB, "policy": _OBJECT,
    "status": STEP_STATUSES, "attempts": _INT, "result": _BLOB, "error": _TEXT, "error_value": _BLOB,
    "started_at": _REAL, "finished_at": _REAL, "mac": _BLOB,
}
_SIGNAL_KINDS: dict[str, Any] = {
    "id": _INT, "execution_id": _TEXT, "name": _TEXT, "payload": _JSON, "created_at": _REAL, "consumed": _BOOL,
}
assert set(_EXECUTION_KINDS) == set(_EXECUTION_COLUMNS) and set(_STEP_KINDS) == set(_STEP_COLUMNS)
_CODE_VERSION_KINDS: dict[str, Any] = {
    "function": _TEXT, "version": _TEXT, "source_digest": _TEXT, "first_line": _INT, "source": _TEXT,
    "manifest": _TEXT, "recorded_at": _REAL,
}
assert set(_SIGNAL_KINDS) == set(_SIGNAL_COLUMNS) and set(_CODE_VERSION_KINDS) == set(_CODE_VERSION_COLUMNS)
MAX_INT_DIGITS = 1_000_000
"""The longest integer a JSON cell may hold (longer than ``int()`` reads by default: see _long_int)."""


class _BadText(str):
    """A text cell that is not valid UTF-8, read with replacement characters (_record reports it)."""


def _columns(names: Sequence[str], leave_out: frozenset[str] = frozenset()) -> str:
    return ", ".join("NULL" if name in leave_out else f'"{name}"' for name in names)


def _is_utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _encode(column: str, value: Any) -> Any:
    if value is None:
        return None
    if column in _LIST_COLUMNS:
        value = _list_value(column, value)
    if column in _JSON_COLUMNS:
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError) as e:
            raise TypeError(f"{column} must be JSON-compatible (dict, list, str, int, float, bool, None): "
                            f"{e or type(e).__name__}") from None
        # A lone surrogate cannot be stored as UTF-8: keep it as a \u escape, which reads back the same.
        return text if _is_utf8(text) else json.dumps(value)
    if column in _BOOL_COLUMNS:
        return int(bool(value))
    if column in _FREE_TEXT and isinstance(value, str) and not _is_utf8(value):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _list_value(column: str, value: Any) -> list[Any]:
    """What a list column stores: the list (blocked_on: its distinct keys, sorted: it is a set; waits: its
    signal names, as given)."""
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, (list, tuple, set, frozenset)):
        raise TypeError(f"{column} must be a list, not {type(value).__name__}")
    if column not in ("blocked_on", "waits"):
        return list(value)
    what = "code keys" if column == "blocked_on" else "signal names"
    for key in value:
        if not isinstance(key, str):
            raise TypeError(f"{column} must hold strings ({what}), not {type(key).__name__} ({key!r})")
    return sorted(set(value)) if column == "blocked_on" else [str.__str__(key) for key in value]


class _Damaged(Exception):
    """A cell that cannot be read as its column's kind; the message completes "column 'x' ..."."""


def _what(value: Any) -> str:
    if isinstance(value, bytes):
        return f"a blob ({len(value)} bytes)"
    if isinstance(value, str):
        return f"text {value[:40]!r}" + ("..." if len(value) > 40 else "")
    return f"the number {value!r}"


def _long_int(digits: str) -> int:
    """``int(digits)`` for JSON integers longer than int() accepts by default (4,300 digits), up
    to MAX_INT_DIGITS; halving keeps it fast (0.5 s for a million digits)."""
    if len(digits) <= 4000:
        return int(digits)
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(digits.lstrip('-'))} digits is too long to read "
                         f"(the limit is {MAX_INT_DIGITS:,})")
    powers: dict[int, int] = {}

    def parse(text: str) -> int:
        if len(text) <= 4000:
            return int(text)
        low = len(text) // 2
        if low not in powers:
            powers[low] = 10 ** low
        return parse(text[:-low]) * powers[low] + parse(text[-low:])

    return -parse(digits[1:]) if digits.startswith("-") else parse(digits)


def _json_cell(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise _Damaged(f"is not valid JSON: {e}") from None
    except RecursionError:
        raise _Damaged("is not valid JSON: it is nested too deeply to read") from None
    except ValueError:  # an integer longer than int() accepts by default
        pass
    try:
        return json.loads(text, parse_int=_long_int)
    except (ValueError, RecursionError) as e:
        raise _Damaged(f"is not valid JSON: {e}") from None


def _same(value: Any) -> Any:
    return value


# The kinds of cells that are not text: the types a cell of each may hold, how to read it, what it must be.
_SCALARS: dict[str, tuple[type | tuple[type, ...], Callable[[Any], Any], str]] = {
    _INT: (int, _same, "an integer"),
    _REAL: ((int, float), float, "a number"),
    _BLOB: (bytes, _same, "a blob"),
    _BOOL: (int, bool, "0 or 1"),
}


def _cell(kind: Any, value: Any) -> Any:
    """The value of one cell, or _Damaged saying why it does not fit its column."""
    if value is None:
        return False if kind is _BOOL else None
    if isinstance(value, _BadText):
        raise _Damaged(f"is not valid UTF-8 text ({value[:40]!r})")
    scalar = _SCALARS.get(kind)
    if scalar is not None:
        types, read, wanted = scalar
        if isinstance(value, types):
            return read(value)
        raise _Damaged(f"holds {_what(value)}, not {wanted}")
    if not isinstance(value, str):
        raise _Damaged(f"holds {_what(value)}, not text")
    if kind is _TEXT:
        return value
    if isinstance(kind, tuple):  # the statuses it may hold
        if value in kind:
            return value
        raise _Damaged(f"is {value[:40]!r}, not one of {', '.join(kind)}")
    decoded = _json_cell(value)
    if kind is _ARGS and not _is_call(decoded):
        raise _Damaged(f"is not a JSON list of arguments, nor an object of args and kwargs: {value[:40]!r}")
    if kind is _OBJECT and not isinstance(decoded, dict):
        raise _Damaged(f"is not a JSON object: {value[:40]!r}")
    if kind in (_LIST, _KEYS) and not isinstance(decoded, list):
        raise _Damaged(f"is not a JSON list: {value[:40]!r}")
    if kind is _KEYS and not all(isinstance(key, str) for key in decoded):
        raise _Damaged(f"is not a JSON list of strings: {value[:40]!r}")
    return decoded


def _is_call(args: Any) -> bool:
    """True for what ``executions.args`` holds: a list of positional arguments, or
    ``{"args": [...], "kwargs": {...}}`` when there are keyword arguments."""
    if isinstance(args, list):
        return True
    return isinstance(args, dict) and args.keys() == {"args", "kwargs"} and isinstance(args["args"], list) \
        and isinstance(args["kwargs"], dict)


def _record(kinds: dict[str, Any], names: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    """A row's fields by name, plus ``damage``: the cells that could not be read (set to None, or
    False for flags) and why; the rest of the row is read all the same."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in zip(names, row):
        kind = kinds[name]
        try:
            values[name] = _cell(kind, value)
        except _Damaged as damaged:
            problems.append(f"column {name!r} {damaged}")
            values[name] = False if kind is _BOOL else None
    values["damage"] = "; ".join(problems) or None
    return values


def _execution(row: Sequence[Any]) -> Execution:
    return Execution(**_record(_EXECUTION_KINDS, _EXECUTION_COLUMNS, row))


def _step(row: Sequence[Any]) -> StepRecord:
    return StepRecord(**_record(_STEP_KINDS, _STEP_COLUMNS, row))


def _signal(row: Sequence[Any]) -> Signal:
    return Signal(**_record(_SIGNAL_KINDS, _SIGNAL_COLUMNS, row))


def _code_version(row: Sequence[Any]) -> CodeVersion:
    return CodeVersion(**_record(_CODE_VERSION_KINDS, _CODE_VERSION_COLUMNS, row))


def _check_field(kind: str, name: str, allowed: Sequence[str], fixed: frozenset[str]) -> None:
    if name not in allowed or name in fixed:
        settable = sorted(set(allowed) - fixed)
        raise ValueError(f"{kind} field {name!r} cannot be set by commit; settable: {', '.join(settable)}")
