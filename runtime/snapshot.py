"""snapshot, restore and detach: suspended durable generators to bytes and back.

A snapshot is the envelope ``[b"DG", FORMAT, frame, frame, ...]`` (``values.envelope``) from the
outermost generator to the innermost one it delegates to. Each frame's ``names`` are the bound live
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
from .errors import GeneratorStateError, NotDurableError, SnapshotError, UnserializableValueError
from .registry import FunctionMeta
from .values import FORMAT, MAGIC, NO_BODY, Decoder, Encoder, Kind, code_kinds

_GEN_CREATED = inspect.GEN_CREATED
_GEN_CLOSED = inspect.GEN_CLOSED
_GEN_RUNNING = inspect.GEN_RUNNING


class _Delegate:
    """The generator a held generator delegates to (``yield from``), in that generator's frame record:
    restored by the frame that delegates to it (kind "gen-yf"), not on its own."""

    __slots__ = ("gen",)

    def __init__(self, gen: types.GeneratorType) -> None:
        self.gen = gen


def _classify_generator(obj: object) -> tuple[str, object, object] | None:
    """Durable generators held in values (a local, a container): their frame record, or "finished"."""
    kind = "gen"
    if type(obj) is _Delegate:
        obj, kind = obj.gen, "gen-yf"
    if type(obj) is not types.GeneratorType:
        return None
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
    record, _ = _frame_record(gen, None, chain=False)
    if kind == "gen":
        held = getattr(_local, "held", None)
        if held is not None:
            held.append(obj)
    return kind, record, NO_BODY


def _not_by_type(obj: object) -> tuple[object, object]:
    raise TypeError("generators are classified by _classify_generator")


# A held generator is restored at once, suspended at its point, wherever the decoder puts it (a local,
# a list, a map's iterator, an object's attribute); a delegate waits for the frame delegating to it.
values.add_kind(Kind("gen", _not_by_type, lambda head: _pending_frame(head).resumed()))
values.add_kind(Kind("gen-yf", _not_by_type, lambda head: _pending_frame(head)))
values.add_kind(Kind("gen-done", _not_by_type, lambda head: _finished()))
values.FALLBACKS.append(_classify_generator)
_HOOKS = values.HOOKS


def _meta_of(gen: Any) -> FunctionMeta:
    if not isinstance(gen, types.GeneratorType):
        raise NotDurableError(f"snapshot() needs a generator from a durable function, not {type(gen).__name__!r}")
    meta = registry.BY_CODE.get(id(gen.gi_code))
    if meta is None:
        inner = _support_chaos_inner(gen)
        if inner is not None:
            return _meta_of(inner)
        raise NotDurableError(
            f"generator {gen.__qualname__!r} was not compiled as durable: decorate it with @durable and compile "
            "its module (import hook, `durable compile`, or the build step)")
    return meta


def _support_chaos_inner(gen: types.GeneratorType) -> types.GeneratorType | None:
    from .chaos import current_inner
    return current_inner(gen)


def _unwrap(gen: types.GeneratorType) -> types.GeneratorType:
    if id(gen.gi_code) in registry.BY_CODE:
        return gen
    inner = _support_chaos_inner(gen)
    return inner if inner is not None else gen


def snapshot(gen: Any) -> bytes:
    """Capture a suspended (or not yet started) durable generator, with its whole ``yield from`` chain."""
    meta = _BY_CODE.get(id(gen.gi_code)) if type(gen) is _GeneratorType else None
    if meta is None:
        _meta_of(gen)  # raises NotDurableError, or finds the generator a chaos wrapper drives
        gen = _unwrap(gen)
    if gen.gi_running:
        raise GeneratorStateError(f"cannot snapshot generator {gen.__qualname__!r} while it is running")
    if gen.gi_frame is None:
        raise GeneratorStateError(f"cannot snapshot generator {gen.__qualname__!r}: it has finished")
    try:
        tools = _TOOLS.pop()  # list.pop and list.append are atomic: each thread gets its own pair
    except IndexError:
        tools = Encoder(_HOOKS, exact=False), msgpack.Packer(use_bin_type=True)
    encoder, packer = tools
    held: list[types.GeneratorType] = []
    _local.held = held
    try:
        data: bytes = packer.pack(_envelope(gen, encoder))
    except (OverflowError, UnicodeEncodeError):  # an int beyond 64 bits or a str msgpack cannot carry
        held.clear()
        data = packer.pack(_envelope(gen, Encoder(_HOOKS)))
    finally:
        encoder.reset()
        _TOOLS.append(tools)
        _local.encoder = _local.held = None
    if held:
        _HELD[gen] = tuple(map(weakref.ref, held))
    elif _HELD:
        _HELD.pop(gen, None)
    key = values.settings.current.key
    return data if key is None else values.sign(data, key)


def _envelope(gen: types.GeneratorType, encoder: Encoder) -> list[Any]:
    _local.encoder = encoder  # for the frames of generators held in values (their records are values)
    envelope: list[Any] = [MAGIC, FORMAT]
    current: types.GeneratorType | None = gen
    while current is not None:
        record, current = _frame_record(current, encoder)
        envelope.append(record)
    return envelope


_TOOLS: list[tuple[Encoder, msgpack.Packer]] = []
_local = threading.local()  # .encoder, .held: the encoder of the snapshot being taken in this thread
# and the durable generators it met in values (a list's items, an attribute, a map's iterator)
_HELD: weakref.WeakKeyDictionary[types.GeneratorType, tuple[weakref.ref[types.GeneratorType], ...]] = \
    weakref.WeakKeyDictionary()
"""The generators held in values by the last snapshot of a generator: ``detach`` detaches them too."""
"""Idle (optimistic encoder, packer) pairs, reused from one snapshot to the next."""
_BY_CODE = registry.BY_CODE
_GeneratorType = types.GeneratorType


class _Plan:
    """How to read the live locals of one state of a durable function."""

    __slots__ = ("names", "labels", "delegation", "delegation_label", "fetch", "free_names", "line", "joined",
                 "name_set", "cells", "point")

    def __init__(self, meta: FunctionMeta, state: int, code: types.CodeType) -> None:
        names = meta.states[state] if state else meta.params
        self.names = names
        self.labels = self._labels(meta, names)
        # the local holding the generator a ``yield from`` suspended in delegates to
        self.delegation = next((n for n in names if n.startswith("_dg_yf")), None) \
            if state in meta.yield_from else None
        self.delegation_label = self.labels[names.index(self.delegation)] if self.delegation else None
        # fetch(frame_locals) -> tuple of the live values; KeyError when one is unbound
        if len(names) > 1:
            self.fetch: Callable[[Any], tuple[Any, ...]] = operator.itemgetter(*names)
        elif names:
            name = names[0]
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


def _frame_record(gen: types.GeneratorType, encoder: Encoder | None, chain: bool = True
                  ) -> tuple[list[Any], types.GeneratorType | None]:
    """One frame: ``[ident, fingerprint, state, line, names, values, frees, point, tracked]``
    (``values.envelope``) and the durable generator it delegates to, if any (``chain``: the delegate
    becomes the next frame instead of a value).

    ``values`` are the bound live locals, ``frees`` is ``[names, cells]`` of the frame's closure
    cells (``runtime.closures``; encoded before the values), or nil. ``encoder`` turns the values
    into their packed form; None leaves them as they are (for a generator held in a local, whose
    record the encoder then encodes as a whole).
    """
    code = gen.gi_code
    meta = _BY_CODE[id(code)]
    if encoder is not None:
        encoder.reserve(gen)  # a closure cell of this frame may hold the generator itself
    target = encoder or getattr(_local, "encoder", None)
    if target is not None:
        globals_read = _globals_of(meta)
        if globals_read:
            target.by_reference(globals_read)
    frame_locals = gen.gi_frame.f_locals
    state = frame_locals.get("_dg_s", 0)  # unbound until the body first suspends
    plan = meta.plans.get(state) or _plan(meta, state, code)
    tracked = None
    try:
        live = list(plan.fetch(frame_locals))
        names = plan.joined
        labels = plan.labels
    except KeyError:
        live, labels, names = _bound_locals(plan, frame_locals)
        tracked = plan.joined
    sub: types.GeneratorType | None = None
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


def _bound_locals(plan: _Plan, frame_locals: Any) -> tuple[list[Any], list[str], str]:
    """The bound live values, their labels and their names (joined by commas)."""
    live: list[Any] = []
    labels: list[str] = []
    names: list[str] = []
    for name, label in zip(plan.names, plan.labels):
        value = frame_locals.get(name, _UNBOUND)
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


_corrupt = values.corrupt


def restore(data: bytes, report: list[dict[str, Any]] | None = None) -> types.GeneratorType:
    """Rebuild a generator from ``snapshot`` bytes, suspended where the snapshot was taken.

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


