"""Names that compiled code calls at run time (imported by every compiled module as ``_dg_rt``)."""
from __future__ import annotations

import builtins
import itertools
import re
import sys
import threading
import types
from typing import Any, Callable, Generator, Iterator

from . import closures, registry
from .closures import cellular  # noqa: F401  (called by compiled modules)
from .protocols import (aiter_of, anext_of, async_exit_of, async_with_enter, async_with_exit,  # noqa: F401
                        with_enter, with_exit)  # (called by compiled modules)
from .errors import CorruptSnapshotError
from .registry import FunctionMeta

MARKER = object()
"""Yielded once by a generator being restored, when it reaches its saved suspension point."""

SKIP = object()
"""First item of a resumed ``for`` loop: the loop target keeps its restored value."""

PENDING = 0
"""Number of generators created for restore whose body has not started yet (any thread)."""

CHAOS_MODULES: set[str] = set()

_local = threading.local()
_lock = threading.Lock()
_CO_COROUTINE = 0x80


class Detached(BaseException):
    """Thrown into a generator by ``detach``; compiled handlers and finally blocks let it pass."""


_GROUP: type | None = getattr(builtins, "BaseExceptionGroup", None)


def detaching_now() -> bool:
    """True while ``detach`` unwinds a generator in this thread (checked by ``except*`` handlers,
    which all run even after one of them let the detach signal through)."""
    return getattr(_local, "detaching", 0) > 0


def detaching(exc: BaseException) -> bool:
    """True for the detach signal, also when ``except*`` wrapped it into an exception group."""
    if type(exc) is Detached:
        return True
    if _GROUP is not None and isinstance(exc, _GROUP):
        return exc.subgroup(Detached) is not None
    return False


class PendingFrame:
    """A decoded frame waiting to become a generator (or a coroutine): function, state, saved locals and
    closure cells by name."""

    __slots__ = ("meta", "state", "values", "frees", "live", "on_start", "early")

    def __init__(self, meta: FunctionMeta, state: int, values: dict[str, Any], frees: dict[str, Any]) -> None:
        self.meta = meta
        self.state = state
        self.values = values
        self.frees = frees
        self.live: types.GeneratorType | types.CoroutineType | None = None
        # told the generator as soon as it exists (restore fills the snapshot's references to it)
        self.on_start: Callable[[Any], None] | None = None
        self.early: types.GeneratorType | types.CoroutineType | None = None  # made before its turn: start_early

    def resumed(self) -> Any:
        """The generator (or coroutine) restored and suspended at its point (made once, shared by all
        references)."""
        if self.live is None:
            self.live = start(self)
            if self.state:
                try:
                    marker = self.live.send(None)  # (a coroutine has no __next__)
                finally:
                    abandon()
                assert marker is MARKER, "restored generator did not reach its suspension point"
        return self.live


def declare(module: str, qualname: str, fingerprint: bytes, states: dict[int, tuple[str, ...]],
            lines: dict[int, int], yield_from: tuple[int, ...], params: tuple[str, ...],
            compiler_locals: dict[str, str] | None = None, version: str | None = None,
            points: dict[int, tuple[str, str, tuple[str, ...], tuple[str, ...]]] | None = None,
            legacy_names: dict[str, str] | None = None, source: tuple[int, str] | None = None) -> FunctionMeta:
    """Module-level declaration of a compiled durable function. The keywords are left out by code compiled
    before they existed: ``compiler_locals`` (what the compiler's own locals hold, in the user's terms),
    and what a deploy needs (``version``, ``points``, ``legacy_names``, ``source``: see FunctionMeta)."""
    return registry.declare(FunctionMeta(module, qualname, fingerprint, states, lines, yield_from, params,
                                         compiler_locals=compiler_locals or {}, version=version,
                                         points=points or {}, legacy_names=legacy_names or {}, source=source))


def compiled(meta: FunctionMeta) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Innermost decorator of every compiled durable function: registers it."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        registry.attach(meta, fn)
        fn.__durable__ = meta  # type: ignore[attr-defined]
        if meta.module in CHAOS_MODULES:
            from .chaos import chaos_wrapper, coroutine_chaos_wrapper
            return coroutine_chaos_wrapper(fn) if fn.__code__.co_flags & _CO_COROUTINE else chaos_wrapper(fn)
        return fn

    return register


