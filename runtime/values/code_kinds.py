"""Closure cells and functions nested in durable functions as values (kinds "cell" and "fn"): their code
is found again in this process's compiled code, never taken from the snapshot."""
from __future__ import annotations

import sys
import threading
import types
from typing import Any

from .. import registry
from ..errors import CorruptSnapshotError, IncompatibleCodeError
from ..registry import FunctionMeta
from . import kinds, objects
from .kinds import NO_BODY, Kind

_CellType = types.CellType
_FunctionType = types.FunctionType
_local = threading.local()


# -- kind "cell" -------------------------------------------------------------------------------

def _encode_cell(cell: Any) -> tuple[Any, Any]:
    live = getattr(_local, "live", None)
    head = None
    if live is not None:  # chaos mode: the restore in this process takes the very same cell back
        live[id(cell)] = cell
        head = id(cell)
    try:
        return head, [cell.cell_contents]
    except ValueError:  # empty
        return head, []


def _create_cell(head: Any) -> Any:
    live = getattr(_local, "live", None)
    if live is not None and head in live:
        return live[head]
    return _CellType()


def _fill_cell(cell: Any, head: Any, body: Any) -> None:
    if type(body) is not list or len(body) > 1:
        raise CorruptSnapshotError("malformed closure cell")
    live = getattr(_local, "live", None)
    if live is not None and head in live:
        return
    if body:
        cell.cell_contents = body[0]


kinds.add(Kind("cell", _encode_cell, _create_cell, _fill_cell), _CellType)
kinds.FORWARD.add("cell")  # a recursive closure: the cell holds the function (or generator) that closes over it


class live_cells:
    """Chaos mode: a snapshot and restore in this same thread share the live cell objects."""

    def __enter__(self) -> None:
        self.saved = getattr(_local, "live", None)
        _local.live = {}

    def __exit__(self, *exc: Any) -> None:
        _local.live = self.saved


# -- kind "fn": functions whose code is nested in a durable function ------------------------------

_INDEX: dict[int, tuple[FunctionMeta, list[list[Any]]]] = {}
_walked = [0]  # how many of the registry's durable code objects (kept alive there) were walked


def _walk(meta: FunctionMeta, code: types.CodeType, path: list[list[Any]]) -> None:
    seen: dict[str, int] = {}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            index = seen.get(const.co_name, 0)
            seen[const.co_name] = index + 1
            if id(const) in registry.BY_CODE:
                continue  # a nested durable function: its own entry
            step = [*path, [const.co_name, index]]
            _INDEX.setdefault(id(const), (meta, step))
            _walk(meta, const, step)


def _owner(code: types.CodeType) -> tuple[FunctionMeta, list[list[Any]]] | None:
    found = _INDEX.get(id(code))
    if found is None and _walked[0] < len(registry._CODES):
        codes = registry._CODES
        while _walked[0] < len(codes):
            durable = codes[_walked[0]]
            _walked[0] += 1
            _walk(registry.BY_CODE[id(durable)], durable, [])
        found = _INDEX.get(id(code))
    return found


def _classify_function(obj: Any) -> tuple[str, Any, Any] | None:
    if type(obj) is not _FunctionType:
        return None
    found = _owner(obj.__code__)
    if found is None:
        return None
    meta, path = found
    attrs = obj.__dict__
    head = [meta.ident, meta.fingerprint, path, obj.__qualname__, list(obj.__closure__ or ()),
            obj.__defaults__, obj.__kwdefaults__, dict(attrs) if attrs else None]
    return "fn", head, NO_BODY


def _encode_function(obj: Any) -> tuple[Any, Any]:
    found = _classify_function(obj)
    if found is None:
        raise TypeError("not a function nested in a durable function")
    return found[1], found[2]


def _nested_code(meta: FunctionMeta, path: Any) -> types.CodeType:
    code = registry.code_for(meta)
    if type(path) is not list or not path:
        raise CorruptSnapshotError("malformed nested function path")
    for step in path:
        if type(step) is not list or len(step) != 2 or type(step[0]) is not str or type(step[1]) is not int:
            raise CorruptSnapshotError("malformed nested function path")
        name, index = step
        matches = [c for c in code.co_consts if isinstance(c, types.CodeType) and c.co_name == name]
        if not 0 <= index < len(matches):
            raise IncompatibleCodeError(
                f"snapshot holds a function nested in durable function {meta.ident!r} at "
                f"{'/'.join(f'{n}#{i}' for n, i in path)}, which the current code does not have")
        code = matches[index]
    return code


def _create_function(head: Any) -> Any:
    if type(head) is not list or len(head) != 8:
        raise CorruptSnapshotError("malformed nested function")
    ident, fingerprint, path, qualname, closure, defaults, kwdefaults, attrs = head
    if type(ident) is not str or type(fingerprint) is not bytes or type(qualname) is not str:
        raise CorruptSnapshotError("malformed nested function")
    meta = registry.resolve(ident, fingerprint)
    code = _nested_code(meta, path)
    if type(closure) is not list or len(closure) != len(code.co_freevars) \
            or not all(type(c) is _CellType for c in closure):
        raise CorruptSnapshotError("nested function closure does not match its code")
    if not (defaults is None or type(defaults) is tuple) or not (kwdefaults is None or type(kwdefaults) is dict) \
            or not (attrs is None or type(attrs) is dict):
        raise CorruptSnapshotError("malformed nested function")
    module = sys.modules[meta.module]
    fn = _FunctionType(code, module.__dict__, code.co_name, defaults, tuple(closure) or None)
    fn.__qualname__ = qualname
    if kwdefaults:
        fn.__kwdefaults__ = kwdefaults
    if attrs:
        fn.__dict__.update(attrs)
    return fn


kinds.add(Kind("fn", _encode_function, _create_function))
objects.FALLBACKS.append(_classify_function)
