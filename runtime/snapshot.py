"""snapshot, restore and detach: suspended durable generators (and coroutines) to bytes and back.

A snapshot is the envelope ``[b"DG", FORMAT, frame, frame, ...]`` (``values.envelope``) from the
outermost generator to the innermost one it delegates to (``yield from``; a coroutine's delegate is the
durable coroutine it awaits). Each frame's ``names`` are the bound live
locals of its state (a subset of the static list the compiler emitted), ``values`` their values in
the same order, ``frees`` the frame's closure cells (variables in cells are not also among the
values). Values are encoded by ``values.Encoder`` with one memo for the whole snapshot, so the
inspector can render every frame without importing anything. Decoding goes through the trust
boundary, ``runtime.values``, only.
"""
from __future__ import annotations

import inspect
import operator
import sys
import threading
import types
import weakref
from typing import Any, Callable

import msgpack

from . import _support, closures, compat, migrations, registry, values
from .chaos import coroutine_inner, detach_coroutine_wrapper
from .errors import (GeneratorStateError, IncompatibleCodeError, NotDurableError, SnapshotError,
                     UnserializableValueError)
from .programs.combinators import Combinator
from .programs.requests import Awaiting, Checkpoint, Request, Sleep, Step, Wait
from .registry import FunctionMeta
from .values import FORMAT, MAGIC, NO_BODY, Decoder, Encoder, Kind, code_kinds
from .values.wire import type_name

_GeneratorType = types.GeneratorType
_CoroutineType = types.CoroutineType
_CO_COROUTINE = inspect.CO_COROUTINE


# -- generators and coroutines alike: one accessor per attribute -------------------------------------
# (the generator path tests ``type(x) is _GeneratorType`` first and reads ``gi_*`` itself)

def _frame(obj: Any) -> types.FrameType | None:
    return obj.gi_frame if type(obj) is _GeneratorType else obj.cr_frame


def _code(obj: Any) -> types.CodeType:
    return obj.gi_code if type(obj) is _GeneratorType else obj.cr_code


def _running(obj: Any) -> bool:
    return obj.gi_running if type(obj) is _GeneratorType else obj.cr_running


def _delegate_of(obj: Any) -> Any:
    """What a suspended generator delegates to (``yield from``) or a suspended coroutine awaits."""
    return obj.gi_yieldfrom if type(obj) is _GeneratorType else obj.cr_await


def _noun(obj: Any) -> str:
    return "coroutine" if type(obj) is _CoroutineType else "generator"


def _status(obj: Any) -> str:
    """"CREATED", "RUNNING", "SUSPENDED" or "CLOSED" (``inspect.getgeneratorstate``/``getcoroutinestate``)."""
    if type(obj) is _GeneratorType:
        return inspect.getgeneratorstate(obj).partition("_")[2]
    return inspect.getcoroutinestate(obj).partition("_")[2]


class _Delegate:
    """The generator a held generator delegates to (``yield from``), or the coroutine a held coroutine
    awaits, in that frame's record: restored by the frame that delegates to it (kinds "gen-yf" and
    "coro-aw"), not on its own."""

    __slots__ = ("gen",)

    def __init__(self, gen: Any) -> None:
        self.gen = gen


def _chain_ids() -> dict[int, int] | None:
    """The frames of the chain being saved, ``{id: place}`` (0 the outermost), worked out when first asked
    for; None outside a snapshot. A local holding one of them is saved as a ``ChainRef``; anything else
    holding one is refused (restore could not give it and the delegation one object)."""
    chain = getattr(_local, "chain", None)
    if chain is None or type(chain) is dict:
        return chain
    ids = _local.chain = {id(part): place for place, (_, _, part) in enumerate(_durable_frames(chain))}
    return ids


def _chain_refs(live: list[Any]) -> None:
    """Locals of a chain frame that hold a frame of the chain: saved as its place (``ChainRef``)."""
    chain = _chain_ids() or {}
    for index, value in enumerate(live):
        place = chain.get(id(value)) if type(value) in _RESUMABLE else None
        if place is not None:
            live[index] = _support.ChainRef(place)


def _classify_generator(obj: object) -> tuple[str, object, object] | None:
    """Durable generators held in values (a local, a container): their frame record, or "finished"."""
    kind = "gen"
    if type(obj) is _Delegate:
        obj, kind = obj.gen, "gen-yf"
    if type(obj) is not types.GeneratorType:
        return _classify_coroutine(obj, kind == "gen-yf") if type(obj) is _CoroutineType else None
    if obj.gi_code is _finished_generator.__code__:  # a finished one a restore made
        return "gen-done", None, NO_BODY
    if kind == "gen" and obj.gi_code in code_kinds.WRAPPER_CODES:
        live = code_kinds.live_wrapper(obj)  # a chaos round trip keeps the program's own wrapper
        if live is not None:
            return live
    gen = _unwrap(obj)  # type: ignore[arg-type]
    if id(gen.gi_code) not in registry.BY_CODE or gen.gi_running:
        return None
    if gen.gi_frame is None:
        return "gen-done", None, NO_BODY
    if kind == "gen":
        chain = _chain_ids()
        if chain is not None and id(gen) in chain:
            raise values.Unsupported("is also a frame of the chain being saved (the generator is being delegated "
                                     "to, yield from), held inside another value: restore could not give it and "
                                     "the yield from one generator; keep it in a local of its own instead")
    record, _ = _frame_record(gen, None, chain=False)
    if kind == "gen":
        held = getattr(_local, "held", None)
        if held is not None:
            held.append(obj)
    return kind, record, NO_BODY


