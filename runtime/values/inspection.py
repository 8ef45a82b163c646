"""``inspect_snapshot``: what a snapshot holds, rendered readably, without importing or running user code."""
from __future__ import annotations

import re
import reprlib
import types
from dataclasses import dataclass, field
from typing import Any

from . import settings
from .decoder import Decoder
from .envelope import corrupt, frame_fields, open_snapshot
from .kinds import INSTANCE

# What the compiler's own locals are (``_dg_<kind><n>``), in plain words, for readers of a snapshot
# (the snapshot does not say which construct: the compiled module's declaration does, see
# ``FunctionMeta.compiler_locals``, but the inspector imports nothing).
_INTERNAL = {
    "it": "the iterator of a `for` loop",
    "v": "the current item of a `for` loop, before it is assigned",
    "we": "whether a `while` loop ended by its condition (for its `else`)",
    "yf": "the iterator a `yield from` delegates to",
    "aw": "the awaitable an `await` is waiting for",
    "y": "the value sent into an earlier yield of the suspended statement",
    "t": "the value of an expression in the suspended statement, evaluated before its yield",
    "b": "the value of an `and`/`or` expression in the suspended statement, as far as it is evaluated",
    "c": "the value of a conditional expression or a chained comparison in the suspended statement",
    "f": "a formatted value of an f-string in the suspended statement",
    "u": "a value unpacked for an assignment in the suspended statement",
    "wm": "the context manager of a `with` statement",
    "wx": "the `__exit__` method of the context manager of a `with` statement",
    "wv": "the value `__enter__` returned for a `with` statement",
    "wok": "whether the body of a `with` statement is running without an exception",
    "fk": "how a `try` statement was left, for its `finally`",
    "fx": "the exception a `finally` block is to raise again",
    "fv": "the value a `finally` block is to return",
    "g": "the exception group that entered `except*` clauses",
    "x": "the exception an `except*` handler raised",
    "e": "the exception an `except` clause caught",
    "mc": "the case a `match` statement chose",
}
_INTERNAL_NAME = re.compile(r"_dg_([a-z]+)\d*(?:_[0-9a-f]+)?")
_DELEGATIONS = (_INTERNAL["yf"], _INTERNAL["aw"])


def internal_note(name: str) -> str | None:
    """What a local the compiler made (``_dg_...``) is, in plain words; None for the user's own names."""
    if not name.startswith("_dg_"):
        return None
    match = _INTERNAL_NAME.fullmatch(name)
    return _INTERNAL.get(match.group(1), _OTHER) if match else _OTHER


_OTHER = "a value the compiler keeps for the suspended statement"
_RANGE_ITERATOR = type(iter(range(0)))


@dataclass
class FrameInfo:
    """One suspended frame of a snapshot."""

    function: str
    fingerprint: str
    state: int
    line: int | None
    locals: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # what compiler-made locals are
    version: str | None = None  # the code's version and the point's key and label (format 3)
    point_key: str | None = None
    point: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"function": self.function, "fingerprint": self.fingerprint, "state": self.state, "line": self.line,
                "version": self.version, "point_key": self.point_key, "point": self.point,
                "locals": dict(self.locals), "notes": dict(self.notes)}


@dataclass
class SnapshotInfo:
    """What ``inspect_snapshot`` found: format, size, signature status and the frames, outermost first."""

    format: int
    size: int
    signature: str
    frames: list[FrameInfo]

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "size": self.size, "signature": self.signature,
                "frames": [f.to_dict() for f in self.frames]}

    def __str__(self) -> str:
        lines = [f"durable snapshot, format {self.format}, {self.size} bytes, signature: {self.signature}"]
        for depth, frame in enumerate(self.frames):
            where = f"line {frame.line}" if frame.line is not None else "not started"
            lines.append(f"{'  ' * depth}frame {depth}: {frame.function}, state {frame.state}, suspended at {where}")
            for name, text in frame.locals.items():
                note = f"  ({frame.notes[name]})" if name in frame.notes else ""
                lines.append(f"{'  ' * depth}  {name} = {text}{note}")
        return "\n".join(lines)


