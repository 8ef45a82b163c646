"""The registry of durable functions: compile-time metadata by name and by code object."""
from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import IncompatibleCodeError


@dataclass(eq=False)
class FunctionMeta:
    """What the compiler knows about one durable function (emitted as a module-level declaration)."""

    module: str
    qualname: str
    fingerprint: bytes
    states: dict[int, tuple[str, ...]]
    lines: dict[int, int]
    yield_from: tuple[int, ...]
    params: tuple[str, ...]
    function: Callable[..., Any] | None = None
    code: types.CodeType | None = None
    plans: dict[int, Any] = field(default_factory=dict)  # per-state snapshot plan (runtime.snapshot)
    placeholders: tuple[tuple[None, ...], dict[str, None]] | None = None  # restore call arguments
    variant: types.CodeType | None = None  # the cellular variant (runtime.closures), restores use it
    exception_slots: frozenset[str] | None = None  # locals that keep exceptions (runtime._support)
    globals_plan: Any = None  # the module globals its code reads, carried by reference (runtime.snapshot)
    compiler_locals: dict[str, str] = field(default_factory=dict)
    """What each local the compiler made holds, in the user's terms ("the iterator of the `for` loop at
    line 12"), for error messages; empty for code compiled before the compiler emitted it."""
    version: str | None = None
    """Hash of the canonical code, the same on every Python version (None: compiled before versions)."""
    points: dict[int, tuple[str, str, tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)
    """Per state: the point's key, its label for people, other keys that name it (a named point's
    default key), and the captured variables the code after it reads."""
    legacy_names: dict[str, str] = field(default_factory=dict)
    """The name each saved compiler local had in snapshots of format 1 and 2 (a counter per function)."""
    source: tuple[int, str] | None = None
    """(first line, text) of the function's source, for plans and for showing a stored run's line."""
    keep_version: bool = False
    """Runs resume only under this exact version (or through a migration), never upgraded."""
    ident: str = field(init=False)  # ``module:qualname``, the name snapshots use
    _by_key: dict[str, int] | None = field(default=None, init=False, repr=False)
    _declared: tuple[int, int, bool] | None = field(default=None, init=False, repr=False)  # see declared_now

    def __post_init__(self) -> None:
        self.ident = f"{self.module}:{self.qualname}"

    def state_for(self, key: str) -> int | None:
        """The state of the point with this key (or alias); 0 for ``<start>``."""
        if self._by_key is None:
            by_key: dict[str, int] = {START: 0}
            for k, (own, _, aliases, _) in self.points.items():
                by_key.setdefault(own, k)
            for k, (_, _, aliases, _) in self.points.items():
                for alias in aliases:
                    by_key.setdefault(alias, k)
            self._by_key = by_key
        return self._by_key.get(key)

    def point_of(self, state: int) -> tuple[str, str]:
        """(key, label) of the point at ``state``."""
        if state == 0:
            return START, START
        key, display, _, _ = self.points.get(state, (f"#{state}", f"state {state}", (), ()))
        return key, display

    def line_of(self, state: int) -> int | None:
        if state == 0 and self.code is not None:
            return self.code.co_firstlineno
        return self.lines.get(state)


START = "<start>"
"""The key and label of state 0: a generator that has not started."""

BY_NAME: dict[str, FunctionMeta] = {}
"""The durable function declared last under each ``module:qualname``."""
BY_VERSION: dict[tuple[str, bytes], FunctionMeta] = {}
"""Every durable function declared, by name and fingerprint: nested functions redefined under one name
(``def one(): ...`` twice in a function) are several functions a snapshot tells apart."""
BY_CODE: dict[int, FunctionMeta] = {}
"""Durable functions by ``id()`` of their code objects (hashing a code object is slow), which
``_CODES`` keeps alive so that an id is never reused."""
_CODES: list[types.CodeType] = []
MODULES: set[str] = set()
"""Modules that declared durable functions: their classes may appear in snapshots."""


DECLARED = [0]
"""How many declarations were made (a module loaded again declares its functions again)."""


def declare(meta: FunctionMeta) -> FunctionMeta:
    DECLARED[0] += 1
    BY_NAME[meta.ident] = meta
    BY_VERSION[meta.ident, meta.fingerprint] = meta
    MODULES.add(meta.module)
    return meta


def attach(meta: FunctionMeta, fn: Callable[..., Any]) -> None:
    code = fn.__code__
    meta.function = fn
    if meta.code is not code:
        _add_code(meta, code)


def _add_code(meta: FunctionMeta, code: types.CodeType) -> None:
    meta.code = code
    if id(code) not in BY_CODE:
        _CODES.append(code)
    BY_CODE[id(code)] = meta


def add_alias(meta: FunctionMeta, code: types.CodeType) -> None:
    """Another code object of the same durable function (its cellular variant)."""
    if id(code) not in BY_CODE:
        _CODES.append(code)
    BY_CODE[id(code)] = meta


def lookup(ident: str, fingerprint: bytes | None = None, *, load: bool = True) -> FunctionMeta | None:
    """The durable function a snapshot names as loaded now (the exact version when it is current), importing
    its module only if the allow-list permits it (``load``); None when the module has no such function."""
    meta = _current_version(ident, fingerprint) or BY_NAME.get(ident)
    if meta is None and load:
        from .values.allow import import_allowed  # the allow rules import this module
        import_allowed(ident.partition(":")[0], f"snapshot names durable function {ident!r}")
        meta = _current_version(ident, fingerprint) or BY_NAME.get(ident)
    if meta is not None and not declared_now(meta):
        return None  # its module was loaded again without it (a deploy removed or renamed it)
    return meta


def resolve(ident: str, fingerprint: bytes) -> FunctionMeta:
    """The durable function a snapshot names, in exactly the version that took it."""
    meta = lookup(ident, fingerprint)
    if meta is None:
        module, _, qualname = ident.partition(":")
        raise IncompatibleCodeError(
            f"snapshot names durable function {ident!r}, which no longer exists "
            f"(module {module!r} has no durable function {qualname!r})")
    if meta.fingerprint != fingerprint:
        raise IncompatibleCodeError(
            f"the code of durable function {ident!r} changed since the snapshot was taken "
            f"(fingerprint {fingerprint.hex()} in the snapshot, {meta.fingerprint.hex()} now); "
            "restore it with the code version that took it")
    return meta


def declared_now(meta: FunctionMeta) -> bool:
    """Whether the module as loaded now declares ``meta`` (a reloaded module declares its functions afresh).
    The answer changes only when a module is loaded again (a new module object, or new declarations): it is
    kept until then, so restoring does not scan the module's namespace each time."""
    module = sys.modules.get(meta.module)
    namespace = getattr(module, "__dict__", None)
    if namespace is None:
        return True
    known = meta._declared
    if known is not None and known[0] == DECLARED[0] and known[1] == id(module):
        return known[2]
    found = any(value is meta for value in namespace.values())
    meta._declared = (DECLARED[0], id(module), found)
    return found


def _current_version(ident: str, fingerprint: bytes | None) -> FunctionMeta | None:
    """The function declared as ``ident`` with ``fingerprint`` by the module as it is now: one of several
    under that name is current while the module's namespace still holds its declaration (a reloaded
    module declares its functions afresh, and the old ones are no longer current)."""
    meta = BY_VERSION.get((ident, fingerprint)) if fingerprint is not None else None
    if meta is None or meta is BY_NAME.get(ident):
        return meta
    return meta if meta.module in sys.modules and declared_now(meta) else None


def code_for(meta: FunctionMeta) -> types.CodeType:
    """The code object of a durable function, found statically if no instance was created yet."""
    if meta.code is not None:
        return meta.code
    module = sys.modules[meta.module]
    parts = meta.qualname.split(".")
    obj: Any = module
    path: list[str] = []
    for i, part in enumerate(parts):
        if part == "<locals>":
            path = parts[i + 1:]
            break
        obj = getattr(obj, part, None)
        obj = getattr(obj, "__func__", obj)
        while hasattr(obj, "__wrapped__"):
            obj = obj.__wrapped__
    code = getattr(obj, "__code__", None)
    names = [p for p in path if p != "<locals>"]
    for i, name in enumerate(names):
        code = _find_nested(code, name, meta if i == len(names) - 1 else None) if code is not None else None
    if code is None:
        raise IncompatibleCodeError(f"cannot locate the code of durable function {meta.ident!r}")
    _add_code(meta, code)
    return code


def _find_nested(code: types.CodeType, name: str, meta: FunctionMeta | None = None) -> types.CodeType | None:
    """The code of function ``name`` nested in ``code``; of several under that name (redefinitions), the
    one whose restore prologue reads ``meta``'s declaration (the module global the compiler bound it to)."""
    found = [c for c in code.co_consts if isinstance(c, types.CodeType) and c.co_name == name]
    if len(found) > 1 and meta is not None:
        namespace = getattr(sys.modules.get(meta.module), "__dict__", {})
        declared = {key for key, value in namespace.items() if value is meta}
        return next((c for c in found if declared.intersection(c.co_names)), found[0])
    return found[0] if found else None