def _classify_coroutine(coro: types.CoroutineType, awaited: bool) -> tuple[str, object, object] | None:
    """Durable coroutines held in values (``c = child(1)``, awaited later): the twins of the generator kinds."""
    code = coro.cr_code
    if code is _finished_coroutine.__code__:  # a finished one a restore made
        return "coro-done", None, NO_BODY
    if id(code) not in _BY_CODE:
        return _classify_wrapper(coro, awaited) if code in code_kinds.WRAPPER_CODES else None
    if coro.cr_running:
        return None
    if coro.cr_frame is None:
        return "coro-done", None, NO_BODY
    chain = _chain_ids()
    if chain is not None and id(coro) in chain:
        raise values.Unsupported("is also a frame of the chain being saved (it is being awaited), held inside "
                                 "another value: restore could not give it and the await one coroutine; keep it "
                                 "in a local of its own instead")
    record, _ = _frame_record(coro, None, chain=False)
    if not awaited:
        held = getattr(_local, "held", None)
        if held is not None:
            held.append(coro)
    return ("coro-aw" if awaited else "coro"), record, NO_BODY


def _classify_wrapper(coro: types.CoroutineType, awaited: bool) -> tuple[str, object, object] | None:
    """A chaos coroutine wrapper held in a value: the program's own object again after a chaos round trip
    (kind "live"), else the compiled coroutine it drives; one a frame of the chain awaits is refused, as
    the compiled coroutine itself would be."""
    inner = coroutine_inner(coro)
    chain = _chain_ids()
    if inner is not None and chain is not None and id(inner) in chain:
        return _classify_coroutine(inner, awaited)  # (raises: it is a frame of the chain)
    live = None if awaited else code_kinds.live_wrapper(coro)
    if live is not None:
        return live
    return None if inner is None else _classify_coroutine(inner, awaited)


def _not_by_type(obj: object) -> tuple[object, object]:
    raise TypeError("generators and coroutines are classified by _classify_generator")


def _held_frame(head: Any, coroutine: bool) -> _support.PendingFrame:
    """The frame of a generator (or coroutine) held in a value, checked to be of the kind it was saved as."""
    frame = _pending_frame(head)
    if bool(registry.code_for(frame.meta).co_flags & _CO_COROUTINE) != coroutine:
        saved, now = ("coroutine", "a generator function") if coroutine else ("generator", "a coroutine function")
        raise IncompatibleCodeError(f"the snapshot holds a durable {saved} of {frame.meta.ident}, which the code "
                                    f"loaded now defines as {now}")
    return frame


def _chain_ref(head: Any) -> _support.ChainRef:
    if type(head) is not int or not 0 <= head < 1 << 16:
        raise _corrupt("a reference to a frame of the chain that is not one")
    return _support.ChainRef(head)


def _awaited_request(head: Any) -> _support.AwaitedRequest:
    if type(head) is not str or head not in _REQUEST_KINDS:
        raise _corrupt("an awaited request of an unknown kind")
    return _support.AwaitedRequest(head)


_REQUEST_KINDS = frozenset({"step", "sleep", "wait", "checkpoint", "suspend", "request"})

# A held generator is restored at once, suspended at its point, wherever the decoder puts it (a local,
# a list, a map's iterator, an object's attribute); a delegate waits for the frame delegating to it.
values.add_kind(Kind("gen", _not_by_type, lambda head: _held_frame(head, False).resumed()))
values.add_kind(Kind("gen-yf", _not_by_type, lambda head: _held_frame(head, False)))
values.add_kind(Kind("gen-done", _not_by_type, lambda head: _finished()))
# The same for coroutines; a not-started one comes back not started.
values.add_kind(Kind("coro", _not_by_type, lambda head: _held_frame(head, True).resumed()))
values.add_kind(Kind("coro-aw", _not_by_type, lambda head: _held_frame(head, True)))
values.add_kind(Kind("coro-done", _not_by_type, lambda head: _finished_coro()))
values.add_kind(Kind("awaited", lambda obj: (obj.kind, NO_BODY), _awaited_request), _support.AwaitedRequest)
values.add_kind(Kind("chain-ref", lambda obj: (obj.index, NO_BODY), lambda head: _chain_ref(head)), _support.ChainRef)
values.FALLBACKS.append(_classify_generator)
_HOOKS = values.HOOKS


