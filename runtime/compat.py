"""Whether a frame saved by one version of a durable function resumes under the code loaded now, and how.

A frame names its point by key (``registry.FunctionMeta.points``). It resumes under other code when that
code has a point with the same key (or alias) whose contract the frame meets: every local the new code
reads after the point is in the frame (bound, or tracked and unbound, as it stays), every compiler local
the new code keeps there is in the frame (they are named by structure: the same statement makes the same
name), and nothing the frame still owes is dropped (a ``with`` manager whose ``__exit__`` must run, an
exception or return value pending). Locals the new code no longer reads are dropped. The judge is pure:
restore and ``durable plan`` ask it the same question, and it never runs user code.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from .errors import IncompatibleCodeError
from .registry import START, FunctionMeta

# Compiler locals whose value is an obligation: dropping one would skip a clean-up or lose an exception
# or a return value. ``yf`` is the delegate of a ``yield from`` and ``aw`` what an ``await`` waits for: a
# frame that delegates needs a point that delegates too.
_OBLIGATIONS = {"wm": "the context manager of a `with` around the point, whose __exit__ must still run",
                "e": "an exception being handled", "g": "an exception group being handled",
                "x": "an exception an except* clause raised", "fx": "an exception pending in a `finally`",
                "fv": "a return value pending in a `finally`", "fk": "how a `try` with a `finally` was left",
                "yf": "the generator a `yield from` delegates to", "aw": "the awaitable an `await` is waiting for"}
_DELEGATIONS = ("yf", "aw")
_KIND = re.compile(r"_dg_([a-z]+)\d+_[0-9a-f]+")

REASONS = ("no-function", "no-point", "missing-local", "missing-slot", "obligation", "kind", "pinned", "legacy")


class PointMismatchError(IncompatibleCodeError):
    """A frame of a suspended run cannot resume under the code loaded now: the message names the function,
    the point (label and the line it had) and what is missing; ``reason`` is one of ``REASONS``."""

    def __init__(self, message: str, *, function: str, point: str | None, line: int | None, reason: str,
                 missing: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.function = function
        self.point = point
        self.line = line
        self.reason = reason
        self.missing = missing


@dataclass
class FrameHeader:
    """What a frame record says about where it was saved (no values decoded)."""

    ident: str
    fingerprint: bytes
    version: str | None   # None: written before versions (format 1 and 2) or by code compiled before them
    key: str | None
    display: str | None   # the point's label for people
    state: int
    line: int | None
    names: list[str]      # the bound locals it carries
    tracked: list[str]    # the locals the old code kept at the point (bound or not)
    cells: list[str]      # the captured variables it carries as cells

    @property
    def saved_version(self) -> str:
        """The version that saved it, as people and migrations name it (the legacy fingerprint before
        versions existed)."""
        return self.version or self.fingerprint.hex()


def same_code(version: str | None, fingerprint: bytes, meta: FunctionMeta) -> bool:
    """Whether a frame saved under ``version`` (or ``fingerprint``, before versions) was saved by ``meta``'s code."""
    return (version is not None and version == meta.version) or fingerprint == meta.fingerprint


@dataclass
class Adaptation:
    """How to resume a frame under the current code: at ``state``, without the locals in ``drop``,
    with ``to_cells`` moved from values into new cells and ``from_cells`` from cells into values."""

    state: int
    exact: bool
    drop: set[str] = field(default_factory=set)
    to_cells: set[str] = field(default_factory=set)
    from_cells: set[str] = field(default_factory=set)


def judge(header: FrameHeader, meta: FunctionMeta | None) -> Adaptation:
    """How ``header``'s frame resumes under ``meta`` (the function as loaded now), or PointMismatchError."""
    if meta is not None and same_code(header.version, header.fingerprint, meta):
        if header.state and header.state not in meta.states:
            raise IncompatibleCodeError(f"snapshot of {header.ident!r} names state {header.state}, "
                                        "which the current code does not have")
        return Adaptation(header.state, exact=True)
    where = f"{header.ident} at point {_label(header)}" + (f" (line {header.line} of the code that saved it)"
                                                             if header.line else "")
    refuse = _refuser(header, where)
    if meta is None:
        raise refuse("no-function", f"there is no durable function {header.ident!r} any more")
    if meta.keep_version:
        raise refuse("pinned", f"{header.ident} keeps its runs on the version they started with "
                               f"({header.saved_version}); resume it with that version's code "
                               "or move it with a migration")
    if header.key is None or meta.version is None:
        raise refuse("legacy", "the snapshot was written before points had labels, and the code changed since; "
                               "resume it with the code (and Python version) that wrote it, or migrate it "
                               f"(from_version={header.fingerprint.hex()!r})")
    state = meta.state_for(header.key)
    if state is None:
        raise refuse("no-point", "the new code has no point with this label (the statement was rewritten, moved "
                                 "under another header or removed); keep the old code running for it, or name the "
                                 "point with runtime.point() in both versions, or migrate it")
    return _contract(header, meta, state, refuse)