def take(meta: FunctionMeta) -> PendingFrame | None:
    """Called by a compiled body when it starts: the frame to restore, if this generator is one (the frame
    handed over by the last ``start``, or one ``start_early`` keyed by the generator's own frame)."""
    global PENDING
    early = getattr(_local, "early", None)
    if early:
        found = early.pop(sys._getframe(1), None)
        if found is not None:
            with _lock:
                PENDING -= 1
            return found  # type: ignore[no-any-return]
    frame = getattr(_local, "frame", None)
    if frame is None or frame.meta is not meta:
        return None
    _local.frame = None
    with _lock:
        PENDING -= 1
    return frame


def abandon(*, early_too: bool = False) -> None:
    """Forget a restore whose generator never started (so no later call can pick it up); ``early_too``: also
    the frames ``start_early`` made (the restore of a whole snapshot ends)."""
    global PENDING
    if getattr(_local, "frame", None) is not None:
        _local.frame = None
        with _lock:
            PENDING -= 1
    early = getattr(_local, "early", None) if early_too else None
    if early:
        with _lock:
            PENDING -= len(early)
        early.clear()


def function_for(frame: PendingFrame) -> Callable[..., Any]:
    """The function whose call restores ``frame``: the compiled function, or a copy of its code
    (the cellular variant past state 0) closed over the snapshot's cells."""
    meta = frame.meta
    fn = meta.function
    variant = meta.variant
    code = variant if variant is not None and frame.state else registry.code_for(meta)
    frees = code.co_freevars
    if fn is not None and code is fn.__code__ and (not frees or frees == ("__class__",)):
        return fn
    module = sys.modules[meta.module]
    closure = closures.closure_for(code, frame.frees, fn)
    return _named(types.FunctionType(code, module.__dict__, code.co_name, None, closure), meta)


_GENEXPR = re.compile(r"_dg_genexpr\d+(?:\.<locals>)?")


def _named(fn: types.FunctionType, meta: FunctionMeta) -> types.FunctionType:
    """Generators take their names from the function that creates them (a generator expression's are
    ``<genexpr>`` and ``outer.<locals>.<genexpr>``, as natively, not the compiler's function's)."""
    fn.__qualname__ = _GENEXPR.sub("<genexpr>", meta.qualname)
    if fn.__name__.startswith("_dg_genexpr"):
        fn.__name__ = "<genexpr>"
    return fn


def collect_started() -> list[Any]:
    """Start recording, in this thread, every generator (or coroutine) ``start`` creates (a restore undoes
    them if it fails)."""
    made: list[Any] = []
    _local.started = (made, getattr(_local, "started", None))
    return made


def stop_collecting(made: list[Any]) -> None:
    current = getattr(_local, "started", None)
    if current is not None and current[0] is made:
        _local.started = current[1]


def start(frame: PendingFrame) -> Any:
    """Create the generator (or coroutine) for ``frame`` without running it; its first step restores it."""
    if frame.early is not None:
        return frame.early
    gen = _create(frame)
    _made(frame, gen)
    return gen


def start_early(frame: PendingFrame) -> Any:
    """``start`` for a frame of a restored chain that a local of another frame holds (``g = child(); yield from
    g``): made before the frames around it run, so that the local and the delegation get one object. Its
    first step finds its frame by its own frame object, not through the single hand-over slot."""
    if frame.early is None:
        frame.early = _create(frame, keyed=True)
        _made(frame, frame.early)
    return frame.early


def _made(frame: PendingFrame, gen: Any) -> None:
    """Tell who waits for ``frame``'s generator that it exists: the restore collecting what it made, and the
    decoder filling the snapshot's references to it."""
    started = getattr(_local, "started", None)
    if started is not None:
        started[0].append(gen)
    if frame.on_start is not None:
        frame.on_start(gen)


def _create(frame: PendingFrame, keyed: bool = False) -> Any:
    fn = function_for(frame)
    code = fn.__code__
    meta = frame.meta
    _check_exception_slots(frame)
    for name, value in frame.values.items():
        # Durable generators held in locals come back suspended; a delegation target is resumed by the
        # delegating frame itself (it must yield the marker through the ``yield from`` or the ``await``).
        if type(value) is PendingFrame and not (frame.state in meta.yield_from and name.startswith(_DELEGATES)):
            frame.values[name] = value.resumed()
    for cell in frame.frees.values():
        try:
            held = cell.cell_contents
        except ValueError:
            continue
        if type(held) is PendingFrame:
            cell.cell_contents = held.resumed()
    if frame.state == 0:
        args, kwargs = call_arguments(code, frame.values)
        return fn(*args, **kwargs)
    placeholders = meta.placeholders
    if placeholders is None:  # any values do: the restore prologue rebinds or deletes every parameter
        kwonly = code.co_varnames[code.co_argcount:code.co_argcount + code.co_kwonlyargcount]
        placeholders = meta.placeholders = ((None,) * code.co_argcount, dict.fromkeys(kwonly))
    global PENDING
    with _lock:
        PENDING += 1
    if not keyed:
        _local.frame = frame
        return fn(*placeholders[0], **placeholders[1])
    gen = fn(*placeholders[0], **placeholders[1])
    early = getattr(_local, "early", None)
    if early is None:
        early = _local.early = {}
    early[gen.gi_frame if type(gen) is types.GeneratorType else gen.cr_frame] = frame
    return gen