def _meta_of(gen: Any) -> FunctionMeta:
    if type(gen) is _CoroutineType:
        meta = registry.BY_CODE.get(id(gen.cr_code))
        inner = coroutine_inner(gen) if meta is None else None
        if inner is not None:
            return _meta_of(inner)
    elif isinstance(gen, types.GeneratorType):
        meta = registry.BY_CODE.get(id(gen.gi_code))
        inner = _support_chaos_inner(gen) if meta is None else None
        if inner is not None:
            return _meta_of(inner)
    else:
        raise NotDurableError("snapshot() needs a generator or a coroutine from a durable function, "
                              f"not {type(gen).__name__!r}")
    if meta is None and _code(gen) in code_kinds.WRAPPER_CODES:
        raise NotDurableError(f"{_noun(gen)} {gen.__qualname__!r} is chaos mode's wrapper, and it drives no compiled "
                              f"{_noun(gen)} now (not started yet, or finished)")
    if meta is None:
        raise NotDurableError(
            f"{_noun(gen)} {gen.__qualname__!r} was not compiled as durable: decorate it with @durable and compile "
            "its module (import hook, `durable compile`, or the build step)")
    return meta


def _support_chaos_inner(gen: types.GeneratorType) -> types.GeneratorType | None:
    from .chaos import current_inner
    return current_inner(gen)


def _unwrap(gen: Any) -> Any:
    """The compiled generator (or coroutine) a chaos wrapper drives; anything else as it is."""
    kind = type(gen)
    if kind is _GeneratorType:
        if id(gen.gi_code) in registry.BY_CODE:
            return gen
        inner = _support_chaos_inner(gen)
    elif kind is _CoroutineType and id(gen.cr_code) not in registry.BY_CODE:
        inner = coroutine_inner(gen)
    else:
        return gen
    return inner if inner is not None else gen


def snapshot(gen: Any) -> bytes:
    """Capture a suspended (or not yet started) durable generator, with its whole ``yield from`` chain, or
    a durable coroutine with the chain of durable coroutines it awaits."""
    if type(gen) is _GeneratorType and id(gen.gi_code) in _BY_CODE:
        running, finished = gen.gi_running, gen.gi_frame is None
    else:
        _meta_of(gen)  # raises NotDurableError, or finds the generator a chaos wrapper drives
        gen = _unwrap(gen)
        running, finished = _running(gen), _frame(gen) is None
    if running:
        raise GeneratorStateError(f"cannot snapshot {_noun(gen)} {gen.__qualname__!r} while it is running")
    if finished:
        raise GeneratorStateError(f"cannot snapshot {_noun(gen)} {gen.__qualname__!r}: it has finished")
    try:
        tools = _TOOLS.pop()  # list.pop and list.append are atomic: each thread gets its own pair
    except IndexError:
        tools = Encoder(_HOOKS, exact=False), msgpack.Packer(use_bin_type=True)
    encoder, packer = tools
    held: list[Any] = []
    _local.held = held
    _local.chain = gen  # (its frames' ids are worked out only if a value holds a generator: _chain_ids)
    try:
        data: bytes = packer.pack(_envelope(gen, encoder))
    except (OverflowError, UnicodeEncodeError):  # an int beyond 64 bits or a str msgpack cannot carry
        held.clear()
        data = packer.pack(_envelope(gen, Encoder(_HOOKS)))
    finally:
        encoder.reset()
        _TOOLS.append(tools)
        _local.encoder = _local.held = _local.chain = None
    if held:
        _HELD[gen] = tuple(map(weakref.ref, held))
    elif _HELD:
        _HELD.pop(gen, None)
    key = values.settings.current.key
    return data if key is None else values.sign(data, key)


def _envelope(gen: Any, encoder: Encoder) -> list[Any]:
    _local.encoder = encoder  # for the frames of generators held in values (their records are values)
    envelope: list[Any] = [MAGIC, FORMAT]
    current: Any = gen
    while current is not None:
        record, current = _frame_record(current, encoder)
        envelope.append(record)
    return envelope


_TOOLS: list[tuple[Encoder, msgpack.Packer]] = []
"""Idle (optimistic encoder, packer) pairs, reused from one snapshot to the next."""
_local = threading.local()  # .encoder, .held: the encoder of the snapshot being taken in this thread
# and the durable generators it met in values (a list's items, an attribute, a map's iterator)
_HELD: weakref.WeakKeyDictionary[Any, tuple[weakref.ref[Any], ...]] = weakref.WeakKeyDictionary()
"""The generators (and coroutines) held in values by the last snapshot of a generator: ``detach`` detaches
them too."""
_BY_CODE = registry.BY_CODE