def judge_migrated(ident: str, point: str, names: list[str], cells: list[str], meta: FunctionMeta,
                   migration: str) -> Adaptation:
    """How a frame a migration produced (``runtime.migrations``: resume at ``point``, with the locals and
    compiler locals ``names`` and the captured variables ``cells``) resumes under ``meta``, or
    PointMismatchError. The version check is the migration's: it named the frame's version or point."""
    header = FrameHeader(ident, b"", "migrated", point, point, 0, None, names, names, cells)
    refuse = _refuser(header, f"{ident} at point `{point}`, where migration {migration} moved it,")
    state = point_state(meta, point)
    if state is None:
        raise refuse("no-point", "the code loaded now has no point with this name, label or key")
    return _contract(header, meta, state, refuse)


def point_state(meta: FunctionMeta, point: str) -> int | None:
    """The state of the point that ``point`` names in ``meta``: its explicit name (with or without "@"),
    its key (or an alias) or its label; None when none does, or when the label names several points."""
    for key in (point, "@" + point):
        state = meta.state_for(key)
        if state is not None:
            return state
    states = [state for state, (_, display, _, _) in meta.points.items() if display == point]
    return states[0] if len(states) == 1 else None


Refuse = Callable[..., PointMismatchError]


def _refuser(header: FrameHeader, where: str) -> Refuse:
    def refuse(reason: str, why: str, missing: tuple[str, ...] = ()) -> PointMismatchError:
        return PointMismatchError(f"cannot resume {where} under the code loaded now: {why}",
                                  function=header.ident, point=header.key, line=header.line, reason=reason,
                                  missing=missing)

    return refuse


def _contract(header: FrameHeader, meta: FunctionMeta, state: int, refuse: Refuse) -> Adaptation:
    have = set(header.names)
    tracked = set(header.tracked)
    cells = set(header.cells)
    wanted = set(meta.states.get(state, ())) if state else set(meta.params)
    wanted_cells = set(meta.points[state][3]) if state in meta.points else set()
    captured = _captured(meta)
    adapt = Adaptation(state, exact=False)
    for name in sorted(wanted | wanted_cells):
        if name in have or (name in tracked and name not in cells):
            if name in captured and name in have:
                adapt.to_cells.add(name)
            continue
        if name in cells:
            if name not in captured:
                adapt.from_cells.add(name)
            continue
        internal = _KIND.fullmatch(name)
        if internal:
            what = _OBLIGATIONS.get(internal.group(1)) or meta.compiler_locals.get(name) or "a value the compiler keeps"
            raise refuse("missing-slot", f"the new code keeps {meta.compiler_locals.get(name) or what} at this point, "
                                         "and the snapshot has none (a statement around the point changed)", (name,))
        if state == 0 and name in _defaults(meta):
            continue  # a new parameter with a default: the call gets its default
        raise refuse("missing-local", f"local {name!r} is needed at this point in the new code and the snapshot "
                                      "has no value for it", (name,))
    for name in sorted(have - wanted - wanted_cells):
        internal = _KIND.fullmatch(name)
        if internal and internal.group(1) in _OBLIGATIONS:
            reason = "kind" if internal.group(1) in _DELEGATIONS else "obligation"
            raise refuse(reason, f"the snapshot holds {_OBLIGATIONS[internal.group(1)]}, which the new code "
                                 "at this point does not take (dropping it would skip a clean-up or lose a "
                                 "pending exception or value)", (name,))
        adapt.drop.add(name)
    return adapt


def _captured(meta: FunctionMeta) -> frozenset[str]:
    """The function's variables that nested scopes capture (they live in cells)."""
    code = meta.variant if meta.variant is not None else meta.code
    if code is None:
        return frozenset()
    return frozenset(code.co_cellvars) | frozenset(n for n in code.co_freevars if n != "__class__")


def _defaults(meta: FunctionMeta) -> set[str]:
    """The parameters a call may leave out: those with defaults, and ``*args``/``**kwargs``."""
    fn = meta.function
    if fn is None:
        return set()
    code = fn.__code__
    positional = code.co_varnames[:code.co_argcount]
    optional = set(positional[len(positional) - len(fn.__defaults__ or ()):]) | set(fn.__kwdefaults__ or {})
    index = code.co_argcount + code.co_kwonlyargcount
    stars = code.co_varnames[index:index + bool(code.co_flags & 0x04) + bool(code.co_flags & 0x08)]
    return optional | set(stars)


def _label(header: FrameHeader) -> str:
    if header.key is None:
        return f"state {header.state}"
    return START if header.key == START else f"`{header.display or header.key}`"
