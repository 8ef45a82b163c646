"""Chaos mode (testing): every suspension of a compiled generator, and every suspension of a compiled coroutine
at which a snapshot can be taken, round-trips through snapshot, detach and restore, while the generator or
coroutine object its caller holds keeps working."""
from __future__ import annotations

import functools
import sys
import types
from typing import Any, Callable, Coroutine, Generator

from . import registry
from .values import code_kinds
from .errors import UnserializableValueError

STATS = {"round_trips": 0, "unserializable": 0, "coroutine_round_trips": 0, "coroutine_unserializable": 0}
"""Round trips made and suspensions skipped (no snapshot possible) since the process started; the
``coroutine_`` counts are the coroutines' share of the first two. A suspension of an await chain counts once
(the outermost wrapper's); one of a ``yield from`` chain counts once per wrapper of the chain."""

_WRAPPER_CODES = code_kinds.WRAPPER_CODES
_GeneratorType = types.GeneratorType
_CoroutineType = types.CoroutineType
_CO_COROUTINE = 0x80


def _round_trip(current: Any, closure: tuple[Any, ...] | None) -> Any:
    """``current`` (a suspended compiled generator or coroutine) snapshotted, restored and detached: the
    restored one, or ``current`` itself when no snapshot can be taken there."""
    from .snapshot import detach, restore, snapshot

    # In one process the restored frame keeps the live closure cells (the snapshot's cells are
    # matched back to them), so writes through ``nonlocal`` still reach the enclosing function and
    # closures held elsewhere (a fresh process gets copies shared among the snapshot's values).
    with code_kinds.live_cells():
        try:
            data = snapshot(current)
        except UnserializableValueError:
            _count("unserializable", current)
            return current
        fresh = restore(data)
        try:
            detach(current)  # (chaos wrappers it holds stay live: they are the program's own objects)
        except Exception:
            if _frame_of(current) is None:  # the frame itself failed: the program's own error
                raise
            # The detach never reached the frame (a `yield from` over an object whose attribute lookup
            # raises): the program goes on with the generator it has, as if this round trip were not made.
            detach(fresh)
            _count("unserializable", current)
            return current
    _count("round_trips", current)
    return fresh


def _count(what: str, current: Any) -> None:
    STATS[what] += 1
    if type(current) is _CoroutineType:
        STATS["coroutine_" + what] += 1


def _frame_of(obj: Any) -> types.FrameType | None:
    return obj.gi_frame if type(obj) is _GeneratorType else obj.cr_frame