class _Plan:
    """How to read the live locals of one state of a durable function."""

    __slots__ = ("names", "labels", "delegation", "delegation_label", "fetch", "free_names", "line", "joined",
                 "name_set", "cells", "point", "awaits", "await_index")

    def __init__(self, meta: FunctionMeta, state: int, code: types.CodeType) -> None:
        names = meta.states[state] if state else meta.params
        self.names = names
        self.labels = self._labels(meta, names)
        # a coroutine's states past 0 are awaits: the slot ``_dg_aw...`` is virtual (not a local of the
        # fast body), filled from ``cr_await``
        self.awaits = bool(code.co_flags & _CO_COROUTINE) and state > 0
        # the local holding the generator a ``yield from`` suspended in delegates to (an ``await``'s slot)
        prefix = "_dg_aw" if self.awaits else "_dg_yf"
        self.delegation = next((n for n in names if n.startswith(prefix)), None) \
            if state in meta.yield_from else None
        self.delegation_label = self.labels[names.index(self.delegation)] if self.delegation else None
        self.await_index = names.index(self.delegation) if self.awaits and self.delegation else None
        # fetch(frame_locals) -> tuple of the live values (an await's slot left out); KeyError when one is unbound
        fetched = names if self.await_index is None else tuple(n for n in names if n != self.delegation)
        if len(fetched) > 1:
            self.fetch: Callable[[Any], tuple[Any, ...]] = operator.itemgetter(*fetched)
        elif fetched:
            name = fetched[0]
            self.fetch = lambda f_locals: (f_locals[name],)
        else:
            self.fetch = lambda f_locals: ()
        self.free_names = tuple(n for n in code.co_freevars if n != "__class__")
        self.line = meta.line_of(state)
        self.joined = ",".join(names)  # a snapshot's names when all are bound
        self.name_set = frozenset(names)
        self.cells = closures.CELLS in code.co_varnames  # captured variables travel as cells
        # [version, key, label] of the point, written in each frame (None: compiled before versions)
        self.point = [meta.version, *meta.point_of(state)] if meta.version is not None else None

    @staticmethod
    def _labels(meta: FunctionMeta, names: tuple[str, ...]) -> tuple[str, ...]:
        """How errors name each live local: the user's by name, the compiler's by what they hold ("the
        iterator of the `for` loop at line 12"; by kind alone for code compiled without the table).
        Labels are distinct: the delegation local is found by its label."""
        from .values.inspection import internal_note

        labels: list[str] = []
        for name in names:
            label = meta.compiler_locals.get(name) or internal_note(name) or f"local {name!r}"
            same = sum(1 for known in labels if known == label or known.startswith(label + " (#"))
            labels.append(f"{label} (#{same + 1})" if same else label)
        return tuple(labels)


def _plan(meta: FunctionMeta, state: int, code: types.CodeType) -> _Plan:
    plan = meta.plans.get(state)
    if plan is None:
        plan = meta.plans[state] = _Plan(meta, state, code)
    return plan


def _frame_record(gen: Any, encoder: Encoder | None, chain: bool = True) -> tuple[list[Any], Any]:
    """One frame: ``[ident, fingerprint, state, line, names, values, frees, point, tracked]``
    (``values.envelope``) and the durable generator (or coroutine) it delegates to, if any (``chain``: the
    delegate becomes the next frame instead of a value).

    ``values`` are the bound live locals, ``frees`` is ``[names, cells]`` of the frame's closure
    cells (``runtime.closures``; encoded before the values), or nil. ``encoder`` turns the values
    into their packed form; None leaves them as they are (for a generator held in a local, whose
    record the encoder then encodes as a whole).
    """
    if type(gen) is _GeneratorType:
        code = gen.gi_code
        frame_locals = gen.gi_frame.f_locals
    else:
        code = gen.cr_code
        frame_locals = gen.cr_frame.f_locals
    meta = _BY_CODE[id(code)]
    if encoder is not None:
        encoder.reserve(gen)  # a closure cell of this frame may hold the generator itself
    target = encoder or getattr(_local, "encoder", None)
    if target is not None:
        globals_read = _globals_of(meta)
        if globals_read:
            target.by_reference(globals_read)
    state = frame_locals.get("_dg_s", 0)  # unbound until the body first suspends
    plan = meta.plans.get(state) or _plan(meta, state, code)
    tracked = None
    sub: Any = None
    if plan.awaits:
        awaited, sub = _awaited(meta, state, plan, gen.cr_await, chain)
        try:
            live = list(plan.fetch(frame_locals))
            live.insert(plan.await_index, awaited)
            names = plan.joined
            labels = plan.labels
        except KeyError:
            live, labels, names = _bound_locals(plan, frame_locals, awaited)
            tracked = plan.joined
    else:
        try:
            live = list(plan.fetch(frame_locals))
            names = plan.joined
            labels = plan.labels
        except KeyError:
            live, labels, names = _bound_locals(plan, frame_locals)
            tracked = plan.joined
        delegation = plan.delegation_label
        if delegation is not None and delegation in labels:
            i = labels.index(delegation)
            if type(live[i]) is types.GeneratorType:
                inner = _delegate(meta, state, delegation, live[i])  # type: ignore[arg-type]
                if chain:
                    sub, live[i] = inner, None
                else:
                    live[i] = _Delegate(inner)
    frees = None
    try:
        if plan.free_names or plan.cells:
            # the frame's closure cells, before the values: a value (a nested function) may share them
            frees = closures.frame_cells(frame_locals, plan.free_names)
            if frees is not None and encoder is not None:
                encoder.encode_all(frees[1], [f"closure variable {n!r}" for n in frees[0]])
        if encoder is not None:
            if any(type(value) in _RESUMABLE for value in live):
                _chain_refs(live)
            encoder.encode_all(live, labels)
    except UnserializableValueError as exc:
        where = f" (in {meta.ident}, suspended at line {meta.line_of(state)})\nhint: {_HINT}"
        raise UnserializableValueError(str(exc) + where, path=exc.path, type_name=exc.type_name) from None
    if encoder is not None:
        encoder.release(gen)
    return [meta.ident, meta.fingerprint, state, plan.line, names, live, frees, plan.point, tracked], sub


