"""Closure cells and functions nested in durable functions as values (kinds "cell" and "fn"): their code
is found again in this process's compiled code, never taken from the snapshot."""
from __future__ import annotations

import sys
import threading
import types
from typing import Any, Callable

from .. import registry
from ..errors import CorruptSnapshotError, IncompatibleCodeError
from ..registry import FunctionMeta
from . import allow, kinds, objects
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
    if body:
        cell.cell_contents = body[0]
    elif type(head) is int:  # chaos mode's live cell, empty when the snapshot was taken
        try:
            del cell.cell_contents
        except ValueError:
            pass


kinds.add(Kind("cell", _encode_cell, _create_cell, _fill_cell), _CellType)
kinds.FORWARD.add("cell")  # a recursive closure: the cell holds the function (or generator) that closes over it


class live_cells:
    """Chaos mode: a snapshot and restore in this same thread share the live cell objects, and chaos
    mode's own wrappers (``WRAPPER_CODES``) met in values stay the very objects the program holds."""

    def __enter__(self) -> None:
        self.saved = getattr(_local, "live", None)
        _local.live = {}

    def __exit__(self, *exc: Any) -> None:
        _local.live = self.saved


def in_live_round_trip() -> bool:
    """True inside chaos mode's round trip (``live_cells``)."""
    return getattr(_local, "live", None) is not None


WRAPPER_CODES: set[types.CodeType] = set()
"""The code of chaos mode's wrapper functions, generators and coroutines (``runtime.chaos``)."""


def live_wrapper(obj: Any) -> tuple[str, Any, Any] | None:
    """A chaos wrapper (function, generator or coroutine) met in values during a chaos round trip: kind "live", the
    same object after the restore in this process, as natively (a copy would not be chaos-driven)."""
    kind = type(obj)
    code = obj.gi_code if kind is types.GeneratorType else obj.cr_code if kind is types.CoroutineType \
        else getattr(obj, "__code__", None)
    live = getattr(_local, "live", None)
    if live is None or code not in WRAPPER_CODES:
        return None
    live[id(obj)] = obj
    return "live", id(obj), NO_BODY


def _create_live(head: Any) -> Any:
    live = getattr(_local, "live", None)
    if live is None or type(head) is not int or head not in live:
        raise CorruptSnapshotError("snapshot refers to a live object of the process that took it (chaos mode)")
    return live[head]


kinds.add(Kind("live", objects.classified_elsewhere, _create_live))


# -- kind "fn": functions made by code of a compiled module ----------------------------------------
#
# A function's code is found again in this process's code, never taken from the snapshot, by its place:
#
# * nested in a durable function: [durable ident, its fingerprint, path of (name, index) steps];
# * a nested durable function itself: [its own ident, its fingerprint, []];
# * nested in a module-level function or method of a compiled (or allowed) module: ["module:qualname"
#   of that function, b"shape:" + a hash of the nested code's names and arguments, path].
#
# The head is then [ident, fingerprint, path, qualname, closure cells, defaults, kwdefaults, attrs].

_INDEX: dict[int, tuple[FunctionMeta, list[list[Any]]]] = {}
_walked = [0]  # how many of the registry's durable code objects (kept alive there) were walked
_MODULE_INDEX: dict[str, tuple[int, dict[int, tuple[str, list[list[Any]]]]]] = {}
"""module name -> (size of its namespace when indexed, id(nested code) -> (owner "module:qualname", path))."""
_SHAPE = b"shape:"


def _walk(code: types.CodeType, path: list[list[Any]], found: Callable[[types.CodeType, list[list[Any]]], None]
          ) -> None:
    seen: dict[str, int] = {}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            index = seen.get(const.co_name, 0)
            seen[const.co_name] = index + 1
            if id(const) in registry.BY_CODE:
                continue  # a nested durable function: its own entry
            step = [*path, [const.co_name, index]]
            found(const, step)
            _walk(const, step, found)


def _owner(code: types.CodeType) -> tuple[FunctionMeta, list[list[Any]]] | None:
    found = _INDEX.get(id(code))
    if found is None and _walked[0] < len(registry._CODES):
        codes = registry._CODES
        while _walked[0] < len(codes):
            durable = codes[_walked[0]]
            _walked[0] += 1
            meta = registry.BY_CODE[id(durable)]
            _walk(durable, [], lambda c, step, meta=meta: _INDEX.setdefault(id(c), (meta, step)))
        found = _INDEX.get(id(code))
    return found


def _module_owner(module_name: Any, code: types.CodeType) -> tuple[str, list[list[Any]]] | None:
    """Where a compiled (or allowed) module's own functions and methods hold ``code``."""
    if not isinstance(module_name, str) or not allow.module_allowed(module_name):
        return None
    module = sys.modules.get(module_name)
    namespace = getattr(module, "__dict__", None)
    if type(namespace) is not dict:
        return None
    known = _MODULE_INDEX.get(module_name)
    if known is None or known[0] != len(namespace):
        index: dict[int, tuple[str, list[list[Any]]]] = {}
        for owner, ref in _module_functions(module_name, namespace):
            _walk(owner.__code__, [], lambda c, step, ref=ref: index.setdefault(id(c), (ref, step)))
        known = _MODULE_INDEX[module_name] = (len(namespace), index)
    return known[1].get(id(code))