def chaos_wrapper(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a compiled generator function so that its generators round-trip at every suspension."""
    closure = fn.__closure__

    @functools.wraps(fn)
    def chaos(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        current = fn(*args, **kwargs)
        # ``box`` passes the value sent in, then the value yielded out, so that no local of this frame
        # keeps either alive longer than a native generator's caller would (a weakref test sees it)
        box: list[Any] = [None]
        error: BaseException | None = None
        while True:
            try:
                if error is not None:
                    pending, error = error, None
                    box.append(current.throw(pending))
                    del pending
                else:
                    box.append(current.send(box.pop()))
            except StopIteration as stop:
                return stop.value
            current = _round_trip(current, closure)
            closing: GeneratorExit | None = None
            try:
                box.append((yield box.pop()))
            except GeneratorExit as exc:
                closing = exc
            except BaseException as exc:  # forwarded with throw() on the next turn
                error = exc
            if closing is not None:
                # As ``yield from`` does: close the inner generator, then re-raise the same
                # GeneratorExit — outside the handler, so nothing gets chained to it.
                result = current.close()
                if sys.version_info >= (3, 13) and result is not None:
                    return result
                raise closing

    _WRAPPER_CODES.add(chaos.__code__)
    return chaos


def current_inner(gen: types.GeneratorType) -> types.GeneratorType | None:
    """The compiled generator a chaos wrapper currently drives (None if ``gen`` is no wrapper)."""
    if gen.gi_code not in _WRAPPER_CODES or gen.gi_frame is None:
        return None
    inner = gen.gi_frame.f_locals.get("current")
    return inner if isinstance(inner, types.GeneratorType) else None


def detach_wrapper(gen: types.GeneratorType, detach: Callable[[Any], None]) -> bool:
    """Detach a chaos wrapper: detach the generator it drives, then drop the wrapper quietly."""
    if gen.gi_code not in _WRAPPER_CODES:
        return False
    inner = current_inner(gen)
    if inner is not None:
        detach(inner)
    gen.close()
    return True


# -- coroutines ---------------------------------------------------------------------------------------

@types.coroutine
def _suspension(box: list[Any]) -> Generator[Any, Any, Any]:
    """One suspension of a chaos coroutine wrapper: yields what the wrapper's compiled coroutine yielded
    (taken out of ``box``, so that this frame does not keep it alive) and returns what is sent back."""
    return (yield box.pop())


_SUSPENSION_CODE = _suspension.__code__


class _Keeper:
    """Held by a chaos coroutine wrapper whose compiled coroutine ignored GeneratorExit: when the wrapper dies
    still suspended (its finalizer's close() was ignored too: CPython reports it, once, as natively), the
    compiled coroutine is detached, so that its own finalizer runs none of its code a second time. (A native
    coroutine is one object, closed once when it is collected.)"""

    __slots__ = ("coro",)

    def __init__(self, coro: types.CoroutineType) -> None:
        self.coro = coro

    def __del__(self) -> None:
        coro = self.coro
        if coro.cr_frame is not None and not coro.cr_running:
            from .snapshot import detach
            try:
                detach(coro)
            except Exception:  # noqa: BLE001, S110 - best effort: it is being dropped anyway
                pass


def _as_thrown(exc: BaseException) -> BaseException:
    """An exception thrown into a chaos coroutine wrapper, with the traceback it came with: without the entries
    of the wrapper and of ``_suspension``, which it passed through on its way to the compiled coroutine."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_next is not None and tb.tb_next.tb_frame.f_code is _SUSPENSION_CODE:
        exc.__traceback__ = tb.tb_next.tb_next
    return exc


def coroutine_chaos_wrapper(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a compiled coroutine function so that its coroutines round-trip at every suspension where a snapshot
    can be taken (at a transient await the snapshot fails: the suspension is counted as unserializable and
    the coroutine goes on as it is). The wrapper is an ``async def`` with the function's names, so that
    ``iscoroutinefunction``, the coroutine's ``__qualname__``, its origin and "never awaited" warnings are the
    function's; the compiled coroutine is made only when the wrapper starts.

    The wrapper steps the compiled coroutine itself (its caller's ``send``, ``throw`` and ``close`` reach it
    through a one-shot generator awaited per suspension, ``_suspension``), rather than awaiting a driver object:
    CPython links a coroutine's frame into the stack during ``throw`` only when it awaits a generator or a
    coroutine, so the compiled coroutine sees the same stack whether it is resumed by ``send`` or ``throw``."""

    @functools.wraps(fn)
    async def chaos(*args: Any, **kwargs: Any) -> Any:
        current = fn(*args, **kwargs)
        del args, kwargs  # (the compiled coroutine holds them as long as its code does)
        # ``box`` passes the value sent in, then the value yielded out (see ``chaos_wrapper``)
        box: list[Any] = [None]
        error: BaseException | None = None
        step = True  # False: suspend again without stepping the compiled coroutine
        keeper: _Keeper | None = None  # (once the compiled coroutine ignored GeneratorExit)
        while True:
            if step:
                try:
                    if error is not None:
                        pending, error = error, None
                        box.append(current.throw(pending))
                        del pending
                    else:
                        box.append(current.send(box.pop()))
                except StopIteration as stop:
                    return stop.value
                if keeper is None and not _in_a_chaos_chain(sys._getframe()):
                    current = _round_trip(current, None)
            step = True
            closing: GeneratorExit | None = None
            try:
                box.append(await _suspension(box))
            except GeneratorExit as exc:
                closing = exc
            except BaseException as exc:  # forwarded with throw() on the next turn
                error = _as_thrown(exc)
            if closing is not None:
                # As an await does: close the inner coroutine, then re-raise the same GeneratorExit (outside
                # the handler, so nothing gets chained to it); 3.13's close() returns what the coroutine
                # returned instead (earlier versions return None)
                ignored, result = _close(current)
                if ignored:
                    # so is the wrapper's close(): it stays suspended too, as natively (the next send, throw or
                    # close reaches the coroutine)
                    keeper = keeper or _Keeper(current)
                    box.append(None)
                    step = False
                    continue
                if result is not None:
                    return result
                raise closing

    _WRAPPER_CODES.add(chaos.__code__)
    return chaos


def _close(coro: types.CoroutineType) -> tuple[bool, Any]:
    """``coro.close()``: whether it ignored GeneratorExit (an await in a finally block: it is suspended again
    and close() raised "coroutine ignored GeneratorExit"), and what close() returned."""
    try:
        return False, coro.close()
    except RuntimeError:
        if coro.cr_frame is None:  # (an error of its own)
            raise
        return True, None


def _in_a_chaos_chain(wrapper: types.FrameType) -> bool:
    """Whether the chaos wrapper running in ``wrapper`` is awaited by compiled coroutines driven by another
    chaos wrapper: that one round-trips the whole chain (seen through this wrapper) at this suspension. A
    round trip of this wrapper's coroutine alone would copy the objects it shares with the frames awaiting
    it (an argument, say), which a snapshot of the chain keeps one."""
    caller = wrapper.f_back
    awaited = False
    while caller is not None and id(caller.f_code) in registry.BY_CODE and caller.f_code.co_flags & _CO_COROUTINE:
        awaited = True
        caller = caller.f_back
    return awaited and caller is not None and caller.f_code in _WRAPPER_CODES


def coroutine_inner(coro: types.CoroutineType) -> types.CoroutineType | None:
    """The compiled coroutine a chaos coroutine wrapper currently drives (None if ``coro`` is no wrapper, or
    one not started or finished)."""
    if coro.cr_code not in _WRAPPER_CODES or coro.cr_frame is None:
        return None
    inner = coro.cr_frame.f_locals.get("current")
    return inner if type(inner) is _CoroutineType and inner.cr_frame is not None else None


def detach_coroutine_wrapper(coro: types.CoroutineType, detach: Callable[[Any], None]) -> None:
    """Detach a chaos coroutine wrapper: detach the coroutine it drives, then drop the wrapper quietly (one
    not started is closed, which runs nothing and warns of nothing)."""
    inner = coroutine_inner(coro)
    if inner is not None:
        detach(inner)
    coro.close()