def _globals_of(meta: FunctionMeta) -> dict[int, tuple[str, str]]:
    """The module-level data objects the function's code reads by name (``REGISTRY``, ``config.CLIENT``
    when ``config`` is an allowed module): a local holding one is written as a reference to it."""
    namespace = getattr(sys.modules.get(meta.module), "__dict__", None)
    if type(namespace) is not dict:
        return {}
    plan = meta.globals_plan
    if plan is None or plan[0] != len(namespace):
        plan = meta.globals_plan = _plan_globals(meta, namespace)
    found: dict[int, tuple[str, str]] = {}
    for module_name, holder, name in plan[1]:
        value = holder.get(name, _UNBOUND)
        if value is not _UNBOUND and type(value) not in _BY_VALUE and not isinstance(value, values.CODE_TYPES):
            found.setdefault(id(value), (module_name, name))
    return found


def _plan_globals(meta: FunctionMeta, namespace: dict[str, Any]) -> tuple[int, tuple[tuple[str, Any, str], ...]]:
    """(size of the module's namespace, the (module, its namespace, name) places the code reads)."""
    names: set[str] = set()
    todo = [registry.code_for(meta)]
    while todo:
        code = todo.pop()
        names.update(code.co_names)
        todo.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    places = [(meta.module, namespace, n) for n in sorted(names) if n in namespace]
    for name in sorted(names):
        module = namespace.get(name)
        if isinstance(module, types.ModuleType) and values.module_allowed(module.__name__):
            places += [(module.__name__, module.__dict__, n) for n in sorted(names) if n in module.__dict__]
    return len(namespace), tuple(places)


_BY_VALUE = frozenset({type(None), bool, int, float, complex, str, bytes})


def _bound_locals(plan: _Plan, frame_locals: Any, awaited: Any = None) -> tuple[list[Any], list[str], str]:
    """The bound live values, their labels and their names (joined by commas); an await's slot holds
    ``awaited`` (whatever the frame's local of that name holds)."""
    live: list[Any] = []
    labels: list[str] = []
    names: list[str] = []
    slot = plan.delegation if plan.awaits else None
    for name, label in zip(plan.names, plan.labels):
        value = awaited if name == slot else frame_locals.get(name, _UNBOUND)
        if value is not _UNBOUND:
            live.append(value)
            labels.append(label)
            names.append(name)
    return live, labels, ",".join(names)


_UNBOUND = object()
_HINT = ("register a codec for the type (runtime.register_codec), mark your class @runtime.serializable, "
         "close or drop the value before the yield, or keep it out of the generator's locals")


def _delegate(meta: FunctionMeta, state: int, label: str, value: types.GeneratorType) -> types.GeneratorType:
    inner = _unwrap(value)
    if id(inner.gi_code) not in registry.BY_CODE:
        raise UnserializableValueError(
            f"cannot snapshot {meta.ident} suspended at line {meta.line_of(state)}: it delegates "
            f"(yield from) to generator {value.__qualname__!r}, which is not durable",
            path=[label], type_name="generator")
    return inner


def _awaited(meta: FunctionMeta, state: int, plan: _Plan, awaited: Any, chain: bool) -> tuple[Any, Any]:
    """``(the value of the await's slot, the next frame of the chain or None)`` for a coroutine suspended
    at an await on ``awaited`` (its ``cr_await``)."""
    if plan.delegation is None:
        raise SnapshotError(f"cannot snapshot {meta.ident} suspended at line {meta.line_of(state)}: its code has "
                            "no slot for the await (compile it again)")
    kind = type(awaited)
    if kind is Awaiting:
        request = awaited.request
        return _support.AwaitedRequest(_REQUEST_NAMES.get(type(request)) or
                                       ("request" if isinstance(request, Request) else "suspend")), None
    if kind is _support.Resumed:  # restored, and not moved since: the same as before
        return awaited.delegate, None
    if kind is Combinator:  # runtime.gather/race: a value (its children are held coroutines)
        return awaited, None
    if kind is _CoroutineType:
        durable = awaited if id(awaited.cr_code) in _BY_CODE else coroutine_inner(awaited)  # (a chaos wrapper)
        if durable is not None:
            if chain:
                return None, durable
            return _Delegate(durable), None
    raise UnserializableValueError(
        f"cannot snapshot {meta.ident} suspended at line {meta.line_of(state)}: it is awaiting "
        f"{_awaitable_name(awaited)}, which is not durable: a transient await (asyncio, I/O) runs again after a "
        "crash and cannot be saved; durable programs can be persisted only while every frame awaits step(), "
        "sleep(), wait(), checkpoint(), suspend(), or another durable coroutine",
        path=[plan.delegation_label or plan.delegation], type_name=type_name(kind))