def _module_functions(module_name: str, namespace: dict[str, Any]) -> list[tuple[Any, str]]:
    """The module-level functions and the methods of module-level classes defined in the module."""
    found = []
    for value in list(namespace.values()):
        candidates = [value]
        if isinstance(value, type) and type.__getattribute__(value, "__module__") == module_name:
            candidates = [getattr(v, "__func__", v) for v in type.__getattribute__(value, "__dict__").values()]
        for fn in candidates:
            if type(fn) is _FunctionType and fn.__module__ == module_name and id(fn.__code__) not in registry.BY_CODE:
                ref = allow.ref_of(fn)
                if ref is not None:
                    found.append((fn, ref))
    return found


def _shape(code: types.CodeType) -> bytes:
    """What must not change for a function nested in a plain function to be rebuilt from the current code."""
    import hashlib

    shape = (code.co_name, code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, code.co_flags & 0x0F,
             code.co_varnames, code.co_freevars)
    return _SHAPE + hashlib.blake2b(repr(shape).encode(), digest_size=8).digest()


def _classify_function(obj: Any) -> tuple[str, Any, Any] | None:
    if type(obj) is not _FunctionType:
        return None
    code = obj.__code__
    if code in WRAPPER_CODES:  # chaos mode's wrapper of a durable function
        live = live_wrapper(obj)
        if live is not None:
            return live
        obj = obj.__wrapped__
        code = obj.__code__
    nested = registry.BY_CODE.get(id(code))
    if nested is not None:  # a durable function itself (module-level ones travel by name)
        if "<locals>" not in nested.qualname:
            return None
        ident, fingerprint, path = nested.ident, nested.fingerprint, []
    else:
        found = _owner(code)
        if found is not None:
            ident, fingerprint, path = found[0].ident, found[0].fingerprint, found[1]
        else:
            in_module = _module_owner(obj.__module__, code)
            if in_module is None:
                return None
            ident, fingerprint, path = in_module[0], _shape(code), in_module[1]
    attrs = {k: v for k, v in obj.__dict__.items() if k != "__durable__"}
    head = [ident, fingerprint, path, obj.__qualname__, list(obj.__closure__ or ()),
            obj.__defaults__, obj.__kwdefaults__, attrs or None]
    return "fn", head, NO_BODY


def _encode_function(obj: Any) -> tuple[Any, Any]:
    found = _classify_function(obj)
    if found is None:
        raise TypeError("not a function of a compiled module's code")
    return found[1], found[2]


def _walk_path(code: types.CodeType, path: Any, where: str) -> types.CodeType:
    if type(path) is not list:
        raise CorruptSnapshotError("malformed nested function path")
    for step in path:
        if type(step) is not list or len(step) != 2 or type(step[0]) is not str or type(step[1]) is not int:
            raise CorruptSnapshotError("malformed nested function path")
        name, index = step
        matches = [c for c in code.co_consts if isinstance(c, types.CodeType) and c.co_name == name]
        if not 0 <= index < len(matches):
            raise IncompatibleCodeError(
                f"snapshot holds a function nested in {where} at {'/'.join(f'{n}#{i}' for n, i in path)}, "
                "which the current code does not have")
        code = matches[index]
    return code


def _function_code(ident: str, fingerprint: bytes, path: Any) -> tuple[types.CodeType, str, FunctionMeta | None]:
    """The code a "fn" head names, its module, and the durable function it is (for a nested durable one)."""
    if fingerprint.startswith(_SHAPE):
        owner = allow.resolve(ident, "function")
        if type(owner) is not _FunctionType or not path:
            raise CorruptSnapshotError(f"snapshot names {ident!r} as the function a nested function is made in")
        code = _walk_path(owner.__code__, path, f"function {ident!r}")
        if _shape(code) != fingerprint:
            raise IncompatibleCodeError(f"the function nested in {ident!r} at {path!r} changed since the snapshot "
                                        "was taken (its arguments or names differ)")
        return code, owner.__module__, None
    meta = registry.resolve(ident, fingerprint)
    if path == []:
        if "<locals>" not in meta.qualname:
            raise CorruptSnapshotError(f"{ident!r} is not a nested durable function")
        return registry.code_for(meta), meta.module, meta
    if not path:
        raise CorruptSnapshotError("malformed nested function path")
    return _walk_path(registry.code_for(meta), path, f"durable function {meta.ident!r}"), meta.module, None


def _create_function(head: Any) -> Any:
    if type(head) is not list or len(head) != 8:
        raise CorruptSnapshotError("malformed nested function")
    ident, fingerprint, path, qualname, closure, defaults, kwdefaults, attrs = head
    if type(ident) is not str or type(fingerprint) is not bytes or type(qualname) is not str:
        raise CorruptSnapshotError("malformed nested function")
    code, module_name, durable = _function_code(ident, fingerprint, path)
    if type(closure) is not list or len(closure) != len(code.co_freevars) \
            or not all(type(c) is _CellType for c in closure):
        raise CorruptSnapshotError("nested function closure does not match its code")
    if not (defaults is None or type(defaults) is tuple) or not (kwdefaults is None or type(kwdefaults) is dict) \
            or not (attrs is None or (type(attrs) is dict and all(type(k) is str for k in attrs))):
        raise CorruptSnapshotError("malformed nested function")
    module = sys.modules[module_name]
    fn = _FunctionType(code, module.__dict__, code.co_name, defaults, tuple(closure) or None)
    fn.__qualname__ = qualname
    if kwdefaults:
        fn.__kwdefaults__ = kwdefaults
    if attrs:
        fn.__dict__.update(attrs)
    if durable is not None:
        fn.__durable__ = durable  # what the compiler's decorator marks a durable function with
    return fn


kinds.add(Kind("fn", _encode_function, _create_function))
objects.FALLBACKS.append(_classify_function)