def _restore_frames(envelope: list[Any], decoder: Decoder, made: list[types.GeneratorType]) -> types.GeneratorType:
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
        top = frames[0]
        gen = _support.start(top)
        marker = next(gen) if top.state else _support.MARKER
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
        _support.abandon()
    return gen


def _detach_all(made: list[types.GeneratorType]) -> None:
    """Generators a failing restore had restored (held in values, suspended at their points) belong to
    no one: detach them, so that their finally blocks never run on the snapshot's data."""
    for started in reversed(made):
        if started.gi_frame is not None and not started.gi_running:
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


def suspended_at(gen: types.GeneratorType) -> tuple[str, int | None] | None:
    """``(module:qualname, source line)`` where the innermost durable frame of ``gen``'s ``yield from``
    chain is suspended, or None when ``gen`` is not a suspended durable generator."""
    where = None
    current: Any = _unwrap(gen) if type(gen) is types.GeneratorType else None
    while type(current) is types.GeneratorType and current.gi_frame is not None:
        meta = _BY_CODE.get(id(current.gi_code))
        if meta is None:
            break
        where = meta.ident, meta.line_of(current.gi_frame.f_locals.get("_dg_s", 0))
        current = current.gi_yieldfrom
    return where


def _held_generators(gen: types.GeneratorType) -> list[types.GeneratorType]:
    """Suspended durable generators in the live locals of ``gen`` and of the frames it delegates to."""
    held: list[types.GeneratorType] = []
    current: types.GeneratorType | None = gen
    while current is not None and current.gi_frame is not None and id(current.gi_code) in registry.BY_CODE:
        frame_locals = current.gi_frame.f_locals
        plan = _plan(registry.BY_CODE[id(current.gi_code)], frame_locals.get("_dg_s", 0), current.gi_code)
        names, yf = plan.names, plan.delegation
        for name in names:
            value = frame_locals.get(name)
            if name is not yf and type(value) is types.GeneratorType and value.gi_frame is not None \
                    and not value.gi_running and id(_unwrap(value).gi_code) in registry.BY_CODE \
                    and not (value.gi_code in code_kinds.WRAPPER_CODES and code_kinds.in_live_round_trip()):
                held.append(value)
        delegate = frame_locals.get(yf) if yf else None
        current = delegate if type(delegate) is types.GeneratorType else None
    return held