_REQUEST_NAMES = {Step: "step", Sleep: "sleep", Wait: "wait", Checkpoint: "checkpoint"}


def _awaitable_name(obj: Any) -> str:
    """How the transient-await error names what a coroutine awaits (``cr_await`` shows the iterator an
    ``__await__`` returned: a Future's is its FutureIter, a generator-based one's is the generator)."""
    kind = type(obj)
    if kind is _CoroutineType or kind is _GeneratorType:
        frame = _frame(obj)
        module = frame.f_globals.get("__name__") if frame is not None else None
        where = f" ({module})" if isinstance(module, str) else ""
        return f"{_noun(obj)} {obj.__qualname__!r}{where}"
    if kind.__name__ in ("FutureIter", "Future", "Task"):
        return f"an asyncio {'Future' if kind.__name__ == 'FutureIter' else kind.__name__}"
    if obj is None:
        return "nothing (the coroutine is not suspended at an await of its own)"
    return f"a {kind.__qualname__} object ({kind.__module__})"


_corrupt = values.corrupt


def restore(data: bytes, report: list[dict[str, Any]] | None = None) -> Any:
    """Rebuild a generator (or coroutine) from ``snapshot`` bytes, suspended where the snapshot was taken.

    Frames saved under another version of their function resume under the code loaded now when it takes
    them (``runtime.compat``), or through a registered migration (``runtime.migrations``: the only user code
    restore runs). When it succeeds, ``report`` gets one entry per migration applied,
    ``{"migration", "function", "from_version", "from_point", "to_point"}``, and one per frame upgraded
    without one, ``{"upgrade": function, "from_version", "to_version"}``, in the order the frames were decoded.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"restore() needs bytes, not {type(data).__name__!r}")
    data = bytes(data)
    envelope, _ = values.open_snapshot(data)
    decoder = Decoder(_HOOKS, max_depth=values.settings.current.max_depth, input_size=len(data))
    made = _support.collect_started()  # held generators are restored while their values are decoded
    outer_report = getattr(_local, "report", None)
    _local.report = applied = []
    try:
        gen = _restore_frames(envelope, decoder, made)
    finally:
        _local.report = outer_report
        _support.stop_collecting(made)
    if report is not None:
        report.extend(applied)
    return gen


def _restore_frames(envelope: list[Any], decoder: Decoder, made: list[Any]) -> Any:
    ident = "the snapshot"
    try:
        frames = [_decode_frame(decoder, raw, envelope[1]) for raw in envelope[2:]]
        ident = frames[0].meta.ident
        for outer, inner in zip(frames, frames[1:]):
            meta = outer.meta
            if outer.state not in meta.yield_from:
                raise _corrupt("a nested frame follows a frame that is not delegating")
            slot = meta.plans[outer.state].delegation  # the plan _check_record made for this state
            if slot is None:
                raise _corrupt("delegating frame without its delegation local")
            outer.values[slot] = inner
        for frame in frames:  # locals holding a frame of the chain (g = child(); yield from g): that frame
            for name, value in frame.values.items():
                if type(value) is _support.ChainRef:
                    if value.index >= len(frames):
                        raise _corrupt("a local refers to a frame the snapshot does not hold")
                    frame.values[name] = _support.start_early(frames[value.index])
        top = frames[0]
        gen = _support.start(top)
        marker = gen.send(None) if top.state else _support.MARKER  # (a coroutine has no __next__)
        if top.state and marker is not _support.MARKER:
            raise SnapshotError(f"restoring {ident} did not reach its suspension point")
        if decoder.unresolved():
            raise _corrupt("a closure cell refers to a generator the snapshot does not restore")
    except BaseException as exc:
        _detach_all(made)
        if isinstance(exc, SnapshotError):
            raise
        raise SnapshotError(f"restoring {ident} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        _support.abandon(early_too=True)
    return gen


def _detach_all(made: list[Any]) -> None:
    """Generators a failing restore had restored (held in values, suspended at their points) belong to
    no one: detach them, so that their finally blocks never run on the snapshot's data."""
    for started in reversed(made):
        if _frame(started) is not None and not _running(started):
            try:
                detach(started)
            except Exception:  # noqa: BLE001, S110 - best effort: the restore is failing anyway
                pass


_Checked = tuple[FunctionMeta, "compat.Adaptation | migrations.Migration", "list[str] | tuple[str, ...]",
                 "compat.FrameHeader | None"]


class _Exact(dict):  # type: ignore[type-arg]
    """The adaptation of a frame resumed by the code that saved it, one per state (made once)."""

    def __missing__(self, state: int) -> compat.Adaptation:
        made = self[state] = compat.Adaptation(state, exact=True)
        return made


_EXACT = _Exact()