def inspect_snapshot(data: bytes) -> SnapshotInfo:
    """Describe a snapshot without importing any module it names or calling anything it holds.

    Raises the same SnapshotError subclasses as ``restore`` for data that is not a snapshot (and
    SignatureError when a signing key is configured and the signature does not match).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"inspect_snapshot() needs bytes, not {type(data).__name__!r}")
    raw = bytes(data)
    envelope, status = open_snapshot(raw)  # the same checks as restore: size, signature, header, format
    decoder = Decoder(_Shown(), max_depth=settings.current.max_depth, input_size=len(raw))
    records = envelope[2:]
    frames = [_frame(decoder, record, envelope[1]) for record in records]
    for depth, frame in enumerate(frames[:-1]):  # the delegation local stands for the next frame
        for name, note in frame.notes.items():
            if note in _DELEGATIONS and frame.locals[name] == "None":
                frame.locals[name] = f"<frame {depth + 1}>"
    return SnapshotInfo(envelope[1], len(raw), status, frames)


def _frame(decoder: Decoder, record: Any, format: int) -> FrameInfo:
    ident, fingerprint, state, line, joined, values, frees, point, _ = frame_fields(record)
    if format >= 2:
        decoder.provide(decoder.reserve(), Placeholder("gen", record))  # the frame's own generator
    names = joined.split(",") if joined else []
    if len(names) != len(values):
        raise corrupt("frame names do not match its values")
    info = FrameInfo(ident, fingerprint.hex(), state, line)
    if point is not None:
        info.version, info.point_key, info.point = point
    decoded = decoder.decode_all(values)
    for name, value in zip(names, decoded):
        info.locals[str(name)] = render(value)
        note = internal_note(str(name))
        if note is not None:
            info.notes[str(name)] = note
    if frees:
        for name, value in zip(frees[0], decoder.decode_all(frees[1])):
            info.locals[str(name)] = render(value)
            info.notes[str(name)] = "closure cell"
    return info


class Placeholder:
    """A value a snapshot names but inspection does not rebuild (user objects, functions, frames)."""

    def __init__(self, kind: str, head: Any) -> None:
        self.kind = kind
        self.head = head
        self.body: Any = None


class _Shown:
    """Decode hooks that rebuild nothing from user code: every named thing becomes a placeholder."""

    def __init__(self) -> None:
        self._classes: dict[str, type] = {}  # stand-in exception classes of this inspection only

    def class_ref(self, cls: type) -> str | None:  # pragma: no cover - decoding only
        return None

    def custom(self, obj: object) -> None:  # pragma: no cover - decoding only
        return None

    def find_global(self, obj: object) -> None:  # pragma: no cover - decoding only
        return None

    def resolve_class(self, ref: str) -> type:
        cls = self._classes.get(ref)
        if cls is None:  # a stand-in exception class that only carries the name
            cls = self._classes[ref] = types.new_class(ref, (Exception,))
        return cls

    def plain_instances(self, cls: type) -> bool:  # pragma: no cover - decoding only
        return False

    def plain_layout(self, layout: object) -> None:
        return None

    def create(self, name: str, head: object) -> object:
        return Placeholder(name, head)

    def fill(self, name: str, obj: object, head: object, body: object) -> None:
        obj.body = body  # type: ignore[attr-defined]

    def finished(self) -> None:
        pass


class _Renderer(reprlib.Repr):
    """``repr`` with size limits, cycle marks and placeholders shown by class name."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 4
        self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = self.maxdict = 8
        self.maxstring = self.maxother = 80
        self._active: set[int] = set()

    def repr1(self, x: Any, level: int) -> str:
        if id(x) in self._active:
            return "<...>"  # a cycle back to a container being shown
        if type(x) is int and x.bit_length() > _BIG_INT_BITS:  # repr would refuse it (sys.get_int_max_str_digits)
            return f"<int with about {int(x.bit_length() * _DIGITS_PER_BIT) + 1:,} digits>"
        self._active.add(id(x))
        try:
            if isinstance(x, Placeholder):
                return self._placeholder(x, level)
            if type(x) is _RANGE_ITERATOR:
                _, (rng,), index = x.__reduce__()  # 3.12+: the rest of the range, index None
                rest = rng[index:] if index else rng
                return f"<iterator over {rest!r}>"
            if isinstance(x, BaseException):
                return f"{type(x).__name__}({', '.join(self.repr1(a, level - 1) for a in x.args)})"
            text = super().repr1(x, level)
            return re.sub(r" object at 0x[0-9a-f]+", "", text)
        finally:
            self._active.discard(id(x))

    def _placeholder(self, p: Placeholder, level: int) -> str:
        head, body = p.head, p.body
        if p.kind == "global" and isinstance(head, list) and len(head) == 2:
            return f"<global {head[0]}.{head[1]}>"
        if p.kind in ("ref", "builtin") and isinstance(head, str):
            return f"<{head}>"
        if p.kind == INSTANCE and isinstance(head, Placeholder) and isinstance(head.head, list) \
                and len(head.head) == 3 and isinstance(body, list):
            cls, dict_names, slot_names = head.head
            fields = ", ".join(f"{n}={self.repr1(v, level - 1)}" for n, v in zip([*dict_names, *slot_names], body))
            return f"{self._class_name(cls)}({fields})"
        if p.kind == "state":
            return f"{self._class_name(head)}(state={self.repr1(body, level - 1)})"
        if p.kind in _HELD and isinstance(head, list) and head and isinstance(head[0], str):
            return f"<durable {_HELD[p.kind]} {head[0]} at line {head[3] if len(head) > 3 else '?'}>"
        if p.kind in ("gen-done", "coro-done"):
            return f"<finished durable {'coroutine' if p.kind == 'coro-done' else 'generator'}>"
        if p.kind == "awaited" and isinstance(head, str):
            return f"<awaited {head}>"
        if p.kind == "cell" and isinstance(body, list):
            return self.repr1(body[0], level) if body else "<empty cell>"
        if p.kind == "fn" and isinstance(head, list) and len(head) > 3 and isinstance(head[3], str):
            return f"<function {head[3]}>"
        inner = self.repr1(head, level - 1)
        if body is not None:
            inner += f", {self.repr1(body, level - 1)}"
        return f"{p.kind}({inner})"

    @staticmethod
    def _class_name(cls: Any) -> str:
        if isinstance(cls, Placeholder) and isinstance(cls.head, str):
            return cls.head.partition(":")[2] or cls.head
        return "object"


_HELD = {"gen": "generator", "gen-yf": "generator", "coro": "coroutine", "coro-aw": "coroutine"}
_BIG_INT_BITS = 14_000  # about 4,200 decimal digits
_DIGITS_PER_BIT = 0.30103


def render(value: Any) -> str:
    """A short readable text for a decoded snapshot value (never raises: a value that cannot be shown
    is named by its type)."""
    try:
        return _Renderer().repr(value)
    except Exception as exc:  # noqa: BLE001 - a value's repr is the data's own business; showing it must not fail
        return f"<{type(value).__name__} that cannot be shown: {type(exc).__name__}>"