def detach(gen: Any) -> None:
    """Drop a generator that continues elsewhere, without running its finally blocks or __exit__."""
    if not isinstance(gen, types.GeneratorType):
        raise NotDurableError(f"detach() needs a generator, not {type(gen).__name__!r}")
    from .chaos import detach_wrapper
    if detach_wrapper(gen, detach):
        return
    status = inspect.getgeneratorstate(gen)
    if status == _GEN_RUNNING:
        raise GeneratorStateError(f"cannot detach generator {gen.__qualname__!r} while it is running")
    if status == _GEN_CLOSED:
        return
    if status == _GEN_CREATED:
        gen.close()
        return
    if id(gen.gi_code) not in registry.BY_CODE:
        raise NotDurableError(f"cannot detach generator {gen.__qualname__!r}: it was not compiled as durable")
    # Durable generators held in live locals (a for loop's iterator, say) or anywhere in their values
    # were captured by the snapshot too: detach them first, so that releasing them runs none of their
    # clean-up either.
    local = _support._local
    busy = getattr(local, "detaching_gens", None)
    if busy is None:
        busy = local.detaching_gens = set()
    busy.add(id(gen))
    try:
        recorded = [ref() for ref in _HELD.pop(gen, ())]
        for held in dict.fromkeys([*recorded, *_held_generators(gen)]):
            if held is not None and id(held) not in busy:  # (a held generator may hold this one)
                detach(held)
    finally:
        busy.discard(id(gen))
    local.detaching = getattr(local, "detaching", 0) + 1
    try:
        gen.throw(_support.Detached())
    except StopIteration:
        return
    except BaseException as exc:
        if _support.detaching(exc):
            return
        raise
    finally:
        local.detaching -= 1
    # Something swallowed the detach (a plain generator it delegates to): fall back to closing.
    gen.close()