def _check_record(raw: Any) -> _Checked:
    """Check a frame record's shape, find its function (imported only if allowed) and judge how it
    resumes under the code loaded now (``runtime.compat``): the function, the adaptation (or the migration
    to run on its decoded values first, ``runtime.migrations``), the names of the record's values
    (translated from the names of format 1 and 2) and what the record says about where it was saved."""
    ident, fingerprint, state, line, names, packed, frees, point, tracked = values.frame_fields(raw)
    meta = registry.lookup(ident, fingerprint)
    if meta is not None and compat.same_code(point[0] if point is not None else None, fingerprint, meta):
        # the code that saved it (the common case): no judging, the names must be the state's
        plan = meta.plans.get(state) or (_plan(meta, state, registry.code_for(meta)) if not state or state in
                                         meta.states else None)
        if plan is not None and names == plan.joined and len(packed) == len(plan.names):
            return meta, _EXACT[state], plan.names, None
    header = frame_header(raw, meta)
    bound = header.names
    found = migrations.find(header, meta) if migrations.REGISTERED else None
    if found is not None:
        assert meta is not None
        return meta, found, bound, header
    adapt = compat.judge(header, meta)
    assert meta is not None  # the judge refuses a function that is gone
    plan = meta.plans.get(adapt.state) or _plan(meta, adapt.state, registry.code_for(meta))
    if adapt.exact and not plan.name_set.issuperset(bound):
        raise _corrupt("frame locals do not match the function's state table")
    return meta, adapt, bound, header


def frame_header(raw: Any, meta: FunctionMeta | None) -> compat.FrameHeader:
    """What a frame record (its fields checked) says about where it was saved, its locals named as the code
    ``meta`` names them (the counter names of formats 1 and 2 translated when it is the same code). No value
    is decoded: ``durable plan`` reads stored snapshots with it."""
    ident, fingerprint, state, line, names, packed, frees, point, tracked = values.frame_fields(raw)
    bound = names.split(",") if names else []
    if len(set(bound)) != len(bound) or len(bound) != len(packed):
        raise _corrupt("frame locals do not match its values")
    if not all(n.isidentifier() for n in bound):
        raise _corrupt("frame locals are not names")
    kept = tracked.split(",") if tracked else bound
    if point is None and meta is not None and meta.legacy_names and meta.fingerprint == fingerprint:
        renamed = {old: new for new, old in meta.legacy_names.items()}
        bound = [renamed.get(n, n) for n in bound]
        kept = [renamed.get(n, n) for n in kept]
    version, key, display = point if point is not None else (None, None, None)
    return compat.FrameHeader(ident, fingerprint, version, key, display, state, line, bound, kept,
                              frees[0] if frees else [])


def _decode_frame(decoder: Decoder, raw: Any, format: int) -> _support.PendingFrame:
    checked = _check_record(raw)  # resolves the function before its values
    frees = raw[6]
    slot = decoder.reserve() if format >= 2 else None  # the frame's own generator, made by restore later
    cells = [frees[0], decoder.decode_all(frees[1])] if frees else None  # decoded first, as encoded
    frame = _pending_frame([*raw[:5], decoder.decode_all(raw[5]), cells, *raw[7:]], checked)
    if slot is not None:
        frame.on_start = lambda gen: decoder.provide(slot, gen)
    return frame


def _pending_frame(payload: Any, checked: _Checked | None = None) -> _support.PendingFrame:
    """A frame record whose values are decoded already (by ``_decode_frame``, or by the codec for
    a durable generator held in a local), migrated and adapted to the code loaded now."""
    meta, adapt, bound, header = checked or _check_record(payload)
    frame_values = dict(zip(bound, payload[5]))
    cells = closures.cells_by_name(payload[6])
    report = getattr(_local, "report", None)
    if isinstance(adapt, migrations.Migration):
        adapt, frame_values, cells = migrations.apply(adapt, header, frame_values, cells, meta, report)
        _plan(meta, adapt.state, registry.code_for(meta))  # _restore_frames finds the delegation local in it
    elif not adapt.exact and report is not None:
        report.append({"upgrade": meta.ident, "from_version": header.saved_version,
                       "to_version": meta.version})
    if not adapt.exact:
        for name in adapt.drop:
            del frame_values[name]
        for name in adapt.to_cells:
            cells[name] = types.CellType(frame_values.pop(name))
        for name in adapt.from_cells:
            try:
                frame_values[name] = cells.pop(name).cell_contents
            except ValueError:
                pass  # an empty cell: the local stays unbound
    return _support.PendingFrame(meta, adapt.state, frame_values, cells)


def _finished_generator() -> Any:
    yield  # pragma: no cover - never resumed


def _finished() -> types.GeneratorType:
    """What a durable generator that had finished comes back as (it travels again as such)."""
    gen = _finished_generator()
    gen.close()
    return gen


async def _finished_coroutine() -> Any:
    pass  # pragma: no cover - never run


def _finished_coro() -> types.CoroutineType:
    """What a durable coroutine that had finished comes back as (awaiting it raises "cannot reuse already
    awaited coroutine", as natively)."""
    coro = _finished_coroutine()
    coro.close()  # (closed before it started: no "never awaited" warning)
    return coro


_RESUMABLE = (_GeneratorType, _CoroutineType)