_DELEGATES = ("_dg_yf", "_dg_aw")
"""The compiler's locals holding what a ``yield from`` or an ``await`` delegates to."""


_EXCEPTION_SLOT = re.compile(r"_dg_(?:e|x|fx|g)\d+(?:_[0-9a-f]+)?")
"""Locals the compiler keeps exceptions in (caught, raised in a handler, pending in a finally, a group)."""


def _check_exception_slots(frame: PendingFrame) -> None:
    """The exceptions a frame will raise again while it is restored must be exception instances (a
    class would be called, anything else would be caught by the restore path itself as the error)."""
    meta = frame.meta
    slots = meta.exception_slots
    if slots is None:
        slots = meta.exception_slots = frozenset(name for names in meta.states.values() for name in names
                                                 if _EXCEPTION_SLOT.fullmatch(name))
    for name in slots.intersection(frame.values):
        value = frame.values[name]
        if value is not None and not issubclass(type(value), BaseException):
            raise CorruptSnapshotError(f"not a valid durable snapshot: {meta.ident} keeps an exception in a local, "
                                       f"and the snapshot holds a {type(value).__qualname__} there")


def call_arguments(code: types.CodeType, values: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Rebuild the call that created a not-yet-started generator from its parameter values. A parameter
    without a value (one the code added since the snapshot, with a default: ``runtime.compat``) is left out,
    so it gets its default; the positional ones after it are passed by name."""
    names = code.co_varnames
    npos = code.co_argcount
    nkw = code.co_kwonlyargcount
    positional = names[:npos]
    given = next((i for i, n in enumerate(positional) if n not in values), npos)
    args = [values[n] for n in positional[:given]]
    kwargs = {n: values[n] for n in (*positional[given:], *names[npos:npos + nkw]) if n in values}
    index = npos + nkw
    if code.co_flags & 0x04:  # CO_VARARGS
        args.extend(values.get(names[index], ()) if given == npos else ())
        index += 1
    if code.co_flags & 0x08:  # CO_VARKEYWORDS
        kwargs.update(values.get(names[index], {}))
    return args, kwargs


# -- helpers called from compiled bodies ---------------------------------------------------------
def yf_iter(value: Any) -> Any:
    """What ``yield from value`` iterates over (CPython's GET_YIELD_FROM_ITER)."""
    if type(value) is types.GeneratorType:
        return value
    if type(value) is types.CoroutineType:
        raise TypeError("cannot 'yield from' a coroutine object in a non-coroutine generator")
    return iter(value)


def resume_delegation(value: Any) -> tuple[Any, Any]:
    """Re-enter a delegation: ``(the delegate, what to yield from)``. A pending durable frame is started
    and yields the marker itself; any other iterator is driven by ``resumed_delegation``."""
    if type(value) is PendingFrame:
        gen = start(value)
        return gen, gen
    return value, resumed_delegation(value)


def resume_from(value: Any) -> tuple[Any, bool]:
    """``resume_delegation`` as code compiled before it calls it (with ``forward_send``)."""
    if type(value) is PendingFrame:
        return start(value), False
    return value, True


def forward_send(iterator: Any, value: Any) -> None:
    """Code compiled before ``resume_delegation``: the first ``send(v)`` after a restore at ``yield from
    plain_iterator`` goes to the iterator."""
    if value is not None:
        iterator.send(value)
        raise RuntimeError("send() to a restored delegation over an iterator with a send() method needs the "
                           "code compiled again (durable compile, or clear the import cache)")


def resumed_delegation(iterator: Any) -> Generator[Any, Any, Any]:
    """``yield from iterator`` re-entered at its suspension (PEP 380 from there on): the marker first,
    for restore, then every operation of the caller reaches ``iterator`` as natively: ``send`` (``next``
    for None), ``throw`` (raised here when the iterator has none) and ``close``. A detach never reaches
    the iterator: dropping the frame runs none of its code."""
    out: Any = MARKER
    while True:
        try:
            sent = yield out
        except GeneratorExit:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
            raise
        except BaseException as exc:
            thrower = None if detaching(exc) else getattr(iterator, "throw", None)
            if thrower is None:
                raise
            try:
                out = thrower(exc)
            except StopIteration as stop:
                return stop.value
            continue
        try:
            out = next(iterator) if sent is None else iterator.send(sent)
        except StopIteration as stop:
            return stop.value


def resume_await(value: Any) -> Any:
    """What the restore arm of an ``await`` awaits: the inner durable coroutine of the chain, started (its
    own restore arm yields the marker through this frame's native await), or, for the innermost frame,
    a ``Resumed`` that yields the marker itself."""
    if type(value) is PendingFrame:
        if value.early is not None:  # a local holds it too (c = child(); await c): made already
            return value.early
        # The slot keeps its value until the frame returns: hand the saved locals (and the decoder that
        # on_start refers to) to a frame of their own, so that the slot keeps none of them alive.
        frame = PendingFrame(value.meta, value.state, value.values, value.frees)
        frame.on_start, value.on_start = value.on_start, None
        value.values, value.frees = {}, {}
        return start(frame)
    if type(value) is not AwaitedRequest:
        from .programs.combinators import Combinator  # (not at import: the combinators use this module)
        if type(value) is Combinator:  # a runtime.gather/race: it yields the marker itself
            return value.resumed()
    return Resumed(value)


class Resumed:
    """A restored await on a runtime awaitable (a request), as its own iterator: the first ``send`` yields
    the marker; the next one returns what it is given as the value of the await (the answer to the request
    the driver got before the snapshot); ``throw`` raises its exception there. ``delegate`` is the saved
    awaitable, so that a coroutine snapshotted again before it moves saves the same frames."""

    __slots__ = ("delegate", "started")

    def __init__(self, delegate: Any) -> None:
        self.delegate = delegate
        self.started = False

    def __await__(self) -> Resumed:
        return self

    def __iter__(self) -> Resumed:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def send(self, value: Any) -> Any:
        if not self.started:
            self.started = True
            return MARKER
        raise StopIteration(value)

    def throw(self, exc: Any, value: Any = None, traceback: Any = None) -> Any:
        if isinstance(exc, type):  # the three-argument form (deprecated since 3.12)
            exc = exc(value) if value is not None and not isinstance(value, BaseException) else (value or exc())
        raise exc

    def close(self) -> None:
        self.started = True

    def __repr__(self) -> str:
        return f"<resumed await on {self.delegate!r}>"


class ChainRef:
    """What a snapshot keeps of a local that holds a frame of the saved chain itself (``g = child(); yield
    from g``, ``c = child(); await c``): that frame's place in the chain (0 is the outermost). Restore puts
    the frame's generator there (``start_early``)."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __repr__(self) -> str:
        return f"<frame {self.index} of the chain>"


class AwaitedRequest:
    """What a snapshot keeps of a runtime awaitable a coroutine waits on (``await step(...)``): the kind of
    request only ("step", "sleep", "wait", "checkpoint", "suspend"). The request itself went to the driver
    before the snapshot (a store keeps it); what is left is its answer."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __eq__(self, other: object) -> bool:
        return type(other) is AwaitedRequest and other.kind == self.kind

    def __hash__(self) -> int:
        return hash(("AwaitedRequest", self.kind))

    def __repr__(self) -> str:
        return f"<awaited {self.kind}>"


_CONTEXT = vars(BaseException)["__context__"]


def reraise(exc: BaseException) -> BaseException:
    """A saved exception about to be raised again during a restore: remember its context.

    The saved value comes from a snapshot: it must be an exception instance (raising a class would
    call it), and its context is read through BaseException's own slot (no attribute hook runs)."""
    if not issubclass(type(exc), BaseException):
        raise TypeError(f"a saved exception of this frame is a {type(exc).__qualname__}, not an exception")
    _local.context = (exc, _CONTEXT.__get__(exc))
    return exc


def recontext() -> None:
    """In the handler or finally block that took a re-raised exception: restore its context."""
    saved = getattr(_local, "context", None)
    if saved is not None:
        _local.context = None
        _CONTEXT.__set__(saved[0], saved[1])  # BaseException's own slot: never the class's __setattr__


def resume_first(iterator: Iterator[Any]) -> Iterator[Any]:
    return itertools.chain((SKIP,), iterator)