def _durable_frames(gen: Any) -> Any:
    """``(meta, frame, generator)`` for each suspended (or not started) durable frame of ``gen``'s chain:
    the generators it delegates to (``yield from``), the durable coroutines it awaits."""
    current: Any = _unwrap(gen)
    while type(current) in _RESUMABLE:
        frame = _frame(current)
        meta = _BY_CODE.get(id(_code(current)))
        if meta is None and type(current) is _CoroutineType:
            inner = coroutine_inner(current)  # a chaos wrapper awaited by the frame before: the frame it drives
            if inner is not None:
                current = inner
                continue
        if frame is None or meta is None:
            return
        yield meta, frame, current
        current = _delegate_of(current)


def suspended_at(gen: Any) -> tuple[str, int | None] | None:
    """``(module:qualname, source line)`` where the innermost durable frame of ``gen``'s ``yield from``
    chain (or await chain) is suspended, or None when ``gen`` is not a suspended durable generator."""
    where = None
    for meta, frame, _ in _durable_frames(gen):
        where = meta.ident, meta.line_of(frame.f_locals.get("_dg_s", 0))
    return where


def _held_generators(gen: Any) -> list[Any]:
    """Suspended (or not started) durable generators and coroutines in the live locals of ``gen`` and of
    the frames it delegates to."""
    held: list[Any] = []
    for meta, frame, current in _durable_frames(gen):
        frame_locals = frame.f_locals
        plan = _plan(meta, frame_locals.get("_dg_s", 0), _code(current))
        delegation = plan.delegation  # (a delegate is a frame of the chain; an await's slot is stale)
        for name in plan.names:
            value = frame_locals.get(name)
            if name is not delegation and _held(value):
                held.append(value)
    return held


def _held(value: Any) -> bool:
    """Whether a local holds a durable generator or coroutine of its own, not finished and not running."""
    if type(value) is _CoroutineType:
        if value.cr_frame is None or value.cr_running:
            return False
        code = value.cr_code
        return id(code) in _BY_CODE or (code in code_kinds.WRAPPER_CODES and not code_kinds.in_live_round_trip())
    return type(value) is _GeneratorType and value.gi_frame is not None and not value.gi_running \
        and id(_unwrap(value).gi_code) in _BY_CODE \
        and not (value.gi_code in code_kinds.WRAPPER_CODES and code_kinds.in_live_round_trip())


def _drives_one_of(held: Any, busy: set[int]) -> bool:
    """Whether ``held`` is a chaos coroutine wrapper driving a coroutine in ``busy`` (a frame of the chain)."""
    return type(held) is _CoroutineType and id(coroutine_inner(held)) in busy


def detach(gen: Any) -> None:
    """Drop a generator (or coroutine) that continues elsewhere, without running its finally blocks or __exit__."""
    if type(gen) is not _CoroutineType:
        if not isinstance(gen, types.GeneratorType):
            raise NotDurableError(f"detach() needs a generator or a coroutine, not {type(gen).__name__!r}")
        from .chaos import detach_wrapper
        if detach_wrapper(gen, detach):
            return
    elif gen.cr_code in code_kinds.WRAPPER_CODES:
        if gen.cr_running:
            raise GeneratorStateError(f"cannot detach coroutine {gen.__qualname__!r} while it is running")
        detach_coroutine_wrapper(gen, detach)
        return
    status = _status(gen)
    if status == "RUNNING":
        raise GeneratorStateError(f"cannot detach {_noun(gen)} {gen.__qualname__!r} while it is running")
    if status == "CLOSED":
        return
    if status == "CREATED":
        gen.close()
        return
    if id(_code(gen)) not in registry.BY_CODE:
        raise NotDurableError(f"cannot detach {_noun(gen)} {gen.__qualname__!r}: it was not compiled as durable")
    # Durable generators held in live locals (a for loop's iterator, say) or anywhere in their values
    # were captured by the snapshot too: detach them first, so that releasing them runs none of their
    # clean-up either.
    local = _support._local
    busy = getattr(local, "detaching_gens", None)
    if busy is None:
        busy = local.detaching_gens = set()
    # (a held generator may hold this one; a local may hold a frame of the chain, ``c = child(); await c``,
    # which the detach of this one reaches)
    chain = {id(part) for _, _, part in _durable_frames(gen)} - busy
    busy.update(chain)
    try:
        recorded = [ref() for ref in _HELD.pop(gen, ())]
        for held in dict.fromkeys([*recorded, *_held_generators(gen)]):
            if held is not None and id(held) not in busy and not _drives_one_of(held, busy):
                detach(held)
    finally:
        busy.difference_update(chain)
    local.detaching = getattr(local, "detaching", 0) + 1
    try:
        gen.throw(_support.Detached())
    except StopIteration:
        return
    except BaseException as exc:
        if _support.detaching(exc):
            # (its traceback would keep the frames it passed through alive, in reference cycles with the
            # handlers' locals that held it, until the next garbage collection)
            exc.__traceback__ = None
            return
        raise
    finally:
        local.detaching -= 1
    # Something swallowed the detach (a plain generator it delegates to): fall back to closing.
    gen.close()
